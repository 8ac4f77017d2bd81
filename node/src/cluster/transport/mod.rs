//! Node-to-node RPC: the `PeerTransport` seam (client side), the `PeerHandler` seam
//! (server side), and the production implementation over QUIC with mutual TLS.
//!
//! A call is one request and one answer, each a versioned `Envelope` (from
//! `tollgate_proto::peer`) with an opaque body and a kind tag, under a deadline. The Raft
//! network and write forwarding sit on top: they give each RPC a kind, encode its body
//! with `tollgate_raft::codec`, call through `PeerTransport`, and answer through a
//! `PeerHandler`. The simulator can put an in-memory network behind the same two traits.
//!
//! # Layout
//! - `call`: the traits, request and response types, `TransportError`.
//! - `frame`: length-prefixed frames on a stream, `MAX_FRAME_BYTES`.
//! - `tls`: `NodeIdentity` (cluster CA + node certificate) and the mutual-TLS configs.
//! - `quic`: `QuicTransport`, the quinn endpoint: client calls and connection reuse.
//! - `router`: `Router`, the node's one `PeerHandler`: kind → the part that answers it.
//! - `serve`: the accept loop and per-stream request handling of `QuicTransport`.

pub mod call;
pub mod frame;
pub mod quic;
pub mod router;
mod serve;
pub mod tls;

pub use call::{
    BoxError, PeerHandler, PeerRequest, PeerResponse, PeerTransport, RequestContext, TransportError,
};
pub use quic::{QuicConfig, QuicTransport};
pub use router::{Route, RouteFuture, Router};
pub use tls::NodeIdentity;
