//! `tollgate raft-bench` (hidden, used by `scripts/bench.sh --cluster`): how many charges
//! per second a cluster of real nodes on loopback commits. Three (or `--nodes`) Raft nodes
//! in this process, each with its own mutual-TLS QUIC endpoint and durable sled storage
//! in a temporary directory, and every node proposing charge batches the way the charge
//! pipeline does: one batch of `--batch` charges at a time per node, followers forwarding
//! to the leader. No HTTP and no proxy: the commit path alone, which the proxy's own cost
//! hides when the whole cluster shares one small machine.

use anyhow::{bail, Context};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_node::clock::{Clock, SystemClock};
use tollgate_node::cluster::start::{member, seams, ClusterOptions};
use tollgate_node::governance::replicator::Replicator;
use tollgate_proto::{Charge, Command, KeyId, Outcome, Usage, Usd};

#[derive(Debug, clap::Args)]
pub struct RaftBenchArgs {
    /// Nodes in the cluster.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Seconds to propose for.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Charges per proposal (the charge pipeline's `charge_batch_max` under load).
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
}

/// A free UDP port on loopback for a node's QUIC endpoint.
fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

pub async fn run(args: RaftBenchArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.batch == 0 || !args.seconds.is_finite() || args.seconds <= 0.0 {
        bail!("--nodes, --batch and --seconds must be positive");
    }
    let dir = std::env::temp_dir().join(format!("tollgate-raft-bench-{}", std::process::id()));
    let result = bench(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn bench(args: &RaftBenchArgs, dir: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let now = time::OffsetDateTime::now_utc();
    tollgate_node::cluster::cert::write_ca(&dir.join("ca"), true, now)?;
    let addrs: Vec<SocketAddr> = (0..args.nodes)
        .map(|_| free_udp())
        .collect::<anyhow::Result<_>>()?;
    let mut nodes: Vec<Arc<dyn Replicator>> = Vec::new();
    let mut running = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let cert_dir = dir.join(format!("n{}", i + 1));
        tollgate_node::cluster::cert::write_node(
            &dir.join("ca"),
            &format!("n{}", i + 1),
            &[],
            &cert_dir,
            true,
            now,
        )?;
        let options = ClusterOptions {
            node_id: i as u64 + 1,
            raft_addr: *addr,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cert_dir,
            bootstrap_expect: args.nodes,
            peers: addrs.iter().filter(|a| *a != addr).copied().collect(),
            join: None,
            data_dir: dir.join(format!("data{}", i + 1)),
            gossip: tollgate_node::config::GossipConfig::default(),
            versions: Default::default(),
        };
        let versions = Arc::clone(&options.versions);
        let drain = tollgate_node::cluster::drain::Drain::new();
        let mut tasks = tokio::task::JoinSet::new();
        let node = member(seams(options)?, &versions, &drain, &mut tasks)
            .await
            .context("start a node")?;
        nodes.push(Arc::clone(&node.replicator));
        // Its tasks end when they are dropped: keep them until the bench ends.
        running.push((node, tasks));
    }
    let formed = Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n| n.caught_up()) {
        if Instant::now() > formed {
            bail!("the cluster did not form in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_index = nodes[0].status().applied_index;

    let committed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut proposers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (node, committed, batch) = (Arc::clone(node), Arc::clone(&committed), args.batch);
        proposers.push(tokio::spawn(async move {
            let clock = SystemClock::with_offset_ms(0);
            let mut seq = 0u64;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let charges = (0..batch)
                    .map(|_| {
                        seq += 1;
                        Charge {
                            request_id: format!("rb-{i}-{seq}").as_str().into(),
                            key_id: KeyId(format!("vk_bench{}", seq % 64)),
                            provider_config_id: None,
                            model: "bench-model".into(),
                            usage: Usage {
                                input_tokens: 1_000,
                                output_tokens: 200,
                                ..Usage::default()
                            },
                            cost: Usd(6_000),
                            at_ms: clock.now_ms(),
                        }
                    })
                    .collect();
                let sent = Instant::now();
                match node.propose(Command::ChargeBatch { charges }).await {
                    Ok(Outcome::Charged { applied, .. }) => {
                        committed.fetch_add(u64::from(applied), Ordering::Relaxed);
                        latencies.push(sent.elapsed());
                    }
                    Ok(other) => tracing::warn!(outcome = ?other, "batch not charged"),
                    Err(e) => tracing::warn!(error = %e, "batch not committed"),
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for p in proposers {
        latencies.extend(p.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .map_or(0, |d| d.as_micros() as u64)
    };
    let charges = committed.load(Ordering::Relaxed);
    Ok(serde_json::json!({
        "nodes": args.nodes,
        "batch": args.batch,
        "seconds": seconds,
        "charges": charges,
        "charges_per_s": charges as f64 / seconds,
        "raft_entries": nodes[0].status().applied_index.saturating_sub(first_index),
        "batch_commit_p50_us": pct(0.5),
        "batch_commit_p99_us": pct(0.99),
    }))
}
