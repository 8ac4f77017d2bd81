//! Guardrails: content policies applied to what goes to a provider and what comes back
//! (protocol 7). The state holds them as written; each node compiles them.

use crate::{CustomerId, GuardrailId, KeyId, TeamId, UnixMs};
use serde::{Deserialize, Serialize};

/// Whose requests a guardrail applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GuardScope {
    Global,
    Customer(CustomerId),
    Team(TeamId),
    /// A user's requests (the request record's `user_id`).
    User(String),
    VirtualKey(KeyId),
}

impl GuardScope {
    pub fn kind(&self) -> &'static str {
        match self {
            GuardScope::Global => "global",
            GuardScope::Customer(_) => "customer",
            GuardScope::Team(_) => "team",
            GuardScope::User(_) => "user",
            GuardScope::VirtualKey(_) => "virtual_key",
        }
    }

    pub fn id(&self) -> Option<&str> {
        match self {
            GuardScope::Global => None,
            GuardScope::Customer(id) => Some(id.as_str()),
            GuardScope::Team(id) => Some(id.as_str()),
            GuardScope::User(id) => Some(id),
            GuardScope::VirtualKey(id) => Some(id.as_str()),
        }
    }
}

/// A kind of personal data the `pii` detector finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiEntity {
    Email,
    Phone,
    CreditCard,
    Ssn,
    Iban,
    Ip,
}

impl PiiEntity {
    pub const ALL: [PiiEntity; 6] = [
        PiiEntity::Email,
        PiiEntity::Phone,
        PiiEntity::CreditCard,
        PiiEntity::Ssn,
        PiiEntity::Iban,
        PiiEntity::Ip,
    ];

    /// The entity's name in the API, and its rule id in verdicts and redactions.
    pub fn name(self) -> &'static str {
        match self {
            PiiEntity::Email => "email",
            PiiEntity::Phone => "phone",
            PiiEntity::CreditCard => "credit_card",
            PiiEntity::Ssn => "ssn",
            PiiEntity::Iban => "iban",
            PiiEntity::Ip => "ip",
        }
    }
}

/// What a webhook checker's failure (error, bad answer, deadline) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    Allow,
    Block,
}

/// One detector of a guardrail. (Externally tagged: bincode cannot read an internally
/// tagged enum; the admin API has its own JSON shape.)
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Detector {
    /// The gitleaks rule set.
    Secrets,
    /// Personal data, validated (an empty list: every entity).
    Pii { entities: Vec<PiiEntity> },
    /// A named regular expression (checked and size-capped when written).
    Regex { name: String, pattern: String },
    /// An external checker the text is posted to.
    Webhook {
        url: String,
        timeout_ms: u64,
        on_error: OnError,
    },
}

/// What a guardrail does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Refuse the request (or end the answer).
    Block,
    /// Replace each match with `[REDACTED:<rule id>]`.
    Redact,
    /// Let it through; record the verdict.
    Flag,
}

/// Which way a guardrail looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardDirection {
    Input,
    Output,
    Both,
}

impl GuardDirection {
    pub fn input(self) -> bool {
        matches!(self, GuardDirection::Input | GuardDirection::Both)
    }

    pub fn output(self) -> bool {
        matches!(self, GuardDirection::Output | GuardDirection::Both)
    }
}

/// A guardrail policy as the state holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guardrail {
    pub id: GuardrailId,
    pub name: String,
    pub scope: GuardScope,
    pub detectors: Vec<Detector>,
    pub action: GuardAction,
    pub direction: GuardDirection,
    pub created_at_ms: UnixMs,
}
