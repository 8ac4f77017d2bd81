//! Admin routes for virtual keys: create, read, patch, rotate, delete.

use super::dto::*;
use super::reply::{created, no_content, not_found, ok, propose, AdminResult, PageQuery};
use super::validate::{self, parse_body};
use crate::app::App;
use crate::gateway::auth;
use crate::http::error::ApiError;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_proto::*;

// ------------------------------------------------------------- virtual keys

fn new_secret() -> Result<String, ApiError> {
    auth::generate_secret().ok_or_else(|| ApiError::Internal("os random source failed".into()))
}

/// A key's `log_content` from a body: `None` for the node's `[logs] content`. Refused
/// (409) until every member can apply it (protocol 4).
fn log_content(app: &App, value: Option<&str>) -> Result<Option<LogContent>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let content = LogContent::parse(value).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "log_content must be \"off\", \"metadata\" or \"full\", not {value:?}"
        ))
    })?;
    let writes = app.state().read().protocol_version();
    if writes < LOG_CONTENT_PROTOCOL {
        return Err(ApiError::Conflict(format!(
            "log_content needs every node at protocol {LOG_CONTENT_PROTOCOL}; the cluster writes protocol {writes} (finish the rolling upgrade first)"
        )));
    }
    Ok(Some(content))
}

/// The protocol that carries a key's `log_content` (`Command::SetKeyLogContent`).
const LOG_CONTENT_PROTOCOL: u16 = 4;

pub async fn create_key(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: CreateKey = parse_body(&body)?;
    let content = log_content(&app, b.log_content.as_deref())?;
    let secret = new_secret()?;
    let key = VirtualKey {
        id: auth::generate_id(KeyId::PREFIX).as_str().into(),
        name: validate::name("name", &b.name)?,
        secret_sha256: auth::sha256(&secret),
        secret_prefix: auth::shown_prefix(&secret),
        team_id: b.team_id.map(TeamId),
        customer_id: b.customer_id.map(CustomerId),
        provider_configs: validate::provider_configs(&app, &b.provider_configs, &[])?,
        disabled: false,
        created_at_ms: app.now_ms(),
        rotated_at_ms: None,
    };
    propose(&app, Command::CreateKey(key.clone())).await?;
    if content.is_some() {
        propose(
            &app,
            Command::SetKeyLogContent {
                id: key.id.clone(),
                content,
            },
        )
        .await?;
    }
    let mut view = key_view(&key, content);
    view["secret"] = Value::String(secret);
    Ok(created(view))
}

pub async fn list_keys(State(app): State<Arc<App>>, Query(page): Query<PageQuery>) -> AdminResult {
    let state = app.state().read();
    Ok(
        page.answer(state.keys().iter().map(|(id, k)| (id.as_str(), k)), |k| {
            Some(key_view(k, state.key_log_content(&k.id)))
        })?,
    )
}

pub async fn get_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let state = app.state().read();
    let k = state
        .keys()
        .get(&KeyId(id.clone()))
        .ok_or_else(|| not_found("virtual key", &id))?;
    Ok(ok(key_view(k, state.key_log_content(&k.id))))
}

pub async fn patch_key(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> AdminResult {
    let b: PatchKey = parse_body(&body)?;
    let content = b
        .log_content
        .as_ref()
        .map(|c| log_content(&app, c.as_deref()))
        .transpose()?;
    let patch = KeyPatch {
        name: b
            .name
            .as_deref()
            .map(|n| validate::name("name", n))
            .transpose()?,
        disabled: b.disabled,
        team_id: b.team_id.map(|t| t.map(TeamId)),
        customer_id: b.customer_id.map(|c| c.map(CustomerId)),
        provider_configs: b
            .provider_configs
            .as_deref()
            .map(|p| {
                let state = app.state().read();
                let existing = state
                    .keys()
                    .get(&KeyId(id.clone()))
                    .map(|k| k.provider_configs.clone())
                    .unwrap_or_default();
                drop(state);
                validate::provider_configs(&app, p, &existing)
            })
            .transpose()?,
    };
    if patch != KeyPatch::default() || content.is_none() {
        propose(
            &app,
            Command::UpdateKey {
                id: KeyId(id.clone()),
                patch,
            },
        )
        .await?;
    }
    if let Some(content) = content {
        propose(
            &app,
            Command::SetKeyLogContent {
                id: KeyId(id.clone()),
                content,
            },
        )
        .await?;
    }
    get_key(State(app), Path(id)).await
}

pub async fn rotate_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let secret = new_secret()?;
    propose(
        &app,
        Command::RotateKey {
            id: KeyId(id.clone()),
            secret_sha256: auth::sha256(&secret),
            secret_prefix: auth::shown_prefix(&secret),
            at_ms: app.now_ms(),
        },
    )
    .await?;
    Ok(ok(json!({ "id": id, "secret": secret })))
}

pub async fn delete_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    propose(&app, Command::DeleteKey { id: KeyId(id) }).await?;
    Ok(no_content())
}
