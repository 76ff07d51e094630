//! `larder-gateway`: parse the command line, load the config, start telemetry, run.

/// mimalloc: the request path allocates per request, and glibc malloc showed up at
/// about a tenth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use larder_gateway::Config;
use serde::Serialize;

/// The Larder data API.
#[derive(Debug, Parser, Serialize)]
#[command(version, about)]
struct Cli {
    /// TOML config file; `LARDER_*` variables and these flags override it.
    #[arg(long, short)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Address of the data API, e.g. 127.0.0.1:8080.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    /// This gateway's id in the registry.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[command(flatten)]
    #[serde(skip_serializing_if = "ZooKeeper::is_empty")]
    zookeeper: ZooKeeper,
}

#[derive(Debug, clap::Args, Serialize)]
struct ZooKeeper {
    /// ZooKeeper servers, host:port[,host:port].
    #[arg(long = "zookeeper")]
    #[serde(skip_serializing_if = "Option::is_none")]
    connect: Option<String>,
    /// Registry root znode.
    #[arg(long = "root")]
    #[serde(skip_serializing_if = "Option::is_none")]
    root: Option<String>,
}

impl ZooKeeper {
    fn is_empty(&self) -> bool {
        self.connect.is_none() && self.root.is_none()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = async {
        let config: Config = larder_service::config::load(cli.config.as_deref(), &cli)?;
        larder_service::telemetry::init(&config.log);
        let listener = larder_service::http::bind(&config.listen).await?;
        let shutdown = larder_service::shutdown::signal_token();
        larder_gateway::run(config, listener, shutdown).await?;
        anyhow::Ok(())
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
