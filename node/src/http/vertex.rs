//! The Vertex AI front door: `POST /vertex/v1/projects/{p}/locations/{l}/publishers/
//! anthropic/models/{model}:rawPredict` and `:streamRawPredict`, what Claude Code sends
//! with `CLAUDE_CODE_USE_VERTEX=1` and `ANTHROPIC_VERTEX_BASE_URL=http://gateway/vertex/v1`.
//! The virtual key comes in `x-tollgate-key` or as a bearer token. The request is served
//! as an Anthropic one (the model named from the path, `claude-sonnet-4-5@20250929` as
//! `claude-sonnet-4-5-20250929`; `anthropic_version` out of the body), governed like any
//! other and routed wherever the key allows. Vertex streams and answers in Anthropic's own
//! format, so only errors change: Google's `{"error": {"code", "message", "status"}}`.

use crate::app::App;
use crate::gateway::proxy::{self, ClientAddr};
use crate::http::error::Refusal;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use std::sync::Arc;

pub async fn predict(
    State(app): State<Arc<App>>,
    Path((_project, _location, target)): Path<(String, String, String)>,
    client: Option<Extension<ClientAddr>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (model, stream) = match target.rsplit_once(':') {
        Some((model, "rawPredict")) => (model, false),
        Some((model, "streamRawPredict")) => (model, true),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no Vertex method {target}: {{model}}:rawPredict or :streamRawPredict"),
            )
        }
    };
    let body = body.map(|b| anthropic_body(b, model, stream));
    let response = proxy::serve_front_door(app, client, headers, body).await;
    vertex_response(response).await
}

/// The Anthropic model name of a Vertex model id (`claude-sonnet-4-5@20250929` →
/// `claude-sonnet-4-5-20250929`).
pub fn anthropic_name(id: &str) -> String {
    id.replacen('@', "-", 1)
}

/// The request as an Anthropic one: `model` and `stream` in, `anthropic_version` out. A
/// body that is not a JSON object is left as it is (the Anthropic path refuses it).
fn anthropic_body(body: Bytes, model: &str, stream: bool) -> Bytes {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(&body) else {
        return body;
    };
    object.insert("model".into(), anthropic_name(model).into());
    object.insert("stream".into(), stream.into());
    object.remove("anthropic_version");
    Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
}

/// Errors in Google's shape; anything else as it is.
async fn vertex_response(response: Response) -> Response {
    if response.status().is_success() {
        return response;
    }
    let refusal = Refusal::read(response).await;
    let body = google_error(refusal.status, &refusal.message);
    refusal.respond(body)
}

fn google_error(status: StatusCode, message: &str) -> serde_json::Value {
    let code = match status.as_u16() {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        402 | 429 => "RESOURCE_EXHAUSTED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        503 | 529 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    serde_json::json!({"error": {"code": status.as_u16(), "message": message, "status": code}})
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        google_error(status, message).to_string(),
    )
        .into_response()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vertex_ids_name_anthropic_models() {
        assert_eq!(
            anthropic_name("claude-sonnet-4-5@20250929"),
            "claude-sonnet-4-5-20250929"
        );
        assert_eq!(anthropic_name("claude-opus-5-5"), "claude-opus-5-5");
        let body = anthropic_body(
            Bytes::from_static(
                br#"{"anthropic_version":"vertex-2023-10-16","max_tokens":5,"messages":[]}"#,
            ),
            "claude-haiku-4-5@20251001",
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"model": "claude-haiku-4-5-20251001", "stream": true, "max_tokens": 5, "messages": []})
        );
    }
}
