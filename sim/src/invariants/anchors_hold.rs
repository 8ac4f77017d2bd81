//! Anchored chain heads never change: an anchor (a node's request-log head, replicated
//! through Raft) names the same hash for the same node and sequence on every node and
//! for the whole run, and each node's log, as stored, still matches every anchor of its
//! chain (`LogStore::verify`) once the cluster settled.

use crate::world::{Running, World};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every anchor seen in any node's state: (node, seq) → hash.
#[derive(Default)]
pub struct Anchors {
    seen: BTreeMap<(u64, u64), [u8; 32]>,
}

impl Anchors {
    pub fn check(&mut self, world: &World, running: &BTreeMap<u64, Running>, at: Duration) {
        for (id, node) in running {
            let state = node.state.read();
            for (chain, anchors) in state.audit().anchors() {
                for a in anchors {
                    let hash = *self.seen.entry((*chain, a.seq)).or_insert(a.hash);
                    if hash != a.hash {
                        world.violation(
                            at,
                            format!(
                                "n{id} holds another anchor of n{chain}'s chain at sequence {}",
                                a.seq
                            ),
                        );
                    }
                }
            }
        }
    }
}

pub fn check_end(running: &BTreeMap<u64, Running>) -> Result<(), String> {
    for (id, node) in running {
        let log = node
            .log
            .as_ref()
            .ok_or_else(|| format!("n{id} runs without its request log"))?;
        let anchors = node
            .state
            .read()
            .audit()
            .anchors()
            .get(id)
            .cloned()
            .unwrap_or_default();
        let report = log.store.verify(&anchors).map_err(|e| e.to_string())?;
        if let Some(seq) = report.bad_seq {
            return Err(format!(
                "n{id}'s request log fails at sequence {seq}: {}",
                report.reason.unwrap_or_default()
            ));
        }
    }
    Ok(())
}
