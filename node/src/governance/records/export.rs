//! Exports: every record, in chain order, delivered at least once to each
//! `[[logs.exports]]` sink. The writer puts each record in a queue keyspace in the same
//! batch that stores it; each sink reads the queue from its own position (kept in the
//! store, moved only after a delivery succeeded), retries a failed delivery with
//! back-off, and never touches the request path. The queue keeps what the slowest sink
//! has not taken, up to `QUEUE_MAX_RECORDS`; past it the oldest go (counted).

use super::store::{LogStore, StoreError};
use super::view::record_view;
use super::RequestLog;
use crate::config::{ExportConfig, ExportFormat, ExportKind, Secret};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::records::ChainedRecord;
use tollgate_raft::codec;

const QUEUE_KEYSPACE: &str = "exports";
const CURSOR_PREFIX: &str = "export/";

/// Records the queue holds for a slow or dead sink, at most (about 1 KB each).
pub const QUEUE_MAX_RECORDS: u64 = 1_000_000;

/// How long a sink waits when nothing is queued.
const IDLE_WAIT_MS: u64 = 500;

/// Back-off after a failed delivery: doubled each time from the least to the most.
const RETRY_MIN_MS: u64 = 500;
const RETRY_MAX_MS: u64 = 60_000;

/// How long a webhook has to answer one batch.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the queue is trimmed behind the slowest sink.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

impl LogStore {
    /// The store with its export queue (before any record is appended).
    pub fn with_export_queue(mut self) -> Result<LogStore, StoreError> {
        let queue = self
            .db
            .keyspace(QUEUE_KEYSPACE, fjall::KeyspaceCreateOptions::default)?;
        self.export_queue = Some(queue);
        Ok(self)
    }

    /// Up to `max` queued records after sequence `after`, in order.
    pub fn queued_after(&self, after: u64, max: usize) -> Result<Vec<ChainedRecord>, StoreError> {
        let Some(queue) = &self.export_queue else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for item in queue.range(after.saturating_add(1).to_be_bytes()..) {
            let (_, value) = item.into_inner()?;
            records.push(codec::decode(&value)?);
            if records.len() >= max {
                break;
            }
        }
        Ok(records)
    }

    /// The oldest queued sequence, if any.
    fn queue_first(&self) -> Result<Option<u64>, StoreError> {
        let Some(queue) = &self.export_queue else {
            return Ok(None);
        };
        Ok(match queue.first_key_value() {
            Some(item) => {
                let key = item.key()?;
                let mut b = [0u8; 8];
                b.copy_from_slice(key.get(..8).unwrap_or(&[0; 8]));
                Some(u64::from_be_bytes(b))
            }
            None => None,
        })
    }

    /// Removes queued records up to `through`; gives how many.
    fn trim_queue(&self, through: u64) -> Result<u64, StoreError> {
        let Some(queue) = &self.export_queue else {
            return Ok(0);
        };
        let mut batch = self.db.batch();
        let mut removed = 0;
        for item in queue.range(..=through.to_be_bytes()) {
            batch.remove(queue, item.key()?);
            removed += 1;
            if removed % 10_000 == 0 {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
            }
        }
        batch.commit()?;
        Ok(removed)
    }

    /// The last sequence sink `name` delivered.
    pub fn export_cursor(&self, name: &str) -> Result<u64, StoreError> {
        Ok(match self.meta.get(format!("{CURSOR_PREFIX}{name}"))? {
            Some(v) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(v.get(..8).unwrap_or(&[0; 8]));
                u64::from_be_bytes(b)
            }
            None => 0,
        })
    }

    fn set_export_cursor(&self, name: &str, seq: u64) -> Result<(), StoreError> {
        self.meta
            .insert(format!("{CURSOR_PREFIX}{name}"), seq.to_be_bytes())?;
        self.db.persist(fjall::PersistMode::Buffer)?;
        Ok(())
    }
}

/// One sink and its figures (`/metrics`).
pub struct Sink {
    pub name: String,
    config: ExportConfig,
    token: Option<Secret>,
    client: reqwest::Client,
    /// Records the sink has not taken yet (`tollgate_log_export_lag_records`).
    pub lag: AtomicU64,
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    cursor: AtomicU64,
}

/// Every sink of a node.
pub struct Exports {
    pub sinks: Vec<Arc<Sink>>,
    /// Records dropped from the queue before every sink had them.
    pub dropped: AtomicU64,
}

/// Starts a task per sink and the queue's trimming into `tasks`.
pub fn spawn(
    log: &Arc<RequestLog>,
    configs: &[ExportConfig],
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<Arc<Exports>> {
    let mut sinks = Vec::new();
    for (n, config) in configs.iter().enumerate() {
        let name = config.name_at(n);
        let token = match &config.token {
            Some(t) => Some(
                crate::config::resolve_reference(t, "token")
                    .map_err(|e| anyhow::anyhow!("export {name}: {e}"))?,
            ),
            None => None,
        };
        let cursor = log.store.export_cursor(&name)?;
        sinks.push(Arc::new(Sink {
            name,
            config: config.clone(),
            token,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(WEBHOOK_TIMEOUT)
                .build()?,
            lag: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cursor: AtomicU64::new(cursor),
        }));
    }
    let exports = Arc::new(Exports {
        sinks,
        dropped: AtomicU64::new(0),
    });
    for sink in &exports.sinks {
        tasks.spawn(run_sink(Arc::clone(log), Arc::clone(sink)));
    }
    tasks.spawn(trim(Arc::clone(log), Arc::clone(&exports)));
    Ok(exports)
}

async fn run_sink(log: Arc<RequestLog>, sink: Arc<Sink>) {
    let mut backoff = RETRY_MIN_MS;
    loop {
        let after = sink.cursor.load(Ordering::Relaxed);
        let store = Arc::clone(&log.store);
        let max = sink.config.batch_max;
        let batch = tokio::task::spawn_blocking(move || store.queued_after(after, max)).await;
        let head = log.store.chain_head().seq;
        sink.lag
            .store(head.saturating_sub(after), Ordering::Relaxed);
        let records = match batch {
            Ok(Ok(records)) if !records.is_empty() => records,
            Ok(Ok(_)) => {
                tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)).await;
                continue;
            }
            Ok(Err(e)) => {
                tracing::warn!(sink = %sink.name, error = ?e, "export queue unreadable");
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                continue;
            }
            Err(_) => return,
        };
        let last = records.last().map_or(after, |r| r.seq);
        match deliver(&sink, &records).await {
            Ok(()) => {
                backoff = RETRY_MIN_MS;
                sink.delivered
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                sink.cursor.store(last, Ordering::Relaxed);
                if let Err(e) = log.store.set_export_cursor(&sink.name, last) {
                    tracing::warn!(sink = %sink.name, error = ?e, "export position not kept; a restart sends again");
                }
            }
            Err(e) => {
                sink.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = %sink.name, error = %e, retry_ms = backoff, "export delivery failed; retrying");
                tokio::time::sleep(Duration::from_millis(backoff)).await;
                backoff = (backoff * 2).min(RETRY_MAX_MS);
            }
        }
    }
}

/// The batch's bytes in the sink's format, and their content type.
fn format(records: &[ChainedRecord], format: ExportFormat) -> (Vec<u8>, &'static str) {
    let mut out = Vec::new();
    for r in records {
        let record = record_view(r);
        let line = match format {
            ExportFormat::Jsonl => record.to_string(),
            ExportFormat::SplunkHec => serde_json::json!({
                "time": r.record.time_ms as f64 / 1000.0,
                "sourcetype": "tollgate:request",
                "source": format!("tollgate-node-{}", r.record.node),
                "event": record,
            })
            .to_string(),
            ExportFormat::ElasticBulk => format!(
                "{}\n{record}",
                serde_json::json!({"index": {"_index": "tollgate-requests", "_id": r.record.request_id}})
            ),
        };
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    let content_type = match format {
        ExportFormat::SplunkHec => "application/json",
        ExportFormat::Jsonl | ExportFormat::ElasticBulk => "application/x-ndjson",
    };
    (out, content_type)
}

async fn deliver(sink: &Sink, records: &[ChainedRecord]) -> Result<(), String> {
    match sink.config.kind {
        ExportKind::Webhook => {
            let (body, content_type) = format(records, sink.config.format);
            let url = sink.config.url.as_deref().unwrap_or_default();
            let mut request = sink
                .client
                .post(url)
                .header("content-type", content_type)
                .body(body);
            if let Some(token) = &sink.token {
                let scheme = match sink.config.format {
                    ExportFormat::SplunkHec => "Splunk",
                    _ => "Bearer",
                };
                request = request.header("authorization", format!("{scheme} {}", token.expose()));
            }
            let response = request.send().await.map_err(|e| format!("{url}: {e}"))?;
            match response.status() {
                s if s.is_success() => Ok(()),
                s => Err(format!("{url} answered {s}")),
            }
        }
        ExportKind::File => {
            let (body, _) = format(records, ExportFormat::Jsonl);
            let config = sink.config.clone();
            tokio::task::spawn_blocking(move || append_rotating(&config, &body))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    }
}

/// Appends to the file, rotating it first (`PATH.1` is the newest old file) when the
/// batch would take it past `max_file_bytes`; synced before the position moves on.
fn append_rotating(config: &ExportConfig, body: &[u8]) -> std::io::Result<()> {
    let Some(path) = &config.path else {
        return Err(std::io::Error::other("no path"));
    };
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if size > 0 && size + body.len() as u64 > config.max_file_bytes {
        let numbered = |n: u32| {
            let mut p = path.clone().into_os_string();
            p.push(format!(".{n}"));
            std::path::PathBuf::from(p)
        };
        let keep = config.keep_files.max(1);
        let _ = std::fs::remove_file(numbered(keep));
        for n in (1..keep).rev() {
            let _ = std::fs::rename(numbered(n), numbered(n + 1));
        }
        std::fs::rename(path, numbered(1))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(body)?;
    file.sync_data()
}

/// Trims the queue behind the slowest sink, and past `QUEUE_MAX_RECORDS` behind the head
/// (a dead sink then misses the oldest, counted).
async fn trim(log: Arc<RequestLog>, exports: Arc<Exports>) {
    loop {
        tokio::time::sleep(TRIM_INTERVAL).await;
        let slowest = exports
            .sinks
            .iter()
            .map(|s| s.cursor.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        let head = log.store.chain_head().seq;
        let floor = head.saturating_sub(QUEUE_MAX_RECORDS);
        let through = slowest.max(floor);
        let store = Arc::clone(&log.store);
        let trimmed = tokio::task::spawn_blocking(move || {
            let first = store.queue_first()?;
            match first {
                Some(first) if first <= through => store.trim_queue(through),
                _ => Ok(0),
            }
        })
        .await;
        if let Ok(Ok(removed)) = trimmed {
            if floor > slowest && removed > 0 {
                let lost = floor - slowest;
                exports
                    .dropped
                    .fetch_add(lost.min(removed), Ordering::Relaxed);
                tracing::warn!(records = lost, "export queue full: the oldest records were dropped before a slow sink took them");
                for sink in &exports.sinks {
                    sink.cursor.fetch_max(floor, Ordering::Relaxed);
                }
            }
        }
    }
}
