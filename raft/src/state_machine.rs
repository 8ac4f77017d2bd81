//! `StateMachineStore`: openraft's state machine (`RaftStateMachine`) over the shared
//! `GovState`. Committed commands go through `GovState::apply`; the state lives in memory
//! and is made durable by snapshots (`SnapshotSlot`), so a restart resumes from the last
//! snapshot and openraft re-applies the log after it.

use crate::snapshot::{
    decode_payload, encode_payload, SnapshotError, SnapshotSlot, StoredSnapshot,
};
use crate::state::GovState;
use crate::typ::{
    Entry, EntryPayload, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, TypeConfig,
};
use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, RaftSnapshotBuilder};
use std::io::Cursor;
use std::sync::{Arc, RwLock};
use tollgate_proto::Outcome;

/// The applied governance state, shared with the node's readers. Writers are the state
/// machine only; readers should hold the lock just long enough to copy out what they need.
pub type SharedGovState = Arc<RwLock<GovState>>;

pub struct StateMachineStore {
    state: SharedGovState,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    slot: SnapshotSlot,
}

/// Builds one snapshot from a copy of the state taken when openraft asked for the
/// builder, so applying goes on while the copy is encoded and stored.
pub struct GovSnapshotBuilder {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// `None` if an apply panicked while holding the state: there is nothing sound to copy.
    state: Option<GovState>,
    slot: SnapshotSlot,
}

fn poisoned() -> SnapshotError {
    SnapshotError::Poisoned
}

impl StateMachineStore {
    /// An empty state machine whose snapshots live in memory only.
    pub fn in_memory() -> StateMachineStore {
        StateMachineStore {
            state: SharedGovState::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            slot: SnapshotSlot::in_memory(),
        }
    }

    /// A state machine keeping its snapshots in `slot`, resumed from the snapshot the slot
    /// holds, if any (a restart: openraft then re-applies the log after it).
    pub fn resume(slot: SnapshotSlot) -> Result<StateMachineStore, SnapshotError> {
        let mut sm = StateMachineStore::in_memory();
        sm.slot = slot;
        if let Some(stored) = sm.slot.current()? {
            sm.restore(&stored.meta, &stored.data)?;
        }
        Ok(sm)
    }

    /// The applied state, for the node to read.
    pub fn state(&self) -> SharedGovState {
        self.state.clone()
    }

    pub fn last_applied(&self) -> Option<LogId> {
        self.last_applied
    }

    /// Replaces everything applied with a snapshot's contents.
    fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), SnapshotError> {
        let (last_applied, membership, state) = decode_payload(data)?;
        if last_applied != meta.last_log_id || membership != meta.last_membership {
            return Err(SnapshotError::MetaMismatch {
                meta: meta.last_log_id,
                data: last_applied,
            });
        }
        *self.state.write().map_err(|_| poisoned())? = state;
        self.last_applied = last_applied;
        self.membership = membership;
        Ok(())
    }
}

/// A stable name for a snapshot as of `last_applied`: snapshots of the same point hold the
/// same state, so the name need not be unique beyond that (and stays deterministic for
/// the simulator).
fn snapshot_id(last_applied: &Option<LogId>) -> String {
    match last_applied {
        // (With `single-term-leader` a log id is a term and an index.)
        Some(id) => format!("{}-{}", id.leader_id.term, id.index),
        None => "empty".to_owned(),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for GovSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: snapshot_id(&self.last_applied),
        };
        let write_err =
            |e: &SnapshotError| StorageIOError::write_snapshot(Some(meta.signature()), e);
        let state = self.state.as_ref().ok_or_else(|| write_err(&poisoned()))?;
        let data = encode_payload(&self.last_applied, &self.membership, state)
            .map_err(|e| write_err(&e.into()))?;
        self.slot
            .offer(StoredSnapshot {
                meta: meta.clone(),
                data: data.clone(),
            })
            .map_err(|e| write_err(&e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = GovSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    /// Answers one `Outcome` per entry; blank and membership entries answer `Done`.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self
            .state
            .write()
            .map_err(|_| StorageIOError::write_state_machine(&poisoned()))?;
        let mut outcomes = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Done,
                EntryPayload::Normal(command) => state.apply(&command),
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Done
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> GovSnapshotBuilder {
        // This method cannot fail; a poisoned lock fails the build instead.
        let state = self.state.read().ok().map(|guard| guard.clone());
        GovSnapshotBuilder {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            state,
            slot: self.slot.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let write_err =
            |e: SnapshotError| StorageIOError::write_snapshot(Some(meta.signature()), &e);
        self.restore(meta, &data).map_err(write_err)?;
        self.slot
            .replace(StoredSnapshot {
                meta: meta.clone(),
                data,
            })
            .map_err(write_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self
            .slot
            .current()
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(current.map(|stored| Snapshot {
            meta: stored.meta.clone(),
            snapshot: Box::new(Cursor::new(stored.data.clone())),
        }))
    }
}
