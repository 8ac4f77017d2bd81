//! The CI sweep: a fixed range of seeds across every scenario (each seed picks its
//! scenario as `seed % 6`), every invariant checked after every step. A failure prints
//! the seed and the command that replays it.
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

/// Seeds `FIRST..FIRST + COUNT`: 35 of each of the six scenarios.
const FIRST: u64 = 1_000;
const COUNT: u64 = 210;

#[test]
fn a_fixed_sweep_of_seeds_holds_every_invariant() {
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut requests, mut unanswered) = (0, 0);
    for seed in FIRST..FIRST + COUNT {
        let report = tollgate_sim::run_with(seed, tollgate_sim::Options::default());
        requests += report.requests;
        unanswered += report.failed;
        if !report.ok() {
            failures.push(report.failure());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{COUNT} seeds in {secs:.1} s ({:.1} seeds/s), {requests} client requests, {unanswered} unanswered after retries, {} failed",
        COUNT as f64 / secs,
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
