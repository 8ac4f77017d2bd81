//! The outbox's on-disk format: segment names, positions in the log, framed records
//! (length, CRC-32, payload) and reading them back up to the first torn or corrupt one.

use super::error::OutboxError;
use std::path::Path;
use tollgate_proto::Charge;
use tollgate_raft::codec;

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
    pub(super) fn encode(self) -> [u8; 20] {
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&self.segment.0.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.end.to_le_bytes());
        let crc = crc32(&bytes[..16]);
        bytes[16..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Position> {
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

/// One charge's framed record, encoded before the outbox lock is taken.
pub struct Record(pub(super) Vec<u8>);

impl Record {
    pub fn encode(charge: &Charge) -> Result<Record, OutboxError> {
        let payload = codec::encode(charge)?;
        if payload.len() > RECORD_MAX_BYTES {
            return Err(OutboxError::TooLarge(payload.len()));
        }
        let mut bytes = Vec::with_capacity(HEADER_BYTES + payload.len());
        // The limit above keeps the length within a u32.
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        Ok(Record(bytes))
    }
}

/// The charges of a segment's bytes (each with the offset past its record) up to the
/// first short or corrupt record, and the length of that intact prefix.
pub(super) fn parse_records(bytes: &[u8], path: &Path) -> (Vec<(Charge, u64)>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER_BYTES) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
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
        match codec::decode::<Charge>(payload) {
            Ok(charge) => records.push((charge, at as u64)),
            // The CRC vouches for the framing, so the records after this one are read.
            Err(e) => {
                tracing::error!(segment = %path.display(), offset, error = ?e, "outbox record intact but not a charge; skipped")
            }
        }
    }
    (records, at)
}

/// The table of CRC-32 (IEEE 802.3, as in zlib and gzip). Twenty lines here rather than a
/// dependency for one function.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

pub(super) fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}
