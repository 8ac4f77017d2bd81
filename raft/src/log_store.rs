//! `LogStore<B>`: openraft's log storage (`RaftLogStorage`, `RaftLogReader`) over any
//! `LogBackend`. Whatever Raft must not forget — appended entries, the vote, truncations
//! and purges — is flushed before it is acknowledged; only the committed log id is left to
//! the next flush, which openraft allows (a stale one only delays re-applying at start).

use crate::log_backend::{LogBackend, LogError};
use crate::typ::{Entry, LogId, LogState, StorageError, StorageIOError, TypeConfig, Vote};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use std::fmt::Debug;
use std::ops::{Bound, Range, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

/// The Raft log of one node. Clones share the backend; openraft's replication tasks read
/// through clones (`get_log_reader`) while the Raft core writes.
#[derive(Clone)]
pub struct LogStore<B: LogBackend> {
    backend: B,
    /// The last committed index openraft saved (0 before any), for status reports;
    /// shared by clones.
    committed: Arc<AtomicU64>,
    /// Bytes of the entries appended since the store was opened; shared by clones.
    appended: Arc<AtomicU64>,
    /// Where appends wait for their flush, when flushing has its own thread.
    flusher: Option<Arc<Flusher>>,
}

/// The flush thread's mailbox; dropping the last handle stops the thread and waits for
/// it, so the backend is closed when the last `LogStore` clone is.
struct Flusher {
    tx: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flush thread of a durable log: flushes what is waiting (everything appended before
/// the flush, in one fsync) and then tells openraft, in order, so the Raft core and the
/// async runtime never wait on the disk. openraft 0.9 waits for an append's callback
/// before its next log write, so at most one append is waiting at a time, and truncate,
/// purge and vote writes (flushed inline) never overtake one. Ends when every
/// `LogStore` clone is gone.
fn spawn_flusher<B: LogBackend>(backend: B) -> std::io::Result<Flusher> {
    let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
    let thread = std::thread::Builder::new()
        .name("raft-log-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                let result = backend.flush();
                for callback in waiting {
                    callback.log_io_completed(
                        result
                            .as_ref()
                            .map(|_| ())
                            .map_err(|e| std::io::Error::other(e.to_string())),
                    );
                }
            }
        })?;
    Ok(Flusher {
        tx: Some(tx),
        thread: Some(thread),
    })
}

impl<B: LogBackend> LogStore<B> {
    pub fn new(backend: B) -> LogStore<B> {
        let committed = backend
            .read_committed()
            .ok()
            .flatten()
            .map_or(0, |l| l.index);
        LogStore {
            backend,
            committed: Arc::new(AtomicU64::new(committed)),
            appended: Arc::new(AtomicU64::new(0)),
            flusher: None,
        }
    }

    /// A log whose appends are flushed by a thread of their own (durable storage). Without
    /// it an append flushes inline, which keeps in-memory logs deterministic.
    pub fn with_flush_thread(backend: B) -> std::io::Result<LogStore<B>> {
        let mut store = LogStore::new(backend);
        store.flusher = Some(Arc::new(spawn_flusher(store.backend.clone())?));
        Ok(store)
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The index openraft last reported committed.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Bytes of the entries appended since the store was opened (`snapshot_by_bytes`).
    pub fn appended_bytes(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }
}

/// Any range of indexes as a half-open `start..end` (empty when `start >= end`).
fn half_open(range: &impl RangeBounds<u64>) -> Range<u64> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    start..end
}

fn read_err(e: LogError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: LogError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl<B: LogBackend> RaftLogReader<TypeConfig> for LogStore<B> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.backend.read_range(half_open(&range)).map_err(read_err)
    }
}

impl<B: LogBackend> RaftLogStorage<TypeConfig> for LogStore<B> {
    type LogReader = LogStore<B>;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged_log_id = self.backend.read_last_purged().map_err(read_err)?;
        // With every entry purged, the last log id is the last purged one.
        let last_log_id = match self.backend.last_log_id().map_err(read_err)? {
            Some(last) => Some(last),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let write = |b: &B| {
            b.save_vote(vote)?;
            b.flush()
        };
        write(&self.backend).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.backend
            .read_vote()
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.backend
            .save_committed(committed.as_ref())
            .map_err(write_err)?;
        self.committed
            .store(committed.map_or(0, |l| l.index), Ordering::Release);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.backend.read_committed().map_err(read_err)
    }

    /// Writes, then calls back once flushed: on the flush thread when there is one, else
    /// inline. openraft hands over every entry waiting to be appended in one call, so
    /// under load one fsync covers a whole batch of proposals.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let bytes = self.backend.append(&entries).map_err(write_err)?;
        self.appended.fetch_add(bytes, Ordering::Relaxed);
        let callback = match self.flusher.as_ref().and_then(|f| f.tx.as_ref()) {
            Some(flusher) => match flusher.send(callback) {
                Ok(()) => return Ok(()),
                // The thread is gone (it only ends with the store): flush here.
                Err(mpsc::SendError(callback)) => callback,
            },
            None => callback,
        };
        match self.backend.flush() {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let write = |b: &B| {
            b.truncate_from(log_id.index)?;
            b.flush()
        };
        write(&self.backend).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The purge mark goes first: a crash between the two steps leaves entries the mark
        // covers, which `SledLog::open` removes, never a mark short of a hole.
        let write = |b: &B| {
            b.save_last_purged(&log_id)?;
            b.purge_upto(log_id.index)?;
            b.flush()
        };
        write(&self.backend).map_err(write_err)
    }
}
