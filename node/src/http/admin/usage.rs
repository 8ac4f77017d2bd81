//! Admin routes for model prices and usage totals.

use super::budgets::budget_view;
use super::dto::*;
use super::reply::{created, no_content, not_found, ok, propose, AdminResult, PageQuery};
use super::validate::{self, parse_body};
use crate::app::App;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_proto::*;

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

pub async fn list_prices(
    State(app): State<Arc<App>>,
    Query(page): Query<PageQuery>,
) -> AdminResult {
    let state = app.state().read();
    Ok(page.answer(
        state.prices().iter().map(|(model, p)| (model.as_str(), p)),
        |p| Some(price_view(p)),
    )?)
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
