//! After a crash, intents are reconciled: a request whose intent was in a node's outbox
//! when the node stopped, without its end, is charged at its reservation and recorded as
//! `unknown (node stopped)` by that node's next start. The simulator tracks each node's
//! open intents (written before the provider call, closed when the request ends with no
//! await between); a crash turns them into orphans, which count as charged requests
//! (`charges_exactly_once`) and must each show in the node's log, once settled.

use crate::world::{Running, World};
use std::collections::BTreeMap;
use std::time::Duration;
use tollgate_proto::records::{RequestRecord, OUTCOME_NODE_STOPPED};
use tollgate_proto::{KeyId, Usd};

/// The request's intent is in `node`'s outbox.
pub fn on_intent(world: &World, node: u64, request_id: &str, key: &KeyId, reserved: Usd) {
    world
        .lock()
        .open_intents
        .entry(node)
        .or_default()
        .insert(request_id.to_owned(), (key.clone(), reserved));
}

/// The request ended (charged or refused): its intent is closed.
pub fn on_end(world: &World, node: u64, request_id: &str) {
    if let Some(open) = world.lock().open_intents.get_mut(&node) {
        open.remove(request_id);
    }
}

/// `node` stopped: what it left open is charged at its next start.
pub fn crashed(world: &World, node: u64, at: Duration) {
    let mut w = world.lock();
    let open = w.open_intents.remove(&node).unwrap_or_default();
    let left = open.len();
    for (request_id, (key, reserved)) in open {
        let totals = w.acknowledged_per_key.entry(key.clone()).or_default();
        totals.0 += 1;
        totals.1 += reserved.0;
        w.orphans.insert(request_id, (node, key, reserved));
    }
    drop(w);
    if left > 0 {
        world.note(
            at,
            format!("n{node} stopped with {left} request(s) at the provider"),
        );
    }
}

/// Every orphan is recorded by its node, at its reservation, as stopped.
pub fn check_end(world: &World, running: &BTreeMap<u64, Running>) -> Result<(), String> {
    let orphans = world.lock().orphans.clone();
    // Each node's records by id (the simulator's ids carry no time, which the store's
    // lookup by id needs).
    let mut logged: BTreeMap<u64, BTreeMap<String, RequestRecord>> = BTreeMap::new();
    for (request_id, (node, _, reserved)) in &orphans {
        if !logged.contains_key(node) {
            let log = running
                .get(node)
                .and_then(|r| r.log.as_ref())
                .ok_or_else(|| format!("n{node} runs without its request log"))?;
            let records = super::requests_logged_once::records(log)
                .map_err(|e| format!("n{node}'s log unreadable: {e}"))?;
            let by_id = records
                .into_iter()
                .map(|r| (r.request_id.0.clone(), r))
                .collect();
            logged.insert(*node, by_id);
        }
        let record = logged
            .get(node)
            .and_then(|by_id| by_id.get(request_id))
            .ok_or_else(|| {
                format!("{request_id}, in flight when n{node} stopped, has no record")
            })?;
        if record.outcome.as_deref() != Some(OUTCOME_NODE_STOPPED) || record.cost != *reserved {
            return Err(format!(
                "{request_id}, in flight when n{node} stopped, is recorded as {:?} at {} µ$, not at its reservation {} µ$",
                record.outcome, record.cost.0, reserved.0
            ));
        }
    }
    Ok(())
}
