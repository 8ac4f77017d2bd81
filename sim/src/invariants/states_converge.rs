//! After healing, every node applies the same log and holds the identical `GovState`.

use crate::world::Running;
use std::collections::BTreeMap;

/// `Ok` with a summary once every node runs, applied the same index and holds the same
/// state; `Err` with what differs.
pub fn check(running: &BTreeMap<u64, Running>, nodes: u64) -> Result<String, String> {
    if running.len() as u64 != nodes {
        return Err(format!("{} of {nodes} nodes running", running.len()));
    }
    let applied: Vec<u64> = running
        .values()
        .map(|n| {
            n.raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index)
        })
        .collect();
    if applied.iter().any(|a| *a != applied[0]) {
        return Err(format!("applied indexes differ: {applied:?}"));
    }
    let states: Vec<tollgate_raft::GovState> =
        running.values().map(|n| n.state.read().clone()).collect();
    if let Some(i) = states.iter().position(|s| *s != states[0]) {
        return Err(format!(
            "n{} and n{} applied through {} but their states differ",
            running.keys().next().copied().unwrap_or(0),
            running.keys().nth(i).copied().unwrap_or(0),
            applied[0]
        ));
    }
    Ok(format!(
        "every node applied through {} and holds the same state ({} keys, {} budgets)",
        applied[0],
        states[0].keys().len(),
        states[0].budgets().len()
    ))
}
