//! A snapshot once the log since the last one takes `SNAPSHOT_EVERY_BYTES`. openraft 0.9
//! snapshots by entry count only (`SNAPSHOT_LOGS_SINCE_LAST`), and a node's log lives in
//! sled's page cache until a snapshot lets it be purged: at saturation a charge batch is
//! tens of kilobytes, so thousands of entries would hold hundreds of megabytes.

use std::time::Duration;
use tollgate_raft::store::SNAPSHOT_EVERY_BYTES;
use tollgate_raft::typ::Raft;

/// How often the log's bytes are looked at.
const CHECK_MS: u64 = 1_000;

/// Bytes appended to this node's log so far.
pub type Appended = Box<dyn Fn() -> u64 + Send + Sync>;

/// Runs until the Raft shuts down: asks for a snapshot each time the log has grown by
/// `SNAPSHOT_EVERY_BYTES` since the last one began.
pub async fn snapshot_by_bytes(raft: Raft, appended: Appended) {
    let mut since = appended();
    loop {
        tokio::time::sleep(Duration::from_millis(CHECK_MS)).await;
        if raft.metrics().borrow().running_state.is_err() {
            return;
        }
        let now = appended();
        if now.saturating_sub(since) < SNAPSHOT_EVERY_BYTES {
            continue;
        }
        since = now;
        tracing::debug!(bytes = now, "log past its byte bound; snapshotting");
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}
