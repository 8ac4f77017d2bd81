//! Applying spend: budgets, leases of their room, and charges (idempotent by request id).

use super::{not_found, GovState, DEDUP_HORIZON_MS};
use crate::lease::NodeId;
use crate::window::window_at;
use tollgate_proto::{
    Budget, BudgetId, Charge, Ledger, OutboxCharge, Outcome, UnixMs, UsageTotals, Usd,
};

impl GovState {
    pub(super) fn grant_lease(
        &mut self,
        id: &BudgetId,
        node: NodeId,
        want: Usd,
        at_ms: UnixMs,
    ) -> Outcome {
        self.request_lease(id, node, Usd::ZERO, want, at_ms)
    }

    pub(super) fn request_lease(
        &mut self,
        id: &BudgetId,
        node: NodeId,
        need: Usd,
        want: Usd,
        at_ms: UnixMs,
    ) -> Outcome {
        let Some(status) = self.budget_status(id, at_ms) else {
            return not_found("budget", id.as_str());
        };
        let window = status.window;
        if self
            .ledgers
            .get(id)
            .is_some_and(|l| l.window_start_ms > window.start_ms)
        {
            return Outcome::Invalid(format!("budget {id}: the window holding {at_ms} is over"));
        }
        Outcome::Leased {
            held: self.escrow.grant_for(id, node, need, want, status.room()),
            window_start_ms: window.start_ms,
            window_end_ms: window.end_ms,
        }
    }

    pub(super) fn create_budget(&mut self, b: &Budget) -> Outcome {
        if self.budgets.contains_key(&b.id) {
            return Outcome::Conflict(format!("budget {} exists", b.id));
        }
        if let Some(missing) = self.missing_owner(&b.owner) {
            return missing;
        }
        let window = window_at(
            b.reset,
            b.calendar_aligned,
            b.created_at_ms,
            b.created_at_ms,
        );
        self.ledgers.insert(
            b.id.clone(),
            Ledger {
                window_start_ms: window.start_ms,
                spent: Usd::ZERO,
            },
        );
        self.budgets_by_owner
            .entry(b.owner.clone())
            .or_default()
            .insert(b.id.clone());
        self.budgets.insert(b.id.clone(), b.clone());
        Outcome::Done
    }

    /// Applies charges idempotently; `node` made them, so they consume its leases.
    pub(super) fn charge_batch(&mut self, charges: &[Charge], node: Option<NodeId>) -> Outcome {
        let (mut applied, mut duplicates) = (0u32, 0u32);
        for charge in charges {
            if !self.seen_requests.insert(&charge.request_id, charge.at_ms) {
                duplicates += 1;
                continue;
            }
            self.latest_charge_ms = self.latest_charge_ms.max(charge.at_ms);
            self.apply_charge(charge, node);
            applied += 1;
        }
        self.forget_old_requests();
        Outcome::Charged {
            applied,
            duplicates,
        }
    }

    /// Each outbox's last mark applied (a snapshot carries them beside the state).
    pub fn outbox_marks(&self) -> &super::OutboxMarks {
        &self.outbox_marks
    }

    /// Replaces the outboxes' marks (from a snapshot).
    pub fn set_outbox_marks(&mut self, marks: super::OutboxMarks) {
        self.outbox_marks = marks;
    }

    /// Applies a node's charges from its outbox `outbox`: one at or before the outbox's
    /// last mark applied is a duplicate, as is one whose id an earlier `ChargeBatch`
    /// remembers (charges proposed before the cluster moved to protocol 6); one without
    /// a mark is de-duplicated by its id.
    pub(super) fn outbox_charges(
        &mut self,
        node: NodeId,
        outbox: u64,
        charges: &[OutboxCharge],
    ) -> Outcome {
        let (mut applied, mut duplicates) = (0u32, 0u32);
        for OutboxCharge { charge, mark } in charges {
            let fresh = match mark {
                Some(mark) => {
                    self.outbox_marks.advance(node, outbox, *mark)
                        && !self.seen_requests.contains(&charge.request_id)
                }
                None => self.seen_requests.insert(&charge.request_id, charge.at_ms),
            };
            if !fresh {
                duplicates += 1;
                continue;
            }
            self.latest_charge_ms = self.latest_charge_ms.max(charge.at_ms);
            self.apply_charge(charge, Some(node));
            applied += 1;
        }
        self.forget_old_requests();
        Outcome::Charged {
            applied,
            duplicates,
        }
    }

    pub(super) fn apply_charge(&mut self, charge: &Charge, node: Option<NodeId>) {
        let add = |totals: &mut UsageTotals| {
            // Upstream-reported figures: saturate rather than overflow, so no charge can
            // make `apply` panic (and every replay of the log with it).
            let u = &charge.usage;
            totals.requests = totals.requests.saturating_add(1);
            totals.input_tokens = totals.input_tokens.saturating_add(u.input_tokens);
            totals.output_tokens = totals.output_tokens.saturating_add(u.output_tokens);
            totals.cache_creation_input_tokens = totals
                .cache_creation_input_tokens
                .saturating_add(u.cache_creation_input_tokens);
            totals.cache_read_input_tokens = totals
                .cache_read_input_tokens
                .saturating_add(u.cache_read_input_tokens);
            totals.spent = Usd(totals.spent.0.saturating_add(charge.cost.0));
        };
        add(self.usage_by_key.entry(charge.key_id.clone()).or_default());
        add(self.usage_by_model.entry(charge.model.clone()).or_default());
        let (team, customer) = self.key_parents(&charge.key_id);
        if let Some(team) = &team {
            add(self.usage_by_team.entry(team.clone()).or_default());
        }
        if let Some(customer) = &customer {
            add(self.usage_by_customer.entry(customer.clone()).or_default());
        }
        for id in self.budget_chain(&charge.key_id, charge.provider_config_id.as_ref()) {
            let Some(budget) = self.budgets.get(&id) else {
                continue;
            };
            let window = window_at(
                budget.reset,
                budget.calendar_aligned,
                budget.created_at_ms,
                charge.at_ms,
            );
            let ledger = self.ledgers.entry(id.clone()).or_default();
            if window.start_ms > ledger.window_start_ms {
                *ledger = Ledger {
                    window_start_ms: window.start_ms,
                    spent: Usd::ZERO,
                };
            }
            // A charge from a window that already ended is kept in the totals only.
            if window.start_ms == ledger.window_start_ms {
                ledger.spent = Usd(ledger.spent.0.saturating_add(charge.cost.0));
                if let Some(node) = node {
                    self.escrow.consume(&id, node, charge.cost, window.start_ms);
                }
            }
        }
    }

    pub(super) fn forget_old_requests(&mut self) {
        let horizon = self.latest_charge_ms.saturating_sub(DEDUP_HORIZON_MS);
        self.seen_requests.forget_before(horizon);
    }
}
