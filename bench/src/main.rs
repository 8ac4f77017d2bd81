//! `tollgate-bench`: the tools `scripts/bench.sh` measures the gateway with: a fast mock
//! provider, a closed-loop HTTP load generator and the Raft commit-path bench.
//!
//! # Layout
//! - `mock_upstream`: `tollgate-bench mock-upstream`, the fake provider over HTTP.
//! - `loadgen`: `tollgate-bench loadgen`, latency and throughput of one fixed request.
//! - `raftbench`: `tollgate-bench raft-bench`, committed charges/s of in-process nodes.
//! - `logbench`: `tollgate-bench log-bench`, the request log's store: writes, filtered
//!   queries and stats over a million records.
//! - `guardbench`: `tollgate-bench guard-bench` (what the guardrails cost per request,
//!   cold and turn after turn, and per stream event) and `guard-scan` (the secrets
//!   rules over a tree of source files: the false-positive rate).
//! - `logtamper`: `tollgate-bench log-tamper`, changes a stopped node's request log
//!   behind its back (for the tests of `tollgate audit verify`).

mod guardbench;
mod loadgen;
mod logbench;
mod logtamper;
mod mock_upstream;
mod raftbench;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "tollgate-bench", version, about = "Tollgate benchmark tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a fast fake provider (Anthropic JSON/SSE and OpenAI chat completions).
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:9100")]
        addr: SocketAddr,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Pause between the events of a stream, in microseconds (a model producing its
        /// answer piece by piece; with `LONG:<n>` in the prompt, a long one). A request
        /// with `PACE_US:<n>` in it sets its own.
        #[arg(long, default_value_t = 0)]
        event_delay_us: u64,
    },
    /// Send a fixed POST to a URL at a given concurrency and print latency and
    /// throughput as one line of JSON.
    Loadgen(LoadgenArgs),
    /// Start a cluster of nodes in this process on loopback and print how many charges
    /// per second it commits, as one line of JSON.
    RaftBench(raftbench::RaftBenchArgs),
    /// Fill a request log store with synthetic records and time its queries and stats,
    /// as one line of JSON.
    LogBench(logbench::LogBenchArgs),
    /// Change a stopped node's request log behind its back: flip a byte of a record,
    /// delete one, or cut the log off (tests of `tollgate audit verify`).
    LogTamper(logtamper::LogTamperArgs),
    /// Time the guardrails on a Claude Code-shaped request, in process.
    GuardBench(guardbench::GuardBenchArgs),
    /// Scan every `.rs` file under a directory with the secrets rules; print findings
    /// by rule.
    GuardScan(guardbench::GuardScanArgs),
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
    /// Requests per second at most, spread over the tasks (open loop); none: as fast as
    /// answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Runtime worker threads. With 1 (the default) everything runs on the calling
    /// thread, so a request's wake-ups never hop between cores and the client adds as
    /// little as it can to the latency measured.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    tollgate_node::cli::init_process("warn");
    let cli = Cli::parse();
    match cli.command {
        // The load generator picks its own runtime flavour.
        Command::Loadgen(args) => run_loadgen(args),
        Command::MockUpstream {
            addr,
            latency_ms,
            event_delay_us,
        } => runtime()?.block_on(mock_upstream::run(addr, latency_ms, event_delay_us)),
        Command::RaftBench(args) => runtime()?.block_on(raftbench::run(args)),
        Command::LogBench(args) => logbench::run(args),
        Command::LogTamper(args) => logtamper::run(args),
        Command::GuardBench(args) => guardbench::run(args),
        Command::GuardScan(args) => guardbench::scan(args),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// `tollgate-bench loadgen`: builds the plan, runs it on its own runtime and prints the report.
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
    let pace = match args.rate {
        Some(r) if r.is_finite() && r > 0.0 => {
            Some(Duration::from_secs_f64(args.concurrency.max(1) as f64 / r))
        }
        Some(_) => anyhow::bail!("--rate must be a positive number"),
        None => None,
    };
    let stop = loadgen::Stop {
        requests: args.requests,
        duration,
        pace,
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
