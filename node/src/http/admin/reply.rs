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

/// Entries a list answers with when the request does not say, and at most.
pub const DEFAULT_PAGE: usize = 1_000;
pub const MAX_PAGE: usize = 10_000;

/// A list request's page: `?limit=N` entries (default `DEFAULT_PAGE`, at most
/// `MAX_PAGE`) after `?cursor=C`, the `next_cursor` of the previous page. Lists are in
/// id order, and the cursor is the last id sent, so a page stays right while entries
/// come and go.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
}

impl PageQuery {
    /// Answers one page of `items` (each with the id it is ordered by), each shown by
    /// `view` (made only for the entries sent): `{"data": [...], "next_cursor": "ID" |
    /// null}`.
    pub fn answer<'a, V: 'a>(
        &self,
        items: impl Iterator<Item = (&'a str, &'a V)>,
        view: impl Fn(&V) -> Option<Value>,
    ) -> Result<Response, ApiError> {
        let limit = match self.limit.as_deref() {
            None => DEFAULT_PAGE,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Err(ApiError::InvalidField {
                        field: "limit".into(),
                        message: format!("must be a number from 1 to {MAX_PAGE}"),
                    })
                }
            },
        };
        let cursor = self.cursor.as_deref().unwrap_or("");
        let mut data = Vec::with_capacity(limit.min(64));
        let mut next = None;
        let mut last = "";
        for (id, item) in items.filter(|(id, _)| cursor.is_empty() || *id > cursor) {
            if data.len() == limit {
                next = Some(last.to_owned());
                break;
            }
            if let Some(v) = view(item) {
                last = id;
                data.push(v);
            }
        }
        Ok(ok(json!({ "data": data, "next_cursor": next })))
    }
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
    // With who made it, once the cluster records the audit trail.
    let command = super::actor::audited(app, command);
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
