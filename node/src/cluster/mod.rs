//! The Raft cluster inside a node: the openraft network over `PeerTransport`, the RPC
//! handler that feeds a peer's requests to the local Raft, and `RaftReplicator`, the
//! `Replicator` that proposes through Raft (forwarding to the leader when this node
//! follows).
//!
//! # Layout
//! - `rpc`: RPC kinds, the forwarded-write reply, and `RaftRpcHandler` (server side).
//! - `network`: `Network`/`NetworkClient`, openraft's network over `PeerTransport`.
//! - `replicator`: `RaftReplicator`.
//! - `start`: starting a clustered node and forming the cluster.
//! - `elect`: a watch that breaks split votes openraft 0.9 can fall into.
//! - `handover`: a draining leader hands leadership to a caught-up follower.
//! - `mem_transport` (tests): an in-process `PeerTransport` for multi-node tests.

pub mod elect;
pub mod handover;
pub mod network;
pub mod replicator;
pub mod rpc;
pub mod start;

#[cfg(test)]
mod mem_transport;
#[cfg(test)]
mod tests;

pub use network::Network;
pub use replicator::RaftReplicator;
pub use rpc::RaftRpcHandler;
