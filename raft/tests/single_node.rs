//! A real one-node openraft over the durable storage: steady charging keeps the log
//! bounded (snapshots and purges happen), and a restarted node comes back from snapshot
//! + log with the same governance state.
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use openraft::error::{NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, SnapshotPolicy};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::*;
use tollgate_raft::typ::Raft;
use tollgate_raft::{open_durable, raft_config, GovState, NodeId, TollgateNode, TypeConfig};

const SNAPSHOT_EVERY: u64 = 40;
const KEEP_BEHIND: u64 = 5;
const N_CHARGES: u64 = 300;
const WAIT: Option<Duration> = Some(Duration::from_secs(10));

/// A one-node cluster never sends an RPC; if openraft tries, it finds nobody.
struct NoPeers;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeers;

    async fn new_client(&mut self, _target: NodeId, _node: &TollgateNode) -> NoPeers {
        NoPeers
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, TollgateNode, E> {
    RPCError::Unreachable(Unreachable::new(&AnyError::error("one-node cluster")))
}

impl RaftNetwork<TypeConfig> for NoPeers {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, TollgateNode, RaftError<NodeId>>>
    {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, TollgateNode, RaftError<NodeId, openraft::error::InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, TollgateNode, RaftError<NodeId>>> {
        Err(RPCError::Network(NetworkError::new(&AnyError::error(
            "one-node cluster",
        ))))
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config() -> Arc<openraft::Config> {
    let mut config = raft_config("single-node-test").expect("config");
    config.snapshot_policy = SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY);
    config.max_in_snapshot_log_to_keep = KEEP_BEHIND;
    Arc::new(config)
}

fn node() -> TollgateNode {
    TollgateNode {
        raft_addr: "127.0.0.1:7001".into(),
        http_addr: "127.0.0.1:8001".into(),
    }
}

fn setup_commands() -> Vec<Command> {
    let key = VirtualKey {
        id: KeyId::from("vk_1"),
        name: "one".into(),
        secret_sha256: [7; 32],
        secret_prefix: "tg-x".into(),
        team_id: None,
        customer_id: None,
        provider_configs: vec![],
        disabled: false,
        created_at_ms: 0,
        rotated_at_ms: None,
    };
    let budget = Budget {
        id: BudgetId::from("b_1"),
        owner: Owner::VirtualKey(KeyId::from("vk_1")),
        limit: Usd(1_000_000_000),
        reset: ResetDuration::Month,
        calendar_aligned: true,
        created_at_ms: 0,
    };
    vec![Command::CreateKey(key), Command::CreateBudget(budget)]
}

fn charge(i: u64) -> Command {
    Command::ChargeBatch {
        charges: vec![Charge {
            request_id: RequestId::from(format!("req_{i}").as_str()),
            key_id: KeyId::from("vk_1"),
            provider_config_id: None,
            model: "m".into(),
            usage: Usage::default(),
            cost: Usd(10),
            at_ms: 1_767_225_600_000 + i,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_stays_bounded_and_a_restart_recovers_from_snapshot_and_log() {
    let dir = TempDir(
        std::env::temp_dir().join(format!("tollgate-raft-single-node-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&dir.0);

    let before: GovState;
    let last_applied;
    {
        let (log, sm) = open_durable(&dir.0).expect("open");
        let state = sm.state();
        let raft = Raft::new(1, config(), NoPeers, log, sm)
            .await
            .expect("raft");
        raft.initialize(BTreeMap::from([(1, node())]))
            .await
            .expect("initialize");
        raft.wait(WAIT)
            .current_leader(1, "leader elected")
            .await
            .expect("leader");
        for command in setup_commands() {
            let written = raft.client_write(command).await.expect("write");
            assert_eq!(written.data, Outcome::Done);
        }
        for i in 0..N_CHARGES {
            let written = raft.client_write(charge(i)).await.expect("write");
            assert_eq!(
                written.data,
                Outcome::Charged {
                    applied: 1,
                    duplicates: 0
                }
            );
        }
        let metrics = raft
            .wait(WAIT)
            .metrics(
                |m| {
                    let last = m.last_log_index.unwrap_or(0);
                    let purged = m.purged.map_or(0, |p| p.index);
                    let applied = m.last_applied.map(|a| a.index);
                    last > N_CHARGES
                        && applied == m.last_log_index
                        && purged + KEEP_BEHIND + SNAPSHOT_EVERY >= last
                },
                "log purged behind a snapshot",
            )
            .await
            .expect("bounded log");
        assert!(metrics.snapshot.is_some(), "a snapshot was built");
        // Entries after the snapshot exist, so the restart must re-apply some log.
        assert!(metrics.snapshot < metrics.last_applied);
        last_applied = metrics.last_applied;
        before = state.read().expect("state").clone();
        assert_eq!(
            before.usage_of_key(&KeyId::from("vk_1")).requests,
            N_CHARGES
        );
        raft.shutdown().await.expect("shutdown");
    }

    // `shutdown` returns before every openraft task has dropped its handle on the storage
    // (the state machine worker ends a moment later), so the database lock may take a
    // moment to be released.
    let mut attempts = 0;
    let (log, sm) = loop {
        match open_durable(&dir.0) {
            Ok(storage) => break storage,
            Err(_) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen: {e:?}"),
        }
    };
    let state = sm.state();
    let raft = Raft::new(1, config(), NoPeers, log, sm)
        .await
        .expect("raft");
    raft.wait(WAIT)
        .metrics(
            |m| m.last_applied >= last_applied,
            "re-applied after restart",
        )
        .await
        .expect("recovered");
    assert_eq!(*state.read().expect("state"), before);
    raft.shutdown().await.expect("shutdown");
}
