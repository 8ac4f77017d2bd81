//! The production `PeerTransport` seam over turmoil's simulated network: a call opens a
//! simulated TCP connection to the peer, writes one request frame and reads one answer
//! frame, all under the call's deadline on simulated time. Partitions, loss and delay are
//! turmoil's; the handler is the node's production `Router`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tollgate_node::cluster::transport::frame::{read_frame, write_frame};
use tollgate_node::cluster::transport::{
    PeerHandler, PeerRequest, PeerResponse, PeerTransport, RequestContext, TransportError,
};
use tollgate_proto::peer::PeerError;
use tollgate_raft::codec;
use turmoil::net::{TcpListener, TcpStream};

/// The port every simulated node serves peers on.
pub const PEER_PORT: u16 = 7000;

/// The simulated host name of node `id`.
pub fn host(id: u64) -> String {
    format!("n{id}")
}

/// Where node `id` serves its peers.
pub fn peer_addr(id: u64) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(host(id)), PEER_PORT)
}

/// Largest frame either way (Raft snapshots of a small simulated state are far smaller).
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// The protocol version the simulated peers speak.
const PROTOCOL_VERSION: u16 = 1;

#[derive(Serialize, Deserialize)]
struct Request {
    kind: u16,
    body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    result: Result<(u16, Vec<u8>), PeerError>,
}

/// The client side. Stateless: every call connects anew (turmoil connections are cheap,
/// and a partition then shows at once as a failed connect).
#[derive(Debug, Default, Clone, Copy)]
pub struct SimTransport;

impl PeerTransport for SimTransport {
    async fn call(
        &self,
        peer: SocketAddr,
        request: PeerRequest,
        deadline: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let exchange = async {
            let mut stream =
                TcpStream::connect(peer)
                    .await
                    .map_err(|e| TransportError::Connect {
                        peer,
                        source: Box::new(e),
                    })?;
            let stream_error =
                |e: tollgate_node::cluster::transport::frame::FrameError| TransportError::Stream {
                    peer,
                    source: Box::new(e),
                };
            let frame = codec::encode(&Request {
                kind: request.kind,
                body: request.body,
            })
            .map_err(TransportError::Encode)?;
            write_frame(&mut stream, &frame, MAX_FRAME)
                .await
                .map_err(stream_error)?;
            let reply = read_frame(&mut stream, MAX_FRAME)
                .await
                .map_err(stream_error)?;
            let answer: Answer = codec::decode(&reply).map_err(|e| TransportError::BadReply {
                peer,
                reason: e.to_string(),
            })?;
            match answer.result {
                Ok((kind, body)) => Ok(PeerResponse { kind, body }),
                Err(error) => Err(TransportError::Remote { peer, error }),
            }
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout {
                peer,
                deadline_ms: deadline.as_millis() as u64,
            }),
        }
    }
}

/// The server side: answers every connection to `addr` with `handler`, until the host
/// is crashed.
pub async fn serve<H: PeerHandler>(addr: SocketAddr, handler: Arc<H>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    loop {
        let (mut stream, from) = listener.accept().await?;
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let Ok(frame) = read_frame(&mut stream, MAX_FRAME).await else {
                return;
            };
            let result = match codec::decode::<Request>(&frame) {
                Ok(request) => handler
                    .handle(
                        RequestContext {
                            from,
                            protocol_version: PROTOCOL_VERSION,
                        },
                        PeerRequest {
                            kind: request.kind,
                            body: request.body,
                        },
                    )
                    .await
                    .map(|r| (r.kind, r.body)),
                Err(e) => Err(PeerError::Malformed {
                    reason: e.to_string(),
                }),
            };
            if let Ok(reply) = codec::encode(&Answer { result }) {
                let _ = write_frame(&mut stream, &reply, MAX_FRAME).await;
            }
        });
    }
}
