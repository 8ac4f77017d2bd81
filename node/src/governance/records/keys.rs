//! How the log store lays records out in keys: time partitions (one keyspace each, so
//! retention drops whole partitions), and inside one the record, its id, its index
//! entries and the hour's totals, each under its own one-byte prefix. Times and
//! sequences are big-endian, so keys sort as time does.

use tollgate_proto::records::{GroupBy, RequestRecord};
use tollgate_proto::UnixMs;

/// The span of one partition. Retention and the disk cap drop whole partitions, so this
/// is the finest step they drop by; a query over an hour reads one or two of them. Six
/// hours keep a 90-day retention at 360 keyspaces (each one an LSM tree to open at start).
pub const PARTITION_MS: u64 = 6 * HOUR_MS;

/// Totals are kept per hour: the finest `since`/`until` of stats.
pub const HOUR_MS: u64 = 3_600_000;

/// The longest value an index entry keeps; a longer one (a session id, a model name) is
/// indexed by its first bytes, and the filter checks the whole value.
pub const INDEX_VALUE_MAX: usize = 128;

const RECORD: u8 = b'r';
const ID: u8 = b'i';
const INDEX: u8 = b'x';
const TOTALS: u8 = b't';

pub fn partition_of(time_ms: UnixMs) -> u64 {
    time_ms / PARTITION_MS
}

/// The keyspace of a partition's records.
pub fn records_keyspace(partition: u64) -> String {
    format!("r{partition:010}")
}

/// The keyspace of a partition's index entries, ids and totals.
pub fn index_keyspace(partition: u64) -> String {
    format!("x{partition:010}")
}

/// The keyspace of a partition's captured bodies (its own retention).
pub fn content_keyspace(partition: u64) -> String {
    format!("c{partition:010}")
}

/// A keyspace name's kind (`b'r'`, `b'x'` or `b'c'`) and partition.
pub fn parse_keyspace(name: &str) -> Option<(u8, u64)> {
    let kind = *name.as_bytes().first()?;
    let digits = name.get(1..)?;
    if !matches!(kind, b'r' | b'x' | b'c') || digits.len() != 10 {
        return None;
    }
    Some((kind, digits.parse().ok()?))
}

/// Where a record is in its partition: time, then the node's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Slot {
    pub time_ms: UnixMs,
    pub seq: u64,
}

impl Slot {
    pub fn bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.time_ms.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    /// The slot at the end of `key` (the last 16 bytes).
    pub fn from_tail(key: &[u8]) -> Option<Slot> {
        let tail = key.get(key.len().checked_sub(16)?..)?;
        let mut t = [0u8; 8];
        let mut s = [0u8; 8];
        t.copy_from_slice(&tail[..8]);
        s.copy_from_slice(&tail[8..]);
        Some(Slot {
            time_ms: u64::from_be_bytes(t),
            seq: u64::from_be_bytes(s),
        })
    }
}

pub fn record_key(slot: Slot) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(RECORD);
    k.extend_from_slice(&slot.bytes());
    k
}

/// Every record key of a partition starts with this.
pub fn record_prefix() -> Vec<u8> {
    vec![RECORD]
}

pub fn id_key(request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + request_id.len());
    k.push(ID);
    k.extend_from_slice(request_id.as_bytes());
    k
}

/// What an index is on: a filter of `GET /api/v1/logs` that narrows a query by key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Session = 0,
    VirtualKey = 1,
    User = 2,
    Team = 3,
    Customer = 4,
    Model = 5,
}

impl Dim {
    /// Every indexed field of a record (the provider is a filter, not an index: a
    /// handful of providers would make its index as long as the log).
    pub fn of(record: &RequestRecord) -> [(Dim, Option<&str>); 6] {
        [
            (Dim::Session, record.session_id.as_deref()),
            (
                Dim::VirtualKey,
                record.virtual_key_id.as_ref().map(|k| k.as_str()),
            ),
            (Dim::User, record.user_id.as_deref()),
            (Dim::Team, record.team_id.as_ref().map(|t| t.as_str())),
            (
                Dim::Customer,
                record.customer_id.as_ref().map(|c| c.as_str()),
            ),
            (Dim::Model, record.model.as_deref()),
        ]
    }
}

/// The prefix of every index entry of `dim` = `value`.
pub fn index_prefix(dim: Dim, value: &str) -> Vec<u8> {
    let value = cut(value.as_bytes(), INDEX_VALUE_MAX);
    let mut k = Vec::with_capacity(3 + value.len() + 16);
    k.push(INDEX);
    k.push(dim as u8);
    // The length keeps one value from being a prefix of another.
    k.push(value.len() as u8);
    k.extend_from_slice(value);
    k
}

pub fn index_key(dim: Dim, value: &str, slot: Slot) -> Vec<u8> {
    let mut k = index_prefix(dim, value);
    k.extend_from_slice(&slot.bytes());
    k
}

fn cut(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// The value a record is grouped under, for each way stats group.
pub fn group_key(record: &RequestRecord, group: GroupBy) -> String {
    let or_none = |v: Option<&str>| v.unwrap_or("").to_owned();
    match group {
        GroupBy::VirtualKey => or_none(record.virtual_key_id.as_ref().map(|k| k.as_str())),
        GroupBy::User => or_none(record.user_id.as_deref()),
        GroupBy::Team => or_none(record.team_id.as_ref().map(|t| t.as_str())),
        GroupBy::Customer => or_none(record.customer_id.as_ref().map(|c| c.as_str())),
        GroupBy::Model => or_none(record.model.as_deref()),
        GroupBy::Provider => or_none(record.provider.as_deref()),
        GroupBy::Day => day_of(record.time_ms),
    }
}

/// `YYYY-MM-DD` (UTC) of a time.
pub fn day_of(time_ms: UnixMs) -> String {
    let days = (time_ms / 86_400_000) as i64;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The key of an hour's totals of one group.
pub fn totals_key(hour: u64, group: GroupBy, key: &str) -> Vec<u8> {
    let mut k = totals_prefix(hour);
    k.push(group as u8);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Every totals key of an hour starts with this.
pub fn totals_prefix(hour: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + 64);
    k.push(TOTALS);
    k.extend_from_slice(&hour.to_be_bytes());
    k
}

/// The group and its key from a totals key.
pub fn parse_totals_key(key: &[u8]) -> Option<(u64, u8, &str)> {
    if key.first() != Some(&TOTALS) || key.len() < 10 {
        return None;
    }
    let mut h = [0u8; 8];
    h.copy_from_slice(&key[1..9]);
    Some((
        u64::from_be_bytes(h),
        key[9],
        std::str::from_utf8(&key[10..]).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_civil_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(951_782_400_000), "2000-02-29");
        assert_eq!(day_of(1_796_601_600_000), "2026-12-07");
    }

    #[test]
    fn keys_sort_by_time_then_sequence() {
        let a = index_key(Dim::Model, "m", Slot { time_ms: 5, seq: 9 });
        let b = index_key(Dim::Model, "m", Slot { time_ms: 6, seq: 1 });
        assert!(a < b);
        assert_eq!(Slot::from_tail(&b), Some(Slot { time_ms: 6, seq: 1 }));
        // A value is never a prefix of a longer one's entries.
        assert!(!index_key(Dim::Model, "mm", Slot { time_ms: 0, seq: 0 })
            .starts_with(&index_prefix(Dim::Model, "m")));
        assert_eq!(parse_keyspace(&records_keyspace(42)), Some((b'r', 42)));
        assert_eq!(parse_keyspace(&content_keyspace(7)), Some((b'c', 7)));
        assert_eq!(parse_keyspace("meta"), None);
        let t = totals_key(3, GroupBy::Model, "claude");
        assert_eq!(
            parse_totals_key(&t),
            Some((3, GroupBy::Model as u8, "claude"))
        );
    }
}
