//! Counters the request path keeps for `/metrics` (one relaxed atomic add each).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters updated on the request path (one relaxed atomic add each).
#[derive(Default)]
pub struct Counters {
    /// Inference responses by status class: index 0 = 1xx .. 4 = 5xx.
    pub responses: [AtomicU64; 5],
    /// Attempts at a provider that failed and were retried or fell back.
    pub upstream_failures: AtomicU64,
    /// Client connections on the HTTP port: open now, closed at accept because the
    /// node's or the client address's cap was reached, and closed by the header-read
    /// timeout; stream requests refused at the streams cap.
    pub connections_open: AtomicU64,
    pub connections_refused_node: AtomicU64,
    pub connections_refused_address: AtomicU64,
    pub connections_timed_out: AtomicU64,
    /// Kept-alive connections closed after the idle timeout.
    pub connections_idle_closed: AtomicU64,
    pub streams_refused: AtomicU64,
}

impl Counters {
    pub fn count_response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}
