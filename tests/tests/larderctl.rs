//! The real `larderctl` binary driving a whole provisioning flow against a control plane
//! and a gateway: bootstrap token, deployments, namespaces, limits, tokens, keys, audit,
//! and clean-up — tables for people, `--json` for scripts, problems on stderr.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use larder_tests::platform;
use larder_tests::{Redis, ZooKeeper, unique_root};
use reqwest::StatusCode;
use serde_json::Value;

/// What a run of `larderctl` produced.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(self) -> String {
        assert_eq!(self.code, 0, "larderctl failed: {}", self.stderr);
        self.stdout
    }

    #[track_caller]
    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    #[track_caller]
    fn failed(self, needle: &str) -> String {
        assert_ne!(self.code, 0, "expected a failure, got: {}", self.stdout);
        assert_eq!(self.stderr.lines().count(), 1, "one line: {}", self.stderr);
        assert!(self.stderr.starts_with("larderctl: "), "{}", self.stderr);
        assert!(
            self.stderr.contains(needle),
            "{needle:?} not in {}",
            self.stderr
        );
        self.stderr
    }
}

/// Runs `larderctl args…` with `LARDER_URL`/`LARDER_TOKEN` set (token may be empty: unset).
async fn larderctl(url: &str, token: &str, args: &[&str]) -> Run {
    let mut command = Command::new(platform::binary("larderctl"));
    command
        .args(args)
        .env("LARDER_URL", url)
        .env_remove("LARDER_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if !token.is_empty() {
        command.env("LARDER_TOKEN", token);
    }
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::from(command)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("larderctl {args:?} hung"))
    .expect("run larderctl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn admin_token(key_dir: &Path, url: &str) -> String {
    larderctl(
        url,
        "",
        &[
            "admin-token",
            "--key-dir",
            key_dir.to_str().unwrap(),
            "--subject",
            "ops-alice",
            "--ttl",
            "1h",
        ],
    )
    .await
    .ok()
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larderctl_provisions_a_tenant_end_to_end() {
    larder_tests::init_tracing();
    let zk = ZooKeeper::start().await;
    let master = Redis::start().await;
    let replica = Redis::start_replica_of(&master).await;
    let root = unique_root();
    let keys = tempfile::tempdir().unwrap();
    let cp =
        platform::control_plane_with(&zk, &root, keys.path(), |c| c.background.tick_ms = 100).await;
    let gw = platform::gateway(&zk, &root).await;
    let url = cp.url.as_str();

    // Bootstrap on the control-plane host.
    let token = admin_token(keys.path(), url).await;
    assert_eq!(token.split('.').count(), 3);
    let t = token.as_str();
    larderctl(url, "", &["cluster", "ls"])
        .await
        .failed("Missing or invalid token");

    // Deployments.
    let added = larderctl(
        url,
        t,
        &[
            "cluster",
            "add",
            "main",
            "--topology",
            "standalone",
            "--endpoint",
            &master.address(),
            "--replica",
            &replica.address(),
            "--capacity",
            "256MiB",
        ],
    )
    .await
    .ok();
    assert!(
        added.contains("main") && added.contains("standalone"),
        "{added}"
    );
    let closed = format!("127.0.0.1:{}", larder_tests::ports::free_port());
    larderctl(
        url,
        t,
        &[
            "cluster",
            "add",
            "ghost",
            "--topology",
            "standalone",
            "--endpoint",
            &closed,
            "--capacity",
            "1GiB",
        ],
    )
    .await
    .failed("Deployment check failed");
    let listed = larderctl(url, t, &["--json", "cluster", "ls"]).await.json();
    assert_eq!(listed["items"][0]["name"], "main");
    assert_eq!(listed["items"][0]["capacity_bytes"], 256u64 << 20);
    let table = larderctl(url, t, &["cluster", "ls"]).await.ok();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        larderctl(url, t, &["cluster", "show", "main"])
            .await
            .ok()
            .contains("main")
    );

    // A namespace with limits, shown with usage.
    let created = larderctl(
        url,
        t,
        &[
            "--json",
            "ns",
            "create",
            "orders",
            "--owner",
            "team-orders",
            "--memory",
            "64MiB",
            "--ops",
            "5000",
            "--max-value-bytes",
            "4KiB",
            "--default-ttl",
            "10m",
            "--near-cache",
            "on",
        ],
    )
    .await
    .json();
    assert_eq!(created["cluster"], "main");
    assert_eq!(created["limits"]["memory_bytes"], 64u64 << 20);
    assert_eq!(created["limits"]["ops_per_sec"], 5000);
    assert_eq!(created["limits"]["burst"], 5000);
    assert_eq!(created["limits"]["default_ttl_s"], 600);
    assert_eq!(created["near_cache"]["mode"], "on");
    // The same request again is fine; another is a conflict.
    larderctl(
        url,
        t,
        &[
            "ns",
            "create",
            "orders",
            "--owner",
            "team-orders",
            "--memory",
            "64MiB",
            "--ops",
            "5000",
            "--max-value-bytes",
            "4KiB",
            "--default-ttl",
            "10m",
            "--near-cache",
            "on",
        ],
    )
    .await
    .ok();
    larderctl(
        url,
        t,
        &["ns", "create", "orders", "--owner", "someone-else"],
    )
    .await
    .failed("Conflict");
    larderctl(url, t, &["ns", "create", "Bad_Name", "--owner", "x"])
        .await
        .failed("Bad request");
    larderctl(url, t, &["ns", "show", "nope"])
        .await
        .failed("Not found: no namespace \"nope\"");

    // A tenant token, used at the gateway.
    let tenant = larderctl(
        url,
        t,
        &[
            "token",
            "issue",
            "orders",
            "--subject",
            "orders-svc",
            "--perm",
            "read,write",
            "--ttl",
            "1h",
        ],
    )
    .await
    .ok()
    .trim()
    .to_owned();
    let http = reqwest::Client::new();
    let put = |token: String, body: Vec<u8>| {
        let http = http.clone();
        let url = format!("{}/v1/namespaces/orders/keys/greeting", gw.url);
        async move {
            http.put(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        put(tenant.clone(), b"hello".to_vec()).await,
        StatusCode::NO_CONTENT
    );
    let shown = larderctl(url, t, &["--json", "ns", "show", "orders"])
        .await
        .json();
    assert_eq!(shown["usage"]["keys"], 1, "{shown}");
    let human = larderctl(url, t, &["ns", "show", "orders"]).await.ok();
    assert!(
        human.contains("memory budget") && human.contains("64.0 MiB"),
        "{human}"
    );
    assert!(
        larderctl(url, t, &["ns", "ls"])
            .await
            .ok()
            .contains("orders")
    );

    // Limits change and reach the gateway.
    let updated = larderctl(
        url,
        t,
        &[
            "--json",
            "ns",
            "update",
            "orders",
            "--max-value-bytes",
            "1KiB",
            "--default-ttl",
            "none",
        ],
    )
    .await
    .json();
    assert_eq!(updated["limits"]["max_value_bytes"], 1024);
    assert_eq!(updated["limits"]["default_ttl_s"], Value::Null);
    assert_eq!(updated["revision"], 2);
    larderctl(url, t, &["ns", "update", "orders"])
        .await
        .failed("nothing to change");
    larder_tests::eventually(
        Duration::from_secs(2),
        "the gateway enforces 1 KiB",
        || async { put(tenant.clone(), vec![b'x'; 2048]).await == StatusCode::PAYLOAD_TOO_LARGE },
    )
    .await;

    // Disable and enable.
    let disabled = larderctl(url, t, &["--json", "ns", "disable", "orders"])
        .await
        .json();
    assert_eq!(disabled["state"], "disabled");
    let enabled = larderctl(url, t, &["--json", "ns", "enable", "orders"])
        .await
        .json();
    assert_eq!(enabled["state"], "active");

    // Token metadata and revocation.
    let tokens = larderctl(url, t, &["--json", "token", "ls", "orders"])
        .await
        .json();
    let jti = tokens["items"][0]["jti"].as_str().unwrap().to_owned();
    assert_eq!(tokens["items"][0]["subject"], "orders-svc");
    assert!(
        !tokens.to_string().contains(&tenant),
        "never the token itself"
    );
    assert!(
        larderctl(url, t, &["token", "ls"])
            .await
            .ok()
            .contains(&jti)
    );
    let revoked = larderctl(url, t, &["--json", "token", "revoke", &jti])
        .await
        .json();
    assert_eq!(revoked["state"], "revoked");
    larder_tests::eventually(
        Duration::from_secs(2),
        "the gateway refuses the revoked token",
        || async { put(tenant.clone(), b"x".to_vec()).await == StatusCode::UNAUTHORIZED },
    )
    .await;
    larderctl(url, t, &["token", "revoke", "nope"])
        .await
        .failed("Not found");

    // Keys: rotate, mint a new admin token (signed by the new key), retire the old key.
    let before = larderctl(url, t, &["--json", "keys", "ls"]).await.json();
    let old_kid = before["items"][0]["kid"].as_str().unwrap().to_owned();
    let rotated = larderctl(url, t, &["--json", "keys", "rotate"])
        .await
        .json();
    assert_ne!(rotated["kid"], old_kid.as_str());
    assert_eq!(rotated["signing"], true);
    let token2 = admin_token(keys.path(), url).await;
    let t2 = token2.as_str();
    larderctl(
        url,
        t2,
        &["keys", "retire", rotated["kid"].as_str().unwrap()],
    )
    .await
    .failed("rotate first");
    let retired = larderctl(url, t2, &["--json", "keys", "retire", &old_kid])
        .await
        .json();
    assert_eq!(retired["state"], "retired");
    larderctl(url, t, &["cluster", "ls"])
        .await
        .failed("retired");
    assert!(
        larderctl(url, t2, &["keys", "ls"])
            .await
            .ok()
            .contains("retired")
    );

    // Delete the namespace (waiting for its keys to go), then the deployment.
    assert!(
        larderctl(
            url,
            t2,
            &["ns", "rm", "orders", "--wait", "--timeout", "30s"]
        )
        .await
        .ok()
        .contains("deleted orders")
    );
    larderctl(url, t2, &["ns", "show", "orders"])
        .await
        .failed("Not found");
    assert!(
        larderctl(url, t2, &["cluster", "rm", "main"])
            .await
            .ok()
            .contains("deregistered main")
    );

    // The audit trail tells the story, filterable.
    let audit = larderctl(url, t2, &["--json", "audit", "--limit", "100"])
        .await
        .json();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for expected in [
        "cluster.register",
        "namespace.create",
        "token.issue",
        "namespace.update",
        "namespace.disable",
        "namespace.enable",
        "token.revoke",
        "key.rotate",
        "key.retire",
        "namespace.delete",
        "namespace.deleted",
        "cluster.deregister",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "ops-alice")
    );
    let failures = larderctl(url, t2, &["--json", "audit", "--outcome", "error"])
        .await
        .json();
    assert!(
        failures["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["outcome"] == "error")
    );
    let table = larderctl(
        url,
        t2,
        &["audit", "--action", "namespace.", "--since", "1h"],
    )
    .await
    .ok();
    assert!(
        table.starts_with("ID") && table.contains("namespace.create"),
        "{table}"
    );
}
