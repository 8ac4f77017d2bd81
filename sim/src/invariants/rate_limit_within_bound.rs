//! Rate-limit admission stays within its stated bound. The cluster-wide limit admits at
//! most `limit + n − 1` requests per window while every claim reaches every node within
//! half a claim round (`tollgate_node::governance::shared_limits`). Simulated gossip delivers within
//! one 100 ms round while no link is cut or flaky, so the bound holds in any window such
//! a fault did not touch. A node that starts again in a window claims once before it has
//! heard the others' claims: each restart in the window adds one share, `⌈limit / n⌉`.
//! Windows a cut or flaky link touched have no bound to check (each side claims on a
//! stale view); their counts go to the trace.

use crate::plan::Plan;
use crate::world::World;
use std::time::Duration;
use tollgate_proto::{RateLimit, UnixMs};
use tollgate_raft::window_at;

/// Clocks disagree by at most this (the plan's skew is within ±2 s).
const SKEW_MS: u64 = 2_000;

pub fn on_admit(world: &World, limits: &[RateLimit], now_ms: UnixMs) {
    let mut w = world.lock();
    for limit in limits {
        let (Some(max), Some(window)) = (limit.request_max, limit.request_window) else {
            continue;
        };
        let start = window_at(window, true, 0, now_ms).start_ms;
        *w.rate_admitted
            .entry((limit.id.to_string(), start))
            .or_default() += 1;
        w.rate_max.insert(limit.id.to_string(), max);
    }
}

pub fn check(world: &World, plan: &Plan, at: Duration) {
    let w = world.lock();
    let n = plan.nodes;
    let mut lines = Vec::new();
    let mut breaches = Vec::new();
    for ((limit, start), admitted) in &w.rate_admitted {
        let Some(max) = w.rate_max.get(limit).copied() else {
            continue;
        };
        // The window on simulated time, widened by the clocks' disagreement.
        let begin = start.saturating_sub(plan.wall_ms(Duration::ZERO) + SKEW_MS);
        let end = (start + 60_000).saturating_sub(plan.wall_ms(Duration::ZERO)) + SKEW_MS;
        let inside = |t: Duration| (begin..end).contains(&(t.as_millis() as u64));
        let cut = w.cut_spans.iter().any(|(from, until)| {
            let from = from.as_millis() as u64;
            let until = until.map_or(u64::MAX, |u| u.as_millis() as u64);
            from < end && until > begin
        });
        let restarts = w.restarts.iter().filter(|t| inside(**t)).count() as u64;
        let bound = max + n - 1 + restarts * max.div_ceil(n);
        let window = tollgate_raft::rfc3339(*start);
        if cut {
            lines.push(format!(
                "rate limit {limit}, window {window}: {admitted} admitted of {max} (links were cut: no bound)"
            ));
        } else {
            lines.push(format!(
                "rate limit {limit}, window {window}: {admitted} admitted of {max} (bound {bound}, {restarts} restarts)"
            ));
            if *admitted > bound {
                breaches.push(format!(
                    "rate limit {limit} admitted {admitted} in the window from {window}, over its bound {bound} ({max} + {n} − 1 + {restarts} restarts × ⌈{max}/{n}⌉)"
                ));
            }
        }
    }
    drop(w);
    for line in lines {
        world.note(at, line);
    }
    for b in breaches {
        world.violation(at, b);
    }
}
