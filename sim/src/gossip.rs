//! Gossip under simulation. chitchat itself cannot run here deterministically: it picks
//! peers from a `HashSet` (std seeds its hasher from the OS) and shuffles with rand's
//! thread generator, neither of which can be seeded from outside. So each node runs the
//! production `Gossip` facade in its simulated mode, and this module does what chitchat
//! does between nodes, deterministically: every round (the production interval, 100 ms)
//! each node hears, from every node whose link to it is up, everything that node knows
//! (so news travels transitively, one hop a round), newest heartbeat winning. A node
//! generation is live to a listener while its heartbeat is at most `DEAD_AFTER_ROUNDS`
//! old. The views are then built by the production `build_view_from`, and the
//! production `RateLimiter` reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use tollgate_node::gossip::{build_view_from, Gossip, NodeValues};

/// Rounds without news after which a node generation is dead to a listener (1 s).
const DEAD_AFTER_ROUNDS: u64 = 10;

/// One node generation's state as known somewhere.
#[derive(Clone)]
struct Known {
    heartbeat: u64,
    values: BTreeMap<String, String>,
}

/// What every listener knows: listener id → (node id, generation) → state.
#[derive(Default)]
pub struct Board {
    knowledge: BTreeMap<u64, BTreeMap<(u64, u64), Known>>,
    round: u64,
}

/// A running node's gossip facade and its generation.
pub struct Speaker {
    pub node: u64,
    pub generation: u64,
    pub gossip: Arc<Gossip>,
}

impl Board {
    /// A node restarted: its new process knows nothing yet.
    pub fn forget(&mut self, node: u64) {
        self.knowledge.remove(&node);
    }

    /// One round: `cut` holds the directed links (from, to) that deliver nothing.
    pub fn round(&mut self, speakers: &[Speaker], cut: &BTreeSet<(u64, u64)>) {
        self.round += 1;
        let round = self.round;
        for s in speakers {
            self.knowledge.entry(s.node).or_default().insert(
                (s.node, s.generation),
                Known {
                    heartbeat: round,
                    values: s.gossip.own_values(),
                },
            );
        }
        // One hop a round: everyone hears from the state before the round.
        let before = self.knowledge.clone();
        for to in speakers {
            for from in speakers {
                if from.node == to.node || cut.contains(&(from.node, to.node)) {
                    continue;
                }
                let Some(theirs) = before.get(&from.node) else {
                    continue;
                };
                let mine = self.knowledge.entry(to.node).or_default();
                for (id, known) in theirs {
                    let newer = mine.get(id).is_none_or(|k| k.heartbeat < known.heartbeat);
                    if newer {
                        mine.insert(*id, known.clone());
                    }
                }
            }
        }
        for s in speakers {
            let Some(known) = self.knowledge.get(&s.node) else {
                continue;
            };
            let addr = SocketAddr::from(([10, 0, 0, s.node as u8], 7000));
            let nodes = known.iter().map(|((node, generation), k)| {
                let is_me = (*node, *generation) == (s.node, s.generation);
                NodeValues {
                    node_id: *node,
                    generation: *generation,
                    gossip_addr: addr,
                    live: is_me || round - k.heartbeat <= DEAD_AFTER_ROUNDS,
                    is_me,
                    values: k
                        .values
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect(),
                }
            });
            s.gossip.set_view(build_view_from(nodes));
        }
    }
}
