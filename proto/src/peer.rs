//! Peer RPC envelopes: the versioned frame every node-to-node request and answer travels in.
//!
//! The shape of `Envelope` never changes, whatever the protocol version: a node must be
//! able to read the version (and the error answer to a version it does not speak) of a
//! peer that is newer or older than itself. What changes between versions is what the
//! `body` of each `kind` holds. A node speaks every version from `MIN_PROTOCOL_VERSION`
//! to `PROTOCOL_VERSION`, so version N and N+1 nodes interoperate during a rolling
//! upgrade.

use serde::{Deserialize, Serialize};

/// The newest protocol version this build speaks.
///
/// History (what each version added; a node speaks every version of its range):
/// - 1: the first cluster protocol.
/// - 2: the `Command::NodeDrained` log entry (a drained node gives its leases back and
///   the cluster records when). The cluster proposes it only once every member speaks 2
///   (`Command::SetProtocolVersion`, raised by the leader). `SetProtocolVersion` itself
///   is a version 1 kind (a node of the old range reads it, and stops: see
///   `tollgate_node::cluster::protocol::stop_when_outdated`); `GovState` and `NodeStatus` gained
///   fields, so builds from before this numbering cannot be upgraded in place.
/// - 3: the audit trail (`Command::Audited`, `AuthFailures`, `AnchorChain`) and the
///   request log's peer kinds. Snapshots carry the audit trail after the state, and
///   a snapshot of protocol 2 still reads (with no audit events).
/// - 4: a virtual key's own request-log content (`Command::SetKeyLogContent`). Snapshots
///   carry the keys' settings after the audit trail; older snapshots still read.
/// - 5: drains and removals asked through the admin API are audit events
///   (`Command::MemberChange`).
/// - 6: nodes propose their charges with where each is in their outbox
///   (`Command::OutboxCharges`), and the state de-duplicates them by the last place applied
///   of each outbox instead of remembering every request id. Snapshots carry those places
///   after the keys' settings once there are any; older snapshots still read.
/// - 7: guardrails (`Command::CreateGuardrail`, `UpdateGuardrail`, `DeleteGuardrail`).
///   Snapshots carry them after the outboxes' places once there are any.
pub const PROTOCOL_VERSION: u16 = 7;

/// The oldest protocol version this build still answers.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The protocol versions one node speaks, `min..=max`. A build speaks
/// `MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION`; a node may be told to speak less (the
/// `--protocol-version` switch, which makes a new build behave as an old one in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolRange {
    pub min: u16,
    pub max: u16,
}

impl ProtocolRange {
    /// Every version this build speaks.
    pub const BUILD: ProtocolRange = ProtocolRange {
        min: MIN_PROTOCOL_VERSION,
        max: PROTOCOL_VERSION,
    };

    /// This build capped at `max`; `None` if the build does not speak `max`.
    pub fn capped(max: u16) -> Option<ProtocolRange> {
        Self::BUILD.speaks(max).then_some(ProtocolRange {
            min: MIN_PROTOCOL_VERSION,
            max,
        })
    }

    pub fn speaks(self, version: u16) -> bool {
        (self.min..=self.max).contains(&version)
    }
}

impl std::fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

// The kinds of peer messages, every one of them: a kind is a wire tag, never reused or
// renumbered. A node answers a kind it does not know with `PeerError::UnknownKind`.

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
/// A request-log query (`records::LogFilter`), answered with this node's `LogPage`.
pub const KIND_LOGS: u16 = 12;
/// One request's record (`RequestId`), answered with `Option<records::LogEntry>`.
pub const KIND_LOG_GET: u16 = 13;
/// Request-log totals (`records::StatsQuery`), answered with `Vec<records::StatsGroup>`.
pub const KIND_STATS: u16 = 14;
/// Check this node's request-log chain against the anchors in the body
/// (`BTreeMap<u64, Vec<audit::Anchor>>`), answered with a `records::ChainReport`.
pub const KIND_LOG_VERIFY: u16 = 15;

/// Every application kind above, for routers and tests.
pub const APPLICATION_KINDS: [u16; 15] = [
    KIND_APPEND,
    KIND_VOTE,
    KIND_SNAPSHOT,
    KIND_WRITE,
    KIND_HELLO,
    KIND_STATUS,
    KIND_MEMBERSHIP,
    KIND_READ_INDEX,
    KIND_GOSSIP,
    KIND_ELECT,
    KIND_DRAIN,
    KIND_LOGS,
    KIND_LOG_GET,
    KIND_STATS,
    KIND_LOG_VERIFY,
];

/// Kinds from here up belong to the transport itself; applications use the kinds below.
pub const FIRST_RESERVED_KIND: u16 = 0xFF00;

/// The kind of an answer whose body is an encoded `PeerError` instead of a result.
pub const KIND_ERROR: u16 = 0xFFFF;

/// One request or one answer between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub protocol_version: u16,
    /// What `body` holds; the Raft RPCs and forwarded writes each get a kind below
    /// `FIRST_RESERVED_KIND`.
    pub kind: u16,
    pub body: Vec<u8>,
}

impl Envelope {
    /// Whether `kind` is one of the transport's own kinds.
    pub fn is_reserved_kind(kind: u16) -> bool {
        kind >= FIRST_RESERVED_KIND
    }
}

/// Why a peer answered a request with an error instead of a result. Sent as the body of a
/// `KIND_ERROR` envelope; new variants go at the end so older nodes keep decoding the
/// ones they know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PeerError {
    #[error("protocol version {received} is not supported (this node speaks {min_supported}..={max_supported})")]
    UnsupportedVersion {
        received: u16,
        min_supported: u16,
        max_supported: u16,
    },
    #[error("message kind {kind} is unknown to this node")]
    UnknownKind { kind: u16 },
    #[error("request frame of {len} bytes is larger than the {max} bytes allowed")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("request is malformed: {reason}")]
    Malformed { reason: String },
    #[error("handler did not answer within {after_ms} ms")]
    HandlerTimeout { after_ms: u64 },
    #[error("request rejected: {reason}")]
    Rejected { reason: String },
}
