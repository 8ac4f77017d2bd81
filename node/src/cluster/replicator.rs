//! `RaftReplicator`: proposes through Raft. On a follower the write is forwarded to the
//! leader over the peer transport; the caller never needs to know who leads.

use super::rpc::{write_locally, WriteReply, KIND_WRITE};
use crate::replicator::{
    ClusterView, ProposeFuture, ReplicaStatus, ReplicateError, Replicator, SharedState,
};
use crate::transport::{PeerRequest, PeerTransport};
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::{Command, Outcome};
use tollgate_raft::codec;
use tollgate_raft::typ::Raft;

/// Tries at a write before giving up: enough to ride out a leader change.
const MAX_WRITE_TRIES: usize = 20;
/// Pause between tries while no leader is known (about one election timeout).
const NO_LEADER_PAUSE_MS: u64 = 150;
/// Entries a replica may have logged but not applied and still call itself caught up.
const MAX_APPLY_LAG: u64 = 64;
/// Deadline of one forwarded write.
const FORWARD_DEADLINE: Duration = Duration::from_secs(5);

pub struct RaftReplicator<T> {
    raft: Raft,
    state: SharedState,
    transport: Arc<T>,
}

impl<T: PeerTransport> RaftReplicator<T> {
    pub fn new(raft: Raft, state: SharedState, transport: Arc<T>) -> Self {
        RaftReplicator {
            raft,
            state,
            transport,
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    async fn propose_inner(&self, command: Command) -> Result<Outcome, ReplicateError> {
        let mut last = String::from("no leader");
        for _ in 0..MAX_WRITE_TRIES {
            let reply = match write_locally(&self.raft, command.clone()).await {
                WriteReply::NotLeader {
                    leader: Some((id, node)),
                } => {
                    let addr = node.raft_addr.parse().map_err(|_| {
                        ReplicateError::Cluster(format!("leader {id} has an invalid raft address"))
                    })?;
                    let body = codec::encode(&command)
                        .map_err(|e| ReplicateError::Cluster(e.to_string()))?;
                    match self
                        .transport
                        .call(
                            addr,
                            PeerRequest {
                                kind: KIND_WRITE,
                                body,
                            },
                            FORWARD_DEADLINE,
                        )
                        .await
                    {
                        Ok(r) => codec::decode::<WriteReply>(&r.body).unwrap_or_else(|e| {
                            WriteReply::Failed(format!("unreadable answer from the leader: {e}"))
                        }),
                        Err(e) => WriteReply::Failed(format!("forward to leader {id} failed: {e}")),
                    }
                }
                other => other,
            };
            match reply {
                WriteReply::Applied(outcome) => return Ok(outcome),
                WriteReply::NotLeader { .. } => last = "no leader".into(),
                WriteReply::Failed(m) => last = m,
            }
            tokio::time::sleep(Duration::from_millis(NO_LEADER_PAUSE_MS)).await;
        }
        Err(ReplicateError::Cluster(last))
    }
}

impl<T: PeerTransport> Replicator for RaftReplicator<T> {
    fn propose(&self, command: Command) -> ProposeFuture<'_> {
        Box::pin(self.propose_inner(command))
    }

    fn state(&self) -> &SharedState {
        &self.state
    }

    fn status(&self) -> ReplicaStatus {
        let m = self.raft.metrics().borrow().clone();
        ReplicaStatus {
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            storage_bytes: 0,
        }
    }

    /// A known leader and at most `MAX_APPLY_LAG` logged entries not yet applied.
    fn caught_up(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let applied = m.last_applied.map_or(0, |l| l.index);
        let logged = m.last_log_index.unwrap_or(0);
        m.current_leader.is_some() && logged.saturating_sub(applied) <= MAX_APPLY_LAG
    }

    fn cluster_view(&self) -> ClusterView {
        let m = self.raft.metrics().borrow().clone();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.raft_addr.clone(), node.http_addr.clone()))
            .collect();
        ClusterView {
            node_id: m.id,
            leader: m.current_leader,
            term: m.current_term,
            members,
        }
    }
}
