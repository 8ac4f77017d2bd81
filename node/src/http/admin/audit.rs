//! The audit trail over the admin API. Every admin call runs with who made it
//! (`CONTEXT`: the admin token's principal, the source address, the request id), and
//! `propose` wraps its writes in `Command::Audited`, so the event is in the Raft log
//! with the change. Failed authentication is proposed as `Command::AuthFailures`, at
//! most once a minute per address with the count since. `GET /api/v1/audit` lists the
//! events; `GET /api/v1/audit/verify` checks the audit chain and every node's request
//! log against the anchors replicated through Raft.

use super::actor::AUDIT_PROTOCOL;
use super::logs::{ask_all, bad, params, time_param, Params};
use super::reply::{ok, AdminResult};
use crate::app::App;
use crate::http::error::ApiError;
use axum::extract::State;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use tollgate_proto::audit::{Actor, Anchor, AuditEvent, AuditMeta};
use tollgate_proto::peer::KIND_LOG_VERIFY;
use tollgate_proto::records::ChainReport;
use tollgate_proto::Command;
use tollgate_raft::codec;

/// How often one address's failed logins are proposed, at most (the rest are counted
/// into the next): a flood cannot fill the log.
const AUTH_FAILURE_INTERVAL_MS: u64 = 60_000;

/// Addresses whose failures are tracked; past it, the oldest is forgotten.
const AUTH_FAILURE_ADDRESSES: usize = 1024;

/// Events per page when `limit` is not given, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Records a failed admin authentication from `source` (rate-limited; proposed off the
/// request's path).
pub fn auth_failed(app: &Arc<App>, source: Option<IpAddr>, request_id: &str) {
    if app.state().read().protocol_version() < AUDIT_PROTOCOL {
        return;
    }
    let now = app.now_ms();
    let count = {
        let mut seen = app
            .auth_failures
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.len() >= AUTH_FAILURE_ADDRESSES && !seen.contains_key(&source) {
            if let Some(oldest) = seen.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k) {
                seen.remove(&oldest);
            }
        }
        let entry = seen.entry(source).or_insert((0, 0));
        entry.1 += 1;
        if entry.0 != 0 && now.saturating_sub(entry.0) < AUTH_FAILURE_INTERVAL_MS {
            return;
        }
        let count = entry.1;
        *entry = (now, 0);
        count
    };
    let command = Command::AuthFailures {
        meta: AuditMeta {
            at_ms: now,
            actor: Actor {
                kind: "unauthenticated".into(),
                id: String::new(),
                name: String::new(),
            },
            source_ip: source.map(|ip| ip.to_string()),
            request_id: Some(request_id.to_owned()),
        },
        count,
    };
    let app = Arc::clone(app);
    tokio::spawn(async move {
        if let Err(e) = app.replicator.propose(command).await {
            tracing::warn!(error = %e, "failed admin logins not recorded in the audit trail");
        }
    });
}

fn event_view(e: &AuditEvent) -> Value {
    let parse = |v: &Option<String>| {
        v.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
            .unwrap_or(Value::Null)
    };
    json!({
        "seq": e.seq,
        "time": crate::governance::records::rfc3339::format(e.time_ms),
        "actor": {"kind": e.actor.kind, "id": e.actor.id, "name": e.actor.name},
        "action": e.action,
        "target": {"kind": e.target.kind, "id": e.target.id},
        "source_ip": e.source_ip,
        "request_id": e.request_id,
        "before": parse(&e.before),
        "after": parse(&e.after),
        "prev_hash": hex::encode(e.prev_hash),
        "hash": hex::encode(e.hash),
    })
}

/// `GET /api/v1/audit`: events newest first.
pub async fn events(State(app): State<Arc<App>>, q: Params) -> AdminResult {
    let p = params(q, &["since", "until", "action", "actor", "limit", "cursor"])?;
    let limit = match p.get("limit") {
        None => DEFAULT_LIMIT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad("limit", format!("must be a number from 1 to {MAX_LIMIT}")).into())
            }
        },
    };
    let before = match p.get("cursor") {
        None => u64::MAX,
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| bad("cursor", "must be the next_cursor of an earlier page"))?,
    };
    let since = time_param(&p, "since")?.unwrap_or(0);
    let until = time_param(&p, "until")?.unwrap_or(u64::MAX);
    let action = p.get("action");
    let actor = p.get("actor");
    let state = app.state().read();
    let mut page = Vec::new();
    let mut next = None;
    for e in state.audit().events().rev() {
        if e.seq >= before || e.time_ms < since || e.time_ms >= until {
            continue;
        }
        if action.is_some_and(|a| *a != e.action)
            || actor.is_some_and(|a| *a != e.actor.id && *a != e.actor.name)
        {
            continue;
        }
        if page.len() == limit {
            next = page.last().map(|v: &Value| v["seq"].to_string());
            break;
        }
        page.push(event_view(e));
    }
    Ok(ok(json!({ "events": page, "next_cursor": next })))
}

/// The audit chain as this node holds it: each event's hash recomputed, each linked to
/// the one before.
fn verify_audit(events: &[AuditEvent]) -> Value {
    let mut bad_at = None;
    let mut prev: Option<&AuditEvent> = None;
    for e in events {
        let linked = prev.is_none_or(|p| p.seq + 1 == e.seq && p.hash == e.prev_hash);
        let intact = tollgate_raft::audit::event_hash(&e.prev_hash, e) == e.hash;
        if !linked || !intact {
            bad_at = Some((
                e.seq,
                if intact {
                    "chain broken"
                } else {
                    "event does not match its hash"
                },
            ));
            break;
        }
        prev = Some(e);
    }
    json!({
        "chain": "audit",
        "events": events.len(),
        "first_seq": events.first().map(|e| e.seq),
        "last_seq": events.last().map(|e| e.seq),
        "head_hash": events.last().map(|e| hex::encode(e.hash)),
        "ok": bad_at.is_none(),
        "bad_seq": bad_at.map(|b| b.0),
        "reason": bad_at.map(|b| b.1),
    })
}

/// `GET /api/v1/audit/verify`.
pub async fn verify(State(app): State<Arc<App>>) -> AdminResult {
    let (events, anchors): (Vec<AuditEvent>, BTreeMap<u64, Vec<Anchor>>) = {
        let state = app.state().read();
        (
            state.audit().events().cloned().collect(),
            state.audit().anchors().clone(),
        )
    };
    let audit = verify_audit(&events);
    let body = codec::encode(&anchors).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (reports, missing) = ask_all::<Option<ChainReport>>(&app, KIND_LOG_VERIFY, body).await?;
    let nodes: Vec<Value> = reports
        .into_iter()
        .flatten()
        .map(|r| {
            json!({
                "chain": "request_log",
                "node": r.node,
                "records": r.records,
                "first_seq": r.first_seq,
                "last_seq": r.last_seq,
                "anchored_seq": r.anchored_seq,
                "ok": r.bad_seq.is_none(),
                "bad_seq": r.bad_seq,
                "reason": r.reason,
            })
        })
        .collect();
    let all_ok = audit["ok"] == true && missing.is_empty() && nodes.iter().all(|n| n["ok"] == true);
    Ok(ok(json!({
        "ok": all_ok,
        "audit": audit,
        "nodes": nodes,
        "missing_nodes": missing,
    })))
}
