//! `tollgate-bench log-bench`: the request log's store on its own. Fills a store with
//! synthetic records (100 keys, 5 models, sessions of 20 requests, spread over a day)
//! as the writer does, in batches, then times the queries an operator runs: a key's
//! records in a one-hour window (filtered through its index) and stats by key and by
//! model over the whole day (from the totals kept at write time). Prints one line of JSON.

use std::time::{Duration, Instant};
use tollgate_node::governance::records::query;
use tollgate_node::governance::records::store::LogStore;
use tollgate_proto::records::{GroupBy, LogFilter, RequestRecord, StatsQuery};
use tollgate_proto::{KeyId, RequestId, TeamId, Usage, Usd};

#[derive(clap::Args)]
pub struct LogBenchArgs {
    /// Where the store goes (made empty first).
    #[arg(long)]
    dir: std::path::PathBuf,
    /// Records to write.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Queries of each kind timed.
    #[arg(long, default_value_t = 200)]
    queries: u64,
}

/// The records' day: 2026-12-07, UTC.
const DAY_START_MS: u64 = 1_796_601_600_000;
const DAY_MS: u64 = 86_400_000;
const KEYS: u64 = 100;
const BATCH: u64 = 1000;

fn record(n: u64, of: u64) -> RequestRecord {
    let key = n % KEYS;
    RequestRecord {
        request_id: RequestId(format!("req_{n:016x}")),
        time_ms: DAY_START_MS + n * DAY_MS / of,
        node: 1,
        virtual_key_id: Some(KeyId(format!("vk_{key:04}"))),
        virtual_key_name: Some(format!("engineer-{key}")),
        team_id: Some(TeamId(format!("team_{}", key % 10))),
        provider: Some("anthropic-main".into()),
        model: Some(format!("claude-model-{}", n % 5)),
        dialect: "anthropic".into(),
        stream: true,
        status: if n.is_multiple_of(50) { 429 } else { 200 },
        usage: Usage {
            input_tokens: 12_000 + n % 5000,
            output_tokens: 300 + n % 700,
            ..Usage::default()
        },
        cost: Usd(40_000 + n % 10_000),
        latency_ms: 800 + n % 4000,
        ttft_ms: Some(300 + n % 200),
        attempts: 1,
        session_id: Some(format!("sess-{:08x}", n / 20)),
        user_agent: Some("claude-cli/2.0 (external, cli)".into()),
        client_ip: Some("10.1.2.3".into()),
        ..RequestRecord::default()
    }
}

fn quantiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

pub fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)?;
    let store = LogStore::open(&args.dir, 1)?;
    let started = Instant::now();
    let mut n = 0;
    while n < args.records {
        let end = (n + BATCH).min(args.records);
        let batch = (n..end).map(|i| (record(i, args.records), None)).collect();
        store.append(batch, &end.to_be_bytes())?;
        n = end;
    }
    let write_s = started.elapsed().as_secs_f64();
    // A key's hour: 1/100 of the records of 1/24 of the day, newest first, a page of 100.
    let mut filtered = Vec::new();
    let mut found = 0;
    for q in 0..args.queries {
        let hour = q % 24;
        let filter = LogFilter {
            virtual_key: Some(format!("vk_{:04}", q % KEYS)),
            since_ms: Some(DAY_START_MS + hour * 3_600_000),
            until_ms: Some(DAY_START_MS + (hour + 1) * 3_600_000),
            limit: 100,
            ..LogFilter::default()
        };
        let t = Instant::now();
        let page = query::query(&store, &filter)?;
        filtered.push(t.elapsed());
        found += page.records.len();
    }
    let mut stats_key = Vec::new();
    let mut stats_model = Vec::new();
    let mut groups = 0;
    for _ in 0..args.queries.min(50) {
        for (group_by, samples) in [
            (GroupBy::VirtualKey, &mut stats_key),
            (GroupBy::Model, &mut stats_model),
        ] {
            let t = Instant::now();
            let answer = store.stats(&StatsQuery {
                group_by,
                since_ms: None,
                until_ms: None,
            })?;
            samples.push(t.elapsed());
            groups = groups.max(answer.len());
        }
    }
    let (f50, f99) = quantiles(filtered);
    let (k50, k99) = quantiles(stats_key);
    let (m50, m99) = quantiles(stats_model);
    println!(
        "{}",
        serde_json::json!({
            "records": args.records,
            "write_records_per_s": (args.records as f64 / write_s).round(),
            "disk_bytes": dir_bytes(&args.dir),
            "filtered_query_p50_ms": f50,
            "filtered_query_p99_ms": f99,
            "filtered_query_records_per_page": found as u64 / args.queries.max(1),
            "stats_by_key_p50_ms": k50,
            "stats_by_key_p99_ms": k99,
            "stats_by_model_p50_ms": m50,
            "stats_by_model_p99_ms": m99,
            "stats_groups": groups,
        })
    );
    Ok(())
}
