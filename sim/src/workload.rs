//! The workload, on a client host of its own: the admin writes the setup (a customer, a
//! team, two keys and budgets that the traffic will exhaust), then clients send
//! requests through random nodes, trying another node when one refuses with 503 or does
//! not answer (as the load balancer does), while the admin raises a budget and revokes
//! a key. Then the liveness phase: once the driver healed every fault, the cluster must
//! settle within `SETTLE_WITHIN`.

use crate::gateway::gateway_addr;
use crate::gateway::{self, Answer, Request};
use crate::invariants::Invariants;
use crate::plan::EPOCH_MS;
use crate::plan::{Choices, Plan};
use crate::world::{self, Ending, World};
use std::sync::Arc;
use std::time::Duration;
use tollgate_node::gateway::auth::sha256;
use tollgate_proto::{
    Budget, Command, Customer, Outcome, Owner, Price, ProviderConfig, RateLimit, ResetDuration,
    Team, Usd, VirtualKey,
};

/// Deadline of one exchange with a node.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Tries of one request before the client gives up (each on another node).
const ATTEMPTS: u32 = 12;
/// Tries of one admin write.
const ADMIN_ATTEMPTS: u32 = 60;
/// The reservation of every request; its cost is at most this.
pub const ESTIMATE: u64 = 10_000;
/// After the faults are healed, the cluster converges within this.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// How long the setup may take to reach every node.
const SETUP_WITHIN: Duration = Duration::from_secs(60);

pub const SECRETS: [&str; 2] = ["tg-sim-key-one", "tg-sim-key-two"];
/// The provider every key routes to (the node's built-in mock) and the model asked for.
pub const PROVIDER: &str = "mock";
pub const MODEL: &str = "sim-model";
/// The price of every model: a micro-dollar per completion token, prompts free, so a
/// request's estimate and cost in micro-dollars are its token counts.
fn price() -> Price {
    Price {
        model: "*".into(),
        input_per_mtok: Usd(0),
        output_per_mtok: Usd(1_000_000),
        cache_write_per_mtok: Usd(0),
        cache_read_per_mtok: Usd(0),
    }
}

fn key(n: usize) -> VirtualKey {
    VirtualKey {
        id: format!("vk_{}", n + 1).as_str().into(),
        name: format!("key {}", n + 1),
        secret_sha256: sha256(SECRETS[n]),
        secret_prefix: SECRETS[n][..8].to_owned(),
        team_id: Some("team_1".into()),
        customer_id: Some("cus_1".into()),
        provider_configs: vec![ProviderConfig {
            id: format!("pc_sim_{}", n + 1).as_str().into(),
            provider: PROVIDER.to_owned(),
            weight_milli: 1000,
            allowed_models: Vec::new(),
            aliases: Default::default(),
        }],
        disabled: false,
        created_at_ms: EPOCH_MS,
        rotated_at_ms: None,
    }
}

fn setup(plan: &Plan) -> Vec<Command> {
    let budget = |id: &str, owner: Owner, limit: u64| {
        Command::CreateBudget(Budget {
            id: id.into(),
            owner,
            limit: Usd(limit),
            reset: plan.reset,
            calendar_aligned: true,
            created_at_ms: EPOCH_MS,
        })
    };
    vec![
        Command::SetPrice(price()),
        Command::CreateCustomer(Customer {
            id: "cus_1".into(),
            name: "customer".into(),
            created_at_ms: EPOCH_MS,
        }),
        Command::CreateTeam(Team {
            id: "team_1".into(),
            name: "team".into(),
            customer_id: Some("cus_1".into()),
            created_at_ms: EPOCH_MS,
        }),
        Command::CreateKey(key(0)),
        Command::CreateKey(key(1)),
        budget(
            "bud_key1",
            Owner::VirtualKey("vk_1".into()),
            plan.budget_limit,
        ),
        Command::CreateRateLimit(RateLimit {
            id: "rl_key1".into(),
            owner: Owner::VirtualKey("vk_1".into()),
            request_max: Some(plan.rate_limit),
            request_window: Some(ResetDuration::Minute),
            token_max: None,
            token_window: None,
            created_at_ms: EPOCH_MS,
        }),
        budget(
            "bud_team1",
            Owner::Team("team_1".into()),
            plan.budget_limit * 3 / 2,
        ),
    ]
}

/// Proposes `command` through any node until one applies it.
async fn admin(world: &World, plan: &Plan, choices: &mut Choices, command: Command) {
    for _ in 0..ADMIN_ATTEMPTS {
        let node = 1 + choices.below(plan.nodes);
        match gateway::call(
            gateway_addr(node),
            &Request::Admin(command.clone()),
            CALL_DEADLINE,
        )
        .await
        {
            // A conflict: an earlier try was applied after all.
            Ok(Answer::Admin(Ok(Outcome::Done | Outcome::Conflict(_)))) => return,
            Ok(Answer::Admin(Ok(other))) => {
                world.violation(world::now(), format!("admin write refused: {other:?}"));
                return;
            }
            other => {
                world.note(
                    world::now(),
                    format!("admin write through n{node}: {other:?}; trying again"),
                );
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    }
    world.violation(
        world::now(),
        format!("admin write never applied: {command:?}"),
    );
}

/// One client: `plan.requests` requests in turn with key `secret`.
async fn client(world: World, plan: Arc<Plan>, n: u64, secret: &'static str) {
    let mut choices = Choices::new(plan.seed.wrapping_mul(31).wrapping_add(n));
    for r in 0..plan.requests {
        tokio::time::sleep(Duration::from_millis(choices.below(20))).await;
        let cost = 1_000 + choices.below(ESTIMATE - 1_000 + 1);
        let stream = choices.below(2) == 1;
        let upstream_ms = plan.upstream.0 + choices.below(plan.upstream.1 - plan.upstream.0 + 1);
        let mut node = 1 + choices.below(plan.nodes);
        let mut ending = None;
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS {
            let request = Request::Proxy {
                secret: secret.to_owned(),
                request_id: format!("req_c{n}_{r}_{attempt}"),
                estimate: ESTIMATE,
                cost,
                upstream_ms,
                stream,
            };
            match gateway::call(gateway_addr(node), &request, CALL_DEADLINE).await {
                Ok(Answer::Ok) => ending = Some(Ending::Ok),
                Ok(Answer::Refused { status: 402, .. }) => ending = Some(Ending::BudgetRefused),
                Ok(Answer::Refused { status: 401, .. }) => ending = Some(Ending::KeyRefused),
                Ok(Answer::Refused { status: 429, .. }) => ending = Some(Ending::RateRefused),
                Ok(Answer::Refused { status: 502, .. }) => ending = Some(Ending::ProviderFailed),
                Ok(other) => last_error = format!("n{node}: {other:?}"),
                Err(e) => last_error = format!("n{node}: {e}"),
            }
            if ending.is_some() {
                break;
            }
            world.note(
                world::now(),
                format!("client {n} request {r}: {last_error}; trying another node"),
            );
            // Another node, after a pause.
            node = 1 + (node + choices.below(plan.nodes - 1)) % plan.nodes;
            tokio::time::sleep(Duration::from_millis(50 + choices.below(100))).await;
        }
        let ending = ending.unwrap_or(Ending::Failed);
        world.ended(ending);
        if ending == Ending::Failed {
            world.lock().failures.push(format!(
                "client {n} request {r} at {} ms: {last_error}",
                world::now().as_millis()
            ));
        }
    }
}

/// The admin's writes during the traffic: raise the key budget, revoke the second key.
async fn admin_during(world: World, plan: Arc<Plan>) {
    let mut choices = Choices::new(plan.seed ^ 0xAD);
    let started = tokio::time::Instant::now();
    let mut writes = vec![
        (
            plan.raise_at,
            Command::UpdateBudget {
                id: "bud_key1".into(),
                limit: Some(Usd(plan.budget_limit + plan.raise_by)),
                reset: None,
                calendar_aligned: None,
                at_ms: EPOCH_MS + plan.epoch_offset_ms + plan.raise_at.as_millis() as u64,
            },
        ),
        (
            plan.revoke_at,
            Command::SetKeyDisabled {
                id: "vk_2".into(),
                disabled: true,
            },
        ),
    ];
    writes.sort_by_key(|(at, _)| *at);
    for (at, command) in writes {
        tokio::time::sleep_until(started + at).await;
        let what = format!("{command:?}");
        admin(&world, &plan, &mut choices, command).await;
        world.note(world::now(), format!("admin applied {what}"));
    }
}

pub async fn run(plan: Arc<Plan>, world: World) -> turmoil::Result {
    let mut choices = Choices::new(plan.seed ^ 0x5E7);
    for command in setup(&plan) {
        admin(&world, &plan, &mut choices, command).await;
    }
    let until = tokio::time::Instant::now() + SETUP_WITHIN;
    loop {
        let running = world.running();
        let everywhere = running.len() as u64 == plan.nodes
            && running.values().all(|n| {
                let s = n.state.read();
                s.keys().len() == 2
                    && s.budgets().len() == 2
                    && s.rate_limits().len() == 1
                    && s.price_for(MODEL).is_some()
            });
        if everywhere {
            break;
        }
        if tokio::time::Instant::now() >= until {
            let seen: Vec<String> = running
                .iter()
                .map(|(id, n)| {
                    let s = n.state.read();
                    format!(
                        "n{id}: {} keys, {} budgets, {} rate limits, priced {}",
                        s.keys().len(),
                        s.budgets().len(),
                        s.rate_limits().len(),
                        s.price_for(MODEL).is_some()
                    )
                })
                .collect();
            world.violation(
                world::now(),
                format!(
                    "the setup did not reach every node ({} of {} running; {})",
                    running.len(),
                    plan.nodes,
                    seen.join("; ")
                ),
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    world.lock().ready = true;
    world.note(world::now(), "setup applied on every node; traffic starts");
    let mut tasks = vec![tokio::spawn(admin_during(world.clone(), Arc::clone(&plan)))];
    for n in 0..plan.clients {
        // Client 0 uses the key that gets revoked.
        let secret = SECRETS[usize::from(n != 0)];
        tasks.push(tokio::spawn(client(
            world.clone(),
            Arc::clone(&plan),
            n,
            secret,
        )));
    }
    for task in tasks {
        let _ = task.await;
    }
    let endings = world.lock().endings.clone();
    let (lowered, cut) = {
        let w = world.lock();
        (w.lowered, w.streams_cut)
    };
    world.note(
        world::now(),
        format!("traffic done: {endings:?}, {lowered} served with a lowered cap, {cut} streams ended at the limit"),
    );
    // Liveness: once healed, the cluster settles within the bound.
    while !world.lock().healed {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let healed_at = world.lock().healed_at;
    let settling = world::now();
    loop {
        match Invariants::settled(&world, plan.nodes) {
            Ok(summary) => {
                world.note(
                    world::now(),
                    format!(
                        "settled {} ms after the faults were healed and {} ms after the traffic ended: {summary}",
                        (world::now() - healed_at).as_millis(),
                        (world::now() - settling).as_millis()
                    ),
                );
                break;
            }
            Err(e) if world::now() - settling > SETTLE_WITHIN => {
                world.violation(
                    world::now(),
                    format!(
                        "not settled {} s after healing: {e}",
                        SETTLE_WITHIN.as_secs()
                    ),
                );
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    Ok(())
}
