//! One function per admin route.

use super::dto::*;
use super::validate::{self, field, parse_body};
use super::{propose, AdminResult};
use crate::app::App;
use crate::auth;
use crate::error::ApiError;
use crate::replicator::ReplicateError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_proto::*;
use tollgate_raft::rfc3339;

fn created(v: Value) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn ok(v: Value) -> Response {
    Json(v).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::NotFound(format!("{what} {id} not found"))
}

fn list(items: Vec<Value>) -> Response {
    ok(json!({ "data": items }))
}

// ---------------------------------------------------------------- customers

pub async fn create_customer(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: NameBody = parse_body(&body)?;
    let c = Customer {
        id: auth::generate_id(CustomerId::PREFIX).as_str().into(),
        name: validate::name("name", &b.name)?,
        created_at_ms: app.now_ms(),
    };
    propose(&app, Command::CreateCustomer(c.clone())).await?;
    Ok(created(customer_view(&c)))
}

pub async fn list_customers(State(app): State<Arc<App>>) -> AdminResult {
    Ok(list(
        app.state()
            .read()
            .customers()
            .values()
            .map(customer_view)
            .collect(),
    ))
}

pub async fn get_customer(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let state = app.state().read();
    let c = state
        .customers()
        .get(&CustomerId(id.clone()))
        .ok_or_else(|| not_found("customer", &id))?;
    Ok(ok(customer_view(c)))
}

pub async fn patch_customer(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> AdminResult {
    let b: NameBody = parse_body(&body)?;
    propose(
        &app,
        Command::UpdateCustomer {
            id: CustomerId(id.clone()),
            name: validate::name("name", &b.name)?,
        },
    )
    .await?;
    get_customer(State(app), Path(id)).await
}

pub async fn delete_customer(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    propose(&app, Command::DeleteCustomer { id: CustomerId(id) }).await?;
    Ok(no_content())
}

// -------------------------------------------------------------------- teams

pub async fn create_team(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: CreateTeam = parse_body(&body)?;
    let t = Team {
        id: auth::generate_id(TeamId::PREFIX).as_str().into(),
        name: validate::name("name", &b.name)?,
        customer_id: b.customer_id.map(CustomerId),
        created_at_ms: app.now_ms(),
    };
    propose(&app, Command::CreateTeam(t.clone())).await?;
    Ok(created(team_view(&t)))
}

pub async fn list_teams(State(app): State<Arc<App>>) -> AdminResult {
    Ok(list(
        app.state().read().teams().values().map(team_view).collect(),
    ))
}

pub async fn get_team(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let state = app.state().read();
    let t = state
        .teams()
        .get(&TeamId(id.clone()))
        .ok_or_else(|| not_found("team", &id))?;
    Ok(ok(team_view(t)))
}

pub async fn patch_team(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> AdminResult {
    let b: PatchTeam = parse_body(&body)?;
    let name = b
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    let customer_id = b.customer_id.map(|c| c.map(CustomerId));
    propose(
        &app,
        Command::UpdateTeam {
            id: TeamId(id.clone()),
            name,
            customer_id,
        },
    )
    .await?;
    get_team(State(app), Path(id)).await
}

pub async fn delete_team(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    propose(&app, Command::DeleteTeam { id: TeamId(id) }).await?;
    Ok(no_content())
}

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

pub async fn list_keys(State(app): State<Arc<App>>) -> AdminResult {
    Ok(list(
        app.state().read().keys().values().map(key_view).collect(),
    ))
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

// ------------------------------------------------------------------ budgets

/// A budget with its live figures in the current window: spend, the nodes' escrow
/// leases (`reserved_usd` is their sum; both replicated, so the same on every node), and
/// what requests in flight on this node hold (`held_here_usd`).
fn budget_view(app: &App, state: &tollgate_raft::GovState, id: &BudgetId) -> Option<Value> {
    let status = state.budget_status(id, app.now_ms())?;
    let mut m = budget_base_view(&status.budget);
    m.insert("spent_usd".into(), json!(status.spent.to_string()));
    let window = status.window.start_ms;
    let leases: Vec<Value> = state
        .escrow()
        .of_budget(id)
        .filter(|(_, l)| l.window_start_ms == window)
        .map(|(node, l)| json!({"node": node, "outstanding_usd": l.outstanding.to_string()}))
        .collect();
    m.insert(
        "reserved_usd".into(),
        json!(state.escrow().outstanding(id, window).to_string()),
    );
    m.insert("leases".into(), Value::Array(leases));
    m.insert(
        "held_here_usd".into(),
        json!(app.admission.held_here(id).to_string()),
    );
    m.insert(
        "window_start".into(),
        json!(rfc3339(status.window.start_ms)),
    );
    m.insert("window_end".into(), json!(rfc3339(status.window.end_ms)));
    Some(Value::Object(m))
}

pub async fn create_budget(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: CreateBudget = parse_body(&body)?;
    let budget = Budget {
        id: auth::generate_id(BudgetId::PREFIX).as_str().into(),
        owner: validate::owner(&b.owner)?,
        limit: validate::usd("max_limit_usd", &b.max_limit_usd)?,
        reset: validate::duration("reset_duration", &b.reset_duration)?,
        calendar_aligned: b.calendar_aligned,
        created_at_ms: app.now_ms(),
    };
    propose(&app, Command::CreateBudget(budget.clone())).await?;
    let state = app.state().read();
    Ok(created(
        budget_view(&app, &state, &budget.id).unwrap_or(Value::Null),
    ))
}

pub async fn list_budgets(State(app): State<Arc<App>>) -> AdminResult {
    let state = app.state().read();
    Ok(list(
        state
            .budgets()
            .keys()
            .filter_map(|id| budget_view(&app, &state, id))
            .collect(),
    ))
}

pub async fn get_budget(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let state = app.state().read();
    Ok(ok(
        budget_view(&app, &state, &BudgetId(id.clone())).ok_or_else(|| not_found("budget", &id))?
    ))
}

pub async fn patch_budget(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    body: Bytes,
) -> AdminResult {
    let b: PatchBudget = parse_body(&body)?;
    let command = Command::UpdateBudget {
        id: BudgetId(id.clone()),
        limit: b
            .max_limit_usd
            .as_deref()
            .map(|v| validate::usd("max_limit_usd", v))
            .transpose()?,
        reset: b
            .reset_duration
            .as_deref()
            .map(|v| validate::duration("reset_duration", v))
            .transpose()?,
        calendar_aligned: b.calendar_aligned,
        at_ms: app.now_ms(),
    };
    propose(&app, command).await?;
    get_budget(State(app), Path(id)).await
}

pub async fn delete_budget(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    propose(&app, Command::DeleteBudget { id: BudgetId(id) }).await?;
    Ok(no_content())
}

// -------------------------------------------------------------- rate limits

pub async fn create_rate_limit(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: CreateRateLimit = parse_body(&body)?;
    let request_window = b
        .request_window
        .as_deref()
        .map(|w| validate::duration("request_window", w))
        .transpose()?;
    let token_window = b
        .token_window
        .as_deref()
        .map(|w| validate::duration("token_window", w))
        .transpose()?;
    if b.request_max.is_some() != request_window.is_some() {
        return Err(field(
            "request_window",
            "request_max and request_window go together",
        )
        .into());
    }
    if b.token_max.is_some() != token_window.is_some() {
        return Err(field("token_window", "token_max and token_window go together").into());
    }
    if b.request_max.is_none() && b.token_max.is_none() {
        return Err(field(
            "request_max",
            "set request_max/request_window, token_max/token_window, or both",
        )
        .into());
    }
    let limit = RateLimit {
        id: auth::generate_id(RateLimitId::PREFIX).as_str().into(),
        owner: validate::owner(&b.owner)?,
        request_max: b.request_max,
        request_window,
        token_max: b.token_max,
        token_window,
        created_at_ms: app.now_ms(),
    };
    propose(&app, Command::CreateRateLimit(limit.clone())).await?;
    Ok(created(rate_limit_view(&limit)))
}

pub async fn list_rate_limits(State(app): State<Arc<App>>) -> AdminResult {
    Ok(list(
        app.state()
            .read()
            .rate_limits()
            .values()
            .map(rate_limit_view)
            .collect(),
    ))
}

pub async fn get_rate_limit(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let state = app.state().read();
    let r = state
        .rate_limits()
        .get(&RateLimitId(id.clone()))
        .ok_or_else(|| not_found("rate limit", &id))?;
    Ok(ok(rate_limit_view(r)))
}

pub async fn delete_rate_limit(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    propose(
        &app,
        Command::DeleteRateLimit {
            id: RateLimitId(id),
        },
    )
    .await?;
    Ok(no_content())
}

// ------------------------------------------------------------------- prices

pub async fn set_price(State(app): State<Arc<App>>, body: Bytes) -> AdminResult {
    let b: CreatePrice = parse_body(&body)?;
    let input = validate::usd("input_per_mtok_usd", &b.input_per_mtok_usd)?;
    // Without explicit cache prices, Anthropic's ratios apply: writes 1.25x, reads 0.1x.
    let price = Price {
        model: validate::name("model", &b.model)?,
        input_per_mtok: input,
        output_per_mtok: validate::usd("output_per_mtok_usd", &b.output_per_mtok_usd)?,
        cache_write_per_mtok: match &b.cache_write_per_mtok_usd {
            Some(v) => validate::usd("cache_write_per_mtok_usd", v)?,
            None => Usd(input.0.saturating_mul(5) / 4),
        },
        cache_read_per_mtok: match &b.cache_read_per_mtok_usd {
            Some(v) => validate::usd("cache_read_per_mtok_usd", v)?,
            None => Usd(input.0 / 10),
        },
    };
    propose(&app, Command::SetPrice(price.clone())).await?;
    Ok(created(price_view(&price)))
}

pub async fn list_prices(State(app): State<Arc<App>>) -> AdminResult {
    Ok(list(
        app.state()
            .read()
            .prices()
            .values()
            .map(price_view)
            .collect(),
    ))
}

pub async fn delete_price(State(app): State<Arc<App>>, Path(model): Path<String>) -> AdminResult {
    propose(&app, Command::DeletePrice { model }).await?;
    Ok(no_content())
}

// -------------------------------------------------------------------- usage

fn totals_view(t: &UsageTotals) -> serde_json::Map<String, Value> {
    let v = json!({
        "requests": t.requests,
        "input_tokens": t.input_tokens,
        "output_tokens": t.output_tokens,
        "cache_creation_input_tokens": t.cache_creation_input_tokens,
        "cache_read_input_tokens": t.cache_read_input_tokens,
        "spent_usd": t.spent.to_string(),
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// `GET /api/v1/usage?virtual_key=ID` (or `team=`, `customer=`, `model=`): totals and the
/// owner's budgets in their current windows. Without a filter: totals per model.
pub async fn usage(
    State(app): State<Arc<App>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> AdminResult {
    let state = app.state().read();
    let (owner, totals) = if let Some(id) = q.get("virtual_key") {
        let id = KeyId(id.clone());
        if !state.keys().contains_key(&id) && state.usage_of_key(&id).requests == 0 {
            return Err(not_found("virtual key", id.as_str()).into());
        }
        (Some(Owner::VirtualKey(id.clone())), state.usage_of_key(&id))
    } else if let Some(id) = q.get("team") {
        let id = TeamId(id.clone());
        (Some(Owner::Team(id.clone())), state.usage_of_team(&id))
    } else if let Some(id) = q.get("customer") {
        let id = CustomerId(id.clone());
        (
            Some(Owner::Customer(id.clone())),
            state.usage_of_customer(&id),
        )
    } else if let Some(model) = q.get("model") {
        (None, state.usage_of_model(model))
    } else {
        let models: serde_json::Map<String, Value> = state
            .usage_by_model()
            .iter()
            .map(|(m, t)| (m.clone(), Value::Object(totals_view(t))))
            .collect();
        return Ok(ok(json!({ "models": models })));
    };
    let budgets: Vec<Value> = match &owner {
        Some(owner) => state
            .budgets()
            .values()
            .filter(|b| &b.owner == owner)
            .filter_map(|b| budget_view(&app, &state, &b.id))
            .collect(),
        None => Vec::new(),
    };
    let mut body = totals_view(&totals);
    body.insert("budgets".into(), Value::Array(budgets));
    Ok(ok(Value::Object(body)))
}

// ------------------------------------------------------------------ cluster

/// `GET /api/v1/cluster`: members, leader and term as this node sees them, and every
/// member's own replication figures (asked of each; one that does not answer is listed
/// with `"state": "unreachable"` and the error).
pub async fn cluster(State(app): State<Arc<App>>) -> AdminResult {
    let view = app.replicator.cluster_view();
    let reports = app.replicator.member_reports().await;
    let nodes: Vec<Value> = reports
        .into_iter()
        .map(|r| {
            let mut node = json!({
                "id": r.id,
                "raft_addr": r.raft_addr,
                "http_addr": r.http_addr,
                "voter": r.voter,
            });
            match r.status {
                Ok(s) => {
                    let state = if r.id == view.node_id && app.drain.is_draining() {
                        "draining"
                    } else if r.id == view.node_id
                        && !app.ready.load(std::sync::atomic::Ordering::Acquire)
                        && s.caught_up
                    {
                        // Caught up but not taking traffic: starting.
                        "not_ready"
                    } else if s.caught_up {
                        "ready"
                    } else {
                        "catching_up"
                    };
                    node["state"] = json!(state);
                    node["role"] = json!(s.role);
                    node["term"] = json!(s.term);
                    node["leader"] = json!(s.leader);
                    node["last_log_index"] = json!(s.last_log_index);
                    node["committed_index"] = json!(s.committed_index);
                    node["applied_index"] = json!(s.applied_index);
                    node["snapshot_index"] = json!(s.snapshot_index);
                    node["staleness_ms"] = json!(s.staleness_ms);
                    node["storage_bytes"] = json!(s.storage_bytes);
                    node["outbox_bytes"] = json!(s.outbox_bytes);
                    node["protocol"] = json!({"min": s.protocol.min, "max": s.protocol.max});
                }
                Err(e) => {
                    node["state"] = json!("unreachable");
                    node["error"] = json!(e);
                }
            }
            node
        })
        .collect();
    let (protocol_version, drained) = {
        let state = app.state().read();
        let drained: BTreeMap<String, String> = state
            .drained_at()
            .iter()
            .map(|(node, at)| (node.to_string(), rfc3339(*at)))
            .collect();
        (state.protocol_version(), drained)
    };
    Ok(ok(json!({
        "node_id": view.node_id,
        "leader": view.leader,
        "term": view.term,
        "voters": view.voters,
        // The protocol version the cluster writes; it rises once every member speaks
        // a newer one.
        "protocol_version": protocol_version,
        // When each node last finished a drain (recorded from protocol 2 on).
        "last_drained": drained,
        "nodes": nodes,
        "gossip": gossip_view(&app),
    })))
}

/// The gossip part of `GET /api/v1/cluster`: every node gossip knows (live or dead, with
/// state and version), the breakers open as this node sees them, and each rate limit's
/// use in its current window per node.
fn gossip_view(app: &App) -> Value {
    let view = app.gossip.view();
    let now = app.now_ms();
    let nodes: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "node_id": m.node_id,
                "generation": m.generation,
                "live": m.live,
                "state": m.state.map(|s| s.as_str()),
                "version": m.version,
                "http_addr": m.http_addr,
                "gossip_addr": m.gossip_addr.to_string(),
            })
        })
        .collect();
    let breakers: Vec<Value> = app
        .breakers
        .not_closed()
        .into_iter()
        .filter_map(|b| match b.event {
            crate::gossip::keys::BreakerEvent::Open { at_ms, until_ms } => Some(json!({
                "provider_config": b.provider_config,
                "state": if now < until_ms { "open" } else { "half_open" },
                "opened_at": rfc3339(at_ms),
                "open_until": rfc3339(until_ms),
                "reported_by": b.reported_by,
            })),
            crate::gossip::keys::BreakerEvent::Closed { .. } => None,
        })
        .collect();
    // Rate limits: this node's own slots and every peer's claims, in the latest window
    // any node reported for each limit.
    type Windows = BTreeMap<u64, Vec<Value>>;
    let (me, _) = app.gossip.me();
    let mut limits: BTreeMap<(String, &'static str), Windows> = BTreeMap::new();
    let entry = |live: bool, node: u64, c: crate::gossip::keys::RateClaim| {
        (
            c.window_start_ms,
            json!({"node_id": node, "live": live, "count": c.count, "claim": c.claim}),
        )
    };
    for (id, dimension, claim) in app.limiter.own_claims() {
        let (start, v) = entry(true, me, claim);
        limits
            .entry((id.as_str().to_owned(), dimension.as_str()))
            .or_default()
            .entry(start)
            .or_default()
            .push(v);
    }
    for ((id, dimension), peers) in &view.rates {
        for peer in peers {
            let (start, v) = entry(peer.live, peer.node_id, peer.claim);
            limits
                .entry((id.clone(), dimension.as_str()))
                .or_default()
                .entry(start)
                .or_default()
                .push(v);
        }
    }
    let rate_limits: Vec<Value> = limits
        .into_iter()
        .filter_map(|((id, dimension), windows)| {
            let (start, nodes) = windows.into_iter().next_back()?;
            let total: u64 = nodes.iter().filter_map(|n| n["count"].as_u64()).sum();
            Some(json!({
                "rate_limit": id,
                "dimension": dimension,
                "window_start": rfc3339(start),
                "total": total,
                "nodes": nodes,
            }))
        })
        .collect();
    json!({
        "enabled": app.gossip.clustered(),
        "live_nodes": view.members.iter().filter(|m| m.live).count(),
        "nodes": nodes,
        "open_breakers": breakers,
        "rate_limits": rate_limits,
    })
}

/// `DELETE /api/v1/cluster/nodes/{id}`: removes a voter from the cluster (run by the
/// leader, whichever node is asked). Stop the removed node afterwards.
/// `POST /api/v1/cluster/nodes/{id}/drain`: starts node `id`'s drain (this node's, or
/// another's over the peer transport) and answers 202 at once; the node stops taking
/// traffic, finishes what is in flight, hands leadership over if it leads, and exits.
pub async fn drain_node(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("node id `{id}` is not a number")))?;
    let view = app.replicator.cluster_view();
    if id == view.node_id {
        if app.drain.start() {
            tracing::info!("drain requested through the admin API");
        }
    } else {
        if !view.members.iter().any(|(m, _, _)| *m == id) {
            return Err(not_found("cluster node", &id.to_string()).into());
        }
        match app.replicator.drain_member(id).await {
            Ok(()) => {}
            Err(ReplicateError::Refused(m)) => return Err(ApiError::Conflict(m).into()),
            Err(e) => return Err(ApiError::ClusterUnavailable(e.to_string()).into()),
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "node_id": id, "state": "draining" })),
    )
        .into_response())
}

pub async fn remove_node(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("node id `{id}` is not a number")))?;
    let view = app.replicator.cluster_view();
    if !view.members.iter().any(|(m, _, _)| *m == id) {
        return Err(not_found("cluster node", &id.to_string()).into());
    }
    match app.replicator.remove_node(id).await {
        Ok(voters) => Ok(ok(json!({ "removed": id, "voters": voters }))),
        Err(ReplicateError::Refused(m)) => Err(ApiError::Conflict(m).into()),
        Err(e) => Err(ApiError::ClusterUnavailable(e.to_string()).into()),
    }
}
