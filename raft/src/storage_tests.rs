//! Tests of the Raft storage: openraft's own storage suite against both variants,
//! snapshot build → install round trips, and recovery from snapshot + log after a restart.

use crate::log_backend::LogBackend;
use crate::log_store::LogStore;
use crate::mem_log::MemLog;
use crate::sled_log::SledLog;
use crate::snapshot::SnapshotSlot;
use crate::state::GovState;
use crate::state_machine::StateMachineStore;
use crate::storage::{open_durable, open_in_memory};
use crate::test_support::{block_on, TempDir};
use crate::tests::{charge, world, world_commands, T0};
use crate::typ::{
    Entry, EntryPayload, LogId, Membership, StorageError, StoredMembership, TollgateNode,
    TypeConfig,
};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, RaftSnapshotBuilder, StorageHelper};
use std::collections::{BTreeMap, BTreeSet};
use tollgate_proto::{Command, Outcome};

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore<MemLog>, StateMachineStore> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore<MemLog>, StateMachineStore), StorageError> {
        Ok((
            (),
            LogStore::new(MemLog::new()),
            StateMachineStore::in_memory(),
        ))
    }
}

/// Each store gets its own directory, removed when the suite drops the guard.
struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore<SledLog>, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<SledLog>, StateMachineStore), StorageError> {
        let dir = TempDir::new("suite");
        let (log, sm) = open_durable(dir.path()).expect("open durable storage");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_passes_in_memory() {
    Suite::test_all(MemBuilder).expect("suite");
}

#[test]
fn openraft_suite_passes_on_sled() {
    Suite::test_all(SledBuilder).expect("suite");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership {
    let node = TollgateNode {
        raft_addr: "127.0.0.1:7001".into(),
        http_addr: "127.0.0.1:8001".into(),
    };
    Membership::new(vec![BTreeSet::from([1])], BTreeMap::from([(1, node)]))
}

/// A log as a leader would write it: a blank entry, the membership, then the world's
/// setup commands and one charge batch per `n_charges`.
fn entries(n_charges: u64) -> Vec<Entry> {
    let mut payloads = vec![EntryPayload::Blank, EntryPayload::Membership(membership())];
    payloads.extend(world_commands().into_iter().map(EntryPayload::Normal));
    payloads.extend((0..n_charges).map(|i| {
        EntryPayload::Normal(Command::ChargeBatch {
            charges: vec![charge(&format!("r{i}"), "vk_1", 10, T0 + i)],
        })
    }));
    payloads
        .into_iter()
        .zip(1..)
        .map(|(payload, index)| Entry {
            log_id: log_id(1, index),
            payload,
        })
        .collect()
}

/// The state after applying every command in `entries`.
fn expected(entries: &[Entry]) -> GovState {
    let mut s = GovState::new();
    for e in entries {
        if let EntryPayload::Normal(c) = &e.payload {
            s.apply(c);
        }
    }
    s
}

fn gov(sm: &StateMachineStore) -> GovState {
    sm.state().read().expect("lock").clone()
}

#[test]
fn apply_answers_one_outcome_per_entry() {
    let mut sm = StateMachineStore::in_memory();
    let log = entries(2);
    let outcomes = block_on(sm.apply(log.clone())).expect("apply");
    assert_eq!(outcomes.len(), log.len());
    assert_eq!(outcomes[0], Outcome::Done);
    assert_eq!(
        outcomes.last(),
        Some(&Outcome::Charged {
            applied: 1,
            duplicates: 0
        })
    );
    assert_eq!(gov(&sm), expected(&log));
    let (applied, stored) = block_on(sm.applied_state()).expect("applied");
    assert_eq!(applied, log.last().map(|e| e.log_id));
    assert_eq!(
        stored,
        StoredMembership::new(Some(log_id(1, 2)), membership())
    );
    // Applying a charge again is a duplicate, not a second charge.
    let again = Entry {
        log_id: log_id(1, log.len() as u64 + 1),
        payload: log[log.len() - 1].payload.clone(),
    };
    let outcomes = block_on(sm.apply([again])).expect("apply");
    assert_eq!(
        outcomes,
        vec![Outcome::Charged {
            applied: 0,
            duplicates: 1
        }]
    );
}

#[test]
fn snapshot_round_trip_restores_an_equal_state() {
    let log = entries(5);
    let mut leader = StateMachineStore::in_memory();
    block_on(leader.apply(log.clone())).expect("apply");
    let mut builder = block_on(leader.get_snapshot_builder());
    // Applying after the builder was taken must not leak into the snapshot.
    let later = Entry {
        log_id: log_id(2, log.len() as u64 + 1),
        payload: EntryPayload::Normal(Command::ChargeBatch {
            charges: vec![charge("late", "vk_1", 10, T0)],
        }),
    };
    block_on(leader.apply([later])).expect("apply");
    let snapshot = block_on(builder.build_snapshot()).expect("build");
    assert_eq!(snapshot.meta.last_log_id, log.last().map(|e| e.log_id));

    let mut follower = StateMachineStore::in_memory();
    let mut receiving = block_on(follower.begin_receiving_snapshot()).expect("begin");
    *receiving = *snapshot.snapshot.clone();
    block_on(follower.install_snapshot(&snapshot.meta, receiving)).expect("install");
    assert_eq!(gov(&follower), expected(&log));
    assert_eq!(gov(&follower), world_with_charges(5));
    assert_eq!(
        block_on(follower.applied_state()).expect("applied"),
        (
            snapshot.meta.last_log_id,
            snapshot.meta.last_membership.clone()
        )
    );
    let current = block_on(follower.get_current_snapshot())
        .expect("current")
        .expect("a snapshot");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(
        current.snapshot.into_inner(),
        snapshot.snapshot.into_inner()
    );
}

fn world_with_charges(n: u64) -> GovState {
    let mut s = world();
    for i in 0..n {
        s.apply(&Command::ChargeBatch {
            charges: vec![charge(&format!("r{i}"), "vk_1", 10, T0 + i)],
        });
    }
    s
}

#[test]
fn install_rejects_a_snapshot_whose_meta_does_not_match_its_data() {
    let log = entries(1);
    let mut leader = StateMachineStore::in_memory();
    block_on(leader.apply(log.clone())).expect("apply");
    let snapshot = block_on(async {
        let mut builder = leader.get_snapshot_builder().await;
        builder.build_snapshot().await
    })
    .expect("build");
    let mut meta = snapshot.meta.clone();
    meta.last_log_id = Some(log_id(9, 99));
    let mut follower = StateMachineStore::in_memory();
    assert!(block_on(follower.install_snapshot(&meta, snapshot.snapshot)).is_err());
    assert_eq!(gov(&follower), GovState::new(), "nothing installed");
    assert!(block_on(follower.get_current_snapshot())
        .expect("current")
        .is_none());
}

/// Writes `log`, applies the first `snapshot_at` entries, snapshots and purges there, and
/// marks everything committed: the state a node is in when it stops.
fn run_until_stop<B: LogBackend>(
    log_store: &mut LogStore<B>,
    sm: &mut StateMachineStore,
    log: &[Entry],
    snapshot_at: usize,
) {
    log_store.backend().append(log).expect("append");
    log_store.backend().flush().expect("flush");
    block_on(sm.apply(log[..snapshot_at].to_vec())).expect("apply");
    let snapshot = block_on(async {
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await
    })
    .expect("build");
    let snapshot_id = snapshot.meta.last_log_id.expect("non-empty");
    block_on(log_store.purge(snapshot_id)).expect("purge");
    block_on(log_store.save_committed(log.last().map(|e| e.log_id))).expect("committed");
}

/// What openraft does at start: resume from the snapshot, re-apply the committed log.
fn start<B: LogBackend>(log_store: &mut LogStore<B>, sm: &mut StateMachineStore) -> Option<LogId> {
    block_on(StorageHelper::new(log_store, sm).get_initial_state()).expect("start");
    sm.last_applied()
}

#[test]
fn sled_node_recovers_from_snapshot_and_log_after_restart() {
    let dir = TempDir::new("restart");
    let log = entries(20);
    let snapshot_at = 10;
    {
        let (mut log_store, mut sm) = open_durable(dir.path()).expect("open");
        run_until_stop(&mut log_store, &mut sm, &log, snapshot_at);
    }
    let (mut log_store, mut sm) = open_durable(dir.path()).expect("reopen");
    // Resumed from the snapshot alone, before any log is re-applied.
    assert_eq!(sm.last_applied(), Some(log[snapshot_at - 1].log_id));
    assert_eq!(gov(&sm), expected(&log[..snapshot_at]));
    let remaining = block_on(log_store.get_log_state()).expect("log state");
    assert_eq!(
        remaining.last_purged_log_id,
        Some(log[snapshot_at - 1].log_id)
    );
    assert_eq!(remaining.last_log_id, log.last().map(|e| e.log_id));

    let applied = start(&mut log_store, &mut sm);
    assert_eq!(applied, log.last().map(|e| e.log_id));
    assert_eq!(gov(&sm), expected(&log));
    assert_eq!(gov(&sm), world_with_charges(20));
}

#[test]
fn memory_node_recovers_from_snapshot_and_log_after_restart() {
    let (disk_log, disk_snapshots) = (MemLog::new(), SnapshotSlot::in_memory());
    let log = entries(20);
    {
        let (mut log_store, mut sm) =
            open_in_memory(disk_log.clone(), disk_snapshots.clone()).expect("open");
        run_until_stop(&mut log_store, &mut sm, &log, 12);
    }
    let (mut log_store, mut sm) = open_in_memory(disk_log, disk_snapshots).expect("reopen");
    assert_eq!(gov(&sm), expected(&log[..12]));
    let applied = start(&mut log_store, &mut sm);
    assert_eq!(applied, log.last().map(|e| e.log_id));
    assert_eq!(gov(&sm), expected(&log));
}

#[test]
fn a_slow_build_does_not_replace_a_newer_installed_snapshot() {
    let log = entries(3);
    let mut leader = StateMachineStore::in_memory();
    block_on(leader.apply(log.clone())).expect("apply");
    let newer = block_on(async {
        let mut builder = leader.get_snapshot_builder().await;
        builder.build_snapshot().await
    })
    .expect("build");

    let mut follower = StateMachineStore::in_memory();
    block_on(follower.apply(log[..4].to_vec())).expect("apply");
    let mut slow = block_on(follower.get_snapshot_builder());
    block_on(follower.install_snapshot(&newer.meta, newer.snapshot)).expect("install");
    block_on(slow.build_snapshot()).expect("build");
    let current = block_on(follower.get_current_snapshot())
        .expect("current")
        .expect("a snapshot");
    assert_eq!(current.meta, newer.meta);
}

#[test]
fn raft_config_is_valid_and_bounds_the_log() {
    let config = crate::config::raft_config("tollgate").expect("valid");
    assert_eq!(
        config.snapshot_policy,
        openraft::SnapshotPolicy::LogsSinceLast(crate::config::SNAPSHOT_LOGS_SINCE_LAST)
    );
    assert_eq!(
        config.max_in_snapshot_log_to_keep,
        crate::config::LOGS_KEPT_BEHIND_SNAPSHOT
    );
}
