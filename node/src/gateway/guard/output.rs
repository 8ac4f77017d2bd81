//! The output side: a whole answer checked before it is relayed, and a stream checked
//! as it goes. A stream's text (Anthropic `text_delta`, `thinking_delta` and
//! `input_json_delta`; OpenAI `delta.content`) is held back by `HOLD_BACK` bytes per
//! content block, so a match split over several deltas is found whole and redacted
//! before any of it leaves; the rest of the stream passes as it came. A block ends the
//! stream with an error event in the client's dialect (the upstream is still read to
//! its end, so usage is counted as without guardrails).

use super::block::{self as input, BlockVerdict, Checked};
use super::policy::Plan;
use super::verdict::{Counts, Direction, Finding, Verdict};
use super::webhook;
use crate::gateway::sse::{frame, SseEvent, SseParser};
use crate::http::error::Dialect;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes of a stream's text held back until more comes: the longest match that can
/// still grow (the gitleaks rules' tokens are shorter; a longer match is still found,
/// but its first part may have left).
pub const HOLD_BACK: usize = 256;

/// Checks a whole answer with the plan's output policies.
pub async fn check_body(
    webhooks: &webhook::Client,
    counts: &Counts,
    plan: &Plan,
    body: &[u8],
) -> Checked {
    {
        if !plan.output() {
            return Checked::default();
        }
        let mut verdict = input::scan_block(plan, Direction::Output, body);
        let hooks = webhooks
            .check_block(plan, Direction::Output, body, &mut verdict)
            .await;
        let mut checked = input::conclude(plan, Direction::Output, body, &[(0, Arc::new(verdict))]);
        input::webhook_failures(plan, Direction::Output, &hooks.failed, &mut checked);
        counts.count(&checked.verdict);
        checked
    }
}

/// Text of one content block not yet sent.
#[derive(Default)]
struct Pending {
    text: String,
    /// The event the text came in, as a template for the event it leaves in.
    template: Option<Value>,
    /// Where the text sits in the template (`delta.text`, `choices[i].delta.content`).
    field: &'static str,
    event: Option<String>,
}

/// Checks a stream in the client's dialect, event by event.
pub struct StreamGuard {
    plan: Plan,
    counts: Arc<Counts>,
    dialect: Dialect,
    parser: SseParser,
    pending: BTreeMap<u64, Pending>,
    pub verdict: Verdict,
    /// A block ended the stream: nothing more is sent.
    ended: bool,
}

impl StreamGuard {
    pub fn new(plan: Plan, counts: Arc<Counts>, dialect: Dialect) -> StreamGuard {
        StreamGuard {
            plan,
            counts,
            dialect,
            parser: SseParser::new(),
            pending: BTreeMap::new(),
            verdict: Verdict::default(),
            ended: false,
        }
    }

    /// Client bytes in, client bytes out (held text kept back).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for event in self.parser.push(bytes) {
            self.on_event(event, &mut out);
        }
        out
    }

    /// The stream ended: whatever is held, checked and sent.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(event) = self.parser.finish() {
            self.on_event(event, &mut out);
        }
        let held: Vec<u64> = self.pending.keys().copied().collect();
        for index in held {
            self.release(index, true, &mut out);
        }
        self.counts.count(&self.verdict);
        out
    }

    fn on_event(&mut self, event: SseEvent, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match self.text_of(&event) {
            Some((index, text, template, field)) => {
                let p = self.pending.entry(index).or_default();
                p.text.push_str(&text);
                p.template = Some(template);
                p.field = field;
                p.event.clone_from(&event.event);
                self.release(index, false, out);
            }
            None => {
                // Anything else closes what it follows: send what is held first.
                let closes: Vec<u64> = match self.block_closed(&event) {
                    Some(i) => vec![i],
                    None => self.pending.keys().copied().collect(),
                };
                for index in closes {
                    self.release(index, true, out);
                }
                if !self.ended {
                    frame(event.event.as_deref(), &event.data, out);
                }
            }
        }
    }

    /// The content block an Anthropic `content_block_stop` closes; `None` for any other
    /// event that is not text (which flushes everything held).
    fn block_closed(&self, event: &SseEvent) -> Option<u64> {
        if event.event.as_deref() != Some("content_block_stop") {
            return None;
        }
        let v: Value = serde_json::from_str(&event.data).ok()?;
        v.get("index")?.as_u64()
    }

    /// The text an event carries: its block or choice index, the text, the event as a
    /// template and the field the text is in.
    fn text_of(&self, event: &SseEvent) -> Option<(u64, String, Value, &'static str)> {
        if !event.data.contains("delta") {
            return None;
        }
        let v: Value = serde_json::from_str(&event.data).ok()?;
        match self.dialect {
            Dialect::OpenAi => {
                let choices = v.get("choices")?.as_array()?;
                if choices.len() != 1 {
                    return None;
                }
                let c = &choices[0];
                let text = c.pointer("/delta/content")?.as_str()?.to_owned();
                let index = c.get("index").and_then(Value::as_u64).unwrap_or(0);
                Some((index, text, v, "content"))
            }
            _ => {
                if v.get("type")?.as_str()? != "content_block_delta" {
                    return None;
                }
                let index = v.get("index")?.as_u64()?;
                let delta = v.get("delta")?;
                let field = match delta.get("type")?.as_str()? {
                    "text_delta" => "text",
                    "thinking_delta" => "thinking",
                    "input_json_delta" => "partial_json",
                    _ => return None,
                };
                let text = delta.get(field)?.as_str()?.to_owned();
                Some((index, text, v, field))
            }
        }
    }

    /// Sends what of block `index` is safe: all of it at its end, else all but the last
    /// `HOLD_BACK` bytes and never part of a match; redacted, or ends the stream.
    fn release(&mut self, index: u64, all: bool, out: &mut Vec<u8>) {
        let Some(p) = self.pending.get_mut(&index) else {
            return;
        };
        let block = serde_json::to_vec(&p.text).unwrap_or_default();
        let verdict = input::scan_block(&self.plan, Direction::Output, &block);
        let findings: Vec<(usize, Finding)> = verdict
            .strings
            .into_iter()
            .flat_map(|s| s.findings)
            .collect();
        let mut safe = match all {
            true => p.text.len(),
            false => p.text.len().saturating_sub(HOLD_BACK),
        };
        if !all {
            for (_, f) in &findings {
                if f.start < safe && f.end > safe {
                    safe = f.start;
                }
            }
            while !p.text.is_char_boundary(safe) {
                safe -= 1;
            }
        }
        let sent: Vec<(usize, Finding)> = findings
            .into_iter()
            .filter(|(_, f)| f.end <= safe)
            .collect();
        if safe == 0 && sent.is_empty() {
            if all {
                self.pending.remove(&index);
            }
            return;
        }
        let head: String = p.text[..safe].to_owned();
        let body = serde_json::to_vec(&head).unwrap_or_default();
        let block = BlockVerdict {
            strings: vec![input::StringHits {
                start: 0,
                end: body.len(),
                findings: sent,
                edits: Default::default(),
            }],
        };
        let checked = input::conclude(
            &self.plan,
            Direction::Output,
            &body,
            &[(0, Arc::new(block))],
        );
        let blocks = checked.verdict.blocks();
        self.verdict.merge(checked.verdict);
        if blocks {
            self.ended = true;
            self.pending.clear();
            error_event(self.dialect, &self.verdict.block_message(), out);
            return;
        }
        let text = match checked.redacted {
            Some(r) => serde_json::from_slice::<String>(&r).unwrap_or_default(),
            None => head,
        };
        let template = p.template.clone();
        let (field, event) = (p.field, p.event.clone());
        p.text.drain(..safe);
        if all {
            self.pending.remove(&index);
        }
        if text.is_empty() {
            return;
        }
        if let Some(mut v) = template {
            let slot = match self.dialect {
                Dialect::OpenAi => v.pointer_mut("/choices/0/delta/content"),
                _ => v.get_mut("delta").and_then(|d| d.get_mut(field)),
            };
            if let Some(slot) = slot {
                *slot = Value::String(text);
            }
            frame(event.as_deref(), &v.to_string(), out);
        }
    }
}

/// The event that ends a blocked stream, in the client's dialect.
fn error_event(dialect: Dialect, message: &str, out: &mut Vec<u8>) {
    match dialect {
        Dialect::OpenAi => {
            let v = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": "guardrail_blocked"}});
            frame(None, &v.to_string(), out);
            frame(None, "[DONE]", out);
        }
        _ => {
            let v = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
            frame(Some("error"), &v.to_string(), out);
        }
    }
}
