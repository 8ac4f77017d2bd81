//! The HTTP router, composed layer by layer, and the serve loop with graceful shutdown.

use crate::app::{App, Started};
use crate::cluster::gossip::keys::NodeState;
use crate::gateway::proxy;
use crate::http::admin;
use crate::http::conn;
use crate::http::error::{ApiError, Dialect};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub fn router(app: Arc<App>) -> Router {
    let limits = &app.config.limits;
    // Inference routes: open to any caller; each handler authenticates the virtual key
    // itself because the error must be in the caller's dialect.
    let inference = Router::new()
        .route("/anthropic/v1/messages", post(proxy::anthropic_messages))
        .route("/v1/messages", post(proxy::anthropic_messages))
        .route(
            "/anthropic/v1/messages/count_tokens",
            post(proxy::count_tokens),
        )
        .route("/v1/messages/count_tokens", post(proxy::count_tokens))
        .route("/anthropic/v1/models", get(proxy::models))
        .route("/v1/models", get(proxy::models))
        .route("/openai/v1/models", get(proxy::models))
        .route("/v1/chat/completions", post(proxy::openai_chat))
        .route("/openai/v1/chat/completions", post(proxy::openai_chat))
        .route(
            "/bedrock/model/{model}/{action}",
            post(super::bedrock::invoke),
        )
        .route(
            "/vertex/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{target}",
            post(super::vertex::predict),
        )
        // Concurrency: beyond the limit callers get 503 at once instead of queueing.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            limit_concurrency,
        ));
    // Health: open, no auth, cheap.
    let health = Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics));
    Router::new()
        .merge(inference)
        .merge(health)
        // Admin API: deny by default behind the admin token.
        .merge(admin::router(Arc::clone(&app)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Body size: explicit, answered as 413 in the caller's dialect by the handlers.
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state(app)
}

async fn limit_concurrency(
    State(permits): State<Arc<Semaphore>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    match permits.try_acquire() {
        // The permit lives until the response head is sent; streamed bodies are bounded
        // by the per-connection limits of the server.
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Unavailable.into_response_in(dialect_of(request.uri().path())),
    }
}

fn dialect_of(path: &str) -> Dialect {
    if path.contains("chat/completions") || path.starts_with("/openai/") {
        Dialect::OpenAi
    } else {
        Dialect::Anthropic
    }
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    ApiError::NotFound(format!("no route {} {path}", request.method()))
        .into_response_in(dialect_of(&path))
}

async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    ApiError::MethodNotAllowed(format!("{} is not allowed on {path}", request.method()))
        .into_response_in(dialect_of(&path))
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::http::metrics::render(&app),
    )
        .into_response()
}

async fn live() -> &'static str {
    "ok"
}

/// Ready: serving, not draining, and (in a cluster) caught up with the leader's commit
/// index and hearing a majority of the voters in gossip, so a load balancer sends
/// nothing to a node that would answer from an old state or count rate limits alone.
async fn ready(State(app): State<Arc<App>>) -> Response {
    match readiness(&app) {
        Ok(()) => "ready".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Why this node should not take traffic, if it should not.
fn readiness(app: &App) -> Result<(), &'static str> {
    if app.drain.is_draining() {
        Err("draining")
    } else if !app.ready.load(Ordering::Acquire) {
        Err("not ready")
    } else if !app.replicator.caught_up() {
        Err("catching up with the cluster")
    } else if !heard_cluster(app) {
        Err("waiting to hear a majority of the cluster in gossip")
    } else {
        Ok(())
    }
}

/// Whether gossip has shown a majority of the voters live (this node included) since
/// the start. A node restarted a moment ago has heard nobody yet: it would count rate
/// limits as if alone and route around no one's open breakers. Once heard, like caught
/// up, it stays so: a node that loses the others later keeps serving (its staleness
/// says how old its view may be).
fn heard_cluster(app: &App) -> bool {
    if app.heard_cluster.load(Ordering::Acquire) || !app.gossip.clustered() {
        return true;
    }
    let view = app.replicator.cluster_view();
    let gossip = app.gossip.view();
    let live: std::collections::BTreeSet<u64> = gossip
        .newest()
        .filter(|m| m.live && view.voters.contains(&m.node_id))
        .map(|m| m.node_id)
        .chain(std::iter::once(view.node_id))
        .collect();
    let heard = live.len() * 2 > view.voters.len();
    if heard {
        app.heard_cluster.store(true, Ordering::Release);
    }
    heard
}

/// After the drain timeout cuts the open streams: how long the last requests get to end
/// (a non-streaming one still waits for its provider, bounded by its own timeout).
const CUT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the node's gossiped state is rechecked.
const NODE_STATE_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Serves until the drain starts (SIGTERM, SIGINT or `admin drain`), then drains:
/// `/health/ready` answers 503 at once and gossip says `draining` (a leader hands its
/// leadership over meanwhile, `cluster::handover`); new requests are still taken for
/// `drain_grace_ms`, while the load balancer notices; then no new connection is
/// accepted and requests and streams in flight get `drain_timeout_ms` to finish; every
/// queued charge is applied, the escrow leases go back, and gossip stops.
pub async fn serve(started: Started) -> anyhow::Result<()> {
    let Started { app, node } = started;
    let versions = Arc::clone(&app.versions);
    let addr = app.config.server.http_addr;
    let grace = std::time::Duration::from_millis(app.config.limits.drain_grace_ms);
    let drain_timeout = std::time::Duration::from_millis(app.config.limits.drain_timeout_ms);
    let listener =
        conn::listen(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let limits = &app.config.limits;
    let conn_limits = conn::ConnLimits {
        max: conn::fit_to_file_limit(limits.max_connections),
        per_address: limits.max_connections_per_address,
        header_read_timeout: std::time::Duration::from_millis(limits.header_read_timeout_ms),
        idle_timeout: std::time::Duration::from_millis(limits.idle_timeout_ms),
        // Checked when the config was loaded.
        trusted_proxies: Arc::new(
            crate::http::forwarded::TrustedProxies::parse(&app.config.server.trusted_proxies)
                .unwrap_or_default(),
        ),
    };
    app.ready.store(true, Ordering::Release);
    tracing::info!(addr = %local, data_dir = %app.config.server.data_dir.display(), "tollgate listening");
    eprintln!("tollgate listening on http://{local}");
    // Signals are watched until the very end: a second Ctrl-C exits at once.
    let mut signals = tokio::task::JoinSet::new();
    signals.spawn(drain_on_signal(Arc::clone(&app.drain)));
    let router = router(Arc::clone(&app));
    let shutdown_app = Arc::clone(&app);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let state_task = tokio::spawn(publish_node_state(Arc::clone(&app)));
    let counters = Arc::clone(&app.counters);
    let server = conn::serve(listener, router, conn_limits, counters, async move {
        shutdown_app.drain.started().await;
        shutdown_app.ready.store(false, Ordering::Release);
        shutdown_app.gossip.set_state(NodeState::Draining);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "draining: /health/ready answers 503; still taking requests for the grace period"
        );
        tokio::time::sleep(grace).await;
        tracing::info!("draining: no new connections; finishing requests in flight");
        let _ = signalled_tx.send(());
    });
    let mut server = Box::pin(server);
    // Whether every request ended before the pipeline closes (their charges in it).
    let mut all_ended = true;
    tokio::select! {
        () = &mut server => {}
        _ = signalled_rx => {
            // In-flight requests and streams get a bounded time to finish.
            match tokio::time::timeout(drain_timeout, &mut server).await {
                Ok(()) => {}
                Err(_) => {
                    tracing::warn!(timeout_s = drain_timeout.as_secs(), "drain timed out; cutting open streams");
                    app.drain.cut_streams();
                    match tokio::time::timeout(CUT_WAIT, &mut server).await {
                        Ok(()) => {}
                        Err(_) => {
                            tracing::warn!("requests still open after the cut; they end with the process, and this node keeps its leases until they expire");
                            all_ended = false;
                        }
                    }
                }
            }
        }
    }
    tracing::info!("draining: requests finished; applying queued charges");
    // Stop serving, then apply everything queued, give the leases back, hand over.
    drop(server);
    state_task.abort();
    drop(app);
    let stopped = node.stop(all_ended).await;
    tracing::info!(
        charges_applied = stopped.charges_applied,
        leases_returned = stopped.leases_returned,
        still_leading = stopped.still_leading,
        "node stopped"
    );
    signals.shutdown().await;
    tracing::info!("stopped");
    if let Some(version) = versions.outdated() {
        anyhow::bail!(
            "the cluster uses protocol version {version}, and this node speaks {}: run a build that speaks {version}",
            versions.local()
        );
    }
    Ok(())
}

/// Keeps this node's `node.state` in gossip current: `joining` until it is ready to
/// take traffic, `ready`, then `draining` from the start of the drain on.
async fn publish_node_state(app: Arc<App>) {
    let mut changes = app.gossip.subscribe();
    let mut last = None;
    loop {
        let state = if app.drain.is_draining() {
            NodeState::Draining
        } else if readiness(&app).is_ok() {
            NodeState::Ready
        } else {
            NodeState::Joining
        };
        if last != Some(state) {
            app.gossip.set_state(state);
            last = Some(state);
        }
        // Membership changes are logged as they come; the state is rechecked meanwhile.
        if let Ok(Ok(change)) = tokio::time::timeout(NODE_STATE_CHECK, changes.recv()).await {
            tracing::info!(?change, "gossip membership");
        }
    }
}

/// The first SIGTERM or SIGINT starts the drain. During the drain a SIGINT (a second
/// Ctrl-C) exits at once (charges not yet applied stay in the outbox and are replayed
/// at the next start); more SIGTERMs are ignored, as process managers repeat them.
async fn drain_on_signal(drain: Arc<crate::cluster::drain::Drain>) {
    let interrupted = shutdown_signal().await;
    let started_here = drain.start();
    if started_here {
        tracing::info!("shutdown signal: draining");
    }
    // A Ctrl-C during a drain that `admin drain` started is already the second.
    if started_here || !interrupted {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::warn!("interrupted during the drain: exiting without finishing it");
    std::process::exit(130);
}

/// Waits for SIGINT (`true`) or SIGTERM (`false`).
async fn shutdown_signal() -> bool {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => true, _ = term => false }
}
