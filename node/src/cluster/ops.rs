//! Leader operations: what only the leader can do (a forwarded write, a membership
//! change, a read index), run here if this node leads and otherwise answered with the
//! leader it knows of; also `Hello`, how a node introduces itself.

use super::handover::Yielding;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::ChangeMembers;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::future::Future;
use tollgate_proto::peer::{KIND_MEMBERSHIP, KIND_READ_INDEX, KIND_WRITE};
use tollgate_proto::{Command, Outcome};
// tokio's clock: the simulator's virtual time reaches it.
use tokio::time::Instant;
use tollgate_raft::typ::{NodeId, Raft, TollgateNode};

/// The answer to `KIND_HELLO`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: NodeId,
    pub node: TollgateNode,
}

/// A node's answer to a leader operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderReply<T> {
    Done(T),
    /// This node is not the leader (any more); the leader it knows of, if any.
    NotLeader {
        leader: Option<(NodeId, TollgateNode)>,
    },
    /// Failed for now (no quorum, leader changed): worth trying again.
    Failed(String),
    /// Refused for good (it does not apply): not worth trying again.
    Refused(String),
}

impl<T> LeaderReply<T> {
    /// The result, or the same answer for an operation of another output (to pass on).
    fn done<U>(self) -> Result<T, LeaderReply<U>> {
        match self {
            LeaderReply::Done(value) => Ok(value),
            LeaderReply::NotLeader { leader } => Err(LeaderReply::NotLeader { leader }),
            LeaderReply::Failed(m) => Err(LeaderReply::Failed(m)),
            LeaderReply::Refused(m) => Err(LeaderReply::Refused(m)),
        }
    }
}

/// The leader's answer to a forwarded write: the outcome and the log index it was
/// applied at (the caller waits until it has applied that far itself).
pub type WriteReply = LeaderReply<(Outcome, u64)>;

/// Something only the leader can do. A node that does not lead answers `NotLeader`, and
/// the caller tries again at the leader named there.
pub trait LeaderOp: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The RPC kind that carries it.
    const KIND: u16;
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// Runs it on this node; whatever appends to the log runs inside `gated(gate, ..)`,
    /// so a hand-over knows when the last entry is in.
    fn run(
        &self,
        raft: &Raft,
        gate: &Yielding,
    ) -> impl Future<Output = LeaderReply<Self::Output>> + Send;
}

/// Runs `work` as a leader operation counted by the hand-over gate; while this node
/// hands its leadership over, sends the caller to the successor instead.
async fn gated<T>(
    raft: &Raft,
    gate: &Yielding,
    work: impl Future<Output = LeaderReply<T>>,
) -> LeaderReply<T> {
    match gate.enter() {
        Some(_active) => work.await,
        None => LeaderReply::NotLeader {
            leader: super::handover::successor(raft).await,
        },
    }
}

/// Where a leader operation failed: `NotLeader` if the error names another leader.
fn not_leader_or_failed<T, E>(e: RaftError<NodeId, E>) -> LeaderReply<T>
where
    E: std::error::Error + openraft::TryAsRef<ForwardToLeader<NodeId, TollgateNode>>,
{
    match e.forward_to_leader() {
        Some(f) => LeaderReply::NotLeader {
            leader: f.leader_id.zip(f.leader_node.clone()),
        },
        None => LeaderReply::Failed(e.to_string()),
    }
}

impl LeaderOp for Command {
    const KIND: u16 = KIND_WRITE;
    type Output = (Outcome, u64);
    async fn run(&self, raft: &Raft, gate: &Yielding) -> WriteReply {
        gated(raft, gate, async {
            match raft.client_write(self.clone()).await {
                Ok(response) => LeaderReply::Done((response.data, response.log_id.index)),
                Err(e) => not_leader_or_failed(e),
            }
        })
        .await
    }
}

/// Asks the leader for its read index: the log index a replica must have applied before
/// a read on it is linearizable. The leader confirms with a quorum that it still leads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadIndex;

impl LeaderOp for ReadIndex {
    const KIND: u16 = KIND_READ_INDEX;
    type Output = u64;
    async fn run(&self, raft: &Raft, gate: &Yielding) -> LeaderReply<u64> {
        gated(raft, gate, async {
            match raft.get_read_log_id().await {
                Ok((read, _applied)) => LeaderReply::Done(read.map_or(0, |l| l.index)),
                Err(e) => not_leader_or_failed(e),
            }
        })
        .await
    }
}

/// A change of the voters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Membership {
    /// Add the node as a learner, wait until it has caught up, then make it a voter.
    /// Idempotent: a node that already votes is left as it is.
    Join(Hello),
    /// Remove the node, voter or learner, and stop replicating to it. Idempotent: a node
    /// already gone is reported removed (a retry after a lost answer must not fail).
    Remove(NodeId),
}

/// The voters after a membership change.
pub type Voters = Vec<NodeId>;

fn voters_of(raft: &Raft) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// The voters, answered only if this node still leads (checked with a quorum), so the
/// answer is current.
async fn voters_from_leader(raft: &Raft) -> LeaderReply<Voters> {
    match raft.get_read_log_id().await {
        Ok(_) => LeaderReply::Done(voters_of(raft).into_iter().collect()),
        Err(e) => not_leader_or_failed(e),
    }
}

fn membership_reply(
    result: Result<(), RaftError<NodeId, ClientWriteError<NodeId, TollgateNode>>>,
    raft: &Raft,
) -> LeaderReply<Voters> {
    match result {
        Ok(()) => LeaderReply::Done(voters_of(raft).into_iter().collect()),
        Err(e) => not_leader_or_failed(e),
    }
}

/// How long the leader waits for a joining node to catch up as a learner before it
/// answers "not yet" (the joiner asks again; within its 60 s call deadline).
const LEARNER_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(45);

impl LeaderOp for Membership {
    const KIND: u16 = KIND_MEMBERSHIP;
    type Output = Voters;
    async fn run(&self, raft: &Raft, gate: &Yielding) -> LeaderReply<Voters> {
        match self {
            Membership::Join(hello) => join(raft, gate, hello).await,
            Membership::Remove(id) => gated(raft, gate, remove(raft, *id)).await,
        }
    }
}

/// `Membership::Join`: the learner is added and made a voter under the gate; the wait
/// for it to catch up in between is not (it may take long, and a hand-over must not
/// wait for it) and ends early if this node starts handing over.
async fn join(raft: &Raft, gate: &Yielding, hello: &Hello) -> LeaderReply<Voters> {
    let id = hello.node_id;
    if voters_of(raft).contains(&id) {
        return gated(raft, gate, voters_from_leader(raft)).await;
    }
    // Not openraft's blocking add: it waits for the learner without a bound, and a
    // learner that never catches up (it died, or cannot read the log) would hold this
    // operation for good. A node already a learner (a join asked again) is not added
    // again: that appends a membership entry and restarts replication to it, so one
    // slow to catch up would start over at every ask.
    let (known, membership_index) = {
        let m = raft.metrics().borrow().clone();
        let known = m.membership_config.membership().get_node(&id).is_some();
        (known, m.membership_config.log_id().map_or(0, |l| l.index))
    };
    let added = if known {
        LeaderReply::Done(membership_index)
    } else {
        gated(raft, gate, async {
            match raft.add_learner(id, hello.node.clone(), false).await {
                Ok(added) => LeaderReply::Done(added.log_id.index),
                Err(e) => not_leader_or_failed(e),
            }
        })
        .await
    };
    let added = match added.done() {
        Ok(index) => index,
        Err(reply) => return reply,
    };
    let deadline = Instant::now() + LEARNER_CATCH_UP;
    loop {
        let m = raft.metrics().borrow().clone();
        let Some(replication) = m.replication.as_ref() else {
            break; // No longer leading: the voter change below says where to go.
        };
        let matched = replication.get(&id).copied().flatten();
        if matched.is_some_and(|l| l.index >= added) {
            break;
        }
        if gate.is_set() || Instant::now() >= deadline {
            return LeaderReply::Failed(format!("node {id} has not caught up as a learner yet"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gated(raft, gate, async {
        let voter = raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map(|_| ());
        membership_reply(voter, raft)
    })
    .await
}

/// `Membership::Remove`.
async fn remove(raft: &Raft, id: NodeId) -> LeaderReply<Voters> {
    let (voter, member) = {
        let m = raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        (
            membership.voter_ids().any(|v| v == id),
            membership.get_node(&id).is_some(),
        )
    };
    let change = if voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else if member {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    } else {
        // Already gone.
        return voters_from_leader(raft).await;
    };
    let removed = raft.change_membership(change, false).await.map(|_| ());
    membership_reply(removed, raft)
}

/// Runs a leader operation here, unless this node is handing its leadership over: then
/// the caller is sent to the successor once it leads.
pub async fn run_op<Op: LeaderOp>(
    op: &Op,
    raft: &Raft,
    yielding: &super::handover::Yielding,
) -> LeaderReply<Op::Output> {
    if yielding.is_set() {
        // The caller goes to the successor once it leads, or the operation runs here if
        // the hand-over fails first.
        tokio::select! {
            leader = super::handover::successor(raft) => return LeaderReply::NotLeader { leader },
            _ = yielding.ended() => {}
        }
    }
    op.run(raft, yielding).await
}
