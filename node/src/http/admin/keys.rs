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

pub async fn create_key(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: CreateKey = parse_body(&body)?;
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
    let mut view = key_view(&key);
    view["secret"] = Value::String(secret);
    Ok(created(view))
}

pub async fn list_keys(State(app): State<Arc<App>>, Query(page): Query<PageQuery>) -> AdminResult {
    let state = app.state().read();
    Ok(
        page.answer(state.keys().iter().map(|(id, k)| (id.as_str(), k)), |k| {
            Some(key_view(k))
        })?,
    )
}

pub async fn get_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let state = app.state().read();
    let k = state
        .keys()
        .get(&KeyId(id.clone()))
        .ok_or_else(|| not_found("virtual key", &id))?;
    Ok(ok(key_view(k)))
}

pub async fn patch_key(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> AdminResult {
    let b: PatchKey = parse_body(&body)?;
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
    propose(
        &app,
        Command::UpdateKey {
            id: KeyId(id.clone()),
            patch,
        },
    )
    .await?;
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
