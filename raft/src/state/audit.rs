//! `GovState`'s side of the audit trail: applying `Command::Audited` (the change, then
//! its event with the target before and after), `AuthFailures` and `AnchorChain`.

use super::GovState;
use crate::audit::{action_and_target, AuditTrail};
use serde::Serialize;
use std::collections::BTreeMap;
use tollgate_proto::audit::{Actor, Anchor, AuditMeta, Target};
use tollgate_proto::{Command, KeyId, LogContent, Outcome};

/// A virtual key as the trail shows it: no secret hash.
#[derive(Serialize)]
struct KeyView<'a> {
    id: &'a str,
    name: &'a str,
    secret_prefix: &'a str,
    team_id: Option<&'a str>,
    customer_id: Option<&'a str>,
    provider_configs: &'a [tollgate_proto::ProviderConfig],
    disabled: bool,
    created_at_ms: u64,
    rotated_at_ms: Option<u64>,
    /// Only when set: a view of a key without it reads the same on a node of protocol 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    log_content: Option<LogContent>,
}

impl GovState {
    /// The target as JSON, if it exists (never a secret or its hash).
    fn target_view(&self, target: &Target) -> Option<String> {
        let json = |v: Result<String, serde_json::Error>| v.ok();
        match target.kind.as_str() {
            "customer" => json(serde_json::to_string(
                self.customers.get(&target.id.as_str().into())?,
            )),
            "team" => json(serde_json::to_string(
                self.teams.get(&target.id.as_str().into())?,
            )),
            "virtual_key" => {
                let k = self.keys.get(&target.id.as_str().into())?;
                json(serde_json::to_string(&KeyView {
                    id: k.id.as_str(),
                    name: &k.name,
                    secret_prefix: &k.secret_prefix,
                    team_id: k.team_id.as_ref().map(|t| t.as_str()),
                    customer_id: k.customer_id.as_ref().map(|c| c.as_str()),
                    provider_configs: &k.provider_configs,
                    disabled: k.disabled,
                    created_at_ms: k.created_at_ms,
                    rotated_at_ms: k.rotated_at_ms,
                    log_content: self.key_log_content(&k.id),
                }))
            }
            "budget" => json(serde_json::to_string(
                self.budgets.get(&target.id.as_str().into())?,
            )),
            "rate_limit" => json(serde_json::to_string(
                self.rate_limits.get(&target.id.as_str().into())?,
            )),
            "price" => json(serde_json::to_string(self.prices.get(&target.id)?)),
            "guardrail" => json(serde_json::to_string(
                self.guardrails.get(&target.id.as_str().into())?,
            )),
            _ => None,
        }
    }

    /// `Command::Audited`: applies the command; if it changed anything, records who did
    /// what to what, with the target before and after.
    pub(super) fn apply_audited(&mut self, meta: &AuditMeta, command: &Command) -> Outcome {
        if matches!(
            command,
            Command::Audited { .. } | Command::AuthFailures { .. } | Command::AnchorChain(_)
        ) {
            return Outcome::Invalid("an audited command cannot hold another audit entry".into());
        }
        let (action, target) = action_and_target(command);
        let before = self.target_view(&target);
        let outcome = self.apply(command);
        if matches!(
            outcome,
            Outcome::Done | Outcome::Charged { .. } | Outcome::Leased { .. }
        ) {
            let after = self.target_view(&target);
            self.audit.record(meta, action, target, before, after);
        }
        outcome
    }

    /// `Command::AuthFailures`: one event for a node's failures from one address.
    pub(super) fn apply_auth_failures(&mut self, meta: &AuditMeta, count: u64) -> Outcome {
        let actor = Actor {
            kind: "unauthenticated".into(),
            ..meta.actor.clone()
        };
        let meta = AuditMeta {
            actor,
            ..meta.clone()
        };
        let target = Target {
            kind: "admin_api".into(),
            id: String::new(),
        };
        let after = Some(format!("{{\"failed_attempts\":{count}}}"));
        self.audit
            .record(&meta, "admin.auth_failed".into(), target, None, after);
        Outcome::Done
    }

    pub(super) fn apply_anchor(&mut self, anchor: &Anchor) -> Outcome {
        self.audit.anchor(anchor)
    }

    /// The audit trail: events and anchors.
    pub fn audit(&self) -> &AuditTrail {
        &self.audit
    }

    /// Replaces the audit trail (a snapshot carries it beside the state).
    pub fn set_audit(&mut self, audit: AuditTrail) {
        self.audit = audit;
    }

    /// Keys' own request-log content (a snapshot carries it beside the state).
    pub fn key_log_contents(&self) -> &BTreeMap<KeyId, LogContent> {
        &self.key_log_content
    }

    /// Replaces the keys' request-log content (from a snapshot).
    pub fn set_key_log_contents(&mut self, contents: BTreeMap<KeyId, LogContent>) {
        self.key_log_content = contents;
    }

    /// What the request log keeps of a key's requests, if the key says.
    pub fn key_log_content(&self, id: &KeyId) -> Option<LogContent> {
        self.key_log_content.get(id).copied()
    }
}
