//! Hostile input against a real platform (ZooKeeper, Redis, control plane, gateway),
//! generated with proptest and sent as raw HTTP/1.1 so that no client library tidies a
//! path or a header first:
//!
//! - `hostile_requests_never_get_a_5xx`: random methods, paths, queries, headers and
//!   bodies on every route never get a 5xx, and every 4xx is problem+json.
//! - `tenants_stay_apart_*`: with tenant A's token, random keys, prefixes, batches,
//!   counters and queues — in A's namespace, in B's, and in spellings that decode to B's —
//!   never return any of B's values or key names and never change any of B's raw Redis
//!   keys, on a standalone deployment and on Redis Cluster.
//!
//! Cases are drawn from a seed printed at the start; `LARDER_PROPTEST_SEED=<n>` replays
//! a run and `LARDER_PROPTEST_CASES=<n>` changes how many cases run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use larder_tests::platform::{self, Service};
use larder_tests::{Redis, RedisCluster, ZooKeeper, eventually, unique_root};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode, percent_encode};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TENANT_A: &str = "tenant-a";
const TENANT_B: &str = "tenant-b";

// ---------------------------------------------------------------------------------------
// The platform
// ---------------------------------------------------------------------------------------

enum Deployment {
    Standalone(Redis),
    Cluster(RedisCluster),
}

impl Deployment {
    fn registration(&self) -> Value {
        match self {
            Deployment::Standalone(r) => {
                json!({"name": "main", "topology": "standalone", "endpoints": [r.address()], "capacity_bytes": 1u64 << 30})
            }
            Deployment::Cluster(c) => {
                json!({"name": "main", "topology": "cluster", "endpoints": c.addresses(), "capacity_bytes": 1u64 << 30})
            }
        }
    }

    /// Every key of the deployment with its `TYPE` and `DUMP`, read directly from each
    /// master (every node of the test cluster is a master).
    async fn raw_keys(&self) -> BTreeMap<Vec<u8>, (String, Vec<u8>)> {
        let nodes: Vec<&Redis> = match self {
            Deployment::Standalone(r) => vec![r],
            Deployment::Cluster(c) => c.nodes().iter().collect(),
        };
        let mut out = BTreeMap::new();
        for node in nodes {
            let mut conn = node.connection().await;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                for key in keys {
                    let kind: String = redis::cmd("TYPE")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    let dump: Option<Vec<u8>> = redis::cmd("DUMP")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    out.insert(key, (kind, dump.unwrap_or_default()));
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        out
    }
}

/// ZooKeeper, one deployment, a control plane and a gateway, with two tenants on the
/// same deployment. Their rate limits are high so that the generated requests exercise
/// the handlers rather than the limiter.
struct Platform {
    _zk: ZooKeeper,
    deployment: Deployment,
    _keys: tempfile::TempDir,
    _cp: Service,
    _gw: Service,
    /// `host:port` of the gateway.
    gw: String,
    token_a: String,
    token_b: String,
}

impl Platform {
    async fn start(cluster: bool) -> Self {
        larder_tests::init_tracing();
        let zk = ZooKeeper::start().await;
        let deployment = if cluster {
            Deployment::Cluster(RedisCluster::start(3).await)
        } else {
            Deployment::Standalone(Redis::start().await)
        };
        let root = unique_root();
        let keys = tempfile::tempdir().unwrap();
        let cp = platform::control_plane(&zk, &root, keys.path()).await;
        let gw = platform::gateway(&zk, &root).await;
        let admin_token = platform::admin_token(keys.path());
        let http = reqwest::Client::new();
        let admin = |path: &str, body: Value| {
            let request = http
                .post(format!("{}{path}", cp.url))
                .bearer_auth(&admin_token)
                .json(&body);
            async move {
                let r = request.send().await.unwrap();
                let status = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                assert!(status.is_success(), "{status} {body}");
                body
            }
        };
        admin("/v1/clusters", deployment.registration()).await;
        let mut tokens = Vec::new();
        for ns in [TENANT_A, TENANT_B] {
            admin(
                "/v1/namespaces",
                json!({"name": ns, "owner": "team", "cluster": "main",
                       "limits": {"ops_per_sec": 1_000_000, "burst": 1_000_000}}),
            )
            .await;
            let issued = admin(
                &format!("/v1/namespaces/{ns}/tokens"),
                json!({"subject": "tests", "permissions": ["read", "write", "queue"], "ttl_s": 3600}),
            )
            .await;
            tokens.push(issued["token"].as_str().unwrap().to_owned());
        }
        let gw_address = gw.url.trim_start_matches("http://").to_owned();
        let token_b = tokens.pop().unwrap();
        let token_a = tokens.pop().unwrap();
        for (ns, token) in [(TENANT_A, &token_a), (TENANT_B, &token_b)] {
            let probe = Req::new("GET", format!("/v1/namespaces/{ns}/keys/probe")).bearer(token);
            eventually(
                Duration::from_secs(5),
                "the gateway serves the namespace",
                || async {
                    send(&gw_address, &probe).await.problem_type().as_deref()
                        == Some("key-not-found")
                },
            )
            .await;
        }
        Platform {
            _zk: zk,
            deployment,
            _keys: keys,
            _cp: cp,
            _gw: gw,
            gw: gw_address,
            token_a,
            token_b,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------

/// A request exactly as it goes on the wire (the target is sent verbatim).
#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Req {
    fn new(method: &str, target: String) -> Self {
        Req {
            method: method.into(),
            target,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}").into_bytes())
    }

    fn header(mut self, name: &str, value: Vec<u8>) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    fn json(mut self, body: &Value) -> Self {
        self.body = body.to_string().into_bytes();
        self.header("content-type", b"application/json".to_vec())
    }

    /// A short description for failure messages (bodies can be long).
    fn describe(&self) -> String {
        let headers: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| n != "authorization")
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        format!(
            "{} {} {headers:?} body {:?}",
            self.method,
            self.target,
            String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
        )
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The last segment of the problem `type`, like `key-not-found`.
    fn problem_type(&self) -> Option<String> {
        Some(self.json()["type"].as_str()?.rsplit('/').next()?.to_owned())
    }

    /// Everything the client received, for leak checks.
    fn all_bytes(&self) -> Vec<u8> {
        let mut out = self.body.clone();
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(v);
        }
        out
    }
}

/// Sends `req` on a new connection (`Connection: close`) and reads the whole reply.
async fn send(gw: &str, req: &Req) -> Reply {
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {gw}\r\nconnection: close\r\ncontent-length: {}\r\n",
        req.method,
        req.target,
        req.body.len()
    )
    .into_bytes();
    for (n, v) in &req.headers {
        head.extend_from_slice(n.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&req.body);
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(gw).await?;
        stream.write_all(&head).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .unwrap_or_else(|_| panic!("no reply within 15 s to {}", req.describe()))
        .unwrap_or_else(|e| panic!("{e} on {}", req.describe()));
    parse_reply(&raw, req.method == "HEAD").unwrap_or_else(|| {
        panic!(
            "unreadable reply {:?} to {}",
            String::from_utf8_lossy(&raw),
            req.describe()
        )
    })
}

fn parse_reply(raw: &[u8], head: bool) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    // Header values may hold obs-text (a client's own `x-request-id` echoed back), so
    // the head is read as bytes.
    let mut lines = raw[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = std::str::from_utf8(lines.next()?).ok()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    for line in lines {
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        headers.push((
            name.trim().to_ascii_lowercase(),
            line[colon + 1..].trim_ascii().to_vec(),
        ));
    }
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    if chunked && !head {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = out;
    }
    Some(Reply {
        status,
        headers,
        body,
    })
}

/// What every reply must satisfy: no 5xx, and every 4xx is problem+json (with a body
/// naming the same status, except for `HEAD`, which has no body).
fn assert_well_formed(req: &Req, reply: &Reply, seed: u64) {
    assert!(
        reply.status < 500,
        "seed {seed}: {} answered {}: {}",
        req.describe(),
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    if (400..500).contains(&reply.status) {
        assert_eq!(
            reply.header("content-type"),
            Some(&b"application/problem+json"[..]),
            "seed {seed}: {} answered {} without problem+json: {:?}",
            req.describe(),
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        if req.method != "HEAD" {
            assert_eq!(
                reply.json()["status"].as_u64(),
                Some(u64::from(reply.status)),
                "seed {seed}: {}: {:?}",
                req.describe(),
                String::from_utf8_lossy(&reply.body)
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Unreserved characters stay, everything else is percent-encoded: how a careful
/// client writes a path segment or a query value.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, ENCODE).collect()
}

/// A careless or malicious spelling: path characters (`/`, `:`, `*`, `..`, `@`, ...)
/// and existing `%XX` sequences are left as they are, so the server decodes them; only
/// what would make the request line invalid is encoded.
fn spell_raw(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, &b) in bytes.iter().enumerate() {
        let pchar = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b);
        let escape = b == b'%'
            && bytes.len() > i + 2
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if pchar || escape {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Tenant key bytes rich in everything that could cross a namespace or confuse a
/// glob, a hash tag, a path or a decoder; up to and one past the longest key allowed
/// (512 bytes by default).
fn hostile_key() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "..",
            "/",
            "%2F",
            "%2f",
            "%252F",
            "*",
            "?",
            "[",
            "]",
            "[a-z]",
            "{",
            "}",
            "{b}",
            ":",
            "\\",
            "^",
            "-",
            "#",
            "\0",
            " ",
            "%00",
            "tenant-b",
            "larder:tenant-b:k:",
            "../tenant-b/keys/",
            "k:",
            "secret",
            "ключ",
            "😀",
            "\u{202e}",
            "Ω",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        "[a-z0-9]{1,4}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 1..4),
    ];
    prop_oneof![
        12 => proptest::collection::vec(piece, 1..6).prop_map(|p| p.concat()),
        1 => Just(vec![b'k'; 512]),
        1 => Just(vec![b'k'; 513]),
        1 => Just("ключ".repeat(64).into_bytes()),
        1 => Just("ключ".repeat(65).into_bytes()),
    ]
}

/// A queue, group or consumer name: mostly valid (visible ASCII), sometimes not.
fn queue_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[!-~]{1,12}",
        2 => Just("jobs".to_owned()),
        1 => Just(String::new()),
        1 => Just("q".repeat(201)),
        1 => "[ -~]{1,6}|ключ",
    ]
}

/// One query parameter with an interesting value.
fn query_param() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(vec!["ttl", "lease", "limit"]),
            query_number()
        )
            .prop_map(|(k, v)| format!("{k}={v}")),
        (
            prop::sample::select(vec!["prefix", "cursor", "after", "group", "x"]),
            query_text()
        )
            .prop_map(|(k, v)| format!("{k}={v}")),
        Just("ttl=1&ttl=2".to_owned()),
        Just("limit".to_owned()),
        Just("=".to_owned()),
        Just("&&".to_owned()),
    ]
}

/// A numeric query value (encoded): valid, out of range, past `u64`, not a number.
fn query_number() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "0",
        "1",
        "-1",
        "5",
        "100",
        "1000",
        "1001",
        "60000",
        "60001",
        "3153600000",
        "3153600001",
        "9223372036854",
        "9223372036854775807",
        "18446744073709551615",
        "18446744073709551616",
        "1e3",
        "0x10",
        " 1",
        "abc",
        "",
    ])
    .prop_map(|v| encode(v.as_bytes()))
}

/// A text query value (encoded): keys, message ids, cursors real and forged.
fn query_text() -> impl Strategy<Value = String> {
    prop_oneof![
        hostile_key().prop_map(|k| encode(&k)),
        Just("18446744073709551615-18446744073709551615".to_owned()),
        Just("0-0".to_owned()),
        Just("%2B1-%2B2".to_owned()),
        Just("eyJuIjotMX0".to_owned()),
        Just("bm90IGpzb24".to_owned()),
        "[A-Za-z0-9_-]{0,24}",
    ]
}

/// A queue message id: valid, the largest, signed, half-empty, not one.
fn message_id() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "18446744073709551615-18446744073709551615",
        "18446744073709551615-18446744073709551615",
        "1-18446744073709551615",
        "0-0",
        "%2B1-%2B2",
        "1-",
        "x",
    ])
    .prop_map(str::to_owned)
}

/// `?name=value` half of the time, else nothing.
fn maybe_param(
    name: &'static str,
    value: impl Strategy<Value = String>,
) -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        value.prop_map(move |v| format!("?{name}={v}")),
    ]
}

/// One batch operation, sometimes malformed.
fn batch_operation() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "get", "put", "delete", "get", "put", "delete", "get", "put", "put", "GET", "incr",
        ]),
        hostile_key(),
        0..6u8,
        proptest::option::of(prop::sample::select(vec![
            0u64,
            1,
            60,
            3_153_600_001,
            u64::MAX,
        ])),
    )
        .prop_map(|(op, key, form, ttl)| {
            let mut o = json!({"op": op});
            match form {
                0 | 1 => o["key"] = String::from_utf8_lossy(&key).into_owned().into(),
                2 => o["key_base64"] = URL_SAFE_NO_PAD.encode(&key).into(),
                3 => o["key_base64"] = STANDARD.encode(&key).into(),
                4 => {
                    o["key"] = "both".into();
                    o["key_base64"] = "Ym90aA".into();
                }
                _ => {}
            }
            if op == "put" {
                o["value"] = "a-value".into();
            }
            if let Some(t) = ttl {
                o["ttl"] = t.into();
            }
            o
        })
}

/// Numbers for JSON fields: valid small ones and every kind of out-of-range or
/// wrongly typed value.
fn number() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        json!(1),
        json!(5),
        json!(60),
        json!(0),
        json!(-1),
        json!(9_007_199_254_740_992i64),
        json!(9_007_199_254_740_993i64),
        json!(3_153_600_001u64),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e300),
        json!(0.5),
        json!("1"),
        Value::Null,
    ])
}

/// Bodies no route takes: bytes, truncated JSON, JSON of the wrong shape.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 1..64),
        Just(b"{\"operations\": [".to_vec()),
        Just(b"[]".to_vec()),
        Just(b"\"text\"".to_vec()),
        Just(b"{\"unknown\": 1}".to_vec()),
    ]
}

/// Mostly `shape`, sometimes garbage.
fn json_or_garbage(shape: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        9 => shape.prop_map(|v| v.to_string().into_bytes()),
        1 => garbage(),
    ]
}

fn value_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => Just(b"a-value".to_vec()),
        2 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
}

fn batch_body() -> impl Strategy<Value = Vec<u8>> {
    json_or_garbage(prop_oneof![
        9 => proptest::collection::vec(batch_operation(), 0..8)
            .prop_map(|ops| json!({"operations": ops})),
        1 => Just(json!({"operations": vec![json!({"op": "get", "key": "k"}); 101]})),
    ])
}

fn step_body() -> impl Strategy<Value = Vec<u8>> {
    json_or_garbage(
        (
            prop_oneof![3 => Just(json!(1)), 3 => Just(json!(-1)), 2 => number()],
            prop_oneof![3 => Just(Value::Null), 1 => number()],
            prop_oneof![3 => Just(Value::Null), 1 => number()],
            prop_oneof![3 => Just(Value::Null), 1 => number()],
        )
            .prop_map(|(delta, floor, ceiling, ttl)| {
                json!({"delta": delta, "floor": floor, "ceiling": ceiling, "ttl": ttl})
            }),
    )
}

fn ttl_body() -> impl Strategy<Value = Vec<u8>> {
    json_or_garbage(number().prop_map(|t| json!({"ttl_s": t})))
}

fn claim_body() -> impl Strategy<Value = Vec<u8>> {
    json_or_garbage(
        (
            queue_name(),
            queue_name(),
            prop_oneof![3 => Just(json!(1)), 1 => number()],
            prop_oneof![3 => Just(json!(30_000)), 1 => number()],
            prop_oneof![3 => Just(json!(5)), 1 => number()],
        )
            .prop_map(|(group, consumer, count, visibility, deliveries)| {
                // No `wait_ms`: a valid long wait would only slow the test down.
                json!({"group": group, "consumer": consumer, "count": count,
                       "visibility_ms": visibility, "max_deliveries": deliveries})
            }),
    )
}

fn ack_body() -> impl Strategy<Value = Vec<u8>> {
    json_or_garbage(
        (
            queue_name(),
            proptest::collection::vec(
                prop::sample::select(vec![
                    "0-1",
                    "1-0",
                    "+1-+2",
                    "18446744073709551615-18446744073709551615",
                    "x",
                    "",
                ]),
                0..4,
            ),
        )
            .prop_map(|(group, ids)| json!({"group": group, "ids": ids})),
    )
}

/// Query strings: mostly none, else one or two parameters.
fn queries() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => proptest::collection::vec(query_param(), 1..3),
    ]
}

/// The request for a drawn endpoint in namespace segment `ns`, its method replaced
/// when `method` is given. A JSON body gets a JSON `Content-Type` first; generated
/// headers follow (and may contradict it).
fn build(
    method: Option<&'static str>,
    ns: &str,
    (route_method, route, _, body): (&'static str, String, Option<Vec<u8>>, Vec<u8>),
    query: &[String],
    headers: Vec<(String, Vec<u8>)>,
) -> Req {
    let mut target = format!("/v1/namespaces/{ns}/{route}");
    if !query.is_empty() {
        let join = if target.contains('?') { '&' } else { '?' };
        target = format!("{target}{join}{}", query.join("&"));
    }
    let mut req = Req::new(method.unwrap_or(route_method), target);
    if serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object()) {
        req = req.header("content-type", b"application/json".to_vec());
    }
    for (n, v) in headers {
        req = req.header(&n, v);
    }
    req.body = body;
    req
}

const METHODS: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"];

/// A key as a path segment (carefully or carelessly spelled) and the bytes the server
/// decodes it to.
fn key_segment() -> impl Strategy<Value = (String, Vec<u8>)> {
    (hostile_key(), any::<bool>()).prop_map(|(key, raw)| {
        let segment = if raw { spell_raw(&key) } else { encode(&key) };
        let decoded: Vec<u8> = percent_decode(segment.as_bytes()).collect();
        (segment, decoded)
    })
}

/// A request to one of the routes, as (method, path after `/v1/namespaces/<ns>/`, the
/// key bytes it names if any, body): mostly the method and body shape the route
/// takes, so that generated requests get past the router to the handlers' parsers.
fn endpoint() -> impl Strategy<Value = (&'static str, String, Option<Vec<u8>>, Vec<u8>)> {
    let queue = (
        queue_name(),
        0..5u8,
        value_body(),
        claim_body(),
        ack_body(),
        maybe_param("group", query_text()),
        maybe_param("after", message_id()),
    )
        .prop_map(|(q, kind, value, claim, ack, group, after)| {
            let q = encode(q.as_bytes());
            match kind {
                0 => ("POST", format!("queues/{q}/messages"), None, value),
                1 => ("POST", format!("queues/{q}/claims"), None, claim),
                2 => ("POST", format!("queues/{q}/acks"), None, ack),
                3 => ("GET", format!("queues/{q}{group}"), None, Vec::new()),
                _ => (
                    "GET",
                    format!("queues/{q}/dead-letters{after}"),
                    None,
                    Vec::new(),
                ),
            }
        });
    prop_oneof![
        4 => (
            key_segment(),
            prop::sample::select(vec!["GET", "PUT", "PUT", "DELETE", "HEAD"]),
            value_body(),
            maybe_param("ttl", query_number()),
            maybe_param("lease", query_number()),
        )
            .prop_map(|((s, k), m, b, ttl, lease)| {
                let query = match m {
                    "PUT" => ttl,
                    "GET" => lease,
                    _ => String::new(),
                };
                (m, format!("keys/{s}{query}"), Some(k), b)
            }),
        1 => (key_segment(), prop::sample::select(vec!["GET", "PUT"]), ttl_body())
            .prop_map(|((s, k), m, b)| (m, format!("ttl/{s}"), Some(k), b)),
        2 => (key_segment(), prop::sample::select(vec!["POST", "POST", "GET", "DELETE"]), step_body())
            .prop_map(|((s, k), m, b)| (m, format!("counters/{s}"), Some(k), b)),
        2 => batch_body().prop_map(|b| ("POST", "batch".to_owned(), None, b)),
        1 => (
            prop::sample::select(vec!["keys", "hotkeys"]),
            maybe_param("limit", query_number()),
            maybe_param("prefix", query_text()),
            maybe_param("cursor", query_text()),
        )
            .prop_map(|(r, limit, prefix, cursor)| {
                // Only the first `?`-part opens the query; the others join it.
                let query = [limit, prefix, cursor]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .enumerate()
                    .map(|(i, p)| if i == 0 { p } else { p.replacen('?', "&", 1) })
                    .collect::<String>();
                ("GET", format!("{r}{query}"), None, Vec::new())
            }),
        3 => queue,
        1 => (
            prop::sample::select(METHODS.to_vec()),
            prop::sample::select(vec!["keys/", "ttl/", "counters/", "queues", "queues/", "queues/q/x", "nope", "", "batch"]),
            garbage(),
        )
            .prop_map(|(m, r, b)| (m, r.to_owned(), None, b)),
    ]
}

/// Extra request headers: conditions, leases, idempotency keys and content types,
/// well-formed or not (obs-text bytes included).
fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let value = prop_oneof![
        prop::sample::select(vec![
            "*",
            "\"0123456789abcdef\"",
            "W/\"0123456789abcdef\"",
            "\"\"",
            "\"zz\"",
            "a, b, *",
            "retry-1",
            "a}:b",
            "application/json",
            "text/plain; charset=utf-8",
            "application/octet-stream",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        Just(vec![b'x'; 256]),
        "[ -~]{0,16}".prop_map(String::into_bytes),
        proptest::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 1..12),
    ];
    let header = (
        prop::sample::select(vec![
            "if-match",
            "if-none-match",
            "idempotency-key",
            "lease-token",
            "content-type",
            "accept",
            "x-request-id",
        ])
        .prop_map(str::to_owned),
        value,
    );
    // Half the requests carry none, so that the others' effects get through too.
    prop_oneof![Just(Vec::new()), proptest::collection::vec(header, 1..3),]
}

// ---------------------------------------------------------------------------------------
// Running generated cases
// ---------------------------------------------------------------------------------------

/// A runner seeded from `LARDER_PROPTEST_SEED` or at random; cases from
/// `LARDER_PROPTEST_CASES` or `default_cases`. Cases run against a live system, so they
/// are not shrunk: a failure names the seed and the request instead.
fn runner(default_cases: u32) -> (TestRunner, u64, u32) {
    let seed: u64 = std::env::var("LARDER_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cases = std::env::var("LARDER_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let runner = TestRunner::new_with_rng(
        Config {
            cases,
            ..Config::default()
        },
        rng,
    );
    println!("proptest seed {seed} (LARDER_PROPTEST_SEED={seed} replays it), {cases} cases");
    (runner, seed, cases)
}

fn draw<S: Strategy>(runner: &mut TestRunner, strategy: &S) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("the strategy draws a value")
        .current()
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Random methods, paths, queries, headers, tokens and bodies on every route: never a
/// 5xx (the deployment is healthy, so any 5xx is the gateway's fault), never a dropped
/// connection, and every 4xx is problem+json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_never_get_a_5xx() {
    let p = Platform::start(false).await;
    let (mut runner, seed, cases) = runner(1_000);
    let auth = prop_oneof![
        10 => Just(Some(format!("Bearer {}", p.token_a))),
        1 => Just(Some(format!("bearer  {} ", p.token_a))),
        1 => Just(Some(format!("Bearer {}", p.token_b))),
        1 => Just(None),
        1 => prop::sample::select(vec!["Bearer", "Bearer ", "Basic dXNlcjpwdw==", "Bearer a.b.c", "Bearer eyJhbGciOiJub25lIn0.e30."])
            .prop_map(|s| Some(s.to_owned())),
        1 => Just(Some(format!("Bearer {}x", p.token_a))),
    ];
    let ns = prop_oneof![
        6 => Just(TENANT_A.to_owned()),
        1 => Just(TENANT_B.to_owned()),
        1 => prop::sample::select(vec!["no-such-ns", "TENANT-A", "tenant-%61", "%FF", "a", "tenant-a%2F..", "%2E%2E", "*"])
            .prop_map(str::to_owned),
    ];
    let request = (
        proptest::option::weighted(0.15, prop::sample::select(METHODS.to_vec())),
        ns,
        endpoint(),
        queries(),
        headers(),
        auth,
    );
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    for _ in 0..cases {
        let (method, ns, endpoint, query, headers, auth) = draw(&mut runner, &request);
        let mut req = build(method, &ns, endpoint, &query, headers);
        if let Some(a) = auth {
            req = req.header("authorization", a.into_bytes());
        }
        let reply = send(&p.gw, &req).await;
        assert_well_formed(&req, &reply, seed);
        *statuses.entry(reply.status).or_default() += 1;
    }
    println!("statuses over {cases} requests: {statuses:?}");
    // The generator must reach the handlers, not only the router's and the token's
    // refusals: successes and handler-level refusals both occur.
    assert!(
        statuses.range(200..300).map(|(_, n)| n).sum::<u32>() > 0,
        "no request succeeded: {statuses:?}"
    );
    assert!(statuses.contains_key(&400), "no 400 at all: {statuses:?}");
}

/// What tenant B holds before tenant A's requests: keys (named and valued with markers
/// no generated request contains), a counter with an idempotency record, a queue with
/// a consumer group and a pending message.
struct Seeded {
    /// In B's values (and queue messages); A never sends it.
    value_marker: String,
    /// In most of B's key names; A never sends it either.
    key_marker: String,
    keys: Vec<Vec<u8>>,
}

async fn seed_tenant_b(p: &Platform) -> Seeded {
    let tag = format!("{:016x}", rand::random::<u64>());
    let value_marker = format!("bvalue{tag}");
    let names: Vec<Vec<u8>> = [
        "secret",
        "b:secret",
        "{b}x",
        "*",
        "..",
        "k:secret",
        "tenant-a:k:x",
        "ключ",
        "a",
    ]
    .iter()
    .map(|n| format!("{n}-bkey{tag}").into_bytes())
    .chain([b"secret".to_vec(), b"*".to_vec(), b"a".to_vec()])
    .collect();
    for (i, name) in names.iter().enumerate() {
        let req = Req::new(
            "PUT",
            format!("/v1/namespaces/{TENANT_B}/keys/{}", encode(name)),
        )
        .bearer(&p.token_b);
        let req = Req {
            body: format!("{value_marker}-{i}").into_bytes(),
            ..req
        };
        assert_eq!(send(&p.gw, &req).await.status, 204, "{}", req.describe());
    }
    let step = Req::new("POST", format!("/v1/namespaces/{TENANT_B}/counters/stock"))
        .bearer(&p.token_b)
        .header("idempotency-key", b"retry-1".to_vec())
        .json(&json!({"delta": 7_340_033_921i64}));
    assert_eq!(send(&p.gw, &step).await.status, 200);
    for i in 0..2 {
        let mut enqueue = Req::new(
            "POST",
            format!("/v1/namespaces/{TENANT_B}/queues/jobs/messages"),
        )
        .bearer(&p.token_b);
        enqueue.body = format!("{value_marker}-msg{i}").into_bytes();
        assert_eq!(
            send(&p.gw, &enqueue).await.status,
            201,
            "{}",
            enqueue.describe()
        );
    }
    let claim = Req::new(
        "POST",
        format!("/v1/namespaces/{TENANT_B}/queues/jobs/claims"),
    )
    .bearer(&p.token_b)
    .json(&json!({"group": "g", "consumer": "c"}));
    let claimed = send(&p.gw, &claim).await;
    assert_eq!(claimed.status, 200);
    assert_eq!(claimed.json()["messages"].as_array().map(Vec::len), Some(1));
    Seeded {
        value_marker,
        key_marker: format!("bkey{tag}"),
        keys: names,
    }
}

/// The listed keys of a listing reply, as bytes.
fn listed(reply: &Reply) -> Vec<Vec<u8>> {
    let page = reply.json();
    page["keys"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|k| match (k["key"].as_str(), k["key_base64"].as_str()) {
            (Some(t), _) => t.as_bytes().to_vec(),
            (_, Some(b)) => URL_SAFE_NO_PAD.decode(b).unwrap(),
            _ => panic!("listed key without key or key_base64: {k}"),
        })
        .collect()
}

on_both_topologies!(tenants_stay_apart);
/// Tenant A's token, random keys (with `..`, `/`, `%2F`, globs, braces, colons,
/// Unicode, NUL, up to one past the longest key), prefixes with glob characters,
/// batches, counters and queues, aimed at A's namespace, at B's, and at spellings of
/// B's: B's raw Redis keys and values are byte-for-byte unchanged, A never receives one
/// of B's values, a listing shows A only keys A itself named, aiming at anything but
/// A's own namespace is always refused, and A's writes land only under A's prefix.
async fn tenants_stay_apart(cluster: bool) {
    let p = Platform::start(cluster).await;
    let seeded = seed_tenant_b(&p).await;
    let before = p.deployment.raw_keys().await;
    let b_prefix = format!("larder:{TENANT_B}:").into_bytes();
    let b_before: BTreeMap<_, _> = before
        .iter()
        .filter(|(k, _)| k.starts_with(&b_prefix))
        .collect();
    assert!(
        b_before.len() >= seeded.keys.len() + 3,
        "{:?}",
        b_before.keys()
    );
    assert!(
        before.keys().all(|k| k.starts_with(&b_prefix)),
        "only B's keys exist yet"
    );

    let (mut runner, seed, cases) = runner(200);
    // Where A aims: its own namespace mostly, else B's, or spellings that decode to B's
    // or to something else.
    let ns = prop_oneof![
        6 => Just(TENANT_A.to_owned()),
        2 => Just(TENANT_B.to_owned()),
        2 => prop::sample::select(vec![
            "tenant-%62", "%74enant-b", "TENANT-B", "tenant-b%00", "tenant-b%2F", "tenant-a%2F..%2Ftenant-b",
            "tenant-a%3Ak%3A", "tenant-a:k:..", "%2E%2E", "tenant-*", "tenant-?", "tenant-[ab]",
        ])
        .prop_map(str::to_owned),
    ];
    let request = (
        proptest::option::weighted(
            0.1,
            prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "HEAD"]),
        ),
        ns,
        endpoint(),
        queries(),
        headers(),
        proptest::collection::vec(hostile_key(), 0..3),
    );
    let mut named_by_a: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut statuses: BTreeMap<u16, u32> = BTreeMap::new();
    let mut listed_keys = 0usize;
    for _ in 0..cases {
        let (method, ns, endpoint, query, headers, prefixes) = draw(&mut runner, &request);
        let key = endpoint.2.clone();
        let mut requests = Vec::new();
        let req = build(method, &ns, endpoint, &query, headers).bearer(&p.token_a);
        // A names every key it sends, whether or not the request is accepted: its own
        // listing may show those and only those.
        named_by_a.extend(key);
        if let Ok(batch) = serde_json::from_slice::<Value>(&req.body) {
            for op in batch["operations"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if let Some(k) = op["key"].as_str() {
                    named_by_a.insert(k.as_bytes().to_vec());
                }
                if let Some(k) = op["key_base64"]
                    .as_str()
                    .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
                {
                    named_by_a.insert(k);
                }
            }
        }
        requests.push(req);
        // Listings by generated prefixes (glob characters included), in A's namespace.
        for prefix in prefixes {
            requests.push(
                Req::new(
                    "GET",
                    format!(
                        "/v1/namespaces/{TENANT_A}/keys?prefix={}&limit=5",
                        encode(&prefix)
                    ),
                )
                .bearer(&p.token_a),
            );
        }
        requests.push(
            Req::new("GET", format!("/v1/namespaces/{TENANT_A}/keys?limit=1000"))
                .bearer(&p.token_a),
        );
        for req in requests {
            let mut next = Some(req);
            let mut pages = 0;
            while let Some(req) = next.take() {
                let reply = send(&p.gw, &req).await;
                assert_well_formed(&req, &reply, seed);
                *statuses.entry(reply.status).or_default() += 1;
                let received = reply.all_bytes();
                for marker in [&seeded.value_marker, &seeded.key_marker] {
                    assert!(
                        !received
                            .windows(marker.len())
                            .any(|w| w == marker.as_bytes()),
                        "seed {seed}: A received one of B's values or key names: {} -> {}",
                        req.describe(),
                        String::from_utf8_lossy(&reply.body)
                    );
                }
                let path = req.target.split('?').next().unwrap_or_default();
                let own = path.starts_with(&format!("/v1/namespaces/{TENANT_A}/"));
                if !own {
                    assert!(
                        (400..500).contains(&reply.status),
                        "seed {seed}: A reached another namespace: {} -> {}",
                        req.describe(),
                        reply.status
                    );
                }
                if reply.status == 200 && path == format!("/v1/namespaces/{TENANT_A}/keys") {
                    for k in listed(&reply) {
                        assert!(
                            named_by_a.contains(&k),
                            "seed {seed}: A's listing showed a key A never named: {:?} ({})",
                            String::from_utf8_lossy(&k),
                            req.describe()
                        );
                        listed_keys += 1;
                    }
                    // Follow the cursor a little.
                    if let Some(cursor) = reply.json()["cursor"].as_str()
                        && pages < 3
                    {
                        pages += 1;
                        let base = req.target.split("&cursor=").next().unwrap_or_default();
                        next = Some(Req {
                            target: format!("{base}&cursor={cursor}"),
                            ..req
                        });
                    }
                }
            }
        }
    }
    println!("statuses: {statuses:?}; keys listed to A: {listed_keys}");

    // B's raw data, read around Larder, is byte-for-byte what it was.
    let after = p.deployment.raw_keys().await;
    let b_after: BTreeMap<_, _> = after
        .iter()
        .filter(|(k, _)| k.starts_with(&b_prefix))
        .collect();
    assert_eq!(
        b_after.keys().collect::<Vec<_>>(),
        b_before.keys().collect::<Vec<_>>(),
        "seed {seed}: B's key set changed"
    );
    for (k, v) in &b_before {
        assert_eq!(
            b_after.get(k),
            Some(v),
            "seed {seed}: B's key {:?} changed",
            String::from_utf8_lossy(k)
        );
    }
    // Everything A created is under A's prefix.
    let a_prefix = format!("larder:{TENANT_A}:").into_bytes();
    for k in after.keys().filter(|k| !k.starts_with(&b_prefix)) {
        assert!(
            k.starts_with(&a_prefix),
            "seed {seed}: a key outside A's namespace: {:?}",
            String::from_utf8_lossy(k)
        );
    }
    assert!(
        after.len() > before.len(),
        "seed {seed}: A's requests wrote nothing at all; the generator misses the handlers"
    );
    // And B, through the front door, still reads its own values.
    for (i, name) in seeded.keys.iter().enumerate() {
        let req = Req::new(
            "GET",
            format!("/v1/namespaces/{TENANT_B}/keys/{}", encode(name)),
        )
        .bearer(&p.token_b);
        let reply = send(&p.gw, &req).await;
        assert_eq!(
            (reply.status, reply.body),
            (200, format!("{}-{i}", seeded.value_marker).into_bytes()),
            "{}",
            req.describe()
        );
    }
}

/// Found while writing the generators: a counter stepped past ±2^53 (each delta within
/// bounds) was stored rounded, so `+1` could be answered 200 and lost. Steps that would
/// leave the exact range are refused with 409 and the counter keeps its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_stay_within_the_exact_range() {
    const LIMIT: i64 = 1 << 53;
    let p = Platform::start(false).await;
    let step = |delta: i64| {
        Req::new("POST", format!("/v1/namespaces/{TENANT_A}/counters/big"))
            .bearer(&p.token_a)
            .json(&json!({"delta": delta}))
    };
    let mut seen = Vec::new();
    for delta in [LIMIT, 1, -LIMIT, -LIMIT, -1, LIMIT] {
        let reply = send(&p.gw, &step(delta)).await;
        let body = reply.json();
        let value = body["value"].as_i64().or(body["current"].as_i64());
        seen.push((reply.status, value));
    }
    assert_eq!(
        seen,
        [
            (200, Some(LIMIT)),
            (409, Some(LIMIT)),
            (200, Some(0)),
            (200, Some(-LIMIT)),
            (409, Some(-LIMIT)),
            (200, Some(0)),
        ]
    );
    let read = send(
        &p.gw,
        &Req::new("GET", format!("/v1/namespaces/{TENANT_A}/counters/big")).bearer(&p.token_a),
    )
    .await;
    assert_eq!(read.json()["value"].as_i64(), Some(0));
}
