//! What gossip shows of a balanced cluster (`GET /api/v1/cluster`'s `gossip` part), and
//! a gossip peer run by the test itself with the production gossip code.

use crate::*;
use anyhow::{bail, Result};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The `gossip` part of `GET /api/v1/cluster` on `node`.
pub async fn gossip_view(cluster: &Balanced, node: u16) -> Result<Value> {
    Ok(cluster.admin(node, "GET", "/api/v1/cluster", None).await?["gossip"].clone())
}

/// (node id, generation, live, state) of every member in a gossip view.
pub fn members(view: &Value) -> Vec<(u64, u64, bool, String)> {
    view["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["node_id"].as_u64().unwrap_or(0),
                        n["generation"].as_u64().unwrap_or(0),
                        n["live"].as_bool().unwrap_or(false),
                        n["state"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until every node sees the three nodes live and ready.
pub async fn all_live_and_ready(cluster: &Balanced, secs: u64) -> Result<()> {
    let ok = eventually(secs, || async {
        for node in NODES {
            let Ok(view) = gossip_view(cluster, node).await else {
                return false;
            };
            let ready: Vec<u64> = members(&view)
                .into_iter()
                .filter(|(_, _, live, state)| *live && state == "ready")
                .map(|(id, ..)| id)
                .collect();
            if ready != [1, 2, 3] {
                return false;
            }
        }
        true
    })
    .await;
    if !ok {
        let mut views = Vec::new();
        for node in NODES {
            views.push(gossip_view(cluster, node).await.unwrap_or_default());
        }
        bail!("the nodes do not all see each other live and ready: {views:?}");
    }
    Ok(())
}

/// The provider configs with an open (or half-open) breaker in `node`'s view.
pub async fn open_breakers(cluster: &Balanced, node: u16) -> Vec<(String, u64)> {
    gossip_view(cluster, node)
        .await
        .ok()
        .and_then(|v| v["open_breakers"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|b| {
            (
                b["provider_config"].as_str().unwrap_or("").to_owned(),
                b["reported_by"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A gossip peer run by the test with the production gossip code over QUIC, with the
/// certificates in `certs`.
pub async fn quic_gossiper(
    node_id: u64,
    certs: &Path,
    seeds: Vec<SocketAddr>,
) -> Result<Arc<tollgate_node::cluster::gossip::Gossip>> {
    use tollgate_node::cluster::transport::{NodeIdentity, QuicConfig, QuicTransport, Router};
    let identity = NodeIdentity::load_dir(certs)?;
    // Only gossip: the router refuses every other kind.
    let router = Router::new();
    let transport = QuicTransport::bind(
        QuicConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
        &identity,
        Arc::clone(&router),
    )?;
    let addr = transport.local_addr()?;
    let gossip = tollgate_node::cluster::gossip::Gossip::start(
        tollgate_node::cluster::gossip::GossipOptions {
            node_id,
            gossip_addr: addr,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            seeds,
            config: tollgate_node::config::GossipConfig::default(),
            protocol: tollgate_proto::peer::ProtocolRange::BUILD,
        },
        Arc::new(transport),
        move |inbox| router.add(&[tollgate_proto::peer::KIND_GOSSIP], Arc::new(inbox)),
    )
    .await?;
    Ok(gossip)
}
