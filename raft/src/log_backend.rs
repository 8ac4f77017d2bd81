//! `LogBackend`: the small synchronous seam between the Raft log (`LogStore`) and where
//! its bytes live — sled on a node (`SledLog`), a map in memory in the simulator and unit
//! tests (`MemLog`). The model test drives both through this trait and compares them.

use crate::codec::CodecError;
use crate::typ::{Entry, LogId, Vote};
use std::ops::Range;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log storage i/o failed")]
    Sled(#[from] sled::Error),
    #[error("stored log data is corrupt")]
    Codec(#[from] CodecError),
    #[error("log key {0:?} is not a big-endian u64")]
    BadKey(Vec<u8>),
    #[error("a thread panicked while holding the in-memory log")]
    Poisoned,
}

/// Raft's persistent log state: entries by index, the vote, the committed log id and the
/// last purged log id.
///
/// Writes become durable at the next `flush`; reads see every write made so far. An
/// implementation must keep the log free of holes: entries are always a contiguous run of
/// indexes (the caller appends in order and truncates or purges only at the ends).
pub trait LogBackend: Clone + Send + Sync + 'static {
    /// Stores `entries` under their log indexes, replacing any entry already there; gives
    /// the bytes they take encoded.
    fn append(&self, entries: &[Entry]) -> Result<u64, LogError>;
    /// Removes every entry with index `>= index`.
    fn truncate_from(&self, index: u64) -> Result<(), LogError>;
    /// Removes every entry with index `<= index`.
    fn purge_upto(&self, index: u64) -> Result<(), LogError>;
    /// The entries whose index is in `range`, in order.
    fn read_range(&self, range: Range<u64>) -> Result<Vec<Entry>, LogError>;
    /// The log id of the last entry present, if any.
    fn last_log_id(&self) -> Result<Option<LogId>, LogError>;

    fn save_vote(&self, vote: &Vote) -> Result<(), LogError>;
    fn read_vote(&self) -> Result<Option<Vote>, LogError>;
    fn save_committed(&self, committed: Option<&LogId>) -> Result<(), LogError>;
    fn read_committed(&self) -> Result<Option<LogId>, LogError>;
    fn save_last_purged(&self, log_id: &LogId) -> Result<(), LogError>;
    fn read_last_purged(&self) -> Result<Option<LogId>, LogError>;

    /// Returns once every write made before the call is durable.
    fn flush(&self) -> Result<(), LogError>;
}
