//! Node-side enforcement: request/token rate limits and budget admission with
//! reservations. A request reserves its estimated cost on every budget of its chain; the
//! reservation becomes the real cost at completion and is released once the charge is
//! applied, so concurrent requests cannot together spend past a limit by more than the
//! error of their estimates.

use crate::error::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tollgate_proto::{BudgetId, RateLimit, RateLimitId, UnixMs, Usd};
use tollgate_raft::{rfc3339, window_at, GovState};

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

/// Amounts held against budgets: reservations of requests in flight plus real costs of
/// completed requests whose charge is not applied yet.
#[derive(Default)]
pub struct Admission {
    held: Mutex<HashMap<BudgetId, u64>>,
}

/// Amounts one request holds, per budget. Dropping it releases them.
pub struct Hold {
    admission: Arc<Admission>,
    items: Vec<(BudgetId, u64)>,
}

impl Admission {
    /// Reserves `amount` on every budget of `chain`, or on none if one lacks room.
    pub fn reserve(
        self: &Arc<Self>,
        state: &GovState,
        chain: &[BudgetId],
        amount: Usd,
        now_ms: UnixMs,
    ) -> Result<Hold, ApiError> {
        let mut held = lock(&self.held);
        for id in chain {
            let Some(status) = state.budget_status(id, now_ms) else {
                continue;
            };
            let already = held.get(id).copied().unwrap_or(0);
            let committed = status.spent.0.saturating_add(already);
            if committed.saturating_add(amount.0) > status.budget.limit.0 {
                return Err(ApiError::BudgetExhausted(format!(
                    "budget {id} of {} {} is exhausted: limit ${} per {}, spent ${}, in flight ${}, this request may cost up to ${}; it resets at {}",
                    status.budget.owner.kind(),
                    status.budget.owner.id(),
                    status.budget.limit,
                    status.budget.reset,
                    status.spent,
                    Usd(already),
                    amount,
                    rfc3339(status.window.end_ms),
                )));
            }
        }
        let mut items = Vec::with_capacity(chain.len());
        for id in chain {
            *held.entry(id.clone()).or_default() += amount.0;
            items.push((id.clone(), amount.0));
        }
        Ok(Hold {
            admission: Arc::clone(self),
            items,
        })
    }

    fn release(&self, items: &[(BudgetId, u64)]) {
        if items.is_empty() {
            return;
        }
        let mut held = lock(&self.held);
        for (id, amount) in items {
            if let Some(h) = held.get_mut(id) {
                *h = h.saturating_sub(*amount);
                if *h == 0 {
                    held.remove(id);
                }
            }
        }
    }

    /// Total held on one budget, for the usage API.
    pub fn held_on(&self, id: &BudgetId) -> Usd {
        Usd(lock(&self.held).get(id).copied().unwrap_or(0))
    }
}

impl Hold {
    /// An empty hold (no budgets in the chain).
    pub fn none(admission: &Arc<Admission>) -> Hold {
        Hold {
            admission: Arc::clone(admission),
            items: Vec::new(),
        }
    }

    /// Replaces the reservation by the real cost; the returned hold is released when the
    /// charge has been applied.
    pub fn settle(mut self, cost: Usd) -> Hold {
        let items = std::mem::take(&mut self.items);
        let mut held = lock(&self.admission.held);
        let mut settled = Vec::with_capacity(items.len());
        for (id, reserved) in items {
            let h = held.entry(id.clone()).or_default();
            *h = h.saturating_sub(reserved).saturating_add(cost.0);
            if *h == 0 {
                held.remove(&id);
            }
            settled.push((id, cost.0));
        }
        drop(held);
        Hold {
            admission: Arc::clone(&self.admission),
            items: settled,
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.admission.release(&self.items);
    }
}
