//! Tollgate's replicated core: the pure governance state machine, its codec and its
//! storage. This crate knows nothing of HTTP, providers or the wall clock: time arrives
//! inside commands.
//!
//! # Layout
//! - `state`: `GovState` and `GovState::apply`, the deterministic state machine.
//! - `window`: budget and rate-limit window arithmetic (anchored and calendar-aligned).
//! - `codec`: the bincode encoding of everything stored or sent.
//! - `store`: the durable command log and snapshot (sled) of a single node.

pub mod codec;
pub mod state;
pub mod store;
pub mod window;

pub use state::{BudgetStatus, GovState};
pub use store::{LocalStore, Recovered, StoreError};
pub use window::{rfc3339, window_at, Window};

#[cfg(test)]
mod tests;
