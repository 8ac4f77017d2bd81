//! `SledLog`: the durable `LogBackend`. Entries live in the `log` tree keyed by big-endian
//! index (so sled's key order is log order); vote, committed and last purged log ids live
//! in the `meta` tree. Every value is made by `codec`.

use crate::codec;
use crate::log_backend::{LogBackend, LogError};
use crate::typ::{Entry, LogId, Vote};
use std::ops::Range;
use std::path::Path;

const LOG_TREE: &str = "log";
const META_TREE: &str = "meta";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

/// Opens (or creates) the sled database of a node's Raft storage in `dir`. The log and the
/// state machine's snapshot share it, so one flush covers both and one lock guards the
/// directory.
pub fn open_db(dir: &Path) -> Result<sled::Db, sled::Error> {
    sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(crate::config::SLED_CACHE_BYTES)
        .open()
}

#[derive(Clone)]
pub struct SledLog {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Result<u64, LogError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| LogError::BadKey(key.to_vec()))?;
    Ok(u64::from_be_bytes(bytes))
}

impl SledLog {
    /// Opens the log in `db`. A purge cut short by a crash (last purged id saved, some
    /// entries at or below it still present) is finished here, so readers never see an
    /// entry the log claims to have purged.
    pub fn open(db: &sled::Db) -> Result<SledLog, LogError> {
        let log = db.open_tree(LOG_TREE)?;
        let meta = db.open_tree(META_TREE)?;
        let backend = SledLog {
            db: db.clone(),
            log,
            meta,
        };
        if let Some(purged) = backend.read_last_purged()? {
            backend.purge_upto(purged.index)?;
        }
        Ok(backend)
    }

    fn remove_keys(
        &self,
        keys: impl Iterator<Item = sled::Result<sled::IVec>>,
    ) -> Result<(), LogError> {
        // One batch is applied atomically, so a crash cannot leave a hole in the log.
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key?);
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, LogError> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), LogError> {
        self.meta.insert(key, codec::encode(value)?)?;
        Ok(())
    }
}

impl LogBackend for SledLog {
    fn append(&self, entries: &[Entry]) -> Result<u64, LogError> {
        let mut batch = sled::Batch::default();
        let mut bytes = 0;
        for entry in entries {
            let value = codec::encode(entry)?;
            bytes += value.len() as u64;
            batch.insert(&index_key(entry.log_id.index), value);
        }
        self.log.apply_batch(batch)?;
        Ok(bytes)
    }

    fn truncate_from(&self, index: u64) -> Result<(), LogError> {
        self.remove_keys(self.log.range(index_key(index)..).keys())
    }

    fn purge_upto(&self, index: u64) -> Result<(), LogError> {
        self.remove_keys(self.log.range(..=index_key(index)).keys())
    }

    fn read_range(&self, range: Range<u64>) -> Result<Vec<Entry>, LogError> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for item in self.log.range(index_key(range.start)..index_key(range.end)) {
            let (key, value) = item?;
            let entry: Entry = codec::decode(&value)?;
            debug_assert_eq!(key_index(&key)?, entry.log_id.index);
            entries.push(entry);
        }
        Ok(entries)
    }

    fn last_log_id(&self) -> Result<Option<LogId>, LogError> {
        match self.log.last()? {
            Some((key, value)) => {
                let entry: Entry = codec::decode(&value)?;
                debug_assert_eq!(key_index(&key)?, entry.log_id.index);
                Ok(Some(entry.log_id))
            }
            None => Ok(None),
        }
    }

    fn save_vote(&self, vote: &Vote) -> Result<(), LogError> {
        self.write_meta(VOTE_KEY, vote)
    }

    fn read_vote(&self) -> Result<Option<Vote>, LogError> {
        self.read_meta(VOTE_KEY)
    }

    fn save_committed(&self, committed: Option<&LogId>) -> Result<(), LogError> {
        match committed {
            Some(log_id) => self.write_meta(COMMITTED_KEY, log_id),
            None => {
                self.meta.remove(COMMITTED_KEY)?;
                Ok(())
            }
        }
    }

    fn read_committed(&self) -> Result<Option<LogId>, LogError> {
        self.read_meta(COMMITTED_KEY)
    }

    fn save_last_purged(&self, log_id: &LogId) -> Result<(), LogError> {
        self.write_meta(LAST_PURGED_KEY, log_id)
    }

    fn read_last_purged(&self) -> Result<Option<LogId>, LogError> {
        self.read_meta(LAST_PURGED_KEY)
    }

    fn flush(&self) -> Result<(), LogError> {
        self.db.flush()?;
        Ok(())
    }
}
