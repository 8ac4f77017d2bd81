//! Log queries: one node's answer from its store (`query`), and the merge of every
//! node's answers into one page (`merge`). A query walks one index (the most selective
//! filter given) or the records themselves, newest first, within its time window and
//! below its cursor, and checks every filter on each record.

use super::keys::{self, Dim, Slot};
use super::store::{LogStore, StoreError};
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
    let limit = filter.limit.clamp(1, PAGE_MAX) as usize;
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
    let text = filter.q.as_deref().filter(|q| !q.is_empty());
    let index = driving_index(filter);
    let mut page = LogPage::default();
    let mut scanned = 0usize;
    for (partition, part) in store.partitions_between(since, upper.time_ms.saturating_add(1)) {
        let prefix = match index {
            Some((dim, value)) => keys::index_prefix(dim, value),
            None => keys::record_prefix(),
        };
        let mut low = prefix.clone();
        low.extend_from_slice(&lower.bytes());
        let mut high = prefix;
        high.extend_from_slice(&upper.bytes());
        let scanned_keyspace = match index {
            Some(_) => &part.index,
            None => &part.records,
        };
        for item in scanned_keyspace.range(low..high).rev() {
            let (key, value) = item.into_inner()?;
            scanned += 1;
            let slot =
                Slot::from_tail(&key).ok_or_else(|| StoreError::Damaged(format!("{key:?}")))?;
            if scanned > scan_max {
                page.more = true;
                page.resume = Some(LogCursor {
                    time_ms: slot.time_ms,
                    node: store.node(),
                    seq: slot.seq.saturating_add(1),
                });
                return Ok(page);
            }
            let record: ChainedRecord = match index {
                None => codec_decode(&value)?,
                Some(_) => match part.records.get(keys::record_key(slot))? {
                    Some(v) => codec_decode(&v)?,
                    None => continue,
                },
            };
            if !matches(&record.record, filter) {
                continue;
            }
            if let Some(text) = text {
                let found = store.content(partition, slot)?.is_some_and(|c| {
                    let finder = memchr::memmem::Finder::new(text.as_bytes());
                    finder.find(&c.request_body).is_some()
                        || finder.find(&c.response_body).is_some()
                });
                if !found {
                    continue;
                }
            }
            if page.records.len() == limit {
                page.more = true;
                return Ok(page);
            }
            page.records.push(record);
        }
    }
    Ok(page)
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
