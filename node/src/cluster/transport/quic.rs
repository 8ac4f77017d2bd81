//! `QuicTransport`: one quinn endpoint per node, both server and client, with mutual TLS
//! against the cluster CA. One bidirectional stream per call; one connection per peer,
//! reused by every call to it and replaced when it fails.

use super::call::{PeerHandler, PeerRequest, PeerResponse, PeerTransport, TransportError};
use super::frame::{read_frame, write_frame, FrameError, MAX_FRAME_BYTES};
use super::serve::{accept_loop, ServeLimits};
use super::tls::NodeIdentity;
use quinn::{Connection, Endpoint, VarInt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tollgate_proto::peer::{Envelope, PeerError, ProtocolRange, KIND_ERROR};
use tollgate_raft::codec;

/// Calls in flight on one connection, each direction. A peer's Raft traffic is a few
/// streams at a time (heartbeats, an append, perhaps a snapshot, forwarded writes);
/// 128 leaves room for bursts while bounding the tasks and frame buffers one peer can
/// make this node hold. A caller past the limit waits (within its deadline).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Peer connections accepted at once. A cluster has a handful of nodes; the margin covers
/// restarts (old and new connections of a peer overlap until the old one times out).
pub const MAX_CONNECTIONS: usize = 256;

/// Longest a handler may take over one request before the caller gets
/// `PeerError::HandlerTimeout`. Callers use shorter deadlines; this bounds the work a
/// caller that vanished without closing its stream can leave behind.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// Silence after which a connection is considered dead. Keep-alives make silence mean a
/// peer that is gone, so this is how long a crashed peer's connection lingers at most.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Ping interval on idle connections: well under `IDLE_TIMEOUT`, so a lost ping or two
/// does not end a healthy connection.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);

/// Application close code sent to peers when this node shuts its endpoint down.
const CLOSE_SHUTDOWN: u32 = 0;

/// Settings of a `QuicTransport`; `QuicConfig::new` fills in the documented defaults.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// The UDP address peers reach this node at (port 0 picks a free one).
    pub bind_addr: SocketAddr,
    pub max_frame_bytes: usize,
    pub max_streams_per_connection: u32,
    pub max_connections: usize,
    pub handler_timeout: Duration,
    pub idle_timeout: Duration,
    pub keep_alive_interval: Duration,
    /// The protocol versions this node speaks (`ProtocolRange::BUILD` unless capped).
    pub protocol: ProtocolRange,
}

impl QuicConfig {
    pub fn new(bind_addr: SocketAddr) -> Self {
        QuicConfig {
            bind_addr,
            max_frame_bytes: MAX_FRAME_BYTES,
            max_streams_per_connection: MAX_STREAMS_PER_CONNECTION,
            max_connections: MAX_CONNECTIONS,
            handler_timeout: HANDLER_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            keep_alive_interval: KEEP_ALIVE_INTERVAL,
            protocol: ProtocolRange::BUILD,
        }
    }

    fn transport(&self) -> Result<quinn::TransportConfig, TransportError> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams_per_connection))
            // Every call is a bidirectional stream; nothing uses the others (yet).
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .datagram_receive_buffer_size(None)
            .keep_alive_interval(Some(self.keep_alive_interval))
            .max_idle_timeout(Some(self.idle_timeout.try_into().map_err(|_| {
                TransportError::InvalidConfig("idle timeout out of QUIC's range")
            })?));
        Ok(transport)
    }
}

/// The connection to one peer, shared by its callers; the async lock makes concurrent
/// callers wait for one connection attempt instead of each making their own.
type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// A node's peer endpoint. Dropping it stops serving; `shutdown` also waits until the
/// peers have been told and the port is released.
pub struct QuicTransport {
    endpoint: Endpoint,
    max_frame_bytes: usize,
    connections: Mutex<HashMap<SocketAddr, Slot>>,
    server: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
    /// Peers that answered `UnsupportedVersion`: the newest version each speaks, and
    /// when that was learned (forgotten after `PEER_VERSION_TTL`: the peer may upgrade).
    peer_versions: Mutex<HashMap<SocketAddr, (u16, std::time::Instant)>>,
    protocol: ProtocolRange,
}

/// How long a peer's older protocol version is remembered before the newest is tried
/// again.
const PEER_VERSION_TTL: Duration = Duration::from_secs(10);

impl QuicTransport {
    /// Binds the endpoint and starts serving requests with `handler`. Must run inside a
    /// tokio runtime.
    pub fn bind<H: PeerHandler>(
        config: QuicConfig,
        identity: &NodeIdentity,
        handler: Arc<H>,
    ) -> Result<Self, TransportError> {
        let transport = Arc::new(config.transport()?);
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(
            identity.server_crypto().map_err(TransportError::Tls)?,
        ));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(
            identity.client_crypto().map_err(TransportError::Tls)?,
        ));
        client.transport_config(transport);
        let mut endpoint_config =
            quinn::EndpointConfig::new(Arc::new(identity.stateless_reset_key()));
        let cid_key = identity.connection_id_key();
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let bind_error = |source| TransportError::Bind {
            addr: config.bind_addr,
            source,
        };
        let socket = std::net::UdpSocket::bind(config.bind_addr).map_err(bind_error)?;
        let mut endpoint = Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_error)?;
        endpoint.set_default_client_config(client);
        let limits = ServeLimits {
            max_frame_bytes: config.max_frame_bytes,
            max_connections: config.max_connections,
            handler_timeout: config.handler_timeout,
            protocol: config.protocol,
        };
        let server = tokio::spawn(accept_loop(endpoint.clone(), handler, limits));
        Ok(QuicTransport {
            endpoint,
            max_frame_bytes: config.max_frame_bytes,
            protocol: config.protocol,
            connections: Mutex::new(HashMap::new()),
            server: Mutex::new(Some(server)),
            closed: AtomicBool::new(false),
            peer_versions: Mutex::new(HashMap::new()),
        })
    }

    /// The address the endpoint is bound to (with the real port when bound to port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Stops serving, closes every connection (peers are told), and waits until the
    /// endpoint is idle. Calls afterwards fail with `TransportError::Closed`.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let server = self.server.lock().ok().and_then(|mut s| s.take());
        if let Some(server) = server {
            server.abort();
            // The accept loop and the tasks it owns are gone once this returns.
            let _ = server.await;
        }
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
        if let Ok(mut connections) = self.connections.lock() {
            connections.clear();
        }
        self.endpoint.wait_idle().await;
    }

    /// The lower-level call: sends `request` as it is (whatever its protocol version) and
    /// returns the peer's answer envelope without interpreting it.
    pub async fn call_envelope(
        &self,
        peer: SocketAddr,
        request: &Envelope,
        deadline: Duration,
    ) -> Result<Envelope, TransportError> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(TransportError::Closed);
        }
        let payload = codec::encode(request).map_err(TransportError::Encode)?;
        if payload.len() > self.max_frame_bytes {
            return Err(TransportError::FrameTooLarge {
                len: payload.len() as u64,
                max: self.max_frame_bytes as u64,
            });
        }
        match tokio::time::timeout(deadline, self.call_with_reconnect(peer, &payload)).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                peer,
                deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            }),
        }
    }

    /// One exchange on the peer's connection; when a reused connection turns out to be
    /// dead (the peer restarted, say), one more on a fresh connection.
    async fn call_with_reconnect(
        &self,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Result<Envelope, TransportError> {
        let (connection, reused) = self.connection(peer).await?;
        match self.exchange(peer, &connection, payload).await {
            Err(error) if reused && connection.close_reason().is_some() => {
                tracing::debug!(peer = %peer, error = %error, "peer connection was stale, reconnecting");
                let (connection, _) = self.connection(peer).await?;
                self.exchange(peer, &connection, payload).await
            }
            other => other,
        }
    }

    /// The open connection to `peer`, and whether it was reused rather than made now.
    async fn connection(&self, peer: SocketAddr) -> Result<(Connection, bool), TransportError> {
        let slot = {
            let mut connections = self
                .connections
                .lock()
                .map_err(|_| TransportError::Closed)?;
            connections.entry(peer).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(connection) = guard.as_ref() {
            if connection.close_reason().is_none() {
                return Ok((connection.clone(), true));
            }
        }
        *guard = None;
        let connect_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            TransportError::Connect { peer, source }
        };
        // Peers are dialled by address, so the address is the name their certificate
        // must carry (`tollgate cert node --san`).
        let server_name = peer.ip().to_string();
        let connecting = self
            .endpoint
            .connect(peer, &server_name)
            .map_err(|e| connect_error(e.into()))?;
        let connection = connecting.await.map_err(|e| connect_error(e.into()))?;
        *guard = Some(connection.clone());
        Ok((connection, false))
    }

    /// One request and its answer on a new stream of `connection`.
    async fn exchange(
        &self,
        peer: SocketAddr,
        connection: &Connection,
        payload: &[u8],
    ) -> Result<Envelope, TransportError> {
        let stream_error = |source: Box<dyn std::error::Error + Send + Sync>| {
            TransportError::Stream { peer, source }
        };
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| stream_error(e.into()))?;
        let written = match write_frame(&mut send, payload, self.max_frame_bytes).await {
            Ok(()) => send.finish().map_err(|e| stream_error(e.into())),
            Err(e) => Err(stream_error(e.into())),
        };
        // Read even when writing failed: a peer that refuses a request (too large, say)
        // answers with a typed error and stops reading, which fails the write.
        let reply = read_frame(&mut recv, self.max_frame_bytes).await;
        let bytes = match (reply, written) {
            (Ok(bytes), _) => bytes,
            (Err(_), Err(write_error)) => return Err(write_error),
            (Err(FrameError::TooLarge { len, max }), Ok(())) => {
                return Err(TransportError::FrameTooLarge { len, max })
            }
            (Err(e), Ok(())) => return Err(stream_error(e.into())),
        };
        codec::decode::<Envelope>(&bytes).map_err(|e| TransportError::BadReply {
            peer,
            reason: e.to_string(),
        })
    }
}

impl PeerTransport for QuicTransport {
    async fn call(
        &self,
        peer: SocketAddr,
        request: PeerRequest,
        deadline: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let started = tokio::time::Instant::now();
        let mut envelope = Envelope {
            protocol_version: self.version_for(peer),
            kind: request.kind,
            body: request.body,
        };
        let reply = self.call_envelope(peer, &envelope, deadline).await?;
        match interpret_reply(peer, reply, self.protocol) {
            // An older peer: write to it in the newest version both speak, from now on.
            Err(TransportError::Remote {
                error: PeerError::UnsupportedVersion { max_supported, .. },
                ..
            }) if max_supported < envelope.protocol_version
                && self.protocol.speaks(max_supported) =>
            {
                tracing::debug!(%peer, version = max_supported, "peer speaks an older protocol");
                if let Ok(mut versions) = self.peer_versions.lock() {
                    versions.insert(peer, (max_supported, std::time::Instant::now()));
                }
                envelope.protocol_version = max_supported;
                let left = deadline.saturating_sub(started.elapsed());
                let reply = self.call_envelope(peer, &envelope, left).await?;
                interpret_reply(peer, reply, self.protocol)
            }
            other => other,
        }
    }
}

impl QuicTransport {
    /// The version to write to `peer` in: ours, unless it told us it speaks less.
    fn version_for(&self, peer: SocketAddr) -> u16 {
        let ours = self.protocol.max;
        let Ok(mut versions) = self.peer_versions.lock() else {
            return ours;
        };
        match versions.get(&peer) {
            Some((v, at)) if at.elapsed() < PEER_VERSION_TTL => (*v).min(ours),
            Some(_) => {
                versions.remove(&peer);
                ours
            }
            None => ours,
        }
    }
}

/// An answer envelope as the caller sees it: a response, or the peer's typed error. An
/// answer in a version outside `speaks` is refused.
pub fn interpret_reply(
    peer: SocketAddr,
    reply: Envelope,
    speaks: ProtocolRange,
) -> Result<PeerResponse, TransportError> {
    if reply.kind == KIND_ERROR {
        let error =
            codec::decode::<PeerError>(&reply.body).map_err(|e| TransportError::BadReply {
                peer,
                reason: format!("undecodable error answer: {e}"),
            })?;
        return Err(TransportError::Remote { peer, error });
    }
    if !speaks.speaks(reply.protocol_version) {
        return Err(TransportError::BadReply {
            peer,
            reason: format!(
                "answer in unsupported protocol version {}",
                reply.protocol_version
            ),
        });
    }
    Ok(PeerResponse {
        kind: reply.kind,
        body: reply.body,
    })
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        if let Ok(mut server) = self.server.lock() {
            if let Some(server) = server.take() {
                server.abort();
            }
        }
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
    }
}
