//! Serving a router on an already bound listener, with graceful drain, and the HTTP
//! layers every Larder service shares: request ids, request spans and scrubbed headers.

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use axum::http::{HeaderName, Request, header};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

/// The header carrying a request's id, taken from the client when it sends one and
/// generated when it does not; every response carries it back.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids unique across processes without a system call per request: a random
/// per-process prefix (drawn once) and a counter. A UUID v4 per request costs a
/// `getrandom` call on the hot path.
#[derive(Clone, Copy, Default)]
pub struct RequestIds;

static PROCESS_PREFIX: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n:x}", *PROCESS_PREFIX);
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// Wraps every route of `router` (the fallback included) in the shared layers, outermost
/// first:
///
/// 1. `Authorization`, `Proxy-Authorization` and `Cookie` are marked sensitive, so no
///    `Debug` of the headers anywhere below can print a token.
/// 2. `x-request-id` is set when the client sent none.
/// 3. A `request` span with the method, the matched route (never the raw path, which
///    holds tenant keys) and the request id, around everything the request logs.
/// 4. The request id is copied onto the response.
///
/// Call it on the finished router (after `with_state`), so the matched route is known
/// when the span opens.
pub fn layers(router: Router) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                header::PROXY_AUTHORIZATION,
                header::COOKIE,
            ]))
            .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID)),
    )
}

/// The span of one request. `route` is the route template (`/v1/namespaces/{ns}/keys/{*key}`)
/// or `unmatched`.
fn request_span(request: &Request<Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        route,
        request_id,
    )
}

/// Serves `router` until `shutdown` is cancelled, then stops accepting and lets requests
/// in flight finish. Taking a bound listener lets tests bind port 0 and lets `main`
/// report a port-in-use error before anything else starts.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Binds `addr`, turning the common failures into one clear line.
pub async fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    /// Log lines written by the code under test, kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    fn app() -> Router {
        layers(Router::new().route(
            "/v1/things/{id}",
            get(|headers: axum::http::HeaderMap| async move {
                // What a careless handler might do: log every header.
                tracing::info!(?headers, "handling");
                "ok"
            }),
        ))
    }

    fn request(path: &str) -> axum::http::request::Builder {
        Request::get(path).header(header::AUTHORIZATION, "Bearer secret-token-value")
    }

    #[tokio::test]
    async fn request_ids_are_generated_or_kept_and_returned() {
        let response = app()
            .oneshot(request("/v1/things/1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let id = response.headers()[&REQUEST_ID].to_str().unwrap().to_owned();
        let again = app()
            .oneshot(request("/v1/things/1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let next = again.headers()[&REQUEST_ID].to_str().unwrap();
        let (prefix, counter) = id.rsplit_once('-').expect("prefix-counter");
        assert!(
            prefix.len() == 12 && u64::from_str_radix(counter, 16).is_ok() && id != next,
            "a unique id is generated: {id}, then {next}"
        );

        let response = app()
            .oneshot(
                request("/nowhere")
                    .header(&REQUEST_ID, "client-chosen-id")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[&REQUEST_ID], "client-chosen-id");
    }

    #[tokio::test]
    async fn json_logs_carry_the_request_id_and_route_never_the_token() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(captured.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        let response = app()
            .oneshot(
                request("/v1/things/private-key-name")
                    .header(&REQUEST_ID, "req-42")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        let handling = lines
            .iter()
            .find(|l| l["message"] == "handling")
            .unwrap_or_else(|| panic!("the handler's line is logged:\n{text}"));
        assert_eq!(handling["span"]["request_id"], "req-42", "{handling}");
        assert_eq!(handling["span"]["route"], "/v1/things/{id}", "{handling}");
        assert!(
            !text.contains("secret-token-value"),
            "token logged:\n{text}"
        );
        assert!(
            text.contains("Sensitive"),
            "the header shows as sensitive:\n{text}"
        );
        assert!(
            !text.contains("private-key-name"),
            "raw path logged:\n{text}"
        );
    }
}
