//! The governance model: who may spend what, through which provider.

use crate::{
    BudgetId, CustomerId, KeyId, ProviderConfigId, RateLimitId, ResetDuration, TeamId, Usd,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Unix time in milliseconds. Time enters the state machine only inside commands.
pub type UnixMs = u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
    pub created_at_ms: UnixMs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    pub customer_id: Option<CustomerId>,
    pub created_at_ms: UnixMs,
}

/// One provider a virtual key may use, with the models it may ask for there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderConfig {
    pub id: ProviderConfigId,
    /// Name of a `[[providers]]` entry of the node config.
    pub provider: String,
    /// Routing weight in thousandths (1.0 is 1000), kept integral so state is exact.
    pub weight_milli: u32,
    /// Exact model names or `regex:` patterns; empty allows every model.
    pub allowed_models: Vec<String>,
    /// Requested model name → model name sent upstream (maps Claude Code's tier names).
    pub aliases: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualKey {
    pub id: KeyId,
    pub name: String,
    /// SHA-256 of the secret; the secret itself is never stored.
    pub secret_sha256: [u8; 32],
    /// The first characters of the secret, enough for a person to tell keys apart.
    pub secret_prefix: String,
    pub team_id: Option<TeamId>,
    pub customer_id: Option<CustomerId>,
    pub provider_configs: Vec<ProviderConfig>,
    pub disabled: bool,
    pub created_at_ms: UnixMs,
    pub rotated_at_ms: Option<UnixMs>,
}

/// What the request log keeps of a request: `[logs] content`, or a virtual key's own
/// `log_content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogContent {
    /// No record.
    Off,
    /// One record per request, no bodies.
    Metadata,
    /// The record and the request and response bodies.
    Full,
}

impl LogContent {
    pub fn name(self) -> &'static str {
        match self {
            LogContent::Off => "off",
            LogContent::Metadata => "metadata",
            LogContent::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<LogContent> {
        match s {
            "off" => Some(LogContent::Off),
            "metadata" => Some(LogContent::Metadata),
            "full" => Some(LogContent::Full),
            _ => None,
        }
    }
}

/// What a budget or rate limit is attached to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Owner {
    Customer(CustomerId),
    Team(TeamId),
    VirtualKey(KeyId),
    ProviderConfig(ProviderConfigId),
}

impl Owner {
    pub fn kind(&self) -> &'static str {
        match self {
            Owner::Customer(_) => "customer",
            Owner::Team(_) => "team",
            Owner::VirtualKey(_) => "virtual_key",
            Owner::ProviderConfig(_) => "provider_config",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Owner::Customer(id) => id.as_str(),
            Owner::Team(id) => id.as_str(),
            Owner::VirtualKey(id) => id.as_str(),
            Owner::ProviderConfig(id) => id.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub id: BudgetId,
    pub owner: Owner,
    pub limit: Usd,
    pub reset: ResetDuration,
    /// Snap windows to UTC calendar boundaries instead of the creation time.
    pub calendar_aligned: bool,
    pub created_at_ms: UnixMs,
}

/// Spend of one budget in its current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub window_start_ms: UnixMs,
    pub spent: Usd,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub id: RateLimitId,
    pub owner: Owner,
    pub request_max: Option<u64>,
    pub request_window: Option<ResetDuration>,
    pub token_max: Option<u64>,
    pub token_window: Option<ResetDuration>,
    pub created_at_ms: UnixMs,
}

/// Requests, tokens and spend accumulated by one key, team, customer or model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub spent: Usd,
}
