//! Admin routes for budgets (with their spend and leases) and rate limits.

use super::dto::*;
use super::reply::{created, no_content, not_found, ok, propose, AdminResult, PageQuery};
use super::validate::{self, field, parse_body};
use crate::app::App;
use crate::gateway::auth;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_proto::*;
use tollgate_raft::rfc3339;

// ------------------------------------------------------------------ budgets

/// A budget with its live figures in the current window: spend, the nodes' escrow
/// leases (`reserved_usd` is their sum; both replicated, so the same on every node), and
/// what requests in flight on this node hold (`held_here_usd`).
pub fn budget_view(app: &App, state: &tollgate_raft::GovState, id: &BudgetId) -> Option<Value> {
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
        json!(app.gate.admission.held_here(id).to_string()),
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

pub async fn list_budgets(
    State(app): State<Arc<App>>,
    Query(page): Query<PageQuery>,
) -> AdminResult {
    let state = app.state().read();
    Ok(
        page.answer(state.budgets().keys().map(|id| (id.as_str(), id)), |id| {
            budget_view(&app, &state, id)
        })?,
    )
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

pub async fn list_rate_limits(
    State(app): State<Arc<App>>,
    Query(page): Query<PageQuery>,
) -> AdminResult {
    let state = app.state().read();
    Ok(page.answer(
        state.rate_limits().iter().map(|(id, r)| (id.as_str(), r)),
        |r| Some(rate_limit_view(r)),
    )?)
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
