//! Three Raft nodes in one process over the in-memory transport: election, writes
//! through any node (forwarded to the leader), equal state everywhere, and a new leader
//! after the old one crashes.

use super::mem_transport::MemTransport;
use super::{Network, RaftReplicator, RaftRpcHandler};
use crate::replicator::{Replicator, SharedState};
use std::collections::BTreeMap;
use std::net::SocketAddr;
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
    transport.register(addr(id), Arc::new(RaftRpcHandler::new(raft.clone())));
    RaftReplicator::new(raft, state, Arc::new(transport.clone()))
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
    let n1 = node(1, &transport).await;
    let n2 = node(2, &transport).await;
    let n3 = node(3, &transport).await;
    let members: BTreeMap<u64, TollgateNode> = (1..=3)
        .map(|id| {
            (
                id,
                TollgateNode {
                    raft_addr: addr(id).to_string(),
                    http_addr: String::new(),
                },
            )
        })
        .collect();
    n1.raft().initialize(members).await.expect("initialize");

    // A write through every node, leader or not, lands once on all three.
    for (i, n) in [&n1, &n2, &n3].iter().enumerate() {
        assert_eq!(
            n.propose(customer(i as u32)).await.expect("propose"),
            Outcome::Done
        );
    }
    wait_equal(&[&n1, &n2, &n3], 3).await;

    // Crash the leader: the other two elect a new one and keep accepting writes.
    let leader = n1.raft().current_leader().await.expect("leader");
    transport.cut(addr(leader));
    for n in [&n1, &n2, &n3] {
        if n.raft().metrics().borrow().id == leader {
            let _ = n.raft().shutdown().await;
        }
    }
    let rest: Vec<&RaftReplicator<MemTransport>> = [&n1, &n2, &n3]
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
    for n in [&n1, &n2, &n3] {
        let _ = n.raft().shutdown().await;
    }
}
