//! Spend never exceeds a budget. The simulated provider never costs more than the
//! estimate admission reserved, so the estimate error is zero and the bound is exact:
//! in every node's applied state, at every step, each budget's spend in its window is at
//! most its limit (the admin only ever raises limits in the workload).

use crate::node::EPOCH_MS;
use crate::world::{Running, World};
use std::collections::BTreeMap;
use std::time::Duration;

pub fn check(world: &World, running: &BTreeMap<u64, Running>, at: Duration) {
    let now_ms = EPOCH_MS + at.as_millis() as u64;
    for (id, node) in running {
        let over: Vec<String> = {
            let state = node.state.read();
            state
                .budgets()
                .keys()
                .filter_map(|b| state.budget_status(b, now_ms))
                .filter(|s| s.spent > s.budget.limit)
                .map(|s| {
                    format!(
                        "n{id}: budget {} spent {} µ$ of {} µ$",
                        s.budget.id, s.spent.0, s.budget.limit.0
                    )
                })
                .collect()
        };
        for o in over {
            world.violation(at, format!("overspent: {o}"));
        }
    }
}
