//! `GovState`: the governance state machine. Pure and deterministic: no clock, no RNG,
//! no I/O, no hash-map order; every replica that applies the same commands in the same
//! order holds the same state.
//!
//! # Layout
//! - `state.rs`: `GovState`, `BudgetStatus` and `apply`, which dispatches each command.
//! - `owners`: customers, teams and virtual keys, with their references.
//! - `spend`: budgets, leases of their room, and charges.
//! - `seen`: what is remembered of applied charges to de-duplicate them: outboxes'
//!   marks and request ids.
//! - `query`: read-only lookups, chains and totals.
//! - `guardrails`: content policies and the ones a request's chain holds.
//! - `audit`: the audit trail (admin changes, failed admin logins) and request-log
//!   chain anchors.

use crate::audit::AuditTrail;
use crate::lease::{Escrow, NodeId, Room};
use crate::window::{window_at, Window};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use tollgate_proto::{
    Budget, BudgetId, Command, Customer, CustomerId, KeyId, Ledger, LogContent, Outcome, Owner,
    Price, RateLimit, RateLimitId, Team, TeamId, UnixMs, UsageTotals, Usd, VirtualKey,
};

mod audit;
mod guardrails;
mod owners;
mod query;
mod seen;
pub use seen::{OutboxMarks, MAX_OUTBOXES};
mod spend;

/// How long a charge's request id is remembered for de-duplication, measured on the
/// charges' own timestamps. A node replays its unapplied charges within seconds of a
/// restart, so an hour is far more than a duplicate can lag while keeping the set small.
pub const DEDUP_HORIZON_MS: u64 = 60 * 60 * 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovState {
    customers: BTreeMap<CustomerId, Customer>,
    teams: BTreeMap<TeamId, Team>,
    keys: BTreeMap<KeyId, VirtualKey>,
    key_by_hash: BTreeMap<[u8; 32], KeyId>,
    budgets: BTreeMap<BudgetId, Budget>,
    ledgers: BTreeMap<BudgetId, Ledger>,
    rate_limits: BTreeMap<RateLimitId, RateLimit>,
    /// Budgets and rate limits by owner, so a request's chain is found without a scan.
    budgets_by_owner: BTreeMap<Owner, BTreeSet<BudgetId>>,
    rate_limits_by_owner: BTreeMap<Owner, BTreeSet<RateLimitId>>,
    prices: BTreeMap<String, Price>,
    usage_by_key: BTreeMap<KeyId, UsageTotals>,
    usage_by_team: BTreeMap<TeamId, UsageTotals>,
    usage_by_customer: BTreeMap<CustomerId, UsageTotals>,
    usage_by_model: BTreeMap<String, UsageTotals>,
    /// Applied charges' request ids (written as the two fields an id map and a time
    /// set were).
    seen_requests: seen::SeenRequests,
    latest_charge_ms: UnixMs,
    /// Nodes' slices of budgets' room (issue 4).
    escrow: Escrow,
    /// The protocol version the cluster writes (0 before any `SetProtocolVersion`: 1).
    protocol_version: u16,
    /// When each node last finished a drain (`Command::NodeDrained`).
    drained_at: BTreeMap<NodeId, UnixMs>,
    /// The audit trail and anchors: in snapshots after the state (`snapshot`), so a
    /// snapshot of a protocol 2 build still reads.
    #[serde(skip)]
    audit: AuditTrail,
    /// Keys' own request-log content (protocol 4): in snapshots after the audit trail.
    #[serde(skip)]
    key_log_content: BTreeMap<KeyId, LogContent>,
    /// Each outbox's last mark applied (protocol 6): in snapshots after the keys'
    /// content.
    #[serde(skip)]
    outbox_marks: seen::OutboxMarks,
    /// Guardrail policies (protocol 7): in snapshots after the outboxes' marks.
    #[serde(skip)]
    guardrails: BTreeMap<tollgate_proto::GuardrailId, tollgate_proto::Guardrail>,
}

/// A budget with its spend in the window that holds a given instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub budget: Budget,
    pub spent: Usd,
    pub window: Window,
}

impl BudgetStatus {
    /// The budget's room as the escrow sees it: limit and spend in this window.
    pub fn room(&self) -> Room {
        Room {
            limit: self.budget.limit,
            spent: self.spent,
            window_start_ms: self.window.start_ms,
        }
    }
}

fn unindex<K: Ord>(index: &mut BTreeMap<Owner, BTreeSet<K>>, owner: &Owner, id: &K) {
    if let Some(set) = index.get_mut(owner) {
        set.remove(id);
        if set.is_empty() {
            index.remove(owner);
        }
    }
}

fn not_found(what: &str, id: &str) -> Outcome {
    Outcome::NotFound {
        what: what.to_owned(),
        id: id.to_owned(),
    }
}

impl GovState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The protocol version the cluster writes: entries of a later version are refused.
    pub fn protocol_version(&self) -> u16 {
        self.protocol_version.max(1)
    }

    /// When each node last finished a drain.
    pub fn drained_at(&self) -> &BTreeMap<NodeId, UnixMs> {
        &self.drained_at
    }

    /// Applies one command. Rejections are returned as outcomes and change nothing.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        if command.since_version() > self.protocol_version() {
            return Outcome::Invalid(format!(
                "entry of protocol {} in a cluster at protocol {}",
                command.since_version(),
                self.protocol_version()
            ));
        }
        match command {
            Command::CreateCustomer(c) => {
                if self.customers.contains_key(&c.id) {
                    return Outcome::Conflict(format!("customer {} exists", c.id));
                }
                self.customers.insert(c.id.clone(), c.clone());
                Outcome::Done
            }
            Command::UpdateCustomer { id, name } => match self.customers.get_mut(id) {
                Some(c) => {
                    c.name.clone_from(name);
                    Outcome::Done
                }
                None => not_found("customer", id.as_str()),
            },
            Command::DeleteCustomer { id } => self.delete_customer(id),
            Command::CreateTeam(t) => {
                if self.teams.contains_key(&t.id) {
                    return Outcome::Conflict(format!("team {} exists", t.id));
                }
                if let Some(c) = &t.customer_id {
                    if !self.customers.contains_key(c) {
                        return not_found("customer", c.as_str());
                    }
                }
                self.teams.insert(t.id.clone(), t.clone());
                Outcome::Done
            }
            Command::UpdateTeam {
                id,
                name,
                customer_id,
            } => self.update_team(id, name, customer_id),
            Command::DeleteTeam { id } => self.delete_team(id),
            Command::CreateKey(k) => self.create_key(k),
            Command::UpdateKey { id, patch } => self.update_key(id, patch),
            Command::SetKeyDisabled { id, disabled } => match self.keys.get_mut(id) {
                Some(k) => {
                    k.disabled = *disabled;
                    Outcome::Done
                }
                None => not_found("virtual key", id.as_str()),
            },
            Command::RotateKey {
                id,
                secret_sha256,
                secret_prefix,
                at_ms,
            } => self.rotate_key(id, secret_sha256, secret_prefix, *at_ms),
            Command::DeleteKey { id } => self.delete_key(id),
            Command::CreateBudget(b) => self.create_budget(b),
            Command::UpdateBudget {
                id,
                limit,
                reset,
                calendar_aligned,
                at_ms,
            } => {
                let spent_now = self.budget_status(id, *at_ms).map(|s| s.spent);
                let Some(b) = self.budgets.get_mut(id) else {
                    return not_found("budget", id.as_str());
                };
                // Leases were cut from the old limit and window: a lower limit or a new
                // window shape voids them (nodes ask again within the new one); a raised
                // limit leaves them valid.
                if limit.is_some_and(|l| l.0 < b.limit.0)
                    || reset.is_some()
                    || calendar_aligned.is_some()
                {
                    self.escrow.forget_budget(id);
                }
                if let Some(limit) = limit {
                    b.limit = *limit;
                }
                if let Some(reset) = reset {
                    b.reset = *reset;
                }
                if let Some(aligned) = calendar_aligned {
                    b.calendar_aligned = *aligned;
                }
                if reset.is_some() || calendar_aligned.is_some() {
                    // The new shape's window may start before the old ledger's; re-base the
                    // ledger on it, keeping what was spent, or later charges would be taken
                    // for charges of an ended window and not counted.
                    let window = window_at(b.reset, b.calendar_aligned, b.created_at_ms, *at_ms);
                    let spent = spent_now.unwrap_or(Usd::ZERO);
                    self.ledgers.insert(
                        id.clone(),
                        Ledger {
                            window_start_ms: window.start_ms,
                            spent,
                        },
                    );
                }
                Outcome::Done
            }
            Command::DeleteBudget { id } => {
                let Some(b) = self.budgets.remove(id) else {
                    return not_found("budget", id.as_str());
                };
                unindex(&mut self.budgets_by_owner, &b.owner, id);
                self.ledgers.remove(id);
                self.escrow.forget_budget(id);
                Outcome::Done
            }
            Command::CreateRateLimit(r) => {
                if self.rate_limits.contains_key(&r.id) {
                    return Outcome::Conflict(format!("rate limit {} exists", r.id));
                }
                if let Some(missing) = self.missing_owner(&r.owner) {
                    return missing;
                }
                self.rate_limits_by_owner
                    .entry(r.owner.clone())
                    .or_default()
                    .insert(r.id.clone());
                self.rate_limits.insert(r.id.clone(), r.clone());
                Outcome::Done
            }
            Command::DeleteRateLimit { id } => match self.rate_limits.remove(id) {
                Some(r) => {
                    unindex(&mut self.rate_limits_by_owner, &r.owner, id);
                    Outcome::Done
                }
                None => not_found("rate limit", id.as_str()),
            },
            Command::SetPrice(p) => {
                self.prices.insert(p.model.clone(), p.clone());
                Outcome::Done
            }
            Command::DeletePrice { model } => match self.prices.remove(model) {
                Some(_) => Outcome::Done,
                None => not_found("price", model),
            },
            Command::ChargeBatch { charges } => self.charge_batch(charges, None),
            Command::NodeChargeBatch { node, charges } => self.charge_batch(charges, Some(*node)),
            Command::GrantLease {
                budget_id,
                node,
                want,
                at_ms,
            } => self.grant_lease(budget_id, *node, *want, *at_ms),
            Command::RequestLease {
                budget_id,
                node,
                need,
                want,
                at_ms,
            } => self.request_lease(budget_id, *node, *need, *want, *at_ms),
            Command::ReturnLease {
                budget_id,
                node,
                amount,
                seq,
            } => {
                self.escrow.give_back(budget_id, *node, *amount, *seq);
                Outcome::Done
            }
            Command::ReleaseLeases { node, budget_id } => {
                match budget_id {
                    Some(b) => {
                        self.escrow.release(b, *node);
                    }
                    None => self.escrow.release_node(*node),
                }
                Outcome::Done
            }
            Command::SetProtocolVersion { version } => {
                self.protocol_version = self.protocol_version().max(*version);
                Outcome::Done
            }
            Command::Audited { meta, command } => self.apply_audited(meta, command),
            Command::AuthFailures { meta, count } => self.apply_auth_failures(meta, *count),
            Command::AnchorChain(anchor) => self.apply_anchor(anchor),
            Command::SetKeyLogContent { id, content } => {
                if !self.keys.contains_key(id) {
                    return not_found("virtual key", id.as_str());
                }
                match content {
                    Some(c) => self.key_log_content.insert(id.clone(), *c),
                    None => self.key_log_content.remove(id),
                };
                Outcome::Done
            }
            Command::NodeDrained { node, at_ms } => {
                self.escrow.release_node(*node);
                self.drained_at.insert(*node, *at_ms);
                Outcome::Done
            }
            // Only its audit event (`Audited`) is kept.
            Command::MemberChange { .. } => Outcome::Done,
            Command::OutboxCharges {
                node,
                outbox,
                charges,
            } => self.outbox_charges(*node, *outbox, charges),
            Command::CreateGuardrail(g) => self.create_guardrail(g),
            Command::UpdateGuardrail(g) => self.update_guardrail(g),
            Command::DeleteGuardrail { id } => self.delete_guardrail(id),
        }
    }
}
