//! `MemLog`: the in-memory `LogBackend` for the simulator and unit tests. Clones share one
//! log, so a simulated node "restarts" by building a new `LogStore` over a clone: the log
//! survives like a disk would.

use crate::log_backend::{LogBackend, LogError};
use crate::typ::{Entry, LogId, Vote};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct MemInner {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// Every write is "durable" at once, so `flush` has nothing to do. (Losing unflushed
/// writes in a simulated crash is the simulator's to model.)
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<MemInner>>,
}

impl MemLog {
    pub fn new() -> MemLog {
        MemLog::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, MemInner>, LogError> {
        self.inner.lock().map_err(|_| LogError::Poisoned)
    }
}

impl LogBackend for MemLog {
    fn append(&self, entries: &[Entry]) -> Result<(), LogError> {
        let mut inner = self.lock()?;
        for entry in entries {
            inner.entries.insert(entry.log_id.index, entry.clone());
        }
        Ok(())
    }

    fn truncate_from(&self, index: u64) -> Result<(), LogError> {
        self.lock()?.entries.split_off(&index);
        Ok(())
    }

    fn purge_upto(&self, index: u64) -> Result<(), LogError> {
        let mut inner = self.lock()?;
        inner.entries = match index.checked_add(1) {
            Some(first_kept) => inner.entries.split_off(&first_kept),
            None => BTreeMap::new(),
        };
        Ok(())
    }

    fn read_range(&self, range: Range<u64>) -> Result<Vec<Entry>, LogError> {
        if range.is_empty() {
            // `BTreeMap::range` panics on a reversed range.
            return Ok(Vec::new());
        }
        Ok(self
            .lock()?
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn last_log_id(&self) -> Result<Option<LogId>, LogError> {
        Ok(self.lock()?.entries.values().next_back().map(|e| e.log_id))
    }

    fn save_vote(&self, vote: &Vote) -> Result<(), LogError> {
        self.lock()?.vote = Some(*vote);
        Ok(())
    }

    fn read_vote(&self) -> Result<Option<Vote>, LogError> {
        Ok(self.lock()?.vote)
    }

    fn save_committed(&self, committed: Option<&LogId>) -> Result<(), LogError> {
        self.lock()?.committed = committed.copied();
        Ok(())
    }

    fn read_committed(&self) -> Result<Option<LogId>, LogError> {
        Ok(self.lock()?.committed)
    }

    fn save_last_purged(&self, log_id: &LogId) -> Result<(), LogError> {
        self.lock()?.last_purged = Some(*log_id);
        Ok(())
    }

    fn read_last_purged(&self) -> Result<Option<LogId>, LogError> {
        Ok(self.lock()?.last_purged)
    }

    fn flush(&self) -> Result<(), LogError> {
        Ok(())
    }
}
