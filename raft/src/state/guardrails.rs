//! Guardrail policies (protocol 7): created, replaced whole and deleted; the ones that
//! apply to a key's requests; gone with the customer, team or key they are scoped to.

use super::{not_found, GovState};
use std::collections::BTreeMap;
use tollgate_proto::{GuardScope, Guardrail, GuardrailId, Outcome, Owner, VirtualKey};

/// Most guardrails a cluster holds: each request looks at every one in its chain.
pub const MAX_GUARDRAILS: usize = 1_000;

impl GovState {
    pub fn guardrails(&self) -> &BTreeMap<GuardrailId, Guardrail> {
        &self.guardrails
    }

    /// Replaces the guardrails (from a snapshot).
    pub fn set_guardrails(&mut self, guardrails: BTreeMap<GuardrailId, Guardrail>) {
        self.guardrails = guardrails;
    }

    /// The guardrails that apply to a request with `key` (and `user`, if known): global
    /// ones and those scoped to its customer, team, user or key, in id order.
    pub fn guardrails_for<'a>(
        &'a self,
        key: &'a VirtualKey,
        user: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Guardrail> + 'a {
        let customer = key.customer_id.clone().or_else(|| {
            key.team_id
                .as_ref()
                .and_then(|t| self.teams.get(t))
                .and_then(|t| t.customer_id.clone())
        });
        self.guardrails.values().filter(move |g| match &g.scope {
            GuardScope::Global => true,
            GuardScope::Customer(c) => customer.as_ref() == Some(c),
            GuardScope::Team(t) => key.team_id.as_ref() == Some(t),
            GuardScope::User(u) => user == Some(u.as_str()),
            GuardScope::VirtualKey(k) => &key.id == k,
        })
    }

    fn missing_scope(&self, scope: &GuardScope) -> Option<Outcome> {
        match scope {
            GuardScope::Global | GuardScope::User(_) => None,
            GuardScope::Customer(id) => self.missing_owner(&Owner::Customer(id.clone())),
            GuardScope::Team(id) => self.missing_owner(&Owner::Team(id.clone())),
            GuardScope::VirtualKey(id) => self.missing_owner(&Owner::VirtualKey(id.clone())),
        }
    }

    pub(super) fn create_guardrail(&mut self, g: &Guardrail) -> Outcome {
        if self.guardrails.contains_key(&g.id) {
            return Outcome::Conflict(format!("guardrail {} exists", g.id));
        }
        if self.guardrails.len() >= MAX_GUARDRAILS {
            return Outcome::Invalid(format!(
                "a cluster holds at most {MAX_GUARDRAILS} guardrails"
            ));
        }
        if let Some(missing) = self.missing_scope(&g.scope) {
            return missing;
        }
        self.guardrails.insert(g.id.clone(), g.clone());
        Outcome::Done
    }

    pub(super) fn update_guardrail(&mut self, g: &Guardrail) -> Outcome {
        let Some(created_at_ms) = self.guardrails.get(&g.id).map(|old| old.created_at_ms) else {
            return not_found("guardrail", g.id.as_str());
        };
        if let Some(missing) = self.missing_scope(&g.scope) {
            return missing;
        }
        let mut g = g.clone();
        g.created_at_ms = created_at_ms;
        self.guardrails.insert(g.id.clone(), g);
        Outcome::Done
    }

    pub(super) fn delete_guardrail(&mut self, id: &GuardrailId) -> Outcome {
        match self.guardrails.remove(id) {
            Some(_) => Outcome::Done,
            None => not_found("guardrail", id.as_str()),
        }
    }

    /// Drops the guardrails scoped to an owner that no longer exists.
    pub(super) fn remove_scoped_guardrails(&mut self, owner: &Owner) {
        let scope = match owner {
            Owner::Customer(id) => GuardScope::Customer(id.clone()),
            Owner::Team(id) => GuardScope::Team(id.clone()),
            Owner::VirtualKey(id) => GuardScope::VirtualKey(id.clone()),
            Owner::ProviderConfig(_) => return,
        };
        self.guardrails.retain(|_, g| g.scope != scope);
    }
}
