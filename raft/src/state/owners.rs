//! Applying changes to owners: customers, teams and virtual keys, with their references.

use super::{not_found, GovState};
use std::collections::BTreeSet;
use tollgate_proto::{
    CustomerId, KeyId, KeyPatch, Outcome, Owner, ProviderConfigId, TeamId, UnixMs, VirtualKey,
};

impl GovState {
    pub(super) fn delete_customer(&mut self, id: &CustomerId) -> Outcome {
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

    pub(super) fn update_team(
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

    pub(super) fn delete_team(&mut self, id: &TeamId) -> Outcome {
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

    pub(super) fn check_key_refs(
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
    pub(super) fn config_id_conflict(
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

    pub(super) fn create_key(&mut self, k: &VirtualKey) -> Outcome {
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

    pub(super) fn update_key(&mut self, id: &KeyId, patch: &KeyPatch) -> Outcome {
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

    pub(super) fn rotate_key(
        &mut self,
        id: &KeyId,
        hash: &[u8; 32],
        prefix: &str,
        at_ms: UnixMs,
    ) -> Outcome {
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

    pub(super) fn delete_key(&mut self, id: &KeyId) -> Outcome {
        let Some(k) = self.keys.remove(id) else {
            return not_found("virtual key", id.as_str());
        };
        self.key_by_hash.remove(&k.secret_sha256);
        self.key_log_content.remove(id);
        for pc in &k.provider_configs {
            self.remove_owned(&Owner::ProviderConfig(pc.id.clone()));
        }
        self.remove_owned(&Owner::VirtualKey(id.clone()));
        Outcome::Done
    }

    /// Removes the budgets and rate limits of an owner that no longer exists.
    pub(super) fn remove_owned(&mut self, owner: &Owner) {
        self.remove_scoped_guardrails(owner);
        for id in self.budgets_by_owner.remove(owner).unwrap_or_default() {
            self.budgets.remove(&id);
            self.ledgers.remove(&id);
            self.escrow.forget_budget(&id);
        }
        for id in self.rate_limits_by_owner.remove(owner).unwrap_or_default() {
            self.rate_limits.remove(&id);
        }
    }

    pub(super) fn missing_owner(&self, owner: &Owner) -> Option<Outcome> {
        let exists = match owner {
            Owner::Customer(id) => self.customers.contains_key(id),
            Owner::Team(id) => self.teams.contains_key(id),
            Owner::VirtualKey(id) => self.keys.contains_key(id),
            Owner::ProviderConfig(id) => self.provider_config_key(id).is_some(),
        };
        (!exists).then(|| not_found(owner.kind(), owner.id()))
    }
}
