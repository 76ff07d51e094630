//! Larder's own services started in process on port 0, against the harness's real
//! ZooKeeper and Redis. Each [`Service`] is stopped (its shutdown token cancelled) when
//! dropped, so a panicking test leaves nothing behind.

use std::path::Path;
use std::time::Duration;

use larder_control_plane::client::Client as AdminClient;
use larder_registry::auth::{ADMIN_AUDIENCE, Permission};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{REQUEST_TIMEOUT, ZooKeeper, registry_config};

/// A service running in this process.
pub struct Service {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Service {
    async fn spawn<F>(
        name: &str,
        listener: TcpListener,
        run: impl FnOnce(TcpListener, CancellationToken) -> F,
    ) -> Service
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let url = format!("http://{}", listener.local_addr().expect("bound listener"));
        let shutdown = CancellationToken::new();
        let mut task = tokio::spawn(run(listener, shutdown.clone()));
        let ready = format!("{url}/readyz");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if http
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if task.is_finished() {
                let outcome = (&mut task).await;
                panic!("{name} stopped before it was ready: {outcome:?}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} not ready at {ready} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Service {
            url,
            shutdown,
            task: Some(task),
        }
    }

    /// Stops the service gracefully and returns how its `run` ended.
    pub async fn stop(mut self) -> Result<(), String> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .map_err(|_| "did not stop within 15 s".to_string())?
                .map_err(|e| e.to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

/// Starts a control plane signing with the keys in `key_dir` (created when empty).
pub async fn control_plane(zk: &ZooKeeper, root: &str, key_dir: &Path) -> Service {
    let config = larder_control_plane::Config {
        listen: "127.0.0.1:0".into(),
        id: format!("cp-test-{}", rand::random::<u32>()),
        key_dir: key_dir.to_owned(),
        zookeeper: registry_config(zk, root),
        ..Default::default()
    };
    Service::spawn(
        "control plane",
        bind().await,
        |listener, shutdown| async move {
            larder_control_plane::run(config, listener, shutdown)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}

/// Starts a gateway.
pub async fn gateway(zk: &ZooKeeper, root: &str) -> Service {
    let config = larder_gateway::Config {
        listen: "127.0.0.1:0".into(),
        id: format!("gw-test-{}", rand::random::<u32>()),
        request_timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
        zookeeper: registry_config(zk, root),
        ..Default::default()
    };
    Service::spawn("gateway", bind().await, |listener, shutdown| async move {
        larder_gateway::run(config, listener, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// Starts an agent probing `instances` (`(cluster, host:port)`).
pub async fn agent(zk: &ZooKeeper, root: &str, instances: &[(&str, String)]) -> Service {
    agent_with(zk, root, instances, |_| {}).await
}

/// Starts an agent like [`agent`], with `configure` applied to its configuration first
/// (probe interval and thresholds, a ZooKeeper connect string through a proxy, ...).
pub async fn agent_with(
    zk: &ZooKeeper,
    root: &str,
    instances: &[(&str, String)],
    configure: impl FnOnce(&mut larder_agent::Config),
) -> Service {
    let mut config = larder_agent::Config {
        listen: "127.0.0.1:0".into(),
        id: format!("agent-test-{}", rand::random::<u32>()),
        probe_interval_ms: 250,
        probe_timeout_ms: 200,
        zookeeper: registry_config(zk, root),
        instances: instances
            .iter()
            .map(|(cluster, address)| larder_agent::config::Instance {
                address: address.clone(),
                cluster: (*cluster).to_owned(),
                username: None,
                password: None,
            })
            .collect(),
        ..Default::default()
    };
    configure(&mut config);
    Service::spawn("agent", bind().await, |listener, shutdown| async move {
        larder_agent::run(config, listener, shutdown)
            .await
            .map_err(|e| e.to_string())
    })
    .await
}

/// An admin token minted with the control plane's key directory, as
/// `larderctl admin-token` does on a control-plane host.
pub fn admin_token(key_dir: &Path) -> String {
    let store =
        larder_control_plane::keys::KeyStore::load(key_dir).expect("key directory readable");
    let claims = larder_control_plane::keys::claims(
        "test-admin",
        ADMIN_AUDIENCE,
        vec![],
        vec![Permission::Admin],
        3600,
    );
    store.sign(&claims).expect("sign admin token").0
}

/// An admin API client for `control_plane`, authenticated with a fresh admin token.
pub fn admin(control_plane: &Service, key_dir: &Path) -> AdminClient {
    AdminClient::new(&control_plane.url, Some(admin_token(key_dir)))
}

/// Starts a control plane like [`control_plane`], with `configure` applied to its
/// configuration first (shorter background intervals, smaller deletion batches, ...).
pub async fn control_plane_with(
    zk: &ZooKeeper,
    root: &str,
    key_dir: &Path,
    configure: impl FnOnce(&mut larder_control_plane::Config),
) -> Service {
    let mut config = larder_control_plane::Config {
        listen: "127.0.0.1:0".into(),
        id: format!("cp-test-{}", rand::random::<u32>()),
        key_dir: key_dir.to_owned(),
        zookeeper: registry_config(zk, root),
        ..Default::default()
    };
    configure(&mut config);
    Service::spawn(
        "control plane",
        bind().await,
        |listener, shutdown| async move {
            larder_control_plane::run(config, listener, shutdown)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}

/// A workspace binary next to the test binary (`target/<profile>/<name>`); panics naming
/// the set-up command when it has not been built.
pub fn binary(name: &str) -> std::path::PathBuf {
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
