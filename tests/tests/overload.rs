//! Overload protection of the gateway against real ZooKeeper and Redis: requests over
//! the global and per-namespace in-flight limits are refused at once with `Retry-After`;
//! slow headers and slow bodies are cut off; oversized heads, bodies and batches are
//! refused; a namespace driven far over its rate limit leaves its neighbour served. After
//! each, the gateway still answers normally.
//!
//! Slow and malformed clients are played over raw TCP, since an HTTP client library will
//! not send a request one byte at a time or a head it considers too large.

use std::time::{Duration, Instant};

use larder_control_plane::api::{CreateNamespace, IssueToken, RegisterCluster};
use larder_registry::auth::Permission;
use larder_registry::model::{Limits, Topology};
use larder_tests::platform::{self, Service};
use larder_tests::{Redis, ZooKeeper, eventually, unique_root};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// ZooKeeper, Redis, a control plane and a gateway configured by the test.
struct Platform {
    _zk: ZooKeeper,
    _redis: Redis,
    _keys: tempfile::TempDir,
    _cp: Service,
    admin: larder_control_plane::client::Client,
    gw: Gateway,
    http: reqwest::Client,
}

/// A gateway on a runtime of its own, as in production where it has the process to
/// itself: the test's clients (a flood among them) then compete with it for the CPU, as
/// remote clients would for the network, not for the same task queue.
struct Gateway {
    url: String,
    shutdown: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Gateway {
    async fn start(config: larder_gateway::Config) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gateway")
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let run = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            larder_gateway::run(config, listener, stop).await
        });
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(20), "the gateway is ready", || async {
            assert!(
                !run.is_finished(),
                "the gateway stopped before it was ready"
            );
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        Gateway {
            url,
            shutdown,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime blocks, which an async test may not do.
            runtime.shutdown_background();
        }
    }
}

impl Platform {
    async fn start(configure: impl FnOnce(&mut larder_gateway::Config)) -> Self {
        larder_tests::init_tracing();
        let zk = ZooKeeper::start().await;
        let redis = Redis::start().await;
        let root = unique_root();
        let keys = tempfile::tempdir().unwrap();
        let cp = platform::control_plane(&zk, &root, keys.path()).await;
        let mut config = larder_gateway::Config {
            listen: "127.0.0.1:0".into(),
            id: format!("gw-overload-{}", rand::random::<u32>()),
            request_timeout_ms: larder_tests::REQUEST_TIMEOUT.as_millis() as u64,
            zookeeper: larder_tests::registry_config(&zk, &root),
            ..Default::default()
        };
        configure(&mut config);
        let gw = Gateway::start(config).await;
        let admin = platform::admin(&cp, keys.path());
        admin
            .register_cluster(&RegisterCluster {
                name: "main".into(),
                topology: Topology::Standalone,
                endpoints: vec![redis.address()],
                replicas: vec![],
                region: "local".into(),
                capacity_bytes: 1 << 30,
                down_after_ms: None,
            })
            .await
            .unwrap();
        Platform {
            _zk: zk,
            _redis: redis,
            _keys: keys,
            _cp: cp,
            admin,
            gw,
            // Idle connections are dropped before the gateway's header timeout (which
            // also closes idle keep-alive connections) could race a request on them.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        }
    }

    /// Creates namespace `ns` with `limits`, returns a read/write token once the gateway
    /// serves it.
    async fn tenant(&self, ns: &str, limits: Limits) -> String {
        self.admin
            .create_namespace(&CreateNamespace {
                name: ns.into(),
                owner: "team".into(),
                cluster: None,
                region: None,
                limits: Some(limits),
                near_cache: None,
            })
            .await
            .unwrap();
        let token = self
            .admin
            .issue_token(
                ns,
                &IssueToken {
                    subject: "tests".into(),
                    permissions: vec![Permission::Read, Permission::Write],
                    ttl_s: Some(3600),
                },
            )
            .await
            .unwrap()
            .token;
        eventually(
            Duration::from_secs(10),
            "the gateway serves the namespace",
            || async { self.get(ns, &token, "probe").await.0 == StatusCode::NOT_FOUND },
        )
        .await;
        token
    }

    /// `GET /v1/namespaces/{ns}/keys/{key}`: status, `Retry-After`, body.
    async fn get(&self, ns: &str, token: &str, key: &str) -> (StatusCode, Option<String>, Value) {
        let r = self
            .http
            .get(format!("{}/v1/namespaces/{ns}/keys/{key}", self.gw.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, retry_after, r.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, ns: &str, token: &str, key: &str, value: &str) -> StatusCode {
        self.http
            .put(format!("{}/v1/namespaces/{ns}/keys/{key}", self.gw.url))
            .bearer_auth(token)
            .body(value.to_owned())
            .send()
            .await
            .unwrap()
            .status()
    }

    fn address(&self) -> String {
        self.gw.url.trim_start_matches("http://").to_owned()
    }

    /// The value of the metric sample `series` (name and labels, as printed).
    async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.gw.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    async fn healthz(&self) -> StatusCode {
        self.http
            .get(format!("{}/healthz", self.gw.url))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// Limits with a rate limit high enough never to be the reason for a refusal.
fn unthrottled() -> Limits {
    Limits {
        ops_per_sec: 1_000_000,
        burst: 1_000_000,
        ..Limits::default()
    }
}

/// A request head sent over raw TCP: a `PUT` of a `length`-byte value whose body is not
/// sent (yet), so the request holds its in-flight slots until the body deadline.
async fn put_head(address: &str, ns: &str, token: &str, key: &str, length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT /v1/namespaces/{ns}/keys/{key} HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// One HTTP response read off a raw connection: status, head, body.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn problem_type(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        body["type"].as_str().unwrap_or_default().to_owned()
    }
}

/// Reads one response from `stream` (head, then `Content-Length` bytes of body, or up to
/// the end of the connection), or `None` when the connection ends without one.
async fn read_response(stream: &mut TcpStream, within: Duration) -> Option<Raw> {
    let mut data = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_string();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(usize::MAX);
                if data.len() >= end + 4 + length.min(1 << 20) || length == 0 {
                    return;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => data.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no response within {within:?}");
    let end = data.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&data[..end]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Raw {
        status,
        head,
        body: String::from_utf8_lossy(&data[end + 4..]).to_string(),
    })
}

/// Sends `request` over a fresh connection and reads the answer.
async fn raw_request(address: &str, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream, Duration::from_secs(10))
        .await
        .expect("an HTTP response")
}

/// Waits until the connection is closed by the gateway; returns how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the gateway kept the connection open for {limit:?}"),
        }
    }
}

/// Waits until the gateway has `n` data requests in flight.
async fn in_flight(p: &Platform, n: usize) {
    eventually(
        Duration::from_secs(5),
        &format!("{n} requests in flight"),
        || async { p.metric("larder_gateway_requests_in_flight").await == n as f64 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_limits_are_shed_at_once() {
    const GLOBAL: usize = 8;
    const PER_NAMESPACE: usize = 4;
    let hold = Duration::from_secs(5);
    let p = Platform::start(|c| {
        c.max_in_flight = GLOBAL as u32;
        c.max_in_flight_per_namespace = PER_NAMESPACE as u32;
        c.body_read_timeout_ms = hold.as_millis() as u64;
    })
    .await;
    let alpha = p.tenant("alpha", unthrottled()).await;
    let beta = p.tenant("beta", unthrottled()).await;
    let gamma = p.tenant("gamma", unthrottled()).await;
    let address = p.address();

    // alpha fills its namespace slots with writes whose bodies never come.
    let mut held = Vec::new();
    let started = Instant::now();
    for i in 0..PER_NAMESPACE {
        held.push(put_head(&address, "alpha", &alpha, &format!("held-{i}"), 16).await);
    }
    in_flight(&p, PER_NAMESPACE).await;
    let t = Instant::now();
    let (status, retry_after, body) = p.get("alpha", &alpha, "k").await;
    let waited = t.elapsed();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("/concurrency-limited"),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    assert!(
        waited < Duration::from_millis(500),
        "refused at once, not queued: {waited:?}"
    );
    // Another namespace is not affected.
    assert_eq!(p.get("beta", &beta, "k").await.0, StatusCode::NOT_FOUND);

    // beta fills its slots too: the gateway is at its global limit.
    for i in 0..PER_NAMESPACE {
        held.push(put_head(&address, "beta", &beta, &format!("held-{i}"), 16).await);
    }
    in_flight(&p, GLOBAL).await;
    let t = Instant::now();
    let (status, retry_after, body) = p.get("gamma", &gamma, "k").await;
    let waited = t.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("/overloaded"),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
    assert!(
        waited < Duration::from_millis(500),
        "refused at once, not queued: {waited:?}"
    );
    // Probes and scrapes are not data requests: a saturated gateway still answers them.
    assert_eq!(p.healthz().await, StatusCode::OK);

    // A flood while saturated: every request is refused at once.
    let t = Instant::now();
    let flood: Vec<_> = (0..100)
        .map(|i| {
            let (http, url, token) = (
                p.http.clone(),
                format!("{}/v1/namespaces/gamma/keys/f{i}", p.gw.url),
                gamma.clone(),
            );
            tokio::spawn(async move {
                http.get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut refused = 0;
    for r in flood {
        let status = r.await.unwrap();
        assert!(
            status == StatusCode::SERVICE_UNAVAILABLE || started.elapsed() >= hold,
            "served while saturated: {status}"
        );
        refused += usize::from(status == StatusCode::SERVICE_UNAVAILABLE);
    }
    println!(
        "100 requests to a saturated gateway: {refused} refused with 503 in {} ms",
        t.elapsed().as_millis()
    );
    assert!(refused > 0);

    // The held writes are cut off at the body deadline, with a problem, not left hanging.
    for mut stream in held {
        let raw = read_response(&mut stream, hold * 3)
            .await
            .expect("a 408 answer");
        assert_eq!(raw.status, 408, "{}\n{}", raw.head, raw.body);
        assert!(
            raw.problem_type().ends_with("/body-timeout"),
            "{}",
            raw.body
        );
    }
    let cut = started.elapsed();
    assert!(
        cut >= hold - Duration::from_millis(200) && cut < hold * 3,
        "slow bodies cut off after {cut:?} (deadline {hold:?})"
    );

    // Served normally afterwards.
    in_flight(&p, 0).await;
    assert_eq!(
        p.put("gamma", &gamma, "after", "v").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(p.get("alpha", &alpha, "k").await.0, StatusCode::NOT_FOUND);
    assert_eq!(p.get("gamma", &gamma, "after").await.0, StatusCode::OK);

    // A flood with more callers than slots: some are served, the excess is shed, and
    // never more than the limit is in flight (what bounds the gateway's memory).
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let (http, url, token) = (
                p.http.clone(),
                format!("{}/v1/namespaces/gamma/keys/after", p.gw.url),
                gamma.clone(),
            );
            tokio::spawn(async move {
                http.get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let (mut served, mut shed) = (0, 0);
    for r in flood {
        match r.await.unwrap() {
            StatusCode::OK => served += 1,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => shed += 1,
            other => panic!("unexpected {other} under a flood"),
        }
    }
    let peak = p.metric("larder_gateway_requests_in_flight_peak").await;
    println!("200 concurrent requests: {served} served, {shed} shed; peak in flight {peak}");
    assert!(served > 0, "a flood does not stop service");
    assert_eq!(
        peak, GLOBAL as f64,
        "in flight reached but never passed {GLOBAL}"
    );
    assert!(
        p.metric("larder_gateway_shed_total{limit=\"global\"}")
            .await
            >= refused as f64
    );
    assert!(
        p.metric("larder_gateway_shed_total{limit=\"namespace\"}")
            .await
            >= 1.0
    );
    assert_eq!(p.healthz().await, StatusCode::OK);
    assert_eq!(p.get("gamma", &gamma, "after").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_input_is_cut_off_and_the_gateway_stays_up() {
    let header_timeout = Duration::from_millis(1_000);
    let body_timeout = Duration::from_millis(1_500);
    let p = Platform::start(|c| {
        c.header_read_timeout_ms = header_timeout.as_millis() as u64;
        c.body_read_timeout_ms = body_timeout.as_millis() as u64;
        c.max_header_bytes = 4096;
        c.max_body_bytes = 64 << 10;
    })
    .await;
    let token = p.tenant("shop", unthrottled()).await;
    let address = p.address();

    // Slowloris: a head sent one byte every 100 ms is cut off at the header deadline,
    // long before it would be complete.
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(8), reader.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("a slow head kept its connection for 8 s"),
        }
    };
    trickle.abort();
    println!("slow head cut off after {} ms", closed.as_millis());
    assert!(
        closed < header_timeout * 3,
        "cut off after {closed:?}, deadline {header_timeout:?}"
    );

    // A connection that sends nothing is closed at the same deadline.
    let mut idle = TcpStream::connect(&address).await.unwrap();
    let closed = closed_within(&mut idle, header_timeout * 3).await;
    assert!(
        closed >= header_timeout - Duration::from_millis(100),
        "{closed:?}"
    );

    // Slow body: a 100-byte value sent one byte every 100 ms gets 408 at the body
    // deadline.
    let mut stream = put_head(&address, "shop", &token, "slow", 100).await;
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    let answer = {
        let trickle = async {
            for _ in 0..100 {
                if writer.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await;
        };
        let read = async {
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
                if data.windows(4).any(|w| w == b"\r\n\r\n") && data.ends_with(b"}") {
                    break;
                }
            }
            String::from_utf8_lossy(&data).to_string()
        };
        tokio::select! {
            () = trickle => unreachable!(),
            text = tokio::time::timeout(Duration::from_secs(8), read) => text.expect("an answer within 8 s"),
        }
    };
    let took = started.elapsed();
    println!("slow body cut off after {} ms", took.as_millis());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("/body-timeout"), "{answer}");
    assert!(
        took >= body_timeout - Duration::from_millis(100) && took < body_timeout * 3,
        "{took:?}"
    );

    // A head over max_header_bytes: 431.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5_000)
    );
    let raw = raw_request(&address, big.as_bytes()).await;
    assert_eq!(raw.status, 431, "{}", raw.head);

    // A body declared over max_body_bytes: 413 before any of it is read.
    let raw = raw_request(
        &address,
        format!(
            "POST /v1/namespaces/shop/batch HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            100 << 10
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw.status, 413, "{}\n{}", raw.head, raw.body);
    assert!(
        raw.problem_type().ends_with("/body-too-large"),
        "{}",
        raw.body
    );
    assert!(
        raw.head
            .to_ascii_lowercase()
            .contains("application/problem+json")
    );

    // A batch over 100 operations: 400; 100 is accepted.
    let batch = |n: usize| json!({"operations": (0..n).map(|i| json!({"op": "put", "key": format!("k{i}"), "value": "v"})).collect::<Vec<_>>()});
    let send = |body: Value| {
        p.http
            .post(format!("{}/v1/namespaces/shop/batch", p.gw.url))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = send(batch(101)).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("100"), "{body}");
    assert_eq!(send(batch(100)).await.unwrap().status(), StatusCode::OK);

    // Still up, and serving.
    assert_eq!(p.healthz().await, StatusCode::OK);
    assert_eq!(
        p.put("shop", &token, "after", "v").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(p.get("shop", &token, "after").await.0, StatusCode::OK);
}

/// Latencies of requests sent at `rate` per second for `duration` (open loop: a request
/// is sent on schedule whether or not the previous ones have been answered), with each
/// request's status.
async fn drive(
    http: &reqwest::Client,
    url: String,
    token: String,
    rate: u32,
    duration: Duration,
) -> Vec<(Duration, StatusCode)> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let count = (duration.as_secs_f64() * f64::from(rate)) as usize;
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        tick.tick().await;
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        requests.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = match http.get(url).bearer_auth(token).send().await {
                Ok(r) => r.status(),
                Err(_) => StatusCode::IM_A_TEAPOT,
            };
            (t.elapsed(), status)
        }));
    }
    let mut out = Vec::with_capacity(count);
    for r in requests {
        out.push(r.await.unwrap());
    }
    out
}

fn p99(samples: &[(Duration, StatusCode)]) -> Duration {
    let mut latencies: Vec<Duration> = samples.iter().map(|(d, _)| *d).collect();
    latencies.sort();
    let index = ((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1);
    latencies[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_flooding_over_its_rate_limit_leaves_its_neighbour_served() {
    const NOISY_LIMIT: u32 = 50;
    const QUIET_RATE: u32 = 100;
    let phase = Duration::from_secs(3);
    let p = Platform::start(|_| {}).await;
    let noisy = p
        .tenant(
            "noisy",
            Limits {
                ops_per_sec: NOISY_LIMIT,
                burst: NOISY_LIMIT,
                ..Limits::default()
            },
        )
        .await;
    let quiet = p.tenant("quiet", Limits::default()).await;
    assert_eq!(
        p.put("quiet", &quiet, "k", "v").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        p.put("noisy", &noisy, "k", "v").await,
        StatusCode::NO_CONTENT
    );
    let quiet_url = format!("{}/v1/namespaces/quiet/keys/k", p.gw.url);
    let noisy_url = format!("{}/v1/namespaces/noisy/keys/k", p.gw.url);

    // Warm up connections, then the quiet namespace alone.
    drive(
        &p.http,
        quiet_url.clone(),
        quiet.clone(),
        QUIET_RATE,
        Duration::from_millis(500),
    )
    .await;
    let alone = drive(&p.http, quiet_url.clone(), quiet.clone(), QUIET_RATE, phase).await;

    // The same, while the noisy namespace is driven at 10 times its rate limit by a
    // client of its own (its own thread and connections, like another tenant's service).
    let flood_of = |url: String, token: String| {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(drive(
                &reqwest::Client::new(),
                url,
                token,
                NOISY_LIMIT * 10,
                phase,
            ))
        })
    };
    let flooder = flood_of(noisy_url, noisy);
    let beside = drive(&p.http, quiet_url.clone(), quiet.clone(), QUIET_RATE, phase).await;
    let flood = tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();
    // A control: the same request rate at `/healthz`, which touches no namespace. What
    // it costs the quiet namespace is the machine's contention (client and gateway share
    // its cores), not a lack of isolation in the gateway.
    let flooder = flood_of(format!("{}/healthz", p.gw.url), String::new());
    let control = drive(&p.http, quiet_url.clone(), quiet.clone(), QUIET_RATE, phase).await;
    tokio::task::spawn_blocking(move || flooder.join().unwrap())
        .await
        .unwrap();

    let (p99_alone, p99_beside) = (p99(&alone), p99(&beside));
    let ratio = p99_beside.as_secs_f64() / p99_alone.as_secs_f64();
    let p99_control = p99(&control);
    println!(
        "control: quiet namespace p99 {:.2} ms beside the same rate of /healthz: ratio {:.2}",
        p99_control.as_secs_f64() * 1e3,
        p99_control.as_secs_f64() / p99_alone.as_secs_f64(),
    );
    let flood_ok = flood.iter().filter(|(_, s)| *s == StatusCode::OK).count();
    let flood_limited = flood
        .iter()
        .filter(|(_, s)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    println!(
        "quiet namespace at {QUIET_RATE}/s: p99 {:.2} ms alone, {:.2} ms beside a neighbour at {}/s (10x its limit): ratio {ratio:.2} ({:+.0} %)",
        p99_alone.as_secs_f64() * 1e3,
        p99_beside.as_secs_f64() * 1e3,
        NOISY_LIMIT * 10,
        (ratio - 1.0) * 100.0,
    );
    println!(
        "noisy namespace: {} requests, {flood_ok} served, {flood_limited} refused with 429",
        flood.len()
    );
    for (what, samples) in [
        ("alone", &alone),
        ("beside the flood", &beside),
        ("beside the control flood", &control),
    ] {
        let failed: Vec<_> = samples
            .iter()
            .filter(|(_, s)| *s != StatusCode::OK)
            .collect();
        assert!(
            failed.is_empty(),
            "the quiet namespace {what} got {} non-2xx answers, e.g. {:?}",
            failed.len(),
            failed.first()
        );
    }
    assert_eq!(
        flood_ok + flood_limited,
        flood.len(),
        "the noisy namespace gets only 200 or 429"
    );
    // Its limit over the phase, plus the burst, plus slack for the phase running long.
    let allowed =
        (NOISY_LIMIT as f64 * (phase.as_secs_f64() + 1.0)) as usize + NOISY_LIMIT as usize;
    assert!(
        flood_ok <= allowed,
        "the noisy namespace was held to its limit: {flood_ok} served, at most {allowed} allowed"
    );
    assert!(
        flood_limited > flood.len() / 2,
        "most of the flood is refused"
    );
}
