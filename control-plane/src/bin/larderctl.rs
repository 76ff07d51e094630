//! `larderctl`: the admin's command line over the control plane's API.
//!
//! Tables for people by default, `--json` for scripts. The control plane's URL and the
//! admin token come from `--url`/`--token` or `LARDER_URL`/`LARDER_TOKEN`. A failure
//! prints the problem's title and detail on one line and exits non-zero.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use larder_control_plane::api::{
    AuditPage, AuditQuery, ClusterView, CreateNamespace, IssueToken, KeyView, LimitsPatch,
    NamespaceQuery, NamespaceView, RegisterCluster, TokenQuery, TokenView, UpdateNamespace,
};
use larder_control_plane::client::{Client, ClientError};
use larder_control_plane::keys::{self, KeyStore};
use larder_registry::auth::{ADMIN_AUDIENCE, Permission};
use larder_registry::model::{Limits, NearCachePolicy, Topology};
use serde::Serialize;

/// Administer a Larder platform: Redis deployments, namespaces, tokens, keys, audit.
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
        /// Lifetime: seconds or a duration like 12h, 30d.
        #[arg(long, default_value = "24h", value_parser = duration_s)]
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
    /// Token signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The record of admin mutations, newest first.
    Audit(AuditArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TopologyArg {
    Standalone,
    Cluster,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Register a deployment (checked live before it is accepted).
    Add {
        name: String,
        #[arg(long, value_enum)]
        topology: TopologyArg,
        /// Master (standalone) or seed nodes (cluster), host:port, repeatable.
        #[arg(long = "endpoint", required = true)]
        endpoints: Vec<String>,
        /// Replicas of a standalone master, repeatable.
        #[arg(long = "replica")]
        replicas: Vec<String>,
        #[arg(long, default_value = "local")]
        region: String,
        /// Memory the platform may hand out: bytes or a size like 256MiB, 2GiB.
        #[arg(long, value_parser = size)]
        capacity: u64,
        /// How long the master must look down before a failover, ms.
        #[arg(long)]
        down_after_ms: Option<u64>,
    },
    /// List deployments with their live health.
    Ls,
    /// Show a deployment and its nodes.
    Show { name: String },
    /// Deregister a deployment that holds no namespace.
    Rm { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NearCacheArg {
    Off,
    On,
    Auto,
}

/// Limits shared by `ns create` and `ns update`.
#[derive(Debug, Args)]
struct LimitArgs {
    /// Memory budget: bytes or a size like 64MiB.
    #[arg(long, value_parser = size)]
    memory: Option<u64>,
    /// Sustained operations per second.
    #[arg(long)]
    ops: Option<u32>,
    /// Operations allowed in a burst above the sustained rate.
    #[arg(long)]
    burst: Option<u32>,
    /// Longest key: bytes or a size.
    #[arg(long, value_parser = size)]
    max_key_bytes: Option<u64>,
    /// Largest value: bytes or a size like 1MiB.
    #[arg(long, value_parser = size)]
    max_value_bytes: Option<u64>,
    /// TTL of writes that name none: seconds, a duration like 10m, or `none`.
    #[arg(long, value_parser = optional_duration_s)]
    default_ttl: Option<Ttl>,
    /// Longest TTL a client may ask for: seconds, a duration like 7d, or `none`.
    #[arg(long, value_parser = optional_duration_s)]
    max_ttl: Option<Ttl>,
    /// Near cache in the gateways.
    #[arg(long, value_enum)]
    near_cache: Option<NearCacheArg>,
    /// Staleness bound of the near cache, ms.
    #[arg(long, default_value_t = 100)]
    near_cache_staleness_ms: u64,
}

impl LimitArgs {
    fn patch(&self) -> anyhow::Result<LimitsPatch> {
        let max_key_bytes = self
            .max_key_bytes
            .map(|v| u32::try_from(v).map_err(|_| anyhow::anyhow!("--max-key-bytes is too large")))
            .transpose()?;
        Ok(LimitsPatch {
            max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            default_ttl_s: self.default_ttl.map(|t| t.0),
            max_ttl_s: self.max_ttl.map(|t| t.0),
            ops_per_sec: self.ops,
            burst: self.burst,
            memory_bytes: self.memory,
        })
    }

    fn near_cache(&self) -> Option<NearCachePolicy> {
        let max_staleness_ms = self.near_cache_staleness_ms;
        self.near_cache.map(|mode| match mode {
            NearCacheArg::Off => NearCachePolicy::Off,
            NearCacheArg::On => NearCachePolicy::On { max_staleness_ms },
            NearCacheArg::Auto => NearCachePolicy::Auto {
                max_staleness_ms,
                min_rate_per_s: larder_registry::model::DEFAULT_HOT_KEY_RATE,
            },
        })
    }
}

#[derive(Debug, Subcommand)]
enum NamespaceCommand {
    /// Create a namespace; placed automatically unless --cluster is given.
    Create {
        name: String,
        /// The owning team.
        #[arg(long)]
        owner: String,
        /// Place it on this deployment.
        #[arg(long)]
        cluster: Option<String>,
        /// Place it on a deployment in this region.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List namespaces with their usage.
    Ls {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// Skip the usage scan.
        #[arg(long)]
        no_usage: bool,
    },
    /// Show a namespace, its limits and usage.
    Show { name: String },
    /// The namespace's hottest keys across all gateways.
    Hotkeys {
        name: String,
        /// How many keys (1 to 64).
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Change a namespace's owner, limits or near-cache policy.
    Update {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Refuse the namespace's requests (its keys stay).
    Disable { name: String },
    /// Serve a disabled namespace again.
    Enable { name: String },
    /// Delete a namespace: its keys are removed in the background, then it goes.
    Rm {
        name: String,
        /// Wait until the deletion has finished.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, seconds or a duration.
        #[arg(long, default_value = "5m", value_parser = duration_s)]
        timeout: u64,
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
        /// Lifetime: seconds or a duration like 12h, 30d (default 24h).
        #[arg(long, value_parser = duration_s)]
        ttl: Option<u64>,
        /// Makes a retry return the same token instead of issuing another.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List issued tokens (metadata only), newest first.
    Ls {
        /// Only this namespace's tokens.
        namespace: Option<String>,
        /// Include revoked and expired tokens.
        #[arg(long)]
        all: bool,
        /// Print only the token ids.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show one token's metadata.
    Show { jti: String },
    /// Revoke a token by id; gateways refuse it within the propagation bound.
    Revoke { jti: String },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// List signing keys, oldest first.
    Ls {
        /// Print only the key ids.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Create a new signing key; it signs every token from now on.
    Rotate,
    /// Retire a key: tokens it signed stop verifying.
    Retire { kid: String },
}

#[derive(Debug, Args)]
struct AuditArgs {
    /// Only entries by this admin.
    #[arg(long)]
    actor: Option<String>,
    /// Only actions starting with this, e.g. `namespace.` or `token.revoke`.
    #[arg(long)]
    action: Option<String>,
    /// Only entries about this target, e.g. `namespace/orders`.
    #[arg(long)]
    target: Option<String>,
    /// `ok` or `error`.
    #[arg(long)]
    outcome: Option<String>,
    /// Only entries of the last ..., e.g. 1h, 7d.
    #[arg(long, value_parser = duration_s)]
    since: Option<u64>,
    /// Entries per page.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Continue after this entry id (the `next` of the previous page).
    #[arg(long)]
    before: Option<String>,
}

/// Bytes from `1048576`, `512KiB`, `64MiB`, `2GiB`, `1GB`, `10k`.
fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 64MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use KiB, MiB, GiB, ...)"
            ));
        }
    };
    Ok((number * factor as f64).round() as u64)
}

/// Seconds from `300`, `90s`, `10m`, `12h`, `30d`.
fn duration_s(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 300, 10m, 12h or 30d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        other => return Err(format!("unknown duration unit {other:?} (use s, m, h, d)")),
    };
    Ok(number * factor)
}

/// A TTL in seconds, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ttl(Option<u64>);

/// A duration, or `none` for "no TTL".
fn optional_duration_s(text: &str) -> Result<Ttl, String> {
    if text.eq_ignore_ascii_case("none") {
        Ok(Ttl(None))
    } else {
        duration_s(text).map(|s| Ttl(Some(s)))
    }
}

fn permission(name: &str) -> anyhow::Result<Permission> {
    serde_json::from_value(serde_json::Value::String(name.trim().to_owned()))
        .map_err(|_| anyhow::anyhow!("unknown permission {name:?}; use read, write or queue"))
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn time(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The lower-case wire name of an enum value.
fn name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Prints rows under headers, each column as wide as its widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
}

fn print_clusters(items: &[ClusterView]) {
    table(
        &[
            "NAME",
            "TOPOLOGY",
            "STATUS",
            "REGION",
            "NS",
            "RESERVED",
            "CAPACITY",
            "ENDPOINTS",
            "REASON",
        ],
        items
            .iter()
            .map(|c| {
                let reason = match c.reasons.as_slice() {
                    [] => String::new(),
                    [one] => one.clone(),
                    [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
                };
                vec![
                    c.cluster.name.clone(),
                    name(&c.cluster.topology),
                    name(&c.status),
                    c.cluster.region.clone(),
                    c.namespaces.to_string(),
                    bytes(c.reserved_bytes),
                    bytes(c.cluster.capacity_bytes),
                    c.cluster.endpoints.join(","),
                    reason,
                ]
            })
            .collect(),
    );
}

fn print_cluster(c: &ClusterView) {
    print_clusters(std::slice::from_ref(c));
    println!();
    if !c.cluster.replicas.is_empty() {
        println!("replicas: {}", c.cluster.replicas.join(", "));
    }
    println!(
        "epoch {}; fails over after {} ms down",
        c.cluster.epoch, c.cluster.down_after_ms
    );
    if let Some(v) = &c.redis_version {
        println!("Redis {v}");
    }
    for r in &c.reasons {
        println!("{}: {r}", name(&c.status));
    }
    for w in &c.warnings {
        println!("warning: {w}");
    }
    if !c.nodes.is_empty() {
        println!();
        table(
            &[
                "NODE", "UP", "ROLE", "FOLLOWS", "LINK", "OFFSET", "VERSION", "LUA CVE", "MEMORY",
                "OPS/S", "LATENCY",
            ],
            c.nodes
                .iter()
                .map(|n| {
                    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
                    vec![
                        n.endpoint.clone(),
                        yes_no(n.up),
                        name(&n.role),
                        n.master.clone().unwrap_or_else(|| "-".into()),
                        n.master_link_up
                            .map(|up| if up { "up" } else { "down" }.to_owned())
                            .unwrap_or_else(|| "-".into()),
                        n.replication_offset.to_string(),
                        n.redis_version.clone(),
                        if n.vulnerable_lua { "vulnerable" } else { "-" }.into(),
                        bytes(n.used_memory_bytes),
                        n.ops_per_sec.to_string(),
                        format!("{} µs", n.latency_us),
                    ]
                })
                .collect(),
        );
    }
}

fn usage_cells(n: &NamespaceView) -> [String; 3] {
    match &n.usage {
        Some(u) if u.note.is_none() => [
            format!("{}{}", if u.exact { "" } else { "~" }, u.keys),
            bytes(u.memory_bytes),
            u.ops_per_sec
                .map(|o| format!("{o:.1}"))
                .unwrap_or_else(|| "-".into()),
        ],
        _ => ["-".into(), "-".into(), "-".into()],
    }
}

fn print_namespaces(items: &[NamespaceView]) {
    table(
        &[
            "NAME",
            "OWNER",
            "CLUSTER",
            "STATE",
            "KEYS",
            "MEMORY",
            "BUDGET",
            "OPS/S",
            "LIMIT OPS/S",
        ],
        items
            .iter()
            .map(|n| {
                let ns = &n.namespace;
                let [keys, memory, ops] = usage_cells(n);
                vec![
                    ns.name.clone(),
                    ns.owner.clone(),
                    ns.cluster.clone(),
                    name(&ns.state),
                    keys,
                    memory,
                    bytes(ns.limits.memory_bytes),
                    ops,
                    ns.limits.ops_per_sec.to_string(),
                ]
            })
            .collect(),
    );
}

fn ttl(t: Option<u64>) -> String {
    t.map(|s| format!("{s} s")).unwrap_or_else(|| "none".into())
}

fn print_namespace(n: &NamespaceView) {
    let ns = &n.namespace;
    let l = &ns.limits;
    let near_cache = match ns.near_cache {
        NearCachePolicy::Off => "off".to_owned(),
        NearCachePolicy::On { max_staleness_ms } => format!("on (≤ {max_staleness_ms} ms stale)"),
        NearCachePolicy::Auto {
            max_staleness_ms,
            min_rate_per_s,
        } => {
            format!("auto (keys ≥ {min_rate_per_s}/s, ≤ {max_staleness_ms} ms stale)")
        }
    };
    let mut rows = vec![
        ("name", ns.name.clone()),
        ("owner", ns.owner.clone()),
        ("cluster", ns.cluster.clone()),
        ("state", name(&ns.state)),
        ("revision", ns.revision.to_string()),
        ("created", time(ns.created_at_ms)),
        ("memory budget", bytes(l.memory_bytes)),
        (
            "ops/s limit",
            format!("{} (burst {})", l.ops_per_sec, l.burst),
        ),
        ("max key", bytes(u64::from(l.max_key_bytes))),
        ("max value", bytes(l.max_value_bytes)),
        ("default TTL", ttl(l.default_ttl_s)),
        ("max TTL", ttl(l.max_ttl_s)),
        ("near cache", near_cache),
    ];
    if let Some(u) = &n.usage {
        match &u.note {
            Some(note) => rows.push(("usage", format!("unavailable: {note}"))),
            None => {
                rows.push((
                    "keys",
                    format!("{}{}", u.keys, if u.exact { "" } else { " (estimated)" }),
                ));
                rows.push(("memory", format!("{} (estimated)", bytes(u.memory_bytes))));
                rows.push((
                    "ops/s",
                    u.ops_per_sec
                        .map(|o| format!("{o:.1}"))
                        .unwrap_or_else(|| "not sampled yet".into()),
                ));
            }
        }
    }
    if let Some(d) = &n.deletion {
        rows.push((
            "deletion",
            format!("pass {}, {} keys removed", d.pass, d.deleted_keys),
        ));
    }
    for (k, v) in rows {
        println!("{k:<14} {v}");
    }
}

fn print_tokens(items: &[TokenView]) {
    table(
        &[
            "JTI",
            "NAMESPACES",
            "SUBJECT",
            "PERMS",
            "STATE",
            "EXPIRES",
            "ISSUED BY",
        ],
        items
            .iter()
            .map(|t| {
                vec![
                    t.jti.clone(),
                    t.namespaces.join(","),
                    t.subject.clone(),
                    t.permissions.iter().map(name).collect::<Vec<_>>().join(","),
                    name(&t.state),
                    time(t.expires_at * 1000),
                    t.issued_by.clone(),
                ]
            })
            .collect(),
    );
}

fn print_keys(items: &[KeyView]) {
    table(
        &["KID", "STATE", "SIGNING", "HELD HERE", "CREATED"],
        items
            .iter()
            .map(|k| {
                vec![
                    k.kid.clone(),
                    name(&k.state),
                    if k.signing { "yes" } else { "" }.into(),
                    if k.held_here { "yes" } else { "no" }.into(),
                    time(k.created_at_ms),
                ]
            })
            .collect(),
    );
}

fn print_audit(page: &AuditPage) {
    table(
        &[
            "ID", "TIME", "ACTOR", "ACTION", "TARGET", "STATUS", "DETAIL",
        ],
        page.items
            .iter()
            .map(|r| {
                let e = &r.entry;
                vec![
                    r.id.clone(),
                    time(e.at_ms),
                    e.actor.clone(),
                    e.action.clone(),
                    e.target.clone(),
                    e.status.to_string(),
                    e.detail.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    );
    if let Some(next) = &page.next {
        println!("(more: --before {next})");
    }
}

fn emit<T: Serialize>(json: bool, value: &T, table: impl FnOnce(&T)) {
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
            down_after_ms,
        }) => {
            let request = RegisterCluster {
                name,
                topology: match topology {
                    TopologyArg::Standalone => Topology::Standalone,
                    TopologyArg::Cluster => Topology::Cluster,
                },
                endpoints,
                replicas,
                region,
                capacity_bytes: capacity,
                down_after_ms,
            };
            let view = client.register_cluster(&request).await?;
            emit(json, &view, print_cluster);
        }
        Command::Cluster(ClusterCommand::Ls) => {
            let list = client.clusters().await?;
            emit(json, &list, |l| print_clusters(&l.items));
        }
        Command::Cluster(ClusterCommand::Show { name }) => {
            let view = client.cluster(&name).await?;
            emit(json, &view, print_cluster);
        }
        Command::Cluster(ClusterCommand::Rm { name }) => {
            client.deregister_cluster(&name).await?;
            if json {
                println!("{}", serde_json::json!({ "deregistered": name }));
            } else {
                println!("deregistered {name}");
            }
        }
        Command::Namespace(NamespaceCommand::Create {
            name,
            owner,
            cluster,
            region,
            limits,
        }) => {
            let mut merged = limits.patch()?.apply(Limits::default());
            if limits.ops.is_some() && limits.burst.is_none() {
                merged.burst = merged.burst.max(merged.ops_per_sec);
            }
            let request = CreateNamespace {
                name,
                owner,
                cluster,
                region,
                limits: Some(merged),
                near_cache: limits.near_cache(),
            };
            let view = client.create_namespace(&request).await?;
            emit(json, &view, print_namespace);
        }
        Command::Namespace(NamespaceCommand::Ls {
            cluster,
            owner,
            no_usage,
        }) => {
            let list = client
                .namespaces_where(&NamespaceQuery {
                    cluster,
                    owner,
                    usage: Some(!no_usage),
                })
                .await?;
            emit(json, &list, |l| print_namespaces(&l.items));
        }
        Command::Namespace(NamespaceCommand::Hotkeys { name, limit }) => {
            let view = client.hot_keys(&name, limit).await?;
            emit(json, &view, |v| {
                println!("{:<48} {:>12}", "KEY", "REQ/S");
                for k in &v.keys {
                    let key = k
                        .key
                        .clone()
                        .or_else(|| k.key_base64.as_ref().map(|b| format!("base64:{b}")));
                    println!("{:<48} {:>12.1}", key.unwrap_or_default(), k.rate);
                }
                if !v.missing.is_empty() {
                    println!(
                        "(no answer from {} of {} gateways: {})",
                        v.missing.len(),
                        v.gateways,
                        v.missing.join(", ")
                    );
                }
            });
        }
        Command::Namespace(NamespaceCommand::Show { name }) => {
            let view = client.namespace(&name).await?;
            emit(json, &view, print_namespace);
        }
        Command::Namespace(NamespaceCommand::Update {
            name,
            owner,
            limits,
        }) => {
            let patch = limits.patch()?;
            let request = UpdateNamespace {
                owner,
                limits: (patch != LimitsPatch::default()).then_some(patch),
                near_cache: limits.near_cache(),
            };
            if request == UpdateNamespace::default() {
                anyhow::bail!("nothing to change: give --owner or a limit such as --ops");
            }
            let view = client.update_namespace(&name, &request).await?;
            emit(json, &view, print_namespace);
        }
        Command::Namespace(NamespaceCommand::Disable { name }) => {
            let view = client.disable_namespace(&name).await?;
            emit(json, &view, print_namespace);
        }
        Command::Namespace(NamespaceCommand::Enable { name }) => {
            let view = client.enable_namespace(&name).await?;
            emit(json, &view, print_namespace);
        }
        Command::Namespace(NamespaceCommand::Rm {
            name,
            wait,
            timeout,
        }) => {
            let view = client.delete_namespace(&name).await?;
            if !wait {
                emit(json, &view, |_| {
                    println!("deleting {name}: its keys are being removed in the background")
                });
                return Ok(());
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                match client.namespace(&name).await {
                    Err(ClientError::Problem(p)) if p.status == 404 => break,
                    Err(e) => return Err(e.into()),
                    Ok(_) if std::time::Instant::now() >= deadline => {
                        anyhow::bail!("{name} is still being deleted after {timeout} s")
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
            if json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted {name}");
            }
        }
        Command::Token(TokenCommand::Issue {
            namespace,
            subject,
            permissions,
            ttl,
            idempotency_key,
        }) => {
            let permissions = permissions
                .iter()
                .map(|p| permission(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let request = IssueToken {
                subject,
                permissions,
                ttl_s: ttl,
            };
            let issued = match &idempotency_key {
                Some(key) => {
                    client
                        .issue_token_idempotent(&namespace, &request, key)
                        .await?
                }
                None => client.issue_token(&namespace, &request).await?,
            };
            emit(json, &issued, |t| println!("{}", t.token));
        }
        Command::Token(TokenCommand::Ls {
            namespace,
            all,
            quiet,
        }) => {
            let list = client
                .tokens(&TokenQuery {
                    namespace,
                    all: Some(all),
                })
                .await?;
            emit(json, &list, |l| {
                if quiet {
                    l.items.iter().for_each(|t| println!("{}", t.jti));
                } else {
                    print_tokens(&l.items);
                }
            });
        }
        Command::Token(TokenCommand::Show { jti }) => {
            let token = client.token(&jti).await?;
            emit(json, &token, |t| print_tokens(std::slice::from_ref(t)));
        }
        Command::Token(TokenCommand::Revoke { jti }) => {
            let token = client.revoke_token(&jti).await?;
            emit(json, &token, |t| print_tokens(std::slice::from_ref(t)));
        }
        Command::Keys(KeysCommand::Ls { quiet }) => {
            let list = client.keys().await?;
            emit(json, &list, |l| {
                if quiet {
                    l.items.iter().for_each(|k| println!("{}", k.kid));
                } else {
                    print_keys(&l.items);
                }
            });
        }
        Command::Keys(KeysCommand::Rotate) => {
            let key = client.rotate_key().await?;
            emit(json, &key, |k| print_keys(std::slice::from_ref(k)));
        }
        Command::Keys(KeysCommand::Retire { kid }) => {
            let key = client.retire_key(&kid).await?;
            emit(json, &key, |k| print_keys(std::slice::from_ref(k)));
        }
        Command::Audit(args) => {
            let now_ms = larder_registry::now_ms();
            let page = client
                .audit(&AuditQuery {
                    actor: args.actor,
                    action: args.action,
                    target: args.target,
                    outcome: args.outcome,
                    since_ms: args.since.map(|s| now_ms.saturating_sub(s * 1000)),
                    until_ms: None,
                    limit: Some(args.limit),
                    before: args.before,
                })
                .await?;
            emit(json, &page, print_audit);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("64MiB"), Ok(64 << 20));
        assert_eq!(size("1.5GiB"), Ok(3 << 29));
        assert_eq!(size("10k"), Ok(10_000));
        assert!(size("12 parsecs").is_err());
        assert_eq!(duration_s("300"), Ok(300));
        assert_eq!(duration_s("10m"), Ok(600));
        assert_eq!(duration_s("30d"), Ok(30 * 86_400));
        assert!(duration_s("1w").is_err());
        assert_eq!(optional_duration_s("none"), Ok(Ttl(None)));
        assert_eq!(optional_duration_s("1h"), Ok(Ttl(Some(3_600))));
        assert_eq!(bytes(64 << 20), "64.0 MiB");
        assert_eq!(bytes(12), "12 B");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
