//! Faults on schedule: partitions (both ways or one way), crashes with lost writes,
//! provider outages and slowness, and the rolling upgrade, each moved along its stages by
//! the driver.

use crate::invariants::Invariants;
use crate::net::host;
use crate::plan::{Choices, Fault};
use crate::world::World;
use std::time::Duration;

/// A fault's progress.
pub enum Stage {
    Pending,
    /// Started; ends at the time given (with what it needs to undo).
    Active(Duration, Undo),
    Done,
}

pub enum Undo {
    Repair(Vec<(u64, u64)>),
    RepairOneWay(Vec<(u64, u64)>),
    Restart(u64),
    Provider,
    /// Rolling upgrade: the node being upgraded and its step.
    Rolling(u64, Roll),
}

#[derive(Clone, Copy)]
pub enum Roll {
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

/// Moves one fault along its schedule.
pub fn drive(
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
    invariants.crashed(world, node, sim.elapsed());
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
