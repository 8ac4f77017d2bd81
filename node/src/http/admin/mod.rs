//! The admin API (`/api/v1/...`): JSON CRUD over governance state, usage and cluster
//! status. Every write becomes a `Command` through the replicator.
//!
//! # Layout
//! - `dto`: request bodies (strict) and response views.
//! - `owners`, `keys`, `budgets`, `usage`, `cluster`: one function per route, by resource.
//! - `guardrails`: content policies, compiled before they are proposed.
//! - `logs`: the request log (search, one record, stats), merged from every member.
//! - `actor`: who makes a call, carried into its writes (`Command::Audited`).
//! - `audit`: failed logins, the audit trail and its verification.
//! - `reply`: `AdminResult`, JSON reply helpers and `propose`.
//! - `validate`: turning bodies into domain values with the offending field named.

pub mod actor;
pub mod audit;
pub mod budgets;
pub mod cluster;
pub mod dto;
pub mod guardrails;
pub mod keys;
pub mod logs;
pub mod owners;
pub mod reply;
pub mod usage;
pub mod validate;

use crate::app::App;
use crate::http::error::{ApiError, Dialect};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// The admin routes, behind the admin-token check.
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    use self::{budgets::*, cluster::*, keys::*, owners::*, usage::*};
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
        .route(
            "/api/v1/guardrails",
            post(guardrails::create_guardrail).get(guardrails::list_guardrails),
        )
        .route(
            "/api/v1/guardrails/{id}",
            get(guardrails::get_guardrail)
                .patch(guardrails::patch_guardrail)
                .delete(guardrails::delete_guardrail),
        )
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/logs", get(logs::logs))
        .route("/api/v1/logs/{id}", get(logs::log_entry))
        .route("/api/v1/stats", get(logs::stats))
        .route("/api/v1/audit", get(audit::events))
        .route("/api/v1/audit/verify", get(audit::verify))
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
        .route_layer(axum::middleware::map_response_with_state(
            Arc::clone(&app),
            json_too_large,
        ))
        .route_layer(axum::middleware::from_fn_with_state(app, require_admin))
}

/// A body past `max_body_bytes` is refused by the body extractor in plain text: the admin
/// API answers in JSON like every other error.
async fn json_too_large(State(app): State<Arc<App>>, response: Response) -> Response {
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !json {
        return crate::http::error::ApiError::BodyTooLarge {
            limit_bytes: app.config.limits.max_body_bytes,
        }
        .into_response_in(crate::http::error::Dialect::Admin);
    }
    response
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

/// Deny by default: every admin route needs the admin bearer token. Who called, from
/// where, under which request id, goes with every write the call makes (the audit
/// trail); a failed authentication is recorded too (`audit::AuthFailures`).
async fn require_admin(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let source = request
        .extensions()
        .get::<crate::gateway::proxy::ClientAddr>()
        .map(|c| c.0.ip());
    let request_id = app.next_request().id;
    let mut response = if crate::gateway::auth::is_admin(request.headers(), &app.admin_token_sha256)
    {
        let context = actor::AdminContext {
            actor: actor::bootstrap_admin(),
            source_ip: source.map(|ip| ip.to_string()),
            request_id: request_id.clone(),
        };
        actor::CONTEXT.scope(context, next.run(request)).await
    } else {
        audit::auth_failed(&app, source, &request_id);
        ApiError::Unauthorized("admin API: send `Authorization: Bearer <admin token>`".into())
            .into_response_in(Dialect::Admin)
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-tollgate-request-id", v);
    }
    response
}

async fn admin_not_found(request: Request) -> Response {
    ApiError::NotFound(format!(
        "no admin route {} {}",
        request.method(),
        request.uri().path()
    ))
    .into_response_in(Dialect::Admin)
}
