//! Admission against escrow leases, on a local log: two `Admission`s over one replicated
//! state stand for two nodes of a cluster.

use super::*;
use crate::clock::SystemClock;
use crate::governance::replicator::LocalReplicator;
use tollgate_proto::{Budget, Command, KeyId, Outcome, Owner, ResetDuration};

struct World {
    replicator: Arc<dyn Replicator>,
    clock: Arc<SystemClock>,
    dir: std::path::PathBuf,
}

impl World {
    async fn new(tag: &str, limit: u64) -> World {
        let dir =
            std::env::temp_dir().join(format!("tollgate-admission-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let replicator: Arc<dyn Replicator> =
            Arc::new(LocalReplicator::open(&dir).expect("local store"));
        let budget = Budget {
            id: BudgetId("bud_k".into()),
            owner: Owner::VirtualKey(KeyId::from("vk_1")),
            limit: Usd(limit),
            reset: ResetDuration::Day,
            calendar_aligned: true,
            created_at_ms: 0,
        };
        let key = tollgate_proto::VirtualKey {
            id: KeyId::from("vk_1"),
            name: "k".into(),
            secret_sha256: [0; 32],
            secret_prefix: "tg-".into(),
            team_id: None,
            customer_id: None,
            provider_configs: Vec::new(),
            disabled: false,
            created_at_ms: 0,
            rotated_at_ms: None,
        };
        replicator
            .propose(Command::CreateKey(key))
            .await
            .expect("key");
        let outcome = replicator
            .propose(Command::CreateBudget(budget))
            .await
            .expect("budget");
        assert_eq!(outcome, Outcome::Done);
        World {
            replicator,
            clock: Arc::new(SystemClock::default()),
            dir,
        }
    }

    fn node(&self, id: u64) -> Arc<Admission> {
        Admission::new(
            id,
            Mode::Leases,
            Arc::clone(&self.replicator),
            Arc::clone(&self.clock) as Arc<dyn Clock>,
        )
    }

    fn lease(&self, node: u64) -> u64 {
        let state = self.replicator.state().read();
        let b = BudgetId("bud_k".into());
        let w = state
            .budget_status(&b, self.clock.now_ms())
            .expect("budget")
            .window
            .start_ms;
        state.escrow().lease_of(&b, node, w).0
    }

    fn applied(&self) -> u64 {
        self.replicator.status().applied_index
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now_ms() -> UnixMs {
    SystemClock::default().now_ms()
}

fn chain() -> Vec<BudgetId> {
    vec![BudgetId("bud_k".into())]
}

#[tokio::test]
async fn a_lease_admits_many_requests_with_one_grant() {
    let world = World::new("one-grant", 1_000_000).await;
    let node = world.node(1);
    let first = node.reserve(&chain(), Usd(1_000)).await.expect("admitted");
    let after_grant = world.applied();
    assert!(world.lease(1) >= 2_000, "sized above one request");
    let mut holds = vec![first];
    while world.lease(1) - 1_000 * holds.len() as u64 >= 1_000 {
        holds.push(node.reserve(&chain(), Usd(1_000)).await.expect("admitted"));
    }
    assert_eq!(
        world.applied(),
        after_grant,
        "no round trip while the lease lasts"
    );
    assert_eq!(node.held_here(&chain()[0]).0, 1_000 * holds.len() as u64);
    drop(holds);
    assert_eq!(node.held_here(&chain()[0]).0, 0);
}

#[tokio::test]
async fn reservations_never_pass_the_limit_and_the_refusal_names_the_budget() {
    let world = World::new("limit", 10_000).await;
    let node = world.node(1);
    let mut holds = Vec::new();
    loop {
        match node.reserve(&chain(), Usd(3_000)).await {
            Ok(h) => holds.push(h),
            Err(AdmissionError::Exhausted(m)) => {
                assert!(m.contains("bud_k"), "{m}");
                assert!(m.contains("limit $0.01"), "{m}");
                assert!(m.contains("resets at"), "{m}");
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(holds.len() <= 3);
    }
    assert_eq!(holds.len(), 3, "3 × 3000 fit in 10000, a fourth does not");
}

/// Node 1 holds most of the room; node 2 falls short, node 1 sees the shortfall and
/// gives back what it does not use, and node 2 is admitted.
#[tokio::test]
async fn a_shortfall_makes_other_nodes_give_back_unused_room() {
    let world = World::new("shortfall", 10_000).await;
    let (one, two) = (world.node(1), world.node(2));
    let hold = one.reserve(&chain(), Usd(3_000)).await.expect("admitted");
    let lease_one = world.lease(1);
    assert!(lease_one >= 6_000, "node 1 took {lease_one}");
    let maintenance = {
        let one = Arc::clone(&one);
        tokio::spawn(async move {
            for _ in 0..50 {
                one.maintain().await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let admitted = two.reserve(&chain(), Usd(6_000)).await;
    maintenance.abort();
    let admitted = admitted.expect("node 2 admitted with room node 1 gave back");
    assert_eq!(world.lease(1), 3_000, "node 1 keeps what its request holds");
    assert!(world.lease(2) >= 6_000);
    // Together they never hold more than the limit.
    assert!(world.lease(1) + world.lease(2) <= 10_000);
    drop((hold, admitted));
}

#[tokio::test]
async fn a_new_window_voids_the_old_lease() {
    let world = World::new("window", 10_000).await;
    let node = world.node(1);
    // Exhaust today's window.
    let mut holds = Vec::new();
    while let Ok(h) = node.reserve(&chain(), Usd(5_000)).await {
        holds.push(h);
    }
    assert_eq!(holds.len(), 2);
    // Charges applied: settle and propose them as the pipeline would.
    let now = world.clock.now_ms();
    let charges: Vec<tollgate_proto::Charge> = (0..2)
        .map(|i| tollgate_proto::Charge {
            request_id: tollgate_proto::RequestId(format!("req_{i}")),
            key_id: KeyId::from("vk_1"),
            provider_config_id: None,
            model: "m".into(),
            usage: tollgate_proto::Usage::default(),
            cost: Usd(5_000),
            at_ms: now,
        })
        .collect();
    world
        .replicator
        .propose(Command::NodeChargeBatch { node: 1, charges })
        .await
        .expect("charged");
    drop(holds);
    assert!(
        node.reserve(&chain(), Usd(1)).await.is_err(),
        "spent in full"
    );
    // A day later: a new window, and the old lease counts for nothing.
    world.clock.set_offset_ms(86_400_000);
    let hold = node
        .reserve(&chain(), Usd(5_000))
        .await
        .expect("new window");
    drop(hold);
}

#[tokio::test]
async fn replayed_charges_hold_their_cost_until_applied() {
    let world = World::new("replay", 10_000).await;
    let node = world.node(1);
    let first = node.reserve(&chain(), Usd(4_000)).await.expect("admitted");
    let lease = world.lease(1);
    assert_eq!(lease, 10_000, "alone, the node may lease the whole room");
    drop(first);
    // As after a restart: the lease is there, and an unapplied charge of the whole of it
    // holds its cost: nothing more may be admitted, and no grant is asked for.
    let replayed = node.hold_replayed(&chain(), Usd(lease));
    let applied = world.applied();
    assert!(matches!(
        node.reserve(&chain(), Usd(1_000)).await,
        Err(AdmissionError::Exhausted(_))
    ));
    assert_eq!(world.applied(), applied);
    drop(replayed);
}

/// Four nodes over one replicated state, 40 clients each sending to a random node,
/// real costs at or below the estimate except for a few above it, every node's
/// maintenance running: the applied spend never passes the limit by more than the sum
/// of real costs above their estimates, and the budget is used nearly to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_together_never_spend_past_the_limit() {
    const LIMIT: u64 = 1_000_000;
    let world = World::new("together", LIMIT).await;
    let nodes: Vec<Arc<Admission>> = (1..=4).map(|id| world.node(id)).collect();
    let mut maintenance = tokio::task::JoinSet::new();
    for n in &nodes {
        n.spawn_maintenance(&mut maintenance);
    }
    let excess = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients = (0..40u64).map(|client| {
        let nodes = nodes.clone();
        let replicator = Arc::clone(&world.replicator);
        let excess = Arc::clone(&excess);
        let refused = Arc::clone(&refused);
        tokio::spawn(async move {
            let mut rng = client.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            for i in 0..60u64 {
                let node = &nodes[next(4) as usize];
                let estimate = 10_000 + next(40_000);
                let Ok(hold) = node.reserve(&chain(), Usd(estimate)).await else {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                };
                tokio::time::sleep(Duration::from_millis(next(5))).await;
                // One request in twenty costs more than its estimate.
                let cost = if next(20) == 0 {
                    estimate + next(5_000)
                } else {
                    estimate - next(estimate / 2)
                };
                excess.fetch_add(
                    cost.saturating_sub(estimate),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let hold = hold.settle(Usd(cost));
                let charge = tollgate_proto::Charge {
                    request_id: tollgate_proto::RequestId(format!("req_{client}_{i}")),
                    key_id: KeyId::from("vk_1"),
                    provider_config_id: None,
                    model: "m".into(),
                    usage: tollgate_proto::Usage::default(),
                    cost: Usd(cost),
                    at_ms: now_ms(),
                };
                replicator
                    .propose(Command::NodeChargeBatch {
                        node: node.node(),
                        charges: vec![charge],
                    })
                    .await
                    .expect("charged");
                drop(hold);
            }
        })
    });
    for c in futures_util::future::join_all(clients).await {
        c.expect("client");
    }
    maintenance.shutdown().await;
    let state = world.replicator.state().read();
    let status = state.budget_status(&chain()[0], now_ms()).expect("budget");
    let (spent, excess) = (
        status.spent.0,
        excess.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "spent {spent} of {LIMIT}, real costs above estimates {excess}, refused {}",
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(
        spent <= LIMIT + excess,
        "spent {spent} > {LIMIT} + {excess}"
    );
    assert!(spent >= LIMIT - 4 * 50_000, "only {spent} of {LIMIT} used");
}
