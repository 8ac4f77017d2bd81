//! The built-in deterministic `mock` provider: pure functions that turn a request body into the exact response bytes a real Anthropic or OpenAI upstream would send, for demos, benchmarks and `tollgate mock-upstream`.
//!
//! Everything here is deterministic so that benchmarks and tests can compare runs byte for byte.
//! The HTTP layer decides about latency between stream events; these functions only build bytes.

use bytes::Bytes;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// Reply text used when the last user message does not ask for an echo.
pub const DEFAULT_REPLY: &str = "Hello from the Tollgate mock provider.";

/// Marker in the last user message that makes the mock reply with the word that follows it.
const ECHO_MARKER: &str = "ECHO:";

/// Marker in the last user message that makes the mock answer at length: `LONG:<n>` is a
/// reply of `n` tokens (`4 n` bytes), at most `MAX_LONG_TOKENS`, for streams that run
/// into a budget mid-way.
const LONG_MARKER: &str = "LONG:";
const MAX_LONG_TOKENS: u64 = 32_768;
/// What a long reply repeats: 48 bytes, 12 of the mock's tokens.
const LONG_FILLER: &str = "The quick brown fox jumps over the lazy dog ok. ";

/// Largest text piece per streamed delta, so that even short replies produce several deltas
/// and exercise the client's incremental handling like a real model would.
const PIECE_BYTES: usize = 16;

/// What the mock answers to one request, with the token usage it reports for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockReply {
    pub text: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The answer stopped at the request's `max_tokens` (`stop_reason: max_tokens`,
    /// `finish_reason: length`), as a model's would.
    pub capped: bool,
}

impl MockReply {
    fn stop_reason(&self) -> &'static str {
        if self.capped {
            "max_tokens"
        } else {
            "end_turn"
        }
    }

    fn finish_reason(&self) -> &'static str {
        if self.capped {
            "length"
        } else {
            "stop"
        }
    }
}

/// Deterministic reply for an Anthropic Messages request body: if the last user message's text contains "ECHO:<word>" the reply is "<word>" (word = up to whitespace), else the constant DEFAULT_REPLY ("Hello from the Tollgate mock provider."); "LONG:<n>" makes it a filler text of n tokens (4 n bytes, at most max_tokens). input_tokens = max(1, ceil(total bytes of all text in system + messages / 4)); output_tokens = max(1, ceil(reply bytes / 4)), capped at the request's max_tokens when present.
pub fn reply_for_anthropic(req: &Value) -> MockReply {
    let max_tokens = req.get("max_tokens").and_then(Value::as_u64);
    build_reply(req.get("system"), req.get("messages"), max_tokens)
}

/// Same for an OpenAI chat.completions request (messages[].content string or parts; max_tokens or max_completion_tokens).
///
/// When both limits are present, `max_completion_tokens` wins because OpenAI deprecated
/// `max_tokens` in its favour.
pub fn reply_for_openai(req: &Value) -> MockReply {
    let max_tokens = req
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| req.get("max_tokens").and_then(Value::as_u64));
    build_reply(None, req.get("messages"), max_tokens)
}

/// Complete non-streaming Anthropic response JSON bytes: {"id":"msg_mock_<seq>","type":"message","role":"assistant","model":model,"content":[{"type":"text","text":...}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens","output_tokens","cache_creation_input_tokens":0,"cache_read_input_tokens":0}}
pub fn anthropic_json(model: &str, reply: &MockReply, seq: u64) -> Bytes {
    let body = json!({
        "id": format!("msg_mock_{seq}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply.text}],
        "stop_reason": reply.stop_reason(),
        "stop_sequence": null,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    });
    to_bytes(&body)
}

/// The Anthropic SSE stream as one Bytes per event, exactly in the real wire format (event: lines + data:, blank line): message_start (usage.input_tokens, output_tokens 1), content_block_start (index 0, text ""), ping, content_block_delta text_delta events (split the text into pieces of at most 16 bytes on char boundaries), content_block_stop, message_delta (stop_reason end_turn, or max_tokens when capped; usage.output_tokens), message_stop.
///
/// This runs per request in benchmarks, so the fixed JSON skeletons are written as templates
/// (keeping Anthropic's key order) and only the variable strings go through serde_json for
/// escaping; the events without variable parts are static and cost no allocation.
pub fn anthropic_sse_events(model: &str, reply: &MockReply, seq: u64) -> Vec<Bytes> {
    let mut events = Vec::with_capacity(6 + reply.text.len().div_ceil(PIECE_BYTES));
    let mut start = String::with_capacity(320 + model.len());
    // Writing into a String cannot fail, so the fmt::Result is safely ignored.
    let _ = write!(
        start,
        "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_mock_{seq}\",\"type\":\"message\",\"role\":\"assistant\",\"model\":{model},\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{input},\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}}}}\n\n",
        model = json_string(model),
        input = reply.input_tokens,
    );
    events.push(Bytes::from(start));
    events.push(Bytes::from_static(
        b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    ));
    events.push(Bytes::from_static(
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
    ));
    for piece in text_pieces(&reply.text) {
        let escaped = json_string(piece);
        let mut delta = String::with_capacity(120 + escaped.len());
        delta.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":");
        delta.push_str(&escaped);
        delta.push_str("}}\n\n");
        events.push(Bytes::from(delta));
    }
    events.push(Bytes::from_static(
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    ));
    events.push(Bytes::from(format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"{}\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
        reply.stop_reason(),
        reply.output_tokens
    )));
    events.push(Bytes::from_static(
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ));
    events
}

/// Non-streaming OpenAI chat.completion JSON: id "chatcmpl-mock-<seq>", object "chat.completion", created (given), model, choices[0].message {role assistant, content}, finish_reason "stop", usage {prompt_tokens, completion_tokens, total_tokens}.
pub fn openai_json(model: &str, reply: &MockReply, seq: u64, created_unix: u64) -> Bytes {
    let body = json!({
        "id": format!("chatcmpl-mock-{seq}"),
        "object": "chat.completion",
        "created": created_unix,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.text},
            "finish_reason": reply.finish_reason(),
        }],
        "usage": {
            "prompt_tokens": reply.input_tokens,
            "completion_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens.saturating_add(reply.output_tokens),
        },
    });
    to_bytes(&body)
}

/// OpenAI SSE chunks (one Bytes per `data: ...\n\n`): role chunk, content chunks (<=16 bytes), a finish chunk with finish_reason "stop" ("length" when capped), then if include_usage a chunk with "choices": [] and usage, then "data: [DONE]\n\n".
///
/// Like the real API, when usage is requested every earlier chunk carries `"usage":null`, so
/// clients that look for the field on each chunk see the same shape as in production.
pub fn openai_sse_chunks(
    model: &str,
    reply: &MockReply,
    seq: u64,
    created_unix: u64,
    include_usage: bool,
) -> Vec<Bytes> {
    let mut chunks = Vec::with_capacity(4 + reply.text.len().div_ceil(PIECE_BYTES));
    // Every chunk starts with the same fields, so they are rendered once and reused.
    let mut prefix = String::with_capacity(120 + model.len());
    let _ = write!(
        prefix,
        "data: {{\"id\":\"chatcmpl-mock-{seq}\",\"object\":\"chat.completion.chunk\",\"created\":{created_unix},\"model\":{},",
        json_string(model)
    );
    let suffix = if include_usage {
        ",\"usage\":null}\n\n"
    } else {
        "}\n\n"
    };
    let chunk = |choices: &str| {
        let mut out = String::with_capacity(prefix.len() + choices.len() + suffix.len());
        out.push_str(&prefix);
        out.push_str(choices);
        out.push_str(suffix);
        Bytes::from(out)
    };
    chunks.push(chunk(
        "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]",
    ));
    for piece in text_pieces(&reply.text) {
        chunks.push(chunk(&format!(
            "\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]",
            json_string(piece)
        )));
    }
    chunks.push(chunk(&format!(
        "\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"{}\"}}]",
        reply.finish_reason()
    )));
    if include_usage {
        chunks.push(Bytes::from(format!(
            "{prefix}\"choices\":[],\"usage\":{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
            reply.input_tokens,
            reply.output_tokens,
            reply.input_tokens.saturating_add(reply.output_tokens),
        )));
    }
    chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));
    chunks
}

/// Anthropic count_tokens answer for a request: {"input_tokens": N} with the same N as reply_for_anthropic.
pub fn count_tokens_json(req: &Value) -> Bytes {
    let input_tokens = reply_for_anthropic(req).input_tokens;
    to_bytes(&json!({ "input_tokens": input_tokens }))
}

/// Shared core of both request formats: OpenAI keeps its system prompt inside `messages`, so
/// only Anthropic passes a separate `system`.
fn build_reply(
    system: Option<&Value>,
    messages: Option<&Value>,
    max_tokens: Option<u64>,
) -> MockReply {
    let messages = messages
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut input_bytes = 0usize;
    let mut count = |text: &str| input_bytes += text.len();
    if let Some(system) = system {
        for_each_text(system, &mut count);
    }
    for message in messages {
        if let Some(content) = message.get("content") {
            for_each_text(content, &mut count);
        }
    }
    let last_user = messages
        .iter()
        .rev()
        .find(|message| message.get("role").and_then(Value::as_str) == Some("user"));
    let mut echo = None;
    let mut long = None;
    if let Some(content) = last_user.and_then(|message| message.get("content")) {
        for_each_text(content, &mut |text: &str| {
            if echo.is_none() {
                echo = echo_word(text);
            }
            if long.is_none() {
                long = marked_word(text, LONG_MARKER).and_then(|n| n.parse::<u64>().ok());
            }
        });
    }
    let text = match long {
        Some(tokens) => long_text(tokens.min(MAX_LONG_TOKENS), max_tokens),
        None => echo.unwrap_or(DEFAULT_REPLY).to_owned(),
    };
    let full = match long {
        Some(tokens) => tokens.clamp(1, MAX_LONG_TOKENS),
        None => tokens_for(text.len()),
    };
    let output_tokens = max_tokens.map_or(full, |max| full.min(max));
    MockReply {
        input_tokens: tokens_for(input_bytes),
        output_tokens: tokens_for(text.len()).min(output_tokens),
        capped: output_tokens < full,
        text,
    }
}

/// A reply of `tokens` of the mock's tokens, or of `max_tokens` when fewer: the answer a
/// model cut at its cap would have given.
fn long_text(tokens: u64, max_tokens: Option<u64>) -> String {
    let tokens = max_tokens.map_or(tokens, |max| tokens.min(max));
    let bytes = usize::try_from(tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    LONG_FILLER.chars().cycle().take(bytes).collect()
}

/// Calls `f` with every piece of text in a message `content` or `system` value: a plain string,
/// or an array of blocks/parts whose `text` fields hold text. Blocks that nest content (such as
/// Anthropic `tool_result`) are searched too, since that text is also sent to the model.
fn for_each_text<'a>(value: &'a Value, f: &mut impl FnMut(&'a str)) {
    match value {
        Value::String(text) => f(text),
        Value::Array(blocks) => {
            for block in blocks {
                if let Some(text) = block.get("text").and_then(Value::as_str) {
                    f(text);
                } else if let Some(nested) = block.get("content") {
                    for_each_text(nested, f);
                }
            }
        }
        _ => {}
    }
}

/// Returns the first non-empty word that directly follows an `ECHO:` marker in `text`.
fn echo_word(text: &str) -> Option<&str> {
    marked_word(text, ECHO_MARKER)
}

/// The first non-empty word directly after `marker` in `text`.
fn marked_word<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.match_indices(marker).find_map(|(at, marker)| {
        let rest = &text[at + marker.len()..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        Some(&rest[..end]).filter(|word| !word.is_empty())
    })
}

/// The mock's tokenizer: one token per started group of four bytes, and never zero, so that
/// usage accounting downstream always sees a positive count.
fn tokens_for(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

/// Splits `text` into pieces of at most [`PIECE_BYTES`] bytes without cutting a UTF-8 character.
fn text_pieces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(PIECE_BYTES);
        // A char is at most 4 bytes, so this stops well before reaching 0.
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// Renders `text` as a JSON string literal, quotes included, with serde_json's escaping.
fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Serializes a response body; serializing a `Value` cannot fail, so the empty fallback is never
/// used in practice and merely avoids a panic path.
fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests;
