//! Turns admin request bodies into domain values, naming the field at fault.

use super::dto::{OwnerBody, ProviderConfigBody};
use crate::app::App;
use crate::gateway::auth;
use crate::gateway::routing::{
    compile_pattern, patterns_of, MAX_KEY_PATTERNS, MAX_PATTERNS, REGEX_PREFIX,
};
use crate::http::error::ApiError;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tollgate_proto::{Owner, ProviderConfig, ResetDuration, Usd};

/// Longest name accepted for customers, teams and keys.
const MAX_NAME_CHARS: usize = 200;
/// Most provider configs on one key; a key routes to a handful of providers at most.
const MAX_PROVIDER_CONFIGS: usize = 32;
/// Most allowed-model entries or aliases on one provider config.
const MAX_MODEL_ENTRIES: usize = 256;

pub fn field(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::InvalidField {
        field: field.to_owned(),
        message: format!("{field}: {message}"),
    }
}

/// Parses a JSON body strictly, naming the field that is wrong or unknown.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let full = e.inner().to_string();
        // serde appends the position; the field path says more to a person.
        let message = full.split(" at line ").next().unwrap_or(&full).to_owned();
        let path = e.path().to_string();
        let parent = if path == "." {
            String::new()
        } else {
            path.clone()
        };
        if message.starts_with("missing field") {
            let missing = message.split('`').nth(1).unwrap_or("field");
            let name = if parent.is_empty() {
                missing.to_owned()
            } else {
                format!("{parent}.{missing}")
            };
            return field(&name, "field required");
        }
        field(if parent.is_empty() { "body" } else { &parent }, message)
    })
}

pub fn name(field_name: &str, value: &str) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(field(field_name, "must not be empty"));
    }
    if trimmed.chars().count() > MAX_NAME_CHARS {
        return Err(field(
            field_name,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

pub fn usd(field_name: &str, value: &str) -> Result<Usd, ApiError> {
    Usd::parse(value.trim()).map_err(|e| field(field_name, e))
}

pub fn duration(field_name: &str, value: &str) -> Result<ResetDuration, ApiError> {
    ResetDuration::parse(value.trim()).ok_or_else(|| {
        field(
            field_name,
            format!("{value:?} is not one of 1m 5m 1h 1d 1w 1M 1Q 1Y"),
        )
    })
}

pub fn owner(body: &OwnerBody) -> Result<Owner, ApiError> {
    let id = body.id.trim();
    if id.is_empty() {
        return Err(field("owner.id", "must not be empty"));
    }
    Ok(match body.kind.as_str() {
        "customer" => Owner::Customer(id.into()),
        "team" => Owner::Team(id.into()),
        "virtual_key" => Owner::VirtualKey(id.into()),
        "provider_config" => Owner::ProviderConfig(id.into()),
        other => {
            return Err(field(
                "owner.kind",
                format!("{other:?} is not one of virtual_key, team, customer, provider_config"),
            ))
        }
    })
}

/// Provider configs from their bodies. A body without an `id` keeps the id of the key's
/// `existing` config for the same provider, so a PATCH that only changes a weight keeps
/// that config's budgets and rate limits.
pub fn provider_configs(
    app: &App,
    bodies: &[ProviderConfigBody],
    existing: &[ProviderConfig],
) -> Result<Vec<ProviderConfig>, ApiError> {
    let mut reusable: Vec<&ProviderConfig> = existing
        .iter()
        .filter(|e| {
            !bodies
                .iter()
                .any(|b| b.id.as_deref() == Some(e.id.as_str()))
        })
        .collect();
    if bodies.is_empty() {
        return Err(field("provider_configs", "must name at least one provider"));
    }
    if bodies.len() > MAX_PROVIDER_CONFIGS {
        return Err(field(
            "provider_configs",
            format!("at most {MAX_PROVIDER_CONFIGS} entries"),
        ));
    }
    let mut out = Vec::with_capacity(bodies.len());
    let mut patterns = 0;
    let mut new_patterns = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let at = |f: &str| format!("provider_configs[{i}].{f}");
        if app.gate.providers.get(&b.provider).is_none() {
            let known: Vec<&str> = app.gate.providers.names().collect();
            return Err(field(
                &at("provider"),
                format!("unknown provider {:?}; this node has {known:?}", b.provider),
            ));
        }
        let weight = b.weight.unwrap_or(1.0);
        if !(weight.is_finite() && (0.0..=1_000_000.0).contains(&weight)) {
            return Err(field(&at("weight"), "must be a number from 0 to 1000000"));
        }
        if b.allowed_models.len() > MAX_MODEL_ENTRIES || b.aliases.len() > MAX_MODEL_ENTRIES {
            return Err(field(
                &at("allowed_models"),
                format!("at most {MAX_MODEL_ENTRIES} entries"),
            ));
        }
        for (j, m) in b.allowed_models.iter().enumerate() {
            if let Some(pattern) = m.strip_prefix(REGEX_PREFIX) {
                patterns += 1;
                if patterns > MAX_KEY_PATTERNS {
                    return Err(field(
                        &format!("provider_configs[{i}].allowed_models[{j}]"),
                        format!("a key may have at most {MAX_KEY_PATTERNS} regex: patterns"),
                    ));
                }
                let compiled = compile_pattern(pattern)
                    .map_err(|e| field(&format!("provider_configs[{i}].allowed_models[{j}]"), e))?;
                new_patterns.push((pattern, compiled));
            } else if m.trim().is_empty() {
                return Err(field(
                    &format!("provider_configs[{i}].allowed_models[{j}]"),
                    "must not be empty",
                ));
            }
        }
        let id = match &b.id {
            Some(id) if !id.trim().is_empty() => id.trim().into(),
            _ => match reusable.iter().position(|e| e.provider == b.provider) {
                Some(at) => reusable.remove(at).id.clone(),
                None => auth::generate_id(tollgate_proto::ProviderConfigId::PREFIX)
                    .as_str()
                    .into(),
            },
        };
        out.push(ProviderConfig {
            id,
            provider: b.provider.clone(),
            weight_milli: (weight * 1000.0).round() as u32,
            allowed_models: b.allowed_models.clone(),
            aliases: b.aliases.clone(),
        });
    }
    // Every node keeps every distinct pattern compiled: bound how many there are.
    {
        let state = app.replicator.state().read();
        let known: std::collections::BTreeSet<&str> = patterns_of(&state).collect();
        let fresh: std::collections::BTreeSet<&str> = new_patterns
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !known.contains(p))
            .collect();
        if known.len() + fresh.len() > MAX_PATTERNS {
            return Err(field(
                "provider_configs",
                format!(
                    "the gateway holds {} distinct regex: patterns, at most {MAX_PATTERNS}; reuse one",
                    known.len()
                ),
            ));
        }
    }
    for (pattern, compiled) in new_patterns {
        app.gate.patterns.insert(pattern, Some(compiled));
    }
    Ok(out)
}
