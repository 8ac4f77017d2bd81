//! Raft nodes in one process over the in-memory transport: election, writes through
//! any node (forwarded to the leader), equal state everywhere, a new leader after the
//! old one crashes, linearizable reads on a follower, and joining and removing a node.

use super::mem_transport::MemTransport;
use super::ops::Hello;
use super::replicator::DataDirs;
use super::{Network, RaftReplicator, RaftRpcHandler};
use crate::governance::replicator::{Replicator, SharedState};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::{Command, Customer, Outcome};
use tollgate_raft::mem_log::MemLog;
use tollgate_raft::snapshot::SnapshotSlot;
use tollgate_raft::typ::{Raft, TollgateNode};

fn addr(id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 17000 + id as u16))
}

async fn node(id: u64, transport: &MemTransport) -> RaftReplicator<MemTransport> {
    let (log, sm) =
        tollgate_raft::storage::open_in_memory(MemLog::default(), SnapshotSlot::in_memory())
            .expect("storage");
    let state = SharedState::from_shared(sm.state());
    let config = Arc::new(tollgate_raft::config::raft_config("test").expect("config"));
    let raft = Raft::new(
        id,
        config,
        Network::new(Arc::new(transport.clone())),
        log,
        sm,
    )
    .await
    .expect("raft");
    let handler = Arc::new(RaftRpcHandler::new(raft.clone()));
    transport.register(addr(id), Arc::clone(&handler) as _);
    RaftReplicator::new(
        raft,
        state,
        Arc::new(transport.clone()),
        handler.contact(),
        || 0,
        DataDirs {
            raft: PathBuf::new(),
            outbox: PathBuf::new(),
        },
    )
}

fn member(id: u64) -> TollgateNode {
    TollgateNode {
        raft_addr: addr(id).to_string(),
        http_addr: String::new(),
    }
}

async fn formed(transport: &MemTransport) -> Vec<RaftReplicator<MemTransport>> {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(node(id, transport).await);
    }
    let members: BTreeMap<u64, TollgateNode> = (1..=3).map(|id| (id, member(id))).collect();
    nodes[0]
        .raft()
        .initialize(members)
        .await
        .expect("initialize");
    nodes
}

fn customer(n: u32) -> Command {
    Command::CreateCustomer(Customer {
        id: format!("cus_{n}").as_str().into(),
        name: format!("c{n}"),
        created_at_ms: 1,
    })
}

async fn wait_equal(nodes: &[&RaftReplicator<MemTransport>], customers: usize) {
    for _ in 0..100 {
        let counts: Vec<usize> = nodes
            .iter()
            .map(|n| n.state().read().customers().len())
            .collect();
        if counts.iter().all(|c| *c == customers) {
            let first = nodes[0].state().read().clone();
            assert!(
                nodes.iter().all(|n| *n.state().read() == first),
                "states differ"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("states did not converge on {customers} customers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_writes_made_anywhere() {
    let transport = MemTransport::default();
    let nodes = formed(&transport).await;
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    // A write through every node, leader or not, lands once on all three.
    for (i, n) in [n1, n2, n3].iter().enumerate() {
        assert_eq!(
            n.propose(customer(i as u32)).await.expect("propose"),
            Outcome::Done
        );
    }
    wait_equal(&[n1, n2, n3], 3).await;

    // Crash the leader: the other two elect a new one and keep accepting writes.
    let leader = n1.raft().current_leader().await.expect("leader");
    transport.cut(addr(leader));
    for n in [n1, n2, n3] {
        if n.raft().metrics().borrow().id == leader {
            let _ = n.raft().shutdown().await;
        }
    }
    let rest: Vec<&RaftReplicator<MemTransport>> = [n1, n2, n3]
        .into_iter()
        .filter(|n| n.raft().metrics().borrow().id != leader)
        .collect();
    assert_eq!(
        rest[0]
            .propose(customer(10))
            .await
            .expect("propose after failover"),
        Outcome::Done
    );
    wait_equal(&rest, 4).await;
    for n in [n1, n2, n3] {
        let _ = n.raft().shutdown().await;
    }
}

/// The follower among `nodes` (not the leader).
async fn a_follower(nodes: &[RaftReplicator<MemTransport>]) -> &RaftReplicator<MemTransport> {
    // Formation may still be electing: wait (bounded) until the node knows a leader.
    let mut leader = None;
    for _ in 0..200 {
        leader = nodes[0].raft().current_leader().await;
        if leader.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let leader = leader.expect("leader");
    nodes
        .iter()
        .find(|n| n.raft().metrics().borrow().id != leader)
        .expect("a follower")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_every_committed_write() {
    let transport = MemTransport::default();
    let nodes = formed(&transport).await;
    let follower = a_follower(&nodes).await;
    for i in 0..20 {
        // Written through one node, read right after on a follower.
        nodes[i % 3]
            .propose(customer(i as u32))
            .await
            .expect("propose");
        follower.linearize().await.expect("linearize");
        assert_eq!(follower.state().read().customers().len(), i + 1);
    }
    follower.catch_up().await;
    assert!(follower.caught_up());
    for n in &nodes {
        let _ = n.raft().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_as_learner_then_voter_and_can_be_removed() {
    let transport = MemTransport::default();
    let mut nodes = formed(&transport).await;
    nodes[0].propose(customer(1)).await.expect("propose");
    let n4 = node(4, &transport).await;
    assert!(!n4.caught_up());
    // Joins through a follower, which names the leader.
    let via = a_follower(&nodes).await.raft().metrics().borrow().id;
    let hello = Hello {
        node_id: 4,
        node: member(4),
    };
    tokio::time::timeout(Duration::from_secs(20), n4.join(hello, addr(via)))
        .await
        .expect("joined in time");
    assert!(nodes[0].cluster_view().voters.contains(&4));
    n4.catch_up().await;
    assert_eq!(n4.state().read().customers().len(), 1);
    nodes.push(n4);
    wait_equal(&nodes.iter().collect::<Vec<_>>(), 1).await;

    // Removed through any node; removing it again (a retry after a lost answer) is
    // answered the same, not refused.
    let voters = nodes[2].remove_node(4).await.expect("remove");
    assert_eq!(voters, vec![1, 2, 3]);
    assert!(!nodes[0].cluster_view().members.iter().any(|m| m.0 == 4));
    assert_eq!(nodes[1].remove_node(4).await.expect("again"), vec![1, 2, 3]);
    nodes[0]
        .propose(customer(2))
        .await
        .expect("propose without node 4");
    for n in &nodes {
        let _ = n.raft().shutdown().await;
    }
}

/// A member snapshots once its log has grown by `SNAPSHOT_EVERY_BYTES`, long before
/// openraft's count of entries (`SNAPSHOT_LOGS_SINCE_LAST`) asks for one.
#[tokio::test]
async fn a_log_of_large_entries_is_snapshotted_by_its_bytes() {
    use tollgate_raft::config::SNAPSHOT_LOGS_SINCE_LAST;
    use tollgate_raft::store::SNAPSHOT_EVERY_BYTES;
    let transport = MemTransport::default();
    let (log, sm) =
        tollgate_raft::storage::open_in_memory(MemLog::default(), SnapshotSlot::in_memory())
            .expect("storage");
    let bytes = log.clone();
    let config = Arc::new(tollgate_raft::config::raft_config("test").expect("config"));
    let raft = Raft::new(1, config, Network::new(Arc::new(transport)), log, sm)
        .await
        .expect("raft");
    raft.initialize(BTreeMap::from([(1, member(1))]))
        .await
        .expect("initialize");
    tokio::spawn(super::compact::snapshot_by_bytes(
        raft.clone(),
        Box::new(move || bytes.appended_bytes()),
    ));
    // Customers with 64 KiB names: entries as large as a saturated node's charge batches.
    let name = "n".repeat(64 << 10);
    let entries = SNAPSHOT_EVERY_BYTES / (64 << 10) + 2;
    assert!(entries < SNAPSHOT_LOGS_SINCE_LAST / 2);
    for n in 0..entries {
        let command = Command::CreateCustomer(Customer {
            id: format!("cus_{n}").as_str().into(),
            name: name.clone(),
            created_at_ms: 1,
        });
        raft.client_write(command).await.expect("write");
    }
    let mut snapshot = None;
    for _ in 0..100 {
        snapshot = raft.metrics().borrow().snapshot;
        if snapshot.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(snapshot.is_some(), "no snapshot after {entries} entries");
    raft.shutdown().await.expect("shutdown");
}
