//! A reference server: the gateway's HTTP stack with nothing of the gateway in it.
//!
//! axum on hyper and tokio, one multiplexed connection of the `redis` crate, mimalloc:
//! what the gateway is built on, without authentication, rate limiting, metrics,
//! tracing, request ids, key confinement or the stored value layout. Measured beside
//! the gateway and Webdis, it tells the cost of the stack itself from the cost of what
//! the gateway adds to it, so a target can be judged against what the stack allows.
//!
//! `GET /keys/{key}` answers the value (404 when absent); `PUT /keys/{key}` stores the
//! body (204).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use redis::aio::MultiplexedConnection;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub listen: String,
    /// `redis://host:port/`.
    #[arg(long)]
    pub redis: String,
}

pub fn router(redis: MultiplexedConnection) -> Router {
    Router::new()
        .route("/keys/{key}", get(get_key).put(put_key))
        .with_state(redis)
}

async fn get_key(
    State(mut redis): State<MultiplexedConnection>,
    Path(key): Path<String>,
) -> Response {
    match redis::cmd("GET")
        .arg(&key)
        .query_async::<Option<Vec<u8>>>(&mut redis)
        .await
    {
        Ok(Some(value)) => value.into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn put_key(
    State(mut redis): State<MultiplexedConnection>,
    Path(key): Path<String>,
    body: Bytes,
) -> StatusCode {
    match redis::cmd("SET")
        .arg(&key)
        .arg(body.as_ref())
        .query_async::<()>(&mut redis)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let client = redis::Client::open(args.redis.as_str())?;
    let connection = client.get_multiplexed_async_connection().await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    axum::serve(listener, router(connection)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_and_reads_values_through_redis() {
        let redis = larder_tests::Redis::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys/k", listener.local_addr().unwrap());
        let app = router(redis.connection().await);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
        let put = http.put(&url).body(vec![b'x'; 100]).send().await.unwrap();
        assert_eq!(put.status(), 204);
        let got = http.get(&url).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().as_ref(), &[b'x'; 100][..]);
    }
}
