//! A budget refusal (402) happens only when the room left is below the refused request's
//! own minimum (its prompt and the smallest answer it can be served with). The room a
//! node can count on, in its own applied state at the moment it refuses, is the limit
//! less the spend, less what the other nodes hold as leases (they may be using them, or
//! be unreachable), less what its own requests hold: if that covers the minimum on every
//! budget of the chain, the refusal stranded room the request could have used.

use crate::world::World;
use tollgate_node::governance::admission::Admission;
use tollgate_proto::{BudgetId, UnixMs, Usd};
use tollgate_raft::GovState;

#[allow(clippy::too_many_arguments)]
pub fn on_refusal(
    world: &World,
    node: u64,
    request_id: &str,
    state: &GovState,
    admission: &Admission,
    chain: &[BudgetId],
    minimum: Usd,
    now_ms: UnixMs,
    why: &str,
) {
    let room = chain
        .iter()
        .filter_map(|id| {
            let status = state.budget_status(id, now_ms)?;
            let window = status.window.start_ms;
            let others: u64 = state
                .escrow()
                .of_budget(id)
                .filter(|(n, l)| *n != node && l.window_start_ms == window)
                .map(|(_, l)| l.outstanding.0)
                .sum();
            Some((
                id,
                status
                    .budget
                    .limit
                    .0
                    .saturating_sub(status.spent.0)
                    .saturating_sub(others)
                    .saturating_sub(admission.held_here(id).0)
                    .saturating_sub(admission.returning_here(id).0),
            ))
        })
        .min_by_key(|(_, room)| *room);
    if let Some((id, room)) = room {
        if room >= minimum.0 {
            world.violation(
                crate::world::now(),
                format!(
                    "n{node} refused {request_id} (minimum {} µ$) with {room} µ$ of budget {id} free to it: {why}",
                    minimum.0
                ),
            );
        }
    }
}
