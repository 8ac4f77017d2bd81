//! `RaftReplicator`: proposes through Raft. Leader operations (writes, membership
//! changes, read indexes) run on the leader: a follower forwards them over the peer
//! transport, so the caller never needs to know who leads.
//!
//! # Layout
//! - `replicator.rs`: `RaftReplicator`, its `Replicator` side, catching up, membership.
//! - `leader`: running an operation on the leader, here or forwarded, through leader
//!   changes.

use super::contact::LeaderContact;
use super::ops::{LeaderReply, Membership, ReadIndex};
use crate::cluster::transport::{PeerRequest, PeerTransport};
use crate::governance::replicator::{
    dir_bytes, BoxFuture, ClusterView, MemberReport, NodeStatus, ProposeFuture, ReplicateError,
    Replicator, SharedState,
};
use openraft::ServerState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::peer::{KIND_DRAIN, KIND_STATUS};
use tollgate_proto::{Command, Outcome};
use tollgate_raft::codec;
use tollgate_raft::typ::{NodeId, Raft};

/// Pause between tries while no leader is known (about one election timeout).
const NO_LEADER_PAUSE_MS: u64 = 150;
/// How long a leader operation may take in all, tries through leader changes included:
/// long enough to ride out an election, short enough that an admin call on a node cut
/// off from the quorum answers 503 instead of hanging (a leader that lost its quorum
/// does not step down by itself in openraft 0.9, so its writes would wait for the heal).
const FORWARD_DEADLINE: Duration = Duration::from_secs(5);
/// Deadline of a write: through a leader's death, an election (1.2 to 2.4 s) and the new
/// leader's commit, with room to spare.
const WRITE_DEADLINE: Duration = Duration::from_secs(12);
/// Deadline of one write forwarded to the leader: a dead leader costs this much, not the
/// whole deadline, before the next attempt goes to its successor.
const ATTEMPT_DEADLINE: Duration = Duration::from_secs(2);
/// A join waits for the learner to catch up.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(60);
/// How long a linearizable read waits for this node to apply up to the read index.
const APPLY_WAIT: Duration = Duration::from_secs(5);
/// Deadline of a status question to another member.
const STATUS_DEADLINE: Duration = Duration::from_millis(800);
/// A node whose replication has not advanced for this long (while the leader's log did)
/// loses its escrow leases to the others. Well past `admission::LEASE_TRUST_MS`, after
/// which the node itself stopped admitting on them.
pub const RECLAIM_AFTER_MS: u64 = 15_000;
/// A removed node's leases are released this long after it stopped trusting them.
const RELEASE_MARGIN_MS: u64 = 1_000;
/// How often the leader looks for such nodes.
const RECLAIM_CHECK_MS: u64 = 1_000;
/// Pause between attempts to catch up at start.
const CATCH_UP_RETRY_MS: u64 = 200;

/// Where this node keeps its data, for storage figures.
#[derive(Debug, Clone)]
pub struct DataDirs {
    pub raft: PathBuf,
    pub outbox: PathBuf,
}

pub struct RaftReplicator<T> {
    raft: Raft,
    state: SharedState,
    transport: Arc<T>,
    contact: Arc<LeaderContact>,
    committed: Box<dyn Fn() -> u64 + Send + Sync>,
    dirs: DataDirs,
    caught_up: AtomicBool,
    yielding: Arc<super::handover::Yielding>,
    protocol: tollgate_proto::peer::ProtocolRange,
}

impl<T: PeerTransport> RaftReplicator<T> {
    pub fn new(
        raft: Raft,
        state: SharedState,
        transport: Arc<T>,
        contact: Arc<LeaderContact>,
        committed: impl Fn() -> u64 + Send + Sync + 'static,
        dirs: DataDirs,
    ) -> Self {
        RaftReplicator {
            raft,
            state,
            transport,
            contact,
            committed: Box::new(committed),
            dirs,
            caught_up: AtomicBool::new(false),
            yielding: Arc::default(),
            protocol: tollgate_proto::peer::ProtocolRange::BUILD,
        }
    }

    /// Shares the hand-over flag of this node's RPC handler, so local leader operations
    /// also wait for the successor while this node hands leadership over.
    pub fn with_yielding(mut self, yielding: Arc<super::handover::Yielding>) -> Self {
        self.yielding = yielding;
        self
    }

    /// The protocol versions this node reports speaking (`ProtocolRange::BUILD` if unset).
    pub fn with_protocol(mut self, protocol: tollgate_proto::peer::ProtocolRange) -> Self {
        self.protocol = protocol;
        self
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    fn node_id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }

    /// Waits until this node has applied everything the leader had committed when asked.
    async fn linearize_inner(&self) -> Result<(), ReplicateError> {
        let index = self.on_leader(ReadIndex, FORWARD_DEADLINE).await?;
        self.raft
            .wait(Some(APPLY_WAIT))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| ReplicateError::Cluster(format!("not caught up: {e}")))?;
        Ok(())
    }

    /// Tries to catch up until it succeeds once; from then on the node is ready.
    pub async fn catch_up(&self) {
        loop {
            match self.linearize_inner().await {
                Ok(()) => {
                    self.caught_up.store(true, Ordering::Release);
                    tracing::info!("caught up with the cluster");
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "not caught up yet"),
            }
            tokio::time::sleep(Duration::from_millis(CATCH_UP_RETRY_MS)).await;
        }
    }

    /// Asks the cluster to make this node a voter (`--join`), through `via` (any member).
    pub async fn join(&self, hello: super::ops::Hello, via: std::net::SocketAddr) {
        let op = Membership::Join(hello);
        let mut target = (0, via);
        loop {
            match self
                .forward(&op, target.0, target.1, MEMBERSHIP_DEADLINE)
                .await
                .0
            {
                LeaderReply::Done(voters) => {
                    tracing::info!(?voters, "joined the cluster as a voter");
                    return;
                }
                LeaderReply::NotLeader {
                    leader: Some((id, node)),
                } => match node.raft_addr.parse() {
                    Ok(addr) => {
                        // Straight to the leader named; a short pause so two nodes with
                        // stale views cannot bounce the request in a tight loop.
                        target = (id, addr);
                        tokio::time::sleep(Duration::from_millis(NO_LEADER_PAUSE_MS)).await;
                        continue;
                    }
                    Err(_) => tracing::warn!(leader = id, "leader has an invalid raft address"),
                },
                LeaderReply::NotLeader { leader: None } => {
                    tracing::info!("no leader yet; joining again shortly");
                    target = (0, via);
                }
                LeaderReply::Failed(m) | LeaderReply::Refused(m) => {
                    tracing::warn!(reason = %m, "join failed; trying again");
                    target = (0, via);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    fn staleness_of(
        &self,
        m: &openraft::RaftMetrics<NodeId, tollgate_raft::typ::TollgateNode>,
    ) -> u64 {
        if m.state == ServerState::Leader {
            match m.millis_since_quorum_ack {
                Some(ms) => {
                    // A quorum acknowledging this leader is hearing from the cluster: a
                    // leader that steps down (a hand-over) is not stale as a follower
                    // while the new leader's first heartbeat is on its way.
                    self.contact.heard_ago(ms);
                    ms
                }
                None => self.contact.since_ms(),
            }
        } else {
            self.contact.since_ms()
        }
    }

    /// On the leader, gives back the leases of nodes it has not heard from: a node whose
    /// replication has not advanced for `RECLAIM_AFTER_MS` while the log moved on, and a
    /// node no longer a member once `admission::LEASE_TRUST_MS` (+ a margin) passed since
    /// it was seen so (a removed node that missed its removal stops trusting its leases
    /// by then). Runs until the node stops.
    pub async fn reclaim_leases(self: Arc<Self>) {
        use std::collections::BTreeMap;
        // Per node: the last matched index seen and when it last changed.
        let mut progress: BTreeMap<NodeId, (Option<u64>, tokio::time::Instant)> = BTreeMap::new();
        // Per node no longer a member but holding leases: since when it is seen so.
        let mut removed: BTreeMap<NodeId, tokio::time::Instant> = BTreeMap::new();
        loop {
            tokio::time::sleep(Duration::from_millis(RECLAIM_CHECK_MS)).await;
            let m = self.raft.metrics().borrow().clone();
            let Some(replication) = m.replication.filter(|_| m.state == ServerState::Leader) else {
                progress.clear();
                removed.clear();
                continue;
            };
            let now = tokio::time::Instant::now();
            let last_log = m.last_log_index.unwrap_or(0);
            let holders = self.state.read().escrow().nodes();
            // Nodes no longer members: their leases go once they stopped trusting them.
            let membership = m.membership_config.membership();
            for node in holders.iter().filter(|n| membership.get_node(n).is_none()) {
                let since = *removed.entry(*node).or_insert(now);
                let trust_over = Duration::from_millis(
                    crate::governance::admission::LEASE_TRUST_MS + RELEASE_MARGIN_MS,
                );
                if now.duration_since(since) >= trust_over {
                    self.release_leases_of(*node).await;
                }
            }
            removed.retain(|n, _| holders.contains(n));
            for (node, matched) in replication {
                let matched = matched.map(|l| l.index);
                let entry = progress.entry(node).or_insert((matched, now));
                if entry.0 != matched {
                    *entry = (matched, now);
                }
                let silent = now.duration_since(entry.1) >= Duration::from_millis(RECLAIM_AFTER_MS);
                if silent && matched.unwrap_or(0) < last_log && holders.contains(&node) {
                    tracing::warn!(node, "reclaiming the leases of a node not heard from");
                    self.release_leases_of(node).await;
                }
            }
        }
    }

    async fn release_leases_of(&self, node: NodeId) {
        let command = Command::ReleaseLeases {
            node,
            budget_id: None,
        };
        if let Err(e) = self.propose(command).await {
            tracing::warn!(node, error = %e, "lease reclaim failed; trying again");
        }
    }

    fn own_status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let staleness_ms = self.staleness_of(&m);
        NodeStatus {
            node_id: m.id,
            role: role.into(),
            caught_up: self.caught_up.load(Ordering::Acquire),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: (self.committed)(),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
            staleness_ms,
            storage_bytes: dir_bytes(&self.dirs.raft),
            outbox_bytes: dir_bytes(&self.dirs.outbox),
            protocol: self.protocol,
        }
    }

    async fn member_reports_inner(&self) -> Vec<MemberReport> {
        let view = self.cluster_view();
        let asks = view.members.iter().map(|(id, raft_addr, http_addr)| {
            let voter = view.voters.contains(id);
            async move {
                let status = if *id == view.node_id {
                    Ok(self.own_status())
                } else {
                    self.ask_status(raft_addr).await
                };
                MemberReport {
                    id: *id,
                    raft_addr: raft_addr.clone(),
                    http_addr: http_addr.clone(),
                    voter,
                    status,
                }
            }
        });
        futures_util::future::join_all(asks).await
    }

    async fn ask_status(&self, raft_addr: &str) -> Result<NodeStatus, String> {
        let reply = self.ask_member(raft_addr, KIND_STATUS).await?;
        codec::decode(&reply.body).map_err(|e| e.to_string())
    }

    /// A request of `kind` with an empty body to the member at `raft_addr`.
    async fn ask_member(
        &self,
        raft_addr: &str,
        kind: u16,
    ) -> Result<crate::cluster::transport::PeerResponse, String> {
        let addr = raft_addr
            .parse()
            .map_err(|_| format!("invalid raft address {raft_addr}"))?;
        let request = PeerRequest {
            kind,
            body: Vec::new(),
        };
        self.transport
            .call(addr, request, STATUS_DEADLINE)
            .await
            .map_err(|e| e.to_string())
    }
}

impl<T: PeerTransport> Replicator for RaftReplicator<T> {
    /// Returns once the command is applied here too, not only on the leader: a write
    /// made through this node is visible in this node's reads at once, and a charge's
    /// hold is released only when this node's ledgers count the charge.
    fn propose(&self, command: Command) -> ProposeFuture<'_> {
        Box::pin(async move {
            // Creates and deletes are kept to check their effect after a doubtful retry
            // (not charge batches: they are deduplicated by request id, and large).
            let inner = match &command {
                Command::Audited { command, .. } => command.as_ref(),
                other => other,
            };
            let check = matches!(
                inner,
                Command::CreateCustomer(_)
                    | Command::CreateTeam(_)
                    | Command::CreateKey(_)
                    | Command::CreateBudget(_)
                    | Command::CreateRateLimit(_)
                    | Command::DeleteCustomer { .. }
                    | Command::DeleteTeam { .. }
                    | Command::DeleteKey { .. }
                    | Command::DeleteBudget { .. }
                    | Command::DeleteRateLimit { .. }
                    | Command::DeletePrice { .. }
            )
            .then(|| inner.clone());
            let ((outcome, index), doubtful) = self
                .on_leader_once(command, WRITE_DEADLINE, ATTEMPT_DEADLINE)
                .await?;
            self.raft
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(index), "apply a proposal locally")
                .await
                .map_err(|e| {
                    ReplicateError::Cluster(format!("committed, not yet applied here: {e}"))
                })?;
            // A create that conflicts, or a delete that finds nothing, after an attempt
            // whose fate was unknown: that attempt was applied, once.
            let repeated = matches!(outcome, Outcome::Conflict(_) | Outcome::NotFound { .. });
            if doubtful && repeated && check.is_some_and(|c| self.state.read().shows(&c)) {
                tracing::info!("a write retried after its leader failed had been applied; answering it as done");
                return Ok(Outcome::Done);
            }
            Ok(outcome)
        })
    }

    fn state(&self) -> &SharedState {
        &self.state
    }

    fn status(&self) -> NodeStatus {
        self.own_status()
    }

    fn staleness_ms(&self) -> u64 {
        self.staleness_of(&self.raft.metrics().borrow())
    }

    /// Caught up once, and still a member as far as this node knows (a removed node that
    /// saw its removal leaves the load balancer; one that did not, because replication to
    /// it stopped first, must be stopped by hand, as the docs say).
    fn caught_up(&self) -> bool {
        if !self.caught_up.load(Ordering::Acquire) {
            return false;
        }
        let m = self.raft.metrics().borrow().clone();
        m.membership_config.membership().get_node(&m.id).is_some()
    }

    fn cluster_view(&self) -> ClusterView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        ClusterView {
            node_id: m.id,
            leader: m.current_leader,
            term: m.current_term,
            members: membership
                .nodes()
                .map(|(id, node)| (*id, node.raft_addr.clone(), node.http_addr.clone()))
                .collect(),
            voters: membership.voter_ids().collect(),
        }
    }

    fn member_reports(&self) -> BoxFuture<'_, Vec<MemberReport>> {
        Box::pin(self.member_reports_inner())
    }

    fn linearize(&self) -> BoxFuture<'_, Result<(), ReplicateError>> {
        Box::pin(self.linearize_inner())
    }

    fn ask_others(
        &self,
        kind: u16,
        body: Vec<u8>,
        deadline: Duration,
    ) -> BoxFuture<'_, Vec<crate::governance::replicator::MemberAnswer>> {
        Box::pin(async move {
            let view = self.cluster_view();
            let asks = view
                .members
                .into_iter()
                .filter(|(id, _, _)| *id != view.node_id)
                .map(|(id, raft_addr, _)| {
                    let body = body.clone();
                    async move {
                        let Ok(addr) = raft_addr.parse() else {
                            return (id, Err(format!("invalid raft address {raft_addr}")));
                        };
                        let request = PeerRequest { kind, body };
                        let answer = self
                            .transport
                            .call(addr, request, deadline)
                            .await
                            .map(|reply| reply.body)
                            .map_err(|e| e.to_string());
                        (id, answer)
                    }
                });
            futures_util::future::join_all(asks).await
        })
    }

    fn drain_member(&self, id: u64) -> BoxFuture<'_, Result<(), ReplicateError>> {
        Box::pin(async move {
            let view = self.cluster_view();
            let Some((_, raft_addr, _)) = view.members.iter().find(|(m, _, _)| *m == id) else {
                return Err(ReplicateError::Refused(format!(
                    "node {id} is not a member of this cluster"
                )));
            };
            self.ask_member(raft_addr, KIND_DRAIN)
                .await
                .map(|_| ())
                .map_err(|e| ReplicateError::Cluster(format!("node {id} did not answer: {e}")))
        })
    }

    /// The removed node's leases go back to the others through `reclaim_leases`, once it
    /// has stopped trusting them even if it never learned of its removal.
    fn remove_node(&self, id: u64) -> BoxFuture<'_, Result<Vec<u64>, ReplicateError>> {
        Box::pin(self.on_leader(Membership::Remove(id), MEMBERSHIP_DEADLINE))
    }
}

mod leader;
