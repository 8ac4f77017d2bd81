//! Read-only queries of the state: chains of owners, budgets and limits, lookups, totals.

use super::{BudgetStatus, GovState};
use crate::lease::Escrow;
use crate::window::window_at;
use std::collections::BTreeMap;
use tollgate_proto::{
    Budget, BudgetId, Customer, CustomerId, KeyId, Ledger, Owner, Price, ProviderConfigId,
    RateLimit, RateLimitId, Team, TeamId, UnixMs, UsageTotals, Usd, VirtualKey,
};

impl GovState {
    /// Whether the effect of an admin create or delete is in this state: the entity as
    /// proposed, or gone. A proposal retried after its first attempt's fate was unknown
    /// (the leader died answering) is then known to have been applied once already.
    pub fn shows(&self, command: &tollgate_proto::Command) -> bool {
        use tollgate_proto::Command as C;
        match command {
            C::CreateCustomer(c) => self.customers.get(&c.id) == Some(c),
            C::CreateTeam(t) => self.teams.get(&t.id) == Some(t),
            C::CreateKey(k) => self.keys.get(&k.id) == Some(k),
            C::CreateBudget(b) => self.budgets.get(&b.id) == Some(b),
            C::CreateRateLimit(r) => self.rate_limits.get(&r.id) == Some(r),
            C::DeleteCustomer { id } => !self.customers.contains_key(id),
            C::DeleteTeam { id } => !self.teams.contains_key(id),
            C::DeleteKey { id } => !self.keys.contains_key(id),
            C::DeleteBudget { id } => !self.budgets.contains_key(id),
            C::DeleteRateLimit { id } => !self.rate_limits.contains_key(id),
            C::DeletePrice { model } => !self.prices.contains_key(model),
            _ => false,
        }
    }

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
        self.escrow.room(&status.budget.id, status.room())
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
