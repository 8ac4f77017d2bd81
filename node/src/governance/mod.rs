//! What may be spent and what was: budget admission with escrow leases, rate limits, the
//! charge pipeline and its outbox, the request log, and the `Replicator` seam every
//! governance write goes through.
//!
//! # Layout
//! - `replicator`: the write seam (`Replicator`) and `LocalReplicator` for a node alone.
//! - `admission`: budget reservations against escrow leases.
//! - `limits`: rate limits, counted here and shared by gossip; `shared_limits`: the
//!   claim rule and its bound.
//! - `charge`: the two-stage charge pipeline (outbox write, batched proposal).
//! - `outbox`: the node-local durable outbox of charges, intents and request records.
//! - `records`: the request log: each node's store of its requests' records, the writer
//!   that fills it from the outbox, queries and stats.

pub mod admission;
pub mod charge;
pub mod limits;
pub mod outbox;
pub mod records;
pub mod replicator;
pub mod shared_limits;
