//! The writer: reads the outbox from where the store says it stopped, writes the records
//! of finished requests in batches (with that position, atomically), tells the outbox
//! how far it got, and drops partitions past retention or over the disk cap. At a stop
//! it writes everything the outbox holds, then ends.

use super::RequestLog;
use crate::clock::Clock;
use crate::config::ContentMode;
use crate::governance::outbox::{Outbox, Position, READ_MAX_BYTES, SEGMENT_MAX_BYTES};
use crate::governance::replicator::Replicator;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate_raft::codec;

/// How long the writer waits when the outbox has nothing new: records show in queries
/// this long after their request ends, at most (plus a batch's write).
const IDLE_WAIT_MS: u64 = 50;

/// A batch starts at most this often while the writer keeps up: each ends in an fsync
/// of the store, and under load a writer that took whatever had arrived since its last
/// batch fsynced hundreds of times a second (a fifth of the node's CPU, in the kernel).
const BATCH_INTERVAL_MS: u64 = 100;

/// Pause after the store failed a write (a full disk): the same batch is tried again.
const RETRY_BACKOFF_MS: u64 = 1000;

/// How often retention is checked (the disk cap is checked after every batch).
const SWEEP_INTERVAL_MS: u64 = 10_000;

/// The journal's size and the disk cap are looked at once this much has been written
/// since the last look (a batch's worth may go past the cap before it is seen), or this
/// often: each look lists the store's files.
const SPACE_CHECK_BYTES: usize = 1 << 20;
const SPACE_CHECK_MS: u64 = 1000;

/// Captured bodies one batch carries at most: the store is over its cap by at most
/// about this much before the next check.
const BATCH_CONTENT_MAX_BYTES: usize = 4 << 20;

/// The running writer: send `close` at the stop, then await `task`.
pub struct LogWriter {
    pub task: JoinHandle<()>,
    pub close: oneshot::Sender<()>,
}

pub fn spawn(
    log: Arc<RequestLog>,
    outbox: Arc<Outbox>,
    replicator: Arc<dyn Replicator>,
    clock: Arc<dyn Clock>,
) -> LogWriter {
    let (close, close_rx) = oneshot::channel();
    let task = tokio::spawn(run(log, outbox, replicator, clock, close_rx));
    LogWriter { task, close }
}

async fn run(
    log: Arc<RequestLog>,
    outbox: Arc<Outbox>,
    replicator: Arc<dyn Replicator>,
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
    // Bytes written since the journal and the disk cap were last looked at, and when.
    let mut unchecked_bytes = 0usize;
    let mut space_checked = tokio::time::Instant::now();
    loop {
        let started = tokio::time::Instant::now();
        let now = clock.now_ms();
        if last_sweep.is_none_or(|t| now.saturating_sub(t) >= SWEEP_INTERVAL_MS) {
            last_sweep = Some(now);
            let store = Arc::clone(&log.store);
            let (retention, content_retention, cap) = (
                log.retention_ms,
                log.content_retention_ms,
                log.max_disk_bytes,
            );
            let swept = off_thread(&outbox, move || {
                store.sweep(now, retention, content_retention, cap)
            })
            .await;
            if let Ok(Err(e)) = swept {
                tracing::warn!(error = ?e, "request log retention sweep failed");
            }
        }
        let from = mark;
        let reader = Arc::clone(&outbox);
        let cpu = Arc::clone(&log);
        let entries = match off_thread(&outbox, move || {
            let started = thread_cpu_us();
            let read = reader.read_after(from);
            cpu.writer_cpu_us
                .fetch_add(thread_cpu_us().saturating_sub(started), Ordering::Relaxed);
            read
        })
        .await
        {
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
        if entries.is_empty() {
            if closing {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)) => {}
                _ = &mut close, if !closing => closing = true,
            }
            continue;
        }
        // The records of finished requests, with their bodies, up to a batch's worth of
        // bodies; the entries after it are read again next time.
        // What each key asks the log to keep is read as the record is written: a
        // key set to `off` leaves no record (its bodies were never kept).
        let mut records = Vec::new();
        let mut content_bytes = 0;
        let mut last = None;
        {
            let state = replicator.state().read();
            for (entry, position) in entries {
                if content_bytes >= BATCH_CONTENT_MAX_BYTES {
                    break;
                }
                last = Some(position);
                let Some(bytes) = entry else { continue };
                // The record's first fields, read in place: the id (for the bodies
                // kept) and the key (for what it asks the log to keep).
                let (content, key_content) = match codec::decode_front::<RecordHead<'_>>(&bytes) {
                    Ok((head, _)) => (
                        log.take(head.request_id),
                        head.virtual_key_id
                            .filter(|_| !state.key_log_contents().is_empty())
                            .and_then(|k| state.key_log_content(&k.into())),
                    ),
                    Err(e) => {
                        tracing::error!(error = ?e, "an outbox record is not a request record; not logged");
                        continue;
                    }
                };
                if log.content_for(key_content) == ContentMode::Off {
                    continue;
                }
                content_bytes += content
                    .as_ref()
                    .map_or(0, |c| c.request_body.len() + c.response_body.len());
                records.push((bytes, content));
            }
        }
        let Some(last) = last else { continue };
        let n = records.len() as u64;
        let batch_bytes: usize = records
            .iter()
            .map(|(r, c)| {
                r.len()
                    + c.as_ref()
                        .map_or(0, |c| c.request_body.len() + c.response_body.len())
            })
            .sum();
        unchecked_bytes += batch_bytes;
        let check_space = unchecked_bytes >= SPACE_CHECK_BYTES
            || space_checked.elapsed() >= Duration::from_millis(SPACE_CHECK_MS);
        if check_space {
            unchecked_bytes = 0;
            space_checked = tokio::time::Instant::now();
        }
        let store = Arc::clone(&log.store);
        let cap = log.max_disk_bytes;
        let cpu = Arc::clone(&log);
        let written = off_thread(&outbox, move || {
            let started = thread_cpu_us();
            let encoded = last.encode();
            if records.is_empty() {
                store.mark(&encoded)?;
            } else {
                store.append_encoded(records, &encoded)?;
            }
            if check_space {
                store.trim_journal()?;
                if store.over(cap) {
                    // Over the cap: the oldest go now, not at the next sweep.
                    store.sweep(now, u64::MAX, u64::MAX, cap)?;
                }
            }
            cpu.writer_cpu_us
                .fetch_add(thread_cpu_us().saturating_sub(started), Ordering::Relaxed);
            Ok::<(), super::store::StoreError>(())
        })
        .await;
        match written {
            Ok(Ok(())) => {
                log.written.fetch_add(n, Ordering::Relaxed);
                outbox.logged(last);
                mark = Some(last);
                let behind = lag(outbox.appended(), mark) > READ_MAX_BYTES as u64 / 2;
                if !closing && !behind {
                    let next = started + Duration::from_millis(BATCH_INTERVAL_MS);
                    tokio::select! {
                        _ = tokio::time::sleep_until(next) => {}
                        _ = &mut close => closing = true,
                    }
                }
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

/// Runs store and outbox work on a blocking thread, or inline in the simulator, where
/// nothing may run beside the host's one thread (when a batch lands would depend on
/// the real machine, and the anchors it leads to with it).
async fn off_thread<T: Send + 'static>(
    outbox: &Outbox,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if outbox.is_simulated() {
        let done = f();
        // Let the host's other tasks run, as the await of a blocking task would.
        tokio::task::yield_now().await;
        return Ok(done);
    }
    tokio::task::spawn_blocking(f).await
}

/// The first fields of a `RequestRecord`'s encoding, in its order.
#[derive(serde::Deserialize)]
struct RecordHead<'a> {
    request_id: &'a str,
    #[allow(dead_code)]
    time_ms: u64,
    #[allow(dead_code)]
    node: u64,
    #[serde(borrow)]
    virtual_key_id: Option<&'a str>,
}

/// CPU time of the calling thread, in microseconds.
fn thread_cpu_us() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000 + t.tv_nsec as u64 / 1000
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
