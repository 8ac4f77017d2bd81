//! One simulated node: the production node (`tollgate_node::app::node::Node::build`)
//! on the simulator's seams: the simulated network for its peers, the node's "disk" in
//! memory, the plan's clock with this node's skew, gossip carried by `crate::gossip`.
//! Clients reach it through `gateway`, whose requests take the production request steps
//! (`Gate`). Started again after a crash, it recovers from the same disk, as
//! `tollgate serve` does from its data dir.

use crate::gateway::{self, gateway_addr, Answer, Request, GATEWAY_PORT};
use crate::net::{self, SimTransport};
use crate::net::{peer_addr, PEER_PORT};
use crate::plan::Plan;
use crate::workload::{MODEL, PROVIDER};
use crate::world::{self, Running, World};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tollgate_node::app::node::{LogSeam, Node, OutboxSeam, Replication, Seams};
use tollgate_node::clock::Clock;
use tollgate_node::cluster::ops::Hello;
use tollgate_node::cluster::replicator::DataDirs;
use tollgate_node::cluster::start::{Formation, GossipSeam, MemberSeams, Storage, Timing};
use tollgate_node::cluster::transport::Router;
use tollgate_node::config::{LogsConfig, ProviderKind, ProviderSpec};
use tollgate_node::gateway::billing::STREAM_HEADROOM_TOKENS;
use tollgate_node::gateway::gate::{Ask, Gate, GateError, MIN_ANSWER_TOKENS};
use tollgate_node::gateway::providers::Providers;
use tollgate_node::gateway::trail::Trail;
use tollgate_node::governance::admission::AdmissionError;
use tollgate_node::governance::admission::Mode;
use tollgate_node::governance::charge::PipelineConfig;
use tollgate_node::governance::records::RequestLog;
use tollgate_node::governance::replicator::Replicator;
use tollgate_node::http::error::ApiError;
use tollgate_proto::{UnixMs, Usage, Usd};
use tollgate_raft::typ::TollgateNode;
use turmoil::net::TcpListener;

/// The least output a metered stream reserves at first.
const STREAM_RESERVE_TOKENS: u64 = 1_000;
/// A streamed answer's pieces: well under the `STREAM_HEADROOM_TOKENS` a reservation
/// keeps free, as a real provider's deltas are.
const STREAM_PIECE_TOKENS: u64 = 100;

/// How long a draining node waits for its requests in flight, as `tollgate serve`.
const DRAIN_REQUESTS: Duration = Duration::from_secs(20);

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

/// The node's providers: the built-in mock, which the simulated requests never call
/// (the simulator plays the provider).
fn providers() -> Result<Providers, String> {
    Providers::from_specs(&[ProviderSpec {
        name: PROVIDER.to_owned(),
        kind: ProviderKind::Mock,
        ..ProviderSpec::default()
    }])
    .map_err(|e| e.to_string())
}

/// The host's software: runs until the host is crashed.
pub async fn run(id: u64, plan: Arc<Plan>, world: World, mode: Mode) -> turmoil::Result {
    let disk = world.disk(id);
    let fresh = disk.log_is_empty()?;
    let router = Router::new();
    // The first node forms the cluster on its first start; the others wait to be added.
    let formation = if id == 1 && fresh {
        Formation::Initialize(
            (1..=plan.nodes)
                .map(|n| (n, node_info(n)))
                .collect::<BTreeMap<_, _>>(),
        )
    } else {
        Formation::Recover
    };
    let generation = world::now().as_millis() as u64 + 1;
    let clock: Arc<dyn Clock> = Arc::new(SimClock {
        skew_ms: plan.skew_ms[(id - 1) as usize],
        plan: Arc::clone(&plan),
    });
    let member = MemberSeams {
        me: Hello {
            node_id: id,
            node: node_info(id),
        },
        transport: Arc::new(SimTransport),
        router: Arc::clone(&router),
        storage: Storage::Memory {
            log: disk.log.clone(),
            snapshots: disk.snapshots.clone(),
            dirs: DataDirs {
                raft: disk.outbox.clone(),
                outbox: disk.outbox.clone(),
            },
        },
        timing: Timing::Simulator,
        formation,
        gossip: GossipSeam::Simulated { generation },
    };
    let node = Node::build(Seams {
        node_id: id,
        replication: Replication::Member(Box::new(member)),
        outbox: OutboxSeam::Simulated(disk.outbox.clone()),
        logs: Some(LogSeam {
            dir: disk.logs.clone(),
            config: LogsConfig::default(),
        }),
        clock,
        serving: JoinSet::new(),
        mode,
        pipeline: PipelineConfig {
            batch_max: 256,
            propose_delay: Duration::ZERO,
        },
        providers: providers()?,
        default_max_tokens: 0,
        stream_reserve_tokens: STREAM_RESERVE_TOKENS,
        // Every simulated node speaks this build's range: the cluster moves to its
        // newest version once the leader has every member's report, so drains write
        // `NodeDrained`.
        versions: Arc::default(),
    })
    .await
    .map_err(|e| format!("{e:#}"))?;
    let raft = node.raft.clone().ok_or("a member has a raft")?;
    // The simulated host's own tasks: they end with the host (a crash drops them).
    tokio::spawn(crate::gossip::run(
        id,
        generation,
        plan.nodes,
        Arc::clone(&node.gossip),
    ));
    world.lock().running.insert(
        id,
        Running {
            raft,
            state: node.replicator.state().clone(),
            gossip: Arc::clone(&node.gossip),
            generation,
            log: node.log.clone(),
        },
    );
    tokio::spawn(net::serve(
        SocketAddr::from(([0, 0, 0, 0], PEER_PORT)),
        router,
    ));
    let gateway = Arc::new(Gateway {
        id,
        world: world.clone(),
        replicator: Arc::clone(&node.replicator),
        gate: Arc::clone(&node.gate),
        log: node.log.clone(),
        draining: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        seq: AtomicU64::new(0),
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
    // node), let those in flight finish, then the node's own stop: apply every charge,
    // give the leases back, hand leadership over.
    gateway.draining.store(true, Ordering::Release);
    node.gossip
        .set_state(tollgate_node::cluster::gossip::keys::NodeState::Draining);
    node.drain.start();
    world.note(world::now(), format!("n{id} draining"));
    let until = tokio::time::Instant::now() + DRAIN_REQUESTS;
    while gateway.in_flight.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let requests_ended = gateway.in_flight.load(Ordering::Acquire) == 0;
    let stopped = node.stop(requests_ended).await;
    if stopped.still_leading {
        // A drained leader must have handed its leadership over (`cluster::handover`).
        world.violation(world::now(), format!("n{id} still leads after its drain"));
    }
    world.note(
        world::now(),
        format!(
            "n{id} drained (charges applied: {}, leases returned: {}, still leading: {})",
            stopped.charges_applied, stopped.leases_returned, stopped.still_leading
        ),
    );
    world.lock().drained.insert(id);
    std::future::pending::<()>().await;
    Ok(())
}

struct Gateway {
    id: u64,
    world: World,
    replicator: Arc<dyn Replicator>,
    gate: Arc<Gate>,
    log: Option<Arc<RequestLog>>,
    draining: AtomicBool,
    in_flight: AtomicU64,
    /// Turns the weighted choice of provider configs, as the proxy's request counter.
    seq: AtomicU64,
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
                stream,
            } => {
                // The request's record, as the proxy keeps it: an intent before the
                // provider, then the record with the charge, or the refusal.
                let trail = Trail::new(
                    self.gate.charger.charges.clone(),
                    Arc::clone(&self.gate.clock),
                    self.log.as_ref(),
                    self.id,
                    (&request_id, self.gate.clock.now_ms()),
                    "anthropic",
                    &Default::default(),
                    None,
                );
                let answer = self
                    .proxy(
                        &secret,
                        &request_id,
                        estimate,
                        cost,
                        upstream_ms,
                        stream,
                        &trail,
                    )
                    .await;
                // No await since the request ended (its charge or this refusal).
                if let Err(Answer::Refused { status, .. }) = &answer {
                    trail.refused(*status, "refused");
                }
                crate::invariants::intents_reconciled::on_end(&self.world, self.id, &request_id);
                answer.unwrap_or_else(|a| a)
            }
        }
    }

    /// A request through the production steps (`Gate`), with the simulator as the
    /// provider: authenticate, resolve and rate-limit, reserve the estimate, wait for
    /// the provider, charge the cost.
    #[allow(clippy::too_many_arguments)]
    async fn proxy(
        &self,
        secret: &str,
        request_id: &str,
        estimate: u64,
        cost: u64,
        upstream_ms: u64,
        stream: bool,
        trail: &Arc<Trail>,
    ) -> Result<Answer, Answer> {
        // What the load balancer sees in `/health/ready`: no traffic before catching up.
        if !self.replicator.caught_up() {
            return Err(refused(503, "not caught up"));
        }
        let caller = self.gate.authenticate(Some(secret)).map_err(refusal)?;
        trail.caller(&caller.key, caller.log_content);
        trail.asks(MODEL, stream, &Default::default());
        crate::invariants::revoked_key_refused::on_admit(&self.world, self.id, &caller.key.id);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let routes = self.gate.admit(&caller, MODEL, seq).map_err(refusal)?;
        crate::invariants::rate_limit_within_bound::on_admit(
            &self.world,
            caller.limits(),
            self.gate.clock.now_ms(),
        );
        let route = routes.first().ok_or_else(|| refused(500, "no route"))?;
        // The price is a micro-dollar per completion token: the estimate is the cap.
        let ask = Ask {
            request_id,
            body_bytes: 0,
            max_tokens: Some(estimate),
            choices: 1,
            min_output: MIN_ANSWER_TOKENS,
            metered: stream,
        };
        let mut billing = match self.gate.reserve(&caller, route, ask).await {
            Ok(billing) => billing,
            Err(e) => {
                if matches!(e, GateError::Admission(AdmissionError::Exhausted(_))) {
                    // Its minimum: no prompt here, and the smallest answer.
                    let smallest = if stream {
                        STREAM_HEADROOM_TOKENS.min(estimate)
                    } else {
                        MIN_ANSWER_TOKENS
                    };
                    let state = self.replicator.state().read();
                    crate::invariants::refused_only_when_short::on_refusal(
                        &self.world,
                        self.id,
                        request_id,
                        &state,
                        &self.gate.admission,
                        &state.budget_chain(&caller.key.id, Some(&route.config.id)),
                        Usd(smallest),
                        self.gate.clock.now_ms(),
                        &e.to_string(),
                    );
                }
                return Err(refusal(e));
            }
        };
        billing.trail = Some(Arc::clone(trail));
        billing.intent(PROVIDER);
        // The intent in the outbox, with what a crash would charge.
        let intent_written = |reserved| {
            crate::invariants::intents_reconciled::on_intent(
                &self.world,
                self.id,
                request_id,
                &caller.key.id,
                reserved,
            )
        };
        intent_written(billing.reserved);
        let (out, extra) = {
            let w = self.world.lock();
            (w.provider_out, w.provider_extra)
        };
        tokio::time::sleep(Duration::from_millis(upstream_ms) + extra).await;
        if out || self.world.lock().provider_out {
            // The provider failed: nothing to charge; dropping the billing frees its hold.
            return Err(refused(502, "provider failed"));
        }
        if billing.cap.is_some() {
            self.world.lock().lowered += 1;
        }
        // A request the room left could not take whole went with a lower cap, which the
        // provider keeps to.
        let mut cost = Usd(cost.min(estimate).min(billing.cap.unwrap_or(u64::MAX)));
        if billing.metered {
            // The answer streams in pieces smaller than the headroom a reservation keeps;
            // the production metering follows it and may end it at the limit.
            let mut used = 0;
            while used < cost.0 {
                used = (used + STREAM_PIECE_TOKENS).min(cost.0);
                let usage = Usage {
                    output_tokens: used,
                    ..Usage::default()
                };
                let going = billing.keep_ahead(&usage).await;
                // An extended reservation rewrote the intent: a crash charges it.
                intent_written(billing.reserved);
                if !going {
                    self.world.lock().streams_cut += 1;
                    break;
                }
            }
            cost = Usd(used);
        }
        // Marked answered only now, with no await until its charge: turmoil runs the
        // destructors of a crashed host's tasks (a killed process would not), and an
        // answered billing dropped mid-stream charges its estimate, unacknowledged.
        billing.answered();
        crate::invariants::charges_exactly_once::on_acknowledge(
            &self.world,
            self.id,
            request_id,
            &caller.key.id,
            cost,
        );
        let charged = billing.finish(Usage {
            output_tokens: cost.0,
            ..Usage::default()
        });
        if charged != cost {
            self.world.violation(
                world::now(),
                format!("{request_id}: charged {charged:?}, the provider's usage costs {cost:?}"),
            );
        }
        Ok(Answer::Ok)
    }
}
