//! Adapters between an upstream stream and the client: pass-through with a usage tap in
//! each dialect, translation in each direction, and fixed usage for the built-in mock.

use super::usage::{AnthropicUsage, OpenAiUsage};
use crate::gateway::estimate::BytesPerToken;
use crate::gateway::sse::{SseEvent, SseParser};
use crate::gateway::translate::{AnthropicToOpenAiStream, OpenAiToAnthropicStream, SseOut};
use bytes::Bytes;
use tollgate_proto::Usage;

/// Turns upstream bytes into client bytes and keeps count of usage.
pub trait Adapter: Send + 'static {
    fn on_chunk(&mut self, chunk: &Bytes) -> Bytes;
    /// The upstream ended: bytes still owed to the client.
    fn finish(&mut self) -> Bytes;
    /// The usage so far: as reported, with streamed text counted until it is.
    fn usage(&self) -> Usage;
    /// The streamed bytes of output and the tokens the provider reported for them, once
    /// it did: what metering learns its counting from.
    fn sample(&self) -> Option<(u64, u64)> {
        None
    }
    /// Ends the stream here as a length stop in the client's dialect: the frames that
    /// close it. `None`: this adapter cannot end a stream cleanly, so it is not metered.
    fn cut(&mut self) -> Option<Bytes> {
        None
    }
}

/// Anthropic upstream → Anthropic client: bytes pass through untouched, or, for a
/// metered stream, event by event (so that the stream can end between two events).
#[derive(Default)]
pub struct AnthropicPassthrough {
    parser: SseParser,
    tracker: AnthropicUsage,
    metered: bool,
}

impl AnthropicPassthrough {
    /// A pass-through that forwards whole events only, counts streamed text at
    /// `counting`, and can cut.
    pub fn for_metering(counting: BytesPerToken) -> Self {
        AnthropicPassthrough {
            metered: true,
            tracker: AnthropicUsage::default().counting(counting),
            ..AnthropicPassthrough::default()
        }
    }
}

impl Adapter for AnthropicPassthrough {
    fn on_chunk(&mut self, chunk: &Bytes) -> Bytes {
        let events = self.parser.push(chunk);
        for event in &events {
            self.tracker.observe(event);
        }
        if !self.metered {
            return chunk.clone();
        }
        let mut out = Vec::with_capacity(chunk.len() + 16);
        for event in &events {
            frame(event, &mut out);
        }
        Bytes::from(out)
    }
    fn sample(&self) -> Option<(u64, u64)> {
        self.tracker.sample()
    }
    fn cut(&mut self) -> Option<Bytes> {
        if !self.metered {
            return None;
        }
        let mut out = String::new();
        if let Some(index) = self.tracker.open_block() {
            out.push_str(&format!(
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{index}}}\n\n"
            ));
        }
        out.push_str(&format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"max_tokens\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
            self.tracker.usage().output_tokens
        ));
        out.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        Some(Bytes::from(out))
    }
    fn finish(&mut self) -> Bytes {
        let Some(event) = self.parser.finish() else {
            return Bytes::new();
        };
        self.tracker.observe(&event);
        if !self.metered {
            return Bytes::new();
        }
        // Its bytes were held back until it was whole.
        let mut out = Vec::new();
        frame(&event, &mut out);
        Bytes::from(out)
    }
    fn usage(&self) -> Usage {
        self.tracker.usage()
    }
}

/// OpenAI upstream → OpenAI client: bytes pass through untouched, except the usage chunk
/// the gateway asked for itself, which a client that did not ask for it never sees
/// (many clients index `choices[0]` of every chunk).
#[derive(Default)]
pub struct OpenAiPassthrough {
    parser: SseParser,
    tracker: OpenAiUsage,
    strip_usage_chunk: bool,
    /// Forward whole events only, and end the stream as a length stop when asked.
    metered: bool,
}

impl OpenAiPassthrough {
    pub fn new(strip_usage_chunk: bool) -> Self {
        OpenAiPassthrough {
            strip_usage_chunk,
            ..OpenAiPassthrough::default()
        }
    }
}

impl OpenAiPassthrough {
    /// For a metered stream: whole events only, streamed text counted at `counting`,
    /// and it can cut.
    pub fn for_metering(strip_usage_chunk: bool, counting: BytesPerToken) -> Self {
        OpenAiPassthrough {
            metered: true,
            tracker: OpenAiUsage::default().counting(counting),
            ..OpenAiPassthrough::new(strip_usage_chunk)
        }
    }

    /// Whether bytes go out event by event rather than as they came.
    fn reframes(&self) -> bool {
        self.strip_usage_chunk || self.metered
    }

    /// Observes `event`; whether it goes to the client (not the usage chunk the gateway
    /// asked for itself).
    fn forwards(&mut self, event: &SseEvent) -> bool {
        let usage_only = self.tracker.observe(event);
        !(usage_only && self.strip_usage_chunk)
    }
}

impl Adapter for OpenAiPassthrough {
    fn on_chunk(&mut self, chunk: &Bytes) -> Bytes {
        let events = self.parser.push(chunk);
        if !self.reframes() {
            for event in &events {
                self.tracker.observe(event);
            }
            return chunk.clone();
        }
        // Re-frame event by event so the usage-only chunk can be left out.
        let mut out = Vec::with_capacity(chunk.len());
        for event in &events {
            if self.forwards(event) {
                frame(event, &mut out);
            }
        }
        Bytes::from(out)
    }
    fn finish(&mut self) -> Bytes {
        match self.parser.finish() {
            Some(event) if self.forwards(&event) && self.reframes() => {
                let mut out = Vec::new();
                frame(&event, &mut out);
                Bytes::from(out)
            }
            _ => Bytes::new(),
        }
    }
    fn usage(&self) -> Usage {
        self.tracker.usage()
    }
    fn sample(&self) -> Option<(u64, u64)> {
        self.tracker.sample()
    }
    fn cut(&mut self) -> Option<Bytes> {
        if !self.metered {
            return None;
        }
        let head = self.tracker.head().cloned().unwrap_or_default();
        let chunk = |choices: serde_json::Value, usage: Option<serde_json::Value>| {
            let mut c = serde_json::json!({
                "id": head.id, "object": "chat.completion.chunk", "created": head.created,
                "model": head.model, "choices": choices,
            });
            if let Some(u) = usage {
                c["usage"] = u;
            }
            format!("data: {c}\n\n")
        };
        let finishes: Vec<serde_json::Value> = self
            .tracker
            .choices()
            .into_iter()
            .map(
                |index| serde_json::json!({"index": index, "delta": {}, "finish_reason": "length"}),
            )
            .collect();
        let mut out = chunk(serde_json::Value::Array(finishes), None);
        if !self.strip_usage_chunk {
            // The client asked for usage: what was counted.
            let u = self.tracker.usage();
            out.push_str(&chunk(
                serde_json::json!([]),
                Some(serde_json::json!({
                    "prompt_tokens": u.input_tokens,
                    "completion_tokens": u.output_tokens,
                    "total_tokens": u.input_tokens + u.output_tokens,
                })),
            ));
        }
        out.push_str("data: [DONE]\n\n");
        Some(Bytes::from(out))
    }
}

/// One event as SSE bytes.
fn frame(event: &SseEvent, out: &mut Vec<u8>) {
    crate::gateway::sse::frame(event.event.as_deref(), &event.data, out);
}

fn encode_all(events: Vec<SseOut>, out: &mut Vec<u8>) {
    for e in events {
        out.extend_from_slice(e.encode().as_bytes());
    }
}

/// One direction of translation: the translator, its usage tap, and how an upstream
/// error is told to the client.
pub trait Direction: Send + 'static {
    fn observe(&mut self, event: &SseEvent);
    fn push(
        &mut self,
        event: &SseEvent,
    ) -> Result<Vec<SseOut>, crate::gateway::translate::TranslateError>;
    /// Closing events still owed when the upstream ended normally.
    fn close(&mut self) -> Vec<SseOut>;
    /// The frame that ends the client's stream after an upstream error.
    fn error_frame(message: &str) -> String;
    fn usage(&self) -> Usage;
    /// Counts streamed text at `counting` until the output is reported.
    fn count_at(&mut self, counting: BytesPerToken);
    /// The streamed bytes and the output tokens reported for them, once reported.
    fn sample(&self) -> Option<(u64, u64)>;
    /// The events that end the client's stream here as a length stop.
    fn cut(&mut self) -> Vec<SseOut>;
}

/// A stream translated event by event; after an upstream error it sends the error frame
/// and nothing more.
pub struct Translating<D> {
    parser: SseParser,
    direction: D,
    failed: bool,
    /// Metered: the stream can be cut as a length stop.
    metered: bool,
}

impl<D: Direction> Translating<D> {
    /// For a metered stream (`Some`: how its streamed text counts): it can be cut.
    pub fn for_metering(mut self, counting: Option<BytesPerToken>) -> Self {
        if let Some(counting) = counting {
            self.metered = true;
            self.direction.count_at(counting);
        }
        self
    }
}

impl<D: Direction> Translating<D> {
    fn feed(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        self.direction.observe(event);
        if self.failed {
            return;
        }
        match self.direction.push(event) {
            Ok(events) => encode_all(events, out),
            Err(e) => {
                self.failed = true;
                out.extend_from_slice(D::error_frame(&e.to_string()).as_bytes());
            }
        }
    }
}

impl<D: Direction> Adapter for Translating<D> {
    fn on_chunk(&mut self, chunk: &Bytes) -> Bytes {
        let mut out = Vec::new();
        for event in self.parser.push(chunk) {
            self.feed(&event, &mut out);
        }
        Bytes::from(out)
    }
    fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        if let Some(event) = self.parser.finish() {
            self.feed(&event, &mut out);
        }
        if !self.failed {
            encode_all(self.direction.close(), &mut out);
        }
        Bytes::from(out)
    }
    fn usage(&self) -> Usage {
        self.direction.usage()
    }
    fn sample(&self) -> Option<(u64, u64)> {
        self.direction.sample()
    }
    fn cut(&mut self) -> Option<Bytes> {
        if !self.metered || self.failed {
            return None;
        }
        let mut out = Vec::new();
        encode_all(self.direction.cut(), &mut out);
        Some(Bytes::from(out))
    }
}

/// OpenAI upstream → Anthropic client.
pub struct ToAnthropic {
    translator: OpenAiToAnthropicStream,
    tracker: OpenAiUsage,
}

pub type OpenAiToAnthropic = Translating<ToAnthropic>;

impl OpenAiToAnthropic {
    pub fn new(model: &str, message_id: &str) -> Self {
        let direction = ToAnthropic {
            translator: OpenAiToAnthropicStream::new(model, message_id),
            tracker: OpenAiUsage::default(),
        };
        Translating {
            parser: SseParser::new(),
            direction,
            failed: false,
            metered: false,
        }
    }
}

impl Direction for ToAnthropic {
    fn observe(&mut self, event: &SseEvent) {
        self.tracker.observe(event);
    }
    fn push(
        &mut self,
        event: &SseEvent,
    ) -> Result<Vec<SseOut>, crate::gateway::translate::TranslateError> {
        self.translator.push(&event.data)
    }
    fn close(&mut self) -> Vec<SseOut> {
        self.translator.finish()
    }
    /// An Anthropic `error` event, which Claude Code and the SDKs raise, rather than a
    /// normal-looking stop.
    fn error_frame(message: &str) -> String {
        let body = serde_json::json!({"type": "error", "error": {"type": "api_error", "message": message}});
        format!("event: error\ndata: {body}\n\n")
    }
    fn usage(&self) -> Usage {
        let reported = self.translator.usage();
        if reported == Usage::default() {
            self.tracker.usage()
        } else {
            reported
        }
    }
    fn count_at(&mut self, counting: BytesPerToken) {
        self.tracker = std::mem::take(&mut self.tracker).counting(counting);
    }
    fn sample(&self) -> Option<(u64, u64)> {
        self.tracker.sample()
    }
    fn cut(&mut self) -> Vec<SseOut> {
        self.translator.cut()
    }
}

/// Anthropic upstream → OpenAI client.
pub struct ToOpenAi {
    translator: AnthropicToOpenAiStream,
    tracker: AnthropicUsage,
}

pub type AnthropicToOpenAi = Translating<ToOpenAi>;

impl AnthropicToOpenAi {
    pub fn new(model: &str, completion_id: &str, created_unix: u64, include_usage: bool) -> Self {
        let direction = ToOpenAi {
            translator: AnthropicToOpenAiStream::new(
                model,
                completion_id,
                created_unix,
                include_usage,
            ),
            tracker: AnthropicUsage::default(),
        };
        Translating {
            parser: SseParser::new(),
            direction,
            failed: false,
            metered: false,
        }
    }
}

impl Direction for ToOpenAi {
    fn observe(&mut self, event: &SseEvent) {
        self.tracker.observe(event);
    }
    fn push(
        &mut self,
        event: &SseEvent,
    ) -> Result<Vec<SseOut>, crate::gateway::translate::TranslateError> {
        self.translator.push(event.event.as_deref(), &event.data)
    }
    fn close(&mut self) -> Vec<SseOut> {
        self.translator.finish()
    }
    /// OpenAI streams have no error chunk: an error object the OpenAI SDK raises.
    fn error_frame(message: &str) -> String {
        let body = serde_json::json!({"error": {"message": message, "type": "api_error"}});
        format!("data: {body}\n\n")
    }
    fn usage(&self) -> Usage {
        self.tracker.usage()
    }
    fn count_at(&mut self, counting: BytesPerToken) {
        self.tracker = std::mem::take(&mut self.tracker).counting(counting);
    }
    fn sample(&self) -> Option<(u64, u64)> {
        self.tracker.sample()
    }
    fn cut(&mut self) -> Vec<SseOut> {
        self.translator.cut()
    }
}

/// Bytes relayed as they are, with a usage known in advance (the built-in mock).
pub struct Fixed(pub Usage);

impl Adapter for Fixed {
    fn on_chunk(&mut self, chunk: &Bytes) -> Bytes {
        chunk.clone()
    }
    fn finish(&mut self) -> Bytes {
        Bytes::new()
    }
    fn usage(&self) -> Usage {
        self.0
    }
}

#[cfg(test)]
mod tests;
