//! What admin handlers answer with: `AdminResult`, JSON reply helpers, and `propose`,
//! which turns a write's rejection into an HTTP error.

use crate::app::App;
use crate::governance::replicator::ReplicateError;
use crate::http::error::{ApiError, Dialect};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tollgate_proto::{Command, Outcome};

pub fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

pub fn ok(v: Value) -> Response {
    Json(v).into_response()
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

pub fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{what} {id} not found"))
}

pub fn list(items: Vec<Value>) -> Response {
    ok(json!({ "data": items }))
}

/// An admin API result: a JSON response or an error in the admin dialect.
pub type AdminResult = Result<Response, AdminError>;

pub struct AdminError(pub ApiError);

impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        AdminError(e)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        self.0.into_response_in(Dialect::Admin)
    }
}

/// Proposes a command and maps a rejection to an HTTP error.
pub async fn propose(app: &App, command: Command) -> Result<(), ApiError> {
    let outcome = app.replicator.propose(command).await.map_err(|e| match e {
        ReplicateError::Cluster(_) => ApiError::ClusterUnavailable(e.to_string()),
        ReplicateError::Refused(m) => ApiError::Conflict(m),
        ReplicateError::Storage(_) => ApiError::Internal(e.to_string()),
    })?;
    match outcome {
        Outcome::Done | Outcome::Charged { .. } | Outcome::Leased { .. } => Ok(()),
        Outcome::NotFound { what, id } => Err(ApiError::NotFound(format!("{what} {id} not found"))),
        Outcome::Conflict(m) => Err(ApiError::Conflict(m)),
        Outcome::Invalid(m) => Err(ApiError::BadRequest(m)),
    }
}
