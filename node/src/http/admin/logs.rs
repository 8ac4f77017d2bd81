//! The request log over the admin API: `GET /api/v1/logs` (search), `/api/v1/logs/{id}`
//! (one record and its captured bodies) and `/api/v1/stats` (totals). Each asks every
//! member over the peer transport and merges; a member that does not answer in time
//! makes the answer partial (`"partial": true`, `"missing_nodes"`), never failed.

use super::reply::{ok, AdminResult};
use crate::app::App;
use crate::governance::records::view::record_view;
use crate::governance::records::{peer, query, rfc3339};
use crate::http::error::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::peer::{KIND_LOGS, KIND_LOG_GET, KIND_STATS};
use tollgate_proto::records::{
    GroupBy, LogCursor, LogEntry, LogFilter, LogPage, StatsGroup, StatsQuery, Totals,
};
use tollgate_proto::RequestId;
use tollgate_raft::codec;

/// How long a member has to answer a log question. A query reads a bounded number of
/// entries (`query::SCAN_MAX`), well within this on any disk.
const MEMBER_DEADLINE: Duration = Duration::from_secs(5);

/// Records per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

pub type Params = Result<Query<Vec<(String, String)>>, QueryRejection>;

pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.into(),
        message: message.into(),
    }
}

pub fn params(params: Params, known: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(pairs) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut out = BTreeMap::new();
    for (name, value) in pairs {
        if name == "consistency" {
            continue;
        }
        if !known.contains(&name.as_str()) {
            return Err(bad(
                &name,
                format!("unknown query parameter; known: {}", known.join(", ")),
            ));
        }
        if out.insert(name.clone(), value).is_some() {
            return Err(bad(&name, "given more than once"));
        }
    }
    Ok(out)
}

pub fn time_param(p: &BTreeMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    p.get(name)
        .map(|v| {
            rfc3339::parse(v).ok_or_else(|| {
                bad(
                    name,
                    format!("must be an RFC 3339 time such as 2026-12-07T05:00:00Z, not {v:?}"),
                )
            })
        })
        .transpose()
}

fn text_param(p: &BTreeMap<String, String>, name: &str) -> Result<Option<String>, ApiError> {
    match p.get(name) {
        Some(v) if v.is_empty() => Err(bad(name, "must not be empty")),
        Some(v) if v.len() > 1024 => Err(bad(name, "must be at most 1024 bytes")),
        Some(v) => Ok(Some(v.clone())),
        None => Ok(None),
    }
}

/// A cursor as the API shows it: time, node and sequence in hex.
fn cursor_text(c: LogCursor) -> String {
    format!("{:x}-{:x}-{:x}", c.time_ms, c.node, c.seq)
}

fn parse_cursor(text: &str) -> Option<LogCursor> {
    let mut parts = text.split('-').map(|p| u64::from_str_radix(p, 16).ok());
    let cursor = LogCursor {
        time_ms: parts.next()??,
        node: parts.next()??,
        seq: parts.next()??,
    };
    parts.next().is_none().then_some(cursor)
}

/// Asks this node and every other member the same question; the answers decoded, and
/// the members that gave none.
pub async fn ask_all<T: DeserializeOwned + Send + 'static>(
    app: &Arc<App>,
    kind: u16,
    body: Vec<u8>,
) -> Result<(Vec<T>, Vec<u64>), ApiError> {
    let local = {
        let log = app.log.clone();
        let body = body.clone();
        tokio::task::spawn_blocking(move || peer::answer(log.as_deref(), kind, &body))
    };
    let others = app.replicator.ask_others(kind, body, MEMBER_DEADLINE);
    let (local, others) = tokio::join!(local, others);
    let local = local
        .map_err(|e| ApiError::Internal(format!("request log task: {e}")))?
        .map_err(|e| ApiError::Internal(format!("request log: {e}")))?;
    let mut answers = vec![codec::decode::<T>(&local)
        .map_err(|e| ApiError::Internal(format!("request log answer: {e}")))?];
    let mut missing = Vec::new();
    for (node, answer) in others {
        match answer
            .map_err(|e| e.to_string())
            .and_then(|b| codec::decode::<T>(&b).map_err(|e| e.to_string()))
        {
            Ok(a) => answers.push(a),
            Err(e) => {
                tracing::warn!(node, error = %e, "member did not answer a request log question");
                missing.push(node);
            }
        }
    }
    Ok((answers, missing))
}

fn partial(mut v: Value, missing: Vec<u64>) -> Value {
    v["partial"] = json!(!missing.is_empty());
    if !missing.is_empty() {
        v["missing_nodes"] = json!(missing);
    }
    v
}

/// `GET /api/v1/logs`.
pub async fn logs(State(app): State<Arc<App>>, q: Params) -> AdminResult {
    let p = params(
        q,
        &[
            "virtual_key",
            "user",
            "team",
            "customer",
            "model",
            "provider",
            "status",
            "session",
            "since",
            "until",
            "q",
            "limit",
            "cursor",
        ],
    )?;
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=query::PAGE_MAX).contains(&n) => n,
            _ => {
                return Err(bad(
                    "limit",
                    format!("must be a number from 1 to {}", query::PAGE_MAX),
                )
                .into())
            }
        },
    };
    let status = match p.get("status") {
        None => None,
        Some(v) => match v.parse::<u16>() {
            Ok(s) if (100..=599).contains(&s) || s == 0 => Some(s),
            _ => return Err(bad("status", "must be an HTTP status such as 200 or 402").into()),
        },
    };
    let before = match p.get("cursor") {
        None => None,
        Some(v) => Some(
            parse_cursor(v)
                .ok_or_else(|| bad("cursor", "must be the next_cursor of an earlier page"))?,
        ),
    };
    let filter = LogFilter {
        virtual_key: text_param(&p, "virtual_key")?,
        user: text_param(&p, "user")?,
        team: text_param(&p, "team")?,
        customer: text_param(&p, "customer")?,
        model: text_param(&p, "model")?,
        provider: text_param(&p, "provider")?,
        status,
        session: text_param(&p, "session")?,
        since_ms: time_param(&p, "since")?,
        until_ms: time_param(&p, "until")?,
        q: text_param(&p, "q")?,
        limit,
        before,
    };
    if let (Some(s), Some(u)) = (filter.since_ms, filter.until_ms) {
        if s >= u {
            return Err(bad("until", "must be after since").into());
        }
    }
    let body = codec::encode(&filter).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (pages, missing) = ask_all::<LogPage>(&app, KIND_LOGS, body).await?;
    let (records, next) = query::merge(pages, limit);
    let records: Vec<Value> = records.iter().map(record_view).collect();
    Ok(ok(partial(
        json!({ "records": records, "next_cursor": next.map(cursor_text) }),
        missing,
    )))
}

/// `GET /api/v1/logs/{request_id}`.
pub async fn log_entry(State(app): State<Arc<App>>, Path(id): Path<String>) -> AdminResult {
    if id.is_empty() || id.len() > 256 {
        return Err(bad("request_id", "must be 1 to 256 bytes").into());
    }
    let body =
        codec::encode(&RequestId(id.clone())).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (entries, missing) = ask_all::<Option<LogEntry>>(&app, KIND_LOG_GET, body).await?;
    let Some(entry) = entries.into_iter().flatten().next() else {
        let mut message = format!("request {id} not found in the request log");
        if !missing.is_empty() {
            message.push_str(&format!(" (nodes {missing:?} did not answer)"));
        }
        return Err(ApiError::NotFound(message).into());
    };
    let mut v = record_view(&entry.record);
    if let Some(content) = entry.content {
        v["request_body"] = json!(String::from_utf8_lossy(&content.request_body));
        v["response_body"] = json!(String::from_utf8_lossy(&content.response_body));
        v["content_truncated"] = json!(content.truncated);
    }
    Ok(ok(v))
}

/// `GET /api/v1/stats`.
pub async fn stats(State(app): State<Arc<App>>, q: Params) -> AdminResult {
    let p = params(q, &["group_by", "since", "until"])?;
    let group_by = match p.get("group_by") {
        None => GroupBy::VirtualKey,
        Some(v) => GroupBy::parse(v).ok_or_else(|| {
            bad(
                "group_by",
                "must be virtual_key, user, team, customer, model, provider or day",
            )
        })?,
    };
    let query = StatsQuery {
        group_by,
        since_ms: time_param(&p, "since")?,
        until_ms: time_param(&p, "until")?,
    };
    if let (Some(s), Some(u)) = (query.since_ms, query.until_ms) {
        if s >= u {
            return Err(bad("until", "must be after since").into());
        }
    }
    let body = codec::encode(&query).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (answers, missing) = ask_all::<Vec<StatsGroup>>(&app, KIND_STATS, body).await?;
    let mut groups: BTreeMap<String, Totals> = BTreeMap::new();
    for group in answers.into_iter().flatten() {
        groups.entry(group.key).or_default().merge(&group.totals);
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(key, t)| {
            json!({
                "key": key,
                "requests": t.requests,
                "errors": t.errors,
                "input_tokens": t.input_tokens,
                "output_tokens": t.output_tokens,
                "cache_read_tokens": t.cache_read_tokens,
                "cache_write_tokens": t.cache_write_tokens,
                "cost_usd": t.cost.to_string(),
                "p50_latency_ms": t.latency_quantile_ms(0.5),
                "p99_latency_ms": t.latency_quantile_ms(0.99),
            })
        })
        .collect();
    Ok(ok(partial(json!({ "groups": groups }), missing)))
}
