//! The audit trail's wire types: who changed what (an admin write, carried inside the
//! Raft command that makes it, so every node holds the same ordered events), failed
//! admin authentication, and the anchors of each node's request-log hash chain.

use crate::UnixMs;
use serde::{Deserialize, Serialize};

/// Who made an admin change: the admin token's principal.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Actor {
    /// `admin_token` (the bootstrap token), later principals and users.
    pub kind: String,
    pub id: String,
    pub name: String,
}

/// Where an admin change came from, carried with its command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditMeta {
    pub at_ms: UnixMs,
    pub actor: Actor,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
}

/// What an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: String,
    pub id: String,
}

/// One audit event. `hash` is SHA-256 over `prev_hash` and the encoding of the event
/// with both hashes zeroed (`AuditEvent::unhashed`), so the events form a chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub time_ms: UnixMs,
    pub actor: Actor,
    /// `customer.create`, `virtual_key.rotate`, `admin.auth_failed`, ...
    pub action: String,
    pub target: Target,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    /// The target before and after, as JSON (no secret, no secret hash).
    pub before: Option<String>,
    pub after: Option<String>,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl AuditEvent {
    /// The event as hashed: both hashes zeroed.
    pub fn unhashed(&self) -> AuditEvent {
        AuditEvent {
            prev_hash: [0; 32],
            hash: [0; 32],
            ..self.clone()
        }
    }
}

/// A node's request-log chain head, replicated so that no single host can rewrite its
/// history unnoticed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub node: u64,
    pub seq: u64,
    pub hash: [u8; 32],
    pub at_ms: UnixMs,
}
