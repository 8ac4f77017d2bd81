//! At most one leader per term (election safety), over the whole run: a node's own
//! metrics saying it leads are recorded per term, and a second node in the same term is a
//! breach.

use crate::world::{Running, World};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
pub struct Leaders {
    by_term: BTreeMap<u64, u64>,
}

impl Leaders {
    pub fn check(&mut self, world: &World, running: &BTreeMap<u64, Running>, at: Duration) {
        for node in running.values() {
            let m = node.raft.metrics().borrow().clone();
            if m.current_leader != Some(m.id) {
                continue;
            }
            match self.by_term.insert(m.current_term, m.id) {
                Some(other) if other != m.id => {
                    self.by_term.insert(m.current_term, other);
                    world.violation(
                        at,
                        format!(
                            "two leaders in term {}: n{other} and n{}",
                            m.current_term, m.id
                        ),
                    );
                }
                None => world.note(at, format!("leader n{} term {}", m.id, m.current_term)),
                Some(_) => {}
            }
        }
    }
}
