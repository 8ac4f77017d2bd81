//! The Bedrock front door: `POST /bedrock/model/{model}/invoke` and
//! `/invoke-with-response-stream`, what Claude Code sends with `CLAUDE_CODE_USE_BEDROCK=1`
//! and `ANTHROPIC_BEDROCK_BASE_URL=http://gateway/bedrock`, and what boto3's
//! `bedrock-runtime` client sends. The virtual key comes in `x-tollgate-key` or as a
//! bearer token (a Bedrock API key's place). The request is served as an Anthropic one
//! (the model named by the id in the path, `anthropic_version` out of the body, its
//! `anthropic_beta` into the header), governed like any other and routed wherever the
//! key allows; a Bedrock upstream gets the body's own betas and the client's model id.
//! Streams go back as AWS event-stream frames, errors as Bedrock's (`{"message"}` and
//! `x-amzn-ErrorType`).

use crate::app::App;
use crate::gateway::bedrock::{self, frames};
use crate::gateway::proxy::{self, ClientAddr, FRONT_DOOR_BETA, FRONT_DOOR_MODEL};
use crate::http::error::Refusal;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;

pub async fn invoke(
    State(app): State<Arc<App>>,
    Path((model, action)): Path<(String, String)>,
    client: Option<Extension<ClientAddr>>,
    mut headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let stream = match action.as_str() {
        "invoke" => false,
        "invoke-with-response-stream" => true,
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "ResourceNotFoundException",
                &format!("no Bedrock operation {action}: invoke or invoke-with-response-stream"),
            )
        }
    };
    let body = body.map(|b| anthropic_body(b, &model, stream, &mut headers));
    let response = proxy::serve_front_door(app, client, headers, body).await;
    bedrock_response(response).await
}

/// The request as an Anthropic one: `model` and `stream` in, `anthropic_version` out,
/// `anthropic_beta` moved to the `anthropic-beta` header; the model id and the body's
/// betas kept aside for a Bedrock upstream. A body that is not a JSON object is left as
/// it is (the Anthropic path refuses it with a 400).
fn anthropic_body(body: Bytes, model: &str, stream: bool, headers: &mut HeaderMap) -> Bytes {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(&body) else {
        return body;
    };
    object.insert("model".into(), bedrock::anthropic_name(model).into());
    object.insert("stream".into(), stream.into());
    object.remove("anthropic_version");
    if let Ok(v) = HeaderValue::from_str(model) {
        headers.insert(FRONT_DOOR_MODEL, v);
    }
    if let Some(serde_json::Value::Array(betas)) = object.remove("anthropic_beta") {
        let betas: Vec<&str> = betas.iter().filter_map(|b| b.as_str()).collect();
        if let Ok(v) = HeaderValue::from_str(&betas.join(",")) {
            headers.insert(FRONT_DOOR_BETA, v);
        }
        // One `anthropic-beta` header: the client's, then the body's it lacks.
        let mut all: Vec<String> = headers
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        for beta in betas {
            if !all.iter().any(|b| b == beta) {
                all.push(beta.to_owned());
            }
        }
        if let Ok(v) = HeaderValue::from_str(&all.join(",")) {
            headers.insert("anthropic-beta", v);
        }
    }
    Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
}

/// The Anthropic answer as Bedrock's: a stream as event-stream frames, an error as
/// `{"message"}` with its exception in `x-amzn-ErrorType`; a JSON answer is the same.
async fn bedrock_response(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if parts.status.is_success() {
        if !content_type.starts_with("text/event-stream") {
            return Response::from_parts(parts, body);
        }
        let events = body
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other));
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(frames::CONTENT_TYPE),
        );
        let framed = frames::from_sse(Box::pin(events));
        return Response::from_parts(parts, axum::body::Body::from_stream(framed));
    }
    let refusal = Refusal::read(Response::from_parts(parts, body)).await;
    let kind = match (refusal.kind.as_deref(), refusal.status.as_u16()) {
        (_, 401) => "UnrecognizedClientException",
        (_, 402) => "ServiceQuotaExceededException",
        (_, 403) => "AccessDeniedException",
        (_, 404) => "ResourceNotFoundException",
        (_, 429) | (Some("rate_limit_error"), _) => "ThrottlingException",
        (Some("overloaded_error"), _) | (_, 503 | 529) => "ServiceUnavailableException",
        (_, 400 | 413) => "ValidationException",
        _ => "InternalServerException",
    };
    let body = serde_json::json!({"message": refusal.message});
    let mut out = refusal.respond(body);
    out.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(kind));
    out
}

fn error(status: StatusCode, kind: &'static str, message: &str) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"message": message}).to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(kind));
    response
}
