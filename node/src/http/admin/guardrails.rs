//! Admin routes for guardrails: create, list, read, patch (any field), delete. A
//! guardrail is compiled here before it is proposed, so a bad one is a 400 naming its
//! field and every node can compile what the state holds.

use super::reply::{created, no_content, not_found, ok, propose, AdminResult, PageQuery};
use super::validate::{self, field, parse_body};
use crate::app::App;
use crate::gateway::auth;
use crate::gateway::guard::policy::Policy;
use crate::http::error::ApiError;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_proto::{
    Command, CustomerId, Detector, GuardAction, GuardDirection, GuardScope, Guardrail, GuardrailId,
    KeyId, OnError, PiiEntity, TeamId,
};
use tollgate_raft::rfc3339;

/// The protocol that carries guardrails.
const GUARDRAILS_PROTOCOL: u16 = 7;

/// Most detectors one guardrail may have.
const MAX_DETECTORS: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeBody {
    kind: String,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorBody {
    kind: String,
    #[serde(default)]
    entities: Option<Vec<PiiEntity>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    on_error: Option<OnError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGuardrail {
    name: String,
    scope: ScopeBody,
    detectors: Vec<DetectorBody>,
    action: GuardAction,
    #[serde(default)]
    direction: Option<GuardDirection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchGuardrail {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    scope: Option<ScopeBody>,
    #[serde(default)]
    detectors: Option<Vec<DetectorBody>>,
    #[serde(default)]
    action: Option<GuardAction>,
    #[serde(default)]
    direction: Option<GuardDirection>,
}

fn scope(b: &ScopeBody) -> Result<GuardScope, ApiError> {
    let id = || match b.id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err(field(
            "scope.id",
            format!("a {} scope names its id", b.kind),
        )),
    };
    Ok(match b.kind.as_str() {
        "global" => {
            if b.id.is_some() {
                return Err(field("scope.id", "a global scope has no id"));
            }
            GuardScope::Global
        }
        "customer" => GuardScope::Customer(CustomerId(id()?)),
        "team" => GuardScope::Team(TeamId(id()?)),
        "user" => GuardScope::User(id()?),
        "virtual_key" => GuardScope::VirtualKey(KeyId(id()?)),
        other => {
            return Err(field(
                "scope.kind",
                format!("must be global, customer, team, user or virtual_key, not {other:?}"),
            ))
        }
    })
}

fn detector(i: usize, d: &DetectorBody) -> Result<Detector, ApiError> {
    let at = |name: &str| format!("detectors[{i}].{name}");
    let only = |allowed: &[&str]| -> Result<(), ApiError> {
        let given = [
            ("entities", d.entities.is_some()),
            ("name", d.name.is_some()),
            ("pattern", d.pattern.is_some()),
            ("url", d.url.is_some()),
            ("timeout_ms", d.timeout_ms.is_some()),
            ("on_error", d.on_error.is_some()),
        ];
        match given.iter().find(|(f, set)| *set && !allowed.contains(f)) {
            Some((f, _)) => Err(field(
                &at(f),
                format!("is not a field of a {} detector", d.kind),
            )),
            None => Ok(()),
        }
    };
    let required = |v: &Option<String>, name: &str| {
        v.clone().ok_or_else(|| field(&at(name), "field required"))
    };
    Ok(match d.kind.as_str() {
        "secrets" => {
            only(&[])?;
            Detector::Secrets
        }
        "pii" => {
            only(&["entities"])?;
            Detector::Pii {
                entities: d.entities.clone().unwrap_or_default(),
            }
        }
        "regex" => {
            only(&["name", "pattern"])?;
            Detector::Regex {
                name: validate::name(&at("name"), &required(&d.name, "name")?)?,
                pattern: required(&d.pattern, "pattern")?,
            }
        }
        "webhook" => {
            only(&["url", "timeout_ms", "on_error"])?;
            Detector::Webhook {
                url: required(&d.url, "url")?,
                timeout_ms: d.timeout_ms.unwrap_or(1_000),
                on_error: d.on_error.unwrap_or(OnError::Allow),
            }
        }
        other => {
            return Err(field(
                &at("kind"),
                format!("must be secrets, pii, regex or webhook, not {other:?}"),
            ))
        }
    })
}

fn detectors(list: &[DetectorBody]) -> Result<Vec<Detector>, ApiError> {
    if list.is_empty() {
        return Err(field("detectors", "must name at least one detector"));
    }
    if list.len() > MAX_DETECTORS {
        return Err(field("detectors", format!("at most {MAX_DETECTORS}")));
    }
    list.iter()
        .enumerate()
        .map(|(i, d)| detector(i, d))
        .collect()
}

/// Compiles the guardrail as every node will, so what is proposed is usable.
fn checked(g: Guardrail, app: &App) -> Result<Guardrail, ApiError> {
    let (writes, exists) = {
        let state = app.state().read();
        let exists = match &g.scope {
            GuardScope::Global | GuardScope::User(_) => true,
            GuardScope::Customer(id) => state.customers().contains_key(id),
            GuardScope::Team(id) => state.teams().contains_key(id),
            GuardScope::VirtualKey(id) => state.keys().contains_key(id),
        };
        (state.protocol_version(), exists)
    };
    if !exists {
        return Err(field(
            "scope.id",
            format!("no {} {}", g.scope.kind(), g.scope.id().unwrap_or_default()),
        ));
    }
    if writes < GUARDRAILS_PROTOCOL {
        return Err(ApiError::Conflict(format!(
            "guardrails need every node at protocol {GUARDRAILS_PROTOCOL}; the cluster writes protocol {writes} (finish the rolling upgrade first)"
        )));
    }
    Policy::compile(&g).map_err(|e| field(&e.field, e.message))?;
    Ok(g)
}

pub fn guardrail_view(g: &Guardrail) -> Value {
    let detectors: Vec<Value> = g
        .detectors
        .iter()
        .map(|d| match d {
            Detector::Secrets => json!({"kind": "secrets"}),
            Detector::Pii { entities } => json!({"kind": "pii", "entities": entities}),
            Detector::Regex { name, pattern } => {
                json!({"kind": "regex", "name": name, "pattern": pattern})
            }
            Detector::Webhook {
                url,
                timeout_ms,
                on_error,
            } => json!({"kind": "webhook", "url": url, "timeout_ms": timeout_ms, "on_error": on_error}),
        })
        .collect();
    json!({
        "id": g.id,
        "name": g.name,
        "scope": {"kind": g.scope.kind(), "id": g.scope.id()},
        "detectors": detectors,
        "action": g.action,
        "direction": g.direction,
        "created_at": rfc3339(g.created_at_ms),
    })
}

pub async fn create_guardrail(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: CreateGuardrail = parse_body(&body)?;
    let g = Guardrail {
        id: auth::generate_id(GuardrailId::PREFIX).as_str().into(),
        name: validate::name("name", &b.name)?,
        scope: scope(&b.scope)?,
        detectors: detectors(&b.detectors)?,
        action: b.action,
        direction: b.direction.unwrap_or(GuardDirection::Input),
        created_at_ms: app.now_ms(),
    };
    let g = checked(g, &app)?;
    propose(&app, Command::CreateGuardrail(g.clone())).await?;
    Ok(created(guardrail_view(&g)))
}

pub async fn list_guardrails(
    State(app): State<Arc<App>>,
    Query(page): Query<PageQuery>,
) -> AdminResult {
    let state = app.state().read();
    Ok(page.answer(
        state.guardrails().iter().map(|(id, g)| (id.as_str(), g)),
        |g| Some(guardrail_view(g)),
    )?)
}

pub async fn get_guardrail(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let state = app.state().read();
    let g = state
        .guardrails()
        .get(&GuardrailId(id.clone()))
        .ok_or_else(|| not_found("guardrail", &id))?;
    Ok(ok(guardrail_view(g)))
}

pub async fn patch_guardrail(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> AdminResult {
    let b: PatchGuardrail = parse_body(&body)?;
    let mut g = app
        .state()
        .read()
        .guardrails()
        .get(&GuardrailId(id.clone()))
        .cloned()
        .ok_or_else(|| not_found("guardrail", &id))?;
    if let Some(name) = &b.name {
        g.name = validate::name("name", name)?;
    }
    if let Some(s) = &b.scope {
        g.scope = scope(s)?;
    }
    if let Some(d) = &b.detectors {
        g.detectors = detectors(d)?;
    }
    if let Some(action) = b.action {
        g.action = action;
    }
    if let Some(direction) = b.direction {
        g.direction = direction;
    }
    let g = checked(g, &app)?;
    propose(&app, Command::UpdateGuardrail(g.clone())).await?;
    Ok(ok(guardrail_view(&g)))
}

pub async fn delete_guardrail(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    propose(
        &app,
        Command::DeleteGuardrail {
            id: GuardrailId(id),
        },
    )
    .await?;
    Ok(no_content())
}
