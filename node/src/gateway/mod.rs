//! The inference request path: from a client's request to a provider's answer.
//!
//! # Layout
//! - `gate`: the request steps without HTTP (authenticate, resolve, rate-limit,
//!   reserve), shared by the proxy and the simulator.
//! - `billing`: the reservation a request holds and the charge it sends at completion.
//! - `estimate`: what a stream is expected to output, per key and model.
//! - `trail`: a request's record as it is served, its intent and its end.
//! - `proxy`: the HTTP request path and the relay of answers (see its own layout).
//! - `guard`: guardrails: secrets, PII and custom checks on requests and answers (see
//!   its own layout).
//! - `auth`: virtual keys and admin tokens (hashed, constant-time).
//! - `routing`: model → provider configs (weights, allowlists, aliases).
//! - `providers`: the configured providers and their credentials.
//! - `bedrock`: Claude on AWS Bedrock: model ids, SigV4, event-stream frames.
//! - `counters`: request-path counters for `/metrics`.
//! - `breaker`: circuit breakers per provider config, shared by gossip.
//! - `translate`: Anthropic ⇄ OpenAI translation, requests, responses and streams.
//! - `sse`: incremental Server-Sent-Events parser.
//! - `mock`: the built-in deterministic provider.
//! - `properties`: property tests of the parsers of outside bytes (tests only).

pub mod auth;
pub mod bedrock;
pub mod billing;
pub mod breaker;
pub mod counters;
pub mod estimate;
pub mod gate;
pub mod guard;
pub mod mock;
#[cfg(test)]
mod properties;
pub mod providers;
pub mod proxy;
pub mod routing;
pub mod sse;
pub mod trail;
pub mod translate;
