//! Hooks for tests, each behind a cargo feature that a release build does not enable.
//!
//! # Layout
//! - `env`: environment hooks of the black-box tests (`test-hooks`).
//! - `bugs`: known bugs the simulator puts back to prove it catches them (`sim-bugs`).

#[cfg(feature = "sim-bugs")]
pub mod bugs;
pub mod env;
