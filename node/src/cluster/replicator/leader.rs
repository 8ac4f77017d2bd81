//! Running a leader operation on the leader: here if this node leads, else forwarded to
//! the leader it knows of, trying again through leader changes within a deadline, each
//! attempt bounded so a dead leader costs one attempt, not the whole deadline.

use super::{RaftReplicator, NO_LEADER_PAUSE_MS};
use crate::cluster::ops::{run_op, LeaderOp, LeaderReply};
use crate::cluster::transport::{PeerRequest, PeerTransport, TransportError};
use crate::governance::replicator::ReplicateError;
use std::time::Duration;
use tollgate_raft::codec;
use tollgate_raft::typ::NodeId;

impl<T: PeerTransport> RaftReplicator<T> {
    /// Runs `op` on the leader: here if this node leads, else forwarded to the leader
    /// this node knows of, trying again through leader changes, all within `deadline`.
    pub async fn on_leader<Op: LeaderOp>(
        &self,
        op: Op,
        deadline: Duration,
    ) -> Result<Op::Output, ReplicateError> {
        self.on_leader_once(op, deadline, deadline)
            .await
            .map(|(output, _)| output)
    }

    /// `on_leader`, each forward to the leader bounded by `attempt` (a dead leader costs
    /// that, not the whole deadline), and whether an earlier attempt's fate is unknown
    /// (it reached a leader, which may have applied it before failing to answer).
    pub(super) async fn on_leader_once<Op: LeaderOp>(
        &self,
        op: Op,
        deadline: Duration,
        attempt: Duration,
    ) -> Result<(Op::Output, bool), ReplicateError> {
        let until = tokio::time::Instant::now() + deadline;
        let mut last = String::from("no leader");
        let mut doubtful = false;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ReplicateError::Cluster(format!(
                    "{last} (gave up after {} ms)",
                    deadline.as_millis()
                )));
            }
            // Here, the leader's own log holds the entry: waiting the whole deadline for it
            // rather than proposing it again.
            let local = tokio::time::timeout(left, run_op(&op, &self.raft, &self.yielding))
                .await
                .unwrap_or_else(|_| LeaderReply::Failed("no quorum answered in time".into()));
            let mut reached = true;
            let reply = match local {
                LeaderReply::NotLeader {
                    leader: Some((id, node)),
                } if id != self.node_id() => {
                    let addr = node.raft_addr.parse().map_err(|_| {
                        ReplicateError::Cluster(format!("leader {id} has an invalid raft address"))
                    })?;
                    let left = until.saturating_duration_since(tokio::time::Instant::now());
                    let (reply, sent) = self.forward(&op, id, addr, left.min(attempt)).await;
                    reached = sent;
                    reply
                }
                other => other,
            };
            match reply {
                LeaderReply::Done(output) => return Ok((output, doubtful)),
                LeaderReply::NotLeader { .. } => last = "no leader".into(),
                LeaderReply::Failed(m) => {
                    doubtful |= reached;
                    last = m;
                }
                LeaderReply::Refused(m) => return Err(ReplicateError::Refused(m)),
            }
            tokio::time::sleep(Duration::from_millis(NO_LEADER_PAUSE_MS)).await;
        }
    }

    pub(super) async fn forward<Op: LeaderOp>(
        &self,
        op: &Op,
        id: NodeId,
        addr: std::net::SocketAddr,
        deadline: Duration,
    ) -> (LeaderReply<Op::Output>, bool) {
        let body = match codec::encode(op) {
            Ok(b) => b,
            Err(e) => return (LeaderReply::Failed(e.to_string()), false),
        };
        let request = PeerRequest {
            kind: Op::KIND,
            body,
        };
        match self.transport.call(addr, request, deadline).await {
            Ok(r) => (
                codec::decode(&r.body).unwrap_or_else(|e| {
                    LeaderReply::Failed(format!("unreadable answer from the leader: {e}"))
                }),
                true,
            ),
            // Not connected: the leader never saw it.
            Err(e @ TransportError::Connect { .. }) => (
                LeaderReply::Failed(format!("forward to leader {id} failed: {e}")),
                false,
            ),
            Err(e) => (
                LeaderReply::Failed(format!("forward to leader {id} failed: {e}")),
                true,
            ),
        }
    }
}
