//! An in-process `PeerTransport` for multi-node tests: calls go straight to the handler
//! registered for an address; an address can be cut off to play a crashed node.

use crate::cluster::transport::{
    PeerHandler, PeerRequest, PeerResponse, PeerTransport, RequestContext, TransportError,
};
use crate::cluster::RaftRpcHandler;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default, Clone)]
pub struct MemTransport {
    handlers: Arc<Mutex<HashMap<SocketAddr, Arc<RaftRpcHandler>>>>,
}

impl MemTransport {
    pub fn register(&self, addr: SocketAddr, handler: Arc<RaftRpcHandler>) {
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, handler);
    }

    pub fn cut(&self, addr: SocketAddr) {
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }
}

impl PeerTransport for MemTransport {
    async fn call(
        &self,
        peer: SocketAddr,
        request: PeerRequest,
        deadline: Duration,
    ) -> Result<PeerResponse, TransportError> {
        let handler = self
            .handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned();
        let Some(handler) = handler else {
            return Err(TransportError::Timeout {
                peer,
                deadline_ms: deadline.as_millis() as u64,
            });
        };
        let context = RequestContext {
            from: peer,
            protocol_version: tollgate_proto::peer::PROTOCOL_VERSION,
        };
        match tokio::time::timeout(deadline, handler.handle(context, request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(error)) => Err(TransportError::Remote { peer, error }),
            Err(_) => Err(TransportError::Timeout {
                peer,
                deadline_ms: deadline.as_millis() as u64,
            }),
        }
    }
}
