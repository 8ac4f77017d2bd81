//! Tollgate's deterministic simulator (a stub until its own issue): seeded worlds,
//! faults, workloads and invariant checkers that run the production code.
//!
//! # Layout
//! Nothing yet. The simulator contract is in `ARCHITECTURE.md`; this crate exists now so
//! the dependency direction (`proto` ← `raft` ← `node` ← `sim`) is fixed and checked.
