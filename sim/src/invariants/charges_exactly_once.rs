//! Every acknowledged charge is applied exactly once. A node records a charge as
//! acknowledged just before it answers 200 (the charge is in its outbox by then). At
//! every step no node's ledgers may count more requests or spend for a key than were
//! acknowledged; once settled, every node's count and spend equal them.

use crate::world::{Running, World};
use std::collections::BTreeMap;
use std::time::Duration;
use tollgate_proto::{KeyId, Usd};

pub fn on_acknowledge(world: &World, node: u64, request_id: &str, key: &KeyId, cost: Usd) {
    let mut w = world.lock();
    w.acknowledged_on.insert(request_id.to_owned(), node);
    if w.acknowledged
        .insert(request_id.to_owned(), (key.clone(), cost))
        .is_some()
    {
        drop(w);
        world.violation(
            crate::world::now(),
            format!("{request_id} acknowledged twice"),
        );
        return;
    }
    let totals = w.acknowledged_per_key.entry(key.clone()).or_default();
    totals.0 += 1;
    totals.1 += cost.0;
}

pub fn check_step(world: &World, running: &BTreeMap<u64, Running>, at: Duration) {
    let acknowledged = world.lock().acknowledged_per_key.clone();
    for (id, node) in running {
        let over: Vec<String> = {
            let state = node.state.read();
            state
                .keys()
                .keys()
                .filter_map(|key| {
                    let usage = state.usage_of_key(key);
                    let (requests, spent) = acknowledged.get(key).copied().unwrap_or_default();
                    (usage.requests > requests || usage.spent.0 > spent).then(|| {
                        format!(
                            "n{id} counts {} requests / {} µ$ for {key}, {requests} / {spent} acknowledged",
                            usage.requests, usage.spent.0
                        )
                    })
                })
                .collect()
        };
        for o in over {
            world.violation(at, format!("charge applied more than once: {o}"));
        }
    }
}

pub fn check_end(world: &World, running: &BTreeMap<u64, Running>) -> Result<(), String> {
    let acknowledged = world.lock().acknowledged_per_key.clone();
    for (id, node) in running {
        let state = node.state.read();
        for (key, (requests, spent)) in &acknowledged {
            let usage = state.usage_of_key(key);
            if usage.requests != *requests || usage.spent.0 != *spent {
                return Err(format!(
                    "n{id} counts {} requests / {} µ$ for {key}, {requests} / {spent} acknowledged",
                    usage.requests, usage.spent.0
                ));
            }
        }
    }
    Ok(())
}
