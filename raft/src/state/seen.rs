//! What the state remembers of applied charges to de-duplicate them: each outbox's last
//! mark applied (protocol 6, `OutboxMarks`), and the request ids of charges proposed
//! without a mark (`SeenRequests`).
//!
//! A cluster at saturation applies thousands of charges a second and remembers each id for
//! `DEDUP_HORIZON_MS`, so the bytes per id are most of the state's memory. A generated id
//! (`req_` and 36 lowercase hex digits) is kept as its 18 bytes, any other id as its text.
//! Both sort as their text does, and a snapshot writes them as text, in the shape of the
//! id-keyed map and time-ordered set a build before this one kept, so snapshots read and
//! write the same bytes as before.

use crate::lease::NodeId;
use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeTuple, Serializer};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use tollgate_proto::{OutboxMark, RequestId, UnixMs};

/// Outboxes remembered at most; past it, the one that charged least recently is
/// forgotten. An outbox is made once per node data directory, so this is thousands of
/// nodes' lifetimes.
pub const MAX_OUTBOXES: usize = 4096;

/// The last mark applied of each node's outbox. A node proposes its outbox's charges in
/// the outbox's order, one batch after another, so a charge at or before its outbox's
/// mark was applied before: memory per node, not per request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxMarks {
    marks: BTreeMap<(NodeId, u64), Progress>,
    /// Marks advanced so far: orders the outboxes by when they last charged.
    advances: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Progress {
    through: OutboxMark,
    /// `advances` when this outbox's mark last moved.
    at_advance: u64,
}

impl OutboxMarks {
    /// Moves outbox `(node, outbox)`'s mark to `mark`; false when `mark` is at or before
    /// it (the charge there was applied).
    pub(super) fn advance(&mut self, node: NodeId, outbox: u64, mark: OutboxMark) -> bool {
        self.advances += 1;
        let at_advance = self.advances;
        if let Some(progress) = self.marks.get_mut(&(node, outbox)) {
            if mark <= progress.through {
                return false;
            }
            *progress = Progress {
                through: mark,
                at_advance,
            };
            return true;
        }
        if self.marks.len() >= MAX_OUTBOXES {
            let stalest = self
                .marks
                .iter()
                .min_by_key(|(key, p)| (p.at_advance, **key))
                .map(|(key, _)| *key);
            if let Some(key) = stalest {
                self.marks.remove(&key);
            }
        }
        self.marks.insert(
            (node, outbox),
            Progress {
                through: mark,
                at_advance,
            },
        );
        true
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }

    /// The last mark applied of outbox `(node, outbox)`.
    pub fn mark(&self, node: NodeId, outbox: u64) -> Option<OutboxMark> {
        self.marks.get(&(node, outbox)).map(|p| p.through)
    }
}

/// Hex digits of a generated request id after its prefix (`RequestId::generate`).
const PACKED_DIGITS: usize = 36;
/// The text length of a packed id: prefix and digits.
const PACKED_TEXT: usize = RequestId::PREFIX.len() + PACKED_DIGITS;

/// One request id: packed when it has the generated shape, else its text.
#[derive(Clone, PartialEq, Eq)]
enum Id {
    Packed([u8; PACKED_DIGITS / 2]),
    Text(Box<str>),
}

fn lower_hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

impl Id {
    fn new(id: &str) -> Id {
        Self::pack(id).map_or_else(|| Id::Text(id.into()), Id::Packed)
    }

    /// The bytes of a generated id's digits; none for any other id (upper-case digits
    /// included, which would not sort as their text).
    fn pack(id: &str) -> Option<[u8; PACKED_DIGITS / 2]> {
        let digits = id.strip_prefix(RequestId::PREFIX)?.as_bytes();
        if digits.len() != PACKED_DIGITS {
            return None;
        }
        let mut packed = [0u8; PACKED_DIGITS / 2];
        for (byte, pair) in packed.iter_mut().zip(digits.chunks_exact(2)) {
            *byte = lower_hex_value(pair[0])? << 4 | lower_hex_value(pair[1])?;
        }
        Some(packed)
    }

    /// Calls `f` with the id's text (a packed id's is written on the stack).
    fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Id::Text(text) => f(text),
            Id::Packed(packed) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut text = [0u8; PACKED_TEXT];
                text[..RequestId::PREFIX.len()].copy_from_slice(RequestId::PREFIX.as_bytes());
                for (i, byte) in packed.iter().enumerate() {
                    let at = RequestId::PREFIX.len() + 2 * i;
                    text[at] = HEX[usize::from(byte >> 4)];
                    text[at + 1] = HEX[usize::from(byte & 0xf)];
                }
                // All ASCII, so never the empty default.
                f(std::str::from_utf8(&text).unwrap_or_default())
            }
        }
    }
}

/// The order of the ids' text: for two packed ids (equal length, lower-case hex) that is
/// the order of their bytes.
impl Ord for Id {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Id::Packed(a), Id::Packed(b)) => a.cmp(b),
            _ => self.with_text(|a| other.with_text(|b| a.cmp(b))),
        }
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|text| f.write_str(text))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.with_text(|text| serializer.serialize_str(text))
    }
}

/// Applied charges' request ids with the time of each charge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct SeenRequests {
    at: BTreeMap<Id, UnixMs>,
    by_time: BTreeSet<(UnixMs, Id)>,
}

impl SeenRequests {
    pub(super) fn contains(&self, id: &RequestId) -> bool {
        self.at.contains_key(&Id::new(id.as_str()))
    }

    /// Remembers `id`, charged at `at_ms`; false when it was already remembered.
    pub(super) fn insert(&mut self, id: &RequestId, at_ms: UnixMs) -> bool {
        let id = Id::new(id.as_str());
        if self.at.contains_key(&id) {
            return false;
        }
        self.by_time.insert((at_ms, id.clone()));
        self.at.insert(id, at_ms);
        true
    }

    /// Forgets every id charged before `horizon`.
    pub(super) fn forget_before(&mut self, horizon: UnixMs) {
        while self.by_time.first().is_some_and(|(at, _)| *at < horizon) {
            if let Some((_, id)) = self.by_time.pop_first() {
                self.at.remove(&id);
            }
        }
    }
}

/// Written as `(BTreeMap<RequestId, UnixMs>, BTreeSet<(UnixMs, RequestId)>)`.
impl Serialize for SeenRequests {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&self.at)?;
        tuple.serialize_element(&self.by_time)?;
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for SeenRequests {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        type Shape = (BTreeMap<RequestId, UnixMs>, BTreeSet<(UnixMs, RequestId)>);
        let (at, by_time) = Shape::deserialize(deserializer)?;
        Ok(SeenRequests {
            at: at
                .iter()
                .map(|(id, at)| (Id::new(id.as_str()), *at))
                .collect(),
            by_time: by_time
                .iter()
                .map(|(at, id)| (*at, Id::new(id.as_str())))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    const IDS: [&str; 7] = [
        "req_0196b2c4a5f100000000deadbeef00000007",
        "req_0196b2c4a5f100000000deadbeef00000008",
        "req_0196b2c4a5f0ffffffffffffffff00000007",
        // Other shapes: upper-case digits, a longer counter, another tool's ids.
        "req_0196B2C4A5F100000000DEADBEEF00000007",
        "req_0196b2c4a5f100000000deadbeef0000000100",
        "req_c1_2_0",
        "r1",
    ];

    #[test]
    fn ids_pack_and_sort_as_their_text() {
        assert!(matches!(Id::new(IDS[0]), Id::Packed(_)));
        let generated = RequestId::generate(1_796_601_600_123, u64::MAX, 7);
        assert!(matches!(Id::new(generated.as_str()), Id::Packed(_)));
        assert!(matches!(Id::new(IDS[3]), Id::Text(_)));
        assert!(matches!(Id::new(IDS[4]), Id::Text(_)));
        for a in IDS {
            Id::new(a).with_text(|text| assert_eq!(text, a));
            for b in IDS {
                assert_eq!(Id::new(a).cmp(&Id::new(b)), a.cmp(b), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn snapshots_keep_the_bytes_of_text_ids() {
        let mut seen = SeenRequests::default();
        let mut at = BTreeMap::new();
        let mut by_time = BTreeSet::new();
        for (i, id) in IDS.iter().enumerate() {
            // Times out of the ids' order, two ids at one time.
            let ms = 1_000 - (i as u64 / 2) * 10;
            assert!(seen.insert(&RequestId::from(*id), ms));
            at.insert(RequestId::from(*id), ms);
            by_time.insert((ms, RequestId::from(*id)));
        }
        assert!(!seen.insert(&RequestId::from(IDS[2]), 5));
        let bytes = codec::encode(&seen).expect("encode");
        assert_eq!(bytes, codec::encode(&(&at, &by_time)).expect("encode"));
        let back: SeenRequests = codec::decode(&bytes).expect("decode");
        assert_eq!(back, seen);
    }

    #[test]
    fn ids_are_forgotten_by_charge_time() {
        let mut seen = SeenRequests::default();
        seen.insert(&RequestId::from(IDS[0]), 20);
        seen.insert(&RequestId::from(IDS[1]), 10);
        seen.insert(&RequestId::from(IDS[5]), 30);
        seen.forget_before(21);
        assert!(seen.insert(&RequestId::from(IDS[0]), 40));
        assert!(seen.insert(&RequestId::from(IDS[1]), 40));
        assert!(!seen.insert(&RequestId::from(IDS[5]), 40));
    }

    #[test]
    fn outbox_marks_only_move_forward_and_stay_bounded() {
        let mark = |segment, end| OutboxMark { segment, end };
        let mut marks = OutboxMarks::default();
        assert!(marks.advance(1, 7, mark(1, 100)));
        assert!(!marks.advance(1, 7, mark(1, 100)));
        assert!(!marks.advance(1, 7, mark(1, 50)));
        assert!(marks.advance(1, 7, mark(2, 10)));
        // Another outbox of the same node (its data directory was made anew).
        assert!(marks.advance(1, 8, mark(1, 10)));
        assert_eq!(marks.mark(1, 7), Some(mark(2, 10)));
        for outbox in 0..MAX_OUTBOXES as u64 {
            marks.advance(2, 1000 + outbox, mark(1, 1));
            // Outbox (1, 8) keeps charging: the stalest are forgotten, not it.
            marks.advance(1, 8, mark(2, outbox + 1));
        }
        assert_eq!(marks.marks.len(), MAX_OUTBOXES);
        assert_eq!(marks.mark(1, 7), None);
        assert_eq!(marks.mark(1, 8), Some(mark(2, MAX_OUTBOXES as u64)));
    }
}
