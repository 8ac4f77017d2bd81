//! The two ways to get a node's Raft storage: durable (one sled database holding the log
//! and the current snapshot) or in memory (the simulator and unit tests).

use crate::log_backend::LogError;
use crate::log_store::LogStore;
use crate::mem_log::MemLog;
use crate::sled_log::{open_db, SledLog};
use crate::snapshot::{SnapshotError, SnapshotSlot};
use crate::state_machine::StateMachineStore;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the raft database")]
    Db(#[from] sled::Error),
    #[error("cannot open the raft log")]
    Log(#[from] LogError),
    #[error("cannot start the raft log's flush thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot load the raft snapshot")]
    Snapshot(#[from] SnapshotError),
}

/// Opens (or creates) durable storage in `dir`: the log as it was last flushed and the
/// state machine resumed from the stored snapshot. openraft re-applies the committed log
/// after the snapshot when the Raft starts.
pub fn open_durable(dir: &Path) -> Result<(LogStore<SledLog>, StateMachineStore), OpenError> {
    let db = open_db(dir)?;
    let log = LogStore::with_flush_thread(SledLog::open(&db)?).map_err(OpenError::Thread)?;
    let state_machine = StateMachineStore::resume(SnapshotSlot::durable(&db)?)?;
    Ok((log, state_machine))
}

/// Storage in memory over a simulated node's "disk": its `MemLog` and `SnapshotSlot`.
/// Pass clones of the same two to restart the node: the log and snapshot survive, the
/// state machine resumes from the snapshot.
pub fn open_in_memory(
    log: MemLog,
    snapshots: SnapshotSlot,
) -> Result<(LogStore<MemLog>, StateMachineStore), OpenError> {
    Ok((LogStore::new(log), StateMachineStore::resume(snapshots)?))
}
