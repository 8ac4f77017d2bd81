//! The Raft cluster inside a node: the openraft network over `PeerTransport`, the RPC
//! handler that feeds a peer's requests to the local Raft, and `RaftReplicator`, the
//! `Replicator` that proposes through Raft (forwarding to the leader when this node
//! follows).
//!
//! # Layout
//! - `rpc`: `RaftRpcHandler`, which answers Raft's and the cluster's peer messages.
//! - `ops`: leader operations (forwarded writes, membership, read index) and `Hello`.
//! - `contact`: `LeaderContact`, when this node last heard from a leader.
//! - `network`: `Network`/`NetworkClient`, openraft's network over `PeerTransport`.
//! - `replicator`: `RaftReplicator`.
//! - `start`: starting a clustered node and forming the cluster.
//! - `elect`: a watch that breaks split votes openraft 0.9 can fall into.
//! - `compact`: a snapshot once the log since the last takes too many bytes.
//! - `handover`: a draining leader hands leadership to a caught-up follower.
//! - `drain`: the drain signal (SIGTERM or `admin drain`) the server and cluster act on.
//! - `version`: the protocol versions a node speaks and met (`Versions`, one per node).
//! - `protocol`: raising the cluster's protocol version; stopping a node left behind.
//! - `gossip`: chitchat membership and failure detection over the peer transport.
//! - `transport`: node-to-node RPC (`PeerTransport`, `PeerHandler`) over mutual-TLS QUIC.
//! - `cert`: the cluster CA and node certificates (`tollgate cert ...`).
//! - `mem_transport` (tests): an in-process `PeerTransport` for multi-node tests.

pub mod cert;
pub mod compact;
pub mod contact;
pub mod drain;
pub mod elect;
pub mod gossip;
pub mod handover;
pub mod network;
pub mod ops;
pub mod protocol;
pub mod replicator;
pub mod rpc;
pub mod start;
pub mod transport;
pub mod version;

#[cfg(test)]
mod mem_transport;
#[cfg(test)]
mod tests;

pub use network::Network;
pub use replicator::RaftReplicator;
pub use rpc::RaftRpcHandler;
