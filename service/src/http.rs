//! Serving a router on an already bound listener, with graceful drain and bounds on what
//! a slow or hostile connection may cost ([`ServeLimits`]), and the HTTP layers every
//! Larder service shares: request ids, request spans and scrubbed headers.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::MatchedPath;
use axum::http::{HeaderName, Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
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

/// What one connection may cost the server before it is cut off: the bounds that keep a
/// slow or hostile client from holding memory and connections without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// A request head (request line and headers) must arrive in full within this time,
    /// else the connection is closed without an answer (slow-header clients). The same
    /// clock runs while a keep-alive connection waits for its next request, so it is also
    /// the idle limit of a connection.
    pub header_read_timeout: Duration,
    /// Largest request head, bytes; past it the answer is 431 and the connection closes.
    pub max_header_bytes: usize,
    /// A request body must arrive in full within this time of its head; past it, reading
    /// the body fails with [`BodyTimeout`] (slow-body clients).
    pub body_read_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` with the default [`ServeLimits`]; see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ServeLimits::default()).await
}

/// Serves `router` over HTTP/1.1 until `shutdown` is cancelled, then stops accepting and
/// lets requests in flight finish. Taking a bound listener lets tests bind port 0 and lets
/// `main` report a port-in-use error before anything else starts.
///
/// Our own accept loop rather than `axum::serve`, which sets no timer and so can bound
/// neither how long a client may take to send its headers nor its body.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted:
                // the listener itself is fine. A short pause keeps an exhausted process
                // from spinning on EMFILE.
                tracing::debug!(error = %e, "accept failed");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let router = router.clone();
        let body_read_timeout = limits.body_read_timeout;
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let deadline = tokio::time::Instant::now() + body_read_timeout;
            let mut request = request.map(|body| {
                if body.is_end_stream() {
                    Body::empty()
                } else {
                    Body::new(DeadlineBody {
                        inner: body,
                        deadline,
                        timeout: body_read_timeout,
                        sleep: None,
                    })
                }
            });
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(remote));
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Header timeouts, oversized heads and clients going away end here; the
                // client has its answer (or none is owed), nothing to report above debug.
                tracing::debug!(error = %e, %remote, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Reading a request body failed because it had not arrived in full within
/// [`ServeLimits::body_read_timeout`] of its head.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the request body did not arrive within {} ms", .0.as_millis())]
pub struct BodyTimeout(pub Duration);

/// A request body with a deadline for the whole of it, not per frame: a client trickling
/// one byte at a time would reset a per-frame timer forever.
struct DeadlineBody<B> {
    inner: B,
    deadline: tokio::time::Instant,
    timeout: Duration,
    /// Armed only when the body is not already buffered, so a request whose body came
    /// with its head never touches the timer wheel.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let error: axum::BoxError = Box::new(BodyTimeout(this.timeout));
                Poll::Ready(Some(Err(error)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The first error of type `E` in `error`'s source chain, `error` included: how a handler
/// tells a [`BodyTimeout`] or a length limit from other body errors through the wrappers
/// (length limits, extractors) that box the original error.
pub fn find_in_chain<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
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

    /// Sends `bytes` on a new connection to `addr`, then reads until the server closes it
    /// or `within` passes; returns what was read and how long the connection lasted.
    async fn exchange(
        addr: std::net::SocketAddr,
        bytes: &[u8],
        within: Duration,
    ) -> (String, Duration) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = tokio::time::Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut read = Vec::new();
        let _ = tokio::time::timeout(within, stream.read_to_end(&mut read)).await;
        (
            String::from_utf8_lossy(&read).into_owned(),
            started.elapsed(),
        )
    }

    #[tokio::test]
    async fn slow_or_oversized_requests_are_cut_off_and_drain_still_works() {
        let limit = Duration::from_millis(300);
        let router = Router::new().route(
            "/echo",
            axum::routing::put(|body: Body| async move {
                match axum::body::to_bytes(body, usize::MAX).await {
                    Ok(b) => (StatusCode::OK, b.len().to_string()),
                    Err(e) if find_in_chain::<BodyTimeout>(&e).is_some() => {
                        (StatusCode::REQUEST_TIMEOUT, e.to_string())
                    }
                    Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let limits = ServeLimits {
            header_read_timeout: limit,
            max_header_bytes: 1024,
            body_read_timeout: limit,
        };
        let server = tokio::spawn(serve_with(listener, router, shutdown.clone(), limits));
        let within = Duration::from_secs(5);

        let (answer, _) = exchange(
            addr,
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
            within,
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n3"), "{answer}");

        // The body never comes in full: 408 at the body deadline.
        let (answer, took) = exchange(
            addr,
            b"PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab",
            within,
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(took >= limit && took < within, "{took:?}");

        // The head never comes in full: the connection is closed, no answer owed.
        let (answer, took) = exchange(addr, b"PUT /echo HTTP/1.1\r\nHost: x\r\n", within).await;
        assert_eq!(answer, "");
        assert!(took >= limit && took < within, "{took:?}");

        // A head over the bound: 431.
        let big = format!(
            "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(2000)
        );
        let (answer, _) = exchange(addr, big.as_bytes(), within).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

        shutdown.cancel();
        tokio::time::timeout(within, server)
            .await
            .expect("drained")
            .unwrap()
            .unwrap();
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
