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
use larder_tests::{Redis, ZooKeeper, unique_root};
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
                family
                    .labels
                    .extend(label_names(&line[end + 1..close]).into_iter().filter(|l| l != "le"));
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
    assert!(out.len() > 40, "docs/metrics.md lists {} metrics", out.len());
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
        gw.contains("larder_gateway_requests_total{namespace=\"_other\",op=\"key.get\",status=\"403\"} 1"),
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
        let id = generated.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36, "{}: a UUID: {id}", service.url);
        let echoed = running
            .http
            .get(format!("{}/no/such/route", service.url))
            .header("x-request-id", "trace-me-42")
            .send()
            .await
            .unwrap();
        assert_eq!(echoed.headers()["x-request-id"], "trace-me-42", "{}", service.url);
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
            &["registry_revision", "applied_zxid", "staleness_ms", "zookeeper_connected"][..],
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
            assert!(!body[field].is_null(), "{}/readyz lacks {field}: {body}", service.url);
        }
        assert_eq!(body["zookeeper_connected"], true, "{body}");
        assert_eq!(body["staleness_ms"], 0, "{body}");
    }
}
