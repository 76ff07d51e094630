//! `larderctl`: the admin's command line over the control plane's API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use larder_control_plane::api::{
    ClusterView, CreateNamespace, IssueToken, NamespaceView, RegisterCluster,
};
use larder_control_plane::client::Client;
use larder_control_plane::keys::{self, KeyStore};
use larder_registry::auth::{ADMIN_AUDIENCE, Permission};
use larder_registry::model::{Limits, Topology};

/// Administer a Larder platform.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Control-plane URL.
    #[arg(
        long,
        env = "LARDER_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    url: String,
    /// Admin token (see `larderctl admin-token`).
    #[arg(long, env = "LARDER_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint an admin token with the signing key on this control-plane host (bootstrap).
    AdminToken {
        /// The control plane's key directory.
        #[arg(long, env = "LARDER_KEY_DIR")]
        key_dir: PathBuf,
        #[arg(long, default_value = "admin")]
        subject: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 24 * 3600)]
        ttl: u64,
    },
    /// Redis deployments.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Tenant namespaces.
    #[command(subcommand, name = "ns")]
    Namespace(NamespaceCommand),
    /// Tenant tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Register a deployment (checked live before it is accepted).
    Add {
        name: String,
        #[arg(long, value_parser = ["standalone", "cluster"])]
        topology: String,
        /// Master (standalone) or seed nodes (cluster), host:port, repeatable.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// Replicas of a standalone master, repeatable.
        #[arg(long = "replica")]
        replicas: Vec<String>,
        #[arg(long, default_value = "local")]
        region: String,
        /// Memory the platform may hand out, bytes.
        #[arg(long)]
        capacity: u64,
    },
    Ls,
    Show {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum NamespaceCommand {
    /// Create a namespace; placed automatically unless --cluster is given.
    Create {
        name: String,
        #[arg(long)]
        owner: String,
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// Memory budget, bytes.
        #[arg(long)]
        memory: Option<u64>,
        /// Sustained operations per second.
        #[arg(long)]
        ops: Option<u32>,
    },
    Ls,
    Show {
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a tenant token for a namespace; prints the token.
    Issue {
        namespace: String,
        #[arg(long)]
        subject: String,
        /// read, write, queue (repeatable or comma-separated).
        #[arg(long = "perm", value_delimiter = ',', default_values = ["read", "write"])]
        permissions: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        ttl: Option<u64>,
    },
}

fn permission(name: &str) -> anyhow::Result<Permission> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| anyhow::anyhow!("unknown permission {name:?}; use read, write or queue"))
}

fn print_clusters(items: &[ClusterView]) {
    println!(
        "{:<20} {:<11} {:<9} {:>4} {:<10} ENDPOINTS",
        "NAME", "TOPOLOGY", "STATUS", "NS", "REGION"
    );
    for c in items {
        let status = serde_json::to_value(c.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let topology = match c.cluster.topology {
            Topology::Standalone => "standalone",
            Topology::Cluster => "cluster",
        };
        println!(
            "{:<20} {:<11} {:<9} {:>4} {:<10} {}",
            c.cluster.name,
            topology,
            status,
            c.namespaces,
            c.cluster.region,
            c.cluster.endpoints.join(",")
        );
    }
}

fn print_namespaces(items: &[NamespaceView]) {
    println!(
        "{:<24} {:<16} {:<16} {:<9} {:>8}",
        "NAME", "OWNER", "CLUSTER", "STATE", "OPS/S"
    );
    for n in items {
        let ns = &n.namespace;
        let state = serde_json::to_value(ns.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:<24} {:<16} {:<16} {:<9} {:>8}",
            ns.name, ns.owner, ns.cluster, state, ns.limits.ops_per_sec
        );
    }
}

fn emit<T: serde::Serialize>(json: bool, value: &T, table: impl FnOnce(&T)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        table(value);
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.url, cli.token.clone());
    let json = cli.json;
    match cli.command {
        Command::AdminToken {
            key_dir,
            subject,
            ttl,
        } => {
            let store = KeyStore::load(&key_dir)?;
            let claims = keys::claims(
                &subject,
                ADMIN_AUDIENCE,
                vec![],
                vec![Permission::Admin],
                ttl,
            );
            let (token, _) = store.sign(&claims)?;
            println!("{token}");
        }
        Command::Cluster(ClusterCommand::Add {
            name,
            topology,
            endpoints,
            replicas,
            region,
            capacity,
        }) => {
            let topology = if topology == "cluster" {
                Topology::Cluster
            } else {
                Topology::Standalone
            };
            let request = RegisterCluster {
                name,
                topology,
                endpoints,
                replicas,
                region,
                capacity_bytes: capacity,
                down_after_ms: None,
            };
            let view = client.register_cluster(&request).await?;
            emit(json, &view, |v| print_clusters(std::slice::from_ref(v)));
        }
        Command::Cluster(ClusterCommand::Ls) => {
            let list = client.clusters().await?;
            emit(json, &list, |l| print_clusters(&l.items));
        }
        Command::Cluster(ClusterCommand::Show { name }) => {
            let view = client.cluster(&name).await?;
            emit(json, &view, |v| {
                print_clusters(std::slice::from_ref(v));
                for n in &v.nodes {
                    println!(
                        "  {:<22} up={} role={:?} version={} memory={}",
                        n.endpoint, n.up, n.role, n.redis_version, n.used_memory_bytes
                    );
                }
            });
        }
        Command::Namespace(NamespaceCommand::Create {
            name,
            owner,
            cluster,
            region,
            memory,
            ops,
        }) => {
            let mut limits = Limits::default();
            if let Some(m) = memory {
                limits.memory_bytes = m;
            }
            if let Some(o) = ops {
                limits.ops_per_sec = o;
                limits.burst = limits.burst.max(o);
            }
            let request = CreateNamespace {
                name,
                owner,
                cluster,
                region,
                limits: Some(limits),
                near_cache: None,
            };
            let view = client.create_namespace(&request).await?;
            emit(json, &view, |v| print_namespaces(std::slice::from_ref(v)));
        }
        Command::Namespace(NamespaceCommand::Ls) => {
            let list = client.namespaces().await?;
            emit(json, &list, |l| print_namespaces(&l.items));
        }
        Command::Namespace(NamespaceCommand::Show { name }) => {
            let view = client.namespace(&name).await?;
            emit(json, &view, |v| print_namespaces(std::slice::from_ref(v)));
        }
        Command::Token(TokenCommand::Issue {
            namespace,
            subject,
            permissions,
            ttl,
        }) => {
            let permissions = permissions
                .iter()
                .map(|p| permission(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let issued = client
                .issue_token(
                    &namespace,
                    &IssueToken {
                        subject,
                        permissions,
                        ttl_s: ttl,
                    },
                )
                .await?;
            emit(json, &issued, |t| println!("{}", t.token));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match execute(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larderctl: {e}");
            ExitCode::FAILURE
        }
    }
}
