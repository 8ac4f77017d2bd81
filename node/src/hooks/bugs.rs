//! Known bugs the simulator can put back, to prove that its invariants catch them
//! (`tollgate-sim --bug NAME`). Compiled only with the `sim-bugs` feature, which only the
//! simulator turns on; the switch is per thread, so a simulation on one thread never
//! affects another.

use std::cell::Cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownBug {
    /// The charge outbox, replayed at start, gives each charge a new request id and
    /// forgets where it is in the outbox, so the ledgers' de-duplication cannot tell it
    /// from the first proposal and a charge that was applied before the crash is applied
    /// again.
    ReplayWithNewId,
    /// The rate limiter does not count the claims other nodes gossip: each node admits as
    /// if it were alone (the per-replica counters of other gateways).
    RateClaimsIgnored,
}

thread_local! {
    static ACTIVE: Cell<Option<KnownBug>> = const { Cell::new(None) };
}

/// Puts `bug` back on this thread (or none).
pub fn set(bug: Option<KnownBug>) {
    ACTIVE.with(|a| a.set(bug));
}

pub fn active(bug: KnownBug) -> bool {
    ACTIVE.with(|a| a.get()) == Some(bug)
}
