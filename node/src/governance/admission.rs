//! Budget admission with reservations against escrow leases.
//!
//! A request reserves its estimated cost on every budget of its chain (provider config →
//! key → team → customer). The room it reserves from is this node's **escrow lease** of
//! each budget: a slice of the budget's room in its current window, granted through the
//! replicated state (`Command::RequestLease`), which never grants more than
//! `limit − spent − Σ leases`. So admission takes no Raft round trip while the lease
//! lasts, and the nodes together can never reserve more than is left.
//!
//! What this node may still reserve on a budget is `lease − held − returning`:
//! - `held`: reservations of requests in flight, then their real costs until the charge
//!   is applied (a `Hold`; applying the charge consumes the same amount of the lease);
//! - `returning`: what this node gave back and the state has not applied yet.
//!
//! Leases are sized from the node's recent demand (about `LEASE_HORIZON_MS` of it, at
//! most a fair share of the room left: `(limit − spent) / voters`), topped up before
//! they run out, given back when idle, when another node was granted less than it
//! needed (a *shortfall*), and all at once when the node drains. A node that has not
//! heard from the cluster for `LEASE_TRUST_MS` stops admitting on its leases: the leader
//! reclaims the leases of a node it has not heard from for longer than that.
//!
//! # Layout
//! - `admission.rs`: `Admission`, its per-budget bookkeeping, `Hold` and `AdmissionError`.
//! - `reserve`: reserving on a chain, asking for room, refusing with the budget named.
//! - `maintain`: lease requests sized to demand, top-ups, give-backs, release at drain.
//!
//! Overspend is bounded by estimate errors (a real cost above its reservation) and by
//! the requests in flight on a node whose leases were reclaimed or voided (budget changed).

use crate::clock::Clock;
use crate::governance::replicator::{ReplicateError, Replicator};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tollgate_proto::{BudgetId, UnixMs, Usd};
use tollgate_raft::{BudgetStatus, GovState};

/// How much demand a lease is sized for.
const LEASE_HORIZON_MS: u64 = 2_000;
/// Demand is measured over this many buckets of `DEMAND_BUCKET_MS`.
const DEMAND_BUCKETS: usize = 8;
const DEMAND_BUCKET_MS: u64 = 250;
/// A lease unused this long is given back (what requests in flight do not need).
const IDLE_RETURN_MS: u64 = 3_000;
/// A node that has not heard from the cluster (follower: from the leader; leader: from a
/// quorum) for this long stops admitting on its leases. The leader reclaims a silent
/// node's leases only after `cluster::replicator::RECLAIM_AFTER_MS`, well past this.
pub const LEASE_TRUST_MS: u64 = 5_000;
/// How long a request that found the room in other nodes' leases waits for them to give
/// it back (they do within one maintenance tick of seeing the shortfall).
const CONTENTION_WAIT_MS: u64 = 400;
/// After another node's shortfall, how long this node leaves the room to it (no
/// top-ups; its requests still ask for what they need).
const YIELD_AFTER_SHORTFALL_MS: u64 = 1_000;
/// Period of the maintenance task (top-ups, give-backs).
pub const MAINTENANCE_MS: u64 = 100;
/// Deadline of a lease request on the request path, waiting for its turn included.
const GRANT_DEADLINE: Duration = Duration::from_secs(5);
/// After a lease request failed, requests for the same budget fail at once for this long
/// instead of each waiting for its own failure.
const GRANT_FAILURE_HOLD_MS: u64 = 1_000;
/// How long a refusal waits for the charges held before it to be applied.
const SETTLE_WAIT_MS: u64 = 1_000;
/// Period of the task that decides whether this node trusts its leases.
const TRUST_CHECK_MS: u64 = 50;

/// Lock order, everywhere: the replicated state's read lock first, then `local` (the
/// admin view reads `local` under the state lock; the other order could deadlock behind
/// a waiting writer).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How admission decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Reservations against escrow leases: exact across the cluster.
    Leases,
    /// Test hook (`TOLLGATE_TEST_NAIVE_BUDGETS=1`): the check-then-charge other
    /// gateways do (admit while the applied spend is below the limit; nothing
    /// reserved), kept to measure the overshoot leases prevent.
    Naive,
}

/// Recent demand on one budget: estimates admitted per bucket.
#[derive(Debug, Default)]
struct Demand {
    buckets: [(u64, u64); DEMAND_BUCKETS],
}

impl Demand {
    fn add(&mut self, now_ms: UnixMs, amount: u64) {
        let slot = now_ms / DEMAND_BUCKET_MS;
        let b = &mut self.buckets[(slot % DEMAND_BUCKETS as u64) as usize];
        if b.0 != slot {
            *b = (slot, 0);
        }
        b.1 = b.1.saturating_add(amount);
    }

    /// Admitted per `LEASE_HORIZON_MS`, over the recent buckets.
    fn per_horizon(&self, now_ms: UnixMs) -> u64 {
        let slot = now_ms / DEMAND_BUCKET_MS;
        let oldest = slot.saturating_sub(DEMAND_BUCKETS as u64 - 1);
        let sum = self
            .buckets
            .iter()
            .filter(|(s, _)| *s >= oldest && *s <= slot)
            .map(|(_, a)| *a)
            .fold(0u64, u64::saturating_add);
        let span = DEMAND_BUCKETS as u64 * DEMAND_BUCKET_MS;
        (u128::from(sum) * u128::from(LEASE_HORIZON_MS) / u128::from(span)) as u64
    }
}

/// This node's side of one budget.
#[derive(Default)]
struct Local {
    held: u64,
    returning: u64,
    demand: Demand,
    last_use_ms: UnixMs,
    /// Sequence of the last shortfall this node answered.
    answered_shortfall: u64,
    /// The give-back proposed and not yet seen applied: its sequence number and amount
    /// (counted in `returning` until the state shows a return of that number or later).
    pending_return: Option<(u64, u64)>,
    /// When a lease request for this budget last failed.
    grant_failed_at_ms: UnixMs,
    /// Until when this node does not top its lease up: another node fell short, and a
    /// top-up would take the room it waits for.
    yield_until_ms: UnixMs,
    /// Amounts of requests waiting for a grant, added to the next one.
    waiting: u64,
    /// One lease request at a time per budget.
    granting: Arc<tokio::sync::Mutex<()>>,
}

/// Budget admission of this node.
pub struct Admission {
    node: u64,
    mode: Mode,
    replicator: Arc<dyn Replicator>,
    clock: Arc<dyn Clock>,
    local: Mutex<BTreeMap<BudgetId, Local>>,
    /// Whether this node may admit on its leases: caught up since it started, and it
    /// heard from the cluster within `LEASE_TRUST_MS` (refreshed every `TRUST_CHECK_MS`).
    trusted: AtomicBool,
    /// Sequence numbers of give-backs: above every number a previous run of this node
    /// used (they start from the wall clock in microseconds-ish, and from the state's
    /// last applied return).
    next_return: AtomicU64,
    /// Lease requests and give-backs proposed, for `/metrics`.
    pub lease_requests: AtomicU64,
    pub lease_returns: AtomicU64,
    /// Holds of charges on their way to the ledgers (settled or replayed), and how many
    /// of them were released once applied. Between a charge's apply and its release its
    /// cost counts twice (spent and held), so a refusal first waits for those.
    charges_held: AtomicU64,
    charges_released: AtomicU64,
}

/// The local side of one budget, made on first use: a shortfall recorded before this
/// node looked is not taken for a new one. (The id is cloned only to make the entry.)
fn entry<'a>(
    local: &'a mut BTreeMap<BudgetId, Local>,
    state: &GovState,
    id: &BudgetId,
) -> &'a mut Local {
    if !local.contains_key(id) {
        let fresh = Local {
            answered_shortfall: state.escrow().shortfall(id).map_or(0, |s| s.seq),
            ..Local::default()
        };
        local.insert(id.clone(), fresh);
    }
    // Present: inserted above if it was not.
    local
        .get_mut(id)
        .unwrap_or_else(|| unreachable!("the entry was just made"))
}

/// This node's side of one budget in one window: its lease, and what it uses of it
/// (held by requests, or being given back).
struct Here {
    lease: u64,
    used: u64,
}

impl Here {
    /// What this node may still reserve.
    fn free(&self) -> u64 {
        self.lease.saturating_sub(self.used)
    }
}

/// Why a reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// A budget of the chain has no room for the request; the message names the budget,
    /// its figures and when it resets.
    #[error("{0}")]
    Exhausted(String),
    /// This node has not heard from the cluster lately (or has not caught up since it
    /// started), so it cannot trust its leases.
    #[error(
        "this node has not heard from the cluster for over {} s (or has not caught up since it started), so it cannot reserve budget; try another node",
        LEASE_TRUST_MS / 1000
    )]
    Untrusted,
    /// Asking the cluster for a lease failed (no leader, no quorum).
    #[error("cannot reserve budget: the cluster did not grant a lease")]
    Cluster(#[source] ReplicateError),
}

/// Amounts one request holds, per budget. Dropping it releases them.
pub struct Hold {
    admission: Option<Arc<Admission>>,
    items: Vec<(BudgetId, u64)>,
    /// The hold of a charge on its way to the ledgers (counted in `charges_held`).
    charge: bool,
}

impl Admission {
    pub fn new(
        node: u64,
        mode: Mode,
        replicator: Arc<dyn Replicator>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let last_return = replicator.state().read().escrow().last_return(node);
        let first_return = clock
            .now_ms()
            .saturating_mul(1_024)
            .max(last_return.saturating_add(1));
        let admission = Admission {
            node,
            mode,
            trusted: AtomicBool::new(false),
            next_return: AtomicU64::new(first_return),
            lease_requests: AtomicU64::new(0),
            lease_returns: AtomicU64::new(0),
            charges_held: AtomicU64::new(0),
            charges_released: AtomicU64::new(0),
            replicator,
            clock,
            local: Mutex::new(BTreeMap::new()),
        };
        admission.check_trust();
        Arc::new(admission)
    }

    fn check_trust(&self) {
        let trusted =
            self.replicator.staleness_ms() <= LEASE_TRUST_MS && self.replicator.caught_up();
        self.trusted.store(trusted, Ordering::Release);
    }

    pub fn node(&self) -> u64 {
        self.node
    }

    /// This node's lease of the budget of `status` (its current window) and its use.
    fn here(&self, state: &GovState, l: Option<&Local>, status: &BudgetStatus) -> Here {
        Here {
            lease: state
                .escrow()
                .lease_of(&status.budget.id, self.node, status.window.start_ms)
                .0,
            used: l.map_or(0, |l| l.held.saturating_add(l.returning)),
        }
    }
}

impl Hold {
    /// An empty hold (no budgets in the chain).
    pub fn none() -> Hold {
        Hold {
            admission: None,
            items: Vec::new(),
            charge: false,
        }
    }

    /// Takes `more` into this hold (an extension on the same chain): released together.
    pub fn absorb(&mut self, mut more: Hold) {
        if self.admission.is_none() {
            self.admission = more.admission.take();
        }
        for (id, amount) in std::mem::take(&mut more.items) {
            match self.items.iter_mut().find(|(held, _)| *held == id) {
                Some((_, held)) => *held = held.saturating_add(amount),
                None => self.items.push((id, amount)),
            }
        }
    }

    /// Replaces the reservation by the real cost; the returned hold is released when the
    /// charge has been applied.
    pub fn settle(mut self, cost: Usd) -> Hold {
        let items = std::mem::take(&mut self.items);
        let admission = self.admission.take();
        if let Some(admission) = &admission {
            let mut local = lock(&admission.local);
            for (id, reserved) in &items {
                // The entry is there: `maintain` keeps entries that hold something.
                if let Some(l) = local.get_mut(id) {
                    l.held = l.held.saturating_sub(*reserved).saturating_add(cost.0);
                }
            }
            admission.charges_held.fetch_add(1, Ordering::AcqRel);
        }
        Hold {
            charge: admission.is_some(),
            admission,
            items: items.into_iter().map(|(id, _)| (id, cost.0)).collect(),
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(admission) = &self.admission {
            admission.release(&self.items);
            if self.charge {
                admission.charges_released.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

mod maintain;
mod reserve;
#[cfg(test)]
mod tests;
