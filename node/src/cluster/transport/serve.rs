//! The server half of `QuicTransport`: accepts peer connections (the TLS handshake
//! refuses any peer without a certificate from the cluster CA), and answers each stream's
//! one request through the `PeerHandler`. A request that cannot be served gets a typed
//! `PeerError` answer; nothing a peer sends can crash the loop.

use super::call::{PeerHandler, PeerRequest, PeerResponse, RequestContext};
use super::frame::{read_frame, write_frame, FrameError};
use quinn::{Endpoint, Incoming, RecvStream, SendStream};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tollgate_proto::peer::{Envelope, PeerError, ProtocolRange, KIND_ERROR};
use tollgate_raft::codec;

#[derive(Debug, Clone, Copy)]
pub(super) struct ServeLimits {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    pub handler_timeout: Duration,
    pub protocol: ProtocolRange,
}

/// Accepts connections until the endpoint closes. Connection tasks live in a `JoinSet`,
/// so aborting this task ends them (and their stream tasks) too.
pub(super) async fn accept_loop<H: PeerHandler>(
    endpoint: Endpoint,
    handler: Arc<H>,
    limits: ServeLimits,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if connections.len() >= limits.max_connections {
                    tracing::warn!(peer = %incoming.remote_address(), "peer connection refused: too many connections");
                    incoming.refuse();
                    continue;
                }
                connections.spawn(serve_connection(incoming, handler.clone(), limits));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection<H: PeerHandler>(
    incoming: Incoming,
    handler: Arc<H>,
    limits: ServeLimits,
) {
    let remote = incoming.remote_address();
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            refused_handshake(remote, &error.to_string());
            return;
        }
    };
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = connection.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    streams.spawn(serve_stream(send, recv, remote, handler.clone(), limits));
                }
                Err(error) => {
                    tracing::debug!(peer = %remote, error = %error, "peer connection ended");
                    break;
                }
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

/// Serves one stream: read the request, answer it, unless the caller gives up first.
async fn serve_stream<H: PeerHandler>(
    mut send: SendStream,
    mut recv: RecvStream,
    from: SocketAddr,
    handler: Arc<H>,
    limits: ServeLimits,
) {
    let stopped = send.stopped();
    let answer = tokio::select! {
        answer = answer(&mut recv, from, &*handler, limits) => answer,
        _ = stopped => {
            tracing::debug!(peer = %from, "peer call abandoned before its answer");
            return;
        }
    };
    let Some((protocol_version, result)) = answer else {
        return;
    };
    let Some(payload) = encode_answer(protocol_version, result, limits.max_frame_bytes) else {
        return;
    };
    // The caller may have stopped reading without closing; the write is bounded too.
    let write = async {
        write_frame(&mut send, &payload, limits.max_frame_bytes).await?;
        send.finish().map_err(|e| FrameError::Io(e.into()))
    };
    match tokio::time::timeout(limits.handler_timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(peer = %from, error = %error, "peer answer not sent"),
        Err(_) => tracing::debug!(peer = %from, "peer answer not sent: caller not reading"),
    }
}

/// The answer to one request and the protocol version it is written in; `None` when the
/// stream broke before a whole request arrived (there is no one to answer).
async fn answer<H: PeerHandler>(
    recv: &mut RecvStream,
    from: SocketAddr,
    handler: &H,
    limits: ServeLimits,
) -> Option<(u16, Result<PeerResponse, PeerError>)> {
    let speaks = limits.protocol;
    let refuse = |error: PeerError| Some((speaks.max, Err(error)));
    let bytes = match read_frame(recv, limits.max_frame_bytes).await {
        Ok(bytes) => bytes,
        Err(FrameError::TooLarge { len, max }) => {
            tracing::warn!(peer = %from, len, max, "peer request frame too large");
            return refuse(PeerError::FrameTooLarge { len, max });
        }
        Err(error) => {
            tracing::debug!(peer = %from, error = %error, "peer request unreadable");
            return None;
        }
    };
    let envelope = match codec::decode::<Envelope>(&bytes) {
        Ok(envelope) => envelope,
        Err(error) => {
            tracing::warn!(peer = %from, error = %error, "peer request malformed");
            return refuse(PeerError::Malformed {
                reason: error.to_string(),
            });
        }
    };
    if !speaks.speaks(envelope.protocol_version) {
        // A newer peer learns from this answer to write in our version; not a warning.
        tracing::debug!(peer = %from, version = envelope.protocol_version, "peer protocol version unsupported");
        return refuse(PeerError::UnsupportedVersion {
            received: envelope.protocol_version,
            min_supported: speaks.min,
            max_supported: speaks.max,
        });
    }
    if Envelope::is_reserved_kind(envelope.kind) {
        return refuse(PeerError::UnknownKind {
            kind: envelope.kind,
        });
    }
    let context = RequestContext {
        from,
        protocol_version: envelope.protocol_version,
    };
    let request = PeerRequest {
        kind: envelope.kind,
        body: envelope.body,
    };
    let result = match tokio::time::timeout(
        limits.handler_timeout,
        handler.handle(context, request),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(peer = %from, "peer request handler timed out");
            Err(PeerError::HandlerTimeout {
                after_ms: u64::try_from(limits.handler_timeout.as_millis()).unwrap_or(u64::MAX),
            })
        }
    };
    Some((envelope.protocol_version, result))
}

/// The answer's frame payload. A response too large to send becomes a `FrameTooLarge`
/// error answer, so the caller learns why instead of waiting out its deadline.
fn encode_answer(
    protocol_version: u16,
    result: Result<PeerResponse, PeerError>,
    max_frame_bytes: usize,
) -> Option<Vec<u8>> {
    let error_envelope = |error: &PeerError| -> Option<Envelope> {
        match codec::encode(error) {
            Ok(body) => Some(Envelope {
                protocol_version,
                kind: KIND_ERROR,
                body,
            }),
            Err(e) => {
                tracing::error!(error = %e, "peer error answer not encodable");
                None
            }
        }
    };
    let envelope = match result {
        Ok(response) => Envelope {
            protocol_version,
            kind: response.kind,
            body: response.body,
        },
        Err(error) => error_envelope(&error)?,
    };
    let payload = match codec::encode(&envelope) {
        Ok(payload) => payload,
        Err(e) => {
            tracing::error!(error = %e, "peer answer not encodable");
            return None;
        }
    };
    if payload.len() <= max_frame_bytes {
        return Some(payload);
    }
    tracing::error!(
        len = payload.len(),
        max = max_frame_bytes,
        "peer answer too large"
    );
    let too_large = PeerError::FrameTooLarge {
        len: payload.len() as u64,
        max: max_frame_bytes as u64,
    };
    codec::encode(&error_envelope(&too_large)?).ok()
}

/// A refused handshake is logged at WARN at most once per `REFUSAL_LOG_SECS`, with how
/// many there were since: a node given another CA's certificate is told, while garbage
/// datagrams (from any, spoofable, source) cannot flood the log.
fn refused_handshake(remote: std::net::SocketAddr, error: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LAST_LOG_S: AtomicU64 = AtomicU64::new(0);
    const REFUSAL_LOG_SECS: u64 = 10;
    let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_LOG_S.load(Ordering::Relaxed);
    let due = now_s >= last + REFUSAL_LOG_SECS
        && LAST_LOG_S
            .compare_exchange(last, now_s, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if due {
        let hint = super::call::tls_hint(error);
        tracing::warn!(peer = %remote, error = %error, refused_so_far = refused, "peer handshake refused{hint}");
    } else {
        tracing::debug!(peer = %remote, error = %error, "peer handshake refused");
    }
}
