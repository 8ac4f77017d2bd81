//! The inference request path: from a client's request to a provider's answer.
//!
//! # Layout
//! - `proxy`: the request steps and the relay of answers (see its own layout).
//! - `auth`: virtual keys and admin tokens (hashed, constant-time).
//! - `routing`: model → provider configs (weights, allowlists, aliases).
//! - `providers`: the configured providers and their credentials.
//! - `counters`: request-path counters for `/metrics`.
//! - `breaker`: circuit breakers per provider config, shared by gossip.
//! - `translate`: Anthropic ⇄ OpenAI translation, requests, responses and streams.
//! - `sse`: incremental Server-Sent-Events parser.
//! - `mock`: the built-in deterministic provider.

pub mod auth;
pub mod breaker;
pub mod counters;
pub mod mock;
pub mod providers;
pub mod proxy;
pub mod routing;
pub mod sse;
pub mod translate;
