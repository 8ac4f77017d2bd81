//! Tollgate's deterministic simulator: production Raft, replicator, admission (escrow
//! leases), charge pipeline and outbox, and rate limiter on turmoil's simulated hosts,
//! network and time, replayable by seed.
//!
//! - `plan`: one `u64` seed gives the cluster size (3–5), the scenario and its fault
//!   schedule, the workload and its timings;
//! - `node`: one simulated node, built from production parts through their seams
//!   (`PeerTransport` over simulated TCP, the in-memory Raft log that loses unflushed
//!   writes at a crash, a `Clock` on simulated time with per-node skew, openraft's
//!   runtime with a seeded RNG, the outbox without fsync or blocking threads);
//! - `gateway`: how clients reach a node; `net`: how nodes reach each other;
//! - `gossip`: what chitchat does between nodes, deterministically, over simulated UDP
//!   (chitchat's peer selection cannot be seeded), into the production `Gossip` facade;
//! - `workload`: the admin's setup and writes, clients through random nodes with retry;
//! - `invariants`: one file per invariant, checked after every step, and at the end;
//! - this file: the driver, which steps the world and applies the faults on schedule.

pub mod gateway;
pub mod gossip;
pub mod invariants;
pub mod net;
pub mod node;
pub mod plan;
pub mod workload;
pub mod world;

use invariants::Invariants;
use node::host;
use plan::{Choices, Fault, Plan};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_node::admission::Mode;
pub use tollgate_node::sim_bugs::KnownBug;
use world::World;

/// How one run is set up besides its seed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A known bug put back (see `tollgate_node::sim_bugs`).
    pub bug: Option<KnownBug>,
    /// Admission by check-then-charge instead of escrow leases (the known overshoot of
    /// other gateways, `TOLLGATE_TEST_NAIVE_BUDGETS`).
    pub naive_budgets: bool,
}

/// What a run did, whether or not it held.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub trace: Vec<String>,
    pub violations: Vec<String>,
    /// Client requests and how they ended.
    pub requests: u64,
    pub failed: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The failure as printed: the first violation, the replay command and the trace.
    pub fn failure(&self) -> String {
        format!(
            "seed {}: {}\nreplay: cargo run -p tollgate-sim --release -- --reproduce {}\n{}",
            self.seed,
            self.violations.first().map_or("", String::as_str),
            self.seed,
            self.trace.join("\n")
        )
    }
}

/// One seeded run with the production code as it is. `Ok` is the trace; `Err` the
/// failure with the seed, the replay command and the trace.
pub fn run(seed: u64) -> Result<Vec<String>, String> {
    let report = run_with(seed, Options::default());
    match report.ok() {
        true => Ok(report.trace),
        false => Err(report.failure()),
    }
}

/// The trace with the lines of each simulated millisecond in text order. Within one
/// millisecond the order of notes from different hosts can vary between runs in one
/// process: a crashed host's tasks are dropped in an order that depends on tokio's
/// process-wide task ids, so its peers see the closed connections in that order.
/// Everything else (which events, at which millisecond) must replay exactly.
fn canonical(trace: &[String]) -> Vec<String> {
    let mut lines: Vec<(u128, &String)> = trace
        .iter()
        .map(|l| {
            let ms = l
                .trim_start()
                .split(' ')
                .next()
                .and_then(|t| t.parse().ok());
            (ms.unwrap_or(0), l)
        })
        .collect();
    // Stable, and by time first: the run's own order of milliseconds stays.
    lines.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    lines.into_iter().map(|(_, l)| l.clone()).collect()
}

/// Where runs keep their outboxes (memory-backed where the machine has it).
fn run_dir(seed: u64) -> PathBuf {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "tollgate-sim-{}-{seed}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A fault's progress.
enum Stage {
    Pending,
    /// Started; ends at the time given (with what it needs to undo).
    Active(Duration, Undo),
    Done,
}

enum Undo {
    Repair(Vec<(u64, u64)>),
    RepairOneWay(Vec<(u64, u64)>),
    Restart(u64),
    Provider,
    /// Rolling upgrade: the node being upgraded and its step.
    Rolling(u64, Roll),
}

#[derive(Clone, Copy)]
enum Roll {
    Draining,
    /// Stopped; restarts at the time given.
    Stopped(Duration),
    /// Restarted; ready once it applied what the others had then.
    Starting(u64),
}

/// The running node that leads in the highest term, by its own metrics.
fn leader(world: &World) -> Option<u64> {
    world
        .running()
        .values()
        .map(|n| n.raft.metrics().borrow().clone())
        .filter(|m| m.current_leader == Some(m.id))
        .max_by_key(|m| m.current_term)
        .map(|m| m.id)
}

fn applied(world: &World, id: u64) -> Option<u64> {
    world.running().get(&id).map(|n| {
        n.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
    })
}

/// One seeded run; the report says what held.
pub fn run_with(seed: u64, options: Options) -> Report {
    tollgate_raft::runtime::seed_this_thread(seed);
    tollgate_node::sim_bugs::set(options.bug);
    let plan = Arc::new(Plan::of_seed(seed));
    let dir = run_dir(seed);
    let world = World::new(dir.clone());
    world.note(Duration::ZERO, plan.summary());
    if let Some(bug) = options.bug {
        world.note(Duration::ZERO, format!("known bug put back: {bug:?}"));
    }
    let mode = if options.naive_budgets {
        Mode::Naive
    } else {
        Mode::Leases
    };
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(240))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(plan.max_latency)
        .fail_rate(plan.fail_rate)
        .repair_rate(0.5)
        .build();
    for id in 1..=plan.nodes {
        let (plan, world) = (Arc::clone(&plan), world.clone());
        sim.host(host(id), move || {
            node::run(id, Arc::clone(&plan), world.clone(), mode)
        });
    }
    {
        let (plan, world) = (Arc::clone(&plan), world.clone());
        sim.client("clients", workload::run(plan, world));
    }
    let mut invariants = Invariants::default();
    let mut stages: Vec<Stage> = plan.faults.iter().map(|_| Stage::Pending).collect();
    let mut choices = Choices::new(seed ^ 0xD21E);
    let mut flaky = plan.fail_rate > 0.0;
    if flaky {
        // Gossip is lost too: the rate-limit bound does not apply while links are flaky.
        world
            .lock()
            .cut_spans
            .push((Duration::ZERO, Some(plan.flaky_until)));
    }
    // `SIM_DEBUG=1`: every node's Raft metrics on stderr once a simulated second.
    let debug = std::env::var_os("SIM_DEBUG").is_some();
    let result = loop {
        match sim.step() {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e.to_string()),
        }
        let now = sim.elapsed();
        if debug && now.as_millis() % 1000 == 0 {
            dump_metrics(&world, now);
        }
        invariants.after_step(&world, now);
        if flaky && now >= plan.flaky_until {
            sim.set_fail_rate(0.0);
            sim.set_max_message_latency(Duration::from_millis(2));
            world.note(now, "network no longer flaky");
            flaky = false;
        }
        for (fault, stage) in plan.faults.iter().zip(stages.iter_mut()) {
            drive(
                &mut sim,
                &world,
                &mut invariants,
                &mut choices,
                now,
                fault,
                stage,
            );
        }
        if !world.lock().healed
            && !flaky
            && stages.iter().all(|s| matches!(s, Stage::Done))
            && world.running().len() as u64 == plan.nodes
        {
            let mut w = world.lock();
            w.healed = true;
            w.healed_at = now;
            drop(w);
            world.note(now, "every fault healed");
        }
    };
    let end = sim.elapsed();
    if let Err(e) = result {
        world.violation(end, format!("simulation error: {e}"));
    }
    Invariants::at_end(&world, &plan, end);
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
    tollgate_node::sim_bugs::set(None);
    let w = world.lock();
    let requests: u64 = w.endings.values().sum();
    Report {
        seed,
        trace: canonical(&w.trace),
        violations: w.violations.clone(),
        requests,
        failed: w.endings.get(&world::Ending::Failed).copied().unwrap_or(0),
    }
}

fn dump_metrics(world: &World, now: Duration) {
    for (id, n) in world.running() {
        let m = n.raft.metrics().borrow().clone();
        eprintln!(
            "{} ms n{id}: {:?} term {} leader {:?} vote {} last log {:?} applied {:?}",
            now.as_millis(),
            m.state,
            m.current_term,
            m.current_leader,
            m.vote,
            m.last_log_index,
            m.last_applied.map(|l| l.index)
        );
    }
}

/// Moves one fault along its schedule.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    invariants: &mut Invariants,
    choices: &mut Choices,
    now: Duration,
    fault: &Fault,
    stage: &mut Stage,
) {
    let nodes = (1..=world.lock().disks.len() as u64).collect::<Vec<_>>();
    match stage {
        Stage::Done => {}
        Stage::Pending => {
            let (at, length) = match fault {
                Fault::IsolateLeader { at, length }
                | Fault::DeafLeader { at, length }
                | Fault::Split { at, length, .. }
                | Fault::Crash { at, length, .. }
                | Fault::ProviderOutage { at, length }
                | Fault::SlowProvider { at, length, .. } => (*at, *length),
                Fault::RollingUpgrade { at } => (*at, Duration::ZERO),
            };
            if now < at || !world.lock().ready {
                return;
            }
            let undo = match fault {
                Fault::IsolateLeader { .. } | Fault::DeafLeader { .. } => {
                    let Some(l) = leader(world) else { return };
                    let pairs: Vec<(u64, u64)> =
                        nodes.iter().filter(|o| **o != l).map(|o| (*o, l)).collect();
                    if matches!(fault, Fault::IsolateLeader { .. }) {
                        for (a, b) in &pairs {
                            cut_link(sim, world, now, *a, *b, false);
                        }
                        world.note(now, format!("n{l} (leader) cut off"));
                        Undo::Repair(pairs)
                    } else {
                        for (a, b) in &pairs {
                            cut_link(sim, world, now, *a, *b, true);
                        }
                        world.note(now, format!("n{l} (leader) hears nobody"));
                        Undo::RepairOneWay(pairs)
                    }
                }
                Fault::Split { minority, .. } => {
                    let pairs: Vec<(u64, u64)> = minority
                        .iter()
                        .flat_map(|m| {
                            nodes
                                .iter()
                                .filter(|o| !minority.contains(o))
                                .map(move |o| (*m, *o))
                        })
                        .collect();
                    for (a, b) in &pairs {
                        cut_link(sim, world, now, *a, *b, false);
                    }
                    world.note(now, format!("{minority:?} split from the rest"));
                    Undo::Repair(pairs)
                }
                Fault::Crash { node, .. } => {
                    if !world.lock().running.contains_key(node) {
                        return;
                    }
                    crash(sim, world, invariants, *node, true);
                    world.note(now, format!("n{node} crashed"));
                    Undo::Restart(*node)
                }
                Fault::ProviderOutage { .. } => {
                    world.lock().provider_out = true;
                    world.note(now, "provider out");
                    Undo::Provider
                }
                Fault::SlowProvider { extra, .. } => {
                    world.lock().provider_extra = *extra;
                    world.note(now, format!("provider slow (+{} ms)", extra.as_millis()));
                    Undo::Provider
                }
                Fault::RollingUpgrade { .. } => {
                    world.lock().drain.insert(1);
                    world.note(now, "rolling upgrade: n1 asked to drain");
                    Undo::Rolling(1, Roll::Draining)
                }
            };
            *stage = Stage::Active(now + length, undo);
        }
        Stage::Active(until, undo) => {
            if let Undo::Rolling(node, roll) = undo {
                match roll_on(sim, world, invariants, choices, now, *node, *roll) {
                    Some((n, r)) => (*node, *roll) = (n, r),
                    None => *stage = Stage::Done,
                }
                return;
            }
            if now < *until {
                return;
            }
            match undo {
                Undo::Repair(pairs) => {
                    for (a, b) in pairs.iter() {
                        mend_link(sim, world, now, *a, *b, false);
                    }
                    world.note(now, "partition healed");
                }
                Undo::RepairOneWay(pairs) => {
                    for (a, b) in pairs.iter() {
                        mend_link(sim, world, now, *a, *b, true);
                    }
                    world.note(now, "one-way partition healed");
                }
                Undo::Restart(node) => {
                    sim.bounce(host(*node));
                    world.lock().restarts.push(now);
                    world.note(now, format!("n{node} restarted"));
                }
                Undo::Provider => {
                    let mut w = world.lock();
                    w.provider_out = false;
                    w.provider_extra = Duration::ZERO;
                    drop(w);
                    world.note(now, "provider healthy");
                }
                Undo::Rolling(..) => {}
            }
            *stage = Stage::Done;
        }
    }
}

/// Cuts the link a → b (and b → a unless `oneway`), and records when links were cut (the
/// rate-limit bound does not hold across a cut).
fn cut_link(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    now: Duration,
    a: u64,
    b: u64,
    oneway: bool,
) {
    let mut w = world.lock();
    if oneway {
        sim.partition_oneway(host(a), host(b));
    } else {
        sim.partition(host(a), host(b));
        w.cut.insert((b, a));
    }
    w.cut.insert((a, b));
    if !w.cut_spans.last().is_some_and(|(_, until)| until.is_none()) {
        w.cut_spans.push((now, None));
    }
}

/// Repairs what `cut_link` cut.
fn mend_link(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    now: Duration,
    a: u64,
    b: u64,
    oneway: bool,
) {
    let mut w = world.lock();
    if oneway {
        sim.repair_oneway(host(a), host(b));
    } else {
        sim.repair(host(a), host(b));
        w.cut.remove(&(b, a));
    }
    w.cut.remove(&(a, b));
    if w.cut.is_empty() {
        if let Some((_, until)) = w.cut_spans.last_mut() {
            until.get_or_insert(now);
        }
    }
}

/// Stops a node: its process is gone, and with `power_loss` so is what its log had not
/// flushed.
fn crash(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    invariants: &mut Invariants,
    node: u64,
    power_loss: bool,
) {
    sim.crash(host(node));
    let mut w = world.lock();
    w.running.remove(&node);
    let lost = match (power_loss, w.disks.get(&node)) {
        (true, Some(disk)) => {
            let lost = disk.log.unflushed();
            disk.log.crash();
            lost
        }
        _ => 0,
    };
    drop(w);
    if lost > 0 {
        world.note(
            sim.elapsed(),
            format!("n{node} lost {lost} unflushed log writes"),
        );
    }
    invariants.crashed(world, node);
}

/// One step of the rolling upgrade: drain, stop, restart ("as version N+1"), wait until
/// caught up, then the next node. Returns the next step, or none when every node is done.
fn roll_on(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    invariants: &mut Invariants,
    choices: &mut Choices,
    now: Duration,
    id: u64,
    roll: Roll,
) -> Option<(u64, Roll)> {
    match roll {
        Roll::Draining => {
            if !world.lock().drained.contains(&id) {
                return Some((id, roll));
            }
            crash(sim, world, invariants, id, false);
            let mut w = world.lock();
            w.drain.remove(&id);
            w.drained.remove(&id);
            drop(w);
            world.note(now, format!("n{id} stopped after its drain"));
            Some((
                id,
                Roll::Stopped(now + Duration::from_millis(100 + choices.below(400))),
            ))
        }
        Roll::Stopped(at) => {
            if now < at {
                return Some((id, roll));
            }
            let target = world
                .running()
                .keys()
                .filter_map(|o| applied(world, *o))
                .max()
                .unwrap_or(0);
            sim.bounce(host(id));
            world.lock().restarts.push(now);
            world.note(now, format!("n{id} restarted as the new version"));
            Some((id, Roll::Starting(target)))
        }
        Roll::Starting(target) => {
            if applied(world, id).is_none_or(|a| a < target) {
                return Some((id, roll));
            }
            world.note(now, format!("n{id} caught up"));
            if id == world.lock().disks.len() as u64 {
                world.note(now, "rolling upgrade done");
                return None;
            }
            world.lock().drain.insert(id + 1);
            world.note(now, format!("n{} asked to drain", id + 1));
            Some((id + 1, Roll::Draining))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_run_byte_for_byte() {
        // One seed of each scenario (the scenario is `seed % 6`).
        let mut traces = Vec::new();
        for seed in 42..48 {
            let first = run(seed).expect("run");
            let again = run(seed).expect("run");
            assert_eq!(
                first.join("\n").as_bytes(),
                again.join("\n").as_bytes(),
                "seed {seed} replayed differently"
            );
            assert!(first.iter().any(|l| l.contains("leader")), "{first:?}");
            assert!(first.iter().any(|l| l.contains("settled")), "{first:?}");
            traces.push(first);
        }
        println!("{}", traces[0].join("\n"));
        // The trace does depend on the seed (so the comparisons above can fail).
        traces.dedup();
        assert_eq!(traces.len(), 6);
    }

    /// Runs seeds from 0 with `options` until one fails: it must within `within` seeds,
    /// with a violation naming `what`, and the same seed must pass without the bug.
    fn assert_caught(options: Options, within: u64, what: &str) {
        let caught = (0..within).find_map(|seed| {
            let report = run_with(seed, options);
            (!report.ok()).then(|| (seed, report.violations[0].clone()))
        });
        println!("{options:?} caught: {caught:?}");
        let (seed, violation) = caught.expect("the bug is caught");
        assert!(violation.contains(what), "{violation}");
        assert!(run_with(seed, Options::default()).ok());
    }

    #[test]
    fn a_charge_applied_twice_on_outbox_replay_is_caught() {
        let bug = Some(KnownBug::ReplayWithNewId);
        assert_caught(
            Options {
                bug,
                ..Options::default()
            },
            120,
            "more than once",
        );
    }

    #[test]
    fn a_rate_limiter_that_ignores_other_nodes_is_caught() {
        let bug = Some(KnownBug::RateClaimsIgnored);
        assert_caught(
            Options {
                bug,
                ..Options::default()
            },
            60,
            "over its bound",
        );
    }

    #[test]
    fn check_then_charge_admission_is_caught_overspending() {
        let options = Options {
            naive_budgets: true,
            ..Options::default()
        };
        assert_caught(options, 30, "overspent");
    }
}
