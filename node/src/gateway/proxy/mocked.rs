//! The built-in mock provider's answers as a provider's would be served: deterministic
//! replies (`gateway::mock`), optional latency, streamed through the same relay and
//! guardrails, charged the usage they report.

use super::adapt;
use super::guarded::{self, Guarded};
use super::head::Inbound;
use super::relay::{self, event_stream_response, ByteStream};
use super::send::{parse_json, AttemptError};
use crate::app::App;
use crate::gateway::billing::Billing;
use crate::gateway::mock;
use crate::gateway::routing::Route;
use crate::http::error::Dialect;
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::StreamExt;
use std::time::Duration;
use tollgate_proto::Usage;

/// The built-in mock provider: deterministic answers, optional latency.
pub async fn answer(
    app: &App,
    inbound: &Inbound,
    route: &Route,
    mut billing: Billing,
) -> Result<Response, AttemptError> {
    billing.intent(&route.provider.name);
    billing.answered();
    let provider = &route.provider;
    if provider.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(provider.latency_ms)).await;
    }
    let value = parse_json(&inbound.body)?;
    let model = route.upstream_model.as_str();
    let seq = inbound.seq;
    let openai = inbound.dialect == Dialect::OpenAi;
    let reply = if openai {
        mock::reply_for_openai(&value)
    } else {
        mock::reply_for_anthropic(&value)
    };
    let usage = Usage {
        input_tokens: reply.input_tokens,
        output_tokens: reply.output_tokens,
        ..Usage::default()
    };
    if inbound.head.stream {
        let created = app.now_ms() / 1000;
        let events = if openai {
            mock::openai_sse_chunks(model, &reply, seq, created, true)
        } else {
            mock::anthropic_sse_events(model, &reply, seq)
        };
        let delay = Duration::from_millis(provider.stream_delay_ms);
        let upstream: ByteStream = Box::pin(futures_util::stream::iter(events).then(
            move |e| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(e)
            },
        ));
        let idle = Duration::from_millis(app.config.limits.stream_idle_timeout_ms);
        let adapter = Guarded::wrap(
            app,
            inbound,
            billing.trail.clone(),
            Box::new(adapt::Fixed(usage)),
        );
        return Ok(event_stream_response(relay::relay(
            upstream,
            adapter,
            billing,
            idle,
            app.drain.cut_signal(),
        )));
    }
    let body = if openai {
        mock::openai_json(model, &reply, seq, app.now_ms() / 1000)
    } else {
        mock::anthropic_json(model, &reply, seq)
    };
    Ok(guarded::relay_whole(app, inbound, billing, body, usage, StatusCode::OK).await)
}
