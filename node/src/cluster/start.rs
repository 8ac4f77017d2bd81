//! Starting a cluster member: open its Raft storage, make the Raft, form or join the
//! cluster, start gossip and the member's tasks. `member` does it over any transport and
//! storage (`MemberSeams`): `seams` gives those of `tollgate serve` (QUIC, sled,
//! chitchat), the simulator its own. Formation is `--bootstrap-expect N` with `--peer`
//! addresses (once every peer answers, the node with the smallest id initializes the
//! membership), or `--join ADDR` (the leader adds this node as a learner, waits until it
//! has caught up, then makes it a voter). Either way the node is ready once it has
//! applied everything the leader had committed (`RaftReplicator::catch_up`).

use super::compact::Appended;
use super::drain::Drain;
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
use tollgate_proto::peer::{ProtocolRange, KIND_GOSSIP, KIND_HELLO};
use tollgate_raft::codec;
use tollgate_raft::typ::{NodeId, Raft, TollgateNode};
use tollgate_raft::{LogBackend, LogStore, MemLog, SnapshotSlot, StateMachineStore};

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

/// How a member keeps its Raft log and snapshots.
pub enum Storage {
    /// Sled under `<data_dir>/raft`, the outbox beside it (`tollgate serve`).
    Durable { data_dir: PathBuf },
    /// A simulated node's "disk": its log and snapshot slot survive a restart when the
    /// same two are passed again; `dirs` names where its files go for storage figures.
    Memory {
        log: MemLog,
        snapshots: SnapshotSlot,
        dirs: DataDirs,
    },
}

/// Raft's timers: the node's (`tollgate_raft::config::with_node_timing`) or openraft's
/// defaults, which the simulator's scenarios are written against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    Node,
    Simulator,
}

/// How the member comes into a cluster.
pub enum Formation {
    /// `--bootstrap-expect N` with `--peer` addresses: once `expect - 1` peers answer a
    /// hello, the smallest id initializes the membership.
    Bootstrap {
        peers: Vec<SocketAddr>,
        expect: usize,
    },
    /// `--join ADDR`: the leader adds this node as a learner, then as a voter.
    Join(SocketAddr),
    /// These members, at once (the simulator's first node on its first start).
    Initialize(BTreeMap<NodeId, TollgateNode>),
    /// Nothing to do: the log holds the membership, or another node forms it.
    Recover,
}

/// How the member gossips.
pub enum GossipSeam {
    /// chitchat over the peer transport.
    Chitchat(GossipOptions),
    /// The production facade in its simulated mode; the simulator carries its values.
    Simulated { generation: u64 },
}

/// What a cluster member is made of: the seams between the production node and the
/// simulator (transport, storage, timers, formation, gossip).
pub struct MemberSeams<T> {
    pub me: Hello,
    pub transport: Arc<T>,
    /// The transport's handler: Raft, leader operations and gossip register here.
    pub router: Arc<Router>,
    pub storage: Storage,
    pub timing: Timing,
    pub formation: Formation,
    pub gossip: GossipSeam,
}

/// A started member: its replicated state, its Raft and its gossip.
pub struct Member {
    pub replicator: Arc<dyn Replicator>,
    pub raft: Raft,
    pub gossip: Arc<Gossip>,
}

/// The seams of a `tollgate serve` cluster node: its certificates, the QUIC transport
/// bound to its raft address, sled storage in its data dir, chitchat.
pub fn seams(options: ClusterOptions) -> anyhow::Result<MemberSeams<QuicTransport>> {
    let identity = NodeIdentity::load_dir(&options.cert_dir).with_context(|| {
        format!(
            "cannot load node certificates from {}",
            options.cert_dir.display()
        )
    })?;
    let speaks = options.versions.local();
    let router = Router::new();
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
    let seeds: Vec<SocketAddr> = options
        .peers
        .iter()
        .copied()
        .chain(options.join)
        .filter(|a| *a != options.raft_addr)
        .collect();
    let formation = match options.join {
        Some(via) => Formation::Join(via),
        None if options.bootstrap_expect > 0 => Formation::Bootstrap {
            peers: options.peers.clone(),
            expect: options.bootstrap_expect,
        },
        None => Formation::Recover,
    };
    Ok(MemberSeams {
        me: Hello {
            node_id: options.node_id,
            node: TollgateNode {
                raft_addr: options.raft_addr.to_string(),
                http_addr: options.http_addr.to_string(),
            },
        },
        transport,
        router,
        storage: Storage::Durable {
            data_dir: options.data_dir,
        },
        timing: Timing::Node,
        formation,
        gossip: GossipSeam::Chitchat(GossipOptions {
            node_id: options.node_id,
            gossip_addr: options.raft_addr,
            http_addr: options.http_addr,
            seeds,
            config: options.gossip,
            protocol: speaks,
        }),
    })
}

/// Starts Raft and gossip for a member speaking `versions`, whose peers can start
/// `drain`: every task it starts (formation, catching up, lease reclaim, split-vote
/// watch, protocol raise and check, hand-over) goes into `tasks`.
pub async fn member<T: PeerTransport>(
    seams: MemberSeams<T>,
    versions: &Arc<Versions>,
    drain: &Arc<Drain>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<Member> {
    let MemberSeams {
        me,
        transport,
        router,
        storage,
        timing,
        formation,
        gossip,
    } = seams;
    let node_id = me.node_id;
    let speaks = versions.local();
    let handler = Arc::new(RaftRpcHandler::pending(me.clone(), Arc::clone(versions)));
    handler.set_drain(Arc::clone(drain));
    router.add(&super::rpc::kinds(), Arc::clone(&handler) as Arc<dyn Route>);
    let config = match timing {
        Timing::Node => {
            tollgate_raft::raft_config("tollgate").and_then(tollgate_raft::config::with_node_timing)
        }
        Timing::Simulator => tollgate_raft::raft_config("sim"),
    }
    .map(Arc::new)
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let network = Network::new(Arc::clone(&transport));
    let (raft, state, committed, appended, dirs) = match storage {
        Storage::Durable { data_dir } => {
            let raft_dir = data_dir.join("raft");
            let (log, sm) =
                tollgate_raft::open_durable(&raft_dir).context("cannot open the raft storage")?;
            let (raft, state, committed, appended) =
                raft_over(node_id, config, network, log, sm, speaks).await?;
            let dirs = DataDirs {
                raft: raft_dir,
                outbox: data_dir.join("outbox"),
            };
            (raft, state, committed, appended, dirs)
        }
        Storage::Memory {
            log,
            snapshots,
            dirs,
        } => {
            let (log, sm) = tollgate_raft::storage::open_in_memory(log, snapshots)?;
            let (raft, state, committed, appended) =
                raft_over(node_id, config, network, log, sm, speaks).await?;
            (raft, state, committed, appended, dirs)
        }
    };
    handler.set_raft(raft.clone());
    let replicator = Arc::new(
        RaftReplicator::new(
            raft.clone(),
            state,
            Arc::clone(&transport),
            handler.contact(),
            committed,
            dirs,
        )
        .with_yielding(handler.yielding())
        .with_protocol(speaks),
    );
    let weak = Arc::downgrade(&replicator);
    handler.set_status(move || weak.upgrade().map(|r| r.status()).unwrap_or_default());
    match formation {
        Formation::Join(via) => {
            let joining = Arc::clone(&replicator);
            let me = me.clone();
            tasks.spawn(async move { joining.join(me, via).await });
        }
        Formation::Bootstrap { peers, expect } => {
            tasks.spawn(form(
                raft.clone(),
                Arc::clone(&transport),
                me.clone(),
                peers,
                expect,
            ));
        }
        Formation::Initialize(members) => {
            // Refused if a vote was cast meanwhile: then the cluster forms anyway.
            if let Err(e) = raft.initialize(members).await {
                tracing::info!(reason = %e, "cluster not initialized here");
            }
        }
        Formation::Recover => {}
    }
    let catching_up = Arc::clone(&replicator);
    tasks.spawn(async move { catching_up.catch_up().await });
    tasks.spawn(Arc::clone(&replicator).reclaim_leases());
    tasks.spawn(super::elect::break_split_votes(raft.clone()));
    tasks.spawn(super::compact::snapshot_by_bytes(raft.clone(), appended));
    tasks.spawn(crate::cluster::protocol::raise_when_supported(
        Arc::clone(&replicator) as Arc<dyn Replicator>,
        Arc::clone(versions),
    ));
    tasks.spawn(crate::cluster::protocol::stop_when_outdated(
        replicator.state().clone(),
        Arc::clone(drain),
        Arc::clone(versions),
    ));
    tracing::info!(node_id, raft_addr = %me.node.raft_addr, "raft started");
    let gossip = match gossip {
        GossipSeam::Chitchat(options) => {
            Gossip::start(options, Arc::clone(&transport), move |inbox| {
                router.add(&[KIND_GOSSIP], Arc::new(inbox))
            })
            .await
            .context("cannot start gossip")?
        }
        GossipSeam::Simulated { generation } => Gossip::simulated(node_id, generation),
    };
    tasks.spawn(super::handover::hand_over_at_drain(
        raft.clone(),
        transport,
        Arc::clone(&gossip),
        Arc::clone(drain),
        handler.yielding(),
    ));
    Ok(Member {
        replicator,
        raft,
        gossip,
    })
}

/// Reads the committed index of a member's log.
type Committed = Box<dyn Fn() -> u64 + Send + Sync>;

/// The Raft over an opened log and state machine (either log backend, the same state
/// machine), once the recovered state shows this build can read the cluster's log.
async fn raft_over<T: PeerTransport, B: LogBackend>(
    node_id: NodeId,
    config: Arc<openraft::Config>,
    network: Network<T>,
    log: LogStore<B>,
    state_machine: StateMachineStore,
    speaks: ProtocolRange,
) -> anyhow::Result<(Raft, SharedState, Committed, Appended)> {
    let state = SharedState::from_shared(state_machine.state());
    refuse_downgrade(&state, speaks)?;
    let (reader, bytes) = (log.clone(), log.clone());
    let raft = Raft::new(node_id, config, network, log, state_machine)
        .await
        .context("cannot start raft")?;
    Ok((
        raft,
        state,
        Box::new(move || reader.committed_index()),
        Box::new(move || bytes.appended_bytes()),
    ))
}

/// A downgrade after the cluster moved to a newer protocol: this build could not read
/// the log it would be sent.
fn refuse_downgrade(state: &SharedState, speaks: ProtocolRange) -> anyhow::Result<()> {
    let cluster_version = state.read().protocol_version();
    if cluster_version > speaks.max {
        anyhow::bail!(
            "this cluster uses protocol version {cluster_version}, and this node speaks {speaks}: run a build that speaks {cluster_version}"
        );
    }
    Ok(())
}

/// How long formation waits before it says which peers it is still waiting for.
const FORMATION_REPORT: Duration = Duration::from_secs(5);

/// Waits until `expect - 1` peers answer, then lets the smallest id initialize.
async fn form<T: PeerTransport>(
    raft: Raft,
    transport: Arc<T>,
    me: Hello,
    peers: Vec<SocketAddr>,
    expect: usize,
) {
    let mut said = tokio::time::Instant::now();
    loop {
        let mut members: BTreeMap<NodeId, TollgateNode> = BTreeMap::new();
        members.insert(me.node_id, me.node.clone());
        let mut silent = Vec::new();
        for peer in &peers {
            let request = PeerRequest {
                kind: KIND_HELLO,
                body: Vec::new(),
            };
            match transport.call(*peer, request, HELLO_DEADLINE).await {
                Ok(reply) => match codec::decode::<Hello>(&reply.body) {
                    Ok(hello) => {
                        members.insert(hello.node_id, hello.node);
                    }
                    Err(e) => silent.push(format!("{peer}: unreadable hello ({e})")),
                },
                Err(e) => silent.push(e.to_string()),
            }
        }
        // Waiting is normal while the others start; waiting long says why, now and then.
        if members.len() < expect && said.elapsed() >= FORMATION_REPORT {
            said = tokio::time::Instant::now();
            tracing::warn!(
                expect,
                answered = members.len(),
                "still forming the cluster: waiting for {}",
                silent.join("; ")
            );
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
