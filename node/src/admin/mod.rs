//! The admin API (`/api/v1/...`): JSON CRUD over governance state, usage and cluster
//! status. Every write becomes a `Command` through the replicator.
//!
//! # Layout
//! - `dto`: request bodies (strict) and response views.
//! - `handlers`: one function per route.
//! - `validate`: turning bodies into domain values with the offending field named.

pub mod dto;
pub mod handlers;
pub mod validate;

use crate::app::App;
use crate::error::{ApiError, Dialect};
use crate::replicator::ReplicateError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tollgate_proto::{Command, Outcome};

/// The admin routes, behind the admin-token check.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    use handlers::*;
    Router::new()
        .route(
            "/api/v1/customers",
            post(create_customer).get(list_customers),
        )
        .route(
            "/api/v1/customers/{id}",
            get(get_customer)
                .patch(patch_customer)
                .delete(delete_customer),
        )
        .route("/api/v1/teams", post(create_team).get(list_teams))
        .route(
            "/api/v1/teams/{id}",
            get(get_team).patch(patch_team).delete(delete_team),
        )
        .route("/api/v1/virtual-keys", post(create_key).get(list_keys))
        .route(
            "/api/v1/virtual-keys/{id}",
            get(get_key).patch(patch_key).delete(delete_key),
        )
        .route("/api/v1/virtual-keys/{id}/rotate", post(rotate_key))
        .route("/api/v1/budgets", post(create_budget).get(list_budgets))
        .route(
            "/api/v1/budgets/{id}",
            get(get_budget).patch(patch_budget).delete(delete_budget),
        )
        .route(
            "/api/v1/rate-limits",
            post(create_rate_limit).get(list_rate_limits),
        )
        .route(
            "/api/v1/rate-limits/{id}",
            get(get_rate_limit).delete(delete_rate_limit),
        )
        .route("/api/v1/prices", post(set_price).get(list_prices))
        .route(
            "/api/v1/prices/{model}",
            axum::routing::delete(delete_price),
        )
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/cluster", get(cluster))
        .route(
            "/api/v1/cluster/nodes/{id}",
            axum::routing::delete(remove_node),
        )
        .route(
            "/api/v1/cluster/nodes/{id}/drain",
            axum::routing::post(drain_node),
        )
        .fallback(admin_not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            consistency,
        ))
        .route_layer(axum::middleware::from_fn_with_state(app, require_admin))
}

/// `?consistency=linearizable` on a read: first make sure this node has applied every
/// write committed before the request (the leader confirms its leadership with a quorum
/// and names its commit index; this node waits until it has applied that far). Reads
/// are otherwise answered from the local applied state. `consistency=local` is the
/// default; any other value is a 400.
async fn consistency(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let wanted = request.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == "consistency")
            .map(|(_, v)| v.to_owned())
    });
    match wanted.as_deref() {
        None | Some("local") => next.run(request).await,
        Some("linearizable") => match app.replicator.linearize().await {
            Ok(()) => next.run(request).await,
            Err(e) => ApiError::ClusterUnavailable(format!("linearizable read impossible: {e}"))
                .into_response_in(Dialect::Admin),
        },
        Some(other) => ApiError::InvalidField {
            field: "consistency".into(),
            message: format!("consistency must be `local` or `linearizable`, not `{other}`"),
        }
        .into_response_in(Dialect::Admin),
    }
}

/// Deny by default: every admin route needs the admin bearer token.
async fn require_admin(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if crate::auth::is_admin(request.headers(), &app.admin_token_sha256) {
        next.run(request).await
    } else {
        ApiError::Unauthorized("admin API: send `Authorization: Bearer <admin token>`".into())
            .into_response_in(Dialect::Admin)
    }
}

async fn admin_not_found(request: Request) -> Response {
    ApiError::NotFound(format!(
        "no admin route {} {}",
        request.method(),
        request.uri().path()
    ))
    .into_response_in(Dialect::Admin)
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
