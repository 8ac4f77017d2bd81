//! Raft RPCs between nodes: the handler that answers them by calling the local Raft. Bodies are encoded with `tollgate_raft::codec`; each answer carries
//! the Raft call's own `Result`, so a remote Raft error reaches the caller typed.
//!
//! Besides Raft's own RPCs it serves leader operations (`ops`), `KIND_HELLO`,
//! `KIND_STATUS` (this node's replication figures for `/api/v1/cluster`), `KIND_ELECT`
//! (hand-over) and `KIND_DRAIN`.

use super::contact::LeaderContact;
use super::ops::{run_op, Hello, LeaderOp, Membership, ReadIndex};
use crate::cluster::transport::{
    PeerHandler, PeerRequest, PeerResponse, RequestContext, Route, RouteFuture,
};
use crate::governance::replicator::NodeStatus;
use openraft::raft::AppendEntriesResponse;
use serde::Serialize;
use std::sync::Arc;
use tollgate_proto::peer::{
    PeerError, APPLICATION_KINDS, KIND_APPEND, KIND_DRAIN, KIND_ELECT, KIND_GOSSIP, KIND_HELLO,
    KIND_MEMBERSHIP, KIND_READ_INDEX, KIND_SNAPSHOT, KIND_STATUS, KIND_VOTE, KIND_WRITE,
};
use tollgate_proto::Command;
use tollgate_raft::codec;
use tollgate_raft::typ::{NodeId, Raft, TollgateNode, TypeConfig};

/// Answers peers' Raft RPCs and forwarded writes with the local Raft. The transport must
/// be bound before Raft is made (Raft needs the network), so the Raft is set afterwards;
/// until then requests are rejected.
pub struct RaftRpcHandler {
    raft: std::sync::OnceLock<Raft>,
    hello: Hello,
    contact: Arc<LeaderContact>,
    status: std::sync::OnceLock<Box<dyn Fn() -> NodeStatus + Send + Sync>>,
    drain: std::sync::OnceLock<Arc<crate::cluster::drain::Drain>>,
    yielding: Arc<super::handover::Yielding>,
    versions: Arc<super::version::Versions>,
}

impl RaftRpcHandler {
    pub fn new(raft: Raft) -> Self {
        let node_id = raft.metrics().borrow().id;
        let node = TollgateNode {
            raft_addr: String::new(),
            http_addr: String::new(),
        };
        let handler = RaftRpcHandler::pending(Hello { node_id, node }, Arc::default());
        handler.set_raft(raft);
        handler
    }

    /// A handler whose Raft is set later with `set_raft`, for a node speaking `versions`.
    pub fn pending(hello: Hello, versions: Arc<super::version::Versions>) -> Self {
        RaftRpcHandler {
            raft: std::sync::OnceLock::new(),
            hello,
            contact: LeaderContact::new(),
            status: std::sync::OnceLock::new(),
            drain: std::sync::OnceLock::new(),
            yielding: Arc::default(),
            versions,
        }
    }

    /// Set while this node hands its leadership over (shared with the replicator and
    /// the hand-over task).
    pub fn yielding(&self) -> Arc<super::handover::Yielding> {
        Arc::clone(&self.yielding)
    }

    /// The drain `KIND_DRAIN` starts and `KIND_ELECT` respects (a draining node does not
    /// take leadership).
    pub fn set_drain(&self, drain: Arc<crate::cluster::drain::Drain>) {
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
fn unreadable_entries(
    versions: &super::version::Versions,
    entries: &[openraft::Entry<TypeConfig>],
) -> Result<(), PeerError> {
    let speaks = versions.local();
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
            versions.note_cluster_version(version);
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

/// The kinds `RaftRpcHandler` answers: every application kind but gossip's and the
/// request log's (`records::peer`).
pub fn kinds() -> Vec<u16> {
    APPLICATION_KINDS
        .into_iter()
        .filter(|kind| {
            *kind != KIND_GOSSIP && !crate::governance::records::peer::KINDS.contains(kind)
        })
        .collect()
}

impl Route for RaftRpcHandler {
    fn answer(&self, context: RequestContext, request: PeerRequest) -> RouteFuture<'_> {
        Box::pin(self.serve(context, request))
    }
}

/// Also a handler on its own, for tests and nodes whose only peer messages are Raft's.
impl PeerHandler for RaftRpcHandler {
    async fn handle(
        &self,
        context: RequestContext,
        request: PeerRequest,
    ) -> Result<PeerResponse, PeerError> {
        self.serve(context, request).await
    }
}

impl RaftRpcHandler {
    async fn serve(
        &self,
        context: RequestContext,
        request: PeerRequest,
    ) -> Result<PeerResponse, PeerError> {
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
                unreadable_entries(&self.versions, &rpc.entries)?;
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
