//! One simulated node: the production Raft, replicator, admission (escrow leases) and
//! charge pipeline (with its outbox), on the node's "disk", serving peers through the
//! production `RaftRpcHandler` and clients through `gateway`. Started again after a
//! crash, it recovers from the same disk, as `tollgate serve` does from its data dir.

use crate::gateway::{self, gateway_addr, Answer, Request, GATEWAY_PORT};
use crate::net::{self, SimTransport};
use crate::net::{peer_addr, PEER_PORT};
use crate::plan::Plan;
use crate::world::{self, Running, World};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_node::clock::Clock;
use tollgate_node::cluster::gossip::Gossip;
use tollgate_node::cluster::ops::Hello;
use tollgate_node::cluster::replicator::DataDirs;
use tollgate_node::cluster::rpc::RaftRpcHandler;
use tollgate_node::cluster::version::Versions;
use tollgate_node::cluster::{Network, RaftReplicator};
use tollgate_node::governance::admission::{Admission, Mode};
use tollgate_node::governance::charge::{self, ChargeSender, PendingCharge, PipelineConfig};
use tollgate_node::governance::limits::RateLimiter;
use tollgate_node::governance::outbox::Outbox;
use tollgate_node::governance::replicator::{Replicator, SharedState};
use tollgate_node::http::error::ApiError;
use tollgate_proto::{Charge, UnixMs, Usage, Usd};
use tollgate_raft::typ::{Raft, TollgateNode};
use turmoil::net::TcpListener;

/// Bounds of the drain steps, as in `tollgate serve`.
const DRAIN_REQUESTS: Duration = Duration::from_secs(20);
const DRAIN_CHARGES: Duration = Duration::from_secs(10);
const DRAIN_LEASES: Duration = Duration::from_secs(5);
/// How long a drained leader waits for its hand-over before it counts as drained.
const DRAIN_HANDOVER: Duration = Duration::from_secs(3);

/// The plan's wall clock on simulated time, plus this node's skew.
struct SimClock {
    plan: Arc<Plan>,
    skew_ms: i64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> UnixMs {
        let at = self.plan.wall_ms(world::now()) as i64 + self.skew_ms;
        at.max(0) as u64
    }
}

fn node_info(id: u64) -> TollgateNode {
    TollgateNode {
        raft_addr: peer_addr(id).to_string(),
        http_addr: gateway_addr(id).to_string(),
    }
}

/// The host's software: runs until the host is crashed.
pub async fn run(id: u64, plan: Arc<Plan>, world: World, mode: Mode) -> turmoil::Result {
    let disk = world.disk(id);
    let fresh = disk.log_is_empty()?;
    let (log, sm) =
        tollgate_raft::storage::open_in_memory(disk.log.clone(), disk.snapshots.clone())?;
    let committed = log.clone();
    let config = Arc::new(tollgate_raft::raft_config("sim").map_err(|e| e.to_string())?);
    let versions: Arc<Versions> = Arc::default();
    let handler = Arc::new(RaftRpcHandler::pending(
        Hello {
            node_id: id,
            node: node_info(id),
        },
        Arc::clone(&versions),
    ));
    let state = SharedState::from_shared(sm.state());
    let transport = Arc::new(SimTransport);
    let raft = Raft::new(id, config, Network::new(Arc::clone(&transport)), log, sm).await?;
    handler.set_raft(raft.clone());
    // The drain signal, as `tollgate serve` has it: the RPC handler refuses to take
    // leadership while it is set, and the hand-over task acts on it.
    let drain = tollgate_node::cluster::drain::Drain::new();
    handler.set_drain(Arc::clone(&drain));
    let replicator = Arc::new(
        RaftReplicator::new(
            raft.clone(),
            state.clone(),
            Arc::clone(&transport),
            handler.contact(),
            move || committed.committed_index(),
            DataDirs {
                raft: disk.outbox.clone(),
                outbox: disk.outbox.clone(),
            },
        )
        .with_yielding(handler.yielding()),
    );
    let weak = Arc::downgrade(&replicator);
    handler.set_status(move || weak.upgrade().map(|r| r.status()).unwrap_or_default());
    if id == 1 && fresh {
        let members: BTreeMap<u64, TollgateNode> =
            (1..=plan.nodes).map(|n| (n, node_info(n))).collect();
        // Refused if a vote was cast meanwhile: then the cluster forms anyway.
        let _ = raft.initialize(members).await;
    }
    let catching_up = Arc::clone(&replicator);
    tokio::spawn(async move { catching_up.catch_up().await });
    tokio::spawn(Arc::clone(&replicator).reclaim_leases());
    tokio::spawn(tollgate_node::cluster::elect::break_split_votes(
        raft.clone(),
    ));
    let replicator: Arc<dyn Replicator> = replicator;
    // Every simulated node speaks this build's range: the cluster moves to its newest
    // version once the leader has every member's report, so drains write `NodeDrained`.
    tokio::spawn(tollgate_node::cluster::protocol::raise_when_supported(
        Arc::clone(&replicator),
        versions,
    ));
    let clock: Arc<dyn Clock> = Arc::new(SimClock {
        skew_ms: plan.skew_ms[(id - 1) as usize],
        plan: Arc::clone(&plan),
    });
    let admission = Admission::new(id, mode, Arc::clone(&replicator), Arc::clone(&clock));
    admission.spawn_maintenance();
    // Gossip in its simulated mode (carried by `crate::gossip` over simulated UDP), read
    // by the production rate limiter, which splits limits among the Raft voters at least.
    let generation = world::now().as_millis() as u64 + 1;
    let gossip = Gossip::simulated(id, generation);
    let voters = raft.clone();
    let limiter = RateLimiter::new(
        Arc::clone(&gossip),
        Arc::clone(&clock),
        Box::new(move || {
            voters
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .voter_ids()
                .count()
        }),
    );
    tokio::spawn(crate::gossip::run(
        id,
        generation,
        plan.nodes,
        Arc::clone(&gossip),
    ));
    // A draining leader hands its leadership over, as in production.
    tokio::spawn(tollgate_node::cluster::handover::hand_over_at_drain(
        raft.clone(),
        Arc::clone(&transport),
        Arc::clone(&gossip),
        Arc::clone(&drain),
        handler.yielding(),
    ));
    let outbox = Arc::new(Outbox::open_simulated(&disk.outbox).map_err(|e| e.to_string())?);
    let pipeline = charge::spawn(
        Arc::clone(&replicator),
        outbox,
        Arc::clone(&admission),
        PipelineConfig {
            batch_max: 256,
            propose_delay: Duration::ZERO,
        },
    );
    world.lock().running.insert(
        id,
        Running {
            raft: raft.clone(),
            state,
            gossip: Arc::clone(&gossip),
            generation,
        },
    );
    tokio::spawn(net::serve(
        SocketAddr::from(([0, 0, 0, 0], PEER_PORT)),
        handler,
    ));
    let gateway = Arc::new(Gateway {
        id,
        world: world.clone(),
        replicator: Arc::clone(&replicator),
        admission: Arc::clone(&admission),
        limiter,
        charges: pipeline.sender.clone(),
        clock,
        draining: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
    });
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], GATEWAY_PORT))).await?;
    let serving = Arc::clone(&gateway);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let gateway = Arc::clone(&serving);
            tokio::spawn(async move {
                gateway::answer(
                    stream,
                    |request| async move { gateway.handle(request).await },
                )
                .await
            });
        }
    });
    // Until asked to drain.
    while !world.lock().drain.contains(&id) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The drain of `tollgate serve`: refuse new requests (the client goes to another
    // node), let those in flight finish, apply every charge, give the leases back.
    gateway.draining.store(true, Ordering::Release);
    gossip.set_state(tollgate_node::cluster::gossip::keys::NodeState::Draining);
    drain.start();
    world.note(world::now(), format!("n{id} draining"));
    let until = tokio::time::Instant::now() + DRAIN_REQUESTS;
    while gateway.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = pipeline.close.send(());
    let drained = tokio::time::timeout(DRAIN_CHARGES, pipeline.task)
        .await
        .is_ok();
    let returned = drained
        && matches!(
            tokio::time::timeout(DRAIN_LEASES, admission.release_all()).await,
            Ok(Ok(()))
        );
    // A leader that has not handed over yet gets a moment more, as `tollgate serve`.
    let until = tokio::time::Instant::now() + DRAIN_HANDOVER;
    while raft.metrics().borrow().current_leader == Some(id) && tokio::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leads = raft.metrics().borrow().current_leader == Some(id);
    if leads {
        // A drained leader must have handed its leadership over (`cluster::handover`).
        world.violation(
            world::now(),
            format!(
                "n{id} still leads {} s after its drain",
                DRAIN_HANDOVER.as_secs()
            ),
        );
    }
    world.note(
        world::now(),
        format!("n{id} drained (charges applied: {drained}, leases returned: {returned}, still leading: {leads})"),
    );
    world.lock().drained.insert(id);
    std::future::pending::<()>().await;
    Ok(())
}

struct Gateway {
    id: u64,
    world: World,
    replicator: Arc<dyn Replicator>,
    admission: Arc<Admission>,
    limiter: Arc<RateLimiter>,
    charges: ChargeSender,
    clock: Arc<dyn Clock>,
    draining: AtomicBool,
    in_flight: AtomicU64,
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn refused(status: u16, message: impl Into<String>) -> Answer {
    Answer::Refused {
        status,
        message: message.into(),
    }
}

/// A refusal as the proxy answers it: the production error mapping.
fn refusal(e: impl Into<ApiError>) -> Answer {
    let e = e.into();
    refused(e.status_code().as_u16(), e.to_string())
}

impl Gateway {
    async fn handle(&self, request: Request) -> Answer {
        if self.draining.load(Ordering::Acquire) {
            return refused(503, "draining");
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(&self.in_flight);
        match request {
            Request::Admin(command) => Answer::Admin(
                self.replicator
                    .propose(command)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Request::Proxy {
                secret,
                request_id,
                estimate,
                cost,
                upstream_ms,
            } => self
                .proxy(&secret, request_id, estimate, cost, upstream_ms)
                .await
                .unwrap_or_else(|a| a),
        }
    }

    /// The proxy's steps, in its order.
    async fn proxy(
        &self,
        secret: &str,
        request_id: String,
        estimate: u64,
        cost: u64,
        upstream_ms: u64,
    ) -> Result<Answer, Answer> {
        if !self.replicator.caught_up() {
            return Err(refused(503, "not caught up"));
        }
        let (key, chain, limits) = {
            let state = self.replicator.state().read();
            let key =
                tollgate_node::gateway::auth::key_for_secret(&state, secret).map_err(refusal)?;
            let chain = state.budget_chain(&key.id, None);
            let limits: Vec<_> = state
                .rate_limit_chain(&key.id, None)
                .into_iter()
                .cloned()
                .collect();
            (key, chain, limits)
        };
        crate::invariants::revoked_key_refused::on_admit(&self.world, self.id, &key.id);
        let now_ms = self.clock.now_ms();
        self.limiter.admit(&limits, now_ms).map_err(refusal)?;
        crate::invariants::rate_limit_within_bound::on_admit(&self.world, &limits, now_ms);
        let hold = self
            .admission
            .reserve(&chain, Usd(estimate))
            .await
            .map_err(refusal)?;
        let (out, extra) = {
            let w = self.world.lock();
            (w.provider_out, w.provider_extra)
        };
        tokio::time::sleep(Duration::from_millis(upstream_ms) + extra).await;
        if out || self.world.lock().provider_out {
            // The provider failed: nothing to charge; dropping the hold frees it.
            return Err(refused(502, "provider failed"));
        }
        let cost = Usd(cost.min(estimate));
        let charge = Charge {
            request_id: request_id.as_str().into(),
            key_id: key.id.clone(),
            provider_config_id: None,
            model: "sim".into(),
            usage: Usage::default(),
            cost,
            at_ms: self.clock.now_ms(),
        };
        crate::invariants::charges_exactly_once::on_acknowledge(
            &self.world,
            &request_id,
            &key.id,
            cost,
        );
        self.charges.send(PendingCharge {
            charge,
            hold: hold.settle(cost),
        });
        Ok(Answer::Ok)
    }
}
