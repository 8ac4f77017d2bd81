//! `MemLog`: the in-memory `LogBackend` for the simulator and unit tests. Clones share one
//! log, so a simulated node "restarts" by building a new `LogStore` over a clone: the log
//! survives like a disk would, except for what was written since the last `flush`, which
//! `crash` throws away (a power loss).

use crate::log_backend::{LogBackend, LogError};
use crate::typ::{Entry, LogId, Vote};
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default, Clone)]
struct MemInner {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// A write to the "disk" not yet flushed.
#[derive(Clone)]
enum Write {
    Append(Vec<Entry>),
    TruncateFrom(u64),
    PurgeUpto(u64),
    Vote(Vote),
    Committed(Option<LogId>),
    LastPurged(LogId),
}

impl MemInner {
    fn write(&mut self, write: Write) {
        match write {
            Write::Append(entries) => {
                for entry in entries {
                    self.entries.insert(entry.log_id.index, entry);
                }
            }
            Write::TruncateFrom(index) => {
                self.entries.split_off(&index);
            }
            Write::PurgeUpto(index) => {
                self.entries = match index.checked_add(1) {
                    Some(first_kept) => self.entries.split_off(&first_kept),
                    None => BTreeMap::new(),
                };
            }
            Write::Vote(vote) => self.vote = Some(vote),
            Write::Committed(committed) => self.committed = committed,
            Write::LastPurged(log_id) => self.last_purged = Some(log_id),
        }
    }
}

/// What reads see, what a flush has made durable, and the writes in between.
#[derive(Default)]
struct Disk {
    live: MemInner,
    durable: MemInner,
    unflushed: Vec<Write>,
}

impl Disk {
    fn write(&mut self, write: Write) {
        self.live.write(write.clone());
        self.unflushed.push(write);
    }
}

#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Disk>>,
}

impl MemLog {
    pub fn new() -> MemLog {
        MemLog::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Disk>, LogError> {
        self.inner.lock().map_err(|_| LogError::Poisoned)
    }

    /// A power loss: every write since the last `flush` is lost. Call it only while no
    /// `LogStore` uses the log (the simulator calls it as it crashes the node).
    pub fn crash(&self) {
        let mut disk = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        disk.unflushed.clear();
        disk.live = disk.durable.clone();
    }

    /// Writes made since the last flush (what a crash would lose now).
    pub fn unflushed(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unflushed
            .len()
    }
}

impl LogBackend for MemLog {
    fn append(&self, entries: &[Entry]) -> Result<u64, LogError> {
        // What the entries would take on disk, so a byte-bound snapshot comes as on a node.
        let mut bytes = 0;
        for entry in entries {
            bytes += crate::codec::encode(entry)?.len() as u64;
        }
        self.lock()?.write(Write::Append(entries.to_vec()));
        Ok(bytes)
    }

    fn truncate_from(&self, index: u64) -> Result<(), LogError> {
        self.lock()?.write(Write::TruncateFrom(index));
        Ok(())
    }

    fn purge_upto(&self, index: u64) -> Result<(), LogError> {
        self.lock()?.write(Write::PurgeUpto(index));
        Ok(())
    }

    fn read_range(&self, range: Range<u64>) -> Result<Vec<Entry>, LogError> {
        if range.is_empty() {
            // `BTreeMap::range` panics on a reversed range.
            return Ok(Vec::new());
        }
        Ok(self
            .lock()?
            .live
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn last_log_id(&self) -> Result<Option<LogId>, LogError> {
        Ok(self
            .lock()?
            .live
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id))
    }

    fn save_vote(&self, vote: &Vote) -> Result<(), LogError> {
        self.lock()?.write(Write::Vote(*vote));
        Ok(())
    }

    fn read_vote(&self) -> Result<Option<Vote>, LogError> {
        Ok(self.lock()?.live.vote)
    }

    fn save_committed(&self, committed: Option<&LogId>) -> Result<(), LogError> {
        self.lock()?.write(Write::Committed(committed.copied()));
        Ok(())
    }

    fn read_committed(&self) -> Result<Option<LogId>, LogError> {
        Ok(self.lock()?.live.committed)
    }

    fn save_last_purged(&self, log_id: &LogId) -> Result<(), LogError> {
        self.lock()?.write(Write::LastPurged(*log_id));
        Ok(())
    }

    fn read_last_purged(&self) -> Result<Option<LogId>, LogError> {
        Ok(self.lock()?.live.last_purged)
    }

    fn flush(&self) -> Result<(), LogError> {
        let mut disk = self.lock()?;
        let Disk {
            durable, unflushed, ..
        } = &mut *disk;
        for write in unflushed.drain(..) {
            durable.write(write);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typ::EntryPayload;
    use openraft::CommittedLeaderId;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn a_crash_loses_exactly_what_was_not_flushed() {
        let log = MemLog::new();
        log.append(&[entry(1), entry(2)]).unwrap();
        log.save_vote(&Vote::new(1, 1)).unwrap();
        log.flush().unwrap();
        log.append(&[entry(3)]).unwrap();
        log.truncate_from(2).unwrap();
        log.save_committed(Some(&entry(1).log_id)).unwrap();
        assert_eq!(log.unflushed(), 3);
        assert_eq!(log.last_log_id().unwrap(), Some(entry(1).log_id));
        log.crash();
        assert_eq!(log.unflushed(), 0);
        assert_eq!(log.last_log_id().unwrap(), Some(entry(2).log_id));
        assert_eq!(log.read_committed().unwrap(), None);
        assert_eq!(log.read_vote().unwrap(), Some(Vote::new(1, 1)));
        // A clone is the same disk.
        let again = log.clone();
        again.append(&[entry(3)]).unwrap();
        again.flush().unwrap();
        log.crash();
        assert_eq!(log.read_range(1..4).unwrap().len(), 3);
    }
}
