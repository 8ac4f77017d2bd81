//! openraft's network over `PeerTransport`: one client per target node, each RPC under
//! openraft's own deadline, and a short fixed back-off after a peer is unreachable so a
//! healed peer is caught up quickly.

use crate::cluster::transport::{PeerRequest, PeerTransport};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::peer::{KIND_APPEND, KIND_SNAPSHOT, KIND_VOTE};
use tollgate_raft::codec;
use tollgate_raft::typ::{NodeId, TollgateNode, TypeConfig};

/// Pause between tries at an unreachable peer. openraft's default (500 ms) makes catch-up
/// after a partition heals slow; a restarted peer is usually back within this.
const UNREACHABLE_BACKOFF_MS: u64 = 100;

/// Makes a client per target node.
pub struct Network<T> {
    transport: Arc<T>,
}

impl<T> Network<T> {
    pub fn new(transport: Arc<T>) -> Self {
        Network { transport }
    }
}

impl<T: PeerTransport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = NetworkClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &TollgateNode) -> NetworkClient<T> {
        NetworkClient {
            target,
            addr: node.raft_addr.parse().ok(),
            transport: Arc::clone(&self.transport),
        }
    }
}

pub struct NetworkClient<T> {
    target: NodeId,
    addr: Option<SocketAddr>,
    transport: Arc<T>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl<T: PeerTransport> NetworkClient<T> {
    /// Sends one RPC and returns the remote Raft's own result.
    async fn call<Req, Resp, E>(
        &self,
        kind: u16,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<
        Result<Resp, RaftError<NodeId, E>>,
        RPCError<NodeId, TollgateNode, RaftError<NodeId, E>>,
    >
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(addr) = self.addr else {
            let e = Message(format!("node {} has no valid raft address", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let body = codec::encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let deadline: Duration = option.hard_ttl();
        let reply = self
            .transport
            .call(addr, PeerRequest { kind, body }, deadline)
            .await
            .map_err(|e| {
                // Unreachable makes openraft back off; anything else is retried at once.
                // A peer that refuses (still starting, or a log entry it cannot read)
                // would refuse the same call again: back off from it too.
                match e {
                    crate::cluster::transport::TransportError::Timeout { .. }
                    | crate::cluster::transport::TransportError::Connect { .. }
                    | crate::cluster::transport::TransportError::Remote { .. }
                    | crate::cluster::transport::TransportError::BadReply { .. } => {
                        RPCError::Unreachable(Unreachable::new(&e))
                    }
                    _ => RPCError::Network(NetworkError::new(&e)),
                }
            })?;
        codec::decode(&reply.body).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl<T: PeerTransport> RaftNetwork<TypeConfig> for NetworkClient<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, TollgateNode, RaftError<NodeId>>>
    {
        let reply = self.call(KIND_APPEND, &rpc, &option).await?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, TollgateNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let reply = self.call(KIND_SNAPSHOT, &rpc, &option).await?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, TollgateNode, RaftError<NodeId>>> {
        let reply = self.call(KIND_VOTE, &rpc, &option).await?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(
            UNREACHABLE_BACKOFF_MS,
        )))
    }
}
