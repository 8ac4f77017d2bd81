//! The writer: reads the outbox from where the store says it stopped, writes the records
//! of finished requests in batches (with that position, atomically), tells the outbox
//! how far it got, and drops partitions past retention or over the disk cap. At a stop
//! it writes everything the outbox holds, then ends.

use super::RequestLog;
use crate::clock::Clock;
use crate::governance::outbox::{Entry, Outbox, Position, SEGMENT_MAX_BYTES};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long the writer waits when the outbox has nothing new: records show in queries
/// this long after their request ends, at most (plus a batch's write).
const IDLE_WAIT_MS: u64 = 50;

/// Pause after the store failed a write (a full disk): the same batch is tried again.
const RETRY_BACKOFF_MS: u64 = 1000;

/// How often retention and the disk cap are checked.
const SWEEP_INTERVAL_MS: u64 = 10_000;

/// The running writer: send `close` at the stop, then await `task`.
pub struct LogWriter {
    pub task: JoinHandle<()>,
    pub close: oneshot::Sender<()>,
}

pub fn spawn(log: Arc<RequestLog>, outbox: Arc<Outbox>, clock: Arc<dyn Clock>) -> LogWriter {
    let (close, close_rx) = oneshot::channel();
    let task = tokio::spawn(run(log, outbox, clock, close_rx));
    LogWriter { task, close }
}

async fn run(
    log: Arc<RequestLog>,
    outbox: Arc<Outbox>,
    clock: Arc<dyn Clock>,
    mut close: oneshot::Receiver<()>,
) {
    let mut mark = match log.store.logged_mark() {
        Ok(mark) => mark.and_then(|m| Position::decode(&m)),
        Err(e) => {
            tracing::error!(error = ?e, "request log mark unreadable; the log is read from the start of the outbox");
            None
        }
    };
    let mut closing = false;
    let mut last_sweep: Option<u64> = None;
    loop {
        let now = clock.now_ms();
        if last_sweep.is_none_or(|t| now.saturating_sub(t) >= SWEEP_INTERVAL_MS) {
            last_sweep = Some(now);
            let store = Arc::clone(&log.store);
            let (retention, content_retention, cap) = (
                log.retention_ms,
                log.content_retention_ms,
                log.max_disk_bytes,
            );
            let swept = tokio::task::spawn_blocking(move || {
                store.sweep(now, retention, content_retention, cap)
            })
            .await;
            if let Ok(Err(e)) = swept {
                tracing::warn!(error = ?e, "request log retention sweep failed");
            }
        }
        let from = mark;
        let reader = Arc::clone(&outbox);
        let entries = match tokio::task::spawn_blocking(move || reader.read_after(from)).await {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!(error = ?e, "outbox unreadable for the request log; trying again");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "request log read failed");
                Vec::new()
            }
        };
        log.lag_bytes
            .store(lag(outbox.appended(), mark), Ordering::Relaxed);
        let Some(last) = entries.last().map(|(_, p)| *p) else {
            if closing {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)) => {}
                _ = &mut close, if !closing => closing = true,
            }
            continue;
        };
        let records: Vec<_> = entries
            .into_iter()
            .filter_map(|(entry, _)| match entry {
                Entry::Done(done) => Some((done.record, None)),
                Entry::Charge(_) | Entry::Intent(_) => None,
            })
            .collect();
        let n = records.len() as u64;
        let store = Arc::clone(&log.store);
        let written = tokio::task::spawn_blocking(move || {
            let encoded = last.encode();
            if records.is_empty() {
                store.mark(&encoded).map(|_| ())
            } else {
                store.append(records, &encoded).map(|_| ())
            }
        })
        .await;
        match written {
            Ok(Ok(())) => {
                log.written.fetch_add(n, Ordering::Relaxed);
                outbox.logged(last);
                mark = Some(last);
            }
            Ok(Err(e)) => {
                tracing::error!(error = ?e, "request log write failed; retrying (the outbox keeps the records)");
                tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "request log write task failed; retrying");
                tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS)).await;
            }
        }
        if !closing
            && matches!(
                close.try_recv(),
                Ok(()) | Err(oneshot::error::TryRecvError::Closed)
            )
        {
            closing = true;
        }
    }
}

/// Outbox bytes after `mark`, roughly (segments are counted as full).
fn lag(appended: Option<Position>, mark: Option<Position>) -> u64 {
    let Some(end) = appended else { return 0 };
    let Some(mark) = mark else { return end.end };
    if end <= mark {
        return 0;
    }
    let segments = end.segment_number().saturating_sub(mark.segment_number());
    (segments * SEGMENT_MAX_BYTES + end.end).saturating_sub(mark.end)
}
