//! What the simulated hosts and the driver share: each node's "disk" and running Raft,
//! what clients were told, and the trace. One thread runs the whole simulation, so a
//! mutex here is never contended; it only satisfies `Send`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tollgate_node::governance::records::RequestLog;
use tollgate_node::governance::replicator::SharedState;
use tollgate_proto::{KeyId, Usd};
use tollgate_raft::mem_log::MemLog;
use tollgate_raft::snapshot::SnapshotSlot;
use tollgate_raft::typ::Raft;

/// A node's storage that outlives its process: the Raft log (which loses unflushed
/// writes at a crash), the snapshot slot, the charge outbox's directory (written
/// without fsync: a process crash keeps it, as the OS would) and the request log's.
#[derive(Clone)]
pub struct Disk {
    pub log: MemLog,
    pub snapshots: SnapshotSlot,
    pub outbox: PathBuf,
    pub logs: PathBuf,
}

impl Disk {
    /// Nothing was ever written: the node's first start.
    pub fn log_is_empty(&self) -> Result<bool, tollgate_raft::LogError> {
        use tollgate_raft::LogBackend;
        Ok(self.log.read_vote()?.is_none() && self.log.last_log_id()?.is_none())
    }
}

/// A running node as the driver and the invariants see it.
#[derive(Clone)]
pub struct Running {
    pub raft: Raft,
    pub state: SharedState,
    pub gossip: Arc<tollgate_node::cluster::gossip::Gossip>,
    /// This process's gossip generation.
    pub generation: u64,
    /// Its request log.
    pub log: Option<Arc<RequestLog>>,
}

/// One request a client sent, and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ending {
    Ok,
    /// 402: the budget is spent.
    BudgetRefused,
    /// 429: over the rate limit.
    RateRefused,
    /// 401: the key is revoked.
    KeyRefused,
    /// The provider failed (an outage), answered as such.
    ProviderFailed,
    /// No node answered it, after every retry.
    Failed,
}

#[derive(Default)]
pub struct Inner {
    pub disks: BTreeMap<u64, Disk>,
    pub running: BTreeMap<u64, Running>,
    /// Charges nodes answered 200 for (request id → key and cost), recorded just before
    /// the answer: each must be applied exactly once.
    pub acknowledged: BTreeMap<String, (KeyId, Usd)>,
    /// Which node answered each acknowledged request (its log must hold the record).
    pub acknowledged_on: BTreeMap<String, u64>,
    /// Per node: requests whose intent is in its outbox and not yet ended (request id →
    /// key and reservation).
    pub open_intents: BTreeMap<u64, BTreeMap<String, (KeyId, Usd)>>,
    /// Intents a crash left open (request id → node, key, reservation): the node's next
    /// start must charge and record each.
    pub orphans: BTreeMap<String, (u64, KeyId, Usd)>,
    /// Per key: acknowledged charges and their total cost in µ$.
    pub acknowledged_per_key: BTreeMap<KeyId, (u64, u64)>,
    /// (node, key): the node's applied state showed the key revoked (since its last start).
    pub revoked_seen: BTreeSet<(u64, KeyId)>,
    /// Nodes asked to drain, and those that finished draining.
    pub drain: BTreeSet<u64>,
    pub drained: BTreeSet<u64>,
    pub endings: BTreeMap<Ending, u64>,
    /// Requests served with a lower cap than they asked, the budget room left being
    /// less than their worst case.
    pub lowered: u64,
    /// Metered streams ended as a length stop: no budget could cover more.
    pub streams_cut: u64,
    /// Requests that failed, with why (for the trace).
    pub failures: Vec<String>,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    /// Provider faults, set by the driver.
    pub provider_out: bool,
    pub provider_extra: Duration,
    /// The setup is written and every node applied it: clients may start.
    pub ready: bool,
    /// Every fault is over and every node runs: the liveness phase.
    pub healed: bool,
    pub healed_at: Duration,
    pub run_dir: PathBuf,
    /// Directed links (from, to) the driver has cut now (turmoil holds the real cut).
    pub cut: BTreeSet<(u64, u64)>,
    /// When links were cut (from, until; until is `None` while still cut).
    pub cut_spans: Vec<(Duration, Option<Duration>)>,
    /// When nodes started again after a crash or a stop.
    pub restarts: Vec<Duration>,
    /// Requests admitted by the rate limit, per (limit, window start by the admitting
    /// node's clock), and each limit's maximum.
    pub rate_admitted: BTreeMap<(String, u64), u64>,
    pub rate_max: BTreeMap<String, u64>,
}

#[derive(Clone, Default)]
pub struct World(Arc<Mutex<Inner>>);

impl World {
    pub fn new(run_dir: PathBuf) -> World {
        let world = World::default();
        world.lock().run_dir = run_dir;
        world
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node's disk, made empty on first use.
    pub fn disk(&self, id: u64) -> Disk {
        let mut w = self.lock();
        let outbox = w.run_dir.join(format!("n{id}-outbox"));
        let logs = w.run_dir.join(format!("n{id}-logs"));
        w.disks
            .entry(id)
            .or_insert_with(|| Disk {
                log: MemLog::default(),
                snapshots: SnapshotSlot::in_memory(),
                outbox,
                logs,
            })
            .clone()
    }

    pub fn running(&self) -> BTreeMap<u64, Running> {
        self.lock().running.clone()
    }

    /// A line of the trace, stamped with simulated time.
    pub fn note(&self, at: Duration, line: impl Into<String>) {
        let line = line.into();
        self.lock()
            .trace
            .push(format!("{:>6} ms {line}", at.as_millis()));
    }

    pub fn violation(&self, at: Duration, what: impl Into<String>) {
        let what = what.into();
        let mut w = self.lock();
        w.trace
            .push(format!("{:>6} ms VIOLATION {what}", at.as_millis()));
        w.violations.push(what);
    }

    pub fn ended(&self, ending: Ending) {
        *self.lock().endings.entry(ending).or_default() += 1;
    }
}

/// Simulated time inside a host (or the driver's, passed in).
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}
