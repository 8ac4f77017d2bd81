//! chitchat's gossip carried by the node's authenticated QUIC transport instead of plain
//! UDP: a gossip message is a one-way `KIND_GOSSIP` request to the peer's QUIC address,
//! so only a holder of a certificate from the cluster CA can reach chitchat at all.
//!
//! The body is the sender's gossip address (the QUIC address it listens on, which is
//! where chitchat sends its answer) followed by chitchat's own encoding of the message.

use crate::cluster::transport::{
    PeerRequest, PeerResponse, PeerTransport, RequestContext, Route, RouteFuture,
};
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_proto::peer::{PeerError, KIND_GOSSIP};

/// Deadline of one gossip message (connecting included); a lost one is resent by the
/// next round anyway.
const SEND_DEADLINE: Duration = Duration::from_secs(1);
/// Gossip messages received and not yet read by chitchat; more are dropped (gossip is
/// lossy by design, and a flood must not grow memory).
const INBOX_CAPACITY: usize = 1024;
/// Largest gossip message accepted: chitchat keeps its own within a UDP datagram
/// (65,507 bytes); ours adds the sender's address (2 + at most 64 bytes).
pub const MAX_GOSSIP_BYTES: usize = 65_507 + 2 + 64;

/// The receiving end: the peer handler pushes decoded messages here.
#[derive(Clone)]
pub struct GossipInbox {
    tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
}

impl GossipInbox {
    /// Decodes one `KIND_GOSSIP` body and queues it for chitchat. Malformed or excess
    /// messages are dropped: they came over an authenticated channel, but gossip never
    /// answers errors.
    pub fn deliver(&self, body: &[u8]) -> Result<(), String> {
        let (from, message) = decode(body)?;
        // A full inbox drops the message, like a lost datagram.
        let _ = self.tx.try_send((from, message));
        Ok(())
    }
}

/// `KIND_GOSSIP` messages go to the inbox (the answer is empty).
impl Route for GossipInbox {
    fn answer(&self, _context: RequestContext, request: PeerRequest) -> RouteFuture<'_> {
        let answer = self
            .deliver(&request.body)
            .map(|()| PeerResponse {
                kind: KIND_GOSSIP,
                body: Vec::new(),
            })
            .map_err(|reason| PeerError::Malformed { reason });
        Box::pin(std::future::ready(answer))
    }
}

/// Encodes a gossip message with the sender's gossip address.
pub fn encode(from: SocketAddr, message: &ChitchatMessage) -> Vec<u8> {
    let from = from.to_string();
    let mut body = Vec::with_capacity(2 + from.len() + message.serialized_len());
    body.extend_from_slice(&(from.len() as u16).to_le_bytes());
    body.extend_from_slice(from.as_bytes());
    message.serialize(&mut body);
    body
}

/// Decodes what `encode` made.
pub fn decode(body: &[u8]) -> Result<(SocketAddr, ChitchatMessage), String> {
    if body.len() > MAX_GOSSIP_BYTES {
        return Err(format!("gossip message of {} bytes", body.len()));
    }
    let (len, rest) = body
        .split_first_chunk::<2>()
        .ok_or("gossip message too short")?;
    let len = usize::from(u16::from_le_bytes(*len));
    if rest.len() < len {
        return Err("gossip message too short".into());
    }
    let (from, mut message) = rest.split_at(len);
    let from: SocketAddr = std::str::from_utf8(from)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("gossip sender address is not an address")?;
    let message = ChitchatMessage::deserialize(&mut message).map_err(|e| e.to_string())?;
    Ok((from, message))
}

/// chitchat's `Transport` over a peer transport. `open` can be called once: the receiver
/// is handed to the one socket.
pub struct QuicGossip<T: PeerTransport> {
    transport: Arc<T>,
    me: SocketAddr,
    rx: Mutex<Option<mpsc::Receiver<(SocketAddr, ChitchatMessage)>>>,
}

impl<T: PeerTransport> QuicGossip<T> {
    /// A transport sending as `me` (this node's QUIC address), and the inbox its peer
    /// handler feeds.
    pub fn new(transport: Arc<T>, me: SocketAddr) -> (QuicGossip<T>, GossipInbox) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        (
            QuicGossip {
                transport,
                me,
                rx: Mutex::new(Some(rx)),
            },
            GossipInbox { tx },
        )
    }
}

#[async_trait::async_trait]
impl<T: PeerTransport> Transport for QuicGossip<T> {
    async fn open(&self, _listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| anyhow::anyhow!("the gossip transport is already open"))?;
        Ok(Box::new(QuicGossipSocket {
            transport: Arc::clone(&self.transport),
            me: self.me,
            rx,
        }))
    }
}

struct QuicGossipSocket<T: PeerTransport> {
    transport: Arc<T>,
    me: SocketAddr,
    rx: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
}

#[async_trait::async_trait]
impl<T: PeerTransport> Socket for QuicGossipSocket<T> {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let request = PeerRequest {
            kind: KIND_GOSSIP,
            body: encode(self.me, &message),
        };
        // One-way and never awaited: chitchat's loop must not wait on a slow peer.
        let transport = Arc::clone(&self.transport);
        tokio::spawn(async move {
            if let Err(e) = transport.call(to, request, SEND_DEADLINE).await {
                tracing::trace!(peer = %to, error = %e, "gossip message not delivered");
            }
        });
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the gossip inbox closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_their_sender() {
        let from: SocketAddr = "127.0.0.1:7001".parse().unwrap_or_else(|_| unreachable!());
        let message = ChitchatMessage::BadCluster;
        let (got_from, got) = decode(&encode(from, &message)).expect("decodes");
        assert_eq!(got_from, from);
        assert_eq!(got, message);
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[200, 0, b'x']).is_err());
        let mut body = encode(
            "127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()),
            &ChitchatMessage::BadCluster,
        );
        body.truncate(body.len() - 1);
        assert!(decode(&body).is_err());
        assert!(decode(&vec![0u8; MAX_GOSSIP_BYTES + 1]).is_err());
    }
}
