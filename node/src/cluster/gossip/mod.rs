//! Gossip (chitchat): membership and failure detection, and the hints that need no
//! consensus: node state and version, circuit-breaker events, rate-limit claims.
//!
//! chitchat runs over the node's mutual-TLS QUIC transport (`transport`), so a host
//! without a certificate of the cluster's CA cannot take part. Its keys are spelled only
//! in `keys`. The rest of the node reads a `View` (a snapshot rebuilt every half gossip
//! interval, cheap to read on the request path), writes its own values with `publish`,
//! and can follow typed `ClusterChange`s. A node running alone has a `Gossip` too, with
//! an empty view, so callers need no special case.
//!
//! # Layout
//! - `mod.rs`: `Gossip` (start, publish, view, changes) over chitchat or simulated.
//! - `keys`: the gossip keys and their typed values, spelled only there.
//! - `view`: `View`, its members and claims, and how it is built and diffed.
//! - `transport`: chitchat's transport over the peer transport (`KIND_GOSSIP`).

pub mod keys;
pub mod transport;
pub mod view;

use crate::cluster::transport::PeerTransport;
use crate::config::GossipConfig;
use chitchat::FailureDetectorConfig;
use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId};
use keys::NodeState;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
pub use transport::{GossipInbox, QuicGossip};
use view::diff;
pub use view::{build_view_from, ClusterChange, Member, NodeValues, PeerClaim, View};

/// The chitchat cluster id: nodes of another cluster id ignore each other.
const CLUSTER_ID: &str = "tollgate";
/// A dead node's state is kept this long (its rate-limit claims still count: a day's
/// window is covered), then forgotten. chitchat stops passing it on to nodes that do
/// not have it after half of this.
const DEAD_NODE_GRACE: Duration = Duration::from_secs(25 * 3600);
/// Typed membership changes buffered for a slow subscriber.
const CHANGES_CAPACITY: usize = 256;

/// How to start gossip for a clustered node.
#[derive(Debug, Clone)]
pub struct GossipOptions {
    pub node_id: u64,
    /// This node's QUIC address: gossip travels on it.
    pub gossip_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// QUIC addresses of nodes to gossip with first (the `--peer`s and `--join`).
    pub seeds: Vec<SocketAddr>,
    pub config: GossipConfig,
    /// The protocol versions this node speaks, gossiped for operators and upgrades.
    pub protocol: tollgate_proto::peer::ProtocolRange,
}

pub struct Gossip {
    node_id: u64,
    generation: u64,
    chitchat: Option<Arc<tokio::sync::Mutex<Chitchat>>>,
    handle: Mutex<Option<ChitchatHandle>>,
    /// The task that folds chitchat's state into the view, stopped by `shutdown`.
    refresher: Mutex<Option<tokio::task::AbortHandle>>,
    view: RwLock<Arc<View>>,
    /// Values to write to this node's gossip state at the next refresh (`None`: delete).
    pending: Mutex<BTreeMap<String, Option<String>>>,
    wake: Notify,
    changes: broadcast::Sender<ClusterChange>,
    refresh_every: Duration,
    interval_ms: u64,
    /// Under the simulator: this node's values, which the simulator's own deterministic
    /// exchange carries to the other nodes' views (chitchat's peer selection cannot be
    /// seeded). `None` in production.
    simulated: Option<Mutex<BTreeMap<String, String>>>,
}

impl Gossip {
    /// The gossip of a node running alone: nothing to hear, nothing to tell.
    pub fn alone(node_id: u64) -> Arc<Gossip> {
        let interval = Duration::from_millis(GossipConfig::default().interval_ms);
        Arc::new(Gossip::new(node_id, 0, None, None, interval))
    }

    fn new(
        node_id: u64,
        generation: u64,
        chitchat: Option<Arc<tokio::sync::Mutex<Chitchat>>>,
        handle: Option<ChitchatHandle>,
        interval: Duration,
    ) -> Gossip {
        Gossip {
            node_id,
            generation,
            chitchat,
            handle: Mutex::new(handle),
            refresher: Mutex::new(None),
            view: RwLock::new(Arc::new(View::default())),
            pending: Mutex::new(BTreeMap::new()),
            wake: Notify::new(),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            refresh_every: interval / 2,
            interval_ms: interval.as_millis() as u64,
            simulated: None,
        }
    }

    /// The gossip of a simulated node: `publish` keeps this node's values for the
    /// simulator to carry (`own_values`), and the simulator sets what this node has
    /// heard (`set_view`).
    pub fn simulated(node_id: u64, generation: u64) -> Arc<Gossip> {
        let interval = Duration::from_millis(GossipConfig::default().interval_ms);
        let mut gossip = Gossip::new(node_id, generation, None, None, interval);
        gossip.simulated = Some(Mutex::new(BTreeMap::new()));
        Arc::new(gossip)
    }

    /// A simulated node's own values (empty otherwise).
    pub fn own_values(&self) -> BTreeMap<String, String> {
        self.simulated
            .as_ref()
            .map(|v| v.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Sets what this node has heard (the simulator's exchange; tests).
    pub fn set_view(&self, view: View) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
    }

    /// Starts chitchat over `transport` and returns the gossip and the inbox the peer
    /// handler must feed with `KIND_GOSSIP` requests.
    pub async fn start<T: PeerTransport>(
        options: GossipOptions,
        transport: Arc<T>,
        register_inbox: impl FnOnce(GossipInbox),
    ) -> anyhow::Result<Arc<Gossip>> {
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (quic, inbox) = QuicGossip::new(transport, options.gossip_addr);
        register_inbox(inbox);
        let interval = Duration::from_millis(options.config.interval_ms);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(
                options.node_id.to_string(),
                generation,
                options.gossip_addr,
            ),
            cluster_id: CLUSTER_ID.to_owned(),
            gossip_interval: interval,
            listen_addr: options.gossip_addr,
            seed_nodes: options.seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: options.config.phi_threshold,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                initial_interval: interval,
                dead_node_grace_period: DEAD_NODE_GRACE,
            },
            marked_for_deletion_grace_period: Duration::from_secs(600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let initial = vec![
            (keys::NODE_STATE.to_owned(), NodeState::Joining.to_string()),
            (
                keys::NODE_VERSION.to_owned(),
                env!("CARGO_PKG_VERSION").to_owned(),
            ),
            (
                keys::NODE_HTTP_ADDR.to_owned(),
                options.http_addr.to_string(),
            ),
            (keys::NODE_PROTOCOL.to_owned(), options.protocol.to_string()),
        ];
        let handle = spawn_chitchat(config, initial, &quic).await?;
        let chitchat = handle.chitchat();
        let gossip = Arc::new(Gossip::new(
            options.node_id,
            generation,
            Some(chitchat),
            Some(handle),
            interval,
        ));
        let refresher = tokio::spawn(Arc::clone(&gossip).run()).abort_handle();
        *gossip.refresher.lock().unwrap_or_else(|e| e.into_inner()) = Some(refresher);
        tracing::info!(node_id = options.node_id, generation, addr = %options.gossip_addr, "gossip started");
        Ok(gossip)
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The gossip round length.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Whether this node gossips with others (false when running alone).
    pub fn clustered(&self) -> bool {
        self.chitchat.is_some() || self.simulated.is_some()
    }

    /// The last snapshot of what gossip says.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sets one of this node's values; it is written at once (without waiting for the
    /// next refresh) and reaches the others with the next gossip round.
    pub fn publish(&self, key: String, value: String) {
        self.queue(key, Some(value));
    }

    /// Deletes one of this node's values (the others drop it after chitchat's grace
    /// period for deleted keys).
    pub fn unpublish(&self, key: String) {
        self.queue(key, None);
    }

    fn queue(&self, key: String, value: Option<String>) {
        if let Some(own) = &self.simulated {
            let mut own = own.lock().unwrap_or_else(|e| e.into_inner());
            match value {
                Some(value) => own.insert(key, value),
                None => own.remove(&key),
            };
            return;
        }
        if self.chitchat.is_none() {
            return;
        }
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
        self.wake.notify_one();
    }

    pub fn set_state(&self, state: NodeState) {
        self.publish(keys::NODE_STATE.to_owned(), state.to_string());
    }

    /// Membership changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterChange> {
        self.changes.subscribe()
    }

    /// Stops gossiping (at the end of a drain): the others then see this node go dead.
    pub async fn shutdown(&self) {
        if let Some(refresher) = self
            .refresher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            refresher.abort();
        }
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            if let Err(e) = handle.shutdown().await {
                tracing::debug!(error = %e, "gossip shutdown");
            }
        }
    }

    async fn run(self: Arc<Self>) {
        let Some(chitchat) = self.chitchat.clone() else {
            return;
        };
        // Members seen live at least once (chitchat lists a new node as dead until it
        // has heard two heartbeats: its first live sighting is a join, not a revival).
        let mut ever_live = BTreeSet::new();
        loop {
            tokio::select! {
                biased;
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.refresh_every) => {}
            }
            let pending =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
            let view = {
                let mut guard = chitchat.lock().await;
                let own = guard.self_node_state();
                for (key, value) in pending {
                    match value {
                        Some(value) if own.get(&key) != Some(value.as_str()) => own.set(key, value),
                        Some(_) => {}
                        None if own.get(&key).is_some() => own.delete(&key),
                        None => {}
                    }
                }
                build_view(&guard)
            };
            let old = self.view();
            for change in diff(&old.members, &view.members, &mut ever_live) {
                let _ = self.changes.send(change);
            }
            *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
            if self
                .handle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
            {
                return;
            }
        }
    }

    /// This node's gossip identity: (node id, generation).
    pub fn me(&self) -> (u64, u64) {
        (self.node_id, self.generation)
    }
}

fn build_view(chitchat: &Chitchat) -> View {
    let me = chitchat.self_chitchat_id().clone();
    let live: BTreeSet<&ChitchatId> = chitchat.live_nodes().collect();
    build_view_from(chitchat.node_states().iter().filter_map(|(id, state)| {
        let is_me = *id == me;
        Some(NodeValues {
            node_id: id.node_id.parse::<u64>().ok()?,
            generation: id.generation_id,
            gossip_addr: id.gossip_advertise_addr,
            live: is_me || live.contains(id),
            is_me,
            values: state.key_values().collect(),
        })
    }))
}
