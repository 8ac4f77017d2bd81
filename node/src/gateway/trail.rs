//! A request's record, filled in as the request is served: who asked (after
//! authentication), for what (after the body is read), where it went (each attempt),
//! when the provider first answered. Before a request goes to a provider its intent is
//! written to the outbox; it ends exactly once, either charged (the record rides with
//! the charge, one outbox write) or refused (a record that owes nothing).

use crate::clock::Clock;
use crate::gateway::guard::verdict::{Direction, Hit, Verdict};
use crate::governance::charge::{ChargeSender, PendingCharge};
use crate::governance::outbox::{Intent, SegmentId};
use crate::governance::records::{RequestLog, CAPTURE_MAX_BYTES};
use axum::http::HeaderMap;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tollgate_proto::records::CapturedContent;
use tollgate_proto::records::RequestRecord;
use tollgate_proto::{KeyId, LogContent, ProviderConfigId, RequestId, Usd, VirtualKey};

/// The header Claude Code names its session in.
pub const SESSION_HEADER: &str = "x-claude-code-session-id";

/// Most guardrail verdicts (guardrail, rule, direction) a record keeps.
pub const MAX_VERDICTS: usize = 64;

/// Longest header value a record keeps (session id, user agent); the rest is cut.
pub const HEADER_VALUE_MAX: usize = 256;

pub struct Trail {
    charges: ChargeSender,
    clock: Arc<dyn Clock>,
    /// The request log, if the node keeps one.
    log: Option<Arc<RequestLog>>,
    /// Whether the bodies are kept: the content the caller's key asks for is `full`
    /// (decided once the caller is known).
    capture: AtomicBool,
    draft: Mutex<Draft>,
}

struct Draft {
    record: RequestRecord,
    /// Segments of the intents written (one per attempt that reached a provider, one per
    /// extension of a stream's reservation).
    intents: Vec<SegmentId>,
    /// The last intent written, which an extension writes again with more reserved.
    last_intent: Option<Intent>,
    ended: bool,
    request_body: Option<Bytes>,
    response_body: Vec<u8>,
    truncated: bool,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    let mut end = value.len().min(HEADER_VALUE_MAX);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Some(value[..end].to_owned())
}

impl Trail {
    /// A request's trail; `time_ms` is when it started (the time its id carries).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        charges: ChargeSender,
        clock: Arc<dyn Clock>,
        log: Option<&Arc<RequestLog>>,
        node: u64,
        (request_id, time_ms): (&str, u64),
        dialect: &str,
        headers: &HeaderMap,
        client_ip: Option<std::net::IpAddr>,
    ) -> Arc<Trail> {
        let record = RequestRecord {
            request_id: RequestId(request_id.to_owned()),
            time_ms,
            node,
            dialect: dialect.to_owned(),
            session_id: header(headers, SESSION_HEADER),
            user_agent: header(headers, "user-agent"),
            client_ip: client_ip.map(|ip| ip.to_string()),
            ..RequestRecord::default()
        };
        Arc::new(Trail {
            charges,
            clock,
            log: log.cloned(),
            capture: AtomicBool::new(false),
            draft: Mutex::new(Draft {
                record,
                intents: Vec::new(),
                last_intent: None,
                ended: false,
                request_body: None,
                response_body: Vec::new(),
                truncated: false,
            }),
        })
    }

    fn draft(&self) -> MutexGuard<'_, Draft> {
        self.draft.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller's key, once authenticated, and what it asks the log to keep.
    pub fn caller(&self, key: &VirtualKey, log_content: Option<LogContent>) {
        if let Some(log) = &self.log {
            let full = log.content_for(log_content) == LogContent::Full;
            self.capture.store(full, Ordering::Relaxed);
        }
        let mut d = self.draft();
        d.record.virtual_key_id = Some(key.id.clone());
        d.record.virtual_key_name = Some(key.name.clone());
        d.record.team_id = key.team_id.clone();
        d.record.customer_id = key.customer_id.clone();
    }

    /// What the body asks for; the body itself is kept when content is captured.
    pub fn asks(&self, model: &str, stream: bool, body: &Bytes) {
        let mut d = self.draft();
        d.record.model = Some(model.chars().take(HEADER_VALUE_MAX).collect());
        d.record.stream = stream;
        if self.captures() {
            d.request_body = Some(body.clone());
        }
    }

    /// What the guardrails found one way (it replaces what that way found before: a
    /// stream reports as it goes). At most `MAX_VERDICTS` entries are kept.
    pub fn guardrails(&self, verdict: &Verdict, direction: Direction) {
        if verdict.is_empty() {
            return;
        }
        let tag = format!(":{}:", direction.name());
        let mut d = self.draft();
        let kept = &mut d.record.guardrails;
        kept.retain(|entry| !entry.contains(&tag));
        let room = MAX_VERDICTS.saturating_sub(kept.len());
        kept.extend(verdict.hits.iter().take(room).map(Hit::record));
    }

    /// Whether the answer's bytes are wanted (`answer`).
    pub fn captures(&self) -> bool {
        self.capture.load(Ordering::Relaxed)
    }

    /// Bytes of the answer as the client gets them, kept when content is captured.
    pub fn answer(&self, bytes: &[u8]) {
        if !self.captures() {
            return;
        }
        let mut d = self.draft();
        let room = CAPTURE_MAX_BYTES.saturating_sub(d.response_body.len());
        if bytes.len() > room {
            d.truncated = true;
        }
        d.response_body
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// An attempt at a provider is about to be made: counted, and its intent written
    /// (what the request would be charged were this node to stop before the answer).
    pub fn attempt(
        &self,
        provider: &str,
        key_id: &KeyId,
        provider_config_id: &ProviderConfigId,
        model: &str,
        reserved: Usd,
    ) {
        let intent = {
            let mut d = self.draft();
            d.record.attempts += 1;
            d.record.provider = Some(provider.to_owned());
            d.record.provider_config_id = Some(provider_config_id.clone());
            Intent {
                record: d.record.clone(),
                key_id: key_id.clone(),
                provider_config_id: provider_config_id.clone(),
                model: model.to_owned(),
                reserved,
            }
        };
        let segment = self.charges.intent(&intent);
        let mut d = self.draft();
        d.intents.extend(segment);
        d.last_intent = Some(intent);
    }

    /// A metered stream's reservation grew to `reserved`: its intent is written again
    /// with it (the last intent of a request is the one a restart charges), so a node
    /// stopped mid-stream charges what the stream may have used, not its first hold.
    pub fn extended(&self, reserved: Usd) {
        let intent = {
            let d = self.draft();
            match &d.last_intent {
                Some(last) if !d.ended && last.reserved < reserved => Intent {
                    reserved,
                    ..last.clone()
                },
                _ => return,
            }
        };
        let segment = self.charges.intent(&intent);
        let mut d = self.draft();
        d.intents.extend(segment);
        d.last_intent = Some(intent);
    }

    /// The provider's answer began.
    pub fn first_byte(&self) {
        let now = self.clock.now_ms();
        let mut d = self.draft();
        if d.record.ttft_ms.is_none() {
            d.record.ttft_ms = Some(now.saturating_sub(d.record.time_ms));
        }
    }

    /// Ends the request with its charge: the record (with the charge's usage and cost)
    /// goes into the outbox with it.
    pub fn charged(&self, pending: PendingCharge, status: u16) {
        let Some((mut record, closes)) = self.end() else {
            // Ended before (cannot happen: one billing charges once); still charged.
            self.charges.send(pending);
            return;
        };
        record.status = status;
        record.usage = pending.charge.usage;
        record.cost = pending.charge.cost;
        self.charges.send_done(pending, record, closes);
    }

    /// Ends a request that owes nothing, with the error the client got.
    pub fn refused(&self, status: u16, error_type: &str) {
        let Some((mut record, closes)) = self.end() else {
            return;
        };
        record.status = status;
        record.error_type = Some(error_type.to_owned());
        self.charges.record_free(record, closes);
    }

    /// The record and the intents to close, the first time only.
    fn end(&self) -> Option<(RequestRecord, Vec<SegmentId>)> {
        let now = self.clock.now_ms();
        let mut d = self.draft();
        if d.ended {
            return None;
        }
        d.ended = true;
        d.record.latency_ms = now.saturating_sub(d.record.time_ms);
        let intents = std::mem::take(&mut d.intents);
        if let Some(log) = self.log.as_ref().filter(|_| self.captures()) {
            let request = d.request_body.take().unwrap_or_default();
            let truncated = d.truncated || request.len() > CAPTURE_MAX_BYTES;
            let content = CapturedContent {
                request_body: request[..request.len().min(CAPTURE_MAX_BYTES)].to_vec(),
                response_body: std::mem::take(&mut d.response_body),
                truncated,
            };
            log.keep(d.record.request_id.as_str(), content);
        }
        Some((d.record.clone(), intents))
    }
}
