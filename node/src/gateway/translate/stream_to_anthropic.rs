//! Streaming translation from an OpenAI upstream to an Anthropic client.

use super::shared::UsageJson;
use serde_json::{json, Value};

use super::shared::{error_message, finish_to_stop, SseOut, TranslateError, Usage};

/// The content block currently open on the Anthropic side, by its Anthropic index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Text(usize),
    Tool(usize),
}

/// A tool call seen in the upstream stream: its OpenAI `index` and Anthropic block index.
#[derive(Debug)]
struct ToolSlot {
    openai_index: u64,
    block: usize,
}

/// Streaming OpenAI upstream -> Anthropic client.
///
/// OpenAI chunks are re-framed as Anthropic events: `message_start` on the first chunk, one
/// content block per run of text or per tool call, and `message_delta` + `message_stop` once both
/// the finish reason and the usage are known. OpenAI sends usage in a separate final chunk after
/// the finish reason, so the closing events wait for that chunk, `[DONE]`, or [`Self::finish`].
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    model: String,
    message_id: String,
    started: bool,
    done: bool,
    next_block: usize,
    open: Open,
    tools: Vec<ToolSlot>,
    finish_reason: Option<String>,
    usage: Usage,
}

impl OpenAiToAnthropicStream {
    /// Creates the translator; `model` is echoed to the client and `message_id` names the message.
    pub fn new(model: &str, message_id: &str) -> Self {
        OpenAiToAnthropicStream {
            model: model.to_string(),
            message_id: message_id.to_string(),
            started: false,
            done: false,
            next_block: 0,
            open: Open::None,
            tools: Vec::new(),
            finish_reason: None,
            usage: Usage::default(),
        }
    }

    /// Feed the payload of one upstream `data:` line (already without the "data: " prefix).
    /// `"[DONE]"` is allowed. An `error` object in the stream is returned as an error so the
    /// caller can end the stream; [`Self::finish`] still closes whatever was opened.
    pub fn push(&mut self, data: &str) -> Result<Vec<SseOut>, TranslateError> {
        let data = data.trim();
        if self.done || data.is_empty() {
            return Ok(Vec::new());
        }
        if data == "[DONE]" {
            return Ok(self.finish());
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| TranslateError::Invalid(format!("stream chunk: invalid JSON: {e}")))?;
        if let Some(err) = chunk.get("error").filter(|v| !v.is_null()) {
            return Err(TranslateError::Invalid(error_message(err)));
        }

        let mut out = Vec::new();
        let usage = chunk.get("usage").filter(|u| u.is_object());
        if let Some(u) = usage {
            self.usage = Usage::from_openai_usage(u);
        }
        self.start(&mut out);

        // Only the first choice is translated: Anthropic has no notion of `n > 1`.
        let choice = chunk
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| {
                c.iter()
                    .find(|ch| ch.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
            });
        if let Some(choice) = choice {
            if let Some(delta) = choice.get("delta") {
                let text = delta.get("content").and_then(Value::as_str);
                let text = text.or_else(|| delta.get("refusal").and_then(Value::as_str));
                if let Some(text) = text.filter(|t| !t.is_empty()) {
                    self.text(text, &mut out);
                }
                if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                    for call in calls {
                        self.tool_fragment(call, &mut out);
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
                self.close_block(&mut out);
            }
        }
        // Usage arriving with or after the finish reason is final, so the message can close now.
        if usage.is_some() && self.finish_reason.is_some() {
            self.close_message(&mut out);
        }
        Ok(out)
    }

    /// Upstream ended (normally or not): emit whatever closing events are still owed
    /// (content_block_stop for every open block, message_delta with stop_reason and usage,
    /// message_stop). Idempotent: a second call returns nothing. If nothing was ever received,
    /// nothing is emitted, because a fabricated empty message would hide the failure.
    pub fn finish(&mut self) -> Vec<SseOut> {
        let mut out = Vec::new();
        if self.started {
            self.close_message(&mut out);
        }
        self.done = true;
        out
    }

    /// Ends the message here as a length stop (the budget allows no more output): the
    /// closing events of `finish`, with `stop_reason: "max_tokens"`.
    pub fn cut(&mut self) -> Vec<SseOut> {
        self.finish_reason = Some("length".to_owned());
        self.finish()
    }

    /// Usage reported by the upstream so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// Emits `message_start` once, before anything else.
    fn start(&mut self, out: &mut Vec<SseOut>) {
        if self.started {
            return;
        }
        self.started = true;
        let data = json!({
            "type": "message_start",
            "message": {
                "id": self.message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {
                    "input_tokens": self.usage.input_tokens,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": self.usage.cache_read_input_tokens,
                },
            },
        });
        out.push(SseOut::anthropic("message_start", &data));
    }

    /// Emits a text delta, opening a text block first if a different block is open.
    fn text(&mut self, text: &str, out: &mut Vec<SseOut>) {
        let index = match self.open {
            Open::Text(index) => index,
            _ => {
                self.close_block(out);
                let index = self.open_block(out, json!({"type": "text", "text": ""}));
                self.open = Open::Text(index);
                index
            }
        };
        let data = json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        });
        out.push(SseOut::anthropic("content_block_delta", &data));
    }

    /// Handles one `tool_calls` entry: the first fragment of an index opens a `tool_use` block
    /// (closing the previous block), later fragments append to its arguments.
    fn tool_fragment(&mut self, call: &Value, out: &mut Vec<SseOut>) {
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str);
        let arguments = function
            .and_then(|f| f.get("arguments"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let index = match call.get("index").and_then(Value::as_u64) {
            Some(index) => index,
            // Some servers omit `index` for single calls: a fresh id means a new call, otherwise
            // the fragment continues the latest one.
            None => match self.tools.last() {
                Some(last) if id.is_none() => last.openai_index,
                Some(last) => last.openai_index + 1,
                None => 0,
            },
        };

        let block = match self.tools.iter().find(|t| t.openai_index == index) {
            Some(slot) => slot.block,
            None => {
                self.close_block(out);
                let fallback_id = format!("toolu_{}_{index}", self.message_id);
                let block = self.open_block(
                    out,
                    json!({
                        "type": "tool_use",
                        "id": id.unwrap_or(&fallback_id),
                        "name": name.unwrap_or(""),
                        "input": {},
                    }),
                );
                self.tools.push(ToolSlot {
                    openai_index: index,
                    block,
                });
                self.open = Open::Tool(block);
                block
            }
        };
        // A fragment for a call whose block was already closed is still delivered at that
        // block's index: SDKs accumulate deltas by index, and dropping it would corrupt the
        // arguments. No known provider interleaves calls this way.
        if !arguments.is_empty() {
            let data = json!({
                "type": "content_block_delta",
                "index": block,
                "delta": {"type": "input_json_delta", "partial_json": arguments},
            });
            out.push(SseOut::anthropic("content_block_delta", &data));
        }
    }

    /// Emits `content_block_start` for a new block and returns its index.
    fn open_block(&mut self, out: &mut Vec<SseOut>, content_block: Value) -> usize {
        let index = self.next_block;
        self.next_block += 1;
        let data = json!({
            "type": "content_block_start",
            "index": index,
            "content_block": content_block,
        });
        out.push(SseOut::anthropic("content_block_start", &data));
        index
    }

    /// Emits `content_block_stop` for the open block, if any. Every started block must be
    /// stopped: Claude Code shows an empty answer otherwise.
    fn close_block(&mut self, out: &mut Vec<SseOut>) {
        if let Open::Text(index) | Open::Tool(index) = self.open {
            let data = json!({"type": "content_block_stop", "index": index});
            out.push(SseOut::anthropic("content_block_stop", &data));
        }
        self.open = Open::None;
    }

    /// Emits the closing `message_delta` and `message_stop`, once.
    fn close_message(&mut self, out: &mut Vec<SseOut>) {
        if self.done {
            return;
        }
        self.done = true;
        self.close_block(out);
        let stop_reason = finish_to_stop(self.finish_reason.as_deref(), !self.tools.is_empty());
        let data = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": self.usage.anthropic_json(),
        });
        out.push(SseOut::anthropic("message_delta", &data));
        out.push(SseOut::anthropic(
            "message_stop",
            &json!({"type": "message_stop"}),
        ));
    }
}

#[cfg(test)]
mod tests;
