//! One attempt at one provider: build the upstream request for the client's dialect and
//! the provider's kind, send it, and turn the answer into the client's response.

use super::adapt::{self, Adapter};
use super::client::UpstreamResponse;
use super::guarded::{self, Guarded};
use super::head::Inbound;
use super::mocked;
use super::relay::event_stream_response;
use super::relay::{self, ByteStream};
use super::send::{
    anthropic_headers, openai_headers, parse_json, read_bounded, send_to, AttemptError,
    MAX_UPSTREAM_BODY_BYTES,
};
use super::usage::{OpenAiUsageJson, UsageJson};
use crate::app::App;
use crate::config::ProviderKind;
use crate::gateway::bedrock::{frames, Bedrock};
use crate::gateway::billing::Billing;
use crate::gateway::routing::Route;
use crate::gateway::translate;
use crate::http::error::{ApiError, Dialect};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use std::time::Duration;
use tollgate_proto::Usage;

/// The header that names the gateway's request id, to the client and to the provider.
pub const REQUEST_ID_HEADER: &str = "x-tollgate-request-id";

pub async fn attempt(
    app: &App,
    inbound: &Inbound,
    route: &Route,
    billing: Billing,
) -> Result<Response, AttemptError> {
    let model = route.upstream_model.as_str();
    let translation_error =
        |e: translate::TranslateError| AttemptError::Fatal(ApiError::BadRequest(e.to_string()));
    let encode = |v: &serde_json::Value| Bytes::from(serde_json::to_vec(v).unwrap_or_default());
    if let Some(bedrock) = route.provider.bedrock.as_ref() {
        return bedrock_attempt(app, inbound, route, billing, bedrock).await;
    }
    // What goes upstream, and how the answer comes back, per (client dialect, provider kind).
    let (body, headers, translation, upstream_dialect) =
        match (inbound.dialect, route.provider.kind) {
            (_, ProviderKind::Mock) => return mocked::answer(app, inbound, route, billing).await,
            (_, ProviderKind::Bedrock) => {
                return Err(AttemptError::Fatal(ApiError::Internal(format!(
                    "provider {} has no Bedrock settings",
                    route.provider.name
                ))))
            }
            (Dialect::Anthropic | Dialect::Admin, ProviderKind::Anthropic) => (
                inbound.head.with_model(&inbound.body, model),
                anthropic_headers(route, &inbound.headers),
                Translation::None,
                Dialect::Anthropic,
            ),
            (Dialect::OpenAi, ProviderKind::Openai) => {
                let wants_usage = inbound.head.stream && !inbound.head.include_usage;
                let body = if wants_usage || inbound.head.max_tokens.is_none() {
                    let mut value = parse_json(&inbound.body)?;
                    value["model"] = serde_json::Value::String(model.to_owned());
                    if wants_usage {
                        // Usage is needed to charge; the relay strips the extra chunk again.
                        value["stream_options"] = serde_json::json!({"include_usage": true});
                    }
                    if inbound.head.max_tokens.is_none() {
                        // The reservation assumed this bound; make the upstream keep to it.
                        value["max_tokens"] =
                            serde_json::json!(app.config.limits.default_max_tokens);
                    }
                    encode(&value)
                } else {
                    inbound.head.with_model(&inbound.body, model)
                };
                (
                    body,
                    openai_headers(route),
                    Translation::None,
                    Dialect::OpenAi,
                )
            }
            (Dialect::Anthropic | Dialect::Admin, ProviderKind::Openai) => {
                let value = parse_json(&inbound.body)?;
                let translated = translate::anthropic_to_openai_request(&value, model)
                    .map_err(translation_error)?;
                (
                    encode(&translated),
                    openai_headers(route),
                    Translation::OpenAiToAnthropic,
                    Dialect::OpenAi,
                )
            }
            (Dialect::OpenAi, ProviderKind::Anthropic) => {
                let translated = openai_as_anthropic(app, inbound, model)?;
                let headers = anthropic_headers(route, &inbound.headers);
                (
                    encode(&translated),
                    headers,
                    Translation::AnthropicToOpenAi,
                    Dialect::Anthropic,
                )
            }
        };
    let url = route.provider.inference_url.as_ref();
    let request = Outgoing { url, headers, body };
    send_and_finish(
        app,
        inbound,
        route,
        billing,
        request,
        translation,
        upstream_dialect,
    )
    .await
}

/// What goes to the provider.
struct Outgoing<'a> {
    url: Option<&'a hyper::Uri>,
    headers: HeaderMap,
    body: Bytes,
}

/// Sends the request (with the request id, so the provider's logs can be matched with
/// the request log's) and turns the answer into the client's response.
async fn send_and_finish(
    app: &App,
    inbound: &Inbound,
    route: &Route,
    mut billing: Billing,
    mut request: Outgoing<'_>,
    translation: Translation,
    upstream_dialect: Dialect,
) -> Result<Response, AttemptError> {
    if let Ok(id) = HeaderValue::from_str(&inbound.request_id) {
        request.headers.insert(REQUEST_ID_HEADER, id);
    }
    billing.intent(&route.provider.name);
    let resp = send_to(app, route, request.url, request.headers, request.body).await?;
    billing.answered();
    finish(
        app,
        inbound,
        route,
        resp,
        billing,
        translation,
        upstream_dialect,
    )
    .await
}

/// An OpenAI request as an Anthropic Messages body for `model`, with the default
/// `max_tokens` the reservation assumed when it has none.
fn openai_as_anthropic(
    app: &App,
    inbound: &Inbound,
    model: &str,
) -> Result<serde_json::Value, AttemptError> {
    let value = parse_json(&inbound.body)?;
    let mut translated = translate::openai_to_anthropic_request(&value, model)
        .map_err(|e| AttemptError::Fatal(ApiError::BadRequest(e.to_string())))?;
    if translated.get("max_tokens").is_none() {
        translated["max_tokens"] = serde_json::json!(app.config.limits.default_max_tokens);
    }
    Ok(translated)
}

/// An attempt at a Bedrock provider: the request as an Anthropic Messages body
/// (translated from OpenAI's if need be), sent to the model's `invoke` URL, signed.
async fn bedrock_attempt(
    app: &App,
    inbound: &Inbound,
    route: &Route,
    billing: Billing,
    bedrock: &Bedrock,
) -> Result<Response, AttemptError> {
    let (value, translation) = match inbound.dialect {
        Dialect::OpenAi => (
            openai_as_anthropic(app, inbound, &route.upstream_model)?,
            Translation::AnthropicToOpenAi,
        ),
        _ => (parse_json(&inbound.body)?, Translation::None),
    };
    // From the Bedrock front door: the client's own model id (when it names the model
    // routed) and its body's betas, as Bedrock would have had them.
    let hinted = |name: &str| inbound.headers.get(name).and_then(|v| v.to_str().ok());
    let model = match hinted(super::FRONT_DOOR_MODEL) {
        Some(id) if crate::gateway::bedrock::anthropic_name(id) == route.upstream_model => id,
        _ => route.upstream_model.as_str(),
    };
    let mut betas = HeaderMap::new();
    let client = match hinted(super::FRONT_DOOR_BETA) {
        Some(body_betas) => {
            if let Ok(v) = HeaderValue::from_str(body_betas) {
                betas.insert("anthropic-beta", v);
            }
            &betas
        }
        None => &inbound.headers,
    };
    let signed = bedrock
        .request(model, &value, inbound.head.stream, client)
        .map_err(|e| AttemptError::Fatal(ApiError::Internal(e)))?;
    let request = Outgoing {
        url: Some(&signed.url),
        headers: signed.headers,
        body: signed.body,
    };
    send_and_finish(
        app,
        inbound,
        route,
        billing,
        request,
        translation,
        Dialect::Anthropic,
    )
    .await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Translation {
    None,
    OpenAiToAnthropic,
    AnthropicToOpenAi,
}

fn content_type(resp: &UpstreamResponse) -> &str {
    resp.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Turns a successful upstream answer into the client's response, charging its usage.
async fn finish(
    app: &App,
    inbound: &Inbound,
    route: &Route,
    resp: UpstreamResponse,
    billing: Billing,
    translation: Translation,
    upstream_dialect: Dialect,
) -> Result<Response, AttemptError> {
    let model = inbound.head.model.as_str();
    // Bedrock streams AWS event-stream frames, read as the SSE they carry.
    let aws_frames = content_type(&resp).starts_with(frames::CONTENT_TYPE);
    if inbound.head.stream && (content_type(&resp).starts_with("text/event-stream") || aws_frames) {
        // A metered stream counts its streamed text as its model's recent answers did.
        let counting = billing.metered.then_some(billing.counting);
        let adapter: Box<dyn Adapter> = match (translation, counting) {
            (Translation::None, Some(counting)) if upstream_dialect == Dialect::OpenAi => Box::new(
                adapt::OpenAiPassthrough::for_metering(!inbound.head.include_usage, counting),
            ),
            (Translation::None, None) if upstream_dialect == Dialect::OpenAi => {
                Box::new(adapt::OpenAiPassthrough::new(!inbound.head.include_usage))
            }
            (Translation::None, Some(counting)) => {
                Box::new(adapt::AnthropicPassthrough::for_metering(counting))
            }
            (Translation::None, None) => Box::<adapt::AnthropicPassthrough>::default(),
            (Translation::OpenAiToAnthropic, _) => Box::new(
                adapt::OpenAiToAnthropic::new(model, &message_id(&inbound.request_id))
                    .for_metering(counting),
            ),
            (Translation::AnthropicToOpenAi, _) => Box::new(
                adapt::AnthropicToOpenAi::new(
                    model,
                    &completion_id(&inbound.request_id),
                    app.now_ms() / 1000,
                    inbound.head.include_usage,
                )
                .for_metering(counting),
            ),
        };
        let adapter = Guarded::wrap(app, inbound, billing.trail.clone(), adapter);
        let bytes = Box::pin(
            resp.bytes_stream()
                .map(|r| r.map_err(std::io::Error::other)),
        );
        let upstream: ByteStream = match aws_frames {
            true => Box::pin(frames::to_sse(bytes)),
            false => bytes,
        };
        let idle = Duration::from_millis(app.config.limits.stream_idle_timeout_ms);
        return Ok(event_stream_response(relay::relay(
            upstream,
            adapter,
            billing,
            idle,
            app.drain.cut_signal(),
        )));
    }
    let status = resp.status();
    // The provider has done the work: from here a failure is not retried (that would
    // pay twice) but answered 502, and the request is charged its estimate.
    let timeout = Duration::from_millis(app.config.limits.upstream_response_timeout_ms);
    let bytes =
        match tokio::time::timeout(timeout, read_bounded(resp, MAX_UPSTREAM_BODY_BYTES)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                return Err(AttemptError::Fatal(ApiError::UpstreamFailed(format!(
                    "provider {} answer failed: {e}",
                    route.provider.name
                ))))
            }
            Err(_) => {
                return Err(AttemptError::Fatal(ApiError::UpstreamTimeout(format!(
                    "provider {} did not finish its answer within {} s",
                    route.provider.name,
                    timeout.as_secs()
                ))))
            }
        };
    let (body, usage) = match translation {
        Translation::None => {
            let usage = if upstream_dialect == Dialect::OpenAi {
                openai_usage(&bytes)
            } else {
                anthropic_usage(&bytes)
            };
            (Bytes::from(bytes), usage)
        }
        Translation::OpenAiToAnthropic => {
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|_| bad_answer(route))?;
            let out = translate::openai_to_anthropic_response(&value, model)
                .map_err(|_| bad_answer(route))?;
            (
                Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
                openai_usage(&bytes),
            )
        }
        Translation::AnthropicToOpenAi => {
            let value: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|_| bad_answer(route))?;
            let out = translate::anthropic_to_openai_response(&value, model)
                .map_err(|_| bad_answer(route))?;
            (
                Bytes::from(serde_json::to_vec(&out).unwrap_or_default()),
                anthropic_usage(&bytes),
            )
        }
    };
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK);
    Ok(guarded::relay_whole(app, inbound, billing, body, usage, status).await)
}

fn bad_answer(route: &Route) -> AttemptError {
    AttemptError::Fatal(ApiError::UpstreamFailed(format!(
        "provider {} sent an answer that is not valid JSON",
        route.provider.name
    )))
}

#[derive(Deserialize)]
struct AnthropicUsageProbe {
    #[serde(default)]
    usage: Option<UsageJson>,
}

#[derive(Deserialize)]
struct OpenAiUsageProbe {
    #[serde(default)]
    usage: Option<OpenAiUsageJson>,
}

fn anthropic_usage(bytes: &[u8]) -> Usage {
    let mut usage = Usage::default();
    if let Ok(AnthropicUsageProbe { usage: Some(u) }) = serde_json::from_slice(bytes) {
        u.merge_into(&mut usage);
    }
    usage
}

fn openai_usage(bytes: &[u8]) -> Usage {
    match serde_json::from_slice(bytes) {
        Ok(OpenAiUsageProbe { usage: Some(u) }) => u.to_usage(),
        _ => Usage::default(),
    }
}

fn message_id(request_id: &str) -> String {
    format!("msg_{}", request_id.trim_start_matches("req_"))
}

fn completion_id(request_id: &str) -> String {
    format!("chatcmpl-{}", request_id.trim_start_matches("req_"))
}
