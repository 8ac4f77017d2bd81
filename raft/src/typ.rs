//! The openraft type configuration: what a log entry carries (`Command`), what applying
//! it answers (`Outcome`), how nodes are named and addressed, and short aliases for the
//! openraft types the rest of the workspace names.

use serde::{Deserialize, Serialize};
use tollgate_proto::{Command, Outcome};

/// How a Raft member is reached: its peer (Raft RPC) address and its HTTP address, so a
/// follower can point clients and forwarded writes at the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TollgateNode {
    pub raft_addr: String,
    pub http_addr: String,
}

impl std::fmt::Display for TollgateNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft={} http={}", self.raft_addr, self.http_addr)
    }
}

openraft::declare_raft_types!(
    /// Tollgate's Raft: governance commands in, outcomes out, snapshots as bytes in memory.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = TollgateNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = crate::runtime::SeededRuntime,
);

/// A Raft member's id.
pub type NodeId = u64;
/// One log entry: a log id and a blank, membership or `Command` payload.
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
/// Term, leader and index of a log entry.
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type LogState = openraft::LogState<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, TollgateNode>;
/// A membership config with the id of the log entry that carried it.
pub type StoredMembership = openraft::StoredMembership<NodeId, TollgateNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, TollgateNode>;
/// What every storage trait method fails with; openraft stops the node on it.
pub type StorageError = openraft::StorageError<NodeId>;
pub type StorageIOError = openraft::StorageIOError<NodeId>;
pub type Raft = openraft::Raft<TypeConfig>;
