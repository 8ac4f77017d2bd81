//! What gossip shows: the members with their typed values (`View`), changes between two
//! views, and how a view is built from each node's gossiped values.

use super::keys::{self, BreakerEvent, Dimension, NodeState, RateClaim};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// One node as gossip knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: u64,
    /// Changes at every start of the node (its start time in ms).
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// The failure detector's verdict (this node is always live to itself).
    pub live: bool,
    pub state: Option<NodeState>,
    pub version: Option<String>,
    pub http_addr: Option<String>,
}

/// Another node's claim on one rate limit dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClaim {
    pub node_id: u64,
    pub generation: u64,
    pub live: bool,
    pub claim: RateClaim,
}

/// What gossip says, as of the last refresh.
#[derive(Debug, Default)]
pub struct View {
    /// Every node known, this one included, live and dead, by (id, generation).
    pub members: Vec<Member>,
    /// Other nodes' breaker events by provider config id.
    pub breakers: BTreeMap<String, Vec<(u64, BreakerEvent)>>,
    /// Other nodes' rate-limit claims by (rate limit id, dimension).
    pub rates: BTreeMap<(String, Dimension), Vec<PeerClaim>>,
}

impl View {
    /// Each node's newest generation (a restarted node's earlier one stays listed, dead,
    /// for a while). `members` is sorted by (node id, generation).
    pub fn newest(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                self.members
                    .get(i + 1)
                    .is_none_or(|next| next.node_id != m.node_id)
            })
            .map(|(_, m)| m)
    }

    /// Live nodes, this one included (at least 1).
    pub fn live_count(&self) -> usize {
        self.members.iter().filter(|m| m.live).count().max(1)
    }

    /// The live node count (at least 1) and `node_id`'s place among the live nodes by
    /// id (0 when it is not among them).
    pub fn live_rank(&self, node_id: u64) -> (usize, usize) {
        let mut live: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.live)
            .map(|m| m.node_id)
            .collect();
        live.sort_unstable();
        live.dedup();
        let rank = live.iter().position(|&id| id == node_id).unwrap_or(0);
        (live.len().max(1), rank)
    }

    pub fn peer_claims(&self, limit_id: &str, dimension: Dimension) -> &[PeerClaim] {
        self.rates
            .get(&(limit_id.to_owned(), dimension))
            .map_or(&[], Vec::as_slice)
    }
}

/// A change in membership, for the rest of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChange {
    /// A node (or a new generation of one) is live.
    Joined(Member),
    /// A live node's `node.state` changed.
    StateChanged(Member),
    /// The failure detector declared a node dead.
    Dead(Member),
    /// A dead node came back (same generation: it was only unreachable).
    Revived(Member),
    /// A dead node's state was forgotten.
    Left { node_id: u64, generation: u64 },
}

/// One node's gossiped values, as a view is built from them.
pub struct NodeValues<'a> {
    pub node_id: u64,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// Live by the failure detector (or this node itself).
    pub live: bool,
    pub is_me: bool,
    pub values: Vec<(&'a str, &'a str)>,
}

/// The view built from the nodes' gossiped values (chitchat's, or the simulator's).
pub fn build_view_from<'a>(nodes: impl Iterator<Item = NodeValues<'a>>) -> View {
    let mut view = View::default();
    for node in nodes {
        let get = |wanted: &str| {
            node.values
                .iter()
                .find(|(k, _)| *k == wanted)
                .map(|(_, v)| *v)
        };
        let node_id = node.node_id;
        view.members.push(Member {
            node_id,
            generation: node.generation,
            gossip_addr: node.gossip_addr,
            live: node.live,
            state: get(keys::NODE_STATE).and_then(NodeState::parse),
            version: get(keys::NODE_VERSION).map(str::to_owned),
            http_addr: get(keys::NODE_HTTP_ADDR).map(str::to_owned),
        });
        if node.is_me {
            continue;
        }
        for (key, value) in &node.values {
            if let Some(pc) = key.strip_prefix(keys::BREAKER_PREFIX) {
                if let Some(event) = BreakerEvent::decode(value) {
                    view.breakers
                        .entry(pc.to_owned())
                        .or_default()
                        .push((node_id, event));
                }
            } else if let Some((limit, dimension)) = keys::parse_rate_key(key) {
                if let Some(claim) = RateClaim::decode(value) {
                    view.rates
                        .entry((limit.to_owned(), dimension))
                        .or_default()
                        .push(PeerClaim {
                            node_id,
                            generation: node.generation,
                            live: node.live,
                            claim,
                        });
                }
            }
        }
    }
    view.members.sort_by_key(|m| (m.node_id, m.generation));
    view
}

/// The typed changes between two member lists; `ever_live` remembers which members
/// have been live before.
pub(super) fn diff(
    old: &[Member],
    new: &[Member],
    ever_live: &mut BTreeSet<(u64, u64)>,
) -> Vec<ClusterChange> {
    let key = |m: &Member| (m.node_id, m.generation);
    let old_by: BTreeMap<_, _> = old.iter().map(|m| (key(m), m)).collect();
    let new_by: BTreeMap<_, _> = new.iter().map(|m| (key(m), m)).collect();
    let mut changes = Vec::new();
    for (k, m) in &new_by {
        let first_time = m.live && ever_live.insert(*k);
        match old_by.get(k) {
            _ if first_time => changes.push(ClusterChange::Joined((*m).clone())),
            None => {}
            Some(before) if before.live && !m.live => {
                changes.push(ClusterChange::Dead((*m).clone()))
            }
            Some(before) if !before.live && m.live => {
                changes.push(ClusterChange::Revived((*m).clone()))
            }
            Some(before) if before.state != m.state && m.live => {
                changes.push(ClusterChange::StateChanged((*m).clone()))
            }
            Some(_) => {}
        }
    }
    for (node_id, generation) in old_by.keys() {
        if !new_by.contains_key(&(*node_id, *generation)) {
            ever_live.remove(&(*node_id, *generation));
            changes.push(ClusterChange::Left {
                node_id: *node_id,
                generation: *generation,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, live: bool, state: NodeState) -> Member {
        Member {
            node_id: id,
            generation: 1,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
            live,
            state: Some(state),
            version: None,
            http_addr: None,
        }
    }

    #[test]
    fn membership_changes_are_typed() {
        let before = vec![
            member(1, true, NodeState::Ready),
            member(2, true, NodeState::Ready),
            member(3, false, NodeState::Ready),
            member(4, true, NodeState::Ready),
        ];
        let after = vec![
            member(1, true, NodeState::Draining),
            member(2, false, NodeState::Ready),
            member(3, true, NodeState::Ready),
            member(5, true, NodeState::Joining),
        ];
        let mut ever_live: BTreeSet<(u64, u64)> = [1, 2, 3, 4].map(|id| (id, 1)).into();
        assert_eq!(
            diff(&before, &after, &mut ever_live),
            vec![
                ClusterChange::StateChanged(member(1, true, NodeState::Draining)),
                ClusterChange::Dead(member(2, false, NodeState::Ready)),
                ClusterChange::Revived(member(3, true, NodeState::Ready)),
                ClusterChange::Joined(member(5, true, NodeState::Joining)),
                ClusterChange::Left {
                    node_id: 4,
                    generation: 1
                },
            ]
        );
    }

    #[test]
    fn newest_takes_each_nodes_latest_generation() {
        let restarted = Member {
            generation: 2,
            ..member(1, true, NodeState::Ready)
        };
        let view = View {
            members: vec![
                member(1, false, NodeState::Draining),
                restarted.clone(),
                member(2, true, NodeState::Ready),
            ],
            ..View::default()
        };
        let newest: Vec<&Member> = view.newest().collect();
        assert_eq!(newest, vec![&restarted, &view.members[2]]);
    }
}
