//! The write seam: every change to governance state goes through a `Replicator`.
//! `LocalReplicator` applies to a durable local log; the Raft replicator (next issue)
//! implements the same trait, so nothing above this seam changes when Raft arrives.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tollgate_proto::{Command, Outcome};
use tollgate_raft::store::SNAPSHOT_EVERY;
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
}

pub type ProposeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Outcome, ReplicateError>> + Send + 'a>>;

/// Where replication stands, for `/api/v1/cluster`.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaStatus {
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub storage_bytes: u64,
}

/// Who is in the cluster and who leads, for `/api/v1/cluster`.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    /// `(id, raft address, http address)` of every member.
    pub members: Vec<(u64, String, String)>,
}

pub trait Replicator: Send + Sync + 'static {
    /// Makes `command` durable, applies it and returns its outcome.
    fn propose(&self, command: Command) -> ProposeFuture<'_>;
    /// The applied state.
    fn state(&self) -> &SharedState;
    fn status(&self) -> ReplicaStatus;
    fn cluster_view(&self) -> ClusterView;
    /// Whether this replica's state is current enough to serve from.
    fn caught_up(&self) -> bool;
}

/// A single node: append to the local log, apply, acknowledge after the flush.
pub struct LocalReplicator {
    state: SharedState,
    store: Arc<LocalStore>,
    last_index: AtomicU64,
    snapshot_index: Arc<AtomicU64>,
    snapshotting: Arc<AtomicBool>,
}

impl LocalReplicator {
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
            snapshotting: Arc::new(AtomicBool::new(false)),
        })
    }

    async fn propose_inner(&self, command: Command) -> Result<Outcome, ReplicateError> {
        let (index, outcome) = {
            let mut state = self.state.write();
            let index = self.last_index.load(Ordering::Acquire) + 1;
            // Log first: a command that could not be logged is not applied.
            self.store.append(index, &command)?;
            let outcome = state.apply(&command);
            self.last_index.store(index, Ordering::Release);
            (index, outcome)
        };
        self.store.flush().await?;
        if index - self.snapshot_index.load(Ordering::Acquire) >= SNAPSHOT_EVERY {
            self.snapshot_in_background(index);
        }
        Ok(outcome)
    }

    fn snapshot_in_background(&self, index: u64) {
        if self.snapshotting.swap(true, Ordering::AcqRel) {
            return;
        }
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

    fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            applied_index: self.last_index.load(Ordering::Acquire),
            snapshot_index: self.snapshot_index.load(Ordering::Acquire),
            storage_bytes: self.store.size_on_disk(),
        }
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
        }
    }
}
