//! Streams an upstream answer to the client chunk by chunk, never holding it back, while
//! an adapter taps token usage (and translates between dialects where needed). Whatever
//! ends the stream — its end, an upstream error, or the client going away — the request
//! is charged for the usage seen.
//!
//! Per event, the relay touches no timer and no channel registration: the idle timer is
//! one sleep re-armed only when it fires early, the drain's cut one future for the whole
//! stream.

use super::adapt::Adapter;
use crate::gateway::billing::Billing;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Resolves when a drain cuts the streams (never, once the drain is gone).
type CutSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

struct RelayState {
    upstream: ByteStream,
    adapter: Box<dyn Adapter>,
    billing: Option<Billing>,
    idle: Duration,
    /// Fires at the latest `idle` after the last chunk; re-armed when it fires early.
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    last_chunk: Instant,
    /// Set when a drain times out: the stream ends at its next step.
    cut: CutSignal,
    ended: bool,
}

impl RelayState {
    fn settle(&mut self) {
        if let Some(billing) = self.billing.take() {
            if let Some((bytes, tokens)) = self.adapter.sample() {
                billing.learn_counting(bytes, tokens);
            }
            billing.finish(self.adapter.usage());
        }
    }
}

impl Drop for RelayState {
    /// The client went away mid-stream: charge what was used so far.
    fn drop(&mut self) {
        if self.billing.is_some() {
            tracing::info!("stream ended early; charging the usage seen");
            self.settle();
        }
    }
}

/// `chunk` cut after each event's end (a blank line), so each piece ends an event or
/// holds the start of one; the whole chunk when it ends none.
fn event_pieces(chunk: &Bytes) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\n', &chunk[at..]) {
        let nl = at + i;
        // `\n\n` or `\n\r\n` ends an event.
        let end = match chunk.get(nl + 1..) {
            Some([b'\n', ..]) => Some(nl + 2),
            Some([b'\r', b'\n', ..]) => Some(nl + 3),
            _ => None,
        };
        match end {
            Some(end) => {
                pieces.push(chunk.slice(start..end));
                start = end;
                at = end;
            }
            None => at = nl + 1,
        }
    }
    if start < chunk.len() {
        pieces.push(chunk.slice(start..));
    }
    pieces
}

/// The pieces as one chunk (no copy for one).
fn joined(mut pieces: Vec<Bytes>) -> Bytes {
    if pieces.len() <= 1 {
        return pieces.pop().unwrap_or_default();
    }
    pieces.concat().into()
}

/// The client body relaying `upstream` through `adapter`, charged through `billing`;
/// `cut` (from `Drain::cut_signal`) ends it early, charged for what was used.
pub fn relay(
    upstream: ByteStream,
    adapter: Box<dyn Adapter>,
    billing: Billing,
    idle: Duration,
    cut: tokio::sync::watch::Receiver<bool>,
) -> axum::body::Body {
    let mut cut = cut;
    let cut: CutSignal = Box::pin(async move {
        // A dropped sender (no drain any more) never cuts.
        if cut.wait_for(|cut| *cut).await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    let now = Instant::now();
    let state = RelayState {
        upstream,
        adapter,
        billing: Some(billing),
        idle,
        idle_timer: Box::pin(tokio::time::sleep_until(now + idle)),
        last_chunk: now,
        cut,
        ended: false,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None;
        }
        loop {
            // `None`: the drain timed out and cuts the stream; `Some(Err(()))`: the
            // upstream sent nothing for the idle time.
            let next = tokio::select! {
                biased;
                () = &mut st.cut => None,
                next = st.upstream.next() => Some(Ok(next)),
                () = &mut st.idle_timer => {
                    let due = st.last_chunk + st.idle;
                    if Instant::now() < due {
                        st.idle_timer.as_mut().reset(due);
                        continue;
                    }
                    Some(Err(()))
                }
            };
            if let Some(Ok(Some(Ok(_)))) = &next {
                st.last_chunk = Instant::now();
            }
            match next {
                Some(Ok(Some(Ok(chunk)))) => {
                    // A metered stream is checked event by event: a chunk may hold many
                    // (what arrived together), and the cut comes after the first event
                    // its reservation no longer covers.
                    let metered = st.billing.as_ref().is_some_and(|b| b.metered);
                    let pieces = if metered {
                        event_pieces(&chunk)
                    } else {
                        vec![chunk]
                    };
                    let mut outs: Vec<Bytes> = Vec::with_capacity(pieces.len());
                    for piece in pieces {
                        let piece_out = st.adapter.on_chunk(&piece);
                        if let Some(billing) = &st.billing {
                            billing.answer(&piece_out);
                        }
                        outs.push(piece_out);
                        // A metered stream keeps its reservation ahead of its output, or
                        // ends here, as a length stop, while the reservation still
                        // covers it.
                        let covered = match st.billing.as_mut() {
                            Some(billing) if billing.metered => {
                                billing.keep_ahead(&st.adapter.usage()).await
                            }
                            _ => true,
                        };
                        if !covered {
                            if let Some(tail) = st.adapter.cut() {
                                st.ended = true;
                                if let Some(billing) = &st.billing {
                                    billing.answer(&tail);
                                }
                                st.settle();
                                outs.push(tail);
                                return Some((Ok(joined(outs)), st));
                            }
                        }
                    }
                    let out = joined(outs);
                    if !out.is_empty() {
                        return Some((Ok::<Bytes, std::io::Error>(out), st));
                    }
                }
                end => {
                    match end {
                        Some(Ok(Some(Err(e)))) => {
                            tracing::warn!(error = %e, "upstream stream failed")
                        }
                        Some(Err(_)) => tracing::warn!(
                            idle_ms = st.idle.as_millis() as u64,
                            "upstream stream idle; cut"
                        ),
                        None => tracing::warn!("drain timed out; stream cut"),
                        _ => {}
                    }
                    st.ended = true;
                    let tail = st.adapter.finish();
                    if let Some(billing) = &st.billing {
                        billing.answer(&tail);
                    }
                    st.settle();
                    return (!tail.is_empty()).then_some((Ok(tail), st));
                }
            }
        }
    });
    axum::body::Body::from_stream(stream)
}

/// A streamed answer's response: SSE, not cached, not buffered by proxies.
pub fn event_stream_response(body: axum::body::Body) -> Response {
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tells nginx-style proxies in front of the gateway not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::event_pieces;
    use bytes::Bytes;

    #[test]
    fn chunks_are_cut_after_each_event() {
        let chunk = Bytes::from_static(b"event: a\ndata: 1\n\nevent: b\r\ndata: 2\r\n\r\ndata: 3");
        let pieces = event_pieces(&chunk);
        let pieces: Vec<&[u8]> = pieces.iter().map(|p| &p[..]).collect();
        assert_eq!(
            pieces,
            vec![
                &b"event: a\ndata: 1\n\n"[..],
                &b"event: b\r\ndata: 2\r\n\r\n"[..],
                &b"data: 3"[..]
            ]
        );
        assert_eq!(event_pieces(&Bytes::from_static(b"data: 1\n")).len(), 1);
        assert!(event_pieces(&Bytes::new()).is_empty());
    }
}
