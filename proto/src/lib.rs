//! Tollgate wire types: every type here is a wire-compatibility promise.
//!
//! This crate knows no tokio, no I/O, no clock: it is the vocabulary shared by the
//! governance state machine (`tollgate-raft`), the node and the simulator.
//!
//! # Layout
//! - `ids`: newtype identifiers (`KeyId`, `BudgetId`, ...).
//! - `money`: integer micro-dollars and their decimal-string form.
//! - `duration`: budget and rate-limit window lengths (`1m` .. `1Y`).
//! - `model`: the governance model (customers, teams, virtual keys, budgets, ...).
//! - `usage`: token usage, prices and the cost of a request.
//! - `command`: the replicated `Command`s and their `Outcome`s.
//! - `peer`: the versioned envelope of node-to-node RPCs and its error answers.
//! - `records`: the request log's records, queries and totals.
//! - `audit`: audit events, their actors, and request-log chain anchors.
//! - `guardrail`: content policies (detectors, scope, action, direction).

pub mod audit;
pub mod command;
pub mod duration;
pub mod guardrail;
pub mod ids;
pub mod model;
pub mod money;
pub mod peer;
pub mod records;
pub mod usage;

pub use command::{Charge, Command, KeyPatch, MemberChange, OutboxCharge, OutboxMark, Outcome};
pub use duration::ResetDuration;
pub use guardrail::{
    Detector, GuardAction, GuardDirection, GuardScope, Guardrail, OnError, PiiEntity,
};
pub use ids::*;
pub use model::*;
pub use money::{MoneyError, Usd};
pub use peer::{Envelope, PeerError};
pub use usage::{Price, Usage};
