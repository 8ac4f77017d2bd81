//! Admin routes for the cluster: members and their figures, gossip, drain, remove.

use super::reply::{not_found, ok, propose, AdminResult};
use crate::app::App;
use crate::governance::replicator::ReplicateError;
use crate::http::error::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_proto::{Command, MemberChange};
use tollgate_raft::rfc3339;

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
            crate::cluster::gossip::keys::BreakerEvent::Open { at_ms, until_ms } => Some(json!({
                "provider_config": b.provider_config,
                "state": if now < until_ms { "open" } else { "half_open" },
                "opened_at": rfc3339(at_ms),
                "open_until": rfc3339(until_ms),
                "reported_by": b.reported_by,
            })),
            crate::cluster::gossip::keys::BreakerEvent::Closed { .. } => None,
        })
        .collect();
    // Rate limits: this node's own slots and every peer's claims, in the latest window
    // any node reported for each limit.
    type Windows = BTreeMap<u64, Vec<Value>>;
    let (me, _) = app.gossip.me();
    let mut limits: BTreeMap<(String, &'static str), Windows> = BTreeMap::new();
    let entry = |live: bool, node: u64, c: crate::cluster::gossip::keys::RateClaim| {
        (
            c.window_start_ms,
            json!({"node_id": node, "live": live, "count": c.count, "claim": c.claim}),
        )
    };
    for (id, dimension, claim) in app.gate.limiter.own_claims() {
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
    audit_member_change(&app, id, MemberChange::DrainRequested).await;
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
        Ok(voters) => {
            audit_member_change(&app, id, MemberChange::Removed).await;
            Ok(ok(json!({ "removed": id, "voters": voters })))
        }
        Err(ReplicateError::Refused(m)) => Err(ApiError::Conflict(m).into()),
        Err(e) => Err(ApiError::ClusterUnavailable(e.to_string()).into()),
    }
}

/// Records an admin's change of the members in the audit trail, once the cluster speaks
/// the protocol that carries it. The change is made by then: a failure to record it is
/// logged, not answered.
async fn audit_member_change(app: &App, node: u64, change: MemberChange) {
    let command = Command::MemberChange { node, change };
    if app.state().read().protocol_version() < command.since_version() {
        return;
    }
    if let Err(e) = propose(app, command).await {
        tracing::error!(node, ?change, error = %e, "a member change is not in the audit trail");
    }
}
