//! `tollgate loadgen`: a small closed-loop HTTP load generator for `scripts/bench.sh`.
//! It POSTs one fixed body to one URL from C tasks, each with its own keep-alive client,
//! reads every response to its end (SSE included), and reports latency percentiles and
//! throughput as one line of JSON.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Most concurrent tasks accepted; far beyond what a benchmark on one machine needs, and
/// low enough that a typo cannot open tens of thousands of sockets.
pub const MAX_CONCURRENCY: usize = 4096;

/// Most requests measured (8 bytes each: latency and first byte, so 256 MiB at most); a
/// run that would exceed it is refused up front rather than running out of memory midway.
pub const MAX_SAMPLES: u64 = 32 * 1024 * 1024;

/// Latency samples reserved up front per task in a timed run, so that the first seconds
/// are not spent growing vectors.
const TIMED_RESERVE_PER_TASK: usize = 64 * 1024;

/// When the measured phase ends: after `requests` in total (shared among the tasks) or
/// once `duration` has passed, whichever comes first; at least one must be set. Requests
/// in flight when the time is up still finish and count.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop {
    pub requests: Option<u64>,
    pub duration: Option<Duration>,
    /// At most one request per this long from each task (an open-loop rate).
    pub pace: Option<Duration>,
}

/// What to send, how often and how many at a time.
#[derive(Debug, Clone)]
pub struct Plan {
    pub url: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub concurrency: usize,
    pub stop: Stop,
    /// Requests sent before measuring, shared among the tasks, to open connections and
    /// warm caches on both sides.
    pub warmup: u64,
}

/// The result of a run, printed as one line of JSON. Latencies cover successful requests
/// only, from sending the request to reading the last byte of the response; first-byte
/// times to its first body byte (a stream's first event).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Requests in the measured phase, failed ones included.
    pub requests: u64,
    /// Requests that failed: a transport error, a status other than 200 or a broken body.
    pub errors: u64,
    pub seconds: f64,
    /// Successful requests per second.
    pub rps: f64,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub max_us: u32,
    pub first_byte_p50_us: u32,
    pub first_byte_p99_us: u32,
    /// Why requests failed: `"503"` for a status, `"send"` for a request that got no
    /// answer, `"body"` for an answer whose body broke off.
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("header {0:?} is not of the form \"Name: value\"")]
    Header(String),
    #[error("concurrency must be from 1 to {MAX_CONCURRENCY}")]
    Concurrency,
    #[error("a run is limited to {MAX_SAMPLES} requests")]
    TooManyRequests,
    #[error("give a number of requests, a duration or both")]
    Unbounded,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("a load task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Parses a `Name: value` header as given on the command line.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), LoadgenError> {
    let bad = || LoadgenError::Header(text.to_owned());
    let (name, value) = text.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
    let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

/// What one task measured.
struct TaskResult {
    latencies_us: Vec<u32>,
    first_byte_us: Vec<u32>,
    errors: u64,
    failures: BTreeMap<String, u64>,
}

/// Runs the plan: warm-up, then the measured phase, and reports on the latter.
pub async fn run(plan: Plan) -> Result<Report, LoadgenError> {
    if plan.concurrency == 0 || plan.concurrency > MAX_CONCURRENCY {
        return Err(LoadgenError::Concurrency);
    }
    match plan.stop {
        Stop {
            requests: None,
            duration: None,
            ..
        } => return Err(LoadgenError::Unbounded),
        Stop {
            requests: Some(n), ..
        } if n > MAX_SAMPLES => return Err(LoadgenError::TooManyRequests),
        _ => {}
    }
    let mut headers = plan.headers.clone();
    if !headers.contains_key(CONTENT_TYPE) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    let url = Arc::<str>::from(plan.url.as_str());
    // Every task and this function meet here after the warm-up, so the clock starts when
    // all connections are open and no warm-up request is still in flight.
    let barrier = Arc::new(Barrier::new(plan.concurrency + 1));
    let claimed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(plan.concurrency);
    for i in 0..plan.concurrency {
        // One client per task: each keeps its own keep-alive connection, as C separate
        // callers would, instead of sharing one pool.
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .build()
            .map_err(LoadgenError::Client)?;
        let warmup = share(plan.warmup, plan.concurrency, i);
        let task = Task {
            client,
            url: Arc::clone(&url),
            headers: headers.clone(),
            body: plan.body.clone(),
        };
        let barrier = Arc::clone(&barrier);
        let claimed = Arc::clone(&claimed);
        let stop = plan.stop;
        let concurrency = plan.concurrency;
        tasks.push(tokio::spawn(async move {
            for _ in 0..warmup {
                // Warm-up outcomes are not counted; a target that fails shows in the
                // measured phase.
                let _ = task.once(Instant::now()).await;
            }
            barrier.wait().await;
            task.measure(stop, concurrency, &claimed).await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut latencies: Vec<u32> = Vec::new();
    let mut first_bytes: Vec<u32> = Vec::new();
    let mut errors = 0u64;
    let mut failures = BTreeMap::new();
    for task in tasks {
        let result = task.await.map_err(LoadgenError::Task)?;
        latencies.extend_from_slice(&result.latencies_us);
        first_bytes.extend_from_slice(&result.first_byte_us);
        errors += result.errors;
        for (why, n) in result.failures {
            *failures.entry(why).or_insert(0) += n;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    first_bytes.sort_unstable();
    let ok = latencies.len() as u64;
    Ok(Report {
        requests: ok + errors,
        errors,
        seconds,
        rps: if seconds > 0.0 {
            ok as f64 / seconds
        } else {
            0.0
        },
        p50_us: percentile(&latencies, 50.0),
        p90_us: percentile(&latencies, 90.0),
        p99_us: percentile(&latencies, 99.0),
        max_us: latencies.last().copied().unwrap_or(0),
        first_byte_p50_us: percentile(&first_bytes, 50.0),
        first_byte_p99_us: percentile(&first_bytes, 99.0),
        failures,
    })
}

/// Task `i`'s share of `total` requests split among `n` tasks; the first `total % n`
/// tasks take one more.
fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    let i = i as u64;
    total / n + u64::from(i < total % n)
}

/// The nearest-rank percentile of sorted samples; 0 when there are none.
fn percentile(sorted: &[u32], pct: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One caller: its own client and a copy of the request.
struct Task {
    client: reqwest::Client,
    url: Arc<str>,
    headers: HeaderMap,
    body: Bytes,
}

impl Task {
    /// Sends the request once and reads the whole answer: when its first body byte came
    /// (from `t0`), or why it failed.
    async fn once(&self, t0: Instant) -> Result<Duration, String> {
        let sent = self
            .client
            .post(&*self.url)
            .headers(self.headers.clone())
            .body(self.body.clone())
            .send()
            .await;
        let mut response = sent.map_err(|_| "send".to_owned())?;
        let status = response.status();
        // The body is read even after a bad status so the connection can be reused.
        let mut first_byte = None;
        let mut body = Ok(());
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if first_byte.is_none() && !chunk.is_empty() {
                        first_byte = Some(t0.elapsed());
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    body = Err("body".to_owned());
                    break;
                }
            }
        }
        if status != reqwest::StatusCode::OK {
            return Err(status.as_u16().to_string());
        }
        body.map(|()| first_byte.unwrap_or_else(|| t0.elapsed()))
    }

    async fn measure(&self, stop: Stop, concurrency: usize, claimed: &AtomicU64) -> TaskResult {
        let reserve = match stop.requests {
            Some(n) => usize::try_from(share(n, concurrency, 0)).unwrap_or(0),
            None => TIMED_RESERVE_PER_TASK,
        };
        let mut result = TaskResult {
            latencies_us: Vec::with_capacity(reserve),
            first_byte_us: Vec::with_capacity(reserve),
            errors: 0,
            failures: BTreeMap::new(),
        };
        let deadline = stop.duration.map(|d| Instant::now() + d);
        // A timed run keeps its samples within the same bound as a counted one.
        let max_samples = MAX_SAMPLES / concurrency as u64;
        let mut next = tokio::time::Instant::now();
        loop {
            if let Some(pace) = stop.pace {
                tokio::time::sleep_until(next).await;
                next += pace;
            }
            if let Some(n) = stop.requests {
                if claimed.fetch_add(1, Ordering::Relaxed) >= n {
                    break;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d)
                || result.latencies_us.len() as u64 >= max_samples
            {
                break;
            }
            let t0 = Instant::now();
            let outcome = self.once(t0).await;
            let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
            match outcome {
                Ok(first) => {
                    result.latencies_us.push(us);
                    result
                        .first_byte_us
                        .push(u32::try_from(first.as_micros()).unwrap_or(u32::MAX));
                }
                Err(why) => {
                    result.errors += 1;
                    *result.failures.entry(why).or_insert(0) += 1;
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn shares_add_up() {
        for (total, n) in [(0, 3), (10, 3), (300, 32), (5, 8)] {
            let sum: u64 = (0..n).map(|i| share(total, n, i)).sum();
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn headers_parse() {
        let (name, value) = parse_header("x-api-key:  sk-abc ").unwrap();
        assert_eq!(name.as_str(), "x-api-key");
        assert_eq!(value.to_str().unwrap(), "sk-abc");
        assert!(parse_header("no colon").is_err());
    }
}
