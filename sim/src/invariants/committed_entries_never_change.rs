//! Committed log entries never change: every entry a node has applied is committed, and
//! the log id at its index must be the same on every node, at every time (also after a
//! crash lost a node's unflushed writes).

use crate::world::{Running, World};
use std::collections::BTreeMap;
use std::time::Duration;
use tollgate_raft::typ::LogId;
use tollgate_raft::LogBackend;

#[derive(Default)]
pub struct Committed {
    /// Index → the log id first seen applied there.
    entries: BTreeMap<u64, LogId>,
    /// Per node, the applied index checked so far (by its current process).
    checked: BTreeMap<u64, u64>,
}

impl Committed {
    pub fn check(&mut self, world: &World, running: &BTreeMap<u64, Running>, at: Duration) {
        for (id, node) in running {
            let applied = node
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index);
            let from = self.checked.get(id).copied().unwrap_or(0);
            if applied <= from {
                continue;
            }
            let Some(log) = world.lock().disks.get(id).map(|d| d.log.clone()) else {
                continue;
            };
            // Entries a snapshot purged are simply not read.
            let Ok(read) = log.read_range(from + 1..applied + 1) else {
                continue;
            };
            for entry in read {
                let seen = *self
                    .entries
                    .entry(entry.log_id.index)
                    .or_insert(entry.log_id);
                if seen != entry.log_id {
                    world.violation(
                        at,
                        format!(
                            "committed entry {} changed: {seen} before, {} on n{id}",
                            entry.log_id.index, entry.log_id
                        ),
                    );
                }
            }
            self.checked.insert(*id, applied);
        }
    }

    pub fn restarted(&mut self, node: u64) {
        self.checked.remove(&node);
    }
}
