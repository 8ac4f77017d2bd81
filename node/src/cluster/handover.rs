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

use crate::cluster::drain::Drain;
use crate::cluster::gossip::keys::NodeState;
use crate::cluster::gossip::Gossip;
use crate::cluster::transport::{PeerRequest, PeerTransport};
use openraft::RaftMetrics;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::peer::KIND_ELECT;
use tollgate_raft::typ::{NodeId, Raft, TollgateNode};

/// How long a leader operation waits at a yielding leader for the new one.
pub const YIELD_WAIT: Duration = Duration::from_secs(1);
/// How long the leader waits for the successor to have its whole log.
const CATCH_UP_WAIT: Duration = Duration::from_millis(500);
/// Deadline of the `KIND_ELECT` call.
const ELECT_DEADLINE: Duration = Duration::from_millis(500);
/// How long the leader waits for the successor to win.
const WIN_WAIT: Duration = Duration::from_secs(1);
/// How often the node checks whether it leads (it may win an election during the drain:
/// it votes and campaigns like any voter).
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// Beyond the leader lease, how long a new leader waits before handing over.
const LEASE_MARGIN: Duration = Duration::from_millis(50);
/// After a failed attempt: the pause before the next, and how long its successor is
/// passed over (another voter gets the next attempt, if there is one).
const RETRY_AFTER: Duration = Duration::from_millis(500);
const PASS_OVER: Duration = Duration::from_secs(2);

/// Set while this node hands leadership over: leader operations wait for the successor.
/// Also counts the leader operations running here, so the hand-over can wait until the
/// last entry they append is in the log. (Both sides store one atomic, then load the
/// other: only sequentially consistent ordering makes one of them see the other's store.)
#[derive(Default)]
pub struct Yielding {
    on: AtomicBool,
    active: AtomicUsize,
    /// Wakes operations waiting at a yield when it ends.
    ended: tokio::sync::Notify,
}

/// A leader operation running here (see `Yielding::enter`).
pub struct Active<'a>(&'a Yielding);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Yielding {
    pub fn is_set(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// Counts a leader operation about to run here; `None` while yielding. (Counted
    /// first, checked after: a hand-over that sets the flag then sees the count at zero
    /// knows no operation can still start.)
    pub fn enter(&self) -> Option<Active<'_>> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let active = Active(self);
        (!self.is_set()).then_some(active)
    }

    /// Resolves once this node does not yield (at once if it does not).
    pub async fn ended(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            // Registered before the check, so a yield ending in between still wakes it.
            ended.as_mut().enable();
            if !self.is_set() {
                return;
            }
            ended.await;
        }
    }

    fn set(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            self.ended.notify_waiters();
        }
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0
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

/// Nodes whose newest generation gossip shows draining or dead.
fn unavailable(gossip: &Gossip) -> Vec<NodeId> {
    gossip
        .view()
        .newest()
        .filter(|m| !m.live || m.state == Some(NodeState::Draining))
        .map(|m| m.node_id)
        .collect()
}

/// Runs for the node's life: notes when this node became leader, and once the drain
/// starts, hands leadership over whenever this node leads. Not before its own vote is
/// older than the leader lease (`election_timeout_max`): until then it would refuse the
/// successor's vote itself.
pub async fn hand_over_at_drain<T: PeerTransport>(
    raft: Raft,
    transport: Arc<T>,
    gossip: Arc<Gossip>,
    drain: Arc<Drain>,
    yielding: Arc<Yielding>,
) {
    let lease = Duration::from_millis(raft.config().election_timeout_max) + LEASE_MARGIN;
    // The term this node leads in, and since when.
    let mut leading: Option<(u64, tokio::time::Instant)> = None;
    // The successor of the last failed attempt, and when it failed.
    let mut failed: Option<(NodeId, tokio::time::Instant)> = None;
    loop {
        let m = raft.metrics().borrow().clone();
        if m.state == openraft::ServerState::Shutdown {
            return;
        }
        if m.current_leader == Some(m.id) {
            if leading.is_none_or(|(term, _)| term != m.current_term) {
                leading = Some((m.current_term, tokio::time::Instant::now()));
            }
        } else {
            leading = None;
        }
        let settled = leading.is_some_and(|(_, since)| since.elapsed() >= lease);
        if drain.is_draining() && settled {
            let mut passed_over = unavailable(&gossip);
            passed_over.extend(
                failed
                    .filter(|(_, at)| at.elapsed() < PASS_OVER)
                    .map(|(id, _)| id),
            );
            if let Some((to, node)) = pick_successor(&m, &passed_over) {
                let started = tokio::time::Instant::now();
                yielding.set(true);
                let handed = hand_over(&raft, &*transport, &yielding, to, &node).await;
                yielding.set(false);
                match handed {
                    Ok(()) => tracing::info!(
                        to,
                        took_ms = started.elapsed().as_millis() as u64,
                        "leadership handed over"
                    ),
                    Err(e) => {
                        tracing::warn!(to, error = %e, "leadership hand-over failed; trying again");
                        if let HandOverError::Successor(_) = e {
                            failed = Some((to, tokio::time::Instant::now()));
                        }
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
            } else {
                tracing::debug!("draining leader has no follower to hand over to");
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

/// Why a hand-over attempt failed: this leader was busy, or the successor did not
/// take over (it is passed over for a while).
#[derive(Debug, thiserror::Error)]
enum HandOverError {
    #[error("leader operations still running")]
    Busy,
    #[error("{0}")]
    Successor(String),
}

async fn hand_over<T: PeerTransport>(
    raft: &Raft,
    transport: &T,
    yielding: &Yielding,
    to: NodeId,
    node: &TollgateNode,
) -> Result<(), HandOverError> {
    // No new operation starts here now; those running append their entries first (a
    // successor one entry short would lose the vote).
    let until = tokio::time::Instant::now() + CATCH_UP_WAIT;
    while !yielding.idle() {
        if tokio::time::Instant::now() >= until {
            // One (a membership change, say) could still append after the successor
            // caught up, and the leader would then refuse its vote.
            return Err(HandOverError::Busy);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Let the successor receive all there is.
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
        .map_err(|e| HandOverError::Successor(format!("successor {to} not caught up: {e}")))?;
    let addr = node.raft_addr.parse().map_err(|_| {
        HandOverError::Successor(format!("invalid raft address {}", node.raft_addr))
    })?;
    let request = PeerRequest {
        kind: KIND_ELECT,
        body: Vec::new(),
    };
    transport
        .call(addr, request, ELECT_DEADLINE)
        .await
        .map_err(|e| HandOverError::Successor(e.to_string()))?;
    raft.wait(Some(WIN_WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != m.id),
            "another node leads",
        )
        .await
        .map_err(|e| HandOverError::Successor(format!("no other leader: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};
    use std::collections::{BTreeMap, BTreeSet};

    fn log_id(index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(1, 1), index))
    }

    /// Node 1 leads voters 1-3 (and learner 4); `matched` is each follower's replication.
    fn metrics(matched: &[(NodeId, u64)]) -> RaftMetrics<NodeId, TollgateNode> {
        let node = |id: NodeId| TollgateNode {
            raft_addr: format!("127.0.0.1:{}", 9000 + id),
            http_addr: String::new(),
        };
        let nodes: BTreeMap<NodeId, TollgateNode> = (1..=4).map(|id| (id, node(id))).collect();
        let membership = Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes);
        let mut m = RaftMetrics::new_initial(1);
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m.replication = Some(matched.iter().map(|(id, i)| (*id, log_id(*i))).collect());
        m
    }

    #[test]
    fn the_successor_is_the_furthest_replicated_available_voter() {
        let m = metrics(&[(2, 10), (3, 12), (4, 20)]);
        // The learner is further, but only a voter can lead.
        assert_eq!(pick_successor(&m, &[]).map(|(id, _)| id), Some(3));
        // Draining or dead in gossip: not chosen.
        assert_eq!(pick_successor(&m, &[3]).map(|(id, _)| id), Some(2));
        assert_eq!(pick_successor(&m, &[2, 3]), None);
        // A tie goes to the smallest id.
        let m = metrics(&[(2, 12), (3, 12)]);
        assert_eq!(pick_successor(&m, &[]).map(|(id, _)| id), Some(2));
        // Not leading (no replication figures): nobody.
        let mut m = metrics(&[(2, 12)]);
        m.replication = None;
        assert_eq!(pick_successor(&m, &[]), None);
    }
}
