//! How the log store lays records out in keys: time partitions (one keyspace each, so
//! retention drops whole partitions), and inside one the records, the index and the
//! hour's totals, each under its own one-byte prefix. Times and sequences are
//! big-endian, so keys sort as time does.
//!
//! The index is kept in postings: one entry per indexed value, second of record time
//! and batch, listing the records of that batch with that value in that second. A
//! batch of a thousand records from a few keys and models writes a few dozen entries,
//! not one per record and value. Records are found by id through the time their id
//! carries (`RequestId::time_ms`); stores written before postings also hold one entry
//! per record and value (`LEGACY_INDEX`) and one per id (`LEGACY_ID`).

use tollgate_proto::records::{GroupBy, RecordRef};
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

/// The span of record time one index entry covers: records of a second are merged into
/// time order when a query reads them (a batch holds records of any start time).
pub const POSTING_MS: u64 = 1000;

const RECORD: u8 = b'r';
const LEGACY_ID: u8 = b'i';
/// Per-record index entries of stores written before postings (rebuilt at open).
pub const LEGACY_INDEX: u8 = b'x';
const POSTING: u8 = b'p';
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

/// Every record key of the millisecond `time_ms` starts with this.
pub fn record_time_prefix(time_ms: UnixMs) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = RECORD;
    k[1..].copy_from_slice(&time_ms.to_be_bytes());
    k
}

/// The entry of a record's id in stores written before postings.
pub fn legacy_id_key(request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + request_id.len());
    k.push(LEGACY_ID);
    k.extend_from_slice(request_id.as_bytes());
    k
}

/// What an index is on: a filter of `GET /api/v1/logs` that narrows a query by key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
    pub fn of<'a>(record: &RecordRef<'a>) -> [(Dim, Option<&'a str>); 6] {
        [
            (Dim::Session, record.session_id),
            (Dim::VirtualKey, record.virtual_key_id),
            (Dim::User, record.user_id),
            (Dim::Team, record.team_id),
            (Dim::Customer, record.customer_id),
            (Dim::Model, record.model),
        ]
    }
}

/// The prefix of every index entry of `dim` = `value`.
pub fn posting_prefix(dim: Dim, value: &str) -> Vec<u8> {
    posting_prefix_of(dim, indexed(value))
}

/// `posting_prefix` of a value already cut (`indexed`).
pub fn posting_prefix_of(dim: Dim, value: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + value.len() + 16);
    k.push(POSTING);
    k.push(dim as u8);
    // The length keeps one value from being a prefix of another.
    k.push(value.len() as u8);
    k.extend_from_slice(value);
    k
}

/// The second of record time an index entry covers.
pub fn posting_second(time_ms: UnixMs) -> u64 {
    time_ms / POSTING_MS
}

/// The key of an index entry: its value, its second, and the sequence of its first
/// record (which no other entry of the value lists: a record is in one batch, and a
/// batch writes one entry per value and second).
pub fn posting_key(prefix: &[u8], second: u64, first_seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&second.to_be_bytes());
    k.extend_from_slice(&first_seq.to_be_bytes());
    k
}

/// The (exclusive) end of the index entries of `prefix` through `second`.
pub fn posting_end(prefix: &[u8], second: u64) -> Vec<u8> {
    match second.checked_add(1) {
        Some(next) => posting_key(prefix, next, 0),
        None => {
            let mut k = prefix.to_vec();
            k.extend_from_slice(&[0xff; 17]);
            k
        }
    }
}

/// The second an index entry covers, from its key.
pub fn posting_second_of(key: &[u8]) -> Option<u64> {
    let at = key.len().checked_sub(16)?;
    Some(u64::from_be_bytes(key.get(at..at + 8)?.try_into().ok()?))
}

/// An index entry's records of one second, in ascending order: each as its millisecond
/// in the second (2 bytes) and its sequence (8 bytes).
pub fn encode_postings(second: u64, slots: &[Slot]) -> Vec<u8> {
    let mut v = Vec::with_capacity(slots.len() * 10);
    for slot in slots {
        let ms = slot.time_ms.saturating_sub(second * POSTING_MS) as u16;
        v.extend_from_slice(&ms.to_be_bytes());
        v.extend_from_slice(&slot.seq.to_be_bytes());
    }
    v
}

/// The records an index entry of `second` lists (`encode_postings`).
pub fn decode_postings(second: u64, bytes: &[u8], into: &mut Vec<Slot>) -> Option<()> {
    if !bytes.len().is_multiple_of(10) {
        return None;
    }
    for chunk in bytes.chunks_exact(10) {
        let ms = u16::from_be_bytes([chunk[0], chunk[1]]) as u64;
        if ms >= POSTING_MS {
            return None;
        }
        into.push(Slot {
            time_ms: second * POSTING_MS + ms,
            seq: u64::from_be_bytes(chunk[2..].try_into().ok()?),
        });
    }
    Some(())
}

/// A per-record index entry of a store written before postings: its value's prefix
/// (`LEGACY_INDEX`, dim, length, value), then the slot.
pub fn legacy_index_prefix_len(key: &[u8]) -> Option<usize> {
    let len = *key.get(2)? as usize;
    (key.first() == Some(&LEGACY_INDEX) && key.len() == 3 + len + 16).then_some(3 + len)
}

/// The part of an indexed value its entries are under.
pub fn indexed(value: &str) -> &[u8] {
    cut(value.as_bytes(), INDEX_VALUE_MAX)
}

fn cut(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

/// The value a record is grouped under, for one way stats group: a field of the
/// record, or its day (made a string once per batch, not per record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GroupName<'a> {
    Field(&'a str),
    /// Days since 1970-01-01 (UTC).
    Day(u64),
}

impl<'a> GroupName<'a> {
    pub fn of(record: &RecordRef<'a>, group: GroupBy) -> GroupName<'a> {
        let field = |v: Option<&'a str>| GroupName::Field(v.unwrap_or(""));
        match group {
            GroupBy::VirtualKey => field(record.virtual_key_id),
            GroupBy::User => field(record.user_id),
            GroupBy::Team => field(record.team_id),
            GroupBy::Customer => field(record.customer_id),
            GroupBy::Model => field(record.model),
            GroupBy::Provider => field(record.provider),
            GroupBy::Day => GroupName::Day(record.time_ms / 86_400_000),
        }
    }
}

impl std::fmt::Display for GroupName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupName::Field(s) => f.write_str(s),
            GroupName::Day(days) => f.write_str(&day_of(days * 86_400_000)),
        }
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
        let m = posting_prefix(Dim::Model, "m");
        let a = posting_key(&m, 5, 9);
        let b = posting_key(&m, 6, 1);
        assert!(a < b && b < posting_end(&m, 6) && posting_end(&m, 6) <= posting_key(&m, 7, 0));
        assert_eq!(posting_second_of(&b), Some(6));
        assert!(posting_end(&m, u64::MAX) > posting_key(&m, u64::MAX, u64::MAX));
        // A value is never a prefix of a longer one's entries.
        assert!(!posting_key(&posting_prefix(Dim::Model, "mm"), 0, 0).starts_with(&m));
        let slots = [
            Slot {
                time_ms: 6000,
                seq: 4,
            },
            Slot {
                time_ms: 6999,
                seq: 2,
            },
        ];
        let mut back = Vec::new();
        decode_postings(6, &encode_postings(6, &slots), &mut back).expect("decodes");
        assert_eq!(back, slots);
        assert!(decode_postings(6, &[0; 9], &mut back).is_none());
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
