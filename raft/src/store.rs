//! Durable single-node storage of governance state: a command log and a snapshot in
//! sled. A command is acknowledged only after the log is flushed, so a restart loses
//! nothing; the snapshot bounds replay time and lets the log be purged.

use crate::codec::{self, CodecError};
use crate::state::GovState;
use std::path::Path;
use tollgate_proto::Command;

/// Take a snapshot (and purge the log) after this many commands: replay at start stays
/// well under a second, and snapshots of a large state stay rare under steady charging.
pub const SNAPSHOT_EVERY: u64 = 10_000;

/// Or once the commands appended since the last snapshot take this many bytes. The log
/// lives in sled's page cache until purged, whatever `cache_capacity` says (a node at
/// saturation proposes charge batches of tens of kilobytes: 10,000 of them held 200 MB),
/// so the log's bytes, not its count, bound the node's memory.
pub const SNAPSHOT_EVERY_BYTES: u64 = 8 << 20;

const SNAPSHOT_KEY: &[u8] = b"snapshot";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage i/o failed")]
    Sled(#[from] sled::Error),
    #[error("stored data is corrupt")]
    Codec(#[from] CodecError),
}

/// The log (big-endian index → command) and the snapshot (`index`, then the state as
/// `snapshot::encode_state` writes it: with the audit trail and keys' log content).
pub struct LocalStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

/// What `LocalStore::open` recovered.
pub struct Recovered {
    pub state: GovState,
    /// Index of the last command applied to `state`.
    pub last_index: u64,
    /// Index of the snapshot `state` was rebuilt from.
    pub snapshot_index: u64,
}

impl LocalStore {
    /// Opens (or creates) the store in `dir` and rebuilds the state: snapshot, then log.
    pub fn open(dir: &Path) -> Result<(LocalStore, Recovered), StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(crate::config::SLED_CACHE_BYTES)
            .open()?;
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        let (snapshot_index, mut state) = match meta.get(SNAPSHOT_KEY)? {
            Some(bytes) => crate::snapshot::decode_state::<u64>(&bytes)?,
            None => (0, GovState::new()),
        };
        let mut last_index = snapshot_index;
        for entry in log.range((snapshot_index + 1).to_be_bytes()..) {
            let (key, value) = entry?;
            let command: Command = codec::decode(&value)?;
            state.apply(&command);
            last_index = u64::from_be_bytes(key.as_ref().try_into().unwrap_or_default());
        }
        let store = LocalStore { db, log, meta };
        Ok((
            store,
            Recovered {
                state,
                last_index,
                snapshot_index,
            },
        ))
    }

    /// Appends one command at `index`; durable once `flush` returns. Gives the bytes
    /// the command took.
    pub fn append(&self, index: u64, command: &Command) -> Result<u64, StoreError> {
        let bytes = codec::encode(command)?;
        let len = bytes.len() as u64;
        self.log.insert(index.to_be_bytes(), bytes)?;
        Ok(len)
    }

    /// Blocks until everything appended so far is on disk. Callers run it off the async
    /// threads and one at a time: sled's `flush_async` deadlocks once concurrent flushes
    /// occupy every thread of its pool (each waits for a write queued behind the others).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Stores `state` as of `index` and purges the log up to it.
    pub fn snapshot(&self, index: u64, state: &GovState) -> Result<(), StoreError> {
        self.meta
            .insert(SNAPSHOT_KEY, crate::snapshot::encode_state(&index, state)?)?;
        for key in self.log.range(..=index.to_be_bytes()).keys() {
            self.log.remove(key?)?;
        }
        Ok(())
    }

    /// Bytes on disk, for status pages.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}
