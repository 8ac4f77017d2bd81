//! Admin API bodies: what callers send (strict: unknown fields are rejected) and what
//! they get back (money as decimal strings, never the secret except on create/rotate).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_proto::{
    Budget, Customer, LogContent, Owner, Price, ProviderConfig, RateLimit, Team, VirtualKey,
};
use tollgate_raft::rfc3339;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    pub name: String,
    #[serde(default)]
    pub customer_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchTeam {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, with = "double_option")]
    pub customer_id: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfigBody {
    pub provider: String,
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// Keeps a config's id (and so its budgets) across a PATCH.
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    pub provider_configs: Vec<ProviderConfigBody>,
    /// What the request log keeps of this key's requests: `off`, `metadata`, `full`,
    /// or absent/null for the node's `[logs] content`.
    #[serde(default)]
    pub log_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchKey {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default, with = "double_option")]
    pub team_id: Option<Option<String>>,
    #[serde(default, with = "double_option")]
    pub customer_id: Option<Option<String>>,
    #[serde(default)]
    pub provider_configs: Option<Vec<ProviderConfigBody>>,
    #[serde(default, with = "double_option")]
    pub log_content: Option<Option<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerBody {
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBudget {
    pub owner: OwnerBody,
    pub max_limit_usd: String,
    pub reset_duration: String,
    #[serde(default)]
    pub calendar_aligned: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBudget {
    #[serde(default)]
    pub max_limit_usd: Option<String>,
    #[serde(default)]
    pub reset_duration: Option<String>,
    #[serde(default)]
    pub calendar_aligned: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRateLimit {
    pub owner: OwnerBody,
    #[serde(default)]
    pub request_max: Option<u64>,
    #[serde(default)]
    pub request_window: Option<String>,
    #[serde(default)]
    pub token_max: Option<u64>,
    #[serde(default)]
    pub token_window: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePrice {
    pub model: String,
    pub input_per_mtok_usd: String,
    pub output_per_mtok_usd: String,
    #[serde(default)]
    pub cache_write_per_mtok_usd: Option<String>,
    #[serde(default)]
    pub cache_read_per_mtok_usd: Option<String>,
}

/// Distinguishes an absent field (leave as is) from `null` (clear it).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

#[derive(Debug, Serialize)]
pub struct OwnerView {
    pub kind: &'static str,
    pub id: String,
}

impl From<&Owner> for OwnerView {
    fn from(o: &Owner) -> Self {
        OwnerView {
            kind: o.kind(),
            id: o.id().to_owned(),
        }
    }
}

pub fn customer_view(c: &Customer) -> serde_json::Value {
    serde_json::json!({"id": c.id, "name": c.name, "created_at": rfc3339(c.created_at_ms)})
}

pub fn team_view(t: &Team) -> serde_json::Value {
    serde_json::json!({"id": t.id, "name": t.name, "customer_id": t.customer_id, "created_at": rfc3339(t.created_at_ms)})
}

pub fn provider_config_view(pc: &ProviderConfig) -> serde_json::Value {
    serde_json::json!({
        "id": pc.id,
        "provider": pc.provider,
        "weight": f64::from(pc.weight_milli) / 1000.0,
        "allowed_models": pc.allowed_models,
        "aliases": pc.aliases,
    })
}

/// A key as the API shows it: never the secret, only its first characters.
pub fn key_view(k: &VirtualKey, log_content: Option<LogContent>) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "name": k.name,
        "secret_prefix": k.secret_prefix,
        "team_id": k.team_id,
        "customer_id": k.customer_id,
        "disabled": k.disabled,
        "provider_configs": k.provider_configs.iter().map(provider_config_view).collect::<Vec<_>>(),
        "created_at": rfc3339(k.created_at_ms),
        "rotated_at": k.rotated_at_ms.map(rfc3339),
        "log_content": log_content,
    })
}

pub fn rate_limit_view(r: &RateLimit) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "owner": OwnerView::from(&r.owner),
        "request_max": r.request_max,
        "request_window": r.request_window.map(|w| w.as_str()),
        "token_max": r.token_max,
        "token_window": r.token_window.map(|w| w.as_str()),
        "created_at": rfc3339(r.created_at_ms),
    })
}

pub fn price_view(p: &Price) -> serde_json::Value {
    serde_json::json!({
        "model": p.model,
        "input_per_mtok_usd": p.input_per_mtok.to_string(),
        "output_per_mtok_usd": p.output_per_mtok.to_string(),
        "cache_write_per_mtok_usd": p.cache_write_per_mtok.to_string(),
        "cache_read_per_mtok_usd": p.cache_read_per_mtok.to_string(),
    })
}

pub fn budget_base_view(b: &Budget) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "id": b.id,
        "owner": OwnerView::from(&b.owner),
        "max_limit_usd": b.limit.to_string(),
        "limit_usd": b.limit.to_string(),
        "reset_duration": b.reset.as_str(),
        "calendar_aligned": b.calendar_aligned,
        "created_at": rfc3339(b.created_at_ms),
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}
