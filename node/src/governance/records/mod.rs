//! The request log: one record per request, answered or refused, on the node that served
//! it. The request path writes nothing here: a request's intent and its end (record and
//! charge together) go into the charge outbox, one `write(2)` each, and the writer
//! (`writer`) reads the outbox into the store in batches, so a crash loses no record and
//! logging costs a request no more than the outbox write it already made. Queries and
//! stats answer from the store of each node; `http::admin::logs` asks every member and
//! merges.
//!
//! # Layout
//! - `keys`: how records, indexes and totals are laid out in keys and partitions.
//! - `store`: the fjall store: batches of records, the chain, lookups, stats.
//! - `index`: what a batch writes beside its records: postings and hourly totals; the
//!   postings of an older store, rebuilt at open.
//! - `space`: retention, the disk cap and the journal's size.
//! - `query`: one node's answer to a log query, and the merge of every node's answers.
//! - `writer`: the task that reads the outbox into the store.
//! - `peer`: other nodes' questions, answered from this node's store.
//! - `verify`: the check of a node's hash chain against its anchors.
//! - `rfc3339`: the API's timestamps.
//! - `view`: a record as JSON (the API's and the exports' shape).
//! - `export`: `[[logs.exports]]` sinks fed from a queue in the store.
//! - `tests`: unit tests.

pub mod export;
mod index;
pub mod keys;
pub mod peer;
pub mod query;
pub mod rfc3339;
pub mod space;
pub mod store;
#[cfg(test)]
mod tests;
pub mod verify;
pub mod view;
pub mod writer;

use crate::config::{ContentMode, LogsConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use store::LogStore;
use tollgate_proto::records::CapturedContent;

/// Longest body captured (each of request and response); the rest is cut and the
/// content says so.
pub const CAPTURE_MAX_BYTES: usize = 1 << 20;

/// Captured bodies waiting for their record to be written, at most: past it a request's
/// content is dropped (and counted), never the request held up.
const CAPTURE_QUEUE_MAX_BYTES: u64 = 256 << 20;

/// A node's request log.
pub struct RequestLog {
    pub store: Arc<LogStore>,
    pub retention_ms: u64,
    pub content_retention_ms: u64,
    pub max_disk_bytes: u64,
    /// Records written to the store (`tollgate_log_records_total`).
    pub written: AtomicU64,
    /// Outbox bytes not yet in the store, as of the writer's last look
    /// (`tollgate_log_writer_lag_bytes`).
    pub lag_bytes: AtomicU64,
    /// CPU time the writer spent reading the outbox and writing the store, in
    /// microseconds (`tollgate_log_writer_cpu_seconds_total`; the store's own flushes
    /// and compactions run on its worker thread, not counted here).
    pub writer_cpu_us: AtomicU64,
    /// What the log keeps of a request whose key does not say (`[logs] content`).
    pub content: ContentMode,
    /// Captured bodies by request id, until the writer stores them with the record.
    captured: Mutex<HashMap<String, CapturedContent>>,
    captured_bytes: AtomicU64,
    /// Entries of `captured` (read without its lock).
    captured_count: AtomicUsize,
    /// Bodies not captured because the queue was full (`tollgate_log_content_dropped_total`).
    pub content_dropped: AtomicU64,
}

impl RequestLog {
    pub fn new(store: LogStore, config: &LogsConfig) -> Arc<RequestLog> {
        Arc::new(RequestLog {
            store: Arc::new(store),
            retention_ms: config.retention_ms(),
            content_retention_ms: config.content_retention_ms(),
            max_disk_bytes: config.max_disk_bytes,
            written: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            writer_cpu_us: AtomicU64::new(0),
            content: config.content,
            captured: Mutex::new(HashMap::new()),
            captured_bytes: AtomicU64::new(0),
            captured_count: AtomicUsize::new(0),
            content_dropped: AtomicU64::new(0),
        })
    }

    /// What the log keeps of a request by a key with `key_content` (its own setting).
    pub fn content_for(&self, key_content: Option<ContentMode>) -> ContentMode {
        key_content.unwrap_or(self.content)
    }

    /// Keeps a request's bodies until its record is written (before its `Done` goes into
    /// the outbox, so the writer finds them).
    pub fn keep(&self, request_id: &str, content: CapturedContent) {
        let bytes = (content.request_body.len() + content.response_body.len()) as u64;
        if self.captured_bytes.load(Ordering::Relaxed) + bytes > CAPTURE_QUEUE_MAX_BYTES {
            self.content_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.captured_bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        captured.insert(request_id.to_owned(), content);
        self.captured_count.store(captured.len(), Ordering::Relaxed);
    }

    /// A request's bodies, if they were captured.
    pub fn take(&self, request_id: &str) -> Option<CapturedContent> {
        // Kept before the request's `Done` is written: none kept, none to take.
        if self.captured_count.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let content = {
            let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
            let content = captured.remove(request_id)?;
            self.captured_count.store(captured.len(), Ordering::Relaxed);
            content
        };
        let bytes = (content.request_body.len() + content.response_body.len()) as u64;
        self.captured_bytes.fetch_sub(bytes, Ordering::Relaxed);
        Some(content)
    }
}
