//! Reads what the gateway needs from a request body (model, stream, max_tokens) in one
//! borrowed pass, validates it, and swaps the model in place so everything else is
//! relayed byte for byte.

use crate::http::error::{ApiError, Dialect};
use axum::http::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A parsed inference request.
pub struct Inbound {
    pub dialect: Dialect,
    pub head: RequestHead,
    pub body: Bytes,
    pub headers: HeaderMap,
    pub request_id: String,
    pub seq: u64,
    /// The guardrails that check the answer, if any does.
    pub guard: Option<crate::gateway::guard::policy::Plan>,
}

/// What the gateway reads from an inference request.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub model: String,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// OpenAI only: the client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// OpenAI only: completions asked for (`n`); each may use `max_tokens`.
    pub choices: u64,
    /// Anthropic extended thinking's `budget_tokens`, when thinking is enabled: it must
    /// stay below `max_tokens`.
    pub thinking_budget: Option<u64>,
    /// Byte range of the model's JSON string in the body.
    model_span: (usize, usize),
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    n: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    thinking: Option<&'a RawValue>,
}

/// Anthropic's `thinking`, read leniently: the provider validates it.
#[derive(Deserialize)]
struct Thinking {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    budget_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The smallest thinking budget Anthropic accepts: a cap lowered for a thinking request
/// keeps at least this much thinking and one token of answer.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// Most completions one OpenAI request may ask for (`n`); each is reserved for.
const MAX_CHOICES: u64 = 16;

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::InvalidField {
        field: field.to_owned(),
        message: format!("{field}: {message}"),
    }
}

/// The deepest nesting of arrays and objects a body may have: what serde_json allows when
/// it parses a whole value (127; the translated paths), so the relayed paths accept no
/// more.
pub const MAX_DEPTH: usize = 127;

/// Where `body` first nests deeper than `MAX_DEPTH`, if it does. One pass that jumps over
/// strings (most of a Claude Code body) with `memchr`; brackets inside strings do not
/// count. Invalid JSON is left to the parser.
pub fn too_deep(body: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut at = 0;
    while at < body.len() {
        match body[at] {
            b'"' => {
                // The closing quote: the next one not escaped.
                let mut from = at + 1;
                loop {
                    let rest = body.get(from..)?;
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(i) if body[from + i] == b'\\' => from += i + 2,
                        Some(i) => {
                            at = from + i;
                            break;
                        }
                        None => return None,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(at);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    None
}

/// Parses and validates the head of a Messages (`Dialect::Anthropic`) or chat
/// completions (`Dialect::OpenAi`) request. `require_max_tokens` is the Messages rule.
pub fn parse(body: &[u8], dialect: Dialect, count_tokens: bool) -> Result<RequestHead, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "request body is empty; expected a JSON object".into(),
        ));
    }
    // serde accepts a JSON array for a struct; the API does not.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::BadRequest("request body must be a JSON object".into()),
                Err(e) => ApiError::BadRequest(format!("request body is not valid JSON: {e}")),
            },
        );
    }
    if let Some(at) = too_deep(body) {
        return Err(ApiError::BadRequest(format!(
            "request body nests arrays and objects deeper than {MAX_DEPTH} levels (at byte {at})"
        )));
    }
    let raw: RawHead<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::BadRequest(format!("request body must be a JSON object: {e}"))
        } else {
            ApiError::BadRequest(format!("request body is not valid JSON: {e}"))
        }
    })?;
    let model_raw = raw
        .model
        .ok_or_else(|| invalid("model", "field required"))?;
    let model: String =
        serde_json::from_str(model_raw.get()).map_err(|_| invalid("model", "must be a string"))?;
    if model.trim().is_empty() {
        return Err(invalid("model", "must not be empty"));
    }
    let messages = raw
        .messages
        .ok_or_else(|| invalid("messages", "field required"))?
        .get()
        .trim();
    let inner = messages.strip_prefix('[').and_then(|m| m.strip_suffix(']'));
    match inner {
        None => return Err(invalid("messages", "must be an array")),
        Some(items) if items.trim().is_empty() => {
            return Err(invalid("messages", "must contain at least one message"))
        }
        Some(_) => {}
    }
    let read_u64 = |field: &str, value: Option<&RawValue>| -> Result<Option<u64>, ApiError> {
        match value {
            None => Ok(None),
            Some(v) if v.get() == "null" => Ok(None),
            Some(v) => match serde_json::from_str::<u64>(v.get()) {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(invalid(field, "must be a positive integer")),
            },
        }
    };
    // The reservation rests on this bound, so read exactly what the upstream will obey:
    // Anthropic knows only `max_tokens`; OpenAI servers take the larger of the two.
    let max_tokens = match dialect {
        Dialect::OpenAi => {
            let completion = read_u64("max_completion_tokens", raw.max_completion_tokens)?;
            let plain = read_u64("max_tokens", raw.max_tokens)?;
            completion.max(plain)
        }
        _ => read_u64("max_tokens", raw.max_tokens)?,
    };
    let choices = match dialect {
        Dialect::OpenAi => read_u64("n", raw.n)?.unwrap_or(1),
        _ => 1,
    };
    if choices > MAX_CHOICES {
        return Err(invalid(
            "n",
            &format!("at most {MAX_CHOICES} completions per request"),
        ));
    }
    if dialect == Dialect::Anthropic && !count_tokens && max_tokens.is_none() {
        return Err(invalid("max_tokens", "field required"));
    }
    let stream = match raw.stream {
        None => false,
        Some(v) if v.get() == "null" => false,
        Some(v) => serde_json::from_str::<bool>(v.get())
            .map_err(|_| invalid("stream", "must be a boolean"))?,
    };
    let include_usage = match raw.stream_options {
        Some(v) if v.get() != "null" => {
            serde_json::from_str::<StreamOptions>(v.get())
                .map_err(|_| invalid("stream_options", "must be an object"))?
                .include_usage
        }
        _ => false,
    };
    let thinking_budget = match (dialect, raw.thinking) {
        (Dialect::Anthropic, Some(v)) => serde_json::from_str::<Thinking>(v.get())
            .ok()
            .filter(|t| t.kind.as_deref() == Some("enabled"))
            .and_then(|t| t.budget_tokens),
        _ => None,
    };
    let start = model_raw.get().as_ptr() as usize - body.as_ptr() as usize;
    Ok(RequestHead {
        model,
        stream,
        max_tokens,
        include_usage,
        choices,
        thinking_budget,
        model_span: (start, start + model_raw.get().len()),
    })
}

impl Inbound {
    /// This request with its completion cap lowered to `max_tokens` (each completion's,
    /// for OpenAI `n`), because the budget room left affords no more: the provider then
    /// cannot produce more than was reserved. Anthropic's thinking budget is kept below
    /// the cap, as the API requires.
    pub fn capped(&self, max_tokens: u64) -> Result<Inbound, ApiError> {
        let mut value: serde_json::Value = serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))?;
        let Some(fields) = value.as_object_mut() else {
            return Err(ApiError::BadRequest(
                "request body must be a JSON object".into(),
            ));
        };
        match self.dialect {
            Dialect::OpenAi => {
                // Whichever the client sent (the server takes the larger), else the one
                // every OpenAI-compatible server reads.
                let mut set = false;
                for field in ["max_completion_tokens", "max_tokens"] {
                    if fields.get(field).is_some_and(|v| !v.is_null()) {
                        fields.insert(field.to_owned(), max_tokens.into());
                        set = true;
                    }
                }
                if !set {
                    fields.insert("max_tokens".to_owned(), max_tokens.into());
                }
            }
            _ => {
                fields.insert("max_tokens".to_owned(), max_tokens.into());
                if let Some(budget) = self.head.thinking_budget {
                    if budget >= max_tokens {
                        value["thinking"]["budget_tokens"] =
                            max_tokens.saturating_sub(1).max(MIN_THINKING_BUDGET).into();
                    }
                }
            }
        }
        let body = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        Ok(Inbound {
            dialect: self.dialect,
            head: parse(&body, self.dialect, false)?,
            body,
            headers: self.headers.clone(),
            request_id: self.request_id.clone(),
            seq: self.seq,
            guard: self.guard.clone(),
        })
    }
}

impl RequestHead {
    /// The same head over a body whose bytes outside the model's string moved
    /// (`moved` maps an old offset to the new one): no second parse.
    pub fn moved(&mut self, moved: impl Fn(usize) -> usize) {
        self.model_span = (moved(self.model_span.0), moved(self.model_span.1));
    }
}

impl RequestHead {
    /// The fewest output tokens per completion this request can be served with: one,
    /// or for a thinking request the smallest thinking budget and one.
    pub fn min_output(&self) -> u64 {
        match self.thinking_budget {
            Some(_) => MIN_THINKING_BUDGET + 1,
            None => crate::gateway::gate::MIN_ANSWER_TOKENS,
        }
    }

    /// The body with its model replaced by `model`; untouched (no copy) if it is the same.
    pub fn with_model(&self, body: &Bytes, model: &str) -> Bytes {
        if model == self.model {
            return body.clone();
        }
        let quoted = serde_json::to_string(model).unwrap_or_default();
        let (start, end) = self.model_span;
        let mut out = Vec::with_capacity(body.len() + quoted.len());
        out.extend_from_slice(&body[..start]);
        out.extend_from_slice(quoted.as_bytes());
        out.extend_from_slice(&body[end..]);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests;
