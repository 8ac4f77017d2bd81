//! A revoked key is never admitted by a node after that node applied the revocation.
//! After every step the checker notes, per node, the keys its applied state shows
//! disabled; the node's request path reports every key it admits. A crash starts the
//! node's record afresh (its new process applies the log again before serving).

use crate::world::{Running, World};
use std::collections::BTreeMap;
use tollgate_proto::KeyId;

pub fn observe(world: &World, running: &BTreeMap<u64, Running>) {
    let mut seen = Vec::new();
    for (id, node) in running {
        let state = node.state.read();
        for key in state.keys().values().filter(|k| k.disabled) {
            seen.push((*id, key.id.clone()));
        }
    }
    if !seen.is_empty() {
        world.lock().revoked_seen.extend(seen);
    }
}

pub fn on_admit(world: &World, node: u64, key: &KeyId) {
    let revoked = world.lock().revoked_seen.contains(&(node, key.clone()));
    if revoked {
        world.violation(
            crate::world::now(),
            format!("n{node} admitted {key} after it applied the key's revocation"),
        );
    }
}

pub fn crashed(world: &World, node: u64) {
    world.lock().revoked_seen.retain(|(n, _)| *n != node);
}
