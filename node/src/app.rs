//! The node's shared state (`App`) and its start-up and shutdown sequence.

use crate::clock::Clock;
use crate::cluster::gossip::Gossip;
use crate::cluster::start::ClusterNode;
use crate::config::Config;
use crate::gateway::breaker::Breakers;
use crate::gateway::providers::Providers;
use crate::gateway::routing::PatternCache;
use crate::governance::admission::{self, Admission};
use crate::gateway::gate::Gate;
use crate::governance::charge;
use crate::governance::limits::RateLimiter;
use crate::governance::replicator::{LocalReplicator, Replicator, SharedState};
use anyhow::Context;
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
    pub http: reqwest::Client,
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
    pub counters: crate::gateway::counters::Counters,
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

    /// A new request id: unique per node start (random base) and per request (counter).
    pub fn next_request_id(&self) -> (String, u64) {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        (format!("req_{:016x}{:08x}", self.request_id_base, seq), seq)
    }
}

/// A started node: the app and the task that drains charges at shutdown.
pub struct Started {
    pub app: Arc<App>,
    pub charge_task: tokio::task::JoinHandle<()>,
    pub charge_close: tokio::sync::oneshot::Sender<()>,
    /// The escrow lease maintenance task (aborted at shutdown).
    pub maintenance: tokio::task::JoinHandle<()>,
    /// Other background tasks of the node, ended once its charges are applied.
    pub tasks: tokio::task::JoinSet<()>,
    /// The cluster's tasks (`ClusterNode::tasks`; none alone), ended last, after the
    /// hand-over.
    pub cluster_tasks: tokio::task::JoinSet<()>,
}

/// Opens the data dir, recovers state and builds the app for a node speaking
/// `versions`. `cluster`: Raft and gossip
/// already started for this node; without them the node runs alone on a local log.
pub fn start(
    config: Config,
    cluster: Option<ClusterNode>,
    versions: Arc<crate::cluster::version::Versions>,
) -> anyhow::Result<Started> {
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let admin_token_sha256 = admin_token(&data_dir)?;
    let providers = Providers::from_specs(&config.providers)?;
    let (replicator, gossip, drain, cluster_tasks): (
        Arc<dyn Replicator>,
        Option<Arc<Gossip>>,
        _,
        _,
    ) = match cluster {
        Some(node) => (node.replicator, Some(node.gossip), node.drain, node.tasks),
        None => (
            Arc::new(
                LocalReplicator::open(&data_dir.join("gov"))
                    .context("cannot open the governance store")?
                    .with_outbox_dir(data_dir.join("outbox"))
                    .with_protocol(versions.local()),
            ),
            None,
            crate::cluster::drain::Drain::new(),
            tokio::task::JoinSet::new(),
        ),
    };
    let gossip = gossip.unwrap_or_else(|| Gossip::alone(replicator.cluster_view().node_id));
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(
            config.limits.upstream_connect_timeout_ms,
        ))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .no_proxy()
        .build()
        .context("cannot build the upstream HTTP client")?;
    let outbox = Arc::new(
        crate::governance::outbox::Outbox::open(&data_dir.join("outbox"))
            .context("cannot open the charge outbox")?,
    );
    let hooks = crate::hooks::env::Hooks::from_env();
    let mut tasks = tokio::task::JoinSet::new();
    let clock: Arc<dyn Clock> = hooks.clock(&mut tasks);
    let mode = if hooks.naive_budgets {
        admission::Mode::Naive
    } else {
        admission::Mode::Leases
    };
    let admission = Admission::new(
        replicator.cluster_view().node_id,
        mode,
        Arc::clone(&replicator),
        Arc::clone(&clock),
    );
    let pipeline_config = charge::PipelineConfig {
        batch_max: config.limits.charge_batch_max,
        propose_delay: Duration::from_millis(hooks.propose_delay_ms),
    };
    let charge::ChargePipeline {
        sender: charges,
        task: charge_task,
        close: charge_close,
    } = charge::spawn(
        Arc::clone(&replicator),
        Arc::clone(&outbox),
        Arc::clone(&admission),
        pipeline_config,
    );
    let maintenance = admission.spawn_maintenance();
    let mut base = [0u8; 8];
    getrandom::fill(&mut base).map_err(|e| anyhow::anyhow!("os random source failed: {e}"))?;
    let breakers = Breakers::new(config.breaker.clone(), Arc::clone(&gossip));
    let voters = Arc::clone(&replicator);
    let limiter = RateLimiter::new(
        Arc::clone(&gossip),
        Arc::clone(&clock),
        Box::new(move || voters.cluster_view().voters.len()),
    );
    let gate = Arc::new(Gate {
        replicator: Arc::clone(&replicator),
        providers,
        patterns: PatternCache::default(),
        limiter,
        admission,
        charges,
        clock: Arc::clone(&clock),
        default_max_tokens: config.limits.default_max_tokens,
        charged: AtomicU64::new(0),
    });
    let app = App {
        config,
        replicator,
        gate,
        http,
        breakers,
        gossip,
        admin_token_sha256,
        clock,
        ready: AtomicBool::new(false),
        drain,
        versions,
        heard_cluster: AtomicBool::new(false),
        outbox,
        counters: crate::gateway::counters::Counters::default(),
        request_id_base: u64::from_le_bytes(base),
        request_seq: AtomicU64::new(0),
    };
    Ok(Started {
        app: Arc::new(app),
        charge_task,
        charge_close,
        maintenance,
        tasks,
        cluster_tasks,
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
