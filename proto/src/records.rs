//! The request log's wire types: one record per request (answered or refused), where it
//! sits in its node's hash chain, the filters of a query and what a node answers to one.
//! Records live in each node's outbox and log store, and cross the peer transport when a
//! query asks every member.

use crate::{CustomerId, KeyId, ProviderConfigId, RequestId, TeamId, UnixMs, Usage, Usd};
use serde::{Deserialize, Serialize};

/// What a record says of a request whose node stopped while it was at the provider: it
/// was charged at its reservation, its answer is unknown.
pub const OUTCOME_NODE_STOPPED: &str = "unknown (node stopped)";

/// One request, as the node that served it saw it. Names (key, provider) are those at
/// the time of the request. No secret is ever in a record: the key is named by its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request_id: RequestId,
    /// When the request arrived.
    pub time_ms: UnixMs,
    pub node: u64,
    pub virtual_key_id: Option<KeyId>,
    pub virtual_key_name: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<TeamId>,
    pub customer_id: Option<CustomerId>,
    /// The provider's name (`[[providers]] name`).
    pub provider: Option<String>,
    pub provider_config_id: Option<ProviderConfigId>,
    /// The model the client asked for.
    pub model: Option<String>,
    /// `anthropic` or `openai`: the API the client spoke.
    pub dialect: String,
    pub stream: bool,
    /// The HTTP status the client got (0: unknown, the node stopped).
    pub status: u16,
    /// The error's type in the client's dialect, for a refused or failed request.
    pub error_type: Option<String>,
    pub usage: Usage,
    pub cost: Usd,
    /// From arrival to the last byte of the answer.
    pub latency_ms: u64,
    /// From arrival to the provider's first byte.
    pub ttft_ms: Option<u64>,
    /// Provider attempts made.
    pub attempts: u32,
    /// `X-Claude-Code-Session-Id`.
    pub session_id: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
    /// Guardrail rules that matched (their ids).
    pub guardrails: Vec<String>,
    /// Set when the answer is not known (`OUTCOME_NODE_STOPPED`).
    pub outcome: Option<String>,
}

/// A record read in place from its encoding: `RequestRecord`'s fields in its order, text
/// borrowed from the bytes. The request log's writer reads every record the outbox
/// holds; decoding each into owned strings cost as much as storing it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RecordRef<'a> {
    pub request_id: &'a str,
    pub time_ms: UnixMs,
    pub node: u64,
    #[serde(borrow)]
    pub virtual_key_id: Option<&'a str>,
    #[serde(borrow)]
    pub virtual_key_name: Option<&'a str>,
    #[serde(borrow)]
    pub user_id: Option<&'a str>,
    #[serde(borrow)]
    pub team_id: Option<&'a str>,
    #[serde(borrow)]
    pub customer_id: Option<&'a str>,
    #[serde(borrow)]
    pub provider: Option<&'a str>,
    #[serde(borrow)]
    pub provider_config_id: Option<&'a str>,
    #[serde(borrow)]
    pub model: Option<&'a str>,
    pub dialect: &'a str,
    pub stream: bool,
    pub status: u16,
    #[serde(borrow)]
    pub error_type: Option<&'a str>,
    pub usage: Usage,
    pub cost: Usd,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub attempts: u32,
    #[serde(borrow)]
    pub session_id: Option<&'a str>,
    #[serde(borrow)]
    pub user_agent: Option<&'a str>,
    #[serde(borrow)]
    pub client_ip: Option<&'a str>,
    #[serde(borrow)]
    pub guardrails: Vec<&'a str>,
    #[serde(borrow)]
    pub outcome: Option<&'a str>,
}

/// A record as its node stored it: its place in the node's hash chain. `hash` is
/// SHA-256 over `prev_hash`, the node, the sequence and the record's encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainedRecord {
    pub seq: u64,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
    pub record: RequestRecord,
}

/// Request and response bodies of a request logged with `content = "full"`, as the
/// client sent them and as it received them (cut at the store's limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedContent {
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// A body was longer than the capture limit and is cut.
    pub truncated: bool,
}

/// Where a page of records ended: records strictly older (by time, then node, then
/// sequence, all descending) come next. Stable while records are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogCursor {
    pub time_ms: UnixMs,
    pub node: u64,
    pub seq: u64,
}

/// The filters of a log query; every one set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFilter {
    pub virtual_key: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub customer: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: Option<u16>,
    pub session: Option<String>,
    /// Inclusive.
    pub since_ms: Option<UnixMs>,
    /// Exclusive.
    pub until_ms: Option<UnixMs>,
    /// Text the captured request or response body contains.
    pub q: Option<String>,
    pub limit: u32,
    pub before: Option<LogCursor>,
}

/// What a log store answers to a query: up to `limit` records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPage {
    pub records: Vec<ChainedRecord>,
    /// More matching records may follow the last one.
    pub more: bool,
    /// Where the node stopped looking when it stopped before finding `limit` records
    /// (it reads a bounded number of entries per query): older records were not read.
    pub resume: Option<LogCursor>,
}

/// One record and its captured content, if any (`GET /api/v1/logs/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub record: ChainedRecord,
    pub content: Option<CapturedContent>,
}

/// What stats group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GroupBy {
    VirtualKey,
    User,
    Team,
    Customer,
    Model,
    Provider,
    Day,
}

impl GroupBy {
    pub const ALL: [GroupBy; 7] = [
        GroupBy::VirtualKey,
        GroupBy::User,
        GroupBy::Team,
        GroupBy::Customer,
        GroupBy::Model,
        GroupBy::Provider,
        GroupBy::Day,
    ];

    /// The name in `group_by=`.
    pub fn name(self) -> &'static str {
        match self {
            GroupBy::VirtualKey => "virtual_key",
            GroupBy::User => "user",
            GroupBy::Team => "team",
            GroupBy::Customer => "customer",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Day => "day",
        }
    }

    pub fn parse(name: &str) -> Option<GroupBy> {
        GroupBy::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// A stats query: totals of the hours in `[since_ms, until_ms)` (whole hours: totals are
/// kept per hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsQuery {
    pub group_by: GroupBy,
    pub since_ms: Option<UnixMs>,
    pub until_ms: Option<UnixMs>,
}

/// Totals of one group, summed over hours and nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost: Usd,
    /// Requests per latency bucket (`latency_bucket`), for percentiles after merging.
    pub latency: Vec<u64>,
}

/// Latency buckets: four per doubling, from 1 ms to about 10^7 ms.
pub const LATENCY_BUCKETS: usize = 96;

/// The bucket of a latency: exact below 4 ms, then four per doubling.
pub fn latency_bucket(ms: u64) -> usize {
    if ms < 4 {
        return ms as usize;
    }
    let octave = 63 - ms.leading_zeros() as usize; // >= 2
    let quarter = ((ms >> (octave - 2)) & 3) as usize;
    (4 * (octave - 1) + quarter).min(LATENCY_BUCKETS - 1)
}

/// The smallest latency of a bucket (the inverse of `latency_bucket`).
pub fn bucket_floor_ms(bucket: usize) -> u64 {
    if bucket < 4 {
        return bucket as u64;
    }
    let octave = bucket / 4 + 1;
    let quarter = (bucket % 4) as u64;
    (4 + quarter) << (octave - 2)
}

impl Totals {
    /// Counts one request.
    pub fn add(&mut self, record: &RequestRecord) {
        self.add_request(record.status, &record.usage, record.cost, record.latency_ms);
    }

    /// Counts one request, from its parts.
    pub fn add_request(&mut self, status: u16, usage: &Usage, cost: Usd, latency_ms: u64) {
        self.requests += 1;
        if status >= 400 || status == 0 {
            self.errors += 1;
        }
        self.input_tokens += usage.input_tokens;
        self.output_tokens += usage.output_tokens;
        self.cache_read_tokens += usage.cache_read_input_tokens;
        self.cache_write_tokens += usage.cache_creation_input_tokens;
        self.cost = Usd(self.cost.0.saturating_add(cost.0));
        if self.latency.len() < LATENCY_BUCKETS {
            self.latency.resize(LATENCY_BUCKETS, 0);
        }
        self.latency[latency_bucket(latency_ms)] += 1;
    }

    /// Adds `other` (another hour's or another node's totals of the same group).
    pub fn merge(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_read_tokens += other.cache_read_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cost = Usd(self.cost.0.saturating_add(other.cost.0));
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// The latency at quantile `q` (0..=1): the floor of the bucket it falls in.
    pub fn latency_quantile_ms(&self, q: f64) -> u64 {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return 0;
        }
        // The rank of the request at the quantile, 1-based.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_floor_ms(bucket);
            }
        }
        0
    }
}

/// One group of a stats answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsGroup {
    pub key: String,
    pub totals: Totals,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_ordered_and_invert() {
        let mut last = 0;
        for ms in 0..100_000u64 {
            let b = latency_bucket(ms);
            assert!(b >= last, "bucket of {ms} went down");
            last = b;
            assert!(
                bucket_floor_ms(b) <= ms,
                "floor of {ms}'s bucket is above it"
            );
        }
        for b in 0..40 {
            assert_eq!(latency_bucket(bucket_floor_ms(b)), b);
        }
        assert!(latency_bucket(u64::MAX) < LATENCY_BUCKETS);
    }

    #[test]
    fn quantiles_come_from_merged_buckets() {
        let mut a = Totals::default();
        let mut b = Totals::default();
        for ms in 1..=99 {
            a.add(&RequestRecord {
                latency_ms: ms,
                status: 200,
                ..RequestRecord::default()
            });
        }
        b.add(&RequestRecord {
            latency_ms: 10_000,
            status: 502,
            ..RequestRecord::default()
        });
        a.merge(&b);
        assert_eq!(a.requests, 100);
        assert_eq!(a.errors, 1);
        let p50 = a.latency_quantile_ms(0.5);
        assert!((40..=50).contains(&p50), "p50 {p50}");
        assert!(a.latency_quantile_ms(1.0) >= 8192);
    }
}

/// What a node found checking its request log's hash chain against the anchors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainReport {
    pub node: u64,
    /// Records read.
    pub records: u64,
    /// The oldest sequence kept (retention drops the oldest) and the newest.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The newest anchor of this node's chain, if any.
    pub anchored_seq: Option<u64>,
    /// The first sequence that does not check out, and why.
    pub bad_seq: Option<u64>,
    pub reason: Option<String>,
}
