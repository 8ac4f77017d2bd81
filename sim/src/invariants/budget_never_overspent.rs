//! Spend never exceeds a budget. The simulated provider never costs more than the
//! estimate admission reserved, so the estimate error is zero and the bound is exact:
//! in every node's applied state, at every step, each budget's spend in the window it
//! was last charged in is at most its limit (the admin only ever raises limits).

use crate::world::{Running, World};
use std::collections::BTreeMap;
use std::time::Duration;

pub fn check(world: &World, running: &BTreeMap<u64, Running>, at: Duration) {
    for (id, node) in running {
        let over: Vec<String> = {
            let state = node.state.read();
            state
                .budgets()
                .values()
                .filter_map(|b| Some((b, state.ledger(&b.id)?)))
                .filter(|(b, l)| l.spent > b.limit)
                .map(|(b, l)| {
                    format!(
                        "n{id}: budget {} spent {} µ$ of {} µ$ in the window from {}",
                        b.id,
                        l.spent.0,
                        b.limit.0,
                        tollgate_raft::rfc3339(l.window_start_ms)
                    )
                })
                .collect()
        };
        for o in over {
            world.violation(at, format!("overspent: {o}"));
        }
    }
}
