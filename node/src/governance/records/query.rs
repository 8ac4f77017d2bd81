//! Log queries: one node's answer from its store (`query`), and the merge of every
//! node's answers into one page (`merge`). A query walks one index (the most selective
//! filter given) or the records themselves, newest first, within its time window and
//! below its cursor, and checks every filter on each record.

use super::keys::{self, Dim, Slot};
use super::store::{LogStore, Part, StoreError};
use tollgate_proto::records::{ChainedRecord, LogCursor, LogFilter, LogPage, RequestRecord};

/// Most records one page holds.
pub const PAGE_MAX: u32 = 1000;

/// Entries one query reads on one node before it stops and says where (`resume`): a
/// filter no index serves (status, text) must not make a query read the whole store.
pub const SCAN_MAX: usize = 200_000;

/// The cursor of a stored record.
pub fn cursor_of(record: &ChainedRecord) -> LogCursor {
    LogCursor {
        time_ms: record.record.time_ms,
        node: record.record.node,
        seq: record.seq,
    }
}

/// This node's records that come after `cursor`, as slots: those below the returned
/// (exclusive) bound.
fn upper_slot(node: u64, cursor: Option<LogCursor>, until_ms: u64) -> Slot {
    let until = Slot {
        time_ms: until_ms,
        seq: 0,
    };
    let Some(c) = cursor else { return until };
    let after = match node.cmp(&c.node) {
        // Records of a lower node at the cursor's time come after it.
        std::cmp::Ordering::Less => Slot {
            time_ms: c.time_ms.saturating_add(1),
            seq: 0,
        },
        std::cmp::Ordering::Equal => Slot {
            time_ms: c.time_ms,
            seq: c.seq,
        },
        std::cmp::Ordering::Greater => Slot {
            time_ms: c.time_ms,
            seq: 0,
        },
    };
    after.min(until)
}

/// The index that serves `filter` best, if any does.
fn driving_index(filter: &LogFilter) -> Option<(Dim, &str)> {
    [
        (Dim::Session, filter.session.as_deref()),
        (Dim::VirtualKey, filter.virtual_key.as_deref()),
        (Dim::User, filter.user.as_deref()),
        (Dim::Team, filter.team.as_deref()),
        (Dim::Customer, filter.customer.as_deref()),
        (Dim::Model, filter.model.as_deref()),
    ]
    .into_iter()
    .find_map(|(dim, value)| value.map(|v| (dim, v)))
}

/// Whether `record` passes every filter but the text search.
pub fn matches(record: &RequestRecord, filter: &LogFilter) -> bool {
    let is =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
    is(&filter.session, record.session_id.as_deref())
        && is(
            &filter.virtual_key,
            record.virtual_key_id.as_ref().map(|k| k.as_str()),
        )
        && is(&filter.user, record.user_id.as_deref())
        && is(&filter.team, record.team_id.as_ref().map(|t| t.as_str()))
        && is(
            &filter.customer,
            record.customer_id.as_ref().map(|c| c.as_str()),
        )
        && is(&filter.model, record.model.as_deref())
        && is(&filter.provider, record.provider.as_deref())
        && filter.status.is_none_or(|s| record.status == s)
        && filter.since_ms.is_none_or(|s| record.time_ms >= s)
        && filter.until_ms.is_none_or(|u| record.time_ms < u)
}

/// This node's page for `filter`.
pub fn query(store: &LogStore, filter: &LogFilter) -> Result<LogPage, StoreError> {
    query_bounded(store, filter, SCAN_MAX)
}

pub(super) fn query_bounded(
    store: &LogStore,
    filter: &LogFilter,
    scan_max: usize,
) -> Result<LogPage, StoreError> {
    let since = filter.since_ms.unwrap_or(0);
    let upper = upper_slot(
        store.node(),
        filter.before,
        filter.until_ms.unwrap_or(u64::MAX),
    );
    let lower = Slot {
        time_ms: since,
        seq: 0,
    };
    if upper <= lower {
        return Ok(LogPage::default());
    }
    let mut visit = Visit {
        store,
        filter,
        text: filter.q.as_deref().filter(|q| !q.is_empty()),
        limit: filter.limit.clamp(1, PAGE_MAX) as usize,
        scan_max,
        scanned: 0,
        page: LogPage::default(),
    };
    let index = driving_index(filter);
    for (partition, part) in store.partitions_between(since, upper.time_ms.saturating_add(1)) {
        let flow = match index {
            None => {
                let mut low = keys::record_prefix();
                low.extend_from_slice(&lower.bytes());
                let mut high = keys::record_prefix();
                high.extend_from_slice(&upper.bytes());
                let mut flow = Flow::Go;
                for item in part.records.range(low..high).rev() {
                    let (key, value) = item.into_inner()?;
                    let slot = Slot::from_tail(&key)
                        .ok_or_else(|| StoreError::Damaged(format!("{key:?}")))?;
                    flow = visit.slot(partition, &part, slot, Some(&value))?;
                    if flow == Flow::Stop {
                        break;
                    }
                }
                flow
            }
            Some((dim, value)) => {
                let prefix = keys::posting_prefix(dim, value);
                let low = keys::posting_key(&prefix, keys::posting_second(lower.time_ms), 0);
                let high = keys::posting_end(&prefix, keys::posting_second(upper.time_ms));
                // A second's entries (one per batch that wrote records of it) are read
                // together and their records put in order, newest first.
                let mut second: Option<u64> = None;
                let mut slots: Vec<Slot> = Vec::new();
                let mut entries = part.index.range(low..high).rev();
                let mut flow = Flow::Go;
                while flow == Flow::Go {
                    let entry = entries.next().map(|item| item.into_inner()).transpose()?;
                    let entry_second = match &entry {
                        Some((key, _)) => Some(
                            keys::posting_second_of(key)
                                .ok_or_else(|| StoreError::Damaged(format!("{key:?}")))?,
                        ),
                        None => None,
                    };
                    if entry_second != second {
                        slots.retain(|s| lower <= *s && *s < upper);
                        slots.sort_unstable_by(|a, b| b.cmp(a));
                        for slot in slots.drain(..) {
                            flow = visit.slot(partition, &part, slot, None)?;
                            if flow == Flow::Stop {
                                break;
                            }
                        }
                        second = entry_second;
                    }
                    let Some((key, value)) = entry else { break };
                    if let Some(s) = second {
                        keys::decode_postings(s, &value, &mut slots)
                            .ok_or_else(|| StoreError::Damaged(format!("{key:?}")))?;
                    }
                }
                flow
            }
        };
        if flow == Flow::Stop {
            break;
        }
    }
    Ok(visit.page)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
}

/// A query's walk: each record it comes to, newest first, is read, checked against
/// the filter and added to the page, until the page is full or the scan bound is met.
struct Visit<'a> {
    store: &'a LogStore,
    filter: &'a LogFilter,
    text: Option<&'a str>,
    limit: usize,
    scan_max: usize,
    scanned: usize,
    page: LogPage,
}

impl Visit<'_> {
    /// The record at `slot` of `partition` (its bytes if the walk has them already).
    fn slot(
        &mut self,
        partition: u64,
        part: &Part,
        slot: Slot,
        value: Option<&[u8]>,
    ) -> Result<Flow, StoreError> {
        self.scanned += 1;
        if self.scanned > self.scan_max {
            self.page.more = true;
            self.page.resume = Some(LogCursor {
                time_ms: slot.time_ms,
                node: self.store.node(),
                seq: slot.seq.saturating_add(1),
            });
            return Ok(Flow::Stop);
        }
        let record: ChainedRecord = match value {
            Some(v) => codec_decode(v)?,
            None => match part.records.get(keys::record_key(slot))? {
                Some(v) => codec_decode(&v)?,
                None => return Ok(Flow::Go),
            },
        };
        if !matches(&record.record, self.filter) {
            return Ok(Flow::Go);
        }
        if let Some(text) = self.text {
            let found = self.store.content(partition, slot)?.is_some_and(|c| {
                let finder = memchr::memmem::Finder::new(text.as_bytes());
                finder.find(&c.request_body).is_some() || finder.find(&c.response_body).is_some()
            });
            if !found {
                return Ok(Flow::Go);
            }
        }
        if self.page.records.len() == self.limit {
            self.page.more = true;
            return Ok(Flow::Stop);
        }
        self.page.records.push(record);
        Ok(Flow::Go)
    }
}

fn codec_decode(bytes: &[u8]) -> Result<ChainedRecord, StoreError> {
    Ok(tollgate_raft::codec::decode(bytes)?)
}

/// One page from every node's answers: newest first, at most `limit`, and the cursor to
/// go on from (none when nothing is left). Records below a node's `resume` point are
/// left for the next page, since that node has not read its records down to them.
pub fn merge(pages: Vec<LogPage>, limit: u32) -> (Vec<ChainedRecord>, Option<LogCursor>) {
    let limit = limit.clamp(1, PAGE_MAX) as usize;
    let cut = pages.iter().filter_map(|p| p.resume).max();
    let more = pages.iter().any(|p| p.more);
    let mut records: Vec<ChainedRecord> = pages.into_iter().flat_map(|p| p.records).collect();
    records.sort_by_key(|r| std::cmp::Reverse(cursor_of(r)));
    if let Some(cut) = cut {
        records.retain(|r| cursor_of(r) > cut);
    }
    let full = records.len() > limit;
    records.truncate(limit);
    // Every record above the cut is here: the next page starts at the last one taken
    // when some were left out, else at the cut (if a node stopped early).
    let next = match records.last() {
        Some(last) if full || more => Some(cursor_of(last)),
        _ => cut,
    };
    (records, next)
}
