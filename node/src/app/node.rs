//! One node, assembled once: `Node::build` makes the replicated state (alone on a local
//! log, or a Raft member over any transport), the gossip, the escrow leases, the rate
//! limiter, the charge pipeline and the request steps (`Gate`) from `Seams`, and owns
//! every background task it starts; `Node::stop` ends them in the order a drain needs.
//! `tollgate serve` (alone or clustered) and the simulator both build their nodes here,
//! so the simulator runs the node that serves.

use crate::clock::Clock;
use crate::cluster::drain::Drain;
use crate::cluster::gossip::Gossip;
use crate::cluster::start::{self as member, MemberSeams};
use crate::cluster::transport::PeerTransport;
use crate::cluster::version::Versions;
use crate::gateway::billing::Charger;
use crate::gateway::estimate::OutputEstimates;
use crate::gateway::gate::Gate;
use crate::gateway::providers::Providers;
use crate::gateway::routing::PatternCache;
use crate::governance::admission::{Admission, Mode};
use crate::governance::charge::{self, PipelineConfig};
use crate::governance::charge::{ChargeSender, PendingCharge};
use crate::governance::limits::RateLimiter;
use crate::governance::outbox::{Outbox, Position};
use crate::governance::records::export;
use crate::governance::records::store::LogStore;
use crate::governance::records::writer::{self, LogWriter};
use crate::governance::records::RequestLog;
use crate::governance::replicator::{LocalReplicator, Replicator};
use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tollgate_proto::audit::Anchor;
use tollgate_proto::{Command, Outcome};
use tollgate_raft::typ::{NodeId, Raft};

/// Longest wait for queued charges to be applied at the stop (storage that cannot take
/// a write for this long will not take it by waiting longer).
const CHARGE_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a node anchors its request log's chain head through Raft (when it moved).
const ANCHOR_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait at the stop for the request log to take what the outbox holds.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping node tries to give its escrow leases back.
const LEASE_RETURN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a stopping node that still leads waits for its hand-over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a node compiles the allowlist patterns other nodes' admin writes brought.
const PATTERN_WARM_INTERVAL: Duration = Duration::from_secs(2);

/// Where the node's state is replicated.
pub enum Replication<T> {
    /// Alone, on a local log in `dir` (`tollgate serve` without `--node-id`).
    Alone { dir: PathBuf },
    /// A member of a Raft cluster.
    Member(Box<MemberSeams<T>>),
}

/// The outbox of charges not yet applied, in `dir`.
pub enum OutboxSeam {
    Durable(PathBuf),
    /// On a simulated disk: a crash loses the writes not yet synced.
    Simulated(PathBuf),
}

/// The request log: its store in `dir`, kept as `config` says.
pub struct LogSeam {
    pub dir: PathBuf,
    pub config: crate::config::LogsConfig,
}

/// What a node is made of: the seams where `tollgate serve` and the simulator differ.
pub struct Seams<T> {
    pub node_id: NodeId,
    pub replication: Replication<T>,
    pub outbox: OutboxSeam,
    /// None: no request log (`[logs] content = "off"`, the simulator).
    pub logs: Option<LogSeam>,
    pub clock: Arc<dyn Clock>,
    /// Tasks the caller started that live as long as the node serves (a test clock's
    /// follower); the node adds its own.
    pub serving: JoinSet<()>,
    /// Escrow leases, or the naive check-then-charge the tests compare them against.
    pub mode: Mode,
    pub pipeline: PipelineConfig,
    pub providers: Providers,
    /// The completion size reserved for when a request names no `max_tokens`.
    pub default_max_tokens: u64,
    /// The least output a metered stream reserves at first.
    pub stream_reserve_tokens: u64,
    pub versions: Arc<Versions>,
}

/// A built node.
pub struct Node {
    pub gate: Arc<Gate>,
    pub replicator: Arc<dyn Replicator>,
    pub gossip: Arc<Gossip>,
    /// Started by a signal, `admin drain`, a peer, or an outdated protocol.
    pub drain: Arc<Drain>,
    pub versions: Arc<Versions>,
    pub outbox: Arc<Outbox>,
    pub log: Option<Arc<RequestLog>>,
    /// The request log's `[[logs.exports]]` sinks, if any.
    pub exports: Option<Arc<export::Exports>>,
    pub clock: Arc<dyn Clock>,
    /// A member's Raft (none alone).
    pub raft: Option<Raft>,
    /// Lease maintenance and trust, the limiter's publisher, the charge write stage and
    /// the caller's: ended once the charges are applied.
    serving: JoinSet<()>,
    /// Formation, catching up, lease reclaim, split votes, protocol raise and check,
    /// hand-over: ended last, after the hand-over.
    membership: JoinSet<()>,
    charges_task: JoinHandle<()>,
    charges_close: tokio::sync::oneshot::Sender<()>,
    log_writer: Option<LogWriter>,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Every queued charge was applied.
    pub charges_applied: bool,
    /// The escrow leases went back to the cluster.
    pub leases_returned: bool,
    /// The node still led its cluster when it stopped (its hand-over did not happen).
    pub still_leading: bool,
}

impl Node {
    pub async fn build<T: PeerTransport>(seams: Seams<T>) -> anyhow::Result<Node> {
        let Seams {
            node_id,
            replication,
            outbox,
            logs,
            clock,
            mut serving,
            mode,
            pipeline,
            providers,
            default_max_tokens,
            stream_reserve_tokens,
            versions,
        } = seams;
        let drain = Drain::new();
        let mut membership = JoinSet::new();
        let outbox_dir = match &outbox {
            OutboxSeam::Durable(dir) | OutboxSeam::Simulated(dir) => dir.clone(),
        };
        let mut export_configs = Vec::new();
        let log = match logs {
            Some(seam) => {
                let mut store = LogStore::open(&seam.dir, node_id).with_context(|| {
                    format!("cannot open the request log in {}", seam.dir.display())
                })?;
                if !seam.config.exports.is_empty() {
                    store = store
                        .with_export_queue()
                        .context("cannot open the request log's export queue")?;
                    export_configs = seam.config.exports.clone();
                }
                Some(RequestLog::new(store, &seam.config))
            }
            None => None,
        };
        let (replicator, gossip, raft): (Arc<dyn Replicator>, _, _) = match replication {
            Replication::Alone { dir } => {
                let local: Arc<dyn Replicator> = Arc::new(
                    LocalReplicator::open(&dir)
                        .context("cannot open the governance store")?
                        .with_outbox_dir(outbox_dir)
                        .with_protocol(versions.local()),
                );
                // Alone, every member speaks what this node speaks: its log takes the
                // newest entries (the audit trail) at once.
                let speaks = versions.local().max;
                if local.state().read().protocol_version() < speaks {
                    local
                        .propose(Command::SetProtocolVersion { version: speaks })
                        .await
                        .context("cannot record the protocol version")?;
                }
                (local, Gossip::alone(node_id), None)
            }
            Replication::Member(seams) => {
                // Other members' log queries are answered from this node's store.
                seams.router.add(
                    &crate::governance::records::peer::KINDS,
                    Arc::new(crate::governance::records::peer::LogsRoute { log: log.clone() }),
                );
                let m = member::member(*seams, &versions, &drain, &mut membership).await?;
                (m.replicator, m.gossip, Some(m.raft))
            }
        };
        let logged = match &log {
            Some(log) => Some(
                log.store
                    .logged_mark()
                    .context("cannot read the request log's position")?
                    .and_then(|m| Position::decode(&m)),
            ),
            None => None,
        };
        let outbox = Arc::new(
            match (outbox, logged) {
                (OutboxSeam::Durable(dir), Some(logged)) => Outbox::open_logged(&dir, logged),
                (OutboxSeam::Durable(dir), None) => Outbox::open(&dir),
                (OutboxSeam::Simulated(dir), logged) => Outbox::open_simulated(&dir, logged),
            }
            .context("cannot open the charge outbox")?,
        );
        let admission = Admission::new(node_id, mode, Arc::clone(&replicator), Arc::clone(&clock));
        let pipeline = charge::spawn(
            Arc::clone(&replicator),
            Arc::clone(&outbox),
            Arc::clone(&admission),
            pipeline,
            &mut serving,
        );
        reconcile_orphans(&outbox, &replicator, &admission, &pipeline.sender);
        let log_writer = log.as_ref().map(|log| {
            writer::spawn(
                Arc::clone(log),
                Arc::clone(&outbox),
                Arc::clone(&replicator),
                Arc::clone(&clock),
            )
        });
        let exports = match (&log, export_configs.is_empty()) {
            (Some(log), false) => Some(export::spawn(log, &export_configs, &mut serving)?),
            _ => None,
        };
        if let Some(log) = &log {
            let (log, replicator, clock) =
                (Arc::clone(log), Arc::clone(&replicator), Arc::clone(&clock));
            serving.spawn(async move {
                let mut anchored = 0;
                loop {
                    tokio::time::sleep(ANCHOR_INTERVAL).await;
                    anchored = anchor(&log, &replicator, &*clock, anchored).await;
                }
            });
        }
        admission.spawn_maintenance(&mut serving);
        // Limits are split among the live nodes, and never fewer than the voters.
        let voters = Arc::clone(&replicator);
        let limiter = RateLimiter::new(
            Arc::clone(&gossip),
            Arc::clone(&clock),
            Box::new(move || voters.cluster_view().voters.len()),
        );
        limiter.spawn_publisher(&mut serving);
        let charger = Arc::new(Charger {
            charges: pipeline.sender,
            admission: Arc::clone(&admission),
            outputs: OutputEstimates::new(stream_reserve_tokens),
            limiter: Arc::clone(&limiter),
            clock: Arc::clone(&clock),
            sent: AtomicU64::new(0),
        });
        let gate = Arc::new(Gate {
            replicator: Arc::clone(&replicator),
            providers,
            patterns: PatternCache::default(),
            limiter,
            admission,
            charger,
            clock: Arc::clone(&clock),
            default_max_tokens,
        });
        // Allowlist patterns written through other nodes are compiled here, not by the
        // first request that meets them.
        let warm = Arc::clone(&gate);
        serving.spawn(async move {
            loop {
                tokio::time::sleep(PATTERN_WARM_INTERVAL).await;
                let missing = warm.patterns.missing(&warm.replicator.state().read());
                warm.patterns.warm(missing);
            }
        });
        Ok(Node {
            gate,
            replicator,
            gossip,
            drain,
            versions,
            outbox,
            log,
            exports,
            clock,
            raft,
            serving,
            membership,
            charges_task: pipeline.task,
            charges_close: pipeline.close,
            log_writer,
        })
    }

    /// The end of a drain, once no request is taken any more (`requests_ended`: every
    /// request ended, so every charge is queued): applies every queued charge, stops the
    /// serving tasks, gives the leases back (only if nothing can still be charged
    /// against them), lets a node that still leads hand over, stops gossip and the
    /// membership tasks.
    pub async fn stop(self, requests_ended: bool) -> Stopped {
        let Node {
            gate,
            replicator,
            gossip,
            mut serving,
            mut membership,
            charges_task,
            charges_close,
            log_writer,
            log,
            clock,
            ..
        } = self;
        let _ = charges_close.send(());
        let charges_applied = match tokio::time::timeout(CHARGE_FLUSH_TIMEOUT, charges_task).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "charge pipeline ended abnormally");
                false
            }
            Err(_) => {
                tracing::error!("charge pipeline did not drain in time; its charges stay in the outbox for the next start");
                false
            }
        };
        // Every request has ended and written its record: the log takes them all, and
        // its head is anchored.
        if let Some(writer) = log_writer {
            let _ = writer.close.send(());
            if tokio::time::timeout(LOG_FLUSH_TIMEOUT, writer.task)
                .await
                .is_err()
            {
                tracing::warn!("request log did not catch up in time; the outbox keeps its records for the next start");
            }
        }
        if let Some(log) = &log {
            let anchored = anchor(log, &replicator, &*clock, 0);
            if tokio::time::timeout(LOG_FLUSH_TIMEOUT, anchored)
                .await
                .is_err()
            {
                tracing::warn!("request log head not anchored at the stop");
            }
        }
        serving.shutdown().await;
        let mut leases_returned = false;
        if charges_applied && requests_ended {
            // Every charge is applied and nothing is in flight: the leases go back to
            // the cluster for the other nodes. (Not otherwise: charges still to come
            // would consume leases handed to others.)
            match tokio::time::timeout(LEASE_RETURN_TIMEOUT, gate.admission.release_all()).await {
                Ok(Ok(())) => leases_returned = true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "leases not given back; the leader reclaims them")
                }
                Err(_) => tracing::warn!("giving leases back timed out; the leader reclaims them"),
            }
        }
        // A leader that could not hand over yet (say it was elected during the drain)
        // gets a moment more: leaving as leader costs the cluster an election timeout.
        let leads = || {
            let view = replicator.cluster_view();
            gossip.clustered() && view.leader == Some(view.node_id)
        };
        let deadline = tokio::time::Instant::now() + HANDOVER_TIMEOUT;
        while leads() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let still_leading = leads();
        gossip.shutdown().await;
        membership.shutdown().await;
        Stopped {
            charges_applied,
            leases_returned,
            still_leading,
        }
    }
}

/// Requests this node stopped during, while a provider had them (intents without their
/// end, from the outbox): each is charged at its reservation and recorded with outcome
/// `unknown (node stopped)`, so spend is never under-counted and no request that reached
/// a provider goes unrecorded. Queued after the outbox's replay: if the request was
/// charged after all, that charge is applied first and this one is a duplicate by
/// request id.
fn reconcile_orphans(
    outbox: &Outbox,
    replicator: &Arc<dyn Replicator>,
    admission: &Arc<Admission>,
    charges: &ChargeSender,
) {
    for orphan in outbox.take_orphans() {
        let intent = orphan.intent;
        let chain = replicator
            .state()
            .read()
            .budget_chain(&intent.key_id, Some(&intent.provider_config_id));
        let hold = admission.hold_replayed(&chain, intent.reserved);
        let mut record = intent.record;
        record.status = 0;
        record.outcome = Some(tollgate_proto::records::OUTCOME_NODE_STOPPED.to_owned());
        record.cost = intent.reserved;
        tracing::warn!(request_id = %record.request_id, cost_micros = intent.reserved.0, "request in flight when this node stopped; charged at its reservation");
        let charge = tollgate_proto::Charge {
            request_id: record.request_id.clone(),
            key_id: intent.key_id,
            provider_config_id: Some(intent.provider_config_id),
            model: intent.model,
            usage: tollgate_proto::Usage::default(),
            cost: intent.reserved,
            at_ms: record.time_ms,
        };
        charges.send_done(PendingCharge { charge, hold }, record, vec![orphan.segment]);
    }
}

/// Proposes the request log's chain head as an anchor if it is past `anchored` and the
/// cluster records anchors (protocol 3); gives the sequence anchored since.
async fn anchor(
    log: &RequestLog,
    replicator: &Arc<dyn Replicator>,
    clock: &dyn Clock,
    anchored: u64,
) -> u64 {
    let head = log.store.chain_head();
    let command = Command::AnchorChain(Anchor {
        node: log.store.node(),
        seq: head.seq,
        hash: head.hash,
        at_ms: clock.now_ms(),
    });
    if head.seq <= anchored
        || command.since_version() > replicator.state().read().protocol_version()
    {
        return anchored;
    }
    match replicator.propose(command).await {
        Ok(Outcome::Done) => head.seq,
        Ok(other) => {
            tracing::error!(seq = head.seq, outcome = ?other, "request log head refused as an anchor");
            anchored
        }
        Err(e) => {
            tracing::debug!(error = %e, "request log head not anchored yet");
            anchored
        }
    }
}
