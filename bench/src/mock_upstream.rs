//! `tollgate mock-upstream`: a fast fake provider over HTTP speaking the Anthropic
//! Messages API (JSON and SSE), count_tokens and OpenAI chat completions, for demos,
//! tests and benchmarks.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_node::gateway::mock;

struct Mock {
    latency: Duration,
    /// Pause between stream events.
    event_delay: Duration,
    seq: AtomicU64,
}

pub async fn run(addr: SocketAddr, latency_ms: u64, event_delay_us: u64) -> anyhow::Result<()> {
    let state = Arc::new(Mock {
        latency: Duration::from_millis(latency_ms),
        event_delay: Duration::from_micros(event_delay_us),
        seq: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/chat/completions", post(chat))
        .route("/health", axum::routing::get(|| async { "ok" }))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "mock upstream listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router).await?;
    Ok(())
}

fn bad_request(message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The events as an SSE body, `delay` apart.
fn sse(events: Vec<Bytes>, delay: Duration) -> Response {
    let body = if delay.is_zero() {
        axum::body::Body::from_stream(
            futures_util::stream::iter(events).map(Ok::<Bytes, std::io::Error>),
        )
    } else {
        let paced = futures_util::stream::iter(events.into_iter().enumerate()).then(
            move |(i, event)| async move {
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                Ok::<Bytes, std::io::Error>(event)
            },
        );
        axum::body::Body::from_stream(paced)
    };
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// Marker in a request that sets its own pause between stream events: `PACE_US:<n>`
/// microseconds, at most `MAX_PACE_US` (a model's answer paced like a real one, for
/// requests with many streams open at once).
const PACE_MARKER: &[u8] = b"PACE_US:";
const MAX_PACE_US: u64 = 1_000_000;

/// The pause a request asks for with `PACE_US:<n>`, if it does.
fn pace(body: &[u8]) -> Option<Duration> {
    let at = body
        .windows(PACE_MARKER.len())
        .position(|w| w == PACE_MARKER)?;
    let digits = &body[at + PACE_MARKER.len()..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    let us: u64 = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    Some(Duration::from_micros(us.min(MAX_PACE_US)))
}

async fn messages(State(m): State<Arc<Mock>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return bad_request("invalid JSON");
    };
    if !m.latency.is_zero() {
        tokio::time::sleep(m.latency).await;
    }
    let seq = m.seq.fetch_add(1, Ordering::Relaxed);
    let model = req["model"].as_str().unwrap_or("mock");
    let reply = mock::reply_for_anthropic(&req);
    if req["stream"].as_bool().unwrap_or(false) {
        sse(
            mock::anthropic_sse_events(model, &reply, seq),
            pace(&body).unwrap_or(m.event_delay),
        )
    } else {
        json(mock::anthropic_json(model, &reply, seq))
    }
}

async fn count_tokens(body: Bytes) -> Response {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(req) => json(mock::count_tokens_json(&req)),
        Err(_) => bad_request("invalid JSON"),
    }
}

async fn chat(State(m): State<Arc<Mock>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return bad_request("invalid JSON");
    };
    if !m.latency.is_zero() {
        tokio::time::sleep(m.latency).await;
    }
    let seq = m.seq.fetch_add(1, Ordering::Relaxed);
    let model = req["model"].as_str().unwrap_or("mock");
    let reply = mock::reply_for_openai(&req);
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if req["stream"].as_bool().unwrap_or(false) {
        let usage = req["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false);
        sse(
            mock::openai_sse_chunks(model, &reply, seq, created, usage),
            m.event_delay,
        )
    } else {
        json(mock::openai_json(model, &reply, seq, created))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_sets_its_own_pace() {
        assert_eq!(
            pace(b"{\"x\": \"PACE_US:2500 go\"}"),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(pace(b"PACE_US:99999999"), Some(Duration::from_secs(1)));
        assert_eq!(pace(b"PACE_US:x"), None);
        assert_eq!(pace(b"no marker"), None);
    }
}
