//! The `tollgate` binary: `serve`, `mock-upstream` and `admin`.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tollgate_node::{app, cli, config::Config, mock_upstream, server};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                config,
                data_dir,
                http_addr,
            } => {
                let mut config = Config::load(config.as_deref())?;
                if let Some(dir) = data_dir {
                    config.server.data_dir = dir;
                }
                if let Some(addr) = http_addr {
                    config.server.http_addr = addr;
                }
                let started = app::start(config)?;
                server::serve(started).await
            }
            Command::MockUpstream { addr, latency_ms } => {
                mock_upstream::run(addr, latency_ms).await
            }
            Command::Admin(args) => cli::run(args).await,
        }
    })
}
