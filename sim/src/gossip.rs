//! Gossip under simulation. chitchat itself cannot run here deterministically: it picks
//! peers from a `HashSet` (std seeds its hasher from the OS) and shuffles with rand's
//! thread generator, neither of which can be seeded from outside. So each node runs the
//! production `Gossip` facade in its simulated mode, and this task does between nodes
//! what chitchat does, deterministically, over the simulated network (UDP, like
//! chitchat): every round (the production interval, 100 ms) the node sends everything
//! it knows to every other node; what it receives is merged, the newest heartbeat
//! winning, so news travels transitively. A node generation is live to a listener while
//! its heartbeat is at most `DEAD_AFTER_MS` old. Partitions, loss and delay are
//! turmoil's; a crash loses what the process knew. Each round the view is built by the
//! production `build_view_from` and read by the production `RateLimiter`.

use crate::net::host;
use crate::world;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tollgate_node::cluster::gossip::{build_view_from, Gossip, NodeValues};
use tollgate_raft::codec;
use turmoil::net::UdpSocket;

pub const GOSSIP_PORT: u16 = 7001;
/// The production `[gossip] interval_ms`.
const ROUND: Duration = Duration::from_millis(100);
/// A node generation not heard of for this long is dead to a listener.
const DEAD_AFTER_MS: u64 = 1_000;
/// chitchat's largest message.
const MAX_DATAGRAM: usize = 65_507;

/// One node generation's state as known somewhere.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Known {
    /// When its node last wrote it (simulated ms).
    heartbeat: u64,
    values: BTreeMap<String, String>,
}

type Knowledge = BTreeMap<(u64, u64), Known>;

/// Gossips for node `me` (generation `generation`) with nodes `1..=nodes` until the host
/// is crashed.
pub async fn run(me: u64, generation: u64, nodes: u64, gossip: Arc<Gossip>) -> std::io::Result<()> {
    let socket = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], GOSSIP_PORT))).await?;
    let mut known = Knowledge::new();
    let mut round = tokio::time::interval(ROUND);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            biased;
            _ = round.tick() => {
                let now = world::now().as_millis() as u64;
                known.insert(
                    (me, generation),
                    Known { heartbeat: now, values: gossip.own_values() },
                );
                if let Ok(message) = codec::encode(&known) {
                    for peer in (1..=nodes).filter(|p| *p != me) {
                        let to = SocketAddr::new(turmoil::lookup(host(peer)), GOSSIP_PORT);
                        // Lost like a datagram when the peer is down or cut off.
                        let _ = socket.send_to(&message, to).await;
                    }
                }
                gossip.set_view(view(me, generation, &known, now));
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((len, _)) = received else { continue };
                let Ok(theirs) = codec::decode::<Knowledge>(&buf[..len]) else { continue };
                for (id, k) in theirs {
                    if id == (me, generation) {
                        continue;
                    }
                    if known.get(&id).is_none_or(|mine| mine.heartbeat < k.heartbeat) {
                        known.insert(id, k);
                    }
                }
            }
        }
    }
}

fn view(
    me: u64,
    generation: u64,
    known: &Knowledge,
    now: u64,
) -> tollgate_node::cluster::gossip::View {
    build_view_from(known.iter().map(|((node, gen), k)| {
        let is_me = (*node, *gen) == (me, generation);
        NodeValues {
            node_id: *node,
            generation: *gen,
            gossip_addr: SocketAddr::from(([10, 0, 0, *node as u8], GOSSIP_PORT)),
            live: is_me || now.saturating_sub(k.heartbeat) <= DEAD_AFTER_MS,
            is_me,
            values: k
                .values
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }))
}
