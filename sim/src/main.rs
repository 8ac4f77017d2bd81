//! `tollgate-sim`: runs seeded simulations of a Tollgate cluster.
//!
//! - `--seed N`: one run; prints its trace.
//! - `--seeds A..B`: every seed from A to B (exclusive); prints a summary and, for each
//!   failure, the seed and the command that replays it.
//! - `--reproduce N`: one run with its full trace, for a failure found by a sweep.
//!
//! Either may add `--bug replay-with-new-id` or `--bug rate-claims-ignored` (a known bug
//! put back, `tollgate_node::hooks::bugs`) or
//! `--naive-budgets` (check-then-charge admission), to see the invariants catch them.

use std::process::ExitCode;
use std::time::Instant;
use tollgate_sim::{KnownBug, Options};

fn usage() -> ExitCode {
    eprintln!(
        "usage: tollgate-sim (--seed N | --seeds A..B | --reproduce N) [--bug replay-with-new-id|rate-claims-ignored] [--naive-budgets]"
    );
    ExitCode::from(2)
}

fn replay(seed: u64, options: Options) -> String {
    let mut command = format!("cargo run -p tollgate-sim --release -- --reproduce {seed}");
    match options.bug {
        Some(KnownBug::ReplayWithNewId) => command.push_str(" --bug replay-with-new-id"),
        Some(KnownBug::RateClaimsIgnored) => command.push_str(" --bug rate-claims-ignored"),
        None => {}
    }
    if options.naive_budgets {
        command.push_str(" --naive-budgets");
    }
    command
}

fn one(seed: u64, options: Options) -> ExitCode {
    let report = tollgate_sim::run_with(seed, options);
    println!("{}", report.trace.join("\n"));
    if report.ok() {
        println!("seed {seed}: ok");
        ExitCode::SUCCESS
    } else {
        for v in &report.violations {
            println!("violation: {v}");
        }
        println!("seed {seed}: FAILED; replay: {}", replay(seed, options));
        ExitCode::FAILURE
    }
}

fn sweep(a: u64, b: u64, options: Options) -> ExitCode {
    let started = Instant::now();
    let mut failed = Vec::new();
    let (mut requests, mut lost) = (0, 0);
    for seed in a..b {
        let report = tollgate_sim::run_with(seed, options);
        requests += report.requests;
        lost += report.failed;
        if !report.ok() {
            let first = report.violations.first().map_or("", String::as_str);
            println!(
                "seed {seed}: FAILED: {first}; replay: {}",
                replay(seed, options)
            );
            failed.push(seed);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let runs = b.saturating_sub(a);
    println!(
        "{runs} seeds in {secs:.1} s ({:.1} seeds/s), {requests} client requests ({lost} unanswered after retries), {} failed {failed:?}",
        runs as f64 / secs.max(1e-9),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    // SIM_LOG=filter (e.g. `info` or `tollgate_node=info,openraft=info`) prints the
    // nodes' own logs to stderr, interleaved in simulated order.
    if let Ok(filter) = std::env::var("SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = Options::default();
    if let Some(i) = args.iter().position(|a| a == "--naive-budgets") {
        args.remove(i);
        options.naive_budgets = true;
    }
    if let Some(i) = args.iter().position(|a| a == "--bug") {
        match args.get(i + 1).map(String::as_str) {
            Some("replay-with-new-id") => options.bug = Some(KnownBug::ReplayWithNewId),
            Some("rate-claims-ignored") => options.bug = Some(KnownBug::RateClaimsIgnored),
            _ => return usage(),
        }
        args.drain(i..i + 2);
    }
    match args.as_slice() {
        [flag, n] if flag == "--seed" || flag == "--reproduce" => match n.parse() {
            Ok(seed) => one(seed, options),
            Err(_) => usage(),
        },
        [flag, range] if flag == "--seeds" => {
            match range
                .split_once("..")
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            {
                Some((a, b)) => sweep(a, b, options),
                None => usage(),
            }
        }
        _ => usage(),
    }
}
