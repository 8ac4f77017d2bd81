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
//! Overspend is bounded by estimate errors (a real cost above its reservation) and by
//! the requests in flight on a node whose leases were reclaimed or voided (budget changed).

use crate::clock::Clock;
use crate::error::ApiError;
use crate::replicator::{ReplicateError, Replicator};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tollgate_proto::{BudgetId, Command, Outcome, UnixMs, Usd};
use tollgate_raft::{rfc3339, BudgetStatus, GovState};

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
    local.get_mut(id).expect("the entry was just made")
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

    /// Reserves `amount` on every budget of `chain`, or on none: from this node's leases,
    /// asking for more through the replicated state where one is short.
    pub async fn reserve(
        self: &Arc<Self>,
        chain: &[BudgetId],
        amount: Usd,
    ) -> Result<Hold, ApiError> {
        if chain.is_empty() {
            return Ok(Hold::none());
        }
        if self.mode == Mode::Naive {
            return self.reserve_naive(chain);
        }
        let refused = match self.reserve_rounds(chain, amount, true).await {
            Err(e @ ApiError::BudgetExhausted(_)) => e,
            other => return other,
        };
        // Charges applied but not yet released count twice (spent and held): a refusal
        // decided meanwhile may be spurious. Wait (bounded) until every charge held
        // before it is released, then decide once more.
        let held_before = self.charges_held.load(Ordering::Acquire);
        if self.charges_released.load(Ordering::Acquire) >= held_before {
            return Err(refused);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SETTLE_WAIT_MS);
        while self.charges_released.load(Ordering::Acquire) < held_before
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.reserve_rounds(chain, amount, false).await
    }

    /// The rounds of `reserve`: reserve from the leases, ask for more, wait for others
    /// to give back, refuse.
    async fn reserve_rounds(
        self: &Arc<Self>,
        chain: &[BudgetId],
        amount: Usd,
        count_demand: bool,
    ) -> Result<Hold, ApiError> {
        let mut grantable = false;
        for round in 0..3 {
            let shorts = match self.try_reserve(chain, amount, count_demand && round == 0) {
                Ok(hold) => return Ok(hold),
                Err(shorts) => shorts,
            };
            if !self.trusted.load(Ordering::Acquire) {
                return Err(ApiError::ClusterUnavailable(format!(
                    "this node has not heard from the cluster for over {} s (or has not caught up since it started), so it cannot reserve budget; try another node",
                    LEASE_TRUST_MS / 1000
                )));
            }
            // Refuse without a round trip what no lease could make room for.
            if let Some(e) = self.hopeless(&shorts, amount) {
                return Err(e);
            }
            if round == 2 {
                break;
            }
            if round == 1 && !grantable {
                break;
            }
            let asks = shorts.iter().map(|id| self.ask(id, amount));
            for r in futures_util::future::join_all(asks).await {
                if let Err(e) = r {
                    return Err(ApiError::ClusterUnavailable(format!(
                        "cannot reserve budget: {e}"
                    )));
                }
            }
            if round == 0 {
                // Granted less than needed while other nodes hold leases: they give back
                // their unused part on seeing the shortfall; wait for the room to be free
                // to grant, then ask again.
                grantable = self.wait_for_room(chain, amount).await;
            }
        }
        Err(self.exhausted(chain, amount))
    }

    /// The lease room on every budget of `chain`, reserved at once, or the budgets that
    /// lack it.
    fn try_reserve(
        self: &Arc<Self>,
        chain: &[BudgetId],
        amount: Usd,
        count_demand: bool,
    ) -> Result<Hold, Vec<BudgetId>> {
        let now_ms = self.clock.now_ms();
        let trusted = self.trusted.load(Ordering::Acquire);
        let state = self.replicator.state().read();
        let mut local = lock(&self.local);
        let mut shorts = Vec::new();
        let mut present = Vec::with_capacity(chain.len());
        for id in chain {
            let Some(status) = state.budget_status(id, now_ms) else {
                continue;
            };
            present.push(id);
            let l = entry(&mut local, &state, id);
            // Demand counts every request, admitted or not: it sizes the next lease.
            if count_demand {
                l.demand.add(now_ms, amount.0);
            }
            l.last_use_ms = now_ms;
            let free = if trusted {
                self.here(&state, Some(l), &status).free()
            } else {
                0
            };
            if free < amount.0 {
                shorts.push(id.clone());
            }
        }
        if !shorts.is_empty() {
            return Err(shorts);
        }
        let mut items = Vec::with_capacity(present.len());
        for id in present {
            let l = entry(&mut local, &state, id);
            l.held = l.held.saturating_add(amount.0);
            items.push((id.clone(), amount.0));
        }
        Ok(Hold {
            admission: Some(Arc::clone(self)),
            items,
            charge: false,
        })
    }

    /// A refusal when some short budget cannot fit `amount` even if every lease came
    /// back: its limit minus its spend minus what this node holds is less.
    fn hopeless(&self, shorts: &[BudgetId], amount: Usd) -> Option<ApiError> {
        let now_ms = self.clock.now_ms();
        let state = self.replicator.state().read();
        let local = lock(&self.local);
        for id in shorts {
            let Some(status) = state.budget_status(id, now_ms) else {
                continue;
            };
            let held = local.get(id).map_or(0, |l| l.held);
            let left = status
                .budget
                .limit
                .0
                .saturating_sub(status.spent.0)
                .saturating_sub(held);
            if left < amount.0 {
                return Some(exhausted_error(&state, id, amount, now_ms));
            }
        }
        None
    }

    fn exhausted(&self, chain: &[BudgetId], amount: Usd) -> ApiError {
        let now_ms = self.clock.now_ms();
        let state = self.replicator.state().read();
        let local = lock(&self.local);
        // Name the first budget of the chain this node still cannot reserve on.
        let id = chain
            .iter()
            .find(|id| {
                state
                    .budget_status(id, now_ms)
                    .is_some_and(|s| self.here(&state, local.get(*id), &s).free() < amount.0)
            })
            .unwrap_or(&chain[0]);
        exhausted_error(&state, id, amount, now_ms)
    }

    /// Asks for a lease of `id` large enough for `amount` on top of what this node uses,
    /// plus its recent demand. One request at a time per budget: a request that waited
    /// for another's grant first checks whether that one made room.
    async fn ask(&self, id: &BudgetId, amount: Usd) -> Result<(), ReplicateError> {
        let granting = {
            let state = self.replicator.state().read();
            let mut local = lock(&self.local);
            let l = entry(&mut local, &state, id);
            if self.clock.now_ms().saturating_sub(l.grant_failed_at_ms) < GRANT_FAILURE_HOLD_MS {
                return Err(ReplicateError::Cluster(
                    "a lease request for this budget failed just now".into(),
                ));
            }
            l.waiting = l.waiting.saturating_add(amount.0);
            Arc::clone(&l.granting)
        };
        let result = tokio::time::timeout(GRANT_DEADLINE, async {
            let _turn = granting.lock().await;
            let Some(ask) = self.sized_request(id, amount.0) else {
                return Ok(()); // someone else's grant made the room
            };
            self.propose_grant(ask).await
        })
        .await
        .unwrap_or_else(|_| Err(ReplicateError::Cluster("lease request timed out".into())));
        let mut local = lock(&self.local);
        if let Some(l) = local.get_mut(id) {
            l.waiting = l.waiting.saturating_sub(amount.0);
            if result.is_err() {
                l.grant_failed_at_ms = self.clock.now_ms();
            }
        }
        result
    }

    /// The lease request that covers `amount` (0: a top-up) and the demand, or `None`
    /// when the lease already has room for `amount`.
    fn sized_request(&self, id: &BudgetId, amount: u64) -> Option<Command> {
        let now_ms = self.clock.now_ms();
        let voters = self.replicator.cluster_view().voters.len().max(1) as u64;
        let state = self.replicator.state().read();
        let local = lock(&self.local);
        let status = state.budget_status(id, now_ms)?;
        let l = local.get(id);
        let here = self.here(&state, l, &status);
        let (used, available) = (here.used, here.free());
        if amount > 0 && available >= amount {
            return None;
        }
        let waiting = l.map_or(0, |l| l.waiting);
        let demand = l.map_or(0, |l| l.demand.per_horizon(now_ms));
        let room_left = status.budget.limit.0.saturating_sub(status.spent.0);
        let fair_share = room_left / voters;
        // Enough for the recent demand and whoever waits, at most a fair share (but
        // always what this request needs).
        let target = demand
            .max(amount.saturating_mul(2))
            .saturating_add(waiting)
            .min(fair_share.max(amount));
        let want = target
            .saturating_sub(available)
            .max(amount.saturating_sub(available));
        if want == 0 {
            return None;
        }
        Some(Command::RequestLease {
            budget_id: id.clone(),
            node: self.node,
            need: Usd(used.saturating_add(amount)),
            want: Usd(want),
            at_ms: now_ms,
        })
    }

    async fn propose_grant(&self, command: Command) -> Result<(), ReplicateError> {
        self.lease_requests.fetch_add(1, Ordering::Relaxed);
        match self.replicator.propose(command).await? {
            Outcome::Leased { .. } => Ok(()),
            // The budget went away meanwhile: the retry sees it.
            Outcome::NotFound { .. } => Ok(()),
            // The window of this node's clock is over in the replicated state: its clock
            // is behind the cluster's.
            Outcome::Invalid(m) => Err(ReplicateError::Cluster(format!(
                "{m}: this node's clock is behind the cluster's"
            ))),
            other => Err(ReplicateError::Refused(format!(
                "unexpected lease outcome {other:?}"
            ))),
        }
    }

    /// Waits (bounded) until every budget of `chain` this node is short on has the room
    /// for `amount` free to grant, while other nodes hold leases they may give back;
    /// returns whether it has.
    async fn wait_for_room(&self, chain: &[BudgetId], amount: Usd) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(CONTENTION_WAIT_MS);
        loop {
            let now_ms = self.clock.now_ms();
            let mut grantable = true;
            let mut others_hold = false;
            {
                let state = self.replicator.state().read();
                let local = lock(&self.local);
                for id in chain {
                    let Some(status) = state.budget_status(id, now_ms) else {
                        continue;
                    };
                    let w = status.window.start_ms;
                    let mine = self.here(&state, local.get(id), &status).free();
                    if mine.saturating_add(state.lease_room(&status).0) >= amount.0 {
                        continue;
                    }
                    grantable = false;
                    others_hold |= state.escrow().of_budget(id).any(|(n, l)| {
                        n != self.node && l.window_start_ms == w && l.outstanding.0 > 0
                    });
                }
            }
            if grantable || !others_hold || tokio::time::Instant::now() >= deadline {
                return grantable;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn reserve_naive(&self, chain: &[BudgetId]) -> Result<Hold, ApiError> {
        let now_ms = self.clock.now_ms();
        let state = self.replicator.state().read();
        for id in chain {
            if let Some(s) = state.budget_status(id, now_ms) {
                if s.spent.0 >= s.budget.limit.0 {
                    return Err(exhausted_error(&state, id, Usd::ZERO, now_ms));
                }
            }
        }
        Ok(Hold::none())
    }

    /// Holds `amount` on every budget of `chain` without asking for room: the charges of
    /// an outbox being replayed, which consume this node's leases when applied.
    pub fn hold_replayed(self: &Arc<Self>, chain: &[BudgetId], amount: Usd) -> Hold {
        let state = self.replicator.state().read();
        let mut local = lock(&self.local);
        let mut items = Vec::with_capacity(chain.len());
        for id in chain {
            let l = entry(&mut local, &state, id);
            l.held = l.held.saturating_add(amount.0);
            items.push((id.clone(), amount.0));
        }
        self.charges_held.fetch_add(1, Ordering::AcqRel);
        Hold {
            admission: Some(Arc::clone(self)),
            items,
            charge: true,
        }
    }

    fn release(&self, items: &[(BudgetId, u64)]) {
        if items.is_empty() {
            return;
        }
        let mut local = lock(&self.local);
        for (id, amount) in items {
            if let Some(l) = local.get_mut(id) {
                l.held = l.held.saturating_sub(*amount);
            }
        }
    }

    /// What requests in flight on this node hold of one budget, for the admin view.
    pub fn held_here(&self, id: &BudgetId) -> Usd {
        Usd(lock(&self.local).get(id).map_or(0, |l| l.held))
    }

    /// One maintenance pass: gives back what is unused when another node fell short or
    /// the lease sat idle, and tops leases up before they run out.
    pub async fn maintain(self: &Arc<Self>) {
        if self.mode == Mode::Naive {
            return;
        }
        let now_ms = self.clock.now_ms();
        let trusted = self.trusted.load(Ordering::Acquire);
        // Give-backs to propose (sequence number, budget, amount): new ones, and those
        // not yet seen applied (proposed again with the same number, so at most once).
        let mut give_back: Vec<(u64, BudgetId, u64)> = Vec::new();
        let mut top_up: Vec<BudgetId> = Vec::new();
        {
            let state = self.replicator.state().read();
            let mut local = lock(&self.local);
            let last_return = state.escrow().last_return(self.node);
            // Budgets this node leases, whether or not it used them since it started.
            for (id, _) in state.escrow().of_node(self.node) {
                entry(&mut local, &state, &id);
            }
            local.retain(|id, l| {
                if let Some((seq, amount)) = l.pending_return {
                    if last_return >= seq {
                        // Applied (or overtaken by a later return: then the lease was
                        // not reduced and is still this node's).
                        l.pending_return = None;
                        l.returning = l.returning.saturating_sub(amount);
                    } else {
                        give_back.push((seq, id.clone(), amount));
                    }
                }
                let Some(status) = state.budget_status(id, now_ms) else {
                    // Deleted: keep only until holds are released.
                    return l.held > 0 || l.pending_return.is_some();
                };
                let here = self.here(&state, Some(l), &status);
                let (lease, available) = (here.lease, here.free());
                let shortfall = state.escrow().shortfall(id);
                let other_short =
                    shortfall.is_some_and(|s| s.seq > l.answered_shortfall && s.node != self.node);
                if let Some(s) = shortfall {
                    l.answered_shortfall = l.answered_shortfall.max(s.seq);
                }
                if other_short {
                    l.yield_until_ms = now_ms.saturating_add(YIELD_AFTER_SHORTFALL_MS);
                }
                let idle = now_ms.saturating_sub(l.last_use_ms) >= IDLE_RETURN_MS;
                if available > 0 && (other_short || idle) && l.pending_return.is_none() {
                    let seq = self.next_return.fetch_add(1, Ordering::Relaxed);
                    l.pending_return = Some((seq, available));
                    l.returning = l.returning.saturating_add(available);
                    give_back.push((seq, id.clone(), available));
                } else if trusted && !idle && now_ms >= l.yield_until_ms {
                    let demand = l.demand.per_horizon(now_ms);
                    if demand > 0 && available < demand / 2 {
                        top_up.push(id.clone());
                    }
                }
                lease > 0 || l.held > 0 || l.returning > 0 || !idle
            });
        }
        // In sequence order, one at a time: a later number applied first would make the
        // earlier one a no-op.
        give_back.sort_by_key(|(seq, _, _)| *seq);
        let returns = async {
            for (seq, id, amount) in give_back {
                let command = Command::ReturnLease {
                    budget_id: id.clone(),
                    node: self.node,
                    amount: Usd(amount),
                    seq,
                };
                // Whatever the answer, `returning` stays until the state shows it.
                self.lease_returns.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.replicator.propose(command).await {
                    tracing::debug!(budget = %id, error = %e, "lease give-back not applied yet");
                }
            }
        };
        let top_ups = top_up.into_iter().map(|id| async move {
            let granting = match lock(&self.local).get(&id) {
                Some(l) => Arc::clone(&l.granting),
                None => return,
            };
            // A request is asking already: its grant is sized for the demand too.
            let Ok(_turn) = granting.try_lock() else {
                return;
            };
            if let Some(command) = self.sized_request(&id, 0) {
                if let Err(e) = self.propose_grant(command).await {
                    tracing::debug!(budget = %id, error = %e, "lease top-up failed");
                }
            }
        });
        futures_util::future::join(returns, futures_util::future::join_all(top_ups)).await;
    }

    /// Runs `maintain` every `MAINTENANCE_MS`, and refreshes whether this node trusts its
    /// leases every `TRUST_CHECK_MS`, until the node stops.
    pub fn spawn_maintenance(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        let trust = Arc::clone(self);
        tokio::spawn(async move {
            let trust_task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(TRUST_CHECK_MS)).await;
                    trust.check_trust();
                }
            });
            let _abort_trust = AbortOnDrop(trust_task);
            let mut tick = tokio::time::interval(Duration::from_millis(MAINTENANCE_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.maintain().await;
            }
        })
    }

    /// Gives every lease of this node back (at drain, once its charges are applied).
    pub async fn release_all(&self) -> Result<(), ReplicateError> {
        if self.mode == Mode::Naive {
            return Ok(());
        }
        let (holds_any, version) = {
            let state = self.replicator.state().read();
            (
                !state.escrow().of_node(self.node).is_empty(),
                state.protocol_version(),
            )
        };
        // Once the cluster writes `NodeDrained`, it also records the drain.
        let drained = Command::NodeDrained {
            node: self.node,
            at_ms: self.clock.now_ms(),
        };
        let command = if drained.since_version() <= version {
            drained
        } else if holds_any {
            Command::ReleaseLeases {
                node: self.node,
                budget_id: None,
            }
        } else {
            return Ok(());
        };
        self.replicator.propose(command).await.map(|_| ())
    }
}

/// Aborts a task when dropped (the trust task ends with the maintenance task).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The 402 naming the budget, its limit and figures, and when it resets.
fn exhausted_error(state: &GovState, id: &BudgetId, amount: Usd, now_ms: UnixMs) -> ApiError {
    let Some(status) = state.budget_status(id, now_ms) else {
        return ApiError::BudgetExhausted(format!("budget {id} is exhausted"));
    };
    let leased = state.escrow().outstanding(id, status.window.start_ms);
    ApiError::BudgetExhausted(format!(
        "budget {id} of {} {} is exhausted: limit ${} per {}, spent ${}, leased to nodes for requests ${}, this request may cost up to ${}; it resets at {}",
        status.budget.owner.kind(),
        status.budget.owner.id(),
        status.budget.limit,
        status.budget.reset,
        status.spent,
        leased,
        amount,
        rfc3339(status.window.end_ms),
    ))
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

#[cfg(test)]
mod tests;
