//! `LeaderContact`: when this node last heard from a leader, the follower's staleness
//! clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
// tokio's clock: the simulator's virtual time reaches it.
use tokio::time::Instant;

/// When this node last heard from a leader (milliseconds since the node started), shared
/// by the RPC handler, which records it, and the replicator, which reports it.
pub struct LeaderContact {
    started: Instant,
    last_ms: AtomicU64,
}

impl LeaderContact {
    pub fn new() -> Arc<Self> {
        Arc::new(LeaderContact {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn heard(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Records contact `ago_ms` milliseconds ago, unless a later one is recorded.
    pub fn heard_ago(&self, ago_ms: u64) {
        self.last_ms
            .fetch_max(self.now_ms().saturating_sub(ago_ms), Ordering::AcqRel);
    }

    /// Milliseconds since the leader was last heard from (since start if never).
    pub fn since_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Acquire))
    }
}
