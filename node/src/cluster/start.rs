//! Starting a clustered node: bind the peer transport, open the durable Raft storage,
//! make the Raft, and form or join the cluster: `--bootstrap-expect N` with `--peer`
//! addresses (once every peer answers, the node with the smallest id initializes the
//! membership), or `--join ADDR` (the leader adds this node as a learner, waits until it
//! has caught up, then makes it a voter). Either way the node is ready once it has
//! applied everything the leader had committed (`RaftReplicator::catch_up`).

use super::ops::Hello;
use super::replicator::DataDirs;
use super::version::Versions;
use super::{Network, RaftReplicator, RaftRpcHandler};
use crate::cluster::gossip::{Gossip, GossipOptions};
use crate::cluster::transport::{
    NodeIdentity, PeerRequest, PeerTransport, QuicConfig, QuicTransport, Route, Router,
};
use crate::config::GossipConfig;
use crate::governance::replicator::{Replicator, SharedState};
use anyhow::Context;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tollgate_proto::peer::{KIND_GOSSIP, KIND_HELLO};
use tollgate_raft::codec;
use tollgate_raft::typ::{NodeId, Raft, TollgateNode};

/// Pause between rounds of asking the peers who they are while forming the cluster.
const FORMATION_RETRY_MS: u64 = 300;
/// Deadline of one hello.
const HELLO_DEADLINE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: NodeId,
    pub raft_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// A `tollgate cert node` directory (CA + node certificate + key).
    pub cert_dir: PathBuf,
    /// Voters expected at formation (this node included); 0 when joining an existing cluster.
    pub bootstrap_expect: usize,
    pub peers: Vec<SocketAddr>,
    /// A member's raft address to join the cluster through (instead of forming one).
    pub join: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub gossip: GossipConfig,
    /// The protocol versions this node speaks and the newest it met.
    pub versions: Arc<Versions>,
}

/// A started cluster node: its replicated state, its gossip, and the drain signal its
/// peers can start (`KIND_DRAIN`) and its leadership hand-over follows.
pub struct ClusterNode {
    pub replicator: Arc<dyn Replicator>,
    pub gossip: Arc<Gossip>,
    pub drain: Arc<crate::cluster::drain::Drain>,
    pub versions: Arc<Versions>,
    /// Formation, catching up, lease reclaim, split-vote watch, protocol raise and
    /// check, hand-over: ended when this is shut down or dropped, so it lives as long as
    /// the node serves (the server shuts it down last, after the hand-over).
    pub tasks: JoinSet<()>,
}

/// Starts Raft and gossip for this node.
pub async fn start(options: ClusterOptions) -> anyhow::Result<ClusterNode> {
    let identity = NodeIdentity::load_dir(&options.cert_dir).with_context(|| {
        format!(
            "cannot load node certificates from {}",
            options.cert_dir.display()
        )
    })?;
    let me = Hello {
        node_id: options.node_id,
        node: TollgateNode {
            raft_addr: options.raft_addr.to_string(),
            http_addr: options.http_addr.to_string(),
        },
    };
    let versions = Arc::clone(&options.versions);
    let speaks = versions.local();
    let handler = Arc::new(RaftRpcHandler::pending(me.clone(), Arc::clone(&versions)));
    let drain = crate::cluster::drain::Drain::new();
    handler.set_drain(Arc::clone(&drain));
    let router = Router::new();
    router.add(&super::rpc::kinds(), Arc::clone(&handler) as Arc<dyn Route>);
    let transport = Arc::new(
        QuicTransport::bind(
            QuicConfig {
                protocol: speaks,
                ..QuicConfig::new(options.raft_addr)
            },
            &identity,
            Arc::clone(&router),
        )
        .with_context(|| format!("cannot bind the raft address {}", options.raft_addr))?,
    );
    let raft_dir = options.data_dir.join("raft");
    let (log, state_machine) =
        tollgate_raft::open_durable(&raft_dir).context("cannot open the raft storage")?;
    let log_reader = log.clone();
    let state = SharedState::from_shared(state_machine.state());
    // A downgrade after the cluster moved to a newer protocol: this build could not read
    // the log it would be sent.
    let cluster_version = state.read().protocol_version();
    if cluster_version > speaks.max {
        anyhow::bail!(
            "this cluster uses protocol version {cluster_version}, and this node speaks {speaks}: run a build that speaks {cluster_version}"
        );
    }
    let config = tollgate_raft::raft_config("tollgate")
        .and_then(tollgate_raft::config::with_node_timing)
        .map(Arc::new)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let raft = Raft::new(
        options.node_id,
        config,
        Network::new(Arc::clone(&transport)),
        log,
        state_machine,
    )
    .await
    .context("cannot start raft")?;
    handler.set_raft(raft.clone());
    let replicator = Arc::new(
        RaftReplicator::new(
            raft.clone(),
            state,
            Arc::clone(&transport),
            handler.contact(),
            move || log_reader.committed_index(),
            DataDirs {
                raft: raft_dir,
                outbox: options.data_dir.join("outbox"),
            },
        )
        .with_yielding(handler.yielding())
        .with_protocol(speaks),
    );
    let weak = Arc::downgrade(&replicator);
    handler.set_status(move || weak.upgrade().map(|r| r.status()).unwrap_or_default());
    // The node's cluster tasks, owned here and stopped at the end of the drain.
    let mut tasks = JoinSet::new();
    if let Some(via) = options.join {
        let joining = Arc::clone(&replicator);
        tasks.spawn(async move { joining.join(me, via).await });
    } else if options.bootstrap_expect > 0 {
        tasks.spawn(form(
            raft.clone(),
            Arc::clone(&transport),
            me,
            options.peers.clone(),
            options.bootstrap_expect,
        ));
    }
    let catching_up = Arc::clone(&replicator);
    tasks.spawn(async move { catching_up.catch_up().await });
    tasks.spawn(Arc::clone(&replicator).reclaim_leases());
    tasks.spawn(super::elect::break_split_votes(raft.clone()));
    tasks.spawn(crate::cluster::protocol::raise_when_supported(
        Arc::clone(&replicator) as Arc<dyn Replicator>,
        Arc::clone(&versions),
    ));
    tasks.spawn(crate::cluster::protocol::stop_when_outdated(
        replicator.state().clone(),
        Arc::clone(&drain),
        Arc::clone(&versions),
    ));
    tracing::info!(node_id = options.node_id, raft_addr = %options.raft_addr, "raft started");
    let seeds: Vec<SocketAddr> = options
        .peers
        .iter()
        .copied()
        .chain(options.join)
        .filter(|a| *a != options.raft_addr)
        .collect();
    let gossip = Gossip::start(
        GossipOptions {
            node_id: options.node_id,
            gossip_addr: options.raft_addr,
            http_addr: options.http_addr,
            seeds,
            config: options.gossip.clone(),
            protocol: speaks,
        },
        Arc::clone(&transport),
        move |inbox| router.add(&[KIND_GOSSIP], Arc::new(inbox)),
    )
    .await
    .context("cannot start gossip")?;
    tasks.spawn(super::handover::hand_over_at_drain(
        raft,
        transport,
        Arc::clone(&gossip),
        Arc::clone(&drain),
        handler.yielding(),
    ));
    Ok(ClusterNode {
        replicator,
        gossip,
        drain,
        versions,
        tasks,
    })
}

/// Waits until `expect - 1` peers answer, then lets the smallest id initialize.
async fn form<T: PeerTransport>(
    raft: Raft,
    transport: Arc<T>,
    me: Hello,
    peers: Vec<SocketAddr>,
    expect: usize,
) {
    loop {
        let mut members: BTreeMap<NodeId, TollgateNode> = BTreeMap::new();
        members.insert(me.node_id, me.node.clone());
        for peer in &peers {
            let request = PeerRequest {
                kind: KIND_HELLO,
                body: Vec::new(),
            };
            if let Ok(reply) = transport.call(*peer, request, HELLO_DEADLINE).await {
                if let Ok(hello) = codec::decode::<Hello>(&reply.body) {
                    members.insert(hello.node_id, hello.node);
                }
            }
        }
        if members.len() >= expect {
            if members.keys().next() == Some(&me.node_id) {
                match raft.initialize(members).await {
                    Ok(()) => tracing::info!("cluster formed"),
                    // Already initialized (a restart): the log holds the membership.
                    Err(e) => tracing::info!(reason = %e, "cluster already formed"),
                }
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(FORMATION_RETRY_MS)).await;
    }
}
