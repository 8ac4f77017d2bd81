//! The write seam: every change to governance state goes through a `Replicator`.
//! `LocalReplicator` applies to a durable local log on a single node;
//! `cluster::RaftReplicator` proposes through Raft. Nothing above this seam knows which.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tollgate_proto::{Command, Outcome};
use tollgate_raft::store::{SNAPSHOT_EVERY, SNAPSHOT_EVERY_BYTES};
use tollgate_raft::{GovState, LocalStore, StoreError};

/// The applied governance state, shared by every request. Readers hold the lock only to
/// copy out what they need.
#[derive(Clone, Default)]
pub struct SharedState(Arc<RwLock<GovState>>);

impl SharedState {
    pub fn new(state: GovState) -> Self {
        SharedState(Arc::new(RwLock::new(state)))
    }

    /// Shares a state another component applies to (the Raft state machine).
    pub fn from_shared(state: Arc<RwLock<GovState>>) -> Self {
        SharedState(state)
    }

    pub fn read(&self) -> RwLockReadGuard<'_, GovState> {
        // A panic while holding the lock cannot leave `GovState` half-applied in a way a
        // reader could misuse more than a crash would, so poisoning is ignored.
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, GovState> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicateError {
    #[error("storage failed")]
    Storage(#[from] StoreError),
    /// The cluster could not commit the command (no leader, no quorum, shutting down).
    #[error("cluster unavailable: {0}")]
    Cluster(String),
    /// The operation was refused: it does not apply (no cluster, not a member).
    #[error("{0}")]
    Refused(String),
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type ProposeFuture<'a> = BoxFuture<'a, Result<Outcome, ReplicateError>>;

/// One node's replication figures, as it reports them itself (also the answer to a
/// peer's status RPC, hence serializable).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// Whether the node has caught up with the cluster since it started.
    pub caught_up: bool,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    /// How old this node's view may be, in milliseconds: on the leader, since a quorum
    /// last acknowledged it; elsewhere, since the leader was last heard from.
    pub staleness_ms: u64,
    /// Bytes on disk of the replicated log and snapshots.
    pub storage_bytes: u64,
    /// Bytes on disk of the charge outbox.
    pub outbox_bytes: u64,
    /// The peer protocol versions the node speaks.
    pub protocol: tollgate_proto::peer::ProtocolRange,
}

impl Default for NodeStatus {
    fn default() -> Self {
        NodeStatus {
            node_id: 0,
            role: String::new(),
            caught_up: false,
            term: 0,
            leader: None,
            last_log_index: 0,
            committed_index: 0,
            applied_index: 0,
            snapshot_index: 0,
            staleness_ms: 0,
            storage_bytes: 0,
            outbox_bytes: 0,
            protocol: tollgate_proto::peer::ProtocolRange::BUILD,
        }
    }
}

/// A member as every node's cluster view lists it, with its own report when it answered.
#[derive(Debug, Clone)]
pub struct MemberReport {
    pub id: u64,
    pub raft_addr: String,
    pub http_addr: String,
    pub voter: bool,
    pub status: Result<NodeStatus, String>,
}

/// Who is in the cluster and who leads, for `/api/v1/cluster`.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// `(id, raft address, http address)` of every member.
    pub members: Vec<(u64, String, String)>,
    /// The ids of the voters among them (the rest are learners).
    pub voters: Vec<u64>,
}

/// A member's id and its answer's body, or why it gave none.
pub type MemberAnswer = (u64, Result<Vec<u8>, String>);

pub trait Replicator: Send + Sync + 'static {
    /// Makes `command` durable, applies it and returns its outcome.
    fn propose(&self, command: Command) -> ProposeFuture<'_>;
    /// The applied state.
    fn state(&self) -> &SharedState;
    /// This node's own figures.
    fn status(&self) -> NodeStatus;
    /// `NodeStatus::staleness_ms` alone, cheap enough for every request: how long since
    /// this node last heard from the cluster (a leader: from a quorum).
    fn staleness_ms(&self) -> u64;
    fn cluster_view(&self) -> ClusterView;
    /// Every member's figures, asked of each (a member that does not answer in time is
    /// reported with the error).
    fn member_reports(&self) -> BoxFuture<'_, Vec<MemberReport>>;
    /// Whether this replica's state is current enough to serve from: it has caught up
    /// with the cluster once since it started. It stays so when the quorum is lost (the
    /// node serves on its last applied state; `staleness_ms` says how old that may be).
    fn caught_up(&self) -> bool;
    /// Returns once the applied state includes every write committed before the call
    /// (a linearizable read may follow).
    fn linearize(&self) -> BoxFuture<'_, Result<(), ReplicateError>>;
    /// Removes a voter from the cluster; returns the voters left.
    fn remove_node(&self, id: u64) -> BoxFuture<'_, Result<Vec<u64>, ReplicateError>>;
    /// Asks every other member a question of `kind` (each answers within `deadline`):
    /// each member's id and its answer's body, or why there is none. Alone: nobody.
    fn ask_others(
        &self,
        kind: u16,
        body: Vec<u8>,
        deadline: std::time::Duration,
    ) -> BoxFuture<'_, Vec<MemberAnswer>> {
        let _ = (kind, body, deadline);
        Box::pin(std::future::ready(Vec::new()))
    }
    /// Asks member `id` (another node; this node drains itself) to start draining.
    fn drain_member(&self, id: u64) -> BoxFuture<'_, Result<(), ReplicateError>> {
        Box::pin(async move {
            Err(ReplicateError::Refused(format!(
                "this node runs alone: there is no node {id} to drain"
            )))
        })
    }
}

/// Bytes under `dir` (0 when it does not exist), for storage figures.
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A single node: append to the local log, apply, acknowledge after the flush.
pub struct LocalReplicator {
    state: SharedState,
    store: Arc<LocalStore>,
    last_index: AtomicU64,
    snapshot_index: Arc<AtomicU64>,
    /// Bytes of the commands appended since the last snapshot began.
    log_bytes: AtomicU64,
    snapshotting: Arc<AtomicBool>,
    outbox_dir: Option<std::path::PathBuf>,
    protocol: tollgate_proto::peer::ProtocolRange,
    /// The last index known durable; its lock makes flushes one at a time.
    flushed: tokio::sync::Mutex<u64>,
}

impl LocalReplicator {
    /// Also reports the size of the charge outbox in `dir` in its status.
    pub fn with_outbox_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.outbox_dir = Some(dir);
        self
    }

    /// The protocol versions this node reports speaking (`ProtocolRange::BUILD` if unset).
    pub fn with_protocol(mut self, protocol: tollgate_proto::peer::ProtocolRange) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        let (store, recovered) = LocalStore::open(dir)?;
        tracing::info!(
            applied_index = recovered.last_index,
            snapshot_index = recovered.snapshot_index,
            "governance state recovered"
        );
        Ok(LocalReplicator {
            state: SharedState::new(recovered.state),
            store: Arc::new(store),
            last_index: AtomicU64::new(recovered.last_index),
            snapshot_index: Arc::new(AtomicU64::new(recovered.snapshot_index)),
            log_bytes: AtomicU64::new(0),
            snapshotting: Arc::new(AtomicBool::new(false)),
            outbox_dir: None,
            protocol: tollgate_proto::peer::ProtocolRange::BUILD,
            flushed: tokio::sync::Mutex::new(recovered.last_index),
        })
    }

    async fn propose_inner(&self, command: Command) -> Result<Outcome, ReplicateError> {
        let (index, outcome) = {
            let mut state = self.state.write();
            let index = self.last_index.load(Ordering::Acquire) + 1;
            // Log first: a command that could not be logged is not applied.
            let bytes = self.store.append(index, &command)?;
            self.log_bytes.fetch_add(bytes, Ordering::Relaxed);
            let outcome = state.apply(&command);
            self.last_index.store(index, Ordering::Release);
            (index, outcome)
        };
        self.flush_through(index).await?;
        if index - self.snapshot_index.load(Ordering::Acquire) >= SNAPSHOT_EVERY
            || self.log_bytes.load(Ordering::Relaxed) >= SNAPSHOT_EVERY_BYTES
        {
            self.snapshot_in_background(index);
        }
        Ok(outcome)
    }

    /// Returns once the log is durable through `index`. Group commit: one flush at a
    /// time, off the async threads, each covering everything appended before it began.
    async fn flush_through(&self, index: u64) -> Result<(), ReplicateError> {
        let mut flushed = self.flushed.lock().await;
        if *flushed >= index {
            return Ok(());
        }
        let through = self.last_index.load(Ordering::Acquire);
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| ReplicateError::Cluster(format!("flush task failed: {e}")))??;
        *flushed = through;
        Ok(())
    }

    fn snapshot_in_background(&self, index: u64) {
        if self.snapshotting.swap(true, Ordering::AcqRel) {
            return;
        }
        self.log_bytes.store(0, Ordering::Relaxed);
        // Clone under the read lock, encode and write off the async threads.
        let (state, index) = {
            let guard = self.state.read();
            (
                guard.clone(),
                self.last_index.load(Ordering::Acquire).max(index),
            )
        };
        let store = Arc::clone(&self.store);
        let flag = Arc::clone(&self.snapshotting);
        let snapshot_index = Arc::clone(&self.snapshot_index);
        tokio::task::spawn_blocking(move || {
            match store.snapshot(index, &state) {
                Ok(()) => {
                    snapshot_index.store(index, Ordering::Release);
                    tracing::info!(index, "snapshot written, log purged");
                }
                Err(e) => tracing::error!(error = %e, "snapshot failed"),
            }
            flag.store(false, Ordering::Release);
        });
    }
}

impl Replicator for LocalReplicator {
    fn propose(&self, command: Command) -> ProposeFuture<'_> {
        Box::pin(self.propose_inner(command))
    }

    fn state(&self) -> &SharedState {
        &self.state
    }

    fn status(&self) -> NodeStatus {
        let applied = self.last_index.load(Ordering::Acquire);
        NodeStatus {
            node_id: 1,
            role: "leader".into(),
            caught_up: true,
            term: 0,
            leader: Some(1),
            last_log_index: applied,
            committed_index: applied,
            applied_index: applied,
            snapshot_index: self.snapshot_index.load(Ordering::Acquire),
            staleness_ms: 0,
            storage_bytes: self.store.size_on_disk(),
            outbox_bytes: self.outbox_dir.as_deref().map_or(0, dir_bytes),
            protocol: self.protocol,
        }
    }

    fn staleness_ms(&self) -> u64 {
        0
    }

    fn caught_up(&self) -> bool {
        true
    }

    fn cluster_view(&self) -> ClusterView {
        ClusterView {
            node_id: 1,
            leader: Some(1),
            term: 0,
            members: vec![(1, String::new(), String::new())],
            voters: vec![1],
        }
    }

    fn member_reports(&self) -> BoxFuture<'_, Vec<MemberReport>> {
        let status = self.status();
        Box::pin(async move {
            vec![MemberReport {
                id: 1,
                raft_addr: String::new(),
                http_addr: String::new(),
                voter: true,
                status: Ok(status),
            }]
        })
    }

    fn linearize(&self) -> BoxFuture<'_, Result<(), ReplicateError>> {
        // Every write is applied before its proposal returns.
        Box::pin(async { Ok(()) })
    }

    fn remove_node(&self, _id: u64) -> BoxFuture<'_, Result<Vec<u64>, ReplicateError>> {
        Box::pin(async {
            Err(ReplicateError::Refused(
                "this node runs alone (no --node-id/--raft-addr): there is no cluster to remove a node from".into(),
            ))
        })
    }
}
