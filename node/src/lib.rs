//! Tollgate gateway node: the HTTP proxy and admin API, providers and translation,
//! enforcement, the charge pipeline, the peer transport and the CLI. Only this crate touches sockets, disks,
//! environment variables and the wall clock.
//!
//! # Layout
//! - `app`: shared state (`App`) and start-up.
//! - `server`: the router, layer by layer, and graceful shutdown.
//! - `config`: TOML config and provider credential references.
//! - `drain`: the drain signal (SIGTERM or `admin drain`) the server and cluster act on.
//! - `auth`: virtual keys and admin tokens (hashed, constant-time).
//! - `routing`: model → provider configs (weights, allowlists, aliases).
//! - `limits`: rate limits, counted here and shared by gossip (`shared_limits`: the claim
//!   rule and its bound); budget reservations are `admission`.
//! - `breaker`: circuit breakers per provider config, shared by gossip.
//! - `gossip`: chitchat membership and failure detection over the QUIC transport; its
//!   keys, typed view and membership changes.
//! - `proxy`: the inference request path (see its own layout).
//! - `translate`: Anthropic ⇄ OpenAI translation, requests, responses and streams.
//! - `sse`: incremental Server-Sent-Events parser.
//! - `mock`, `mock_upstream`: the built-in deterministic provider and its HTTP server.
//! - `charge`: the two-stage charge pipeline (outbox write, batched proposal).
//! - `outbox`: the node-local durable outbox of charges.
//! - `protocol`: the peer protocol versions this node speaks; raising the cluster's.
//! - `replicator`: the write seam (`Replicator`, `LocalReplicator`).
//! - `transport`: node-to-node RPC (`PeerTransport`, `PeerHandler`) and its QUIC
//!   implementation with mutual TLS (see its own layout).
//! - `cert`: the cluster CA and node certificates (`tollgate cert ...`).
//! - `admin`: the admin API.
//! - `clock`: the wall-clock seam.
//! - `cluster`: the Raft network over the peer transport, its RPC handler, `RaftReplicator`.
//! - `metrics`: Prometheus counters and gauges (`/metrics`).
//! - `error`: gateway errors and their HTTP form in each dialect.
//! - `cli`: the `tollgate admin ...` client.
//! - `test_hooks`: environment hooks for the black-box tests (`test-hooks` feature).
//! - `loadgen`: the `tollgate loadgen` HTTP load generator used by `scripts/bench.sh`.

pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod breaker;
pub mod cert;
pub mod charge;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod error;
pub mod gossip;
pub mod limits;
pub mod loadgen;
pub mod metrics;
pub mod mock;
pub mod mock_upstream;
pub mod outbox;
pub mod protocol;
pub mod providers;
pub mod proxy;
pub mod raftbench;
pub mod replicator;
pub mod routing;
pub mod server;
pub mod shared_limits;
#[cfg(feature = "sim-bugs")]
pub mod sim_bugs;
pub mod sse;
pub mod test_hooks;
pub mod translate;
pub mod transport;
