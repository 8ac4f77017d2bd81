//! The node's one `PeerHandler`: a table from peer message kind to the part of the node
//! that answers it (Raft and leader operations, gossip), filled at assembly. Kinds are
//! spelled once, in `tollgate_proto::peer`; the parts register here instead of knowing
//! each other.

use super::call::{PeerHandler, PeerRequest, PeerResponse, RequestContext};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use tollgate_proto::peer::{PeerError, APPLICATION_KINDS};

/// What a route answers with, boxed so that routes of any type share one table.
pub type RouteFuture<'a> =
    Pin<Box<dyn Future<Output = Result<PeerResponse, PeerError>> + Send + 'a>>;

/// A part of the node that answers some kinds of peer message.
pub trait Route: Send + Sync + 'static {
    fn answer(&self, context: RequestContext, request: PeerRequest) -> RouteFuture<'_>;
}

#[derive(Default)]
pub struct Router {
    routes: RwLock<BTreeMap<u16, Arc<dyn Route>>>,
}

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::default()
    }

    /// Sends the messages of `kinds` to `route` from now on (a kind added again goes to
    /// the newer route).
    pub fn add(&self, kinds: &[u16], route: Arc<dyn Route>) {
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        for kind in kinds {
            routes.insert(*kind, Arc::clone(&route));
        }
    }

    fn route(&self, kind: u16) -> Option<Arc<dyn Route>> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        routes.get(&kind).cloned()
    }
}

impl PeerHandler for Router {
    async fn handle(
        &self,
        context: RequestContext,
        request: PeerRequest,
    ) -> Result<PeerResponse, PeerError> {
        match self.route(request.kind) {
            Some(route) => route.answer(context, request).await,
            // A kind of this build whose part has not started yet (gossip starts after
            // Raft): the caller retries, as it does for any refusal.
            None if APPLICATION_KINDS.contains(&request.kind) => Err(PeerError::Rejected {
                reason: "node is starting".into(),
            }),
            None => Err(PeerError::UnknownKind { kind: request.kind }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_proto::peer::{KIND_GOSSIP, KIND_HELLO};

    struct Echo;

    impl Route for Echo {
        fn answer(&self, _context: RequestContext, request: PeerRequest) -> RouteFuture<'_> {
            Box::pin(std::future::ready(Ok(PeerResponse {
                kind: request.kind,
                body: request.body,
            })))
        }
    }

    #[tokio::test]
    async fn each_kind_goes_to_its_route_and_others_are_refused() {
        let router = Router::new();
        router.add(&[KIND_HELLO], Arc::new(Echo));
        let context = RequestContext {
            from: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            protocol_version: 1,
        };
        let ask = |kind| PeerRequest {
            kind,
            body: vec![7],
        };
        let answer = router.handle(context, ask(KIND_HELLO)).await;
        assert_eq!(answer.map(|a| a.body), Ok(vec![7]));
        assert!(matches!(
            router.handle(context, ask(KIND_GOSSIP)).await,
            Err(PeerError::Rejected { .. })
        ));
        assert_eq!(
            router.handle(context, ask(0x1234)).await.err(),
            Some(PeerError::UnknownKind { kind: 0x1234 })
        );
    }
}
