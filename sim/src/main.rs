//! `tollgate-sim`: runs seeded simulations of a Tollgate cluster.
//!
//! - `--seed N`: one run; prints its trace.
//! - `--seeds A..B`: every seed from A to B (exclusive); prints a summary and, for each
//!   failure, the seed and the command that replays it.
//! - `--reproduce N`: one run with its full trace, for a failure found by a sweep.

use std::process::ExitCode;
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!("usage: tollgate-sim --seed N | --seeds A..B | --reproduce N");
    ExitCode::from(2)
}

fn one(seed: u64) -> ExitCode {
    match tollgate_sim::run(seed) {
        Ok(trace) => {
            println!("{}", trace.join("\n"));
            println!("seed {seed}: ok");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!("{failure}");
            println!("seed {seed}: FAILED; replay: cargo run -p tollgate-sim --release -- --reproduce {seed}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, n] if flag == "--seed" || flag == "--reproduce" => match n.parse() {
            Ok(seed) => one(seed),
            Err(_) => usage(),
        },
        [flag, range] if flag == "--seeds" => {
            let Some((a, b)) = range
                .split_once("..")
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            else {
                return usage();
            };
            let started = Instant::now();
            let mut failed = Vec::new();
            for seed in a..b {
                if let Err(failure) = tollgate_sim::run(seed) {
                    let first = failure.lines().next().unwrap_or("").to_owned();
                    println!("seed {seed}: FAILED: {first}; replay: cargo run -p tollgate-sim --release -- --reproduce {seed}");
                    failed.push(seed);
                }
            }
            let secs = started.elapsed().as_secs_f64();
            let runs = b.saturating_sub(a);
            println!(
                "{runs} seeds in {secs:.1} s ({:.1} seeds/s), {} failed {failed:?}",
                runs as f64 / secs.max(1e-9),
                failed.len()
            );
            if failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        _ => usage(),
    }
}
