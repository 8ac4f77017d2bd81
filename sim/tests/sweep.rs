//! The CI sweep: a fixed range of seeds across every scenario (each seed picks its
//! scenario as `seed % 6`), every invariant checked after every step. A failure prints
//! the seed and the command that replays it.
// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

/// Seeds `FIRST..FIRST + COUNT`: 35 of each of the six scenarios.
const FIRST: u64 = 1_000;
const COUNT: u64 = 210;

// The sweep in two halves, which the test harness runs on two threads (the simulator is
// single-threaded and keeps its per-run state on its thread).

#[test]
fn the_first_half_of_a_fixed_sweep_holds_every_invariant() {
    sweep(FIRST, FIRST + COUNT / 2);
}

#[test]
fn the_second_half_of_a_fixed_sweep_holds_every_invariant() {
    sweep(FIRST + COUNT / 2, FIRST + COUNT);
}

fn sweep(first: u64, end: u64) {
    let started = Instant::now();
    let mut failures = Vec::new();
    let (mut requests, mut unanswered) = (0, 0);
    for seed in first..end {
        let report = tollgate_sim::run_with(seed, tollgate_sim::Options::default());
        requests += report.requests;
        unanswered += report.failed;
        if !report.ok() {
            failures.push(report.failure());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeds {first}..{end} in {secs:.1} s ({:.1} seeds/s), {requests} client requests, {unanswered} unanswered after retries, {} failed",
        (end - first) as f64 / secs,
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
