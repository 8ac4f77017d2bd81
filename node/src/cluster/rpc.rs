//! Raft RPCs between nodes: their kinds, and the handler that answers them by calling
//! the local Raft. Bodies are encoded with `tollgate_raft::codec`; each answer carries
//! the Raft call's own `Result`, so a remote Raft error reaches the caller typed.
//!
//! Besides Raft's own RPCs there are leader operations (`LeaderOp`: a forwarded write, a
//! membership change, a read index for a linearizable read), which a node runs if it
//! leads and otherwise answers with the leader it knows of, and `KIND_STATUS`, which any
//! node answers with its own replication figures for `/api/v1/cluster`.

use super::handover::Yielding;
use crate::replicator::NodeStatus;
use crate::transport::{PeerHandler, PeerRequest, PeerResponse, RequestContext};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::ChangeMembers;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
// tokio's clock: the simulator's virtual time reaches it.
use tokio::time::Instant;
use tollgate_proto::peer::PeerError;
use tollgate_proto::{Command, Outcome};
use tollgate_raft::codec;
use tollgate_raft::typ::{NodeId, Raft, TollgateNode, TypeConfig};

/// AppendEntries.
pub const KIND_APPEND: u16 = 1;
/// RequestVote.
pub const KIND_VOTE: u16 = 2;
/// One chunk of InstallSnapshot.
pub const KIND_SNAPSHOT: u16 = 3;
/// A write forwarded by a follower to the leader.
pub const KIND_WRITE: u16 = 4;
/// Who are you: answered with this node's id and addresses (cluster formation).
pub const KIND_HELLO: u16 = 5;
/// This node's replication figures (`NodeStatus`).
pub const KIND_STATUS: u16 = 6;
/// A membership change (`Membership`), run by the leader.
pub const KIND_MEMBERSHIP: u16 = 7;
/// The leader's read index (`ReadIndex`) for a linearizable read on another node.
pub const KIND_READ_INDEX: u16 = 8;
/// A chitchat gossip message (one-way; the answer is empty).
pub const KIND_GOSSIP: u16 = 9;
/// From a draining leader to a caught-up follower: start an election now (leadership
/// hand-over; the answer is empty).
pub const KIND_ELECT: u16 = 10;
/// Start draining this node (`tollgate admin drain N` sent to another node; the answer
/// is empty).
pub const KIND_DRAIN: u16 = 11;

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

/// When this node last heard from a leader (milliseconds since the node started), shared
/// by the RPC handler, which records it, and the replicator, which reports it.
pub struct LeaderContact {
    started: Instant,
    last_ms: AtomicU64,
}

impl LeaderContact {
    pub fn new() -> Arc<Self> {
        Arc::new(LeaderContact {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn heard(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Records contact `ago_ms` milliseconds ago, unless a later one is recorded.
    pub fn heard_ago(&self, ago_ms: u64) {
        self.last_ms
            .fetch_max(self.now_ms().saturating_sub(ago_ms), Ordering::AcqRel);
    }

    /// Milliseconds since the leader was last heard from (since start if never).
    pub fn since_ms(&self) -> u64 {
        self.now_ms()
            .saturating_sub(self.last_ms.load(Ordering::Acquire))
    }
}

/// Answers peers' Raft RPCs and forwarded writes with the local Raft. The transport must
/// be bound before Raft is made (Raft needs the network), so the Raft is set afterwards;
/// until then requests are rejected.
pub struct RaftRpcHandler {
    raft: std::sync::OnceLock<Raft>,
    hello: Hello,
    contact: Arc<LeaderContact>,
    status: std::sync::OnceLock<Box<dyn Fn() -> NodeStatus + Send + Sync>>,
    gossip: std::sync::OnceLock<crate::gossip::GossipInbox>,
    drain: std::sync::OnceLock<Arc<crate::drain::Drain>>,
    yielding: Arc<super::handover::Yielding>,
}

impl RaftRpcHandler {
    pub fn new(raft: Raft) -> Self {
        let node_id = raft.metrics().borrow().id;
        let node = TollgateNode {
            raft_addr: String::new(),
            http_addr: String::new(),
        };
        let handler = RaftRpcHandler::pending(Hello { node_id, node });
        handler.set_raft(raft);
        handler
    }

    /// A handler whose Raft is set later with `set_raft`.
    pub fn pending(hello: Hello) -> Self {
        RaftRpcHandler {
            raft: std::sync::OnceLock::new(),
            hello,
            contact: LeaderContact::new(),
            status: std::sync::OnceLock::new(),
            gossip: std::sync::OnceLock::new(),
            drain: std::sync::OnceLock::new(),
            yielding: Arc::default(),
        }
    }

    /// Set while this node hands its leadership over (shared with the replicator and
    /// the hand-over task).
    pub fn yielding(&self) -> Arc<super::handover::Yielding> {
        Arc::clone(&self.yielding)
    }

    /// The drain `KIND_DRAIN` starts and `KIND_ELECT` respects (a draining node does not
    /// take leadership).
    pub fn set_drain(&self, drain: Arc<crate::drain::Drain>) {
        let _ = self.drain.set(drain);
    }

    fn draining(&self) -> bool {
        self.drain.get().is_some_and(|d| d.is_draining())
    }

    pub fn set_raft(&self, raft: Raft) {
        let _ = self.raft.set(raft);
    }

    /// Where this node records contact with a leader.
    pub fn contact(&self) -> Arc<LeaderContact> {
        Arc::clone(&self.contact)
    }

    /// Where `KIND_GOSSIP` messages go (set when gossip starts; dropped before).
    pub fn set_gossip(&self, inbox: crate::gossip::GossipInbox) {
        let _ = self.gossip.set(inbox);
    }

    /// How to answer `KIND_STATUS` (set once the replicator exists).
    pub fn set_status(&self, status: impl Fn() -> NodeStatus + Send + Sync + 'static) {
        let _ = self.status.set(Box::new(status));
    }
}

/// Refuses entries of a protocol version this node does not speak, as an older build
/// would (it could not decode them), including the raise to such a version. The cluster
/// raises its version only once every member speaks it (`protocol::raise_when_supported`),
/// so this meets only a node behind the cluster (an old build joining, or a downgrade):
/// noted, so `protocol::stop_when_outdated` drains it.
fn unreadable_entries(entries: &[openraft::Entry<TypeConfig>]) -> Result<(), PeerError> {
    let speaks = crate::protocol::local();
    for entry in entries {
        let openraft::EntryPayload::Normal(command) = &entry.payload else {
            continue;
        };
        let version = match command {
            // Readable itself, but what follows it would not be: stop following here.
            Command::SetProtocolVersion { version } => *version,
            _ => command.since_version(),
        };
        if version > speaks.max {
            // Only what is refused: an accepted entry may still be truncated, and the
            // state watcher sees what is applied.
            crate::protocol::note_cluster_version(version);
            tracing::error!(
                index = entry.log_id.index,
                version,
                speaks = %speaks,
                "log entry of a protocol version this node does not speak"
            );
            return Err(PeerError::Malformed {
                reason: format!(
                    "log entry {} is of protocol {version}; this node speaks {speaks}",
                    entry.log_id.index,
                ),
            });
        }
    }
    Ok(())
}

/// Decodes a leader operation, runs it here, and encodes the reply.
async fn serve_op<Op: LeaderOp>(
    raft: &Raft,
    yielding: &super::handover::Yielding,
    body: &[u8],
) -> Result<Vec<u8>, PeerError> {
    let op: Op = codec::decode(body).map_err(malformed)?;
    encode(&run_op(&op, raft, yielding).await)
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

fn malformed(e: codec::CodecError) -> PeerError {
    PeerError::Malformed {
        reason: e.to_string(),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, PeerError> {
    codec::encode(value).map_err(|e| PeerError::Rejected {
        reason: e.to_string(),
    })
}

impl PeerHandler for RaftRpcHandler {
    async fn handle(
        &self,
        context: RequestContext,
        request: PeerRequest,
    ) -> Result<PeerResponse, PeerError> {
        if request.kind == KIND_GOSSIP {
            if let Some(inbox) = self.gossip.get() {
                inbox
                    .deliver(&request.body)
                    .map_err(|reason| PeerError::Malformed { reason })?;
            }
            return Ok(PeerResponse {
                kind: KIND_GOSSIP,
                body: Vec::new(),
            });
        }
        if request.kind == KIND_HELLO {
            return Ok(PeerResponse {
                kind: KIND_HELLO,
                body: encode(&self.hello)?,
            });
        }
        let Some(raft) = self.raft.get() else {
            return Err(PeerError::Rejected {
                reason: "raft is starting".into(),
            });
        };
        let body = match request.kind {
            KIND_APPEND => {
                let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
                    codec::decode(&request.body).map_err(malformed)?;
                unreadable_entries(&rpc.entries)?;
                let reply = raft.append_entries(rpc).await;
                if matches!(
                    reply,
                    Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
                ) {
                    self.contact.heard();
                }
                encode(&reply)?
            }
            KIND_VOTE => {
                let rpc: openraft::raft::VoteRequest<NodeId> =
                    codec::decode(&request.body).map_err(malformed)?;
                encode(&raft.vote(rpc).await)?
            }
            KIND_SNAPSHOT => {
                let rpc: openraft::raft::InstallSnapshotRequest<TypeConfig> =
                    codec::decode(&request.body).map_err(malformed)?;
                encode(&raft.install_snapshot(rpc).await)?
            }
            KIND_WRITE => serve_op::<Command>(raft, &self.yielding, &request.body).await?,
            KIND_READ_INDEX => serve_op::<ReadIndex>(raft, &self.yielding, &request.body).await?,
            KIND_MEMBERSHIP => serve_op::<Membership>(raft, &self.yielding, &request.body).await?,
            KIND_STATUS => match self.status.get() {
                Some(status) => encode(&status())?,
                None => {
                    return Err(PeerError::Rejected {
                        reason: "node is starting".into(),
                    })
                }
            },
            KIND_ELECT => {
                if self.draining() {
                    return Err(PeerError::Rejected {
                        reason: "this node is draining".into(),
                    });
                }
                raft.trigger()
                    .elect()
                    .await
                    .map_err(|e| PeerError::Rejected {
                        reason: e.to_string(),
                    })?;
                Vec::new()
            }
            KIND_DRAIN => {
                match self.drain.get() {
                    Some(drain) => {
                        if drain.start() {
                            tracing::info!(peer = %context.from, "drain requested by a peer");
                        }
                    }
                    None => {
                        return Err(PeerError::Rejected {
                            reason: "node is starting".into(),
                        })
                    }
                }
                Vec::new()
            }
            kind => return Err(PeerError::UnknownKind { kind }),
        };
        Ok(PeerResponse {
            kind: request.kind,
            body,
        })
    }
}
