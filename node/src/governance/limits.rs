//! Node-side request and token rate limits (budget admission is `admission.rs`), shared
//! by the cluster through gossip.
//!
//! A node admits against its **claim** on each limit's current window and claims more
//! when it has used it: `shared_limits::next_claim` splits what no node holds among the
//! live nodes, as far as gossip has told this node. Claims and counts are gossiped (at
//! once when a claim changes, otherwise every `PUBLISH_EVERY_MS`). The bound this gives
//! is in `shared_limits`. A node running alone claims the whole limit at once, which is
//! a plain fixed-window counter.

use crate::clock::Clock;
use crate::cluster::gossip::keys::{rate_key, Dimension, RateClaim};
use crate::cluster::gossip::{Gossip, PeerClaim};
use crate::governance::shared_limits::{next_claim, trimmed, Claim};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tollgate_proto::{RateLimit, RateLimitId, ResetDuration, UnixMs};
use tollgate_raft::window_at;

/// A node claims at most once per round, so that claims made at about the same time
/// have reached every node (about one gossip interval) before it claims again: the
/// round is this, or five gossip intervals if that is longer.
pub const CLAIM_ROUND_MS: u64 = 500;
/// Claim rounds per horizon: a node keeps what its recent demand would use over two.
const HORIZON_ROUNDS: u64 = 2;
/// A node that has not asked for a limit this long gives back what it claimed unused.
const IDLE_RELEASE_MS: u64 = 2_000;
/// Counts reach gossip this often (claims at once).
const PUBLISH_EVERY_MS: u64 = 50;
/// A window's slot is dropped this long after the window ended.
const FORGET_AFTER_MS: u64 = 60_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This node's side of one dimension of one limit.
#[derive(Debug, Default)]
struct Slot {
    claim: RateClaim,
    window_end_ms: UnixMs,
    /// When this window's last claim was made (None: not yet in this window).
    round_start_ms: Option<UnixMs>,
    /// Since when this node's share of the free room has been empty (left to others).
    tail_since_ms: Option<UnixMs>,
    /// The last claim in any window, and the asks since: the demand estimate.
    last_claim_ms: Option<UnixMs>,
    asks_since_claim: u64,
    last_ask_ms: UnixMs,
    /// What gossip was last told.
    published: Option<RateClaim>,
    /// Other node generations' latest claims for this slot's window. A node whose clock
    /// runs ahead moves on to the next window and gossips its claim for that one
    /// instead; what it held of this window still counts here (the simulator found
    /// windows overshot by that node's count under clock skew, seed 855).
    peers: BTreeMap<(u64, u64), RateClaim>,
}

impl Slot {
    /// Moves the slot forward to the window holding `now_ms` (count and claim start at
    /// zero). A time in an earlier window (a request that read the clock before the
    /// boundary) counts in the current one: a slot never moves back.
    fn roll(&mut self, window: ResetDuration, now_ms: UnixMs) {
        let w = window_at(window, true, 0, now_ms);
        if w.start_ms > self.claim.window_start_ms || self.window_end_ms == 0 {
            self.claim = RateClaim {
                window_start_ms: w.start_ms,
                count: 0,
                claim: 0,
            };
            self.window_end_ms = w.end_ms;
            self.round_start_ms = None;
            self.tail_since_ms = None;
            self.peers.clear();
        }
    }

    /// Takes in the peers' claims gossip shows now, and returns what they hold of this
    /// slot's window: the latest claim seen from each for it.
    fn others_held(&mut self, claims: &[PeerClaim]) -> u64 {
        for p in claims {
            if p.claim.window_start_ms == self.claim.window_start_ms {
                self.peers.insert((p.node_id, p.generation), p.claim);
            }
        }
        self.peers
            .values()
            .map(|c| c.held())
            .fold(0, u64::saturating_add)
    }

    /// What the demand since the last claim would use over `horizon_ms`.
    fn want(&self, now_ms: UnixMs, horizon_ms: u64) -> u64 {
        match self.last_claim_ms {
            None => u64::MAX,
            Some(t) => {
                let elapsed = now_ms.saturating_sub(t).max(1);
                let per_horizon = u128::from(self.asks_since_claim) * u128::from(horizon_ms)
                    / u128::from(elapsed);
                u64::try_from(per_horizon).unwrap_or(u64::MAX)
            }
        }
    }
}

/// Why a slot has no room.
enum Refusal {
    /// Every node's claims together hold the whole limit: wait for the next window.
    Exhausted,
    /// Room may be free but this node claimed less than a round ago.
    Wait(u64),
}

/// How many nodes the cluster has by its configuration (Raft voters).
pub type MemberCount = Box<dyn Fn() -> usize + Send + Sync>;

pub struct RateLimiter {
    slots: Mutex<BTreeMap<(RateLimitId, Dimension), Slot>>,
    gossip: Arc<Gossip>,
    clock: Arc<dyn Clock>,
    /// Claims split the free room among at least this many nodes (the voters, refreshed
    /// by the publish task): a node that gossip wrongly thinks dead, or that is down,
    /// still has its share held back, so nodes never split among fewer than they are.
    members: MemberCount,
    min_split: std::sync::atomic::AtomicUsize,
    /// `CLAIM_ROUND_MS`, or five gossip intervals if that is longer.
    round_ms: u64,
}

impl RateLimiter {
    pub fn new(
        gossip: Arc<Gossip>,
        clock: Arc<dyn Clock>,
        members: MemberCount,
    ) -> Arc<RateLimiter> {
        let min_split = std::sync::atomic::AtomicUsize::new(members());
        let round_ms = CLAIM_ROUND_MS.max(5 * gossip.interval_ms());
        Arc::new(RateLimiter {
            slots: Mutex::new(BTreeMap::new()),
            gossip,
            clock,
            members,
            min_split,
            round_ms,
        })
    }

    /// Publishes this node's claims (in a cluster) and forgets ended windows
    /// (everywhere), every `PUBLISH_EVERY_MS`, as a task of `tasks`.
    pub fn spawn_publisher(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) {
        let weak = Arc::downgrade(self);
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(PUBLISH_EVERY_MS)).await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.publish(limiter.clock.now_ms());
            }
        });
    }

    /// Admits one request against every limit or none: counts are only taken when all
    /// limits have room, so a rejected request uses nothing (claims it made stay).
    pub fn admit(&self, limits: &[RateLimit], now_ms: UnixMs) -> Result<(), RateLimited> {
        if limits.is_empty() {
            return Ok(());
        }
        let view = self.gossip.view();
        let (live, rank) = view.live_rank(self.gossip.node_id());
        let live = live.max(self.min_split.load(std::sync::atomic::Ordering::Relaxed));
        let mut slots = lock(&self.slots);
        let mut claimed = false;
        for limit in limits {
            for (dimension, max, window) in dimensions(limit) {
                let slot = slots.entry((limit.id.clone(), dimension)).or_default();
                slot.roll(window, now_ms);
                slot.last_ask_ms = now_ms;
                slot.asks_since_claim += 1;
                // A claim made under a higher limit does not outlive a lowered one.
                if slot.claim.count < slot.claim.claim.min(max) {
                    continue;
                }
                let others = slot.others_held(view.peer_claims(limit.id.as_str(), dimension));
                #[cfg(feature = "sim-bugs")]
                let others = match crate::hooks::bugs::active(
                    crate::hooks::bugs::KnownBug::RateClaimsIgnored,
                ) {
                    true => 0,
                    false => others,
                };
                let within_round = slot
                    .round_start_ms
                    .filter(|t| now_ms.saturating_sub(*t) < self.round_ms);
                let tail_waited = slot
                    .tail_since_ms
                    .is_some_and(|t| now_ms.saturating_sub(t) >= self.round_ms);
                let refusal = match next_claim(max, slot.claim, others, live, rank, tail_waited) {
                    Claim::Exhausted => Refusal::Exhausted,
                    Claim::To(_) | Claim::Later if within_round.is_some() => {
                        Refusal::Wait(within_round.unwrap_or(now_ms) + self.round_ms)
                    }
                    Claim::Later => {
                        let since = *slot.tail_since_ms.get_or_insert(now_ms);
                        Refusal::Wait(since + self.round_ms)
                    }
                    Claim::To(c) => {
                        slot.claim.claim = c;
                        slot.round_start_ms = Some(now_ms);
                        slot.last_claim_ms = Some(now_ms);
                        slot.asks_since_claim = 0;
                        slot.tail_since_ms = None;
                        claimed = true;
                        if slot.claim.count < slot.claim.claim.min(max) {
                            continue;
                        }
                        Refusal::Wait(now_ms + self.round_ms)
                    }
                };
                let end_ms = slot.window_end_ms;
                drop(slots);
                if claimed {
                    self.publish(now_ms);
                }
                return Err(limited(
                    limit, dimension, max, window, refusal, end_ms, now_ms,
                ));
            }
        }
        for limit in limits {
            if let (Some(_), Some(window)) = (limit.request_max, limit.request_window) {
                let slot = slots
                    .entry((limit.id.clone(), Dimension::Requests))
                    .or_default();
                slot.roll(window, now_ms);
                slot.claim.count += 1;
            }
        }
        drop(slots);
        if claimed {
            self.publish(now_ms);
        }
        Ok(())
    }

    /// Counts the tokens a completed request used against the token windows of `limits`.
    pub fn add_tokens(&self, limits: &[RateLimit], tokens: u64, now_ms: UnixMs) {
        let mut slots = lock(&self.slots);
        for limit in limits {
            if let (Some(_), Some(window)) = (limit.token_max, limit.token_window) {
                let slot = slots
                    .entry((limit.id.clone(), Dimension::Tokens))
                    .or_default();
                slot.roll(window, now_ms);
                slot.claim.count = slot.claim.count.saturating_add(tokens);
            }
        }
    }

    /// Gives back idle claims, forgets old windows, and tells gossip what changed.
    fn publish(&self, now_ms: UnixMs) {
        let clustered = self.gossip.clustered();
        if clustered {
            self.min_split
                .store((self.members)(), std::sync::atomic::Ordering::Relaxed);
        }
        let mut changed = Vec::new();
        let mut forgotten = Vec::new();
        {
            let mut slots = lock(&self.slots);
            slots.retain(|(id, dimension), s| {
                let keep = now_ms < s.window_end_ms.saturating_add(FORGET_AFTER_MS);
                if !keep && s.published.is_some() {
                    forgotten.push(rate_key(id.as_str(), *dimension));
                }
                keep
            });
            if !clustered {
                return;
            }
            for ((id, dimension), slot) in slots.iter_mut() {
                if now_ms.saturating_sub(slot.last_ask_ms) >= IDLE_RELEASE_MS
                    && slot.claim.claim > slot.claim.count
                {
                    slot.claim.claim = slot.claim.count;
                } else if *dimension == Dimension::Requests
                    && slot
                        .last_claim_ms
                        .is_some_and(|t| now_ms.saturating_sub(t) >= self.round_ms)
                {
                    // (Token demand is not known in advance, so token claims are only
                    // given back when idle.)
                    let want = slot.want(now_ms, HORIZON_ROUNDS * self.round_ms);
                    if let Some(keep) = trimmed(slot.claim, want) {
                        slot.claim.claim = keep;
                    }
                }
                if slot.published != Some(slot.claim) {
                    slot.published = Some(slot.claim);
                    changed.push((rate_key(id.as_str(), *dimension), slot.claim.encode()));
                }
            }
        }
        for (key, value) in changed {
            self.gossip.publish(key, value);
        }
        for key in forgotten {
            self.gossip.unpublish(key);
        }
    }

    /// This node's claims in current windows, for the admin API.
    pub fn own_claims(&self) -> Vec<(RateLimitId, Dimension, RateClaim)> {
        let slots = lock(&self.slots);
        let mut out: Vec<_> = slots
            .iter()
            .map(|((id, d), s)| (id.clone(), *d, s.claim))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }
}

/// The dimensions a limit sets: (what, max, window).
fn dimensions(limit: &RateLimit) -> impl Iterator<Item = (Dimension, u64, ResetDuration)> {
    let requests = limit
        .request_max
        .zip(limit.request_window)
        .map(|(m, w)| (Dimension::Requests, m, w));
    let tokens = limit
        .token_max
        .zip(limit.token_window)
        .map(|(m, w)| (Dimension::Tokens, m, w));
    requests.into_iter().chain(tokens)
}

/// A request over a rate limit: which limit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RateLimited {
    pub message: String,
    pub retry_after_s: u64,
}

fn limited(
    limit: &RateLimit,
    dimension: Dimension,
    max: u64,
    window: ResetDuration,
    refusal: Refusal,
    end_ms: UnixMs,
    now_ms: UnixMs,
) -> RateLimited {
    let (until_ms, why) = match refusal {
        Refusal::Exhausted => (end_ms, "exceeded"),
        Refusal::Wait(at) => (at, "in use on the other nodes of the cluster"),
    };
    let retry_after_s = until_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
    RateLimited {
        message: format!(
            "rate limit {} of {} {max} {} per {} {why}; retry after {retry_after_s}s",
            limit.id,
            limit.owner.kind(),
            dimension.as_str(),
            window.as_str(),
        ),
        retry_after_s,
    }
}

#[cfg(test)]
mod tests;
