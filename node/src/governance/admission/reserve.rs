//! Reserving on a budget chain: from this node's leases, asking the cluster for more
//! where one is short, waiting for other nodes to give back, or refusing with the budget
//! named.

use super::{
    entry, lock, Admission, AdmissionError, Hold, Local, Mode, CONTENTION_WAIT_MS, GRANT_DEADLINE,
    SETTLE_WAIT_MS,
};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::{BudgetId, UnixMs, Usd};
use tollgate_raft::{rfc3339, BudgetStatus, GovState};

impl Admission {
    /// Reserves `amount` on every budget of `chain`, or on none: from this node's leases,
    /// asking for more through the replicated state where one is short.
    pub async fn reserve(
        self: &Arc<Self>,
        chain: &[BudgetId],
        amount: Usd,
    ) -> Result<Hold, AdmissionError> {
        if chain.is_empty() {
            return Ok(Hold::none());
        }
        if self.mode == Mode::Naive {
            return self.reserve_naive(chain);
        }
        let refused = match self.reserve_rounds(chain, amount, true).await {
            Err(e @ AdmissionError::Exhausted(_)) => e,
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
    pub(super) async fn reserve_rounds(
        self: &Arc<Self>,
        chain: &[BudgetId],
        amount: Usd,
        count_demand: bool,
    ) -> Result<Hold, AdmissionError> {
        // A lease asked for at the very end of a window is granted in that window: if the
        // window rolled meanwhile, the rounds go once more, in the new one.
        for again in [false, true] {
            let windows = self.windows(chain);
            match self.rounds(chain, amount, count_demand && !again).await {
                Err(None) if !again && self.windows(chain) != windows => continue,
                Err(None) => break,
                Err(Some(e)) => return Err(e),
                Ok(hold) => return Ok(hold),
            }
        }
        Err(self.exhausted(chain, amount))
    }

    /// The start of the current window of each budget of `chain`.
    fn windows(&self, chain: &[BudgetId]) -> Vec<UnixMs> {
        let now_ms = self.clock.now_ms();
        let state = self.replicator.state().read();
        chain
            .iter()
            .filter_map(|id| state.budget_status(id, now_ms))
            .map(|s| s.window.start_ms)
            .collect()
    }

    /// One pass of the rounds: a hold, a refusal with its reason, or `None`: the leases
    /// could not make room.
    async fn rounds(
        self: &Arc<Self>,
        chain: &[BudgetId],
        amount: Usd,
        count_demand: bool,
    ) -> Result<Hold, Option<AdmissionError>> {
        let mut grantable = false;
        let deadline = tokio::time::Instant::now() + GRANT_DEADLINE;
        for round in 0.. {
            let shorts = match self.try_reserve(chain, amount, count_demand && round == 0) {
                Ok(hold) => return Ok(hold),
                Err(shorts) => shorts,
            };
            if !self.trusted.load(Ordering::Acquire) {
                return Err(Some(AdmissionError::Untrusted));
            }
            // Refuse without a round trip what no lease could make room for.
            if let Some(e) = self.hopeless(&shorts, amount) {
                return Err(Some(e));
            }
            // Ask again while the room is there to grant (another node's grant may take
            // it first): refuse only once it is not, or past the deadline.
            if round > 0 && (!grantable || tokio::time::Instant::now() >= deadline) {
                break;
            }
            let asks = shorts.iter().map(|id| self.ask(id, amount));
            for r in futures_util::future::join_all(asks).await {
                if let Err(e) = r {
                    return Err(Some(AdmissionError::Cluster(e)));
                }
            }
            // Granted less than needed while other nodes hold leases: they give back
            // their unused part on seeing the shortfall; wait for the room to be free to
            // grant, then ask again.
            grantable = self.wait_for_room(chain, amount).await;
        }
        Err(None)
    }

    /// The lease room on every budget of `chain`, reserved at once, or the budgets that
    /// lack it.
    pub(super) fn try_reserve(
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

    /// As much as this node's leases have free on every budget of `chain` right now, up
    /// to `most`, if that is at least `least`: the start of a metered stream, which
    /// extends its hold as it goes. No round trip, no waiting.
    pub fn reserve_free(
        self: &Arc<Self>,
        chain: &[BudgetId],
        least: Usd,
        most: Usd,
    ) -> Option<(Hold, Usd)> {
        if !self.trusted.load(Ordering::Acquire) || self.mode != Mode::Leases {
            return None;
        }
        let now_ms = self.clock.now_ms();
        let state = self.replicator.state().read();
        let mut local = lock(&self.local);
        let mut free = most.0;
        let mut present = Vec::with_capacity(chain.len());
        for id in chain {
            let Some(status) = state.budget_status(id, now_ms) else {
                continue;
            };
            free = free.min(self.here(&state, local.get(id), &status).free());
            present.push(id);
        }
        if free < least.0 || present.is_empty() {
            return None;
        }
        let mut items = Vec::with_capacity(present.len());
        for id in present {
            let l = entry(&mut local, &state, id);
            l.held = l.held.saturating_add(free);
            l.last_use_ms = now_ms;
            items.push((id.clone(), free));
        }
        let hold = Hold {
            admission: Some(Arc::clone(self)),
            items,
            charge: false,
        };
        Some((hold, Usd(free)))
    }

    /// A refusal when some short budget cannot fit `amount` even if every lease came
    /// back: its limit minus its spend minus what this node holds is less.
    pub(super) fn hopeless(&self, shorts: &[BudgetId], amount: Usd) -> Option<AdmissionError> {
        let now_ms = self.clock.now_ms();
        let state = self.replicator.state().read();
        let local = lock(&self.local);
        for id in shorts {
            let Some(left) = left_here(&state, &local, id, now_ms) else {
                continue;
            };
            if left < amount.0 {
                return Some(exhausted_error(&state, id, amount, now_ms));
            }
        }
        None
    }

    pub(super) fn exhausted(&self, chain: &[BudgetId], amount: Usd) -> AdmissionError {
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

    /// Waits (bounded) until every budget of `chain` this node is short on has the room
    /// for `amount` free to grant, while other nodes hold leases they may give back;
    /// returns whether it has.
    pub(super) async fn wait_for_room(&self, chain: &[BudgetId], amount: Usd) -> bool {
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

    pub(super) fn reserve_naive(&self, chain: &[BudgetId]) -> Result<Hold, AdmissionError> {
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

    pub(super) fn release(&self, items: &[(BudgetId, u64)]) {
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

    /// The most a request could still reserve on `chain`: on its tightest budget, the
    /// limit less the spend and less what requests on this node hold (other nodes'
    /// leases may come back). `None` when no budget of the chain exists.
    pub fn room_left(&self, chain: &[BudgetId]) -> Option<(BudgetId, Usd)> {
        let now_ms = self.clock.now_ms();
        let state = self.replicator.state().read();
        let local = lock(&self.local);
        chain
            .iter()
            .filter_map(|id| Some((id.clone(), Usd(left_here(&state, &local, id, now_ms)?))))
            .min_by_key(|(_, left)| *left)
    }

    /// The 402 for a request whose smallest form (its prompt and a minimal answer)
    /// costs `minimum`, more than the `left` of budget `id`.
    pub fn too_little_left(&self, id: &BudgetId, left: Usd, minimum: Usd) -> AdmissionError {
        let state = self.replicator.state().read();
        refusal(&state, id, self.clock.now_ms(), |status| {
            format!(
                "has ${left} left (limit ${} per {}, spent ${}), less than this request's minimum ${minimum} (its prompt and the smallest answer)",
                status.budget.limit, status.budget.reset, status.spent,
            )
        })
    }

    /// What requests in flight on this node hold of one budget, for the admin view.
    pub fn held_here(&self, id: &BudgetId) -> Usd {
        Usd(lock(&self.local).get(id).map_or(0, |l| l.held))
    }

    /// What this node is giving back of its lease of one budget (proposed, not yet
    /// applied): room it no longer counts as its own.
    pub fn returning_here(&self, id: &BudgetId) -> Usd {
        Usd(lock(&self.local).get(id).map_or(0, |l| l.returning))
    }
}

/// What budget `id` has left beyond its spend and what requests on this node hold: the
/// most this node could reserve if every other node's lease came back.
fn left_here(
    state: &GovState,
    local: &BTreeMap<BudgetId, Local>,
    id: &BudgetId,
    now_ms: UnixMs,
) -> Option<u64> {
    let status = state.budget_status(id, now_ms)?;
    let held = local.get(id).map_or(0, |l| l.held);
    Some(
        status
            .budget
            .limit
            .0
            .saturating_sub(status.spent.0)
            .saturating_sub(held),
    )
}

/// The 402 naming the budget, its limit and figures, and when it resets.
fn exhausted_error(state: &GovState, id: &BudgetId, amount: Usd, now_ms: UnixMs) -> AdmissionError {
    refusal(state, id, now_ms, |status| {
        let leased = state.escrow().outstanding(id, status.window.start_ms);
        format!(
            "is exhausted: limit ${} per {}, spent ${}, leased to nodes for requests ${leased}, this request may cost up to ${amount}",
            status.budget.limit, status.budget.reset, status.spent,
        )
    })
}

/// A 402 about budget `id`: `budget ID of OWNER`, what `why` says of its figures, and
/// when it resets.
fn refusal(
    state: &GovState,
    id: &BudgetId,
    now_ms: UnixMs,
    why: impl FnOnce(&BudgetStatus) -> String,
) -> AdmissionError {
    let Some(status) = state.budget_status(id, now_ms) else {
        return AdmissionError::Exhausted(format!("budget {id} is exhausted"));
    };
    AdmissionError::Exhausted(format!(
        "budget {id} of {} {} {}; it resets at {}",
        status.budget.owner.kind(),
        status.budget.owner.id(),
        why(&status),
        rfc3339(status.window.end_ms),
    ))
}
