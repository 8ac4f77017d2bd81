//! During a rolling upgrade no client request fails: every request gets an answer from
//! some node (the client tries another node when one refuses with 503 or does not
//! answer, as the load balancer does). Budget and revoked-key refusals are answers.

use crate::plan::{Plan, Scenario};
use crate::world::World;
use std::time::Duration;

pub fn check(world: &World, plan: &Plan, at: Duration) {
    if plan.scenario != Scenario::RollingUpgrade {
        return;
    }
    let failures = world.lock().failures.clone();
    for f in failures {
        world.violation(
            at,
            format!("request failed during the rolling upgrade: {f}"),
        );
    }
}
