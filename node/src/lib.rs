//! Tollgate gateway node: the HTTP proxy and admin API, providers and translation,
//! enforcement, the charge pipeline, the cluster and the CLI. Only this crate touches
//! sockets, disks, environment variables and the wall clock.
//!
//! # Layout
//! - `app`: `Node::build` (one node from its seams, shared with the simulator) and the
//!   HTTP handlers' shared state (`App`).
//! - `http`: the HTTP surface: router and drain sequence, error mapping, `/metrics`, the
//!   admin API.
//! - `gateway`: the inference request path: proxy, routing, providers, translation, SSE,
//!   circuit breakers, the built-in mock provider.
//! - `governance`: what may be spent and what was: virtual keys, budget admission (escrow
//!   leases), rate limits, the charge pipeline and outbox, the `Replicator` write seam.
//! - `cluster`: Raft inside the node, gossip, the peer transport, drain and hand-over,
//!   protocol versions, certificates.
//! - `hooks`: test hooks and known bugs, compiled only with their cargo features.
//! - `config`: TOML config and provider credential references.
//! - `clock`: the wall-clock seam.
//! - `cli`: the `tollgate admin ...` client.
//! - `logs`: one log line per event, control characters escaped.

pub mod app;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod gateway;
pub mod governance;
pub mod hooks;
pub mod http;
pub mod logs;
