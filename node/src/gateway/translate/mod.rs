//! Pure translation between the Anthropic Messages API and the OpenAI Chat Completions API.
//!
//! The gateway accepts either dialect from clients and may forward to an upstream that speaks
//! the other one. Everything here works on `serde_json::Value` and does no I/O, so the proxy
//! layer owns HTTP, timing and id generation while this module owns the wire formats.
//!
//! Covered in both directions: requests, non-streaming responses, and streaming (SSE) responses,
//! tool calls included. Errors are always [`TranslateError::Invalid`] with a message that names
//! the offending field (for example `messages[2].content: expected string or array`), so the
//! caller can return it to the client as a 400 without further wrapping.
//!
//! # Layout
//!
//! - `shared`: [`TranslateError`], [`Usage`], [`SseOut`] and the small helpers shared by the
//!   submodules (finish-reason and id mapping, field access).
//! - `request_to_openai.rs`: [`anthropic_to_openai_request`].
//! - `request_to_anthropic.rs`: [`openai_to_anthropic_request`].
//! - `response.rs`: non-streaming responses both ways, [`usage_from_anthropic`] and
//!   [`usage_from_openai`].
//! - `stream_to_anthropic.rs`: [`OpenAiToAnthropicStream`] (OpenAI upstream, Anthropic client).
//! - `stream_to_openai.rs`: [`AnthropicToOpenAiStream`] (Anthropic upstream, OpenAI client).
//! - `tools.rs`: tool definitions, `tool_choice` and tool-call ids, both directions (used by the
//!   two request modules).

mod request_to_anthropic;
mod request_to_openai;
mod response;
mod shared;
mod stream_to_anthropic;
mod stream_to_openai;
mod tools;

pub use request_to_anthropic::openai_to_anthropic_request;
pub use request_to_openai::anthropic_to_openai_request;
pub use response::{
    anthropic_to_openai_response, openai_to_anthropic_response, usage_from_anthropic,
    usage_from_openai,
};
pub use shared::{SseOut, TranslateError, Usage};
pub use stream_to_anthropic::OpenAiToAnthropicStream;
pub use stream_to_openai::AnthropicToOpenAiStream;
