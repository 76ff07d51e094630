//! Observability and deployment: what SREs read and what operators install.
//!
//! - The metrics reference (`docs/metrics.md`) lists exactly what the running services
//!   export: names, types and labels, compared both ways against real scrapes of a
//!   control plane, a gateway and an agent started on real ZooKeeper and Redis; every
//!   scrape passes `promtool check metrics`.
//! - Every metric the Grafana dashboard and the alert rules query is exported.
//! - Every response carries an `x-request-id`.
//! - The gateway is unready until ZooKeeper and its deployments answer, then stays ready
//!   (reporting staleness) while ZooKeeper is away.
//! - The Prometheus configuration, rules and rule unit tests pass `promtool`; every alert
//!   has its labels, annotations, a firing and a quiet unit test and a runbook section.
//! - Every YAML and JSON file under `deploy/` parses, and every config key and `LARDER_*`
//!   variable they set is a field of the service's typed configuration; every flag is
//!   one the binary accepts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use larder_tests::platform::{self, Service};
use larder_tests::{Redis, RedisCluster, ZooKeeper, eventually, unique_root};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_owned()
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `promtool` from the Debian package `prometheus`; a failure naming the set-up command
/// when it is missing.
fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`promtool` not found on PATH: run ./deploy/local/test.sh (it installs the Debian package prometheus)")
    })
}

// ---------------------------------------------------------------------------------
// A running platform and its scrapes
// ---------------------------------------------------------------------------------

/// ZooKeeper, a replicated standalone Redis, a control plane, a gateway and an agent on
/// both Redis instances, with the deployment `main` and the namespace `shop` registered.
struct Running {
    _zk: ZooKeeper,
    _master: Redis,
    _replica: Redis,
    _keys: tempfile::TempDir,
    cp: Service,
    gw: Service,
    agent: Service,
    http: reqwest::Client,
    admin_token: String,
    token: String,
}

/// A key name that must never appear in any scrape (no key is ever a label).
const SECRET_KEY: &str = "customer-4711-basket";

impl Running {
    async fn start() -> Self {
        larder_tests::init_tracing();
        let zk = ZooKeeper::start().await;
        let master = Redis::start().await;
        let replica = Redis::start_replica_of(&master).await;
        let root = unique_root();
        let keys = tempfile::tempdir().unwrap();
        let cp = platform::control_plane(&zk, &root, keys.path()).await;
        let admin_token = platform::admin_token(keys.path());
        let http = reqwest::Client::new();
        let admin = |path: &str, body: Value| {
            http.post(format!("{}{path}", cp.url))
                .bearer_auth(&admin_token)
                .json(&body)
                .send()
        };
        for (path, body) in [
            (
                "/v1/clusters",
                json!({"name": "main", "topology": "standalone", "endpoints": [master.address()],
                       "replicas": [replica.address()], "capacity_bytes": 1u64 << 30}),
            ),
            (
                "/v1/namespaces",
                json!({"name": "shop", "owner": "team-shop", "cluster": "main"}),
            ),
        ] {
            let r = admin(path, body).await.unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
        }
        let issued: Value = admin(
            "/v1/namespaces/shop/tokens",
            json!({"subject": "shop-app", "permissions": ["read", "write"], "ttl_s": 3600}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let token = issued["token"].as_str().expect("a token").to_owned();
        let gw = platform::gateway(&zk, &root).await;
        let agent = platform::agent(
            &zk,
            &root,
            &[("main", master.address()), ("main", replica.address())],
        )
        .await;
        Running {
            _zk: zk,
            _master: master,
            _replica: replica,
            _keys: keys,
            cp,
            gw,
            agent,
            http,
            admin_token,
            token,
        }
    }

    fn key_url(&self, ns: &str, key: &str) -> String {
        format!("{}/v1/namespaces/{ns}/keys/{key}", self.gw.url)
    }

    /// A little traffic of every kind, so labelled series appear.
    async fn traffic(&self) {
        let put = self
            .http
            .put(self.key_url("shop", SECRET_KEY))
            .bearer_auth(&self.token)
            .body("3 apples")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
        for (ns, key, expected) in [
            ("shop", SECRET_KEY, StatusCode::OK),
            ("shop", "never-written", StatusCode::NOT_FOUND),
            ("not-registered", "x", StatusCode::FORBIDDEN),
        ] {
            let r = self
                .http
                .get(self.key_url(ns, key))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), expected, "GET {ns}/{key}");
        }
        let r = self
            .http
            .get(format!("{}/v1/clusters", self.cp.url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    async fn scrape(&self, service: &Service) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", service.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        r.text().await.unwrap()
    }

    /// The three services' scrapes once every series the reference lists has appeared
    /// (the agent's replica series after its first probe, the deployment's health after
    /// the agents' first reports, the leader's memory estimate after its first scan).
    async fn scrapes(&self) -> BTreeMap<&'static str, String> {
        self.traffic().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let gw = self.scrape(&self.gw).await;
            let cp = self.scrape(&self.cp).await;
            let agent = self.scrape(&self.agent).await;
            let complete = agent.contains("redis_master_link_up{")
                && agent.contains("redis_db_keys{")
                && cp.contains("larder_cp_deployment_status{cluster=\"main\",status=\"ok\"} 1")
                && cp.contains("larder_cp_namespace_memory_used_bytes{")
                && gw.contains("larder_gateway_cache_hits_total{namespace=\"shop\"} 1");
            if complete || tokio::time::Instant::now() > deadline {
                // Past the deadline the comparison itself names what is missing.
                return BTreeMap::from([("gateway", gw), ("control plane", cp), ("agent", agent)]);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One metric family of an exposition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
    help: bool,
    samples: usize,
}

/// The label names of one sample line's `{...}`.
fn label_names(labels: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = labels.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let name = name.trim().trim_start_matches(',').trim();
        if name.is_empty() {
            return names;
        }
        names.insert(name.to_owned());
        assert_eq!(chars.next(), Some('"'), "label value opens with a quote");
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
    }
}

/// The families of a Prometheus text exposition, by name, from its `# TYPE` and `# HELP`
/// lines and the label names of its samples (`le` of histogram buckets left out).
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            out.entry(name.to_owned()).or_default().kind = kind.to_owned();
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.entry(name.to_owned()).or_default().help = !help.trim().is_empty();
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).expect("sample line");
            let name = &line[..end];
            let family = if out.contains_key(name) {
                name.to_owned()
            } else {
                ["_bucket", "_sum", "_count"]
                    .into_iter()
                    .filter_map(|suffix| name.strip_suffix(suffix))
                    .find(|base| out.get(*base).is_some_and(|f| f.kind == "histogram"))
                    .unwrap_or_else(|| panic!("sample {name} has no # TYPE line"))
                    .to_owned()
            };
            let family = out.get_mut(&family).unwrap();
            family.samples += 1;
            if line[end..].starts_with('{') {
                let close = line.rfind('}').expect("closing brace");
                family.labels.extend(
                    label_names(&line[end + 1..close])
                        .into_iter()
                        .filter(|l| l != "le"),
                );
            }
        }
    }
    out
}

/// One row of the metrics reference.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Documented {
    service: &'static str,
    kind: String,
    labels: BTreeSet<String>,
}

/// The tables of `docs/metrics.md`, by metric name. A section heading naming a binary
/// (`larder-gateway`, `larder-control-plane`, `larder-agent`) starts that service's rows.
fn reference() -> BTreeMap<String, Documented> {
    let page = read("docs/metrics.md");
    let mut service = None;
    let mut out = BTreeMap::new();
    for line in page.lines() {
        if line.starts_with('#') {
            service = [
                ("`larder-gateway`", "gateway"),
                ("`larder-control-plane`", "control plane"),
                ("`larder-agent`", "agent"),
            ]
            .into_iter()
            .find(|(binary, _)| line.contains(binary))
            .map(|(_, s)| s);
            continue;
        }
        let Some(row) = line.strip_prefix("| `") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert!(cells.len() >= 4, "a reference row has four cells: {line}");
        let service = service.unwrap_or_else(|| panic!("row outside a service's section: {line}"));
        let name = cells[0].trim_end_matches('`').to_owned();
        let labels = if cells[2] == "—" {
            BTreeSet::new()
        } else {
            cells[2]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_owned())
                .collect()
        };
        let row = Documented {
            service,
            kind: cells[1].to_owned(),
            labels,
        };
        assert!(
            out.insert(name.clone(), row).is_none(),
            "{name} is listed twice in docs/metrics.md"
        );
    }
    assert!(
        out.len() > 40,
        "docs/metrics.md lists {} metrics",
        out.len()
    );
    out
}

/// Lint findings `promtool check metrics` may report: names kept as the community
/// redis_exporter spells them, so its dashboards and alerts work unchanged.
const REDIS_EXPORTER_LINT: [&str; 1] =
    ["redis_instantaneous_ops_per_sec metric names should not contain abbreviated units"];

/// Runs `promtool check metrics` on one scrape; every finding fails the test except the
/// redis_exporter names.
fn promtool_check_metrics(service: &str, text: &str) {
    use std::io::Write;
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<&str> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !REDIS_EXPORTER_LINT.contains(l))
        .collect();
    assert!(
        findings.is_empty() && (out.status.success() || !report.trim().is_empty()),
        "promtool check metrics refuses the {service}'s scrape:\n{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_reference_lists_exactly_what_the_services_export() {
    let running = Running::start().await;
    let scrapes = running.scrapes().await;
    let reference = reference();
    let mut problems = Vec::new();
    let mut exported_anywhere = BTreeSet::new();
    for (service, text) in &scrapes {
        promtool_check_metrics(service, text);
        assert!(
            !text.contains(SECRET_KEY),
            "a tenant key reached the {service}'s metrics:\n{text}"
        );
        for (name, family) in families(text) {
            exported_anywhere.insert(name.clone());
            if !family.help {
                problems.push(format!("{service}: {name} has no HELP text"));
            }
            match reference.get(&name) {
                None => problems.push(format!(
                    "{service} exports {name} ({}), not listed in docs/metrics.md",
                    family.kind
                )),
                Some(doc) if doc.service != *service => problems.push(format!(
                    "{name} is exported by the {service} but listed under the {}",
                    doc.service
                )),
                Some(doc) => {
                    if doc.kind != family.kind {
                        problems.push(format!(
                            "{name}: the {service} exports a {}, the page says {}",
                            family.kind, doc.kind
                        ));
                    }
                    if doc.labels != family.labels {
                        problems.push(format!(
                            "{name}: the {service} exports labels {:?}, the page says {:?}",
                            family.labels, doc.labels
                        ));
                    }
                }
            }
        }
    }
    for (name, doc) in &reference {
        if !exported_anywhere.contains(name) {
            problems.push(format!(
                "docs/metrics.md lists {name} under the {}, which does not export it",
                doc.service
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/metrics.md and the services disagree:\n  {}",
        problems.join("\n  ")
    );

    // Labels stay bounded: a name the registry does not hold is `_other`.
    let gw = &scrapes["gateway"];
    assert!(
        gw.contains(
            "larder_gateway_requests_total{namespace=\"_other\",op=\"key.get\",status=\"403\"} 1"
        ),
        "{gw}"
    );
    assert!(!gw.contains("not-registered"), "{gw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_returns_a_request_id() {
    let running = Running::start().await;
    for service in [&running.gw, &running.cp, &running.agent] {
        let generated = running
            .http
            .get(format!("{}/healthz", service.url))
            .send()
            .await
            .unwrap();
        let id = generated.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let again = running
            .http
            .get(format!("{}/healthz", service.url))
            .send()
            .await
            .unwrap();
        let next = again.headers()["x-request-id"].to_str().unwrap();
        assert!(
            id.len() >= 14 && id != next,
            "{}: generated ids are unique: {id} {next}",
            service.url
        );
        let echoed = running
            .http
            .get(format!("{}/no/such/route", service.url))
            .header("x-request-id", "trace-me-42")
            .send()
            .await
            .unwrap();
        assert_eq!(
            echoed.headers()["x-request-id"],
            "trace-me-42",
            "{}",
            service.url
        );
    }
    // Also on the data API's errors, where a tenant needs it most.
    let r = running
        .http
        .get(running.key_url("shop", "x"))
        .header("x-request-id", "tenant-call-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["x-request-id"], "tenant-call-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_reports_the_registry_revision_and_staleness() {
    let running = Running::start().await;
    for (service, fields) in [
        (
            &running.gw,
            &[
                "registry_revision",
                "applied_zxid",
                "staleness_ms",
                "zookeeper_connected",
            ][..],
        ),
        (
            &running.cp,
            &["registry_revision", "staleness_ms", "zookeeper_connected"][..],
        ),
        (&running.agent, &["staleness_ms", "zookeeper_connected"][..]),
    ] {
        let r = running
            .http
            .get(format!("{}/readyz", service.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", service.url);
        let body: Value = r.json().await.unwrap();
        for field in fields {
            assert!(
                !body[field].is_null(),
                "{}/readyz lacks {field}: {body}",
                service.url
            );
        }
        assert_eq!(body["zookeeper_connected"], true, "{body}");
        assert_eq!(body["staleness_ms"], 0, "{body}");
    }
}

// ---------------------------------------------------------------------------------
// The gateway's readiness
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_ready_once_redis_answers_and_stays_ready_without_zookeeper() {
    larder_tests::init_tracing();
    let mut zk = ZooKeeper::start().await;
    let mut redis = Redis::start().await;
    let shards = RedisCluster::start(3).await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let cp = platform::control_plane(&zk, &root, keys.path()).await;
    let http = reqwest::Client::new();
    let admin = platform::admin_token(keys.path());
    for (path, body) in [
        (
            "/v1/clusters",
            json!({"name": "main", "topology": "standalone", "endpoints": [redis.address()],
                   "capacity_bytes": 1u64 << 30}),
        ),
        (
            "/v1/clusters",
            json!({"name": "shards", "topology": "cluster", "endpoints": shards.addresses(),
                   "capacity_bytes": 1u64 << 30}),
        ),
        (
            "/v1/namespaces",
            json!({"name": "shop", "owner": "team-shop", "cluster": "main"}),
        ),
        (
            "/v1/namespaces",
            json!({"name": "feed", "owner": "team-feed", "cluster": "shards"}),
        ),
    ] {
        let r = http
            .post(format!("{}{path}", cp.url))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }
    drop(cp);

    // One deployment is down when the gateway starts: it reads the registry, but stays
    // unready, waiting for that one (the Redis Cluster answers).
    redis.stop().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let config = larder_gateway::Config {
        listen: "127.0.0.1:0".into(),
        id: "gw-readiness".into(),
        zookeeper: larder_tests::registry_config(&zk, &root),
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let gateway = tokio::spawn(larder_gateway::run(config, listener, shutdown.clone()));
    let readyz = || async {
        let r = http.get(format!("{url}/readyz")).send().await.ok()?;
        let status = r.status();
        Some((status, r.json::<Value>().await.unwrap()))
    };
    eventually(
        Duration::from_secs(10),
        "the gateway answers /readyz",
        || async { readyz().await.is_some() },
    )
    .await;
    for _ in 0..10 {
        let (status, body) = readyz().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["waiting_for"], json!(["redis:main"]), "{body}");
        assert!(body["registry_revision"].as_u64().unwrap() > 0, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    redis.restart().await;
    eventually(
        Duration::from_secs(10),
        "the gateway is ready once Redis answers",
        || async { readyz().await.is_some_and(|(s, _)| s == StatusCode::OK) },
    )
    .await;

    // ZooKeeper goes away: the gateway serves from its snapshot, stays ready and says
    // how stale it is.
    zk.stop().await;
    eventually(
        Duration::from_secs(15),
        "the gateway reports the lost session",
        || async {
            readyz().await.is_some_and(|(status, body)| {
                assert_eq!(status, StatusCode::OK, "ready without ZooKeeper: {body}");
                body["zookeeper_connected"] == false && body["staleness_ms"].as_u64().unwrap() > 0
            })
        },
    )
    .await;
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("larder_gateway_zookeeper_connected 0"),
        "{metrics}"
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), gateway).await;
}

// ---------------------------------------------------------------------------------
// Dashboards and alerts
// ---------------------------------------------------------------------------------

/// Series Prometheus makes itself rather than scraping them.
const MADE_BY_PROMETHEUS: [&str; 3] = ["up", "ALERTS", "ALERTS_FOR_STATE"];

/// The metric names a PromQL expression selects: identifiers that are not functions,
/// keywords, label names (inside `{}`, `by (...)` and the like), durations (inside `[]`),
/// strings, numbers or Grafana variables (`$namespace`).
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 8] = [
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Skips from an opening bracket to its match; `{}` and `[]` never nest in PromQL,
    // strings inside them are skipped whole.
    let skip_to = |mut i: usize, close: char| {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                // `sum by (x) (...)`: an aggregation with its clause first.
                let rest: String = chars[next..].iter().take(8).collect();
                let clause_first = ["by", "without"].iter().any(|w| {
                    rest.strip_prefix(w)
                        .is_some_and(|r| r.starts_with(|c: char| c == '(' || c.is_whitespace()))
                });
                let call = chars.get(next) == Some(&'(') || clause_first;
                if LABEL_LISTS.contains(&word.as_str()) && call {
                    i = skip_to(next + 1, ')');
                } else if !call
                    && !KEYWORDS.contains(&word.as_str())
                    && !LABEL_LISTS.contains(&word.as_str())
                {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every `expr` of a Grafana dashboard's panels (rows' panels included) and the metric
/// of every `label_values(metric, label)` variable.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_default();
        if let Some(args) = query.strip_prefix("label_values(") {
            let metric = args.split([',', ')']).next().unwrap_or_default().trim();
            out.push((format!("variable {}", variable["name"]), metric.to_owned()));
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            out.push((
                format!("annotation {}", annotation["name"]),
                expr.to_owned(),
            ));
        }
    }
    out
}

fn yaml(relative: &str) -> Value {
    let mut value: serde_norway::Value =
        serde_norway::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"));
    value.apply_merge().unwrap();
    serde_json::to_value(value).unwrap()
}

/// Every alert rule of `deploy/prometheus/alerts.yml`.
fn alert_rules() -> Vec<Value> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn promql_metric_names_are_found() {
    let names = promql_metrics(
        r#"histogram_quantile(0.99, sum by (namespace, le) (rate(larder_gateway_request_duration_seconds_bucket{op!="queue",namespace=~"$namespace"}[$__rate_interval]))) / on (namespace) group_left max by (namespace) (larder_cp_namespace_rate_limit_ops_per_second > 0) or absent(larder_cp_is_leader) and 1e3 offset 5m"#,
    );
    assert_eq!(
        names,
        BTreeSet::from([
            "larder_gateway_request_duration_seconds_bucket".to_owned(),
            "larder_cp_namespace_rate_limit_ops_per_second".to_owned(),
            "larder_cp_is_leader".to_owned(),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_query_only_exported_metrics() {
    let running = Running::start().await;
    let scrapes = running.scrapes().await;
    let exported: BTreeMap<String, Family> = scrapes.values().flat_map(|t| families(t)).collect();
    let known = |name: &str| {
        MADE_BY_PROMETHEUS.contains(&name)
            || exported.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|base| exported.get(base))
                    .is_some_and(|f| f.kind == "histogram")
            })
    };

    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/larder.json")).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 20, "{} queries", queries.len());
    let mut problems = Vec::new();
    let mut queried = BTreeSet::new();
    for (panel, expr) in &queries {
        let names = promql_metrics(expr);
        assert!(!names.is_empty(), "{panel}: no metric in {expr}");
        for name in names {
            if !known(&name) {
                problems.push(format!(
                    "dashboard panel {panel:?} queries {name}, which no service exports"
                ));
            }
            queried.insert(name);
        }
    }
    // What the dashboard must show.
    for needed in [
        "larder_gateway_requests_total",
        "larder_gateway_request_duration_seconds_bucket",
        "larder_gateway_cache_hits_total",
        "larder_gateway_near_cache_hits_total",
        "larder_gateway_rate_limited_total",
        "redis_up",
        "larder_cp_deployment_status",
        "larder_cp_failovers_total",
        "larder_gateway_registry_staleness_seconds",
        "larder_cp_is_leader",
    ] {
        if !queried.contains(needed) {
            problems.push(format!("the dashboard has no panel on {needed}"));
        }
    }
    for rule in alert_rules() {
        let alert = rule["alert"].as_str().unwrap();
        for name in promql_metrics(rule["expr"].as_str().unwrap()) {
            if !known(&name) {
                problems.push(format!(
                    "alert {alert} queries {name}, which no service exports"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n  {}", problems.join("\n  "));
}

/// The GitHub anchor of a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_is_complete_tested_both_ways_and_has_a_runbook_section() {
    let runbook = read("docs/runbook.md");
    let sections: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(anchor)
        .collect();
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    let rules = alert_rules();
    let mut problems = Vec::new();
    let mut alerts = BTreeSet::new();
    for rule in &rules {
        let alert = rule["alert"].as_str().unwrap();
        alerts.insert(anchor(alert));
        if rule["for"].as_str().is_none() {
            problems.push(format!("{alert}: no `for`"));
        }
        if !["critical", "warning"].contains(&rule["labels"]["severity"].as_str().unwrap_or("")) {
            problems.push(format!("{alert}: severity must be critical or warning"));
        }
        for annotation in ["summary", "description", "runbook_url"] {
            if rule["annotations"][annotation]
                .as_str()
                .is_none_or(str::is_empty)
            {
                problems.push(format!("{alert}: no {annotation}"));
            }
        }
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        match url.split_once('#') {
            Some(("docs/runbook.md", section)) if sections.contains(section) => {}
            _ => problems.push(format!(
                "{alert}: runbook_url {url:?} names no section of docs/runbook.md"
            )),
        }
        let of_alert = || cases.iter().filter(|c| c["alertname"] == alert);
        if !of_alert().any(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())) {
            problems.push(format!(
                "{alert}: no unit test in alerts_test.yml where it fires"
            ));
        }
        if !of_alert().any(|c| c["exp_alerts"].as_array().is_some_and(Vec::is_empty)) {
            problems.push(format!(
                "{alert}: no unit test in alerts_test.yml where it stays quiet"
            ));
        }
    }
    for section in &sections {
        if !alerts.contains(section) {
            problems.push(format!(
                "docs/runbook.md section #{section} belongs to no alert"
            ));
        }
    }
    for required in [
        "lardergatewayerrorratiohigh",
        "lardergatewaylatencyhigh",
        "larderredisdown",
        "larderdeploymentdegraded",
        "larderdeploymentfailedover",
        "larderregistrystale",
        "larderzookeepersessionlost",
        "lardernamespacenearratelimit",
        "lardernamespacenearmemorylimit",
        "lardercontrolplanenoleader",
    ] {
        if !alerts.contains(required) {
            problems.push(format!("no alert {required}"));
        }
    }
    assert!(problems.is_empty(), "\n  {}", problems.join("\n  "));
}

/// Runs promtool with `args` in `deploy/prometheus`, failing with its report.
fn promtool_in_deploy(args: &[&str]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .expect("run promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {}:\n{report}",
        args.join(" ")
    );
    report
}

#[test]
fn prometheus_configuration_rules_and_rule_tests_pass_promtool() {
    promtool_in_deploy(&["check", "config", "prometheus.yml"]);
    promtool_in_deploy(&["check", "rules", "alerts.yml"]);
    let report = promtool_in_deploy(&["test", "rules", "alerts_test.yml"]);
    assert!(report.contains("SUCCESS"), "{report}");

    let config = yaml("deploy/prometheus/prometheus.yml");
    let jobs: BTreeMap<&str, &Value> = config["scrape_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["job_name"].as_str().unwrap(), j))
        .collect();
    for (job, target) in [
        ("larder-gateway", "127.0.0.1:8080"),
        ("larder-control-plane", "127.0.0.1:8081"),
        ("larder-agent", "127.0.0.1:9121"),
    ] {
        let targets = jobs
            .get(job)
            .unwrap_or_else(|| panic!("no scrape job {job}"))["static_configs"][0]["targets"]
            .to_string();
        assert!(targets.contains(target), "{job} scrapes {targets}");
    }
    assert_eq!(
        jobs["larder-agent"]["honor_labels"], true,
        "agents name the Redis instance"
    );
}

// ---------------------------------------------------------------------------------
// Deploy files
// ---------------------------------------------------------------------------------

/// Every file under `dir`, recursively, relative to the repository.
fn files_under(dir: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![repo().join(dir)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(repo())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// Every document of a YAML file, merge keys (`<<:`) applied.
fn yaml_documents(relative: &str) -> Vec<Value> {
    let text = read(relative);
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            let mut value = <serde_norway::Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{relative}: {e}"));
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// How a deploy file starts one of the services.
#[derive(Debug, Clone)]
struct Launch {
    /// Where: file and object.
    origin: String,
    binary: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The TOML files it could read `--config` from, by file name: `deploy/config/` for
    /// the image and the systemd units, the ConfigMaps for Kubernetes.
    configs: BTreeMap<String, String>,
}

/// Kubernetes expands `$(VAR)` in `args` and `env` values; these stand in for the values
/// a pod would get.
fn expand_k8s(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find(')')
            .map(|e| start + e + 1)
            .unwrap_or(rest.len());
        out.push_str(match &rest[start + 2..end - 1] {
            "POD_IP" => "10.0.0.7",
            _ => "pod-0",
        });
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The services started by the systemd units, the compose file and the Kubernetes
/// manifests.
fn launches() -> Vec<Launch> {
    let image_configs: BTreeMap<String, String> = files_under("deploy/config")
        .into_iter()
        .map(|f| (f.rsplit('/').next().unwrap().to_owned(), read(&f)))
        .collect();
    let mut out = Vec::new();
    for file in files_under("deploy") {
        if file.ends_with(".service") {
            let text = read(&file);
            let mut launch = Launch {
                origin: file.clone(),
                binary: String::new(),
                args: Vec::new(),
                env: Vec::new(),
                configs: image_configs.clone(),
            };
            for line in text.lines() {
                if let Some(exec) = line.strip_prefix("ExecStart=") {
                    let mut words = exec.split_whitespace().map(str::to_owned);
                    launch.binary = words.next().unwrap().rsplit('/').next().unwrap().to_owned();
                    launch.args = words.collect();
                } else if let Some(vars) = line.strip_prefix("Environment=") {
                    for var in vars.split_whitespace() {
                        let (k, v) = var.trim_matches('"').split_once('=').expect("KEY=VALUE");
                        launch.env.push((k.to_owned(), v.to_owned()));
                    }
                }
            }
            assert!(!launch.binary.is_empty(), "{file}: no ExecStart");
            out.push(launch);
        } else if file.ends_with("compose.yaml") || file.ends_with("compose.yml") {
            let compose = &yaml_documents(&file)[0];
            for (name, service) in compose["services"].as_object().unwrap() {
                let command = strings(&service["command"]);
                let Some(binary) = command.first().filter(|c| c.starts_with("larder-")) else {
                    continue;
                };
                let env = match &service["environment"] {
                    Value::Object(map) => map
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
                        .collect(),
                    Value::Array(list) => list
                        .iter()
                        .filter_map(|v| v.as_str()?.split_once('='))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    _ => Vec::new(),
                };
                out.push(Launch {
                    origin: format!("{file}: service {name}"),
                    binary: binary.clone(),
                    args: command[1..].to_vec(),
                    env,
                    configs: image_configs.clone(),
                });
            }
        } else if file.starts_with("deploy/k8s/") && file.ends_with(".yaml") {
            // ConfigMaps may sit in another file of the same directory.
            let documents: Vec<Value> = files_under("deploy/k8s")
                .iter()
                .filter(|f| f.ends_with(".yaml"))
                .flat_map(|f| yaml_documents(f))
                .collect();
            let config_maps: BTreeMap<String, String> = documents
                .iter()
                .filter(|d| d["kind"] == "ConfigMap")
                .flat_map(|d| d["data"].as_object().cloned().unwrap_or_default())
                .filter(|(k, _)| k.ends_with(".toml"))
                .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
                .collect();
            for doc in yaml_documents(&file) {
                let pod = &doc["spec"]["template"]["spec"];
                for container in ["initContainers", "containers"]
                    .iter()
                    .flat_map(|list| pod[list].as_array().cloned().unwrap_or_default())
                {
                    let command = strings(&container["command"]);
                    let Some(binary) = command.first().filter(|c| c.starts_with("larder-")) else {
                        continue;
                    };
                    let env = container["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            let value = e["value"].as_str().unwrap_or("pod-0");
                            (e["name"].as_str().unwrap().to_owned(), expand_k8s(value))
                        })
                        .collect();
                    out.push(Launch {
                        origin: format!(
                            "{file}: {} {} container {}",
                            doc["kind"].as_str().unwrap(),
                            doc["metadata"]["name"].as_str().unwrap(),
                            container["name"].as_str().unwrap()
                        ),
                        binary: binary.clone(),
                        args: command[1..]
                            .iter()
                            .chain(strings(&container["args"]).iter())
                            .map(|a| expand_k8s(a))
                            .collect(),
                        env,
                        configs: config_maps.clone(),
                    });
                }
            }
        }
    }
    out
}

/// `C` layered as the services load it: defaults < TOML < `LARDER_*` variables
/// (`__` between levels). Unlike a running service, every `LARDER_*` variable must name
/// a field, so a misspelt one fails here instead of being ignored.
fn layered<C>(toml: Option<&str>, env: &[(String, String)]) -> Result<C, String>
where
    C: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    use figment::providers::{Format, Serialized, Toml};
    let mut figment = figment::Figment::from(Serialized::defaults(C::default()));
    if let Some(toml) = toml {
        figment = figment.merge(Toml::string(toml));
    }
    for (name, value) in env {
        let key = name
            .strip_prefix("LARDER_")
            .ok_or_else(|| format!("{name} is not a LARDER_ variable"))?
            .to_lowercase()
            .replace("__", ".");
        let value: figment::value::Value = value.parse().expect("infallible");
        figment = figment.merge(Serialized::defaults(figment::util::nest(&key, value)));
    }
    figment
        .extract::<C>()
        .map_err(|e| e.to_string().replace('\n', "; "))
}

/// The value of `--flag VALUE` or `--flag=VALUE`, every occurrence.
fn flag_values(args: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == flag {
            out.extend(args.get(i + 1).cloned());
            i += 1;
        } else if let Some(v) = args[i].strip_prefix(&format!("{flag}=")) {
            out.push(v.to_owned());
        }
        i += 1;
    }
    out
}

/// Loads what `launch` would run with (config file, environment, the flags that set
/// configuration) into the binary's typed configuration, and validates it.
fn check_launch(launch: &Launch) -> Result<(), String> {
    use larder_service::config::Validate;
    let toml = match flag_values(&launch.args, "--config").first() {
        Some(path) => {
            let name = path.rsplit('/').next().unwrap();
            Some(
                launch
                    .configs
                    .get(name)
                    .ok_or_else(|| format!("--config {path}: no such file is shipped"))?
                    .as_str(),
            )
        }
        None => None,
    };
    let env: Vec<(String, String)> = launch
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("LARDER_"))
        .cloned()
        .collect();
    let last = |flag: &str| flag_values(&launch.args, flag).pop();
    match launch.binary.as_str() {
        "larder-gateway" => {
            let mut c: larder_gateway::Config = layered(toml, &env)?;
            c.listen = last("--listen").unwrap_or(c.listen);
            c.id = last("--id").unwrap_or(c.id);
            c.zookeeper.connect = last("--zookeeper").unwrap_or(c.zookeeper.connect);
            c.zookeeper.root = last("--root").unwrap_or(c.zookeeper.root);
            c.validate()
        }
        "larder-control-plane" => {
            let mut c: larder_control_plane::Config = layered(toml, &env)?;
            c.listen = last("--listen").unwrap_or(c.listen);
            c.key_dir = last("--key-dir").map_or(c.key_dir, PathBuf::from);
            c.zookeeper.connect = last("--zookeeper").unwrap_or(c.zookeeper.connect);
            c.zookeeper.root = last("--root").unwrap_or(c.zookeeper.root);
            c.validate()
        }
        "larder-agent" => {
            let mut c: larder_agent::Config = layered(toml, &env)?;
            c.listen = last("--listen").unwrap_or(c.listen);
            c.zookeeper.connect = last("--zookeeper").unwrap_or(c.zookeeper.connect);
            c.zookeeper.root = last("--root").unwrap_or(c.zookeeper.root);
            let instances = flag_values(&launch.args, "--instance");
            if !instances.is_empty() {
                c.instances = instances
                    .iter()
                    .map(|i| i.parse())
                    .collect::<Result<_, String>>()?;
            }
            c.validate()
        }
        other => Err(format!("unknown binary {other}")),
    }
}

/// The `--flags` a binary's `--help` lists.
fn accepted_flags(binary: &str) -> BTreeSet<String> {
    let out = Command::new(platform::binary(binary))
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{binary} --help failed");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_config_check_refuses_misspelt_keys() {
    let gateway = |toml: Option<&str>, env: &[(&str, &str)]| {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        layered::<larder_gateway::Config>(toml, &env)
    };
    assert!(
        gateway(
            Some("listen = \"0.0.0.0:1\""),
            &[("LARDER_LOG__FORMAT", "json")]
        )
        .is_ok()
    );
    for (toml, env) in [
        (Some("listn = \"0.0.0.0:1\""), vec![]),
        (Some("[zookeeper]\nconect = \"zk:2181\""), vec![]),
        (None, vec![("LARDER_LISTN", "0.0.0.0:1")]),
        (None, vec![("LARDER_ZOOKEEPER__CONECT", "zk:2181")]),
        (None, vec![("LARDER_LOG__FORMAT", "xml")]),
        (None, vec![("LARDER_REQUEST_TIMEOUT_MS", "soon")]),
    ] {
        assert!(gateway(toml, &env).is_err(), "{toml:?} {env:?} accepted");
    }
    let launch = Launch {
        origin: "test".into(),
        binary: "larder-agent".into(),
        args: vec!["--instance".into(), "main=no port".into()],
        env: vec![],
        configs: BTreeMap::new(),
    };
    assert!(check_launch(&launch).unwrap_err().contains("instances[0]"));
}

#[test]
fn deploy_files_parse_and_set_only_real_configuration() {
    let mut problems = Vec::new();

    // Every YAML and JSON file parses; every TOML file is a service's configuration.
    let files = files_under("deploy");
    for file in &files {
        if file.ends_with(".yml") || file.ends_with(".yaml") {
            assert!(!yaml_documents(file).is_empty(), "{file} is empty");
        } else if file.ends_with(".json") {
            serde_json::from_str::<Value>(&read(file))
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
        }
    }
    let mut tomls: Vec<(String, String)> = files
        .iter()
        .filter(|f| f.ends_with(".toml"))
        .map(|f| (f.clone(), read(f)))
        .collect();
    for file in files.iter().filter(|f| f.starts_with("deploy/k8s/")) {
        for doc in yaml_documents(file) {
            if doc["kind"] == "ConfigMap" {
                for (key, value) in doc["data"].as_object().into_iter().flatten() {
                    if key.ends_with(".toml") {
                        tomls.push((format!("{file}: {key}"), value.as_str().unwrap().to_owned()));
                    }
                }
            }
        }
    }
    assert!(tomls.len() >= 6, "{tomls:?}");
    for (origin, text) in &tomls {
        let result = match origin.rsplit(['/', ' ']).next().unwrap() {
            "gateway.toml" => layered::<larder_gateway::Config>(Some(text), &[]).map(drop),
            "control-plane.toml" => {
                layered::<larder_control_plane::Config>(Some(text), &[]).map(drop)
            }
            "agent.toml" => layered::<larder_agent::Config>(Some(text), &[]).map(drop),
            other => Err(format!("{other} is no service's configuration file")),
        };
        if let Err(e) = result {
            problems.push(format!("{origin}: {e}"));
        }
    }

    // Every service a deploy file starts: flags the binary accepts, config keys and
    // LARDER_* variables of its typed configuration, a configuration that validates.
    let launches = launches();
    let mut help = BTreeMap::new();
    for launch in &launches {
        let flags = help
            .entry(launch.binary.clone())
            .or_insert_with(|| accepted_flags(&launch.binary));
        for arg in launch.args.iter().filter(|a| a.starts_with("--")) {
            let flag = arg.split('=').next().unwrap();
            if !flags.contains(flag) {
                problems.push(format!(
                    "{}: {} has no flag {flag}",
                    launch.origin, launch.binary
                ));
            }
        }
        if let Err(e) = check_launch(launch) {
            problems.push(format!("{}: {e}", launch.origin));
        }
    }
    for needed in [
        "deploy/systemd/larder-gateway.service",
        "deploy/systemd/larder-control-plane.service",
        "deploy/systemd/larder-agent.service",
        "compose.yaml: service gateway",
        "compose.yaml: service control-plane",
        "compose.yaml: service agent",
        "Deployment larder-gateway container gateway",
        "Deployment larder-control-plane container control-plane",
        "StatefulSet redis-main container agent",
    ] {
        if !launches.iter().any(|l| l.origin.contains(needed)) {
            problems.push(format!("nothing starts {needed}"));
        }
    }
    assert!(problems.is_empty(), "\n  {}", problems.join("\n  "));
}

#[test]
fn kubernetes_manifests_have_probes_budgets_replicas_and_sidecars() {
    let docs: Vec<Value> = files_under("deploy/k8s")
        .iter()
        .filter(|f| f.ends_with(".yaml"))
        .flat_map(|f| yaml_documents(f))
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
    };
    let gateway = find("Deployment", "larder-gateway");
    let container = &gateway["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let pod_labels = &gateway["spec"]["template"]["metadata"]["labels"];
    for kind in ["PodDisruptionBudget", "Service"] {
        let selector = &find(kind, "larder-gateway")["spec"]["selector"];
        let selector = selector.get("matchLabels").unwrap_or(selector);
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(&pod_labels[k], v, "the gateway {kind} selects its pods");
        }
    }

    let cp = find("Deployment", "larder-control-plane");
    assert_eq!(cp["spec"]["replicas"], 2);
    let pod = &cp["spec"]["template"]["spec"];
    let secret = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v.get("secret").is_some())
        .expect("the signing keys come from a Secret");
    assert_eq!(secret["secret"]["secretName"], "larder-signing-keys");
    let config = find("ConfigMap", "larder-control-plane")["data"]["control-plane.toml"]
        .as_str()
        .unwrap();
    let key_dir = layered::<larder_control_plane::Config>(Some(config), &[])
        .unwrap()
        .key_dir;
    let mounts = pod["containers"][0]["volumeMounts"].to_string();
    assert!(
        mounts.contains(&format!("\"mountPath\":\"{}\"", key_dir.display())),
        "the key_dir is mounted: {mounts}"
    );
    assert!(
        pod["initContainers"][0]["command"]
            .to_string()
            .contains("-m 0600"),
        "keys are installed with mode 0600"
    );

    let redis = find("StatefulSet", "redis-main");
    let containers = redis["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert!(
        containers
            .iter()
            .any(|c| c["image"].as_str().unwrap().starts_with("redis"))
    );
    assert!(
        containers.iter().any(|c| c["command"][0] == "larder-agent"),
        "an agent sidecar next to each Redis"
    );
}
