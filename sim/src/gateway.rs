//! The simulated clients' side of a node: one request frame, one answer frame, over a
//! simulated TCP connection (so partitions and crashes reach clients too). A request is
//! what the proxy does with a real one, minus HTTP: authenticate the key, reserve its
//! estimate on the budget chain, call the provider, charge the cost through the charge
//! pipeline. Admin writes are proposed through the node's replicator.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tollgate_node::cluster::transport::frame::{read_frame, write_frame};
use tollgate_proto::{Command, Outcome};
use tollgate_raft::codec;
use turmoil::net::TcpStream;

/// The port every simulated node serves clients on.
pub const GATEWAY_PORT: u16 = 8080;

/// Where node `id` serves clients.
pub fn gateway_addr(id: u64) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(crate::net::host(id)), GATEWAY_PORT)
}
const MAX_FRAME: usize = 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    Proxy {
        secret: String,
        request_id: String,
        /// What admission reserves (the proxy's estimate from max_tokens).
        estimate: u64,
        /// What the provider's usage comes to; never above the estimate.
        cost: u64,
        upstream_ms: u64,
        /// Streamed: it reserves its expected output and is metered as it comes, ending
        /// as a length stop when no budget can cover more.
        stream: bool,
    },
    Admin(Command),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Ok,
    /// An HTTP status the proxy would answer, and its message.
    Refused {
        status: u16,
        message: String,
    },
    Admin(Result<Outcome, String>),
}

/// One exchange with `node`, within `deadline`.
pub async fn call(
    node: SocketAddr,
    request: &Request,
    deadline: Duration,
) -> Result<Answer, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(node)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let frame = codec::encode(request).map_err(|e| e.to_string())?;
        write_frame(&mut stream, &frame, MAX_FRAME)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let reply = read_frame(&mut stream, MAX_FRAME)
            .await
            .map_err(|e| format!("read: {e}"))?;
        codec::decode::<Answer>(&reply).map_err(|e| e.to_string())
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Reads one request from an accepted connection and writes the answer `f` gives.
pub async fn answer<F, Fut>(mut stream: TcpStream, f: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let Ok(frame) = read_frame(&mut stream, MAX_FRAME).await else {
        return;
    };
    let Ok(request) = codec::decode::<Request>(&frame) else {
        return;
    };
    let answer = f(request).await;
    if let Ok(reply) = codec::encode(&answer) {
        let _ = write_frame(&mut stream, &reply, MAX_FRAME).await;
    }
}
