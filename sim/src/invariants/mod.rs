//! The invariants, one file each. `after_step` runs the safety checks after every step
//! of the simulation; `at_end` the ones that hold once the faults are healed and the
//! cluster has settled. A breach is recorded in the world (and ends the run as failed).
//!
//! # Layout
//! - `one_leader_per_term`, `committed_entries_never_change`, `states_converge`: Raft.
//! - `charges_exactly_once`, `budget_never_overspent`, `refused_only_when_short`,
//!   `revoked_key_refused`: the ledger and governance.
//! - `rate_limit_within_bound`: shared rate limits.
//! - `no_failed_requests`: rolling upgrades lose no request.
//! - `requests_logged_once`, `anchors_hold`, `intents_reconciled`: the request log.

pub mod anchors_hold;
pub mod budget_never_overspent;
pub mod charges_exactly_once;
pub mod committed_entries_never_change;
pub mod intents_reconciled;
pub mod no_failed_requests;
pub mod one_leader_per_term;
pub mod rate_limit_within_bound;
pub mod refused_only_when_short;
pub mod requests_logged_once;
pub mod revoked_key_refused;
pub mod states_converge;

use crate::plan::Plan;
use crate::world::World;
use std::time::Duration;

#[derive(Default)]
pub struct Invariants {
    leaders: one_leader_per_term::Leaders,
    committed: committed_entries_never_change::Committed,
    anchors: anchors_hold::Anchors,
}

impl Invariants {
    pub fn after_step(&mut self, world: &World, at: Duration) {
        let running = world.running();
        self.leaders.check(world, &running, at);
        self.committed.check(world, &running, at);
        self.anchors.check(world, &running, at);
        charges_exactly_once::check_step(world, &running, at);
        budget_never_overspent::check(world, &running, at);
        revoked_key_refused::observe(world, &running);
    }

    /// A node stopped: forget what its process had shown.
    pub fn crashed(&mut self, world: &World, node: u64, at: Duration) {
        self.committed.restarted(node);
        revoked_key_refused::crashed(world, node);
        intents_reconciled::crashed(world, node, at);
    }

    /// Once the cluster settled: `Err` says what has not (yet) converged.
    pub fn settled(world: &World, nodes: u64) -> Result<String, String> {
        let running = world.running();
        let summary = states_converge::check(&running, nodes)?;
        charges_exactly_once::check_end(world, &running)?;
        requests_logged_once::check_end(world, &running)?;
        intents_reconciled::check_end(world, &running)?;
        anchors_hold::check_end(&running)?;
        Ok(summary)
    }

    pub fn at_end(world: &World, plan: &Plan, at: Duration) {
        no_failed_requests::check(world, plan, at);
        rate_limit_within_bound::check(world, plan, at);
    }
}
