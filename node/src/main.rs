//! The `tollgate` binary: `serve`, `admin` and `cert`.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tollgate_node::cluster::cert;
use tollgate_node::cluster::version::Versions;
use tollgate_node::http::server;
use tollgate_node::{app, cli, config::Config};

/// mimalloc rather than the C library's allocator: with the request log's writer and
/// the store's flushes allocating and freeing on their own threads, glibc's arenas
/// (shared once threads outnumber them) spent about a tenth of the node's CPU in
/// consolidation and arena locks on the request path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Clustered AI gateway with exact budgets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway node.
    Serve {
        /// TOML config file; without it the node runs on embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `server.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Overrides `server.http_addr`.
        #[arg(long)]
        http_addr: Option<SocketAddr>,
        /// Cluster mode: this node's Raft id (unique, non-zero).
        #[arg(long)]
        node_id: Option<u64>,
        /// Cluster mode: the QUIC address peers reach this node on.
        #[arg(long)]
        raft_addr: Option<SocketAddr>,
        /// Cluster mode: voters to form the cluster with (this node included).
        #[arg(long, default_value_t = 0)]
        bootstrap_expect: usize,
        /// Cluster mode: another node's raft address (repeat for each).
        #[arg(long = "peer", conflicts_with = "join")]
        peers: Vec<SocketAddr>,
        /// Cluster mode: join the cluster through this member's raft address (the node
        /// enters as a learner and becomes a voter once it has caught up).
        #[arg(long, conflicts_with = "bootstrap_expect")]
        join: Option<SocketAddr>,
        /// Cluster mode: the `tollgate cert node` directory (default DATA_DIR/certs).
        #[arg(long)]
        cert_dir: Option<PathBuf>,
        /// Speak peer protocol versions only up to this one (default: the newest this
        /// build speaks), so this build stands in for an older one in upgrade tests.
        #[arg(long, env = "TOLLGATE_PROTOCOL_VERSION")]
        protocol_version: Option<u16>,
    },
    /// Talk to a node's admin API.
    Admin(cli::AdminArgs),
    /// Search or follow the request log (every node's, merged).
    Logs(cli::records::LogsArgs),
    /// The audit trail: `verify` checks it and every node's request log.
    Audit(cli::records::AuditArgs),
    /// Make the cluster CA and node certificates for the peer transport.
    Cert(cert::CertArgs),
}

fn main() -> anyhow::Result<()> {
    cli::init_process("warn,tollgate_node=info");
    // What the node writes (its data dir, logs it opens, certificates) is its own: keys,
    // ledgers and tokens are not for other users of the machine.
    // SAFETY: umask only sets the process's file mode mask.
    unsafe {
        libc::umask(0o077);
    }
    let cli = Cli::parse();
    let command = match cli.command {
        // Certificates are made without a runtime: files only, no network.
        Command::Cert(args) => return Ok(cert::run(args)?),
        other => other,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Serve {
                config,
                data_dir,
                http_addr,
                node_id,
                raft_addr,
                bootstrap_expect,
                peers,
                join,
                cert_dir,
                protocol_version,
            } => {
                let mut speaks = tollgate_proto::peer::ProtocolRange::BUILD;
                if let Some(max) = protocol_version {
                    speaks = tollgate_proto::peer::ProtocolRange::capped(max).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--protocol-version {max}: this build speaks protocol versions {}",
                            tollgate_proto::peer::ProtocolRange::BUILD
                        )
                    })?;
                    tracing::info!(range = %speaks, "speaking a capped protocol range");
                }
                let versions = std::sync::Arc::new(Versions::new(speaks));
                let mut config = Config::load(config.as_deref())?;
                if let Some(dir) = data_dir {
                    config.server.data_dir = dir;
                }
                if let Some(addr) = http_addr {
                    config.server.http_addr = addr;
                }
                let cluster = match (node_id, raft_addr) {
                    (Some(0), _) => anyhow::bail!(
                        "--node-id 0: a node id must be a positive number, unique in the cluster"
                    ),
                    (Some(_), Some(_))
                        if join.is_none() && bootstrap_expect > 1 + peers.len() =>
                    {
                        anyhow::bail!(
                            "--bootstrap-expect {bootstrap_expect} forms a cluster of {bootstrap_expect} voters: name each of the other {} with --peer RAFT_ADDR (got {})",
                            bootstrap_expect - 1,
                            peers.len()
                        )
                    }
                    (Some(node_id), Some(raft_addr)) => {
                        std::fs::create_dir_all(&config.server.data_dir)?;
                        let options = tollgate_node::cluster::start::ClusterOptions {
                            node_id,
                            raft_addr,
                            http_addr: config.server.http_addr,
                            cert_dir: cert_dir
                                .unwrap_or_else(|| config.server.data_dir.join("certs")),
                            bootstrap_expect,
                            peers,
                            join,
                            data_dir: config.server.data_dir.clone(),
                            gossip: config.gossip.clone(),
                            versions: std::sync::Arc::clone(&versions),
                        };
                        Some(options)
                    }
                    (None, None) => None,
                    _ => anyhow::bail!("cluster mode needs both --node-id and --raft-addr"),
                };
                let started = app::start(config, cluster, versions).await?;
                server::serve(started).await
            }
            Command::Admin(args) => cli::run(args).await,
            Command::Logs(args) => cli::records::logs(args).await,
            Command::Audit(args) => cli::records::audit(args).await,
            Command::Cert(_) => anyhow::bail!("cert runs without a runtime"),
        }
    })
}
