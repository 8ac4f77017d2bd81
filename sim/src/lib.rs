//! Tollgate's deterministic simulator (issue 6; started, not done): production Raft and
//! governance code on turmoil's simulated hosts, network and time, replayable by seed.
//!
//! What is here so far:
//! - `net`: the `PeerTransport` seam over turmoil's simulated TCP, served by the
//!   production `RaftRpcHandler`;
//! - `run(seed)`: 3 to 5 simulated nodes form a Raft cluster and commit writes through
//!   whichever node leads; the leader is cut off from the others for a while, then
//!   healed; one node crashes and restarts from its disk; checked throughout: at most one leader per term; at the end: every node
//!   applied the same log and holds the same governance state. The trace of a run
//!   depends only on its seed (openraft's election timeouts come from
//!   `tollgate_raft::runtime`, seeded here; turmoil's network from the same seed).
//! - `main.rs`: `--seed N`, `--seeds A..B`, `--reproduce N`.
//!
//! Still to come (see the issue): loss of unflushed writes at a crash, clock skew,
//! rolling upgrades, the gateway workload (budgets, charges, keys), the remaining
//! invariants, and gossip under simulation.

pub mod net;

use net::SimTransport;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_node::cluster::rpc::{Hello, RaftRpcHandler};
use tollgate_node::cluster::Network;
use tollgate_proto::{Command, Customer};
use tollgate_raft::log_backend::LogBackend;
use tollgate_raft::mem_log::MemLog;
use tollgate_raft::snapshot::SnapshotSlot;
use tollgate_raft::typ::{Raft, TollgateNode};

/// The port every simulated node serves peers on.
const PEER_PORT: u16 = 7000;
/// Writes a run commits.
const WRITES: u32 = 5;

type Rafts = Arc<Mutex<BTreeMap<u64, (Raft, tollgate_raft::SharedGovState)>>>;
/// Each node's "disk": the log and snapshot slot survive a crash (every write to them is
/// durable at once; the state machine in memory is lost and rebuilt from them).
type Disks = Arc<Mutex<BTreeMap<u64, (MemLog, SnapshotSlot)>>>;

fn host(id: u64) -> String {
    format!("n{id}")
}

fn peer_addr(id: u64) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(host(id)), PEER_PORT)
}

/// One node: in-memory Raft storage on its "disk", the production handler served over
/// `net`. Started again after a crash, it recovers from the same disk.
async fn node(id: u64, nodes: u64, rafts: Rafts, disks: Disks) -> turmoil::Result {
    let (disk_log, disk_snapshots) = disks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(id)
        .or_insert_with(|| (MemLog::default(), SnapshotSlot::in_memory()))
        .clone();
    let restarted = disk_log.read_vote()?.is_some() || disk_log.last_log_id()?.is_some();
    let (log, sm) = tollgate_raft::storage::open_in_memory(disk_log, disk_snapshots)?;
    let config = Arc::new(tollgate_raft::config::raft_config("sim").map_err(|e| e.to_string())?);
    let me = TollgateNode {
        raft_addr: peer_addr(id).to_string(),
        http_addr: String::new(),
    };
    let handler = Arc::new(RaftRpcHandler::pending(Hello {
        node_id: id,
        node: me,
    }));
    let state = sm.state();
    let raft = Raft::new(id, config, Network::new(Arc::new(SimTransport)), log, sm).await?;
    handler.set_raft(raft.clone());
    rafts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, (raft.clone(), state));
    if id == 1 && !restarted {
        let members: BTreeMap<u64, TollgateNode> = (1..=nodes)
            .map(|n| {
                (
                    n,
                    TollgateNode {
                        raft_addr: peer_addr(n).to_string(),
                        http_addr: String::new(),
                    },
                )
            })
            .collect();
        // Refused if a vote was cast meanwhile: then the cluster forms anyway.
        let _ = raft.initialize(members).await;
    }
    net::serve(SocketAddr::from(([0, 0, 0, 0], PEER_PORT)), handler).await?;
    Ok(())
}

fn customer(n: u32) -> Command {
    Command::CreateCustomer(Customer {
        id: format!("cus_{n}").as_str().into(),
        name: format!("c{n}"),
        created_at_ms: 1,
    })
}

/// A small deterministic generator for the scenario's own choices (splitmix64).
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Deadline of one write through a node that believes it leads.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);

/// One seeded run: 3 to 5 nodes form a cluster; writes go through whichever node leads;
/// after a few, the leader is cut off from every other node for 1 to 3 s, then healed;
/// one node crashes at a random time and restarts from its disk a while later; the run
/// ends when every write is committed and every node's governance state is the same. Checked after every poll: at most one leader per term. Returns the trace (what
/// happened, on simulated time), or the violation with the trace so far.
pub fn run(seed: u64) -> Result<Vec<String>, String> {
    tollgate_raft::runtime::seed_this_thread(seed);
    let mut choices = Choices(seed);
    let nodes = 3 + choices.below(3);
    let cut_after = 1 + choices.below(WRITES as u64 - 1) as u32;
    let cut_ms = 1000 + choices.below(2000);
    let crash_node = 1 + choices.below(nodes);
    let crash_at = Duration::from_millis(500 + choices.below(4000));
    let down_for = Duration::from_millis(200 + choices.below(3000));
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(120))
        .build();
    let rafts: Rafts = Arc::default();
    let disks: Disks = Arc::default();
    for id in 1..=nodes {
        let (rafts, disks) = (Arc::clone(&rafts), Arc::clone(&disks));
        sim.host(host(id), move || {
            node(id, nodes, Arc::clone(&rafts), Arc::clone(&disks))
        });
    }
    let trace = Arc::new(Mutex::new(vec![format!(
        "seed {seed}: {nodes} nodes, leader cut off for {cut_ms} ms after {cut_after} writes, n{crash_node} crashed at {} ms for {} ms",
        crash_at.as_millis(),
        down_for.as_millis()
    )]));
    let client_trace = Arc::clone(&trace);
    let client_rafts = Arc::clone(&rafts);
    sim.client("client", async move {
        let log = |line: String| {
            client_trace
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{:>6} ms {line}", turmoil::elapsed().as_millis()));
        };
        let all = || {
            client_rafts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        // term → the node that led it: two leaders in one term is a violation.
        let mut leaders: BTreeMap<u64, u64> = BTreeMap::new();
        let mut check = |log: &dyn Fn(String)| -> Result<Option<(Raft, u64)>, String> {
            let mut current = None;
            for (raft, _) in all().values() {
                let m = raft.metrics().borrow().clone();
                if m.current_leader == Some(m.id) {
                    match leaders.insert(m.current_term, m.id) {
                        Some(other) if other != m.id => {
                            return Err(format!(
                                "two leaders in term {}: n{other} and n{}",
                                m.current_term, m.id
                            ))
                        }
                        None => log(format!("leader n{} term {}", m.id, m.current_term)),
                        Some(_) => {}
                    }
                    if current.as_ref().is_none_or(|(_, t)| m.current_term > *t) {
                        current = Some((raft.clone(), m.current_term));
                    }
                }
            }
            Ok(current)
        };
        let mut cut: Option<(u64, tokio::time::Instant)> = None;
        let mut did_cut = false;
        let mut written = 0;
        while written < WRITES {
            if let Some((id, until)) = cut {
                if tokio::time::Instant::now() >= until {
                    for other in (1..=nodes).filter(|o| *o != id) {
                        turmoil::repair(host(id), host(other));
                    }
                    log(format!("n{id} healed"));
                    cut = None;
                }
            }
            let Some((leader, _)) = check(&log)? else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            if written == cut_after && !did_cut {
                did_cut = true;
                let id = leader.metrics().borrow().id;
                for other in (1..=nodes).filter(|o| *o != id) {
                    turmoil::partition(host(id), host(other));
                }
                log(format!("n{id} cut off"));
                cut = Some((
                    id,
                    tokio::time::Instant::now() + Duration::from_millis(cut_ms),
                ));
                continue;
            }
            match tokio::time::timeout(WRITE_DEADLINE, leader.client_write(customer(written))).await
            {
                Ok(Ok(w)) => {
                    log(format!("write {written} at log index {}", w.log_id.index));
                    written += 1;
                }
                Ok(Err(e)) => log(format!("write {written} refused: {e}")),
                Err(_) => log(format!("write {written} timed out")),
            }
        }
        if let Some((id, _)) = cut {
            for other in (1..=nodes).filter(|o| *o != id) {
                turmoil::repair(host(id), host(other));
            }
            log(format!("n{id} healed"));
        }
        // Liveness: every node applies the same log and holds the same state.
        loop {
            check(&log)?;
            let nodes_now = all();
            let applied: Vec<Option<u64>> = nodes_now
                .values()
                .map(|(r, _)| r.metrics().borrow().last_applied.map(|l| l.index))
                .collect();
            if applied.len() == nodes as usize && applied.iter().all(|a| *a == applied[0]) {
                let states: Vec<tollgate_raft::GovState> = nodes_now
                    .values()
                    .map(|(_, s)| s.read().unwrap_or_else(|e| e.into_inner()).clone())
                    .collect();
                if states.iter().all(|s| *s == states[0]) {
                    log(format!(
                        "every node applied through {:?}, {} customers, states identical",
                        applied[0],
                        states[0].customers().len()
                    ));
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    });
    // The driver: steps the world and crashes and restarts a node on schedule.
    let note = |line: String, at: Duration| {
        trace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{:>6} ms {line}", at.as_millis()));
    };
    let mut crashed = false;
    let mut restarted = false;
    let result = loop {
        match sim.step() {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e),
        }
        let now = sim.elapsed();
        if !crashed && now >= crash_at {
            sim.crash(host(crash_node));
            rafts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&crash_node);
            note(format!("n{crash_node} crashed"), now);
            crashed = true;
        }
        if crashed && !restarted && now >= crash_at + down_for {
            sim.bounce(host(crash_node));
            note(format!("n{crash_node} restarted"), now);
            restarted = true;
        }
    };
    let result = result.map_err(|e| e.to_string()).and_then(|()| {
        let matched = logs_match(&disks)?;
        note(
            format!("every node's log holds the same entries through index {matched}"),
            sim.elapsed(),
        );
        Ok(())
    });
    let trace = trace.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match result {
        Ok(()) => Ok(trace),
        Err(e) => Err(format!("{e}\n{}", trace.join("\n"))),
    }
}

/// Log matching: through the shortest node's log, every node holds the same log id at
/// every index (what was committed was never changed or lost). Returns that index.
fn logs_match(disks: &Disks) -> Result<u64, String> {
    let disks = disks.lock().unwrap_or_else(|e| e.into_inner());
    let mut logs = Vec::new();
    for (id, (log, _)) in disks.iter() {
        let last = log
            .last_log_id()
            .map_err(|e| e.to_string())?
            .map_or(0, |l| l.index);
        let ids: Vec<tollgate_raft::typ::LogId> = log
            .read_range(0..last + 1)
            .map_err(|e| e.to_string())?
            .iter()
            .map(|e| e.log_id)
            .collect();
        logs.push((*id, ids));
    }
    let shortest = logs.iter().map(|(_, l)| l.len()).min().unwrap_or(0);
    for (id, log) in logs.iter().skip(1) {
        if log[..shortest] != logs[0].1[..shortest] {
            return Err(format!(
                "n{id}'s log differs from n{}'s within the first {shortest} entries",
                logs[0].0
            ));
        }
    }
    Ok(shortest.saturating_sub(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_replays_the_same_run_and_the_cluster_converges() {
        let first = run(42).expect("run");
        let again = run(42).expect("run");
        println!("{}", first.join("\n"));
        assert_eq!(first, again, "same seed, same trace");
        assert!(first.iter().any(|l| l.contains("leader")), "{first:?}");
        assert!(
            first.iter().any(|l| l.contains("states identical")),
            "{first:?}"
        );
        assert!(
            first.last().is_some_and(|l| l.contains("same entries")),
            "{first:?}"
        );
        // The trace does depend on the seed (so the comparison above can fail).
        let others: Vec<Vec<String>> = (1..=5).map(|s| run(s).expect("run")).collect();
        assert!(
            others.iter().any(|t| *t != first),
            "every seed gave {first:?}"
        );
        for t in &others {
            println!("{}", t.first().map_or("", String::as_str));
        }
    }

    #[test]
    fn a_sweep_of_seeds_keeps_one_leader_per_term_and_converges() {
        let failed: Vec<String> = (100..140)
            .filter_map(|seed| run(seed).err().map(|e| format!("seed {seed}: {e}")))
            .collect();
        assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    }
}
