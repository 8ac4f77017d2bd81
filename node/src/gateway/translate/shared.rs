//! What the translation modules share: `TranslateError`, `Usage` in each dialect's JSON,
//! `SseOut`, and small helpers (field access, finish-reason and id mapping).

use serde_json::{json, Map, Value};

/// The single error type of this module.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The input does not have the shape its dialect requires; the message names the field.
    #[error("{0}")]
    Invalid(String),
}

/// Usage as the gateway accounts it (Anthropic terms); the same type the ledgers use.
pub use tollgate_proto::Usage;

/// JSON forms of `Usage` in each dialect (an extension, as `Usage` lives in `tollgate-proto`).
pub(crate) trait UsageJson: Sized {
    fn prompt_tokens(&self) -> u64;
    fn from_anthropic_usage(u: &Value) -> Self;
    fn from_openai_usage(u: &Value) -> Self;
    fn anthropic_json(&self) -> Value;
    fn openai_json(&self) -> Value;
}

impl UsageJson for Usage {
    /// Prompt tokens as OpenAI counts them: every input token, cached or not.
    fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.cache_creation_input_tokens)
    }

    /// Reads an Anthropic `usage` object; missing fields count as zero.
    fn from_anthropic_usage(u: &Value) -> Self {
        Usage {
            input_tokens: count(u.get("input_tokens")),
            output_tokens: count(u.get("output_tokens")),
            cache_creation_input_tokens: count(u.get("cache_creation_input_tokens")),
            cache_read_input_tokens: count(u.get("cache_read_input_tokens")),
        }
    }

    /// Reads an OpenAI `usage` object. OpenAI reports cached tokens as a subset of
    /// `prompt_tokens`, so they are subtracted to get Anthropic's uncached `input_tokens`.
    fn from_openai_usage(u: &Value) -> Self {
        let prompt = count(u.get("prompt_tokens"));
        let cached = count(u.pointer("/prompt_tokens_details/cached_tokens"));
        Usage {
            input_tokens: prompt.saturating_sub(cached),
            output_tokens: count(u.get("completion_tokens")),
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }

    /// Renders the Anthropic `usage` object.
    fn anthropic_json(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
        })
    }

    /// Renders the OpenAI `usage` object, reporting cache reads as `cached_tokens`.
    fn openai_json(&self) -> Value {
        let prompt = self.prompt_tokens();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output_tokens,
            "total_tokens": prompt.saturating_add(self.output_tokens),
            "prompt_tokens_details": { "cached_tokens": self.cache_read_input_tokens },
        })
    }
}

/// One SSE event to write to the client: `event` is None for OpenAI (data-only lines).
#[derive(Debug, Clone, PartialEq)]
pub struct SseOut {
    /// The `event:` line, which Anthropic clients require and OpenAI clients do not use.
    pub event: Option<&'static str>,
    /// The `data:` payload: a JSON document, or `[DONE]` for OpenAI.
    pub data: String,
}

impl SseOut {
    /// Encodes the event as SSE text, terminated by the blank line that ends an event.
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(self.data.len() + 32);
        if let Some(event) = self.event {
            s.push_str("event: ");
            s.push_str(event);
            s.push('\n');
        }
        // Serialized JSON never contains raw newlines, but a multi-line payload must be split
        // into several `data:` lines or the client would misparse the event.
        for line in self.data.split('\n') {
            s.push_str("data: ");
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
        s
    }

    /// An Anthropic event whose name equals the payload's `type`.
    pub(super) fn anthropic(event: &'static str, data: &Value) -> Self {
        SseOut {
            event: Some(event),
            data: data.to_string(),
        }
    }

    /// An OpenAI data-only event.
    pub(super) fn openai(data: &Value) -> Self {
        SseOut {
            event: None,
            data: data.to_string(),
        }
    }
}

/// Builds an [`TranslateError::Invalid`] that names `path`.
pub(super) fn invalid(path: impl std::fmt::Display, msg: impl std::fmt::Display) -> TranslateError {
    TranslateError::Invalid(format!("{path}: {msg}"))
}

/// Reads a token count; absent, negative or non-numeric values count as zero because usage
/// must never make a translation fail.
pub(super) fn count(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

/// Returns the object `v` or an error naming `path`.
pub(super) fn as_object<'a>(
    v: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, TranslateError> {
    v.as_object()
        .ok_or_else(|| invalid(path, "expected object"))
}

/// Returns the required string field `key` of `obj`.
pub(super) fn req_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a str, TranslateError> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{path}.{key}"), "expected string"))
}

/// Copies an optional numeric field, rejecting non-numbers so bad input fails here rather than
/// as an opaque upstream error.
pub(super) fn copy_number(
    from: &Map<String, Value>,
    key: &str,
    to: &mut Map<String, Value>,
    to_key: &str,
) -> Result<(), TranslateError> {
    match from.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v @ Value::Number(_)) => {
            to.insert(to_key.to_string(), v.clone());
            Ok(())
        }
        Some(_) => Err(invalid(key, "expected number")),
    }
}

/// Maps an Anthropic `stop_reason` to an OpenAI `finish_reason`.
pub(super) fn stop_to_finish(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") | Some("model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything newer all mean "the model stopped".
        _ => "stop",
    }
}

/// Maps an OpenAI `finish_reason` to an Anthropic `stop_reason`. Some providers report "stop"
/// even when the message ends in tool calls, and Anthropic clients only run tools on
/// `tool_use`, so the presence of tool calls wins over a plain stop.
pub(super) fn finish_to_stop(finish_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls") | Some("function_call") => "tool_use",
        _ if has_tool_calls => "tool_use",
        // stop, content_filter, a missing reason and anything newer end the turn normally.
        _ => "end_turn",
    }
}

/// Parses OpenAI's JSON-string tool arguments into an Anthropic `input` object. Anthropic
/// requires an object, so empty arguments become `{}` and anything else that is not an object
/// is preserved verbatim under `_raw` instead of being lost.
pub(super) fn parse_arguments(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "_raw": arguments }),
    }
}

/// Derives an Anthropic message id (`msg_...`) from an OpenAI completion id (`chatcmpl-...`).
pub(super) fn message_id_from(openai_id: Option<&str>) -> String {
    match openai_id {
        Some(id) if !id.is_empty() => {
            format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
        }
        _ => "msg_unknown".to_string(),
    }
}

/// Derives an OpenAI completion id (`chatcmpl-...`) from an Anthropic message id (`msg_...`).
pub(super) fn completion_id_from(message_id: Option<&str>) -> String {
    match message_id {
        Some(id) if !id.is_empty() => {
            format!("chatcmpl-{}", id.strip_prefix("msg_").unwrap_or(id))
        }
        _ => "chatcmpl-unknown".to_string(),
    }
}

/// Extracts a readable message from an `error` object of either dialect.
pub(super) fn error_message(err: &Value) -> String {
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| err.as_str())
        .unwrap_or("unknown error");
    match err.get("type").and_then(Value::as_str) {
        Some(kind) => format!("upstream error ({kind}): {message}"),
        None => format!("upstream error: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_encoding() {
        let a = SseOut {
            event: Some("ping"),
            data: r#"{"type":"ping"}"#.into(),
        };
        assert_eq!(a.encode(), "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let o = SseOut {
            event: None,
            data: "[DONE]".into(),
        };
        assert_eq!(o.encode(), "data: [DONE]\n\n");
        let multi = SseOut {
            event: None,
            data: "a\nb".into(),
        };
        assert_eq!(multi.encode(), "data: a\ndata: b\n\n");
    }

    #[test]
    fn usage_conversions() {
        let u = Usage::from_openai_usage(&json!({
            "prompt_tokens": 100, "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 60}
        }));
        let expected = Usage {
            input_tokens: 40,
            output_tokens: 7,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 60,
        };
        assert_eq!(u, expected);
        assert_eq!(u.prompt_tokens(), 100);
        assert_eq!(
            u.openai_json(),
            json!({"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
                   "prompt_tokens_details": {"cached_tokens": 60}})
        );
        assert_eq!(Usage::from_anthropic_usage(&u.anthropic_json()), u);
        // Garbage never fails and never underflows.
        let odd = Usage::from_openai_usage(&json!({
            "prompt_tokens": 5, "completion_tokens": -3,
            "prompt_tokens_details": {"cached_tokens": 9}
        }));
        assert_eq!(odd.input_tokens, 0);
        assert_eq!(odd.output_tokens, 0);
    }

    #[test]
    fn reason_and_id_mapping() {
        let cases: &[(Option<&str>, &str)] = &[
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("tool_use"), "tool_calls"),
            (None, "stop"),
        ];
        for (stop, finish) in cases {
            assert_eq!(stop_to_finish(*stop), *finish, "{stop:?}");
        }
        let cases: &[(Option<&str>, bool, &str)] = &[
            (Some("stop"), false, "end_turn"),
            (Some("length"), false, "max_tokens"),
            (Some("tool_calls"), true, "tool_use"),
            (Some("function_call"), false, "tool_use"),
            (Some("content_filter"), false, "end_turn"),
            (Some("stop"), true, "tool_use"),
            (None, false, "end_turn"),
        ];
        for (finish, tools, stop) in cases {
            assert_eq!(finish_to_stop(*finish, *tools), *stop, "{finish:?}");
        }
        assert_eq!(message_id_from(Some("chatcmpl-abc")), "msg_abc");
        assert_eq!(message_id_from(Some("xyz")), "msg_xyz");
        assert_eq!(completion_id_from(Some("msg_abc")), "chatcmpl-abc");
        assert_eq!(completion_id_from(None), "chatcmpl-unknown");
    }

    #[test]
    fn argument_parsing() {
        assert_eq!(parse_arguments(""), json!({}));
        assert_eq!(parse_arguments(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_arguments("{\"a\":"), json!({"_raw": "{\"a\":"}));
        assert_eq!(parse_arguments("[1]"), json!({"_raw": "[1]"}));
    }
}
