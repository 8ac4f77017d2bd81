//! Node-side request and token rate limits (budget admission is `admission.rs`).

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tollgate_proto::{RateLimit, RateLimitId, UnixMs};
use tollgate_raft::window_at;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default, Clone, Copy)]
struct WindowCount {
    start_ms: UnixMs,
    count: u64,
}

impl WindowCount {
    /// The count in the window starting at `start_ms` (zero if the stored one ended).
    fn current(&self, start_ms: UnixMs) -> u64 {
        if self.start_ms == start_ms {
            self.count
        } else {
            0
        }
    }

    fn add(&mut self, start_ms: UnixMs, n: u64) {
        if self.start_ms != start_ms {
            *self = WindowCount { start_ms, count: 0 };
        }
        self.count = self.count.saturating_add(n);
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: WindowCount,
    tokens: WindowCount,
}

/// Fixed-window request and token counters, aligned to UTC boundaries.
#[derive(Default)]
pub struct RateLimiter {
    counters: Mutex<HashMap<RateLimitId, Counters>>,
}

impl RateLimiter {
    /// Admits one request against every limit or none: counts are only taken when all
    /// limits have room, so a rejected request uses nothing.
    pub fn admit(&self, limits: &[RateLimit], now_ms: UnixMs) -> Result<(), ApiError> {
        if limits.is_empty() {
            return Ok(());
        }
        let mut counters = lock(&self.counters);
        for limit in limits {
            let c = counters.get(&limit.id);
            if let (Some(max), Some(window)) = (limit.request_max, limit.request_window) {
                let w = window_at(window, true, 0, now_ms);
                if c.map_or(0, |c| c.requests.current(w.start_ms)) >= max {
                    return Err(limited(
                        limit,
                        "requests",
                        max,
                        window.as_str(),
                        w.end_ms,
                        now_ms,
                    ));
                }
            }
            if let (Some(max), Some(window)) = (limit.token_max, limit.token_window) {
                let w = window_at(window, true, 0, now_ms);
                if c.map_or(0, |c| c.tokens.current(w.start_ms)) >= max {
                    return Err(limited(
                        limit,
                        "tokens",
                        max,
                        window.as_str(),
                        w.end_ms,
                        now_ms,
                    ));
                }
            }
        }
        for limit in limits {
            if let (Some(_), Some(window)) = (limit.request_max, limit.request_window) {
                let w = window_at(window, true, 0, now_ms);
                counters
                    .entry(limit.id.clone())
                    .or_default()
                    .requests
                    .add(w.start_ms, 1);
            }
        }
        Ok(())
    }

    /// Counts the tokens a completed request used against the token windows of `limits`.
    pub fn add_tokens(&self, limits: &[RateLimit], tokens: u64, now_ms: UnixMs) {
        let mut counters = lock(&self.counters);
        for limit in limits {
            if let (Some(_), Some(window)) = (limit.token_max, limit.token_window) {
                let w = window_at(window, true, 0, now_ms);
                counters
                    .entry(limit.id.clone())
                    .or_default()
                    .tokens
                    .add(w.start_ms, tokens);
            }
        }
    }
}

fn limited(
    limit: &RateLimit,
    what: &str,
    max: u64,
    window: &str,
    end_ms: UnixMs,
    now_ms: UnixMs,
) -> ApiError {
    let retry_after_s = end_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
    ApiError::RateLimited {
        message: format!(
            "rate limit {} of {} {max} {what} per {window} exceeded; retry after {retry_after_s}s",
            limit.id,
            limit.owner.kind(),
        ),
        retry_after_s,
    }
}
