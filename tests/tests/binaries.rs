//! The binaries refuse bad start-up conditions with one clear line and a non-zero exit:
//! malformed config, unreachable ZooKeeper, a port in use, invalid names. Never a panic,
//! never a hang.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use larder_tests::ports::free_port;

/// A workspace binary next to this test binary (`target/<profile>/<name>`).
fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run ./deploy/local/test.sh (it builds every binary)",
        path.display()
    );
    path
}

/// Runs `name args…` to completion (at most 30 s); returns the exit code and stderr.
fn run(name: &str, args: &[&str]) -> (i32, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(bin(name))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn binary");
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status.code().unwrap_or(-1), stderr, started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().ok();
            child.wait().ok();
            panic!("{name} {args:?} hung for 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_refused(name: &str, args: &[&str], needle: &str) {
    let (code, stderr, _) = run(name, args);
    assert_ne!(code, 0, "{name} {args:?} should fail; stderr: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line expected, got: {stderr}"
    );
    assert!(stderr.starts_with(&format!("{name}: ")), "{stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unreachable_zookeeper_fails_fast_with_its_address() {
    let zk = format!("127.0.0.1:{}", free_port());
    for name in ["larder-gateway", "larder-control-plane"] {
        let keys = tempfile::tempdir().unwrap();
        let mut args = vec!["--listen", "127.0.0.1:0", "--zookeeper", &zk];
        let key_dir = keys.path().to_str().unwrap().to_owned();
        if name == "larder-control-plane" {
            args.extend(["--key-dir", &key_dir]);
        }
        let (code, stderr, took) = run(name, &args);
        assert_ne!(code, 0);
        assert!(
            stderr.contains(&zk) && stderr.contains("ZooKeeper"),
            "{name}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            took < Duration::from_secs(15),
            "{name} took {took:?} to give up"
        );
    }
    assert_refused(
        "larder-agent",
        &[
            "--listen",
            "127.0.0.1:0",
            "--zookeeper",
            &zk,
            "--instance",
            "main=127.0.0.1:6379",
        ],
        "ZooKeeper",
    );
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for name in ["larder-gateway", "larder-control-plane"] {
        assert_refused(
            name,
            &["--listen", &addr],
            &format!("cannot listen on {addr}"),
        );
    }
    assert_refused(
        "larder-agent",
        &["--listen", &addr, "--instance", "main=127.0.0.1:6379"],
        &addr,
    );
}

#[test]
fn malformed_config_is_refused_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "listen = [").unwrap();
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(&unknown, "listen = \"127.0.0.1:0\"\nlisten_port = 3\n").unwrap();
    let bad_value = dir.path().join("bad.toml");
    std::fs::write(&bad_value, "request_timeout_ms = 0\n").unwrap();
    for name in ["larder-gateway", "larder-control-plane"] {
        assert_refused(
            name,
            &["--config", broken.to_str().unwrap()],
            "invalid configuration",
        );
        assert_refused(
            name,
            &["--config", unknown.to_str().unwrap()],
            "listen_port",
        );
        assert_refused(
            name,
            &["--config", "/nonexistent/larder.toml"],
            "does not exist",
        );
        assert_refused(name, &["--root", "no-slash"], "zookeeper.root");
        assert_refused(name, &["--zookeeper", "not a host"], "zookeeper.connect");
    }
    assert_refused(
        "larder-gateway",
        &["--config", bad_value.to_str().unwrap()],
        "request_timeout_ms",
    );
    assert_refused(
        "larder-agent",
        &["--instance", "Bad_Name=127.0.0.1:6379"],
        "cluster",
    );
    assert_refused("larder-agent", &["--instance", "main=nohost"], "");
}

#[test]
fn larderctl_reports_problems_and_unreachable_servers() {
    let url = format!("http://127.0.0.1:{}", free_port());
    assert_refused(
        "larderctl",
        &["--url", &url, "--token", "t", "cluster", "ls"],
        "cannot reach the control plane",
    );
    assert_refused(
        "larderctl",
        &["admin-token", "--key-dir", "/nonexistent/keys"],
        "no signing key",
    );
}
