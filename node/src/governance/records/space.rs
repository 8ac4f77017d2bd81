//! The store's disk: retention drops whole partitions past their age, the cap drops the
//! oldest bodies (then records) while the partitions take more than their share, and
//! the journal is kept small by flushing memtables. What is on disk is counted as the
//! file system counts it.

use super::keys::{self, PARTITION_MS};
use super::store::{LogStore, Part, StoreError, JOURNAL_BUDGET_BYTES};
use std::sync::atomic::Ordering;

impl LogStore {
    /// Drops partitions past retention, then, while the partitions take more than
    /// `max_disk_bytes` less the journal's budget, the oldest bodies, and records only
    /// once no body is left.
    pub fn sweep(
        &self,
        now_ms: u64,
        retention_ms: u64,
        content_retention_ms: u64,
        max_disk_bytes: u64,
    ) -> Result<(), StoreError> {
        let expired = |retention: u64| {
            let horizon = now_ms.saturating_sub(retention);
            move |p: &u64| (p + 1) * PARTITION_MS <= horizon
        };
        let (old_records, old_content): (Vec<u64>, Vec<u64>) = {
            let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
            (
                parts
                    .records
                    .keys()
                    .copied()
                    .filter(expired(retention_ms))
                    .collect(),
                parts
                    .content
                    .keys()
                    .copied()
                    .filter(expired(content_retention_ms))
                    .collect(),
            )
        };
        for p in old_content {
            self.drop_partition(p, true, "retention")?;
        }
        for p in old_records {
            self.drop_partition(p, false, "retention")?;
        }
        let room = max_disk_bytes.saturating_sub(JOURNAL_BUDGET_BYTES);
        while self.partition_bytes() > room {
            // Bodies go first (oldest first), records only once no body is left: a
            // record is a few hundred bytes, the bodies of one request can be megabytes.
            let oldest = {
                let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
                match parts.content.keys().next() {
                    Some(p) => Some((*p, true)),
                    None => parts.records.keys().next().map(|p| (*p, false)),
                }
            };
            let Some((p, content)) = oldest else { break };
            let records = self.drop_partition(p, content, "disk cap")?;
            self.dropped_for_space.fetch_add(1, Ordering::Relaxed);
            if !content {
                self.dropped_records.fetch_add(records, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Drops one partition; gives how many entries it held (approximately).
    fn drop_partition(&self, partition: u64, content: bool, why: &str) -> Result<u64, StoreError> {
        let keyspaces: Vec<fjall::Keyspace> = {
            let mut parts = self.partitions.write().unwrap_or_else(|e| e.into_inner());
            match content {
                true => parts.content.remove(&partition).into_iter().collect(),
                false => parts
                    .records
                    .remove(&partition)
                    .map(|p| vec![p.records, p.index])
                    .unwrap_or_default(),
            }
        };
        let Some(first) = keyspaces.first() else {
            return Ok(0);
        };
        let entries = first.approximate_len() as u64;
        let bytes: u64 = keyspaces.iter().map(fjall::Keyspace::disk_space).sum();
        for keyspace in keyspaces {
            self.db.delete_keyspace(keyspace)?;
        }
        tracing::info!(
            partition,
            content,
            bytes,
            start = %keys::day_of(partition * PARTITION_MS),
            why,
            "log partition dropped"
        );
        Ok(entries)
    }

    /// Flushes every memtable once the journal holds half its budget, so its old files
    /// can go. (fjall's own `journal_disk_space` counts the active file at the 64 MiB it
    /// is sized to ahead of use, which would flush every memtable after every batch:
    /// tables of a few hundred kilobytes and compactions without end.)
    pub fn trim_journal(&self) -> Result<(), StoreError> {
        if self.journal_bytes() < JOURNAL_BUDGET_BYTES / 2 {
            return Ok(());
        }
        self.meta.rotate_memtable()?;
        for keyspace in self.partition_keyspaces() {
            keyspace.rotate_memtable()?;
        }
        Ok(())
    }

    /// Every partition's keyspaces (records, index, content).
    fn partition_keyspaces(&self) -> Vec<fjall::Keyspace> {
        let parts = self.partitions.read().unwrap_or_else(|e| e.into_inner());
        parts
            .records
            .values()
            .flat_map(Part::keyspaces)
            .chain(parts.content.values())
            .cloned()
            .collect()
    }

    /// Bytes of every keyspace's tables and blobs.
    pub(super) fn partition_bytes(&self) -> u64 {
        self.partition_keyspaces()
            .iter()
            .map(fjall::Keyspace::disk_space)
            .sum::<u64>()
            + self.meta.disk_space()
    }

    /// Writes every memtable to tables and waits (tests: so sizes on disk are known).
    #[cfg(test)]
    pub fn flush(&self) -> Result<(), StoreError> {
        for keyspace in self.partition_keyspaces() {
            keyspace.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    /// Whether the partitions are over their share of `max_disk_bytes`.
    pub fn over(&self, max_disk_bytes: u64) -> bool {
        self.partition_bytes() > max_disk_bytes.saturating_sub(JOURNAL_BUDGET_BYTES)
    }

    /// Bytes on disk: every keyspace's tables and blobs, and the journal's.
    pub fn disk_bytes(&self) -> u64 {
        self.partition_bytes() + self.journal_bytes()
    }

    /// What the journal files take: fjall sizes a journal file at 64 MiB ahead of use,
    /// so only the blocks written count.
    fn journal_bytes(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".jnl"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.blocks() * 512)
                    .sum()
            })
            .unwrap_or(0)
    }
}
