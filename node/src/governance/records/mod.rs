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
//! - `store`: the fjall store (the only module that knows fjall): batches, lookups,
//!   totals, retention and the disk cap.
//! - `query`: one node's answer to a log query, and the merge of every node's answers.
//! - `writer`: the task that reads the outbox into the store.
//! - `peer`: other nodes' questions, answered from this node's store.
//! - `rfc3339`: the API's timestamps.
//! - `tests`: unit tests.

pub mod keys;
pub mod peer;
pub mod query;
pub mod rfc3339;
pub mod store;
#[cfg(test)]
mod tests;
pub mod writer;

use crate::config::LogsConfig;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use store::LogStore;

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
        })
    }
}
