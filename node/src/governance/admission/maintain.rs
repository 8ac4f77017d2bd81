//! Keeping leases the right size: asking for a lease sized to demand, topping up and
//! giving back on a schedule, and returning every lease at drain.

use super::{
    entry, lock, Admission, Mode, GRANT_DEADLINE, GRANT_FAILURE_HOLD_MS, IDLE_RETURN_MS,
    MAINTENANCE_MS, TRUST_CHECK_MS, YIELD_AFTER_SHORTFALL_MS,
};
use crate::governance::replicator::ReplicateError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::{BudgetId, Command, Outcome, Usd};

impl Admission {
    /// Asks for a lease of `id` large enough for `amount` on top of what this node uses,
    /// plus its recent demand. One request at a time per budget: a request that waited
    /// for another's grant first checks whether that one made room.
    pub(super) async fn ask(&self, id: &BudgetId, amount: Usd) -> Result<(), ReplicateError> {
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
    pub(super) fn sized_request(&self, id: &BudgetId, amount: u64) -> Option<Command> {
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

    pub(super) async fn propose_grant(&self, command: Command) -> Result<(), ReplicateError> {
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
    /// leases every `TRUST_CHECK_MS`, as two tasks of `tasks`.
    pub fn spawn_maintenance(self: &Arc<Self>, tasks: &mut tokio::task::JoinSet<()>) {
        let trust = Arc::clone(self);
        tasks.spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(TRUST_CHECK_MS)).await;
                trust.check_trust();
            }
        });
        let me = Arc::clone(self);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(MAINTENANCE_MS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.maintain().await;
            }
        });
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
