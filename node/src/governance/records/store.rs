//! The log store: one fjall database under `DATA_DIR/logs/`, the only module that knows
//! it. Records go in by batches from one writer (`append`), which numbers them in this
//! node's hash chain, writes their index entries and the hour's totals in the same
//! atomic batch, with the outbox position they were read up to. Retention and the disk
//! cap drop whole partitions (`sweep`): no delete scans, no vacuum.

use super::keys::{self, Slot, HOUR_MS};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, RwLock};
use tollgate_proto::records::{
    CapturedContent, ChainedRecord, GroupBy, LogEntry, RecordRef, RequestRecord, StatsGroup,
    StatsQuery, Totals,
};
use tollgate_proto::RequestId;
use tollgate_raft::codec::{self, CodecError};

/// Journal size past which fjall flushes memtables: small next to any sensible disk cap,
/// so the cap counts nearly all of what is on disk.
const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// Block cache for queries.
const CACHE_BYTES: u64 = 8 << 20;

/// A partition's memtable is flushed to a table at this size: larger means fewer tables
/// to compact; the journal (which counts against the disk cap) holds what is not in
/// tables yet, so two of these stay well within its budget.
const MEMTABLE_BYTES: u64 = 8 << 20;

/// Tables a partition's level 0 holds before they are merged into level 1 (fjall's
/// default is 4): a log written once and dropped whole is read far less than it is
/// written, so fewer, larger merges.
const L0_TABLES: u8 = 8;

/// The part of the disk cap kept for fjall's journal; partitions may use the rest.
/// fjall starts a new journal file once the current one holds 64 MB, and evicts sealed
/// ones past `max_journaling_size` (64 MiB, its least); the writer flushes every
/// memtable once the journal passes half this (`trim_journal`), so a keyspace written
/// rarely (the meta keyspace, an older partition) does not keep sealed files alive.
pub const JOURNAL_BUDGET_BYTES: u64 = 128 << 20;

const META_KEYSPACE: &str = "meta";
const LOGGED_KEY: &[u8] = b"logged";
const CHAIN_KEY: &[u8] = b"chain";
/// How the store is laid out: absent in stores written before postings (`keys`).
pub(super) const LAYOUT_KEY: &[u8] = b"layout";
pub(super) const LAYOUT_POSTINGS: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("log store")]
    Fjall(#[from] fjall::Error),
    #[error("log store encoding")]
    Codec(#[from] CodecError),
    #[error("log store entry {0} is damaged")]
    Damaged(String),
}

/// The head of this node's hash chain: the last sequence and its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl ChainHead {
    fn encode(self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..].copy_from_slice(&self.hash);
        b
    }

    fn decode(bytes: &[u8]) -> Option<ChainHead> {
        let bytes: &[u8; 40] = bytes.try_into().ok()?;
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[..8]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[8..]);
        Some(ChainHead {
            seq: u64::from_be_bytes(seq),
            hash,
        })
    }
}

/// The hash of a record at `seq` of `node`'s chain after `prev`.
pub fn chain_hash(prev: &[u8; 32], node: u64, seq: u64, record: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(node.to_be_bytes());
    h.update(seq.to_be_bytes());
    h.update(record);
    h.finalize().into()
}

/// One partition's records and its index (entries, ids, totals), apart: records arrive
/// in time order, so their tables hardly overlap and compaction seldom rewrites them,
/// while index keys arrive in any order.
#[derive(Clone)]
pub struct Part {
    pub records: fjall::Keyspace,
    pub index: fjall::Keyspace,
}

impl Part {
    pub(super) fn keyspaces(&self) -> [&fjall::Keyspace; 2] {
        [&self.records, &self.index]
    }
}

/// Open partitions, by number.
#[derive(Default)]
pub(super) struct Partitions {
    pub(super) records: BTreeMap<u64, Part>,
    pub(super) content: BTreeMap<u64, fjall::Keyspace>,
}

/// Options of a partition's records or index keyspace. No bloom filters: records are
/// read by range (time, a posting's slots, an id's millisecond) or by keys that exist,
/// and tables written in time order hardly overlap; building filters at every flush and
/// compaction cost the writer's thread more than any read saved.
fn table_options() -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default()
        .filter_policy(fjall::config::FilterPolicy::disabled())
        .max_memtable_size(MEMTABLE_BYTES)
        .compaction_strategy(std::sync::Arc::new(
            fjall::compaction::Leveled::default().with_l0_threshold(L0_TABLES),
        ))
}

/// Options of a partition's content keyspace: bodies apart from their keys.
fn content_options() -> fjall::KeyspaceCreateOptions {
    table_options().with_kv_separation(Some(fjall::KvSeparationOptions::default()))
}

/// What the writer keeps between batches.
pub(super) struct WriterState {
    pub(super) head: ChainHead,
    /// Totals of recent hours, by (hour, group, key).
    pub(super) totals: HashMap<(u64, GroupBy, String), Totals>,
}

pub struct LogStore {
    pub(super) dir: std::path::PathBuf,
    pub(super) db: fjall::Database,
    pub(super) meta: fjall::Keyspace,
    node: u64,
    pub(super) partitions: RwLock<Partitions>,
    /// Records waiting for the exports, by sequence (`export.rs`); none without exports.
    pub(super) export_queue: Option<fjall::Keyspace>,
    writer: Mutex<WriterState>,
    /// Partitions dropped by the disk cap (`tollgate_log_dropped_partitions_total`).
    pub dropped_for_space: AtomicU64,
    /// Records in them (an estimate: fjall's approximate count).
    pub dropped_records: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogStore {
    /// Opens (or creates) the store in `dir` for `node`'s records.
    pub fn open(dir: &Path, node: u64) -> Result<LogStore, StoreError> {
        let db = fjall::Database::builder(dir)
            // One thread flushes and compacts: fjall 3.1's second worker hands every
            // compaction back to the queue for the first, which takes it again, a busy
            // loop that cost about a tenth of a core under load (and a 2-core gateway
            // needs its other core for requests).
            .worker_threads(1)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .cache_size(CACHE_BYTES)
            .open()?;
        let meta = db.keyspace(META_KEYSPACE, fjall::KeyspaceCreateOptions::default)?;
        let mut partitions = Partitions::default();
        let mut found: BTreeMap<u64, ()> = BTreeMap::new();
        for name in db.list_keyspace_names() {
            let Some((kind, partition)) = keys::parse_keyspace(&name) else {
                continue;
            };
            match kind {
                b'c' => {
                    let keyspace = db.keyspace(&name, content_options)?;
                    partitions.content.insert(partition, keyspace);
                }
                _ => {
                    found.insert(partition, ());
                }
            }
        }
        for partition in found.into_keys() {
            let part = Part {
                records: db.keyspace(&keys::records_keyspace(partition), table_options)?,
                index: db.keyspace(&keys::index_keyspace(partition), table_options)?,
            };
            partitions.records.insert(partition, part);
        }
        let head = match meta.get(CHAIN_KEY)? {
            Some(v) => {
                ChainHead::decode(&v).ok_or_else(|| StoreError::Damaged("chain head".into()))?
            }
            None => ChainHead::default(),
        };
        let store = LogStore {
            dir: dir.to_owned(),
            db,
            meta,
            node,
            partitions: RwLock::new(partitions),
            export_queue: None,
            writer: Mutex::new(WriterState {
                head,
                totals: HashMap::new(),
            }),
            dropped_for_space: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
        };
        if store.meta.get(LAYOUT_KEY)?.as_deref() != Some(&[LAYOUT_POSTINGS][..]) {
            store.rebuild_postings()?;
        }
        Ok(store)
    }

    pub fn node(&self) -> u64 {
        self.node
    }

    /// The outbox position the records are written up to (`append`'s `mark`).
    pub fn logged_mark(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(LOGGED_KEY)?.map(|v| v.to_vec()))
    }

    pub fn chain_head(&self) -> ChainHead {
        lock(&self.writer).head
    }

    pub(super) fn records_partition(&self, partition: u64) -> Result<Part, StoreError> {
        {
            let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
            if let Some(part) = parts.records.get(&partition) {
                return Ok(part.clone());
            }
        }
        let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(part) = parts.records.get(&partition) {
            return Ok(part.clone());
        }
        let part = Part {
            records: self
                .db
                .keyspace(&keys::records_keyspace(partition), table_options)?,
            index: self
                .db
                .keyspace(&keys::index_keyspace(partition), table_options)?,
        };
        parts.records.insert(partition, part.clone());
        Ok(part)
    }

    fn content_partition_or_new(&self, partition: u64) -> Result<fjall::Keyspace, StoreError> {
        if let Some(k) = self.content_partition(partition) {
            return Ok(k);
        }
        let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = parts.content.get(&partition) {
            return Ok(k.clone());
        }
        let keyspace = self
            .db
            .keyspace(&keys::content_keyspace(partition), content_options)?;
        parts.content.insert(partition, keyspace.clone());
        Ok(keyspace)
    }

    /// Open record partitions, newest first, that may hold records in `[since, until)`.
    pub(super) fn partitions_between(&self, since_ms: u64, until_ms: u64) -> Vec<(u64, Part)> {
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        let first = keys::partition_of(since_ms);
        let last = keys::partition_of(until_ms.saturating_sub(1));
        parts
            .records
            .range(first..=last)
            .rev()
            .map(|(p, k)| (*p, k.clone()))
            .collect()
    }

    pub(super) fn content_partition(&self, partition: u64) -> Option<fjall::Keyspace> {
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        parts.content.get(&partition).cloned()
    }

    /// Writes `entries` as one atomic batch (`append_encoded`).
    pub fn append(
        &self,
        entries: Vec<(RequestRecord, Option<CapturedContent>)>,
        mark: &[u8],
    ) -> Result<ChainHead, StoreError> {
        let encoded = entries
            .into_iter()
            .map(|(record, content)| Ok((codec::encode(&record)?, content)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.append_encoded(encoded, mark)
    }

    /// Writes `entries` (each a `RequestRecord`'s encoding, as the outbox holds it, and
    /// its content) as one atomic batch: each record numbered next in this node's chain,
    /// with its index entries (postings, `keys`), the hours' totals and its content, and
    /// `mark` (where the outbox was read up to). Made durable (fsync) before it returns,
    /// since the outbox may then delete what it was read from. Records are read in place,
    /// and stored as they came.
    pub fn append_encoded(
        &self,
        mut entries: Vec<(Vec<u8>, Option<CapturedContent>)>,
        mark: &[u8],
    ) -> Result<ChainHead, StoreError> {
        let mut writer = lock(&self.writer);
        let first_seq = writer.head.seq + 1;
        let mut batch = self.db.batch();
        let slots: Vec<Slot> = {
            let records = entries
                .iter()
                .map(|(bytes, _)| codec::decode_borrowed::<RecordRef<'_>>(bytes))
                .collect::<Result<Vec<_>, _>>()?;
            let slots: Vec<Slot> = records
                .iter()
                .zip(first_seq..)
                .map(|(record, seq)| Slot {
                    time_ms: record.time_ms,
                    seq,
                })
                .collect();
            self.index(&mut batch, &mut writer, &records, &slots)?;
            slots
        };
        let mut head = writer.head;
        for ((bytes, content), slot) in entries.iter_mut().zip(slots) {
            let partition = keys::partition_of(slot.time_ms);
            let part = self.records_partition(partition)?;
            // The stored record is (seq, prev_hash, hash, record) and the hash covers the
            // record's encoding, which follows a header filled in last.
            let hash = chain_hash(&head.hash, self.node, slot.seq, bytes);
            let mut stored = Vec::with_capacity(bytes.len() + 80);
            codec::encode_append(&(slot.seq, head.hash, hash), &mut stored)?;
            stored.extend_from_slice(bytes);
            if let Some(content) = content.take() {
                let cpart = self.content_partition_or_new(partition)?;
                batch.insert(&cpart, keys::record_key(slot), codec::encode(&content)?);
            }
            if let Some(queue) = &self.export_queue {
                batch.insert(queue, slot.seq.to_be_bytes(), stored.clone());
            }
            batch.insert(&part.records, keys::record_key(slot), stored);
            head = ChainHead {
                seq: slot.seq,
                hash,
            };
        }
        batch.insert(&self.meta, LOGGED_KEY, mark);
        batch.insert(&self.meta, CHAIN_KEY, head.encode());
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        writer.head = head;
        Ok(head)
    }

    /// Records only the outbox mark (a batch of entries that were not records).
    pub fn mark(&self, mark: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(LOGGED_KEY, mark)?;
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }

    /// The record of `request_id`, and its content if captured: among the records of
    /// the millisecond its id carries, or, for an id of another shape, through the
    /// id entries of stores written before ids carried their time.
    pub fn get(&self, request_id: &str) -> Result<Option<LogEntry>, StoreError> {
        if let Some(time_ms) = RequestId::time_ms(request_id) {
            let partition = keys::partition_of(time_ms);
            let part = {
                let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
                parts.records.get(&partition).cloned()
            };
            let Some(part) = part else { return Ok(None) };
            for item in part.records.prefix(keys::record_time_prefix(time_ms)) {
                let (key, value) = item.into_inner()?;
                let record: ChainedRecord = codec::decode(&value)?;
                if record.record.request_id.as_str() != request_id {
                    continue;
                }
                let slot =
                    Slot::from_tail(&key).ok_or_else(|| StoreError::Damaged(request_id.into()))?;
                let content = self.content(partition, slot)?;
                return Ok(Some(LogEntry { record, content }));
            }
            return Ok(None);
        }
        let parts: Vec<(u64, Part)> = {
            let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
            parts
                .records
                .iter()
                .rev()
                .map(|(p, k)| (*p, k.clone()))
                .collect()
        };
        let id = keys::legacy_id_key(request_id);
        for (partition, part) in parts {
            let Some(slot) = part.index.get(&id)? else {
                continue;
            };
            let slot =
                Slot::from_tail(&slot).ok_or_else(|| StoreError::Damaged(request_id.into()))?;
            let Some(value) = part.records.get(keys::record_key(slot))? else {
                return Ok(None);
            };
            let record: ChainedRecord = codec::decode(&value)?;
            let content = self.content(partition, slot)?;
            return Ok(Some(LogEntry { record, content }));
        }
        Ok(None)
    }

    pub(super) fn content(
        &self,
        partition: u64,
        slot: Slot,
    ) -> Result<Option<CapturedContent>, StoreError> {
        let Some(cpart) = self.content_partition(partition) else {
            return Ok(None);
        };
        match cpart.get(keys::record_key(slot))? {
            Some(v) => Ok(Some(codec::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Totals per group over the whole hours in `[since, until)`, from the totals kept
    /// at write time (no record is read).
    pub fn stats(&self, query: &StatsQuery) -> Result<Vec<StatsGroup>, StoreError> {
        let since = query.since_ms.unwrap_or(0);
        let until = query.until_ms.unwrap_or(u64::MAX);
        let first_hour = since / HOUR_MS;
        let end_hour = until.div_ceil(HOUR_MS);
        let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
        for (_, part) in self.partitions_between(since, until) {
            for item in part.index.prefix([b't']) {
                let (key, value) = item.into_inner()?;
                let Some((hour, group, name)) = keys::parse_totals_key(&key) else {
                    continue;
                };
                if hour < first_hour || hour >= end_hour || group != query.group_by as u8 {
                    continue;
                }
                let totals: Totals = codec::decode(&value)?;
                groups.entry(name.to_owned()).or_default().merge(&totals);
            }
        }
        Ok(groups
            .into_iter()
            .map(|(key, totals)| StatsGroup { key, totals })
            .collect())
    }
}
