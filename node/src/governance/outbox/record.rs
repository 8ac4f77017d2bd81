//! The outbox's on-disk format: segment names, positions in the log, framed records
//! (length, CRC-32, payload) and reading them back up to the first torn or corrupt one.
//!
//! A payload is a bare `Charge` (the first format, still written when no request log is
//! kept) or, when the length's top bit is set, a kind byte and then an `Intent` or a
//! `Done`.

use super::error::OutboxError;
use serde::{Deserialize, Serialize};
use std::path::Path;
use tollgate_proto::records::RequestRecord;
use tollgate_proto::{Charge, KeyId, ProviderConfigId, Usd};
use tollgate_raft::codec;

/// Set in a record's length word: the payload starts with a kind byte.
const TAGGED: u32 = 1 << 31;
const KIND_INTENT: u8 = 1;
const KIND_DONE: u8 = 2;

/// A request about to be sent to a provider: written before it is, so that a node
/// stopped while the provider works on it still charges it (at `reserved`) and logs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// What is known before the answer (status 0).
    pub record: RequestRecord,
    pub key_id: KeyId,
    pub provider_config_id: ProviderConfigId,
    /// The upstream model, whose price the reservation used.
    pub model: String,
    pub reserved: Usd,
}

/// A finished request: its record and, if it owes anything, its charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    pub charge: Option<Charge>,
    pub record: RequestRecord,
}

/// What one outbox record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Charge(Charge),
    Intent(Intent),
    Done(Done),
}

impl Entry {
    /// The charge to propose, if the entry carries one.
    pub fn charge(&self) -> Option<&Charge> {
        match self {
            Entry::Charge(c) => Some(c),
            Entry::Done(d) => d.charge.as_ref(),
            Entry::Intent(_) => None,
        }
    }
}

/// Largest payload of a record. A charge is a few hundred bytes; a larger length read
/// from a segment is corruption, and must not make the replay allocate without bound.
pub(super) const RECORD_MAX_BYTES: usize = 1 << 20;

/// Length and CRC-32, before the payload.
pub(super) const HEADER_BYTES: usize = 8;

/// The number of a segment, which is also its place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub(super) u64);

impl SegmentId {
    pub(super) fn file_name(self) -> String {
        format!("{:020}.log", self.0)
    }

    pub(super) fn parse(file_name: &str) -> Option<SegmentId> {
        let digits = file_name.strip_suffix(".log")?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(SegmentId)
    }
}

/// Where a record is in the log: its segment and the offset just past it. Positions
/// order records as the log does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: SegmentId,
    pub end: u64,
}

impl Position {
    /// The number of its segment (numbers only grow).
    pub fn segment_number(self) -> u64 {
        self.segment.0
    }

    pub fn encode(self) -> [u8; 20] {
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&self.segment.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.end.to_le_bytes());
        let crc = crc32(&bytes[..16]);
        bytes[16..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Position> {
        let bytes: &[u8; 20] = bytes.try_into().ok()?;
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
        (crc32(&bytes[..16]) == crc).then(|| Position {
            segment: SegmentId(u64_at(0)),
            end: u64_at(8),
        })
    }
}

/// What a record does to the outbox's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// A charge to apply (alone or in a `Done`).
    Charge,
    /// An intent, open until its `Done`.
    Intent,
    /// A `Done` that owes nothing.
    Free,
}

/// One entry's framed record, encoded before the outbox lock is taken.
pub struct Record {
    pub(super) bytes: Vec<u8>,
    pub(super) kind: RecordKind,
    /// The segments of the intents this record completes.
    pub(super) closes: Vec<SegmentId>,
}

impl Record {
    pub fn encode(charge: &Charge) -> Result<Record, OutboxError> {
        let payload = codec::encode(charge)?;
        Ok(Record {
            bytes: frame(0, None, &payload)?,
            kind: RecordKind::Charge,
            closes: Vec::new(),
        })
    }

    pub fn intent(intent: &Intent) -> Result<Record, OutboxError> {
        let payload = codec::encode(intent)?;
        Ok(Record {
            bytes: frame(TAGGED, Some(KIND_INTENT), &payload)?,
            kind: RecordKind::Intent,
            closes: Vec::new(),
        })
    }

    /// A finished request, completing the intents written in `closes`.
    pub fn done(done: &Done, closes: Vec<SegmentId>) -> Result<Record, OutboxError> {
        let payload = codec::encode(done)?;
        Ok(Record {
            bytes: frame(TAGGED, Some(KIND_DONE), &payload)?,
            kind: match done.charge {
                Some(_) => RecordKind::Charge,
                None => RecordKind::Free,
            },
            closes,
        })
    }
}

fn frame(flag: u32, kind: Option<u8>, payload: &[u8]) -> Result<Vec<u8>, OutboxError> {
    let len = payload.len() + usize::from(kind.is_some());
    if len > RECORD_MAX_BYTES {
        return Err(OutboxError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(HEADER_BYTES + len);
    // The limit above keeps the length within 31 bits.
    body.extend_from_slice(&(len as u32 | flag).to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    if let Some(kind) = kind {
        body.push(kind);
    }
    body.extend_from_slice(payload);
    let crc = crc32(&body[HEADER_BYTES..]);
    body[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(body)
}

fn decode_entry(tagged: bool, payload: &[u8]) -> Result<Entry, String> {
    if !tagged {
        return codec::decode::<Charge>(payload)
            .map(Entry::Charge)
            .map_err(|e| format!("{e:?}"));
    }
    let (kind, body) = payload.split_first().ok_or("empty tagged record")?;
    match *kind {
        KIND_INTENT => codec::decode(body).map(Entry::Intent),
        KIND_DONE => codec::decode(body).map(Entry::Done),
        other => return Err(format!("unknown record kind {other}")),
    }
    .map_err(|e| format!("{e:?}"))
}

/// A `Charge` read in place, to step over it (`Charge`'s fields in its order).
#[derive(Deserialize)]
#[allow(dead_code)]
struct ChargeRef<'a> {
    request_id: &'a str,
    key_id: &'a str,
    #[serde(borrow)]
    provider_config_id: Option<&'a str>,
    model: &'a str,
    usage: tollgate_proto::Usage,
    cost: Usd,
    at_ms: u64,
}

/// The encoding of a `Done`'s record (what follows its charge), if the payload is a
/// `Done`; other kinds are not read.
pub(super) fn done_record(tagged: bool, payload: &[u8]) -> Result<Option<&[u8]>, String> {
    match payload.split_first() {
        Some((&KIND_DONE, body)) if tagged => {
            let (_, charge_len) =
                codec::decode_front::<Option<ChargeRef<'_>>>(body).map_err(|e| format!("{e:?}"))?;
            Ok(Some(&body[charge_len..]))
        }
        _ => Ok(None),
    }
}

/// The entries of a segment's bytes (each with the offset past its record, counted from
/// `base`, where `bytes` start in the segment) up to the first short or corrupt record,
/// and the length of that intact prefix.
pub(super) fn parse_records(bytes: &[u8], base: u64, path: &Path) -> (Vec<(Entry, u64)>, usize) {
    parse_with(bytes, base, path, decode_entry)
}

/// A `Done`'s record encoding (`None` for another kind) and the offset past its entry.
pub(super) type DoneRecord = (Option<Vec<u8>>, u64);

/// `parse_records` for the request log's writer: of each `Done`, its record's encoding;
/// every other record a `None` (its position still counts).
pub(super) fn parse_done(bytes: &[u8], base: u64, path: &Path) -> (Vec<DoneRecord>, usize) {
    parse_with(bytes, base, path, |tagged, payload| {
        done_record(tagged, payload).map(|r| r.map(<[u8]>::to_vec))
    })
}

fn parse_with<T>(
    bytes: &[u8],
    base: u64,
    path: &Path,
    decode: impl Fn(bool, &[u8]) -> Result<T, String>,
) -> (Vec<(T, u64)>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER_BYTES) {
        let word = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let tagged = word & TAGGED != 0;
        let len = (word & !TAGGED) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        // No charge encodes to nothing, so a zero length is a zero-filled tail (what a
        // file system may leave after power loss), not an empty record.
        if len == 0 || len > RECORD_MAX_BYTES {
            break;
        }
        let Some(payload) = bytes.get(at + HEADER_BYTES..at + HEADER_BYTES + len) else {
            break;
        };
        if crc32(payload) != crc {
            break;
        }
        let offset = at;
        at += HEADER_BYTES + len;
        match decode(tagged, payload) {
            Ok(entry) => records.push((entry, base + at as u64)),
            // The CRC vouches for the framing, so the records after this one are read.
            Err(e) => {
                tracing::error!(segment = %path.display(), offset = base + offset as u64, error = %e, "outbox record intact but not readable; skipped")
            }
        }
    }
    (records, at)
}

/// CRC-32 (IEEE 802.3, as in zlib and gzip), with the CPU's carry-less multiply where
/// it has one: the writer of the request log checks every record it reads.
pub(super) fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}
