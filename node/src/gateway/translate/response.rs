//! Non-streaming response translation in both directions, and usage extraction.

use super::shared::UsageJson;
use serde_json::{json, Map, Value};

use super::shared::{
    as_object, completion_id_from, error_message, finish_to_stop, invalid, message_id_from,
    parse_arguments, req_str, stop_to_finish, TranslateError, Usage,
};

/// Non-streaming OpenAI response -> Anthropic message response. `model` is what the client asked
/// for (echo it back).
pub fn openai_to_anthropic_response(resp: &Value, model: &str) -> Result<Value, TranslateError> {
    let obj = as_object(resp, "response")?;
    if let Some(err) = obj.get("error").filter(|v| !v.is_null()) {
        return Err(TranslateError::Invalid(error_message(err)));
    }
    let choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| invalid("choices", "expected non-empty array"))?;
    let choice = as_object(choice, "choices[0]")?;
    let message = as_object(
        choice.get("message").unwrap_or(&Value::Null),
        "choices[0].message",
    )?;

    let mut content = Vec::new();
    let mut text = String::new();
    match message.get("content").unwrap_or(&Value::Null) {
        Value::String(s) => text.push_str(s),
        // A few servers answer with content parts; their text is what matters.
        Value::Array(parts) => {
            for part in parts {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    text.push_str(t);
                }
            }
        }
        _ => {}
    }
    if text.is_empty() {
        if let Some(refusal) = message.get("refusal").and_then(Value::as_str) {
            text.push_str(refusal);
        }
    }
    if !text.is_empty() {
        content.push(json!({"type": "text", "text": text}));
    }
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        for (k, call) in calls.iter().enumerate() {
            let path = format!("choices[0].message.tool_calls[{k}]");
            let c = as_object(call, &path)?;
            let fpath = format!("{path}.function");
            let f = as_object(c.get("function").unwrap_or(&Value::Null), &fpath)?;
            let arguments = f.get("arguments").and_then(Value::as_str).unwrap_or("");
            content.push(json!({
                "type": "tool_use",
                "id": req_str(c, "id", &path)?,
                "name": req_str(f, "name", &fpath)?,
                "input": parse_arguments(arguments),
            }));
        }
    }
    let has_tools = content.iter().any(|b| b["type"] == "tool_use");
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    Ok(json!({
        "id": message_id_from(obj.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": finish_to_stop(finish, has_tools),
        "stop_sequence": null,
        "usage": usage_from_openai(resp).anthropic_json(),
    }))
}

/// Non-streaming Anthropic response -> OpenAI chat.completion response.
///
/// Anthropic responses carry no timestamp and this module does no I/O, so `created` is 0; the
/// caller should overwrite it with the current Unix time.
pub fn anthropic_to_openai_response(resp: &Value, model: &str) -> Result<Value, TranslateError> {
    let obj = as_object(resp, "response")?;
    if obj.get("type").and_then(Value::as_str) == Some("error") {
        let err = obj.get("error").unwrap_or(&Value::Null);
        return Err(TranslateError::Invalid(error_message(err)));
    }
    let blocks = obj
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("content", "expected array"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let path = format!("content[{j}]");
        let b = as_object(block, &path)?;
        match b.get("type").and_then(Value::as_str) {
            // Blocks are concatenated directly: a response splits text only around citations,
            // and streaming clients see the same concatenation.
            Some("text") => text.push_str(req_str(b, "text", &path)?),
            Some("tool_use") => {
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": req_str(b, "id", &path)?,
                    "type": "function",
                    "function": {"name": req_str(b, "name", &path)?, "arguments": input.to_string()},
                }));
            }
            // Thinking and server-tool blocks have no OpenAI representation.
            _ => {}
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), json!("assistant"));
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        json!(text)
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    let stop = obj.get("stop_reason").and_then(Value::as_str);
    Ok(json!({
        "id": completion_id_from(obj.get("id").and_then(Value::as_str)),
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": stop_to_finish(stop),
        }],
        "usage": usage_from_anthropic(resp).openai_json(),
    }))
}

/// Usage of a non-streaming Anthropic response; missing fields count as zero.
pub fn usage_from_anthropic(resp: &Value) -> Usage {
    Usage::from_anthropic_usage(resp.get("usage").unwrap_or(&Value::Null))
}

/// Usage of a non-streaming OpenAI response. `prompt_tokens_details.cached_tokens` is reported
/// as cache reads and subtracted from `input_tokens`.
pub fn usage_from_openai(resp: &Value) -> Usage {
    Usage::from_openai_usage(resp.get("usage").unwrap_or(&Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_to_anthropic_cases() {
        let cases = vec![
            (
                "plain text with cached usage",
                json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello"}}],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35,
                              "prompt_tokens_details": {"cached_tokens": 20}}
                }),
                json!({
                    "id": "msg_1", "type": "message", "role": "assistant", "model": "client-m",
                    "content": [{"type": "text", "text": "Hello"}],
                    "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": {"input_tokens": 10, "output_tokens": 5,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 20}
                }),
            ),
            (
                "text and tool calls, unparsable arguments kept",
                json!({
                    "id": "chatcmpl-2",
                    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": "Let me check.",
                        "tool_calls": [
                            {"id": "call_a", "type": "function",
                             "function": {"name": "get", "arguments": "{\"q\":1}"}},
                            {"id": "call_b", "type": "function",
                             "function": {"name": "put", "arguments": "oops"}}
                        ]}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 4}
                }),
                json!({
                    "id": "msg_2", "type": "message", "role": "assistant", "model": "client-m",
                    "content": [
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "call_a", "name": "get", "input": {"q": 1}},
                        {"type": "tool_use", "id": "call_b", "name": "put",
                         "input": {"_raw": "oops"}}
                    ],
                    "stop_reason": "tool_use", "stop_sequence": null,
                    "usage": {"input_tokens": 3, "output_tokens": 4,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
                }),
            ),
            (
                "length cut, null content, no usage",
                json!({"id": "x", "choices": [{"finish_reason": "length",
                       "message": {"role": "assistant", "content": null}}]}),
                json!({
                    "id": "msg_x", "type": "message", "role": "assistant", "model": "client-m",
                    "content": [], "stop_reason": "max_tokens", "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
                }),
            ),
        ];
        for (name, input, expected) in cases {
            let got = openai_to_anthropic_response(&input, "client-m")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn anthropic_to_openai_cases() {
        let cases = vec![
            (
                "text with cache usage, thinking dropped",
                json!({
                    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                    "content": [
                        {"type": "thinking", "thinking": "hm", "signature": "s"},
                        {"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}
                    ],
                    "stop_reason": "end_turn", "stop_sequence": null,
                    "usage": {"input_tokens": 10, "output_tokens": 5,
                              "cache_creation_input_tokens": 3, "cache_read_input_tokens": 20}
                }),
                json!({
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": "client-m",
                    "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello"}}],
                    "usage": {"prompt_tokens": 33, "completion_tokens": 5, "total_tokens": 38,
                              "prompt_tokens_details": {"cached_tokens": 20}}
                }),
            ),
            (
                "tool use only",
                json!({
                    "id": "msg_2", "type": "message", "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "get",
                                 "input": {"q": "a"}}],
                    "stop_reason": "tool_use",
                    "usage": {"input_tokens": 1, "output_tokens": 2}
                }),
                json!({
                    "id": "chatcmpl-2", "object": "chat.completion", "created": 0,
                    "model": "client-m",
                    "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                                 "message": {"role": "assistant", "content": null, "tool_calls": [
                                     {"id": "toolu_1", "type": "function",
                                      "function": {"name": "get", "arguments": "{\"q\":\"a\"}"}}
                                 ]}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                              "prompt_tokens_details": {"cached_tokens": 0}}
                }),
            ),
        ];
        for (name, input, expected) in cases {
            let got = anthropic_to_openai_response(&input, "client-m")
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn finish_reasons_both_ways() {
        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
        ] {
            let resp = json!({"content": [], "stop_reason": stop});
            let got = anthropic_to_openai_response(&resp, "m").ok();
            assert_eq!(
                got.map(|v| v["choices"][0]["finish_reason"].clone()),
                Some(json!(finish)),
                "{stop}"
            );
        }
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("function_call", "tool_use"),
            ("content_filter", "end_turn"),
        ] {
            let resp = json!({"choices": [{"finish_reason": finish, "message": {"content": "x"}}]});
            let got = openai_to_anthropic_response(&resp, "m").ok();
            assert_eq!(
                got.map(|v| v["stop_reason"].clone()),
                Some(json!(stop)),
                "{finish}"
            );
        }
    }

    #[test]
    fn usage_extraction() {
        let anthropic = json!({"usage": {"input_tokens": 4, "output_tokens": 5,
            "cache_creation_input_tokens": 6, "cache_read_input_tokens": 7}});
        assert_eq!(
            usage_from_anthropic(&anthropic),
            Usage {
                input_tokens: 4,
                output_tokens: 5,
                cache_creation_input_tokens: 6,
                cache_read_input_tokens: 7
            }
        );
        let openai = json!({"usage": {"prompt_tokens": 10, "completion_tokens": 2,
            "prompt_tokens_details": {"cached_tokens": 8}}});
        assert_eq!(
            usage_from_openai(&openai),
            Usage {
                input_tokens: 2,
                output_tokens: 2,
                cache_creation_input_tokens: 0,
                cache_read_input_tokens: 8
            }
        );
        assert_eq!(usage_from_openai(&json!({})), Usage::default());
    }

    #[test]
    fn errors_name_the_problem() {
        let cases: Vec<(Value, bool, &str)> = vec![
            (
                json!({"choices": []}),
                true,
                "choices: expected non-empty array",
            ),
            (
                json!({"error": {"type": "rate_limit", "message": "slow down"}}),
                true,
                "upstream error (rate_limit): slow down",
            ),
            (json!({"id": "msg_1"}), false, "content: expected array"),
            (
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
                false,
                "upstream error (overloaded_error): busy",
            ),
        ];
        for (input, from_openai, expected) in cases {
            let got = if from_openai {
                openai_to_anthropic_response(&input, "m")
            } else {
                anthropic_to_openai_response(&input, "m")
            };
            match got {
                Err(TranslateError::Invalid(msg)) => assert_eq!(msg, expected),
                Ok(v) => panic!("expected error {expected}, got {v}"),
            }
        }
    }
}
