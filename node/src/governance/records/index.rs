//! The store's index, written with the records: postings (one entry per indexed value,
//! second and batch, `keys`) and each hour's totals per group, and the postings of a
//! store written before they existed, rebuilt once at open.

use super::keys::{self, Dim, GroupName, Slot, HOUR_MS, PARTITION_MS};
use super::store::{LogStore, Part, StoreError, WriterState, LAYOUT_KEY, LAYOUT_POSTINGS};
use std::collections::BTreeMap;
use tollgate_proto::records::{GroupBy, RecordRef, Totals};
use tollgate_raft::codec;

/// Hours of totals the writer keeps in memory (older ones are read back when a late
/// record needs them).
const TOTALS_CACHE_HOURS: u64 = 12;

/// A stored record read in place (`ChainedRecord`'s fields in its order).
#[derive(serde::Deserialize)]
struct ChainedRef<'a> {
    #[allow(dead_code)]
    seq: u64,
    #[allow(dead_code)]
    prev_hash: [u8; 32],
    #[allow(dead_code)]
    hash: [u8; 32],
    #[serde(borrow)]
    record: RecordRef<'a>,
}

impl LogStore {
    /// Adds to `batch` the index entries of `records` (at `slots`) and the totals of
    /// the hours they fall in: one entry per indexed value and second, one totals
    /// write per hour and group, whatever the number of records.
    pub(super) fn index(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        writer: &mut WriterState,
        records: &[RecordRef<'_>],
        slots: &[Slot],
    ) -> Result<(), StoreError> {
        self.postings(batch, records.iter().zip(slots.iter().copied()))?;
        // Records of one hour, key, user, team, customer, model and provider count
        // alike in every group: summed once per such signature, then into each group.
        type Signature<'r> = (u64, [Option<&'r str>; 6]);
        let mut by_signature: BTreeMap<Signature<'_>, (&RecordRef<'_>, Totals)> = BTreeMap::new();
        for record in records {
            let signature = (
                record.time_ms / HOUR_MS,
                [
                    record.virtual_key_id,
                    record.user_id,
                    record.team_id,
                    record.customer_id,
                    record.model,
                    record.provider,
                ],
            );
            by_signature
                .entry(signature)
                .or_insert_with(|| (record, Totals::default()))
                .1
                .add_request(record.status, &record.usage, record.cost, record.latency_ms);
        }
        let mut sums: BTreeMap<(u64, GroupBy, GroupName<'_>), Totals> = BTreeMap::new();
        for ((hour, _), (record, sum)) in &by_signature {
            for group in GroupBy::ALL {
                sums.entry((*hour, group, GroupName::of(record, group)))
                    .or_default()
                    .merge(sum);
            }
        }
        let mut newest = None;
        for ((hour, group, name), sum) in sums {
            newest = newest.max(Some(hour));
            let part = self.records_partition(hour * HOUR_MS / PARTITION_MS)?;
            let name = name.to_string();
            let totals = match writer.totals.entry((hour, group, name.clone())) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let stored = match part.index.get(keys::totals_key(hour, group, &e.key().2))? {
                        Some(v) => codec::decode(&v)?,
                        None => Totals::default(),
                    };
                    e.insert(stored)
                }
            };
            totals.merge(&sum);
            batch.insert(
                &part.index,
                keys::totals_key(hour, group, &name),
                codec::encode(totals)?,
            );
        }
        if let Some(newest) = newest {
            let oldest_kept = newest.saturating_sub(TOTALS_CACHE_HOURS);
            writer.totals.retain(|k, _| k.0 >= oldest_kept);
        }
        Ok(())
    }

    /// Adds to `batch` the index entries of `records`: one per indexed value and second.
    fn postings<'a, 'r: 'a>(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        records: impl Iterator<Item = (&'a RecordRef<'r>, Slot)>,
    ) -> Result<(), StoreError> {
        let mut postings: Vec<(Dim, &'r [u8], u64, Slot)> = Vec::new();
        for (record, slot) in records {
            let second = keys::posting_second(slot.time_ms);
            for (dim, value) in Dim::of(record) {
                if let Some(value) = value {
                    postings.push((dim, keys::indexed(value), second, slot));
                }
            }
        }
        postings.sort_unstable();
        let mut run = Vec::new();
        for (i, &(dim, value, second, slot)) in postings.iter().enumerate() {
            run.push(slot);
            let ends = postings
                .get(i + 1)
                .is_none_or(|&(d, v, s, _)| (d, v, s) != (dim, value, second));
            if !ends {
                continue;
            }
            let part = self.records_partition(keys::partition_of(slot.time_ms))?;
            let prefix = keys::posting_prefix_of(dim, value);
            batch.insert(
                &part.index,
                keys::posting_key(&prefix, second, run[0].seq),
                keys::encode_postings(second, &run),
            );
            run.clear();
        }
        Ok(())
    }

    /// Writes the index entries (postings) of partitions written before the store
    /// kept them, from their records, once: a store of an older node is queried as a
    /// new one. Done again from the start if the node stops during it (the entries
    /// come out the same).
    pub(super) fn rebuild_postings(&self) -> Result<(), StoreError> {
        const CHUNK: usize = 10_000;
        let parts: Vec<(u64, Part)> = {
            let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
            parts.records.iter().map(|(p, k)| (*p, k.clone())).collect()
        };
        for (partition, part) in parts {
            if part.index.prefix([keys::LEGACY_INDEX]).next().is_none() {
                continue;
            }
            tracing::info!(
                partition,
                "request log: indexing a partition of an older store"
            );
            let mut chunk: Vec<(fjall::UserValue, Slot)> = Vec::with_capacity(CHUNK);
            let mut records = part.records.prefix(keys::record_prefix());
            loop {
                let item = records.next();
                let done = item.is_none();
                if let Some(item) = item {
                    let (key, value) = item.into_inner()?;
                    let slot = Slot::from_tail(&key)
                        .ok_or_else(|| StoreError::Damaged(format!("record key {key:?}")))?;
                    chunk.push((value, slot));
                }
                if chunk.len() == CHUNK || (done && !chunk.is_empty()) {
                    let stored = chunk
                        .iter()
                        .map(|(value, slot)| {
                            let c: ChainedRef<'_> = codec::decode_borrowed(value)?;
                            Ok((c.record, *slot))
                        })
                        .collect::<Result<Vec<_>, StoreError>>()?;
                    let mut batch = self.db.batch();
                    self.postings(&mut batch, stored.iter().map(|(r, slot)| (r, *slot)))?;
                    batch.commit()?;
                    chunk.clear();
                }
                if done {
                    break;
                }
            }
        }
        self.meta.insert(LAYOUT_KEY, [LAYOUT_POSTINGS])?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }

    /// Makes this store look written before postings: its index entries and layout
    /// gone, one per-record entry in each partition's index (what `open` looks for).
    #[cfg(test)]
    pub(super) fn as_legacy(&self) -> Result<(), StoreError> {
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        for part in parts.records.values() {
            let keys: Vec<_> = part
                .index
                .prefix(b"p")
                .map(|item| item.key())
                .collect::<Result<_, _>>()?;
            for key in keys {
                part.index.remove(key)?;
            }
            part.index.insert([keys::LEGACY_INDEX, 0, 0], [])?;
        }
        self.meta.remove(LAYOUT_KEY)?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}
