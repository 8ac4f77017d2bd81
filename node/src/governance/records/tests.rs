//! The store and queries over real fjall databases in temporary directories.

use super::keys::{HOUR_MS, PARTITION_MS};
use super::query::{self, cursor_of, merge, query_bounded};
use super::store::{chain_hash, LogStore};
use std::collections::BTreeSet;
use tollgate_proto::records::{
    CapturedContent, GroupBy, LogFilter, LogPage, RecordRef, RequestRecord, StatsQuery,
};
use tollgate_proto::{KeyId, RequestId, Usage, Usd};
use tollgate_raft::codec;

/// A fixed start (2026-12-07T00:00:00Z), so partitions are the same every run.
const T0: u64 = 1_796_601_600_000;

/// The id of request `n` of `node`, started at `time_ms`.
fn id(node: u64, n: u64, time_ms: u64) -> String {
    RequestId::generate(time_ms, node, n).0
}

fn record(node: u64, n: u64, time_ms: u64) -> RequestRecord {
    RequestRecord {
        request_id: RequestId(id(node, n, time_ms)),
        time_ms,
        node,
        virtual_key_id: Some(KeyId(format!("vk_{}", n % 3))),
        model: Some(if n.is_multiple_of(2) { "even" } else { "odd" }.into()),
        session_id: Some(format!("s{}", n % 5)),
        status: if n.is_multiple_of(7) { 429 } else { 200 },
        usage: Usage {
            input_tokens: n,
            output_tokens: 2 * n,
            ..Usage::default()
        },
        cost: Usd(10 * n),
        latency_ms: n,
        dialect: "anthropic".into(),
        ..RequestRecord::default()
    }
}

fn store(dir: &std::path::Path, node: u64) -> LogStore {
    LogStore::open(dir, node).expect("store opens")
}

fn mark(n: u64) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

/// `count` records of `node`, one every `step_ms` from `T0`, in batches of 100.
fn fill(s: &LogStore, node: u64, count: u64, step_ms: u64) {
    let all: Vec<_> = (0..count)
        .map(|n| (record(node, n, T0 + n * step_ms), None))
        .collect();
    for (i, batch) in all.chunks(100).enumerate() {
        s.append(batch.to_vec(), &mark(i as u64)).expect("append");
    }
}

fn all_pages(stores: &[&LogStore], filter: &LogFilter) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    let mut filter = filter.clone();
    for _ in 0..10_000 {
        let pages: Vec<LogPage> = stores
            .iter()
            .map(|s| query::query(s, &filter).expect("query"))
            .collect();
        let (records, next) = merge(pages, filter.limit);
        seen.extend(records.iter().map(|r| (r.record.node, r.seq)));
        match next {
            Some(c) => filter.before = Some(c),
            None => return seen,
        }
    }
    panic!("pages never ended");
}

#[test]
fn pages_from_several_nodes_list_every_record_once_newest_first() {
    let dirs: Vec<_> = (0..3).map(|_| tempdir()).collect();
    let stores: Vec<LogStore> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| store(d.path(), i as u64 + 1))
        .collect();
    // Same times on every node: the cursor orders by node, then sequence.
    for s in &stores {
        fill(s, s.node(), 450, 1_000);
    }
    let refs: Vec<&LogStore> = stores.iter().collect();
    let filter = LogFilter {
        limit: 37,
        ..LogFilter::default()
    };
    let seen = all_pages(&refs, &filter);
    assert_eq!(seen.len(), 1350);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        1350,
        "a record twice"
    );
    // Newest first: sequence falls within each node.
    let first = query::query(&stores[0], &filter).expect("query");
    let times: Vec<u64> = first.records.iter().map(|r| r.record.time_ms).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]));
}

#[test]
fn filters_narrow_by_index_and_window() {
    let dir = tempdir();
    let s = store(dir.path(), 1);
    fill(&s, 1, 2_000, 60_000);
    let window = LogFilter {
        virtual_key: Some("vk_1".into()),
        since_ms: Some(T0 + HOUR_MS),
        until_ms: Some(T0 + 2 * HOUR_MS),
        limit: 1000,
        ..LogFilter::default()
    };
    let page = query::query(&s, &window).expect("query");
    let expect: Vec<u64> = (60..120).rev().filter(|n| n % 3 == 1).collect();
    let got: Vec<u64> = page.records.iter().map(|r| r.seq - 1).collect();
    assert_eq!(got, expect);
    assert!(!page.more);
    // A filter without an index (status) and several at once.
    let refused = LogFilter {
        status: Some(429),
        model: Some("odd".into()),
        limit: 1000,
        ..LogFilter::default()
    };
    let page = query::query(&s, &refused).expect("query");
    assert!(page
        .records
        .iter()
        .all(|r| r.record.status == 429 && r.record.model.as_deref() == Some("odd")));
    assert_eq!(
        page.records.len(),
        (0..2000).filter(|n| n % 7 == 0 && n % 2 == 1).count()
    );
    // By session, across partitions.
    let session = LogFilter {
        session: Some("s4".into()),
        limit: 1000,
        ..LogFilter::default()
    };
    assert_eq!(
        query::query(&s, &session).expect("query").records.len(),
        400
    );
}

#[test]
fn a_bounded_scan_says_where_it_stopped_and_no_record_is_skipped() {
    let dirs: Vec<_> = (0..2).map(|_| tempdir()).collect();
    let a = store(dirs[0].path(), 1);
    let b = store(dirs[1].path(), 2);
    fill(&a, 1, 500, 1_000);
    fill(&b, 2, 500, 1_000);
    // Only status 429 (1 in 7) matches: node 1 reads 50 entries a query, node 2 all.
    let mut filter = LogFilter {
        status: Some(429),
        limit: 10,
        ..LogFilter::default()
    };
    let mut seen = Vec::new();
    for _ in 0..1000 {
        let pages = vec![
            query_bounded(&a, &filter, 50).expect("query"),
            query::query(&b, &filter).expect("query"),
        ];
        let (records, next) = merge(pages, filter.limit);
        seen.extend(records.iter().map(cursor_of));
        match next {
            Some(c) => filter.before = Some(c),
            None => break,
        }
    }
    let want = 2 * (0..500).filter(|n| n % 7 == 0).count();
    assert_eq!(seen.len(), want);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "not newest first, or a repeat"
    );
}

/// Records of one key whose batches (request ends) come in another order than their
/// times (request starts), within a second and across seconds.
fn out_of_order(s: &LogStore) -> Vec<(u64, u64)> {
    let offsets: [[u64; 4]; 3] = [
        [500, 100, 1500, 2999],
        [300, 1200, 900, 100],
        [0, 2000, 999, 1000],
    ];
    let mut want = Vec::new();
    let mut seq = 0;
    for (i, batch) in offsets.iter().enumerate() {
        let records = batch
            .iter()
            .map(|ms| {
                seq += 1;
                want.push((T0 + ms, seq));
                let mut r = record(1, seq, T0 + ms);
                r.virtual_key_id = Some(KeyId("vk_x".into()));
                (r, None)
            })
            .collect();
        s.append(records, &mark(i as u64)).expect("append");
    }
    want.sort_unstable_by(|a, b| b.cmp(a));
    want
}

/// A record is read in place (`RecordRef`) field for field as it was written: the two
/// types must keep the same fields in the same order.
#[test]
fn a_record_reads_in_place_as_written() {
    let r = RequestRecord {
        request_id: RequestId("req_x".into()),
        time_ms: 7,
        node: 3,
        virtual_key_id: Some(KeyId("vk_1".into())),
        virtual_key_name: Some("eng".into()),
        user_id: Some("u".into()),
        team_id: Some("team_1".into()),
        customer_id: Some("cus_1".into()),
        provider: Some("p".into()),
        provider_config_id: Some("pc_1".into()),
        model: Some("m".into()),
        dialect: "openai".into(),
        stream: true,
        status: 429,
        error_type: Some("rate_limit_error".into()),
        usage: Usage {
            input_tokens: 1,
            output_tokens: 2,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
        },
        cost: Usd(5),
        latency_ms: 6,
        ttft_ms: Some(8),
        attempts: 2,
        session_id: Some("s".into()),
        user_agent: Some("ua".into()),
        client_ip: Some("10.0.0.1".into()),
        guardrails: vec!["g1".into(), "g2".into()],
        outcome: Some("o".into()),
    };
    let bytes = codec::encode(&r).expect("encodes");
    let v: RecordRef<'_> = codec::decode_borrowed(&bytes).expect("reads in place");
    let back = RequestRecord {
        request_id: RequestId(v.request_id.into()),
        time_ms: v.time_ms,
        node: v.node,
        virtual_key_id: v.virtual_key_id.map(|k| KeyId(k.into())),
        virtual_key_name: v.virtual_key_name.map(Into::into),
        user_id: v.user_id.map(Into::into),
        team_id: v.team_id.map(Into::into),
        customer_id: v.customer_id.map(Into::into),
        provider: v.provider.map(Into::into),
        provider_config_id: v.provider_config_id.map(Into::into),
        model: v.model.map(Into::into),
        dialect: v.dialect.into(),
        stream: v.stream,
        status: v.status,
        error_type: v.error_type.map(Into::into),
        usage: v.usage,
        cost: v.cost,
        latency_ms: v.latency_ms,
        ttft_ms: v.ttft_ms,
        attempts: v.attempts,
        session_id: v.session_id.map(Into::into),
        user_agent: v.user_agent.map(Into::into),
        client_ip: v.client_ip.map(Into::into),
        guardrails: v.guardrails.iter().map(|g| g.to_string()).collect(),
        outcome: v.outcome.map(Into::into),
    };
    assert_eq!(back, r);
}

#[test]
fn an_index_lists_a_seconds_records_in_time_order_across_batches() {
    let dir = tempdir();
    let s = store(dir.path(), 1);
    let want = out_of_order(&s);
    let by_key = |limit| LogFilter {
        virtual_key: Some("vk_x".into()),
        limit,
        ..LogFilter::default()
    };
    let page = query::query(&s, &by_key(100)).expect("query");
    let got: Vec<(u64, u64)> = page
        .records
        .iter()
        .map(|r| (r.record.time_ms, r.seq))
        .collect();
    assert_eq!(got, want);
    // Page by page, and page by page with a scan bound of 3: the same, once each.
    assert_eq!(all_pages(&[&s], &by_key(2)).len(), want.len());
    let mut filter = by_key(2);
    let mut seen = Vec::new();
    for _ in 0..100 {
        let (records, next) = merge(vec![query_bounded(&s, &filter, 3).expect("query")], 2);
        seen.extend(records.iter().map(|r| (r.record.time_ms, r.seq)));
        match next {
            Some(c) => filter.before = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, want);
    // A window inside a second.
    let window = LogFilter {
        since_ms: Some(T0 + 300),
        until_ms: Some(T0 + 1000),
        ..by_key(100)
    };
    let got: Vec<u64> = query::query(&s, &window)
        .expect("query")
        .records
        .iter()
        .map(|r| r.record.time_ms - T0)
        .collect();
    assert_eq!(got, vec![999, 900, 500, 300]);
}

#[test]
fn a_store_written_before_postings_is_indexed_at_open() {
    let dir = tempdir();
    let want = {
        let s = store(dir.path(), 1);
        let want = out_of_order(&s);
        fill(&s, 1, 300, 60_000);
        s.as_legacy().expect("legacy");
        let none = LogFilter {
            virtual_key: Some("vk_x".into()),
            limit: 100,
            ..LogFilter::default()
        };
        assert!(query::query(&s, &none).expect("query").records.is_empty());
        want
    };
    let s = store(dir.path(), 1);
    let filter = LogFilter {
        virtual_key: Some("vk_x".into()),
        limit: 100,
        ..LogFilter::default()
    };
    let got: Vec<(u64, u64)> = query::query(&s, &filter)
        .expect("query")
        .records
        .iter()
        .map(|r| (r.record.time_ms, r.seq))
        .collect();
    assert_eq!(got, want);
    let model = LogFilter {
        model: Some("odd".into()),
        limit: 1000,
        ..LogFilter::default()
    };
    assert_eq!(
        query::query(&s, &model).expect("query").records.len(),
        150 + 6
    );
    // Once: a reopen finds the layout and writes nothing.
    drop(s);
    let s = store(dir.path(), 1);
    assert_eq!(query::query(&s, &model).expect("query").records.len(), 156);
}

#[test]
fn a_record_is_found_by_id_with_its_content_and_chain() {
    let dir = tempdir();
    let s = store(dir.path(), 4);
    let content = CapturedContent {
        request_body: b"{\"q\":\"needle in a haystack\"}".to_vec(),
        response_body: b"answer".to_vec(),
        truncated: false,
    };
    s.append(
        vec![
            (record(4, 1, T0), None),
            (record(4, 2, T0 + 5), Some(content.clone())),
        ],
        &mark(1),
    )
    .expect("append");
    let entry = s.get(&id(4, 2, T0 + 5)).expect("get").expect("found");
    assert_eq!(entry.content, Some(content));
    let first = s.get(&id(4, 1, T0)).expect("get").expect("found");
    assert_eq!(first.content, None);
    // The chain: each hash covers the previous one and the record's encoding.
    let encoded = codec::encode(&first.record.record).expect("encode");
    assert_eq!(first.record.hash, chain_hash(&[0; 32], 4, 1, &encoded));
    assert_eq!(entry.record.prev_hash, first.record.hash);
    assert_eq!(s.chain_head().seq, 2);
    assert!(s.get("req_nope").expect("get").is_none());
    assert!(s.get(&id(4, 3, T0 + 5)).expect("get").is_none());
    assert!(s.get(&id(4, 2, T0 + 4)).expect("get").is_none());
    assert!(s
        .get(&id(4, 2, T0 + 3 * PARTITION_MS))
        .expect("get")
        .is_none());
    // Text search reads captured content.
    let found = query::query(
        &s,
        &LogFilter {
            q: Some("needle".into()),
            limit: 10,
            ..LogFilter::default()
        },
    )
    .expect("query");
    assert_eq!(found.records.len(), 1);
    assert_eq!(
        found.records[0].record.request_id.as_str(),
        id(4, 2, T0 + 5)
    );
}

#[test]
fn the_chain_and_mark_survive_a_reopen() {
    let dir = tempdir();
    {
        let s = store(dir.path(), 1);
        fill(&s, 1, 250, 1_000);
    }
    let s = store(dir.path(), 1);
    assert_eq!(s.chain_head().seq, 250);
    assert_eq!(s.logged_mark().expect("mark"), Some(mark(2)));
    s.append(vec![(record(1, 999, T0), None)], &mark(3))
        .expect("append");
    let last = s.get(&id(1, 999, T0)).expect("get").expect("found");
    assert_eq!(last.record.seq, 251);
}

#[test]
fn stats_come_from_totals_per_hour() {
    let dir = tempdir();
    let s = store(dir.path(), 1);
    // One record a minute for 5 hours.
    fill(&s, 1, 300, 60_000);
    let by_model = s
        .stats(&StatsQuery {
            group_by: GroupBy::Model,
            since_ms: None,
            until_ms: None,
        })
        .expect("stats");
    let even = by_model.iter().find(|g| g.key == "even").expect("even");
    assert_eq!(even.totals.requests, 150);
    assert_eq!(
        even.totals.input_tokens,
        (0..300).filter(|n| n % 2 == 0).sum::<u64>()
    );
    assert_eq!(
        even.totals.cost,
        Usd(10 * (0..300).filter(|n| n % 2 == 0).sum::<u64>())
    );
    // Whole hours: the second hour only.
    let hour = s
        .stats(&StatsQuery {
            group_by: GroupBy::VirtualKey,
            since_ms: Some(T0 + HOUR_MS),
            until_ms: Some(T0 + 2 * HOUR_MS),
        })
        .expect("stats");
    assert_eq!(hour.iter().map(|g| g.totals.requests).sum::<u64>(), 60);
    assert_eq!(
        hour.iter().map(|g| g.totals.errors).sum::<u64>(),
        (60..120).filter(|n| n % 7 == 0).count() as u64
    );
    let days = s
        .stats(&StatsQuery {
            group_by: GroupBy::Day,
            since_ms: None,
            until_ms: None,
        })
        .expect("stats");
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].key, "2026-12-07");
}

#[test]
fn retention_and_the_disk_cap_drop_whole_partitions() {
    let dir = tempdir();
    let s = store(dir.path(), 1);
    // Four partitions, content in each.
    let batch: Vec<_> = (0..4)
        .map(|p| {
            (
                record(1, p, T0 + p * PARTITION_MS),
                Some(CapturedContent {
                    request_body: noise(p, 100_000),
                    ..CapturedContent::default()
                }),
            )
        })
        .collect();
    s.append(batch, &mark(1)).expect("append");
    let now = T0 + 4 * PARTITION_MS;
    // Records kept 2 partitions back, content 1.
    s.sweep(now, 2 * PARTITION_MS, PARTITION_MS, u64::MAX)
        .expect("sweep");
    let ids = |s: &LogStore| -> Vec<bool> {
        (0..4)
            .map(|p| {
                s.get(&id(1, p, T0 + p * PARTITION_MS))
                    .expect("get")
                    .is_some()
            })
            .collect()
    };
    assert_eq!(ids(&s), vec![false, false, true, true]);
    assert!(s
        .get(&id(1, 2, T0 + 2 * PARTITION_MS))
        .expect("get")
        .and_then(|e| e.content)
        .is_none());
    assert!(s
        .get(&id(1, 3, T0 + 3 * PARTITION_MS))
        .expect("get")
        .and_then(|e| e.content)
        .is_some());
    // Over the cap, bodies go first: the records stay while a body is left.
    s.flush().expect("flush");
    assert!(s.partition_bytes() > 100_000);
    let journal = super::store::JOURNAL_BUDGET_BYTES;
    s.sweep(now, u64::MAX, u64::MAX, journal + 50_000)
        .expect("sweep");
    assert_eq!(ids(&s), vec![false, false, true, true]);
    assert!(s
        .get(&id(1, 3, T0 + 3 * PARTITION_MS))
        .expect("get")
        .and_then(|e| e.content)
        .is_none());
    // Then the oldest records, until it fits (here, everything).
    s.sweep(now, u64::MAX, u64::MAX, 0).expect("sweep");
    assert_eq!(ids(&s), vec![false; 4]);
    assert!(
        s.dropped_for_space
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

/// Bytes that do not compress.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A temporary directory, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-records-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempDir(dir)
}

#[test]
fn page_bounds_hold() {
    let dir = tempdir();
    let s = store(dir.path(), 1);
    fill(&s, 1, 10, 1);
    let page = query::query(
        &s,
        &LogFilter {
            limit: 0,
            ..LogFilter::default()
        },
    )
    .expect("query");
    assert_eq!(page.records.len(), 1, "a zero limit is one");
    assert!(page.more);
    let empty = query::query(
        &s,
        &LogFilter {
            since_ms: Some(T0 + 100),
            until_ms: Some(T0 + 50),
            limit: 10,
            ..LogFilter::default()
        },
    )
    .expect("query");
    assert!(empty.records.is_empty());
}
