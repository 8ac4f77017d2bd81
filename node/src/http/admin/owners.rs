//! Admin routes for customers and teams.

use super::dto::*;
use super::reply::{created, no_content, not_found, ok, propose, AdminResult, PageQuery};
use super::validate::{self, parse_body};
use crate::app::App;
use crate::gateway::auth;
use axum::extract::{Path, Query, State};
use bytes::Bytes;
use std::sync::Arc;
use tollgate_proto::*;

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

pub async fn list_customers(
    State(app): State<Arc<App>>,
    Query(page): Query<PageQuery>,
) -> AdminResult {
    let state = app.state().read();
    Ok(page.answer(
        state.customers().iter().map(|(id, c)| (id.as_str(), c)),
        |c| Some(customer_view(c)),
    )?)
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

pub async fn list_teams(State(app): State<Arc<App>>, Query(page): Query<PageQuery>) -> AdminResult {
    let state = app.state().read();
    Ok(
        page.answer(state.teams().iter().map(|(id, t)| (id.as_str(), t)), |t| {
            Some(team_view(t))
        })?,
    )
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
