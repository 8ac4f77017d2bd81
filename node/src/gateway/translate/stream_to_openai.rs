//! Streaming translation from an Anthropic upstream to an OpenAI client.

use super::shared::UsageJson;
use serde_json::{json, Value};

use super::shared::{error_message, stop_to_finish, SseOut, TranslateError, Usage};

/// Streaming Anthropic upstream -> OpenAI client.
///
/// Anthropic events become `chat.completion.chunk`s: text deltas become `content`, each
/// `tool_use` block becomes one entry of `tool_calls` (numbered by tool call, not by content
/// block), thinking is dropped, and `message_delta` yields the chunk with `finish_reason`.
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    role_sent: bool,
    done: bool,
    /// Anthropic block index -> OpenAI tool call index, for `tool_use` blocks only.
    tool_blocks: Vec<(u64, usize)>,
    tool_count: usize,
    usage: Usage,
}

impl AnthropicToOpenAiStream {
    /// Creates the translator. `include_usage` mirrors the client's
    /// `stream_options.include_usage` and controls the final usage chunk.
    pub fn new(model: &str, completion_id: &str, created_unix: u64, include_usage: bool) -> Self {
        AnthropicToOpenAiStream {
            model: model.to_string(),
            id: completion_id.to_string(),
            created: created_unix,
            include_usage,
            role_sent: false,
            done: false,
            tool_blocks: Vec::new(),
            tool_count: 0,
            usage: Usage::default(),
        }
    }

    /// Feed one upstream SSE event: its `event:` name (may be None if the upstream omitted event
    /// lines; then the JSON "type" field is used) and data payload. An upstream `error` event
    /// cannot be expressed as a chunk, so it is returned as an error for the caller to report.
    /// `message_stop` emits nothing: the caller ends the client stream with [`Self::finish`].
    pub fn push(&mut self, event: Option<&str>, data: &str) -> Result<Vec<SseOut>, TranslateError> {
        let data = data.trim();
        if self.done || data.is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| TranslateError::Invalid(format!("stream event: invalid JSON: {e}")))?;
        let kind = event.or_else(|| v.get("type").and_then(Value::as_str));
        let mut out = Vec::new();
        match kind.unwrap_or("") {
            "message_start" => {
                if let Some(u) = v.pointer("/message/usage") {
                    self.usage = Usage::from_anthropic_usage(u);
                }
                self.role(&mut out);
            }
            "content_block_start" => {
                self.role(&mut out);
                let index = block_index(&v, "content_block_start")?;
                let block = v.get("content_block").unwrap_or(&Value::Null);
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("tool_use") => {
                        let call = self.tool_count;
                        self.tool_count += 1;
                        self.tool_blocks.push((index, call));
                        // Streamed tool input arrives as deltas after an empty `{}`; a non-empty
                        // input here means the upstream sent it whole, so it is forwarded now.
                        let arguments = match block.get("input") {
                            Some(Value::Object(m)) if !m.is_empty() => block["input"].to_string(),
                            _ => String::new(),
                        };
                        let delta = json!({"tool_calls": [{
                            "index": call,
                            "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                            "type": "function",
                            "function": {
                                "name": block.get("name").and_then(Value::as_str).unwrap_or(""),
                                "arguments": arguments,
                            },
                        }]});
                        out.push(self.chunk(delta, None));
                    }
                    // Thinking and server-tool blocks have no OpenAI representation.
                    _ => {}
                }
            }
            "content_block_delta" => {
                self.role(&mut out);
                let index = block_index(&v, "content_block_delta")?;
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            out.push(self.chunk(json!({"content": text}), None));
                        }
                    }
                    Some("input_json_delta") => {
                        let partial = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        let call = self.tool_blocks.iter().find(|(b, _)| *b == index);
                        if let (Some(&(_, call)), false) = (call, partial.is_empty()) {
                            let delta = json!({"tool_calls": [{
                                "index": call,
                                "function": {"arguments": partial},
                            }]});
                            out.push(self.chunk(delta, None));
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: nothing to forward.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    self.merge_final_usage(u);
                }
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.role(&mut out);
                    let finish = stop_to_finish(Some(reason));
                    out.push(self.chunk(json!({}), Some(finish)));
                }
            }
            "error" => {
                let err = v.get("error").unwrap_or(&Value::Null);
                return Err(TranslateError::Invalid(error_message(err)));
            }
            // content_block_stop, message_stop, ping and unknown future events carry nothing
            // an OpenAI client needs.
            _ => {}
        }
        Ok(out)
    }

    /// Emit the final chunk(s): a usage chunk (choices: []) when include_usage, then
    /// `data: [DONE]`. Idempotent: a second call returns nothing. No `finish_reason` chunk is
    /// invented for a stream cut short, so the client can tell it was truncated.
    pub fn finish(&mut self) -> Vec<SseOut> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if self.include_usage {
            let data = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage.openai_json(),
            });
            out.push(SseOut::openai(&data));
        }
        out.push(SseOut {
            event: None,
            data: "[DONE]".to_string(),
        });
        out
    }

    /// Ends the completion here as a length stop (the budget allows no more output): a
    /// chunk with `finish_reason: "length"`, then the closing chunks of `finish`.
    pub fn cut(&mut self) -> Vec<SseOut> {
        if self.done {
            return Vec::new();
        }
        let mut out = Vec::new();
        self.role(&mut out);
        out.push(SseOut::openai(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        })));
        out.extend(self.finish());
        out
    }

    /// Usage reported by the upstream so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Emits the opening chunk with the assistant role once, before any content.
    fn role(&mut self, out: &mut Vec<SseOut>) {
        if !self.role_sent {
            self.role_sent = true;
            out.push(self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
    }

    /// Builds one chunk with a single choice.
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> SseOut {
        SseOut::openai(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }))
    }

    /// Folds in `message_delta` usage. Its counts are cumulative, and some upstreams repeat or
    /// only now report the input side, so each field keeps the largest value seen.
    fn merge_final_usage(&mut self, u: &Value) {
        let new = Usage::from_anthropic_usage(u);
        let old = &mut self.usage;
        old.input_tokens = old.input_tokens.max(new.input_tokens);
        old.output_tokens = old.output_tokens.max(new.output_tokens);
        old.cache_creation_input_tokens = old
            .cache_creation_input_tokens
            .max(new.cache_creation_input_tokens);
        old.cache_read_input_tokens = old.cache_read_input_tokens.max(new.cache_read_input_tokens);
    }
}

/// Reads the content block `index` of a block event.
fn block_index(v: &Value, event: &str) -> Result<u64, TranslateError> {
    v.get("index")
        .and_then(Value::as_u64)
        .ok_or_else(|| TranslateError::Invalid(format!("{event}.index: expected integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `(event, data)` pairs (event None means no event line), then finish().
    /// Returns the data payloads parsed, with `[DONE]` as a JSON string, so comparisons do not
    /// depend on key order.
    fn run(include_usage: bool, events: &[(Option<&str>, Value)]) -> Vec<Value> {
        let mut s = AnthropicToOpenAiStream::new("gpt-client", "chatcmpl-1", 7, include_usage);
        let mut out = Vec::new();
        for (event, data) in events {
            let got = s.push(*event, &data.to_string());
            out.extend(got.unwrap_or_else(|e| panic!("push failed: {e}")));
        }
        out.extend(s.finish());
        assert!(s.finish().is_empty(), "finish must be idempotent");
        out.into_iter()
            .map(|e| {
                assert_eq!(e.event, None, "OpenAI streams have no event lines");
                serde_json::from_str(&e.data).unwrap_or(Value::String(e.data))
            })
            .collect()
    }

    fn chunk(delta: Value, finish: Option<&str>) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
               "model": "gpt-client",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    fn role() -> Value {
        chunk(json!({"role": "assistant", "content": ""}), None)
    }

    fn usage(prompt: u64, completion: u64, cached: u64) -> Value {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7,
               "model": "gpt-client", "choices": [],
               "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion,
                         "prompt_tokens_details": {"cached_tokens": cached}}})
    }

    fn message_start(input: u64, cache_creation: u64, cache_read: u64) -> Value {
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": 1,
                      "cache_creation_input_tokens": cache_creation,
                      "cache_read_input_tokens": cache_read}}})
    }

    fn block_start(index: u64, block: Value) -> Value {
        json!({"type": "content_block_start", "index": index, "content_block": block})
    }

    fn delta(index: u64, delta: Value) -> Value {
        json!({"type": "content_block_delta", "index": index, "delta": delta})
    }

    fn message_delta(reason: &str, usage: Value) -> Value {
        json!({"type": "message_delta",
               "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": usage})
    }

    #[test]
    fn text_only_with_usage_and_cache() {
        let got = run(
            true,
            &[
                (Some("message_start"), message_start(10, 5, 20)),
                (
                    Some("content_block_start"),
                    block_start(0, json!({"type": "text", "text": ""})),
                ),
                (Some("ping"), json!({"type": "ping"})),
                (
                    Some("content_block_delta"),
                    delta(0, json!({"type": "text_delta", "text": "Hel"})),
                ),
                (
                    Some("content_block_delta"),
                    delta(0, json!({"type": "text_delta", "text": "lo"})),
                ),
                (
                    Some("content_block_stop"),
                    json!({"type": "content_block_stop", "index": 0}),
                ),
                (
                    Some("message_delta"),
                    message_delta("end_turn", json!({"output_tokens": 4})),
                ),
                (Some("message_stop"), json!({"type": "message_stop"})),
            ],
        );
        let expected = vec![
            role(),
            chunk(json!({"content": "Hel"}), None),
            chunk(json!({"content": "lo"}), None),
            chunk(json!({}), Some("stop")),
            usage(35, 4, 20),
            json!("[DONE]"),
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn thinking_text_and_two_tool_calls_without_event_lines() {
        let events: Vec<(Option<&str>, Value)> = vec![
            message_start(3, 0, 0),
            block_start(0, json!({"type": "thinking", "thinking": ""})),
            delta(0, json!({"type": "thinking_delta", "thinking": "hmm"})),
            delta(0, json!({"type": "signature_delta", "signature": "sig"})),
            json!({"type": "content_block_stop", "index": 0}),
            block_start(1, json!({"type": "text", "text": ""})),
            delta(1, json!({"type": "text_delta", "text": "Checking."})),
            json!({"type": "content_block_stop", "index": 1}),
            block_start(
                2,
                json!({"type": "tool_use", "id": "toolu_a", "name": "get", "input": {}}),
            ),
            delta(2, json!({"type": "input_json_delta", "partial_json": ""})),
            delta(
                2,
                json!({"type": "input_json_delta", "partial_json": "{\"ci"}),
            ),
            delta(
                2,
                json!({"type": "input_json_delta", "partial_json": "ty\":\"Oslo\"}"}),
            ),
            json!({"type": "content_block_stop", "index": 2}),
            block_start(
                3,
                json!({"type": "tool_use", "id": "toolu_b", "name": "put", "input": {}}),
            ),
            delta(3, json!({"type": "input_json_delta", "partial_json": "{}"})),
            json!({"type": "content_block_stop", "index": 3}),
            message_delta("tool_use", json!({"input_tokens": 9, "output_tokens": 30})),
            json!({"type": "message_stop"}),
        ]
        .into_iter()
        .map(|v| (None, v))
        .collect();
        let got = run(false, &events);
        let tool_start = |index: u64, id: &str, name: &str| {
            chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                None,
            )
        };
        let tool_args = |index: u64, arguments: &str| {
            chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}),
                None,
            )
        };
        let expected = vec![
            role(),
            chunk(json!({"content": "Checking."}), None),
            tool_start(0, "toolu_a", "get"),
            tool_args(0, "{\"ci"),
            tool_args(0, "ty\":\"Oslo\"}"),
            tool_start(1, "toolu_b", "put"),
            tool_args(1, "{}"),
            chunk(json!({}), Some("tool_calls")),
            json!("[DONE]"),
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn usage_takes_the_largest_counts_seen() {
        let mut s = AnthropicToOpenAiStream::new("m", "chatcmpl-1", 7, true);
        let pushes = [
            message_start(10, 2, 0),
            message_delta(
                "max_tokens",
                json!({"input_tokens": 12, "output_tokens": 50}),
            ),
        ];
        for p in pushes {
            assert!(s.push(None, &p.to_string()).is_ok());
        }
        assert_eq!(
            s.usage(),
            Usage {
                input_tokens: 12,
                output_tokens: 50,
                cache_creation_input_tokens: 2,
                cache_read_input_tokens: 0
            }
        );
    }

    #[test]
    fn cut_stream_and_errors() {
        // A stream that dies mid-text still ends with usage and [DONE] from finish().
        let got = run(
            true,
            &[
                (Some("message_start"), message_start(5, 0, 0)),
                (
                    Some("content_block_start"),
                    block_start(0, json!({"type": "text", "text": ""})),
                ),
                (
                    Some("content_block_delta"),
                    delta(0, json!({"type": "text_delta", "text": "par"})),
                ),
            ],
        );
        let expected = vec![
            role(),
            chunk(json!({"content": "par"}), None),
            usage(5, 1, 0),
            json!("[DONE]"),
        ];
        assert_eq!(got, expected);

        let mut s = AnthropicToOpenAiStream::new("m", "chatcmpl-1", 7, false);
        let err = s.push(
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        match err {
            Err(TranslateError::Invalid(msg)) => {
                assert_eq!(msg, "upstream error (overloaded_error): Overloaded")
            }
            Ok(v) => panic!("expected error, got {v:?}"),
        }
        assert!(matches!(
            s.push(Some("content_block_delta"), r#"{"delta":{}}"#),
            Err(TranslateError::Invalid(m)) if m == "content_block_delta.index: expected integer"
        ));
        assert!(s.push(None, "not json").is_err());
        let tail: Vec<String> = s.finish().into_iter().map(|e| e.encode()).collect();
        assert_eq!(tail, vec!["data: [DONE]\n\n".to_string()]);
        assert_eq!(s.push(None, r#"{"type":"ping"}"#).ok(), Some(vec![]));
    }
}
