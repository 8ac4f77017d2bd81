//! Sending one request to a provider: its credential and headers (never the client's
//! key), the per-attempt timeouts, and reading error answers within bounds. An
//! `AttemptError` says whether the next provider config may succeed.

use super::client::UpstreamResponse;
use crate::app::App;
use crate::gateway::routing::Route;
use crate::http::error::ApiError;
use axum::http::{header, HeaderMap, HeaderValue};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use std::time::Duration;

/// Largest non-streamed answer read from a provider; real answers are far smaller.
pub const MAX_UPSTREAM_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest upstream error body read to extract its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// `anthropic-version` sent when the client sent none.
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Why an attempt failed, and whether another attempt may succeed.
pub enum AttemptError {
    /// Connect errors, timeouts, 429 and 5xx: try the next provider config.
    Retry(ApiError),
    /// The request itself was refused: relay to the client.
    Fatal(ApiError),
}

/// A JSON request carrying the provider's own credential in `name` (never the client's).
fn provider_headers(route: &Route, name: header::HeaderName) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = &route.provider.credential {
        h.insert(name, value.clone());
    }
    h
}

pub fn anthropic_headers(route: &Route, client: &HeaderMap) -> HeaderMap {
    let mut h = provider_headers(route, header::HeaderName::from_static("x-api-key"));
    let version = client
        .get("anthropic-version")
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION));
    h.insert("anthropic-version", version);
    for beta in client.get_all("anthropic-beta") {
        h.append("anthropic-beta", beta.clone());
    }
    h
}

pub fn openai_headers(route: &Route) -> HeaderMap {
    provider_headers(route, header::AUTHORIZATION)
}

/// A request body as JSON, or the 400 that says why not.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, AttemptError> {
    serde_json::from_slice(body).map_err(|e| {
        AttemptError::Fatal(ApiError::BadRequest(format!(
            "request body is not valid JSON: {e}"
        )))
    })
}

/// Sends the request and classifies a failure before any byte reached the client.
pub async fn send_to(
    app: &App,
    route: &Route,
    url: Option<&hyper::Uri>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<UpstreamResponse, AttemptError> {
    let name = &route.provider.name;
    let timeout = Duration::from_millis(app.config.limits.upstream_response_timeout_ms);
    let Some(url) = url else {
        return Err(AttemptError::Fatal(ApiError::Internal(format!(
            "provider {name} has no URL"
        ))));
    };
    let request = app.http.post(url, headers, body);
    let resp = match tokio::time::timeout(timeout, request).await {
        Err(_) => {
            return Err(AttemptError::Retry(ApiError::UpstreamTimeout(format!(
                "provider {name} did not answer within {} s",
                timeout.as_secs()
            ))))
        }
        Ok(Err(e)) => {
            tracing::warn!(provider = %name, error = %e, "upstream request failed");
            return Err(AttemptError::Retry(ApiError::UpstreamFailed(format!(
                "cannot reach provider {name}"
            ))));
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    let (message, kind) = read_error(resp).await;
    // A provider may echo the credentials it was sent: never relay or log them.
    let mut message = match route.provider.api_key.as_ref() {
        Some(key) => scrub(&message, key.expose()),
        None => message,
    };
    for secret in route.provider.bedrock.iter().flat_map(|b| b.secrets()) {
        message = scrub(&message, secret);
    }
    tracing::warn!(provider = %name, status = status.as_u16(), message = %message, "upstream error");
    Err(match status.as_u16() {
        429 => AttemptError::Retry(ApiError::UpstreamRateLimited(
            format!("provider {name} is rate limiting: {message}"),
            retry_after,
        )),
        401 | 403 => AttemptError::Retry(ApiError::UpstreamFailed(format!(
            "provider {name} refused the gateway's credentials ({}); tell your gateway admin",
            status.as_u16()
        ))),
        s if s >= 500 => AttemptError::Retry(ApiError::UpstreamFailed(format!(
            "provider {name} failed ({s}): {message}"
        ))),
        s => AttemptError::Fatal(ApiError::UpstreamRejected {
            status: s,
            message,
            kind,
        }),
    })
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// An AWS error body (Bedrock): its type is in the `x-amzn-errortype` header.
#[derive(Deserialize)]
struct AwsErrorBody {
    #[serde(alias = "Message")]
    message: String,
}

/// The message and type of an upstream error body in either dialect, or AWS's.
async fn read_error(resp: UpstreamResponse) -> (String, String) {
    let aws_type = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(':').next().unwrap_or(v).to_owned());
    let bytes = read_bounded(resp, MAX_ERROR_BODY_BYTES)
        .await
        .unwrap_or_default();
    if let Ok(b) = serde_json::from_slice::<ErrorBody>(&bytes) {
        let kind = b
            .error
            .kind
            .unwrap_or_else(|| "invalid_request_error".into());
        return (b.error.message, kind);
    }
    if let Ok(b) = serde_json::from_slice::<AwsErrorBody>(&bytes) {
        // Bedrock's exceptions as the Anthropic error types a client acts on.
        let kind = match aws_type.as_deref() {
            Some("AccessDeniedException") => "permission_error",
            Some("ResourceNotFoundException") => "not_found_error",
            Some("ThrottlingException") => "rate_limit_error",
            Some("ServiceUnavailableException") => "overloaded_error",
            _ => "invalid_request_error",
        };
        let message = match aws_type {
            Some(t) => format!("{t}: {}", b.message),
            None => b.message,
        };
        return (message, kind.into());
    }
    (
        String::from_utf8_lossy(&bytes).chars().take(300).collect(),
        "invalid_request_error".into(),
    )
}

pub async fn read_bounded(resp: UpstreamResponse, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let stream = resp.bytes_stream();
    futures_util::pin_mut!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// What replaces a secret in text from a provider.
const REDACTED: &str = "[REDACTED]";
/// A secret's first characters that, found in a provider's text, are taken for (part of)
/// it: echoes are often truncated or masked at the end.
const SECRET_PREFIX_CHARS: usize = 12;

/// `text` with `secret` (and whatever starts like it, up to the end of the token) replaced
/// by `[REDACTED]`; the rest of the wording kept, since clients (Claude Code among them)
/// act on it.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let mut out = text.replace(secret, REDACTED);
    // Long secrets: also their beginning followed by more token characters.
    let chars: Vec<(usize, char)> = secret.char_indices().collect();
    if chars.len() >= 2 * SECRET_PREFIX_CHARS {
        let prefix = &secret[..chars[SECRET_PREFIX_CHARS].0];
        let mut scrubbed = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(prefix) {
            scrubbed.push_str(&rest[..at]);
            scrubbed.push_str(REDACTED);
            let tail = &rest[at + prefix.len()..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.*+/=".contains(c)))
                .unwrap_or(tail.len());
            rest = &tail[end..];
        }
        scrubbed.push_str(rest);
        out = scrubbed;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_and_the_wording_kept() {
        let key = "sk-ant-api03-0123456789abcdefghijklmnop";
        assert_eq!(
            scrub(&format!("invalid x-api-key: {key} (check it)"), key),
            "invalid x-api-key: [REDACTED] (check it)"
        );
        // Truncated or masked echoes, and the Bearer form.
        assert_eq!(
            scrub("key sk-ant-api03-0123456789ab**** was revoked; Bearer sk-ant-api03-0123456789abcdefghij...", key),
            "key [REDACTED] was revoked; Bearer [REDACTED]"
        );
        assert_eq!(scrub("prompt is too long", key), "prompt is too long");
        // Short secrets: only themselves.
        assert_eq!(scrub("a k3y b", "k3y"), "a [REDACTED] b");
        assert_eq!(scrub("text", ""), "text");
    }
}
