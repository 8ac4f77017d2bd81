//! The HTTP surface of a node: the router and its layers, the serve loop with the drain
//! sequence, the one place errors become HTTP, `/metrics`, and the admin API.
//!
//! # Layout
//! - `server`: the router, layer by layer, and graceful shutdown.
//! - `bedrock`: the Bedrock front door (Bedrock's routes, frames and errors).
//! - `conn`: the accept loop: connection caps, the header-read timeout, graceful end.
//! - `error`: gateway errors and their HTTP form in each dialect.
//! - `forwarded`: the client's address behind trusted proxies (`X-Forwarded-For`).
//! - `metrics`: request counters and the `/metrics` rendering.
//! - `vertex`: the Vertex AI front door (its routes and errors).
//! - `admin`: the admin API (see its own layout).

pub mod admin;
pub mod bedrock;
pub mod conn;
pub mod error;
pub mod forwarded;
pub mod metrics;
pub mod server;
pub mod vertex;
