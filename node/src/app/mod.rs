//! The node as `tollgate serve` runs it: the node itself (`node::Node`, built from the
//! production seams) and the shared state of the HTTP handlers (`App`).
//!
//! # Layout
//! - `node`: `Node::build` from seams (transport, storage, clock, gossip, outbox) and
//!   `Node::stop`, shared with the simulator.

pub mod node;

use crate::clock::Clock;
use crate::cluster::gossip::Gossip;
use crate::cluster::start::ClusterOptions;
use crate::config::Config;
use crate::gateway::breaker::Breakers;
use crate::gateway::gate::Gate;
use crate::gateway::providers::Providers;
use crate::governance::admission::Mode;
use crate::governance::charge::PipelineConfig;
use crate::governance::replicator::{Replicator, SharedState};
use anyhow::Context;
use node::{LogSeam, Node, OutboxSeam, Replication, Seams};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// File in the data dir holding the generated admin token (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Everything a request handler needs, shared by all of them.
pub struct App {
    pub config: Config,
    pub replicator: Arc<dyn Replicator>,
    /// The request steps without HTTP: providers, rate limiter, leases, charges.
    pub gate: Arc<Gate>,
    pub http: crate::gateway::proxy::client::UpstreamClient,
    pub breakers: Breakers,
    pub gossip: Arc<Gossip>,
    pub admin_token_sha256: [u8; 32],
    pub clock: Arc<dyn Clock>,
    pub ready: AtomicBool,
    /// Set once gossip has shown a majority of the voters since the start (readiness
    /// waits for it once, as for catching up).
    pub heard_cluster: AtomicBool,
    /// Started by SIGTERM/SIGINT or `admin drain` (gossiped as `draining`).
    pub drain: Arc<crate::cluster::drain::Drain>,
    /// The protocol versions this node speaks, and the newest it met in the cluster.
    pub versions: Arc<crate::cluster::version::Versions>,
    pub outbox: Arc<crate::governance::outbox::Outbox>,
    /// The request log (none with `[logs] content = "off"`).
    pub log: Option<Arc<crate::governance::records::RequestLog>>,
    /// The request log's export sinks.
    pub exports: Option<Arc<crate::governance::records::export::Exports>>,
    /// Failed admin logins per address, for the audit trail's rate limit.
    pub auth_failures: crate::gateway::auth::FailureLimiter,
    pub counters: Arc<crate::gateway::counters::Counters>,
    /// Places for streamed answers (`[limits] max_concurrent_streams`).
    pub streams: Arc<tokio::sync::Semaphore>,
    /// Guardrails: compiled policies, the verdict cache, counts.
    pub guards: Arc<crate::gateway::guard::Guards>,
    /// Makes request ids unique across restarts of this node.
    request_id_base: u64,
    request_seq: AtomicU64,
}

impl App {
    pub fn state(&self) -> &SharedState {
        self.replicator.state()
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A new request: its id, unique per node start (random base) and per request
    /// (counter), and carrying its start time (`RequestId::generate`), which is the
    /// time its record gets.
    pub fn next_request(&self) -> NewRequest {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let time_ms = self.clock.now_ms();
        NewRequest {
            id: tollgate_proto::RequestId::generate(time_ms, self.request_id_base, seq).0,
            seq,
            time_ms,
        }
    }
}

/// What `App::next_request` hands out.
pub struct NewRequest {
    pub id: String,
    /// Its number since the node started.
    pub seq: u64,
    pub time_ms: u64,
}

/// A started node: the app its requests are served with, and the node that stops
/// at the end of the drain.
pub struct Started {
    pub app: Arc<App>,
    pub node: Node,
}

/// The node id of a node running alone.
const ALONE_NODE_ID: u64 = 1;

/// Opens the data dir, recovers state and builds the node and its app, speaking
/// `versions`: a member of the cluster `cluster` describes, or alone on a local log.
pub async fn start(
    config: Config,
    cluster: Option<ClusterOptions>,
    versions: Arc<crate::cluster::version::Versions>,
) -> anyhow::Result<Started> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    lock_data_dir(&data_dir)?;
    let admin_token_sha256 = admin_token(&data_dir)?;
    let providers = Providers::from_specs(&config.providers)?;
    let hooks = crate::hooks::env::Hooks::from_env();
    let mut serving = tokio::task::JoinSet::new();
    let clock: Arc<dyn Clock> = hooks.clock(&mut serving);
    let (node_id, replication) = match cluster {
        Some(options) => (
            options.node_id,
            Replication::Member(Box::new(crate::cluster::start::seams(options)?)),
        ),
        None => (
            ALONE_NODE_ID,
            Replication::Alone {
                dir: data_dir.join("gov"),
            },
        ),
    };
    let node = Node::build(Seams {
        node_id,
        replication,
        outbox: OutboxSeam::Durable(data_dir.join("outbox")),
        logs: (config.logs.content != crate::config::ContentMode::Off).then(|| LogSeam {
            dir: data_dir.join("logs"),
            config: config.logs.clone(),
        }),
        clock,
        serving,
        mode: if hooks.naive_budgets {
            Mode::Naive
        } else {
            Mode::Leases
        },
        pipeline: PipelineConfig {
            batch_max: config.limits.charge_batch_max,
            propose_delay: Duration::from_millis(hooks.propose_delay_ms),
        },
        providers,
        default_max_tokens: config.limits.default_max_tokens,
        stream_reserve_tokens: config.limits.stream_reserve_tokens,
        versions,
    })
    .await?;
    let http = crate::gateway::proxy::client::UpstreamClient::new(Duration::from_millis(
        config.limits.upstream_connect_timeout_ms,
    ))
    .context("cannot build the upstream HTTP client")?;
    let mut base = [0u8; 8];
    getrandom::fill(&mut base).map_err(|e| anyhow::anyhow!("os random source failed: {e}"))?;
    let breakers = Breakers::new(config.breaker.clone(), Arc::clone(&node.gossip));
    let streams = Arc::new(tokio::sync::Semaphore::new(
        config.limits.max_concurrent_streams,
    ));
    let app = App {
        config,
        replicator: Arc::clone(&node.replicator),
        gate: Arc::clone(&node.gate),
        http,
        breakers,
        gossip: Arc::clone(&node.gossip),
        admin_token_sha256,
        clock: Arc::clone(&node.clock),
        ready: AtomicBool::new(false),
        drain: Arc::clone(&node.drain),
        versions: Arc::clone(&node.versions),
        heard_cluster: AtomicBool::new(false),
        outbox: Arc::clone(&node.outbox),
        log: node.log.clone(),
        auth_failures: Default::default(),
        exports: node.exports.clone(),
        counters: Arc::default(),
        streams,
        guards: Arc::new(crate::gateway::guard::Guards::new(
            crate::gateway::guard::CACHE_ENTRIES,
        )),
        request_id_base: u64::from_le_bytes(base),
        request_seq: AtomicU64::new(0),
    };
    Ok(Started {
        app: Arc::new(app),
        node,
    })
}

/// The admin token's hash: from `TOLLGATE_ADMIN_TOKEN`, else a token generated once and
/// kept (0600) in the data dir so the operator can read it.
fn admin_token(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    if let Ok(token) = std::env::var("TOLLGATE_ADMIN_TOKEN") {
        if !token.trim().is_empty() {
            eprintln!("admin token: taken from TOLLGATE_ADMIN_TOKEN");
            return Ok(crate::gateway::auth::sha256(token.trim()));
        }
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let token = crate::gateway::auth::generate_secret()
                .map(|s| s.replacen(crate::gateway::auth::SECRET_PREFIX, "tga-", 1))
                .ok_or_else(|| anyhow::anyhow!("os random source failed"))?;
            write_private(&path, &token)?;
            token
        }
    };
    eprintln!(
        "admin token: read it with `cat {}` (or set TOLLGATE_ADMIN_TOKEN)",
        path.display()
    );
    Ok(crate::gateway::auth::sha256(&token))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// File in the data dir that one process at a time holds locked.
const LOCK_FILE: &str = "tollgate.lock";

/// Takes the data dir for this process (an exclusive `flock` on `tollgate.lock`, held until
/// the process exits), or says which process has it: two nodes on one data dir would
/// corrupt each other's log and outbox.
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        anyhow::bail!(
            "the data dir {} is in use by another tollgate process (pid {}); stop it, or give this one its own --data-dir",
            data_dir.display(),
            holder.trim()
        );
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    // Held until the process exits: the lock goes with the descriptor.
    std::mem::forget(file);
    Ok(())
}
