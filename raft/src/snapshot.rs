//! Snapshots of the governance state: the bytes (`codec` of last applied log id,
//! membership and `GovState`) and the `SnapshotSlot` that keeps the current one — in
//! memory, or also in a sled tree so a restarted node recovers from snapshot + log.

use crate::audit::AuditTrail;
use crate::codec::{self, CodecError};
use crate::state::{GovState, OutboxMarks};
use crate::typ::{LogId, SnapshotMeta, StoredMembership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tollgate_proto::{Guardrail, GuardrailId, KeyId, LogContent};

const SNAPSHOT_TREE: &str = "snapshot";
const CURRENT_KEY: &[u8] = b"current";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot storage i/o failed")]
    Sled(#[from] sled::Error),
    #[error("snapshot data is corrupt")]
    Codec(#[from] CodecError),
    #[error("snapshot data is as of {data:?} but its meta says {meta:?}")]
    MetaMismatch {
        meta: Option<LogId>,
        data: Option<LogId>,
    },
    #[error("a thread panicked while holding the snapshot")]
    Poisoned,
}

/// The bytes of a snapshot: what the state machine needs to resume from it.
pub fn encode_payload(
    last_applied: &Option<LogId>,
    membership: &StoredMembership,
    state: &GovState,
) -> Result<Vec<u8>, CodecError> {
    encode_state(&(last_applied, membership), state)
}

/// Reads a snapshot (of any protocol: `decode_state`).
pub fn decode_payload(
    bytes: &[u8],
) -> Result<(Option<LogId>, StoredMembership, GovState), CodecError> {
    let ((applied, membership), state) = decode_state(bytes)?;
    Ok((applied, membership, state))
}

/// `head` (where the state is as of), then the state and what rides after it: the
/// audit trail (protocol 3), the keys' request-log content (protocol 4) and, once there
/// are any, the outboxes' marks (protocol 6; until then the bytes are protocol 4's, which
/// a node of an older build in the same cluster reads), then, once there are any, the
/// guardrails (protocol 7). bincode writes a tuple as its
/// fields one after the other, so each protocol's bytes are the previous one's with a
/// field appended.
pub fn encode_state<H: Serialize>(head: &H, state: &GovState) -> Result<Vec<u8>, CodecError> {
    let (audit, contents, marks) = (
        state.audit(),
        state.key_log_contents(),
        state.outbox_marks(),
    );
    if !state.guardrails().is_empty() {
        return codec::encode(&(head, state, audit, contents, marks, state.guardrails()));
    }
    if marks.is_empty() {
        return codec::encode(&(head, state, audit, contents));
    }
    codec::encode(&(head, state, audit, contents, marks))
}

/// Reads what `encode_state` wrote, or what a build of protocol 3 (no keys' content)
/// or 2 (the state alone) wrote.
pub fn decode_state<H: DeserializeOwned>(bytes: &[u8]) -> Result<(H, GovState), CodecError> {
    type V6<H> = (
        H,
        GovState,
        AuditTrail,
        BTreeMap<KeyId, LogContent>,
        OutboxMarks,
    );
    type V4<H> = (H, GovState, AuditTrail, BTreeMap<KeyId, LogContent>);
    type V7<H> = (
        H,
        GovState,
        AuditTrail,
        BTreeMap<KeyId, LogContent>,
        OutboxMarks,
        BTreeMap<GuardrailId, Guardrail>,
    );
    if let Ok((head, mut state, audit, contents, marks, guardrails)) = codec::decode::<V7<H>>(bytes)
    {
        state.set_audit(audit);
        state.set_key_log_contents(contents);
        state.set_outbox_marks(marks);
        state.set_guardrails(guardrails);
        return Ok((head, state));
    }
    if let Ok((head, mut state, audit, contents, marks)) = codec::decode::<V6<H>>(bytes) {
        state.set_audit(audit);
        state.set_key_log_contents(contents);
        state.set_outbox_marks(marks);
        return Ok((head, state));
    }
    let newest = match codec::decode::<V4<H>>(bytes) {
        Ok((head, mut state, audit, contents)) => {
            state.set_audit(audit);
            state.set_key_log_contents(contents);
            return Ok((head, state));
        }
        Err(e) => e,
    };
    if let Ok((head, mut state, audit)) = codec::decode::<(H, GovState, AuditTrail)>(bytes) {
        state.set_audit(audit);
        return Ok((head, state));
    }
    codec::decode::<(H, GovState)>(bytes).map_err(|_| newest)
}

/// A finished snapshot: openraft's meta and the payload bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Where the current snapshot is kept. Clones share it: a snapshot builder running beside
/// the state machine saves into the same slot.
#[derive(Clone)]
pub struct SnapshotSlot {
    current: Arc<Mutex<Option<Arc<StoredSnapshot>>>>,
    /// `Some` for the durable variant: the snapshot is also written (and flushed) here.
    tree: Option<(sled::Db, sled::Tree)>,
}

impl SnapshotSlot {
    pub fn in_memory() -> SnapshotSlot {
        SnapshotSlot {
            current: Arc::default(),
            tree: None,
        }
    }

    /// A slot kept in `db`'s snapshot tree, loaded with the snapshot stored there.
    pub fn durable(db: &sled::Db) -> Result<SnapshotSlot, SnapshotError> {
        let tree = db.open_tree(SNAPSHOT_TREE)?;
        let stored = match tree.get(CURRENT_KEY)? {
            Some(bytes) => Some(Arc::new(codec::decode::<StoredSnapshot>(&bytes)?)),
            None => None,
        };
        Ok(SnapshotSlot {
            current: Arc::new(Mutex::new(stored)),
            tree: Some((db.clone(), tree)),
        })
    }

    pub fn current(&self) -> Result<Option<Arc<StoredSnapshot>>, SnapshotError> {
        Ok(self
            .current
            .lock()
            .map_err(|_| SnapshotError::Poisoned)?
            .clone())
    }

    /// Makes `snapshot` the current one (durably, for the durable variant): an installed
    /// snapshot replaces whatever the slot held.
    pub fn replace(&self, snapshot: StoredSnapshot) -> Result<(), SnapshotError> {
        self.store(snapshot, false).map(|_| ())
    }

    /// Like `replace`, unless the slot already holds a later snapshot: a slow build must not
    /// replace a newer snapshot installed meanwhile. Returns whether it was kept.
    pub fn offer(&self, snapshot: StoredSnapshot) -> Result<bool, SnapshotError> {
        self.store(snapshot, true)
    }

    fn store(&self, snapshot: StoredSnapshot, only_if_newer: bool) -> Result<bool, SnapshotError> {
        let mut current = self.current.lock().map_err(|_| SnapshotError::Poisoned)?;
        if let Some(held) = current.as_ref() {
            if only_if_newer && held.meta.last_log_id > snapshot.meta.last_log_id {
                return Ok(false);
            }
        }
        if let Some((db, tree)) = &self.tree {
            tree.insert(CURRENT_KEY, codec::encode(&snapshot)?)?;
            db.flush()?;
        }
        *current = Some(Arc::new(snapshot));
        Ok(true)
    }
}
