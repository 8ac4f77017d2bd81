//! Escrow leases: slices of a budget's room in its current window granted to nodes, so that a node admits requests against its own
//! slice without a Raft round trip per request, and the nodes together can never reserve
//! more than is left.
//!
//! Pure bookkeeping applied by the state machine: every amount is integer micro-dollars,
//! every map a `BTreeMap`, and the window a lease belongs to comes from the command.
//!
//! The rules:
//! - a grant is at most the budget's room, `limit − spent − Σ outstanding leases` of the
//!   current window, so grants alone never promise more than is left;
//! - a charge applied from a node consumes that node's lease (never below zero); a charge
//!   larger than what its node held (an estimate error) is still applied in full, which is
//!   the only way spend can pass the limit;
//! - a lease from an older window is void: the node's next grant starts from zero;
//! - a node returns its lease when it drains, and the leader reclaims the leases of a node
//!   reported gone; its late charges are still applied and consume nothing;
//! - a grant that leaves a node with less than it needs is a *shortfall*, recorded per
//!   budget with a sequence number, so the other nodes see it and give back what they
//!   hold beyond their requests in flight.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_proto::{BudgetId, UnixMs, Usd};

/// A Raft node id.
pub type NodeId = u64;

/// One node's slice of one budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The budget window the lease belongs to.
    pub window_start_ms: UnixMs,
    /// What the node may still reserve against.
    pub outstanding: Usd,
}

/// Every outstanding lease, by budget then node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    leases: BTreeMap<(BudgetId, NodeId), Lease>,
    /// The last shortfall of each budget: which node was short, and a number that grows
    /// with every shortfall so nodes can tell a new one from one they already answered.
    shortfalls: BTreeMap<BudgetId, Shortfall>,
    /// Per node, the sequence number of the last return applied.
    returns: BTreeMap<NodeId, u64>,
}

/// A node was granted less than it needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortfall {
    pub node: NodeId,
    pub seq: u64,
}

/// A budget as the escrow needs it: its limit and its spend in the window starting at
/// `window_start_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    pub limit: Usd,
    pub spent: Usd,
    pub window_start_ms: UnixMs,
}

impl Escrow {
    /// What is outstanding for `budget` in the window of `room`, over every node.
    pub fn outstanding(&self, budget: &BudgetId, window_start_ms: UnixMs) -> Usd {
        Usd(self
            .of_budget(budget)
            .filter(|(_, l)| l.window_start_ms == window_start_ms)
            .map(|(_, l)| l.outstanding.0)
            .fold(0u64, u64::saturating_add))
    }

    /// What could still be granted: `limit − spent − Σ outstanding` (zero when spend or
    /// leases already reach the limit).
    pub fn room(&self, budget: &BudgetId, room: Room) -> Usd {
        Usd(room
            .limit
            .0
            .saturating_sub(room.spent.0)
            .saturating_sub(self.outstanding(budget, room.window_start_ms).0))
    }

    /// Tops `node`'s lease up by at most `want`, within the room; returns what the node
    /// now holds. A lease of an older window is dropped first.
    pub fn grant(&mut self, budget: &BudgetId, node: NodeId, want: Usd, room: Room) -> Usd {
        self.void_if_old(budget, node, room.window_start_ms);
        let granted = want.0.min(self.room(budget, room).0);
        let key = (budget.clone(), node);
        if granted == 0 && !self.leases.contains_key(&key) {
            // Nothing to hold: no empty lease is recorded.
            return Usd(0);
        }
        let lease = self.leases.entry(key).or_insert(Lease {
            window_start_ms: room.window_start_ms,
            outstanding: Usd(0),
        });
        lease.outstanding = Usd(lease.outstanding.0.saturating_add(granted));
        lease.outstanding
    }

    /// Tops `node`'s lease up by `want`, or more if it needs to hold `need` in all;
    /// records a shortfall when the node is left holding less than `need`.
    pub fn grant_for(
        &mut self,
        budget: &BudgetId,
        node: NodeId,
        need: Usd,
        want: Usd,
        room: Room,
    ) -> Usd {
        let current = self.lease_of(budget, node, room.window_start_ms);
        let ask = want.0.max(need.0.saturating_sub(current.0));
        let held = self.grant(budget, node, Usd(ask), room);
        // A shortfall asks the others to give back; only worth it when they hold some.
        let others_hold = self.of_budget(budget).any(|(n, l)| {
            n != node && l.window_start_ms == room.window_start_ms && l.outstanding.0 > 0
        });
        if held.0 < need.0 && others_hold {
            let seq = self.shortfalls.get(budget).map_or(0, |s| s.seq) + 1;
            self.shortfalls
                .insert(budget.clone(), Shortfall { node, seq });
        }
        held
    }

    /// The sequence number of the last return of `node` applied (0: none).
    pub fn last_return(&self, node: NodeId) -> u64 {
        self.returns.get(&node).copied().unwrap_or(0)
    }

    /// The last shortfall of `budget`, if any.
    pub fn shortfall(&self, budget: &BudgetId) -> Option<Shortfall> {
        self.shortfalls.get(budget).copied()
    }

    /// `node` gives back up to `amount` of its lease of `budget`, if `seq` is above its
    /// last applied return (else nothing: a duplicate or a late retry); returns what it
    /// holds after.
    pub fn give_back(&mut self, budget: &BudgetId, node: NodeId, amount: Usd, seq: u64) -> Usd {
        let key = (budget.clone(), node);
        let last = self.returns.entry(node).or_insert(0);
        if seq <= *last {
            return self.leases.get(&key).map_or(Usd(0), |l| l.outstanding);
        }
        *last = seq;
        let Some(lease) = self.leases.get_mut(&key) else {
            return Usd(0);
        };
        lease.outstanding = Usd(lease.outstanding.0.saturating_sub(amount.0));
        let left = lease.outstanding;
        if left.0 == 0 {
            self.leases.remove(&key);
        }
        left
    }

    /// What `node` holds of `budget` for the window starting at `window_start_ms` (zero
    /// for a lease of another window).
    pub fn lease_of(&self, budget: &BudgetId, node: NodeId, window_start_ms: UnixMs) -> Usd {
        match self.leases.get(&(budget.clone(), node)) {
            Some(l) if l.window_start_ms == window_start_ms => l.outstanding,
            _ => Usd(0),
        }
    }

    /// A charge of `cost` from `node`, in the window starting at `window_start_ms`, was
    /// applied: the node's lease shrinks by it (not below zero).
    pub fn consume(&mut self, budget: &BudgetId, node: NodeId, cost: Usd, window_start_ms: UnixMs) {
        self.void_if_old(budget, node, window_start_ms);
        let key = (budget.clone(), node);
        if let Some(lease) = self.leases.get_mut(&key) {
            if lease.window_start_ms == window_start_ms {
                lease.outstanding = Usd(lease.outstanding.0.saturating_sub(cost.0));
                if lease.outstanding.0 == 0 {
                    // Nothing left to hold: no empty lease is kept.
                    self.leases.remove(&key);
                }
            }
        }
    }

    /// `node` gives its lease of `budget` back; returns what it held.
    pub fn release(&mut self, budget: &BudgetId, node: NodeId) -> Usd {
        self.leases
            .remove(&(budget.clone(), node))
            .map_or(Usd(0), |l| l.outstanding)
    }

    /// Every lease `node` holds is taken back (the node drained or is gone).
    pub fn release_node(&mut self, node: NodeId) {
        self.leases.retain(|(_, n), _| *n != node);
    }

    /// A deleted or changed budget's leases go with it.
    pub fn forget_budget(&mut self, budget: &BudgetId) {
        self.leases.retain(|(b, _), _| b != budget);
        self.shortfalls.remove(budget);
    }

    /// The leases `node` holds, by budget.
    pub fn of_node(&self, node: NodeId) -> Vec<(BudgetId, Lease)> {
        self.leases
            .iter()
            .filter(|((_, n), _)| *n == node)
            .map(|((b, _), l)| (b.clone(), *l))
            .collect()
    }

    /// Every node holding a lease.
    pub fn nodes(&self) -> std::collections::BTreeSet<NodeId> {
        self.leases.keys().map(|(_, n)| *n).collect()
    }

    /// The leases of `budget`, by node.
    pub fn of_budget<'a>(
        &'a self,
        budget: &'a BudgetId,
    ) -> impl Iterator<Item = (NodeId, Lease)> + 'a {
        self.leases
            .range((budget.clone(), NodeId::MIN)..=(budget.clone(), NodeId::MAX))
            .map(|((_, node), lease)| (*node, *lease))
    }

    fn void_if_old(&mut self, budget: &BudgetId, node: NodeId, window_start_ms: UnixMs) {
        let key = (budget.clone(), node);
        if self
            .leases
            .get(&key)
            .is_some_and(|l| l.window_start_ms < window_start_ms)
        {
            self.leases.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(name: &str) -> BudgetId {
        BudgetId(name.into())
    }

    fn room(limit: u64, spent: u64, window: UnixMs) -> Room {
        Room {
            limit: Usd(limit),
            spent: Usd(spent),
            window_start_ms: window,
        }
    }

    #[test]
    fn grants_never_promise_more_than_is_left() {
        let mut e = Escrow::default();
        let budget = b("bud_1");
        assert_eq!(e.grant(&budget, 1, Usd(600), room(1_000, 0, 0)), Usd(600));
        // Node 2 asks for more than is left: gets the rest.
        assert_eq!(e.grant(&budget, 2, Usd(600), room(1_000, 0, 0)), Usd(400));
        assert_eq!(e.grant(&budget, 3, Usd(1), room(1_000, 0, 0)), Usd(0));
        assert_eq!(e.outstanding(&budget, 0), Usd(1_000));
        // Spend applied elsewhere shrinks the room, not the leases.
        assert_eq!(e.room(&budget, room(1_000, 100, 0)), Usd(0));
    }

    #[test]
    fn consumption_frees_nothing_but_release_does() {
        let mut e = Escrow::default();
        let budget = b("bud_1");
        e.grant(&budget, 1, Usd(500), room(1_000, 0, 0));
        // 200 charged from node 1: spent 200, lease 300; room = 1000 - 200 - 300.
        e.consume(&budget, 1, Usd(200), 0);
        assert_eq!(e.room(&budget, room(1_000, 200, 0)), Usd(500));
        // A charge beyond the lease (estimate error) empties it, never below zero.
        e.consume(&budget, 1, Usd(400), 0);
        assert_eq!(e.outstanding(&budget, 0), Usd(0));
        e.grant(&budget, 1, Usd(100), room(1_000, 600, 0));
        assert_eq!(e.release(&budget, 1), Usd(100));
        assert_eq!(e.room(&budget, room(1_000, 600, 0)), Usd(400));
    }

    #[test]
    fn a_new_window_voids_old_leases() {
        let mut e = Escrow::default();
        let budget = b("bud_1");
        e.grant(&budget, 1, Usd(1_000), room(1_000, 0, 0));
        assert_eq!(e.room(&budget, room(1_000, 0, 86_400_000)), Usd(1_000));
        assert_eq!(
            e.grant(&budget, 1, Usd(300), room(1_000, 0, 86_400_000)),
            Usd(300),
            "the old window's lease is not carried over"
        );
        // A late charge of the old window consumes nothing of the new lease.
        e.consume(&budget, 1, Usd(200), 0);
        assert_eq!(e.outstanding(&budget, 86_400_000), Usd(300));
    }

    #[test]
    fn a_gone_node_loses_its_leases_and_budgets_are_apart() {
        let mut e = Escrow::default();
        let (one, two) = (b("bud_1"), b("bud_2"));
        e.grant(&one, 1, Usd(10), room(100, 0, 0));
        e.grant(&two, 1, Usd(20), room(100, 0, 0));
        e.grant(&one, 2, Usd(30), room(100, 0, 0));
        assert_eq!(e.of_budget(&one).count(), 2);
        e.release_node(1);
        assert_eq!(e.outstanding(&one, 0), Usd(30));
        assert_eq!(e.outstanding(&two, 0), Usd(0));
        e.forget_budget(&one);
        assert_eq!(e.of_budget(&one).count(), 0);
    }

    #[test]
    fn a_short_grant_is_recorded_and_give_back_is_partial() {
        let mut e = Escrow::default();
        let budget = b("bud_1");
        assert_eq!(
            e.grant_for(&budget, 1, Usd(100), Usd(900), room(1_000, 0, 0)),
            Usd(900)
        );
        assert_eq!(e.shortfall(&budget), None, "enough: no shortfall");
        assert_eq!(
            e.grant_for(&budget, 2, Usd(200), Usd(300), room(1_000, 0, 0)),
            Usd(100)
        );
        assert_eq!(e.shortfall(&budget), Some(Shortfall { node: 2, seq: 1 }));
        // Node 1 keeps what its requests in flight need and gives the rest back, once:
        // the same return again (a retry) or an older one changes nothing.
        assert_eq!(e.give_back(&budget, 1, Usd(700), 5), Usd(200));
        assert_eq!(e.give_back(&budget, 1, Usd(700), 5), Usd(200));
        assert_eq!(e.give_back(&budget, 1, Usd(700), 4), Usd(200));
        assert_eq!(e.last_return(1), 5);
        assert_eq!(
            e.grant_for(&budget, 2, Usd(200), Usd(300), room(1_000, 0, 0)),
            Usd(400)
        );
        assert_eq!(e.shortfall(&budget).map(|s| s.seq), Some(1));
        // Asking for little but needing more in all: topped up to the need.
        assert_eq!(
            e.grant_for(&budget, 2, Usd(500), Usd(10), room(1_000, 0, 0)),
            Usd(500)
        );
        assert_eq!(e.lease_of(&budget, 2, 0), Usd(500));
        assert_eq!(e.lease_of(&budget, 2, 86_400_000), Usd(0), "other window");
        // Giving back more than is held empties the lease, never below zero.
        assert_eq!(e.give_back(&budget, 1, Usd(5_000), 6), Usd(0));
        assert_eq!(e.of_budget(&budget).count(), 1);
        // Alone, a node granted less than it needs records no shortfall: nobody could
        // give anything back.
        let alone = b("bud_alone");
        e.grant_for(&alone, 1, Usd(2_000), Usd(2_000), room(1_000, 0, 0));
        assert_eq!(e.shortfall(&alone), None);
        e.forget_budget(&budget);
        assert_eq!(e.shortfall(&budget), None);
    }

    /// Seeded random grants, charges and releases from four nodes: grants never take the
    /// leases past the room, and spend passes the limit only by charges larger than the
    /// lease they consumed.
    #[test]
    fn random_operations_keep_the_escrow_within_the_limit() {
        for seed in 1..=20u64 {
            let mut rng = seed;
            let mut next = |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let (budget, limit) = (b("bud_r"), 100_000u64);
            let mut e = Escrow::default();
            let mut spent = 0u64;
            let mut excess = 0u64;
            for _ in 0..500 {
                let node = next(4);
                let r = room(limit, spent, 0);
                match next(3) {
                    0 => {
                        e.grant(&budget, node, Usd(next(20_000)), r);
                    }
                    1 => {
                        let held = e
                            .of_budget(&budget)
                            .find(|(n, _)| *n == node)
                            .map_or(0, |(_, l)| l.outstanding.0);
                        let cost = next(held + 2_000);
                        excess += cost.saturating_sub(held);
                        e.consume(&budget, node, Usd(cost), 0);
                        spent += cost;
                    }
                    _ => {
                        e.release(&budget, node);
                    }
                }
                assert!(
                    spent + e.outstanding(&budget, 0).0 <= limit + excess,
                    "seed {seed}: spent {spent} + leases over the limit by more than {excess}"
                );
            }
        }
    }
}
