//! The inference request path over HTTP: read the caller and the body, take them
//! through the gate's steps (`gateway::gate`: authenticate, resolve, rate-limit, reserve),
//! then try providers in turn until one answers.
//!
//! # Layout
//! - `head`: one borrowed pass over the body for model, stream and max_tokens.
//! - `upstream`: one attempt at one provider, in any dialect combination.
//! - `mocked`: the built-in mock provider's answers, served like a provider's.
//! - `send`: the request to a provider (credential, headers, bounds) and `AttemptError`.
//! - `client`: the pooled HTTP client that carries it, and the answer it gets.
//! - `relay`: streaming answers chunk by chunk, charged at the end or on a drop.
//! - `adapt`: what sits between upstream and client: usage taps and translation.
//! - `guarded`: guardrails on the answer (whole, or as a stream adapter).
//! - `usage`: the usage JSON of both dialects and the taps that follow streams.

pub mod adapt;
pub mod client;
pub mod guarded;
pub mod head;
pub mod mocked;
pub mod relay;
pub mod send;
pub mod upstream;
pub mod usage;

use crate::app::App;
use crate::config::ProviderKind;
use crate::gateway::auth;
use crate::gateway::breaker::Outcome;
use crate::gateway::gate::{Ask, Caller};
use crate::gateway::guard::policy::Plan;
use crate::gateway::guard::verdict::{Direction, Verdict};
use crate::gateway::mock;
use crate::gateway::routing::{self, Route};
use crate::gateway::trail::Trail;
use crate::http::error::{ApiError, Dialect};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use head::Inbound;
use send::AttemptError;
use std::sync::Arc;
use std::time::Duration;

/// The response header that says a request went upstream with a lower `max_tokens` (its
/// value) because the budget room left afforded no more.
pub const LOWERED_MAX_TOKENS: &str = "x-tollgate-max-tokens";

/// Pause before trying the same provider config again after a transient failure.
const SAME_ROUTE_RETRY_PAUSE_MS: u64 = 100;

/// The address a request's connection came from (set by `http::conn`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Headers only the Bedrock front door sets (a client's own are dropped): the Bedrock
/// model id the client named and the betas its body carried, for a Bedrock upstream.
pub const FRONT_DOOR_MODEL: &str = "x-tollgate-bedrock-model";
pub const FRONT_DOOR_BETA: &str = "x-tollgate-bedrock-beta";

fn without_front_door(mut headers: HeaderMap) -> HeaderMap {
    headers.remove(FRONT_DOOR_MODEL);
    headers.remove(FRONT_DOOR_BETA);
    headers
}

pub async fn anthropic_messages(
    State(app): State<Arc<App>>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(
        app,
        Dialect::Anthropic,
        client,
        without_front_door(headers),
        body,
    )
    .await
}

pub async fn openai_chat(
    State(app): State<Arc<App>>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(
        app,
        Dialect::OpenAi,
        client,
        without_front_door(headers),
        body,
    )
    .await
}

/// A request from the Bedrock front door (`http::bedrock`), already an Anthropic one.
pub async fn serve_front_door(
    app: Arc<App>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(app, Dialect::Anthropic, client, headers, body).await
}

async fn serve(
    app: Arc<App>,
    dialect: Dialect,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let crate::app::NewRequest {
        id: request_id,
        seq,
        time_ms,
    } = app.next_request();
    let trail = Trail::new(
        app.gate.charger.charges.clone(),
        Arc::clone(&app.clock),
        app.log.as_ref(),
        app.gate.admission.node(),
        (&request_id, time_ms),
        dialect.name(),
        &headers,
        client.map(|Extension(c)| c.0.ip()),
    );
    let mut response = match run(&app, dialect, headers, body, &request_id, seq, &trail).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(request_id = %request_id, status = e.status_code().as_u16(), error = %e, cause = e.internal_cause(), "request refused");
            trail.refused(e.status_code().as_u16(), e.error_type());
            e.into_response_in(dialect)
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-tollgate-request-id", v);
    }
    app.counters.count_response(response.status().as_u16());
    response
}

/// Maps a body that could not be read (too large, broken connection) to an error.
pub fn body_error(app: &App, rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::BodyTooLarge {
            limit_bytes: app.config.limits.max_body_bytes,
        }
    } else {
        ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
    }
}

/// Authenticates the caller from its headers.
fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    Ok(app.gate.authenticate(auth::presented_secret(headers)?)?)
}

async fn run(
    app: &Arc<App>,
    dialect: Dialect,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    request_id: &str,
    seq: u64,
    trail: &Arc<Trail>,
) -> Result<Response, ApiError> {
    // Who is asking comes first: an unauthenticated caller learns nothing about its body.
    let caller = caller(app, &headers)?;
    trail.caller(&caller.key, caller.log_content);
    let body = body.map_err(|r| body_error(app, r))?;
    let mut head = head::parse(&body, dialect, false)?;
    // Guardrails: the request is checked (and redacted) before anything is kept of it.
    let (plan, body, verdict) = guarded_input(app, &caller, body, &mut head).await;
    trail.guardrails(&verdict, Direction::Input);
    if verdict.blocks() {
        trail.asks(&head.model, head.stream, &Bytes::new());
        return Err(ApiError::BadRequest(verdict.block_message()));
    }
    trail.asks(&head.model, head.stream, &body);
    // A stream holds its place among the streams until its body ends.
    let stream_slot = match head.stream {
        true => Some(Arc::clone(&app.streams).try_acquire_owned().map_err(|_| {
            app.counters
                .streams_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            ApiError::Unavailable
        })?),
        false => None,
    };
    let routes = app.gate.admit(&caller, &head.model, seq)?;
    let inbound = Inbound {
        dialect,
        head,
        body,
        headers,
        request_id: request_id.to_owned(),
        seq,
        guard: plan.output().then_some(plan),
    };

    let max_attempts = app.config.limits.max_attempts.max(1);
    let mut refused = vec![false; routes.len()];
    let mut last_error: Option<ApiError> = None;
    let mut attempts = 0;
    // Each route once in weight order, then again while attempts remain (a single
    // provider config gets retried), skipping routes refused for budget or price.
    for (i, route) in routes.iter().enumerate().chain(routes.iter().enumerate()) {
        if attempts >= max_attempts {
            break;
        }
        if refused[i] {
            continue;
        }
        let pc = &route.config.id;
        let attempt = match app.breakers.attempt(pc, app.now_ms()) {
            Ok(attempt) => attempt,
            Err(until_ms) => {
                // Routed around: another attempt goes to the next provider config.
                refused[i] = true;
                let retry_after_s = until_ms.saturating_sub(app.now_ms()).div_ceil(1000).max(1);
                if last_error.is_none() {
                    last_error = Some(ApiError::ProvidersUnavailable {
                        message: format!(
                            "provider {} (provider config {pc}) is failing and its circuit breaker is open, and no other provider config of this key could take the request; retry after {retry_after_s}s",
                            route.provider.name
                        ),
                        retry_after_s,
                    });
                }
                continue;
            }
        };
        let ask = Ask {
            request_id,
            body_bytes: inbound.body.len() as u64,
            max_tokens: inbound.head.max_tokens,
            choices: inbound.head.choices,
            min_output: inbound.head.min_output(),
            metered: metered_stream(app, &inbound, route),
        };
        let mut billing = match app.gate.reserve(&caller, route, ask).await {
            Ok(b) => b,
            Err(e) => {
                attempt.finish(Outcome::Neutral, app.now_ms());
                refused[i] = true;
                last_error = Some(e.into());
                continue;
            }
        };
        billing.trail = Some(Arc::clone(trail));
        if attempts >= routes.len() {
            tokio::time::sleep(Duration::from_millis(SAME_ROUTE_RETRY_PAUSE_MS)).await;
        }
        attempts += 1;
        // The room left affords less than the request asked: it goes with a lower cap.
        let capped;
        let sent = match billing.cap {
            Some(cap) => {
                tracing::info!(
                    request_id,
                    max_tokens = cap,
                    "max_tokens lowered to what the budget room left affords"
                );
                capped = match inbound.capped(cap) {
                    Ok(c) => c,
                    Err(e) => {
                        attempt.finish(Outcome::Neutral, app.now_ms());
                        return Err(e);
                    }
                };
                &capped
            }
            None => &inbound,
        };
        let lowered = billing.cap;
        let result = upstream::attempt(app, sent, route, billing).await;
        let outcome = match &result {
            Ok(_) | Err(AttemptError::Fatal(ApiError::UpstreamRejected { .. })) => {
                Outcome::Answered
            }
            Err(AttemptError::Retry(ApiError::UpstreamRateLimited(..))) => Outcome::Neutral,
            // A provider that fails after its headers (a broken or unreadable body, a
            // timeout while reading it) is failing too.
            Err(AttemptError::Retry(_))
            | Err(AttemptError::Fatal(
                ApiError::UpstreamFailed(_) | ApiError::UpstreamTimeout(_),
            )) => Outcome::Failed,
            Err(AttemptError::Fatal(_)) => Outcome::Neutral,
        };
        attempt.finish(outcome, app.now_ms());
        match result {
            Ok(mut response) => {
                // Tell the client what it was served with.
                if let Some(cap) = lowered {
                    response
                        .headers_mut()
                        .insert(LOWERED_MAX_TOKENS, HeaderValue::from(cap));
                }
                return Ok(match stream_slot {
                    Some(slot) => holding(response, slot),
                    None => response,
                });
            }
            Err(AttemptError::Fatal(e)) => return Err(e),
            Err(AttemptError::Retry(e)) => {
                tracing::warn!(request_id, provider = %route.provider.name, error = %e, "attempt failed; trying the next");
                app.counters
                    .upstream_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| ApiError::Internal("no route was tried".into())))
}

/// The caller's guardrails and its body checked by those that look at requests: the body
/// to send (redacted, with `head` moved to match) and what was found (a block sends
/// nothing).
async fn guarded_input(
    app: &App,
    caller: &Caller,
    body: Bytes,
    head: &mut head::RequestHead,
) -> (Plan, Bytes, Verdict) {
    let plan = app.guards.plan(&app.state().read(), &caller.key, None);
    if !plan.input() {
        return (plan, body, Verdict::default());
    }
    let mut checked = app.guards.check_input(&plan, &body).await;
    let body = match checked.redacted.take() {
        // Only content strings changed (never the model's): the head moves with them.
        Some(redacted) if !checked.verdict.blocks() => {
            head.moved(|at| checked.moved(at));
            Bytes::from(redacted)
        }
        _ => body,
    };
    (plan, body, checked.verdict)
}

/// `response` with `slot` kept until its body has been sent (or the client went away).
fn holding(response: Response, slot: tokio::sync::OwnedSemaphorePermit) -> Response {
    response.map(|body| {
        let held = futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
            let _ = &slot;
            chunk
        });
        axum::body::Body::from_stream(held)
    })
}

/// Whether a request is a stream from a provider (relayed or translated), whose relay
/// meters the output and can end it as a length stop. The built-in mock answers with a
/// usage known in advance and is not metered.
fn metered_stream(app: &App, inbound: &Inbound, route: &Route) -> bool {
    app.config.limits.stream_reserve_tokens > 0
        && inbound.head.stream
        && route.provider.kind != ProviderKind::Mock
}

/// `POST /anthropic/v1/messages/count_tokens`: answered by the key's first route.
pub async fn count_tokens(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        // Authenticate first: an unknown caller learns nothing about body parsing.
        let caller = caller(&app, &headers)?;
        let body = body.map_err(|r| body_error(&app, r))?;
        let mut head = head::parse(&body, Dialect::Anthropic, true)?;
        // Counting tokens sends the prompt to the provider too.
        let (_, body, verdict) = guarded_input(&app, &caller, body, &mut head).await;
        if verdict.blocks() {
            return Err(ApiError::BadRequest(verdict.block_message()));
        }
        let routes = routing::resolve(
            &caller.key,
            &app.gate.providers,
            &head.model,
            0,
            &app.gate.patterns,
        )?;
        let route = routes
            .first()
            .ok_or_else(|| ApiError::Internal("resolve gave no route".into()))?;
        match route.provider.kind {
            ProviderKind::Anthropic => {
                let h = send::anthropic_headers(route, &headers);
                let body = head.with_model(&body, &route.upstream_model);
                let resp = match send::send_to(
                    &app,
                    route,
                    route.provider.count_tokens_url.as_ref(),
                    h,
                    body,
                )
                .await
                {
                    Ok(r) => r,
                    Err(AttemptError::Retry(e) | AttemptError::Fatal(e)) => return Err(e),
                };
                let bytes = send::read_bounded(resp, send::MAX_UPSTREAM_BODY_BYTES)
                    .await
                    .map_err(|_| ApiError::UpstreamFailed("count_tokens answer failed".into()))?;
                Ok(([("content-type", "application/json")], bytes).into_response())
            }
            ProviderKind::Mock | ProviderKind::Openai | ProviderKind::Bedrock => {
                // No tokenizer here: the mock's rule (about four bytes a token) is an
                // honest estimate for OpenAI-compatible providers and Bedrock too.
                let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
                })?;
                Ok((
                    [("content-type", "application/json")],
                    mock::count_tokens_json(&value),
                )
                    .into_response())
            }
        }
    }
    .await;
    result.unwrap_or_else(|e: ApiError| e.into_response_in(Dialect::Anthropic))
}

/// `GET /v1/models`: the models a key may name, in a shape both SDKs accept.
pub async fn models(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let key = match caller(&app, &headers) {
        Ok(caller) => caller.key,
        Err(e) => {
            let dialect = if headers.contains_key("anthropic-version") {
                Dialect::Anthropic
            } else {
                Dialect::OpenAi
            };
            return e.into_response_in(dialect);
        }
    };
    let mut names: Vec<String> = Vec::new();
    for config in &key.provider_configs {
        names.extend(config.aliases.keys().cloned());
        names.extend(
            config
                .allowed_models
                .iter()
                .filter(|m| !m.starts_with(routing::REGEX_PREFIX))
                .cloned(),
        );
    }
    names.sort();
    names.dedup();
    let data: Vec<serde_json::Value> = names
        .iter()
        .map(|id| {
            serde_json::json!({
                "id": id, "type": "model", "object": "model", "display_name": id,
                "created_at": "1970-01-01T00:00:00Z", "created": 0, "owned_by": "tollgate",
            })
        })
        .collect();
    axum::Json(serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": names.first(),
        "last_id": names.last(),
    }))
    .into_response()
}
