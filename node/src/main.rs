//! The `tollgate` binary: `serve`, `mock-upstream`, `admin` and `cert`, and the hidden
//! `loadgen` used by `scripts/bench.sh`.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tollgate_node::{app, cert, cli, config::Config, loadgen, mock_upstream, server};

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
    /// Run a fast fake provider (Anthropic JSON/SSE and OpenAI chat completions).
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:9100")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
    /// Talk to a node's admin API.
    Admin(cli::AdminArgs),
    /// Make the cluster CA and node certificates for the peer transport.
    Cert(cert::CertArgs),
    /// Send a fixed POST to a URL at a given concurrency and print latency and
    /// throughput as one line of JSON (used by `scripts/bench.sh`).
    #[command(hide = true)]
    Loadgen(LoadgenArgs),
    /// Start a cluster of nodes in this process on loopback and print how many charges
    /// per second it commits, as one line of JSON (used by `scripts/bench.sh --cluster`).
    #[command(hide = true)]
    RaftBench(tollgate_node::raftbench::RaftBenchArgs),
}

#[derive(clap::Args)]
struct LoadgenArgs {
    /// Target, e.g. `http://127.0.0.1:8080/v1/messages`.
    #[arg(long)]
    url: String,
    /// A request header, `Name: value`; repeat for more.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// The request body.
    #[arg(
        long,
        conflicts_with = "body_file",
        required_unless_present = "body_file"
    )]
    body: Option<String>,
    /// A file holding the request body.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Tasks sending at once, each with its own keep-alive connection.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests to measure, shared among the tasks.
    #[arg(long, required_unless_present = "duration_secs")]
    requests: Option<u64>,
    /// Seconds to measure for; with --requests, whichever limit comes first ends the run.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Requests sent and discarded before measuring.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Runtime worker threads. With 1 (the default) everything runs on the calling
    /// thread, so a request's wake-ups never hop between cores and the client adds as
    /// little as it can to the latency measured.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    // reqwest and rustls must use ring; without an installed provider building the
    // HTTP client panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,tollgate_node=info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The load generator picks its own runtime flavour, so it leaves before the node's.
    let command = match cli.command {
        Command::Loadgen(args) => return run_loadgen(args),
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
                if let Some(max) = protocol_version {
                    let range =
                        tollgate_proto::peer::ProtocolRange::capped(max).ok_or_else(|| {
                            anyhow::anyhow!(
                                "--protocol-version {max}: this build speaks protocol versions {}",
                                tollgate_proto::peer::ProtocolRange::BUILD
                            )
                        })?;
                    tollgate_node::protocol::set_local(range);
                    tracing::info!(%range, "speaking a capped protocol range");
                }
                let mut config = Config::load(config.as_deref())?;
                if let Some(dir) = data_dir {
                    config.server.data_dir = dir;
                }
                if let Some(addr) = http_addr {
                    config.server.http_addr = addr;
                }
                let cluster = match (node_id, raft_addr) {
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
                        };
                        Some(tollgate_node::cluster::start::start(options).await?)
                    }
                    (None, None) => None,
                    _ => anyhow::bail!("cluster mode needs both --node-id and --raft-addr"),
                };
                let started = app::start(config, cluster)?;
                server::serve(started).await
            }
            Command::MockUpstream { addr, latency_ms } => {
                mock_upstream::run(addr, latency_ms).await
            }
            Command::Admin(args) => cli::run(args).await,
            Command::RaftBench(args) => tollgate_node::raftbench::run(args).await,
            Command::Loadgen(_) => anyhow::bail!("loadgen runs on its own runtime"),
            Command::Cert(_) => anyhow::bail!("cert runs without a runtime"),
        }
    })
}

/// `tollgate loadgen`: builds the plan, runs it on its own runtime and prints the report.
fn run_loadgen(args: LoadgenArgs) -> anyhow::Result<()> {
    let body = match (&args.body, &args.body_file) {
        (Some(text), _) => bytes::Bytes::from(text.clone()),
        (None, Some(path)) => bytes::Bytes::from(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        ),
        (None, None) => anyhow::bail!("give --body or --body-file"),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for text in &args.headers {
        let (name, value) = loadgen::parse_header(text)?;
        headers.append(name, value);
    }
    let duration = match args.duration_secs {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => anyhow::bail!("--duration-secs must be a positive number"),
        None => None,
    };
    let stop = loadgen::Stop {
        requests: args.requests,
        duration,
    };
    let plan = loadgen::Plan {
        url: args.url,
        headers,
        body,
        concurrency: args.concurrency,
        stop,
        warmup: args.warmup,
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(loadgen::run(plan))?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
