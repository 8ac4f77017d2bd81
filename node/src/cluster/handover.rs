//! Leadership hand-over when the leader drains. openraft 0.9 has no leader transfer, so
//! the draining leader:
//! 1. stops starting leader operations (`Yielding`: a write or read index that reaches
//!    it waits, at most `YIELD_WAIT`, for the new leader and is then sent there, so no
//!    caller fails);
//! 2. waits until a caught-up follower (`pick_successor`: a voter that gossip does not
//!    show draining or dead) has every entry of its log;
//! 3. asks it (`KIND_ELECT`) to start an election at once.
//!
//! The follower's vote request carries a log as long as the leader's, and the leader
//! grants it: openraft's leader lease only protects a vote younger than
//! `election_timeout_max`, and a leader's own vote is dated from its election. With the
//! leader's vote, a follower of a 3-node cluster has its quorum at once; the leader
//! learns of the newer term from the vote itself and follows. (With more voters the
//! other followers still hold the old leader's lease and refuse; the vote then fails,
//! the old leader steps down on the newer term, and a normal election follows.)
//!
//! The request path never waits for any of this: admission uses local leases and
//! charges queue in the outbox.

use super::rpc::KIND_ELECT;
use crate::drain::Drain;
use crate::gossip::keys::NodeState;
use crate::gossip::Gossip;
use crate::transport::{PeerRequest, PeerTransport};
use openraft::RaftMetrics;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_raft::typ::{NodeId, Raft, TollgateNode};

/// How long a leader operation waits at a yielding leader for the new one.
pub const YIELD_WAIT: Duration = Duration::from_secs(1);
/// How long the leader waits for the successor to have its whole log.
const CATCH_UP_WAIT: Duration = Duration::from_millis(500);
/// Deadline of the `KIND_ELECT` call.
const ELECT_DEADLINE: Duration = Duration::from_millis(500);
/// How long the leader waits for the successor to win.
const WIN_WAIT: Duration = Duration::from_secs(1);
/// While draining, how often the node checks whether it leads (it may win an election
/// during the drain: it votes and campaigns like any voter).
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Set while this node hands leadership over: leader operations wait for the successor.
#[derive(Default)]
pub struct Yielding(AtomicBool);

impl Yielding {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }
}

/// Waits (at most `YIELD_WAIT`) until another node leads, and names it.
pub async fn successor(raft: &Raft) -> Option<(NodeId, TollgateNode)> {
    let _ = raft
        .wait(Some(YIELD_WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != m.id),
            "a successor leads",
        )
        .await;
    let m = raft.metrics().borrow().clone();
    let leader = m.current_leader.filter(|l| *l != m.id)?;
    let node = m.membership_config.membership().get_node(&leader)?.clone();
    Some((leader, node))
}

/// The voter to hand leadership to: not this node, not draining or dead in gossip, the
/// furthest replicated (ties: the smallest id). `None` unless this node leads.
pub fn pick_successor(
    m: &RaftMetrics<NodeId, TollgateNode>,
    unavailable: &[NodeId],
) -> Option<(NodeId, TollgateNode)> {
    let replication = m.replication.as_ref()?;
    let membership = m.membership_config.membership();
    membership
        .voter_ids()
        .filter(|id| *id != m.id && !unavailable.contains(id))
        .filter_map(|id| {
            let matched = replication
                .get(&id)
                .copied()
                .flatten()
                .map_or(0, |l| l.index);
            let node = membership.get_node(&id)?.clone();
            Some((matched, std::cmp::Reverse(id), node))
        })
        .max_by_key(|(matched, id, _)| (*matched, *id))
        .map(|(_, std::cmp::Reverse(id), node)| (id, node))
}

/// Nodes gossip shows draining or dead.
fn unavailable(gossip: &Gossip) -> Vec<NodeId> {
    gossip
        .view()
        .members
        .iter()
        .filter(|m| !m.live || m.state == Some(NodeState::Draining))
        .map(|m| m.node_id)
        .collect()
}

/// Runs for the node's life: once the drain starts, hands leadership over whenever this
/// node leads.
pub async fn hand_over_at_drain<T: PeerTransport>(
    raft: Raft,
    transport: Arc<T>,
    gossip: Arc<Gossip>,
    drain: Arc<Drain>,
    yielding: Arc<Yielding>,
) {
    drain.started().await;
    loop {
        let m = raft.metrics().borrow().clone();
        if m.current_leader == Some(m.id) {
            if let Some((to, node)) = pick_successor(&m, &unavailable(&gossip)) {
                let started = tokio::time::Instant::now();
                yielding.set(true);
                let handed = hand_over(&raft, &*transport, to, &node).await;
                yielding.set(false);
                match handed {
                    Ok(()) => tracing::info!(
                        to,
                        took_ms = started.elapsed().as_millis() as u64,
                        "leadership handed over"
                    ),
                    Err(e) => {
                        tracing::warn!(to, error = %e, "leadership hand-over failed; trying again")
                    }
                }
            } else {
                tracing::debug!("draining leader has no follower to hand over to");
            }
        }
        if m.state == openraft::ServerState::Shutdown {
            return;
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

async fn hand_over<T: PeerTransport>(
    raft: &Raft,
    transport: &T,
    to: NodeId,
    node: &TollgateNode,
) -> Result<(), String> {
    // No new entry starts here now; let the successor receive all there is.
    raft.wait(Some(CATCH_UP_WAIT))
        .metrics(
            |m| {
                let last = m.last_log_index.unwrap_or(0);
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&to).copied().flatten())
                    .is_some_and(|l| l.index >= last)
            },
            "successor caught up",
        )
        .await
        .map_err(|e| format!("successor {to} not caught up: {e}"))?;
    let addr = node
        .raft_addr
        .parse()
        .map_err(|_| format!("invalid raft address {}", node.raft_addr))?;
    let request = PeerRequest {
        kind: KIND_ELECT,
        body: Vec::new(),
    };
    transport
        .call(addr, request, ELECT_DEADLINE)
        .await
        .map_err(|e| e.to_string())?;
    raft.wait(Some(WIN_WAIT))
        .metrics(|m| m.current_leader != Some(m.id), "leadership moved")
        .await
        .map_err(|e| format!("still leading: {e}"))?;
    Ok(())
}
