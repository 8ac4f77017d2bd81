//! Raft RPCs between nodes: their kinds, and the handler that answers them by calling
//! the local Raft. Bodies are encoded with `tollgate_raft::codec`; each answer carries
//! the Raft call's own `Result`, so a remote Raft error reaches the caller typed.

use crate::transport::{PeerHandler, PeerRequest, PeerResponse, RequestContext};
use serde::{Deserialize, Serialize};
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

/// The answer to `KIND_HELLO`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub node_id: NodeId,
    pub node: TollgateNode,
}

/// The leader's answer to a forwarded write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WriteReply {
    Applied(Outcome),
    /// This node is not the leader (any more); the leader it knows of, if any.
    NotLeader {
        leader: Option<(NodeId, TollgateNode)>,
    },
    Failed(String),
}

/// Answers peers' Raft RPCs and forwarded writes with the local Raft. The transport must
/// be bound before Raft is made (Raft needs the network), so the Raft is set afterwards;
/// until then requests are rejected.
pub struct RaftRpcHandler {
    raft: std::sync::OnceLock<Raft>,
    hello: Hello,
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
        }
    }

    pub fn set_raft(&self, raft: Raft) {
        let _ = self.raft.set(raft);
    }
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

/// Applies a write on this node if it leads, else says who does.
pub async fn write_locally(raft: &Raft, command: Command) -> WriteReply {
    match raft.client_write(command).await {
        Ok(response) => WriteReply::Applied(response.data),
        Err(e) => match e.forward_to_leader() {
            Some(f) => WriteReply::NotLeader {
                leader: f.leader_id.zip(f.leader_node.clone()),
            },
            None => WriteReply::Failed(e.to_string()),
        },
    }
}

impl PeerHandler for RaftRpcHandler {
    async fn handle(
        &self,
        _context: RequestContext,
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
                encode(&raft.append_entries(rpc).await)?
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
            KIND_WRITE => {
                let command: Command = codec::decode(&request.body).map_err(malformed)?;
                encode(&write_locally(raft, command).await)?
            }
            kind => return Err(PeerError::UnknownKind { kind }),
        };
        Ok(PeerResponse {
            kind: request.kind,
            body,
        })
    }
}
