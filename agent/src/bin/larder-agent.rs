//! `larder-agent`: probes the Redis instances on this host and publishes their health.

/// mimalloc: the request path allocates per request, and glibc malloc showed up at
/// about a tenth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use larder_agent::config::{Instance, Overrides, ZooKeeperOverrides};

/// Probes the Redis instances on this host; publishes their health to ZooKeeper and
/// their metrics to Prometheus.
#[derive(Parser)]
#[command(name = "larder-agent", version, about)]
struct Cli {
    /// TOML configuration file; `LARDER_*` variables and these flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the metrics and health HTTP server.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// ZooKeeper servers (zookeeper.connect).
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
    zookeeper: Option<String>,
    /// Registry root znode (zookeeper.root).
    #[arg(long, value_name = "PATH")]
    root: Option<String>,
    /// A Redis instance to probe; repeatable, replaces the configured list.
    #[arg(long = "instance", value_name = "CLUSTER=HOST:PORT")]
    instances: Vec<Instance>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let message = e.to_string();
            let first = message.lines().next().unwrap_or_default();
            eprintln!(
                "larder-agent: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::FAILURE;
        }
    };
    match start(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let zookeeper = (cli.zookeeper.is_some() || cli.root.is_some()).then_some(ZooKeeperOverrides {
        connect: cli.zookeeper,
        root: cli.root,
    });
    let instances = (!cli.instances.is_empty()).then_some(cli.instances);
    let overrides = Overrides {
        listen: cli.listen,
        zookeeper,
        instances,
    };
    let config = larder_agent::Config::load(cli.config.as_deref(), &overrides)?;
    larder_service::telemetry::init(&config.log);
    let listener = larder_service::http::bind(&config.listen).await?;
    let shutdown = larder_service::shutdown::signal_token();
    larder_agent::run(config, listener, shutdown).await?;
    Ok(())
}
