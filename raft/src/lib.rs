//! Tollgate's replicated core: the pure governance state machine, its codec and its
//! storage. This crate knows nothing of HTTP, providers or the wall clock: time arrives
//! inside commands.
//!
//! # Layout
//! - `state`: `GovState` and `GovState::apply`, the deterministic state machine.
//! - `audit`: the audit trail and request-log anchors the state keeps.
//! - `window`: budget and rate-limit window arithmetic (anchored and calendar-aligned).
//! - `lease`: escrow leases, nodes' slices of a budget's room.
//! - `codec`: the bincode encoding of everything stored or sent.
//! - `store`: the durable command log and snapshot (sled) of a single node, used until the
//!   node runs Raft.
//!
//! Raft (openraft 0.9, storage v2):
//! - `typ`: the openraft type config (`TypeConfig`, `TollgateNode`) and type aliases.
//! - `config`: snapshot and purge policy (`raft_config`).
//! - `log_backend`: the `LogBackend` trait under the Raft log, and `LogError`.
//! - `sled_log`: `SledLog`, the durable backend (and `open_db`).
//! - `mem_log`: `MemLog`, the in-memory backend for the simulator and tests.
//! - `log_store`: `LogStore<B>`, openraft's `RaftLogStorage` over any backend.
//! - `snapshot`: snapshot bytes and the `SnapshotSlot` keeping the current snapshot.
//! - `state_machine`: `StateMachineStore`, openraft's `RaftStateMachine` over `GovState`.
//! - `storage`: `open_durable` and `open_in_memory`, the two storage variants.
//! - `runtime`: `SeededRuntime`, openraft's tokio runtime with a seedable RNG.

pub mod audit;
pub mod codec;
pub mod config;
pub mod lease;
pub mod log_backend;
pub mod log_store;
pub mod mem_log;
pub mod runtime;
pub mod sled_log;
pub mod snapshot;
pub mod state;
pub mod state_machine;
pub mod storage;
pub mod store;
pub mod typ;
pub mod window;

pub use state::{BudgetStatus, GovState};
pub use store::{LocalStore, Recovered, StoreError};
pub use window::{rfc3339, window_at, Window};

pub use config::raft_config;
pub use log_backend::{LogBackend, LogError};
pub use log_store::LogStore;
pub use mem_log::MemLog;
pub use sled_log::SledLog;
pub use snapshot::{SnapshotError, SnapshotSlot};
pub use state_machine::{SharedGovState, StateMachineStore};
pub use storage::{open_durable, open_in_memory, OpenError};
pub use typ::{NodeId, TollgateNode, TypeConfig};

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod storage_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
