//! Gossip (chitchat): membership and failure detection, and the hints that need no
//! consensus: node state and version, circuit-breaker events, rate-limit claims.
//!
//! chitchat runs over the node's mutual-TLS QUIC transport (`transport`), so a host
//! without a certificate of the cluster's CA cannot take part. Its keys are spelled only
//! in `keys`. The rest of the node reads a `View` (a snapshot rebuilt every half gossip
//! interval, cheap to read on the request path), writes its own values with `publish`,
//! and can follow typed `ClusterChange`s. A node running alone has a `Gossip` too, with
//! an empty view, so callers need no special case.

pub mod keys;
pub mod transport;

use crate::config::GossipConfig;
use crate::transport::PeerTransport;
use chitchat::FailureDetectorConfig;
use chitchat::{spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId};
use keys::{BreakerEvent, Dimension, NodeState, RateClaim};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
pub use transport::{GossipInbox, QuicGossip};

/// The chitchat cluster id: nodes of another cluster id ignore each other.
const CLUSTER_ID: &str = "tollgate";
/// A dead node's state is kept this long (its rate-limit claims still count: a day's
/// window is covered), then forgotten. chitchat stops passing it on to nodes that do
/// not have it after half of this.
const DEAD_NODE_GRACE: Duration = Duration::from_secs(25 * 3600);
/// Typed membership changes buffered for a slow subscriber.
const CHANGES_CAPACITY: usize = 256;

/// One node as gossip knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: u64,
    /// Changes at every start of the node (its start time in ms).
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// The failure detector's verdict (this node is always live to itself).
    pub live: bool,
    pub state: Option<NodeState>,
    pub version: Option<String>,
    pub http_addr: Option<String>,
}

/// Another node's claim on one rate limit dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClaim {
    pub node_id: u64,
    pub generation: u64,
    pub live: bool,
    pub claim: RateClaim,
}

/// What gossip says, as of the last refresh.
#[derive(Debug, Default)]
pub struct View {
    /// Every node known, this one included, live and dead, by (id, generation).
    pub members: Vec<Member>,
    /// Other nodes' breaker events by provider config id.
    pub breakers: BTreeMap<String, Vec<(u64, BreakerEvent)>>,
    /// Other nodes' rate-limit claims by (rate limit id, dimension).
    pub rates: BTreeMap<(String, Dimension), Vec<PeerClaim>>,
}

impl View {
    /// Each node's newest generation (a restarted node's earlier one stays listed, dead,
    /// for a while). `members` is sorted by (node id, generation).
    pub fn newest(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| {
                self.members
                    .get(i + 1)
                    .is_none_or(|next| next.node_id != m.node_id)
            })
            .map(|(_, m)| m)
    }

    /// Live nodes, this one included (at least 1).
    pub fn live_count(&self) -> usize {
        self.members.iter().filter(|m| m.live).count().max(1)
    }

    /// The live node count (at least 1) and `node_id`'s place among the live nodes by
    /// id (0 when it is not among them).
    pub fn live_rank(&self, node_id: u64) -> (usize, usize) {
        let mut live: Vec<u64> = self
            .members
            .iter()
            .filter(|m| m.live)
            .map(|m| m.node_id)
            .collect();
        live.sort_unstable();
        live.dedup();
        let rank = live.iter().position(|&id| id == node_id).unwrap_or(0);
        (live.len().max(1), rank)
    }

    pub fn peer_claims(&self, limit_id: &str, dimension: Dimension) -> &[PeerClaim] {
        self.rates
            .get(&(limit_id.to_owned(), dimension))
            .map_or(&[], Vec::as_slice)
    }
}

/// A change in membership, for the rest of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChange {
    /// A node (or a new generation of one) is live.
    Joined(Member),
    /// A live node's `node.state` changed.
    StateChanged(Member),
    /// The failure detector declared a node dead.
    Dead(Member),
    /// A dead node came back (same generation: it was only unreachable).
    Revived(Member),
    /// A dead node's state was forgotten.
    Left { node_id: u64, generation: u64 },
}

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
}

pub struct Gossip {
    node_id: u64,
    generation: u64,
    chitchat: Option<Arc<tokio::sync::Mutex<Chitchat>>>,
    handle: Mutex<Option<ChitchatHandle>>,
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

/// One node's gossiped values, as a view is built from them.
pub struct NodeValues<'a> {
    pub node_id: u64,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// Live by the failure detector (or this node itself).
    pub live: bool,
    pub is_me: bool,
    pub values: Vec<(&'a str, &'a str)>,
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
            (
                keys::NODE_PROTOCOL.to_owned(),
                crate::protocol::local().to_string(),
            ),
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
        tokio::spawn(Arc::clone(&gossip).run());
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

/// The view built from the nodes' gossiped values (chitchat's, or the simulator's).
pub fn build_view_from<'a>(nodes: impl Iterator<Item = NodeValues<'a>>) -> View {
    let mut view = View::default();
    for node in nodes {
        let get = |wanted: &str| {
            node.values
                .iter()
                .find(|(k, _)| *k == wanted)
                .map(|(_, v)| *v)
        };
        let node_id = node.node_id;
        view.members.push(Member {
            node_id,
            generation: node.generation,
            gossip_addr: node.gossip_addr,
            live: node.live,
            state: get(keys::NODE_STATE).and_then(NodeState::parse),
            version: get(keys::NODE_VERSION).map(str::to_owned),
            http_addr: get(keys::NODE_HTTP_ADDR).map(str::to_owned),
        });
        if node.is_me {
            continue;
        }
        for (key, value) in &node.values {
            if let Some(pc) = key.strip_prefix(keys::BREAKER_PREFIX) {
                if let Some(event) = BreakerEvent::decode(value) {
                    view.breakers
                        .entry(pc.to_owned())
                        .or_default()
                        .push((node_id, event));
                }
            } else if let Some((limit, dimension)) = keys::parse_rate_key(key) {
                if let Some(claim) = RateClaim::decode(value) {
                    view.rates
                        .entry((limit.to_owned(), dimension))
                        .or_default()
                        .push(PeerClaim {
                            node_id,
                            generation: node.generation,
                            live: node.live,
                            claim,
                        });
                }
            }
        }
    }
    view.members.sort_by_key(|m| (m.node_id, m.generation));
    view
}

/// The typed changes between two member lists; `ever_live` remembers which members
/// have been live before.
fn diff(
    old: &[Member],
    new: &[Member],
    ever_live: &mut BTreeSet<(u64, u64)>,
) -> Vec<ClusterChange> {
    let key = |m: &Member| (m.node_id, m.generation);
    let old_by: BTreeMap<_, _> = old.iter().map(|m| (key(m), m)).collect();
    let new_by: BTreeMap<_, _> = new.iter().map(|m| (key(m), m)).collect();
    let mut changes = Vec::new();
    for (k, m) in &new_by {
        let first_time = m.live && ever_live.insert(*k);
        match old_by.get(k) {
            _ if first_time => changes.push(ClusterChange::Joined((*m).clone())),
            None => {}
            Some(before) if before.live && !m.live => {
                changes.push(ClusterChange::Dead((*m).clone()))
            }
            Some(before) if !before.live && m.live => {
                changes.push(ClusterChange::Revived((*m).clone()))
            }
            Some(before) if before.state != m.state && m.live => {
                changes.push(ClusterChange::StateChanged((*m).clone()))
            }
            Some(_) => {}
        }
    }
    for (node_id, generation) in old_by.keys() {
        if !new_by.contains_key(&(*node_id, *generation)) {
            ever_live.remove(&(*node_id, *generation));
            changes.push(ClusterChange::Left {
                node_id: *node_id,
                generation: *generation,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, live: bool, state: NodeState) -> Member {
        Member {
            node_id: id,
            generation: 1,
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16)),
            live,
            state: Some(state),
            version: None,
            http_addr: None,
        }
    }

    #[test]
    fn membership_changes_are_typed() {
        let before = vec![
            member(1, true, NodeState::Ready),
            member(2, true, NodeState::Ready),
            member(3, false, NodeState::Ready),
            member(4, true, NodeState::Ready),
        ];
        let after = vec![
            member(1, true, NodeState::Draining),
            member(2, false, NodeState::Ready),
            member(3, true, NodeState::Ready),
            member(5, true, NodeState::Joining),
        ];
        let mut ever_live: BTreeSet<(u64, u64)> = [1, 2, 3, 4].map(|id| (id, 1)).into();
        assert_eq!(
            diff(&before, &after, &mut ever_live),
            vec![
                ClusterChange::StateChanged(member(1, true, NodeState::Draining)),
                ClusterChange::Dead(member(2, false, NodeState::Ready)),
                ClusterChange::Revived(member(3, true, NodeState::Ready)),
                ClusterChange::Joined(member(5, true, NodeState::Joining)),
                ClusterChange::Left {
                    node_id: 4,
                    generation: 1
                },
            ]
        );
    }

    #[test]
    fn newest_takes_each_nodes_latest_generation() {
        let restarted = Member {
            generation: 2,
            ..member(1, true, NodeState::Ready)
        };
        let view = View {
            members: vec![
                member(1, false, NodeState::Draining),
                restarted.clone(),
                member(2, true, NodeState::Ready),
            ],
            ..View::default()
        };
        let newest: Vec<&Member> = view.newest().collect();
        assert_eq!(newest, vec![&restarted, &view.members[2]]);
    }
}
