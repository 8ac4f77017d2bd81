//! Checks a node's request-log hash chain as stored: every record's hash recomputed from
//! its content and the hash before it, the sequences contiguous from the oldest kept,
//! the head where the store says, and every anchor (a head replicated through Raft)
//! still matched. Names the first sequence that does not check out.

use super::keys::Slot;
use super::store::{chain_hash, LogStore, StoreError};
use std::collections::BTreeMap;
use tollgate_proto::audit::Anchor;
use tollgate_proto::records::{ChainReport, ChainedRecord};
use tollgate_raft::codec;

/// What is kept of each record while checking (not the record: a million records fit).
struct Link {
    prev: [u8; 32],
    hash: [u8; 32],
    /// The stored hash is the one its content gives.
    intact: bool,
}

impl LogStore {
    /// Checks this node's chain against `anchors` (this node's, oldest first).
    pub fn verify(&self, anchors: &[Anchor]) -> Result<ChainReport, StoreError> {
        let mut links: BTreeMap<u64, Link> = BTreeMap::new();
        let mut unreadable: Option<u64> = None;
        for (_, part) in self.partitions_between(0, u64::MAX) {
            for item in part.records.prefix([b'r']) {
                let (key, value) = item.into_inner()?;
                let Some(slot) = Slot::from_tail(&key) else {
                    continue;
                };
                match codec::decode::<ChainedRecord>(&value) {
                    Ok(r) => {
                        let intact = codec::encode(&r.record)
                            .map(|bytes| chain_hash(&r.prev_hash, self.node(), r.seq, &bytes))
                            .is_ok_and(|h| h == r.hash)
                            && r.seq == slot.seq
                            && r.record.node == self.node();
                        links.insert(
                            r.seq,
                            Link {
                                prev: r.prev_hash,
                                hash: r.hash,
                                intact,
                            },
                        );
                    }
                    Err(_) => {
                        unreadable = Some(unreadable.map_or(slot.seq, |u| u.min(slot.seq)));
                        links.insert(
                            slot.seq,
                            Link {
                                prev: [0; 32],
                                hash: [0; 32],
                                intact: false,
                            },
                        );
                    }
                }
            }
        }
        let head = self.chain_head();
        let mut report = ChainReport {
            node: self.node(),
            records: links.len() as u64,
            first_seq: links.keys().next().copied().unwrap_or(0),
            last_seq: links.keys().next_back().copied().unwrap_or(0),
            anchored_seq: anchors.last().map(|a| a.seq),
            ..ChainReport::default()
        };
        let mut bad = |seq: u64, why: String| {
            if report.bad_seq.is_none_or(|b| seq < b) {
                report.bad_seq = Some(seq);
                report.reason = Some(why);
            }
        };
        let mut previous: Option<(u64, [u8; 32])> = None;
        for (seq, link) in &links {
            if !link.intact {
                let why = match unreadable == Some(*seq) {
                    true => "stored record unreadable",
                    false => "record does not match its hash (changed after it was written)",
                };
                bad(*seq, why.into());
            }
            if let Some((p, hash)) = previous {
                if *seq != p + 1 {
                    bad(
                        p + 1,
                        format!("records {} to {} are missing", p + 1, seq - 1),
                    );
                } else if link.prev != hash {
                    bad(
                        *seq,
                        "chain broken: its previous hash is not the record before".into(),
                    );
                }
            }
            previous = Some((*seq, link.hash));
        }
        if head.seq > report.last_seq {
            bad(
                report.last_seq + 1,
                format!(
                    "the log ends at {} but its head is at {}: truncated",
                    report.last_seq, head.seq
                ),
            );
        } else if let Some(link) = links.get(&head.seq).filter(|_| head.seq > 0) {
            if link.hash != head.hash {
                bad(
                    head.seq,
                    "the head's hash is not the stored record's".into(),
                );
            }
        }
        for anchor in anchors {
            match links.get(&anchor.seq) {
                Some(link) if link.hash != anchor.hash => bad(
                    anchor.seq,
                    format!(
                        "anchored hash differs: the record at {} was rewritten",
                        anchor.seq
                    ),
                ),
                Some(_) => {}
                // Before the oldest kept: dropped by retention, nothing to compare.
                None if anchor.seq < report.first_seq => {}
                None if anchor.seq > report.last_seq => bad(
                    report.last_seq + 1,
                    format!(
                        "anchored at {} but the log ends at {}: truncated",
                        anchor.seq, report.last_seq
                    ),
                ),
                None => bad(
                    anchor.seq,
                    format!("anchored record {} is missing", anchor.seq),
                ),
            }
        }
        Ok(report)
    }
}
