//! `GovState`: the governance state machine. Pure and deterministic: no clock, no RNG,
//! no I/O, no hash-map order; every replica that applies the same commands in the same
//! order holds the same state.

use crate::lease::{Escrow, NodeId, Room};
use crate::window::{window_at, Window};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tollgate_proto::{
    Budget, BudgetId, Charge, Command, Customer, CustomerId, KeyId, KeyPatch, Ledger, Outcome,
    Owner, Price, ProviderConfigId, RateLimit, RateLimitId, RequestId, Team, TeamId, UnixMs,
    UsageTotals, Usd, VirtualKey,
};

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
    seen_requests: BTreeMap<RequestId, UnixMs>,
    seen_by_time: BTreeSet<(UnixMs, RequestId)>,
    latest_charge_ms: UnixMs,
    /// Nodes' slices of budgets' room (issue 4).
    escrow: Escrow,
    /// The protocol version the cluster writes (0 before any `SetProtocolVersion`: 1).
    protocol_version: u16,
    /// When each node last finished a drain (`Command::NodeDrained`).
    drained_at: BTreeMap<NodeId, UnixMs>,
}

/// A budget with its spend in the window that holds a given instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetStatus {
    pub budget: Budget,
    pub spent: Usd,
    pub window: Window,
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
            Command::NodeDrained { node, at_ms } => {
                self.escrow.release_node(*node);
                self.drained_at.insert(*node, *at_ms);
                Outcome::Done
            }
        }
    }

    fn grant_lease(&mut self, id: &BudgetId, node: NodeId, want: Usd, at_ms: UnixMs) -> Outcome {
        self.request_lease(id, node, Usd::ZERO, want, at_ms)
    }

    fn request_lease(
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
            held: self
                .escrow
                .grant_for(id, node, need, want, Room::of(&status)),
            window_start_ms: window.start_ms,
            window_end_ms: window.end_ms,
        }
    }

    fn delete_customer(&mut self, id: &CustomerId) -> Outcome {
        if !self.customers.contains_key(id) {
            return not_found("customer", id.as_str());
        }
        if let Some(t) = self
            .teams
            .values()
            .find(|t| t.customer_id.as_ref() == Some(id))
        {
            return Outcome::Conflict(format!("customer {id} still has team {}", t.id));
        }
        if let Some(k) = self
            .keys
            .values()
            .find(|k| k.customer_id.as_ref() == Some(id))
        {
            return Outcome::Conflict(format!("customer {id} still has virtual key {}", k.id));
        }
        self.customers.remove(id);
        self.remove_owned(&Owner::Customer(id.clone()));
        Outcome::Done
    }

    fn update_team(
        &mut self,
        id: &TeamId,
        name: &Option<String>,
        customer_id: &Option<Option<CustomerId>>,
    ) -> Outcome {
        if let Some(Some(c)) = customer_id {
            if !self.customers.contains_key(c) {
                return not_found("customer", c.as_str());
            }
        }
        let Some(t) = self.teams.get_mut(id) else {
            return not_found("team", id.as_str());
        };
        if let Some(name) = name {
            t.name.clone_from(name);
        }
        if let Some(customer_id) = customer_id {
            t.customer_id.clone_from(customer_id);
        }
        Outcome::Done
    }

    fn delete_team(&mut self, id: &TeamId) -> Outcome {
        if !self.teams.contains_key(id) {
            return not_found("team", id.as_str());
        }
        if let Some(k) = self.keys.values().find(|k| k.team_id.as_ref() == Some(id)) {
            return Outcome::Conflict(format!("team {id} still has virtual key {}", k.id));
        }
        self.teams.remove(id);
        self.remove_owned(&Owner::Team(id.clone()));
        Outcome::Done
    }

    fn check_key_refs(
        &self,
        team_id: &Option<TeamId>,
        customer_id: &Option<CustomerId>,
    ) -> Option<Outcome> {
        if let Some(t) = team_id {
            if !self.teams.contains_key(t) {
                return Some(not_found("team", t.as_str()));
            }
        }
        if let Some(c) = customer_id {
            if !self.customers.contains_key(c) {
                return Some(not_found("customer", c.as_str()));
            }
        }
        None
    }

    /// A provider-config id repeated within `configs` or owned by a key other than `key`.
    fn config_id_conflict(
        &self,
        key: &KeyId,
        configs: &[tollgate_proto::ProviderConfig],
    ) -> Option<Outcome> {
        let mut seen = BTreeSet::new();
        for pc in configs {
            if !seen.insert(&pc.id) {
                return Some(Outcome::Conflict(format!(
                    "provider config id {} is repeated",
                    pc.id
                )));
            }
            if let Some(owner) = self.provider_config_key(&pc.id) {
                if &owner.id != key {
                    return Some(Outcome::Conflict(format!(
                        "provider config id {} belongs to key {}",
                        pc.id, owner.id
                    )));
                }
            }
        }
        None
    }

    fn create_key(&mut self, k: &VirtualKey) -> Outcome {
        if self.keys.contains_key(&k.id) || self.key_by_hash.contains_key(&k.secret_sha256) {
            return Outcome::Conflict(format!("virtual key {} exists", k.id));
        }
        if let Some(missing) = self.check_key_refs(&k.team_id, &k.customer_id) {
            return missing;
        }
        if let Some(conflict) = self.config_id_conflict(&k.id, &k.provider_configs) {
            return conflict;
        }
        self.key_by_hash.insert(k.secret_sha256, k.id.clone());
        self.keys.insert(k.id.clone(), k.clone());
        Outcome::Done
    }

    fn update_key(&mut self, id: &KeyId, patch: &KeyPatch) -> Outcome {
        let Some(current) = self.keys.get(id) else {
            return not_found("virtual key", id.as_str());
        };
        let team_id = patch
            .team_id
            .clone()
            .unwrap_or_else(|| current.team_id.clone());
        let customer_id = patch
            .customer_id
            .clone()
            .unwrap_or_else(|| current.customer_id.clone());
        if let Some(missing) = self.check_key_refs(&team_id, &customer_id) {
            return missing;
        }
        if let Some(configs) = &patch.provider_configs {
            if let Some(conflict) = self.config_id_conflict(id, configs) {
                return conflict;
            }
        }
        let removed_configs: Vec<ProviderConfigId> = match &patch.provider_configs {
            Some(new) => current
                .provider_configs
                .iter()
                .filter(|old| !new.iter().any(|n| n.id == old.id))
                .map(|old| old.id.clone())
                .collect(),
            None => Vec::new(),
        };
        let Some(k) = self.keys.get_mut(id) else {
            return not_found("virtual key", id.as_str());
        };
        if let Some(name) = &patch.name {
            k.name.clone_from(name);
        }
        if let Some(disabled) = patch.disabled {
            k.disabled = disabled;
        }
        k.team_id = team_id;
        k.customer_id = customer_id;
        if let Some(configs) = &patch.provider_configs {
            k.provider_configs.clone_from(configs);
        }
        for pc in removed_configs {
            self.remove_owned(&Owner::ProviderConfig(pc));
        }
        Outcome::Done
    }

    fn rotate_key(&mut self, id: &KeyId, hash: &[u8; 32], prefix: &str, at_ms: UnixMs) -> Outcome {
        if self.key_by_hash.contains_key(hash) {
            return Outcome::Conflict("the new secret is already in use".to_owned());
        }
        let Some(k) = self.keys.get_mut(id) else {
            return not_found("virtual key", id.as_str());
        };
        self.key_by_hash.remove(&k.secret_sha256);
        k.secret_sha256 = *hash;
        k.secret_prefix = prefix.to_owned();
        k.rotated_at_ms = Some(at_ms);
        self.key_by_hash.insert(*hash, id.clone());
        Outcome::Done
    }

    fn delete_key(&mut self, id: &KeyId) -> Outcome {
        let Some(k) = self.keys.remove(id) else {
            return not_found("virtual key", id.as_str());
        };
        self.key_by_hash.remove(&k.secret_sha256);
        for pc in &k.provider_configs {
            self.remove_owned(&Owner::ProviderConfig(pc.id.clone()));
        }
        self.remove_owned(&Owner::VirtualKey(id.clone()));
        Outcome::Done
    }

    /// Removes the budgets and rate limits of an owner that no longer exists.
    fn remove_owned(&mut self, owner: &Owner) {
        for id in self.budgets_by_owner.remove(owner).unwrap_or_default() {
            self.budgets.remove(&id);
            self.ledgers.remove(&id);
            self.escrow.forget_budget(&id);
        }
        for id in self.rate_limits_by_owner.remove(owner).unwrap_or_default() {
            self.rate_limits.remove(&id);
        }
    }

    fn missing_owner(&self, owner: &Owner) -> Option<Outcome> {
        let exists = match owner {
            Owner::Customer(id) => self.customers.contains_key(id),
            Owner::Team(id) => self.teams.contains_key(id),
            Owner::VirtualKey(id) => self.keys.contains_key(id),
            Owner::ProviderConfig(id) => self.provider_config_key(id).is_some(),
        };
        (!exists).then(|| not_found(owner.kind(), owner.id()))
    }

    fn create_budget(&mut self, b: &Budget) -> Outcome {
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
    fn charge_batch(&mut self, charges: &[Charge], node: Option<NodeId>) -> Outcome {
        let (mut applied, mut duplicates) = (0u32, 0u32);
        for charge in charges {
            if self.seen_requests.contains_key(&charge.request_id) {
                duplicates += 1;
                continue;
            }
            self.seen_requests
                .insert(charge.request_id.clone(), charge.at_ms);
            self.seen_by_time
                .insert((charge.at_ms, charge.request_id.clone()));
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

    fn apply_charge(&mut self, charge: &Charge, node: Option<NodeId>) {
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

    fn forget_old_requests(&mut self) {
        let horizon = self.latest_charge_ms.saturating_sub(DEDUP_HORIZON_MS);
        while let Some((at, _)) = self.seen_by_time.first() {
            if *at >= horizon {
                break;
            }
            if let Some((_, id)) = self.seen_by_time.pop_first() {
                self.seen_requests.remove(&id);
            }
        }
    }

    // ----------------------------------------------------------------- queries

    /// The team and customer a key belongs to; a key's customer defaults to its team's.
    pub fn key_parents(&self, key: &KeyId) -> (Option<TeamId>, Option<CustomerId>) {
        let Some(k) = self.keys.get(key) else {
            return (None, None);
        };
        let team = k.team_id.clone();
        let customer = k.customer_id.clone().or_else(|| {
            team.as_ref()
                .and_then(|t| self.teams.get(t))
                .and_then(|t| t.customer_id.clone())
        });
        (team, customer)
    }

    /// The owners a request through `key` (and `provider_config`) answers to, innermost first.
    pub fn owner_chain(
        &self,
        key: &KeyId,
        provider_config: Option<&ProviderConfigId>,
    ) -> Vec<Owner> {
        let mut chain = Vec::with_capacity(4);
        if let Some(pc) = provider_config {
            chain.push(Owner::ProviderConfig(pc.clone()));
        }
        chain.push(Owner::VirtualKey(key.clone()));
        let (team, customer) = self.key_parents(key);
        chain.extend(team.map(Owner::Team));
        chain.extend(customer.map(Owner::Customer));
        chain
    }

    /// Every budget a request through `key` must fit, innermost owner first.
    pub fn budget_chain(
        &self,
        key: &KeyId,
        provider_config: Option<&ProviderConfigId>,
    ) -> Vec<BudgetId> {
        let chain = self.owner_chain(key, provider_config);
        let mut ids = Vec::new();
        for owner in &chain {
            ids.extend(
                self.budgets_by_owner
                    .get(owner)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        ids
    }

    /// Every rate limit a request through `key` must fit, innermost owner first.
    pub fn rate_limit_chain(
        &self,
        key: &KeyId,
        provider_config: Option<&ProviderConfigId>,
    ) -> Vec<&RateLimit> {
        let chain = self.owner_chain(key, provider_config);
        let mut out = Vec::new();
        for owner in &chain {
            let ids = self.rate_limits_by_owner.get(owner).into_iter().flatten();
            out.extend(ids.filter_map(|id| self.rate_limits.get(id)));
        }
        out
    }

    /// A budget with its spend in the window holding `at_ms` (zero if that window has no charge yet).
    pub fn budget_status(&self, id: &BudgetId, at_ms: UnixMs) -> Option<BudgetStatus> {
        let budget = self.budgets.get(id)?;
        let window = window_at(
            budget.reset,
            budget.calendar_aligned,
            budget.created_at_ms,
            at_ms,
        );
        let spent = match self.ledgers.get(id) {
            Some(l) if l.window_start_ms == window.start_ms => l.spent,
            _ => Usd::ZERO,
        };
        Some(BudgetStatus {
            budget: budget.clone(),
            spent,
            window,
        })
    }

    pub fn key_by_secret_hash(&self, hash: &[u8; 32]) -> Option<&VirtualKey> {
        self.key_by_hash.get(hash).and_then(|id| self.keys.get(id))
    }

    /// The key that holds a provider config.
    pub fn provider_config_key(&self, id: &ProviderConfigId) -> Option<&VirtualKey> {
        self.keys
            .values()
            .find(|k| k.provider_configs.iter().any(|pc| &pc.id == id))
    }

    /// The price for `model`, else the default price, else none.
    pub fn price_for(&self, model: &str) -> Option<&Price> {
        self.prices
            .get(model)
            .or_else(|| self.prices.get(tollgate_proto::usage::DEFAULT_PRICE_MODEL))
    }

    pub fn customers(&self) -> &BTreeMap<CustomerId, Customer> {
        &self.customers
    }
    pub fn teams(&self) -> &BTreeMap<TeamId, Team> {
        &self.teams
    }
    pub fn keys(&self) -> &BTreeMap<KeyId, VirtualKey> {
        &self.keys
    }
    /// Every node's escrow leases.
    pub fn escrow(&self) -> &Escrow {
        &self.escrow
    }

    /// What could still be leased of the budget of `status` in its window:
    /// `limit − spent − Σ leases`.
    pub fn lease_room(&self, status: &BudgetStatus) -> Usd {
        self.escrow.room(&status.budget.id, Room::of(status))
    }

    /// The spend of a budget in the latest window it was charged in.
    pub fn ledger(&self, id: &BudgetId) -> Option<&Ledger> {
        self.ledgers.get(id)
    }

    pub fn budgets(&self) -> &BTreeMap<BudgetId, Budget> {
        &self.budgets
    }
    pub fn rate_limits(&self) -> &BTreeMap<RateLimitId, RateLimit> {
        &self.rate_limits
    }
    pub fn prices(&self) -> &BTreeMap<String, Price> {
        &self.prices
    }
    pub fn usage_of_key(&self, id: &KeyId) -> UsageTotals {
        self.usage_by_key.get(id).copied().unwrap_or_default()
    }
    pub fn usage_of_team(&self, id: &TeamId) -> UsageTotals {
        self.usage_by_team.get(id).copied().unwrap_or_default()
    }
    pub fn usage_of_customer(&self, id: &CustomerId) -> UsageTotals {
        self.usage_by_customer.get(id).copied().unwrap_or_default()
    }
    pub fn usage_of_model(&self, model: &str) -> UsageTotals {
        self.usage_by_model.get(model).copied().unwrap_or_default()
    }
    pub fn usage_by_model(&self) -> &BTreeMap<String, UsageTotals> {
        &self.usage_by_model
    }
}
