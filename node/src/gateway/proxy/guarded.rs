//! Guardrails on the answer: a whole body checked before it goes (redacted, or replaced
//! by the block's error), and `Guarded`, an adapter that checks a stream in the
//! client's dialect after the adapter that made it (usage is still counted by that one,
//! on everything the provider sent).

use super::adapt::Adapter;
use super::head::Inbound;
use crate::app::App;
use crate::gateway::billing::Billing;
use crate::gateway::guard::output::StreamGuard;
use crate::gateway::guard::verdict::Direction;
use crate::gateway::trail::Trail;
use crate::http::error::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use std::sync::Arc;
use tollgate_proto::Usage;

/// The answer's body as the client may have it: redacted, or `Err` with the error that
/// replaces a blocked answer.
pub async fn check_answer(
    app: &App,
    inbound: &Inbound,
    trail: Option<&Arc<Trail>>,
    body: Bytes,
) -> Result<Bytes, ApiError> {
    let Some(plan) = &inbound.guard else {
        return Ok(body);
    };
    let checked = app.guards.check_output(plan, &body).await;
    if let Some(trail) = trail {
        trail.guardrails(&checked.verdict, Direction::Output);
    }
    if checked.verdict.blocks() {
        return Err(ApiError::BadRequest(checked.verdict.block_message()));
    }
    Ok(checked.redacted.map_or(body, Bytes::from))
}

/// A whole answer through the answer's guardrails, charged `usage` either way (the
/// provider did the work) and relayed as JSON with `status`, or the block's error.
pub async fn relay_whole(
    app: &App,
    inbound: &Inbound,
    billing: Billing,
    body: Bytes,
    usage: Usage,
    status: StatusCode,
) -> Response {
    let body = match check_answer(app, inbound, billing.trail.as_ref(), body).await {
        Ok(body) => body,
        Err(blocked) => {
            billing.finish(usage);
            return blocked.into_response_in(inbound.dialect);
        }
    };
    billing.answer(&body);
    billing.finish(usage);
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A stream adapter with the answer's guardrails after it.
pub struct Guarded {
    inner: Box<dyn Adapter>,
    guard: StreamGuard,
    trail: Option<Arc<Trail>>,
    reported: usize,
}

impl Guarded {
    /// `adapter` itself when no guardrail checks the answer.
    pub fn wrap(
        app: &App,
        inbound: &Inbound,
        trail: Option<Arc<Trail>>,
        adapter: Box<dyn Adapter>,
    ) -> Box<dyn Adapter> {
        match &inbound.guard {
            Some(plan) => Box::new(Guarded {
                inner: adapter,
                guard: StreamGuard::new(
                    plan.clone(),
                    Arc::clone(&app.guards.counts),
                    inbound.dialect,
                ),
                trail,
                reported: 0,
            }),
            None => adapter,
        }
    }

    /// Tells the request's record what was found so far (a stream may end by a drop).
    fn report(&mut self) {
        let count: usize = self
            .guard
            .verdict
            .hits
            .iter()
            .map(|h| h.count as usize)
            .sum();
        if count != self.reported {
            self.reported = count;
            if let Some(trail) = &self.trail {
                trail.guardrails(&self.guard.verdict, Direction::Output);
            }
        }
    }
}

impl Adapter for Guarded {
    fn on_chunk(&mut self, chunk: &Bytes) -> Bytes {
        let out = self.inner.on_chunk(chunk);
        let checked = Bytes::from(self.guard.push(&out));
        self.report();
        checked
    }

    fn finish(&mut self) -> Bytes {
        let tail = self.inner.finish();
        let mut out = self.guard.push(&tail);
        out.extend(self.guard.finish());
        self.report();
        Bytes::from(out)
    }

    fn usage(&self) -> Usage {
        self.inner.usage()
    }

    fn sample(&self) -> Option<(u64, u64)> {
        self.inner.sample()
    }

    fn cut(&mut self) -> Option<Bytes> {
        let tail = self.inner.cut()?;
        let mut out = self.guard.push(&tail);
        out.extend(self.guard.finish());
        self.report();
        Some(Bytes::from(out))
    }
}
