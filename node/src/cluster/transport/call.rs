//! The two seams of node-to-node calls: `PeerTransport` (client side) and `PeerHandler`
//! (server side), with their request, answer and error types.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tollgate_proto::peer::PeerError;

/// Errors that are not ours to type (quinn's, rustls's), kept as the source of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A request to a peer: what it is (`kind`, below `peer::FIRST_RESERVED_KIND`) and its
/// encoded body. The transport adds the protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRequest {
    pub kind: u16,
    pub body: Vec<u8>,
}

/// A peer's answer to a `PeerRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerResponse {
    pub kind: u16,
    pub body: Vec<u8>,
}

/// What a handler knows about a request besides its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestContext {
    /// The address the request came from (the caller's endpoint, not necessarily the
    /// address it listens on).
    pub from: SocketAddr,
    /// The protocol version the caller spoke; the answer is read in the same version.
    pub protocol_version: u16,
}

/// The client side: send a request to the peer at `peer` and wait for its answer, for
/// at most `deadline` (connecting included).
///
/// A call may reach the peer more than once when a stale connection is replaced (the
/// first attempt can be lost or delivered); handlers must be idempotent, which Raft RPCs
/// and charge batches (deduplicated by request id) are.
pub trait PeerTransport: Send + Sync + 'static {
    fn call(
        &self,
        peer: SocketAddr,
        request: PeerRequest,
        deadline: Duration,
    ) -> impl Future<Output = Result<PeerResponse, TransportError>> + Send;
}

/// The server side: answers each incoming request. An `Err` reaches the caller as
/// `TransportError::Remote`.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(
        &self,
        context: RequestContext,
        request: PeerRequest,
    ) -> impl Future<Output = Result<PeerResponse, PeerError>> + Send;
}

/// What an operator should check when a peer handshake failed on certificates: nodes
/// whose certificates come from different cluster CAs (or none) cannot talk.
pub fn tls_hint(error: &str) -> &'static str {
    let error = error.to_ascii_lowercase();
    if error.contains("cryptographic handshake") || error.contains("certificate") {
        " (the TLS handshake failed: every node's certificate must come from the same cluster CA, `tollgate cert ca`; check --cert-dir on both nodes)"
    } else {
        ""
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("call to {peer} missed its {deadline_ms} ms deadline")]
    Timeout { peer: SocketAddr, deadline_ms: u64 },
    #[error("cannot connect to {peer}: {source}{}", tls_hint(&source.to_string()))]
    Connect {
        peer: SocketAddr,
        #[source]
        source: BoxError,
    },
    #[error("connection to {peer} failed during the call")]
    Stream {
        peer: SocketAddr,
        #[source]
        source: BoxError,
    },
    #[error("frame of {len} bytes is larger than the {max} bytes allowed")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("{peer} answered with an error")]
    Remote {
        peer: SocketAddr,
        #[source]
        error: PeerError,
    },
    #[error("{peer} sent an unreadable answer: {reason}")]
    BadReply { peer: SocketAddr, reason: String },
    #[error("encoding the request failed")]
    Encode(#[source] tollgate_raft::codec::CodecError),
    #[error("cannot bind the peer endpoint to {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid transport settings: {0}")]
    InvalidConfig(&'static str),
    #[error("invalid TLS setup")]
    Tls(#[source] super::tls::TlsError),
    #[error("the transport is shut down")]
    Closed,
}
