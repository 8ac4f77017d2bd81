//! The audit trail kept in the replicated state: admin changes (`Command::Audited`) and
//! failed admin authentication become events in one hash chain, the same on every node;
//! nodes' request-log chain heads are kept as anchors. Bounded: the newest
//! `AUDIT_KEEP` events and `ANCHORS_KEEP` anchors per node. `state::audit` applies the
//! commands.

use crate::codec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tollgate_proto::audit::{Anchor, AuditEvent, AuditMeta, Target};
use tollgate_proto::{Command, MemberChange, Outcome};

/// Events the state keeps (each node keeps its own copy in snapshots); older ones
/// leave the state, and the chain goes on from the head.
pub const AUDIT_KEEP: usize = 20_000;

/// Anchors kept per node (the newest; any one of them covers the chain before it).
pub const ANCHORS_KEEP: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditTrail {
    events: BTreeMap<u64, AuditEvent>,
    head_seq: u64,
    head_hash: [u8; 32],
    anchors: BTreeMap<u64, Vec<Anchor>>,
}

/// The hash of an event after `prev`.
pub fn event_hash(prev: &[u8; 32], event: &AuditEvent) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    // Encoding a plain struct cannot fail; an empty encoding would still chain.
    h.update(codec::encode(&event.unhashed()).unwrap_or_default());
    h.finalize().into()
}

impl AuditTrail {
    /// Events, oldest first.
    pub fn events(&self) -> impl DoubleEndedIterator<Item = &AuditEvent> {
        self.events.values()
    }

    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.head_seq, self.head_hash)
    }

    /// Every node's anchors, oldest first.
    pub fn anchors(&self) -> &BTreeMap<u64, Vec<Anchor>> {
        &self.anchors
    }

    pub(crate) fn record(
        &mut self,
        meta: &AuditMeta,
        action: String,
        target: Target,
        before: Option<String>,
        after: Option<String>,
    ) {
        let mut event = AuditEvent {
            seq: self.head_seq + 1,
            time_ms: meta.at_ms,
            actor: meta.actor.clone(),
            action,
            target,
            source_ip: meta.source_ip.clone(),
            request_id: meta.request_id.clone(),
            before,
            after,
            prev_hash: self.head_hash,
            hash: [0; 32],
        };
        event.hash = event_hash(&self.head_hash, &event);
        self.head_seq = event.seq;
        self.head_hash = event.hash;
        self.events.insert(event.seq, event);
        while self.events.len() > AUDIT_KEEP {
            self.events.pop_first();
        }
    }

    pub(crate) fn anchor(&mut self, anchor: &Anchor) -> Outcome {
        let anchors = self.anchors.entry(anchor.node).or_default();
        if let Some(last) = anchors.last() {
            if anchor.seq < last.seq || (anchor.seq == last.seq && anchor.hash != last.hash) {
                return Outcome::Conflict(format!(
                    "node {} anchors its request log at sequence {} but it was anchored at {} before: its log was rewritten or truncated",
                    anchor.node, anchor.seq, last.seq
                ));
            }
            if anchor.seq == last.seq {
                return Outcome::Done;
            }
        }
        anchors.push(*anchor);
        if anchors.len() > ANCHORS_KEEP {
            anchors.remove(0);
        }
        Outcome::Done
    }
}

/// What an admin command does to what, in the trail's words.
pub(crate) fn action_and_target(command: &Command) -> (String, Target) {
    let t = |kind: &str, id: &str| Target {
        kind: kind.to_owned(),
        id: id.to_owned(),
    };
    let (action, target) = match command {
        Command::CreateCustomer(c) => ("customer.create", t("customer", c.id.as_str())),
        Command::UpdateCustomer { id, .. } => ("customer.update", t("customer", id.as_str())),
        Command::DeleteCustomer { id } => ("customer.delete", t("customer", id.as_str())),
        Command::CreateTeam(x) => ("team.create", t("team", x.id.as_str())),
        Command::UpdateTeam { id, .. } => ("team.update", t("team", id.as_str())),
        Command::DeleteTeam { id } => ("team.delete", t("team", id.as_str())),
        Command::CreateKey(k) => ("virtual_key.create", t("virtual_key", k.id.as_str())),
        Command::UpdateKey { id, .. } => ("virtual_key.update", t("virtual_key", id.as_str())),
        Command::SetKeyDisabled { id, disabled } => (
            if *disabled {
                "virtual_key.disable"
            } else {
                "virtual_key.enable"
            },
            t("virtual_key", id.as_str()),
        ),
        Command::RotateKey { id, .. } => ("virtual_key.rotate", t("virtual_key", id.as_str())),
        Command::DeleteKey { id } => ("virtual_key.delete", t("virtual_key", id.as_str())),
        Command::SetKeyLogContent { id, .. } => {
            ("virtual_key.update", t("virtual_key", id.as_str()))
        }
        Command::CreateBudget(b) => ("budget.create", t("budget", b.id.as_str())),
        Command::UpdateBudget { id, .. } => ("budget.update", t("budget", id.as_str())),
        Command::DeleteBudget { id } => ("budget.delete", t("budget", id.as_str())),
        Command::CreateRateLimit(r) => ("rate_limit.create", t("rate_limit", r.id.as_str())),
        Command::DeleteRateLimit { id } => ("rate_limit.delete", t("rate_limit", id.as_str())),
        Command::SetPrice(p) => ("price.set", t("price", &p.model)),
        Command::DeletePrice { model } => ("price.delete", t("price", model)),
        Command::ReleaseLeases { node, .. } | Command::NodeDrained { node, .. } => {
            ("node.drain", t("node", &node.to_string()))
        }
        Command::MemberChange { node, change } => (
            match change {
                MemberChange::DrainRequested => "node.drain",
                MemberChange::Removed => "node.remove",
            },
            t("node", &node.to_string()),
        ),
        Command::CreateGuardrail(g) => ("guardrail.create", t("guardrail", g.id.as_str())),
        Command::UpdateGuardrail(g) => ("guardrail.update", t("guardrail", g.id.as_str())),
        Command::DeleteGuardrail { id } => ("guardrail.delete", t("guardrail", id.as_str())),
        Command::SetProtocolVersion { version } => {
            ("cluster.protocol", t("cluster", &version.to_string()))
        }
        _ => ("command", t("cluster", "")),
    };
    (action.to_owned(), target)
}
