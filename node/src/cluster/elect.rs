//! Breaking split votes. openraft 0.9 draws a node's election timeout once, at start, and
//! checks it on a tick of 1.5 heartbeats (75 ms). Candidates whose timeouts fall in the
//! same tick, on ticks in step, therefore time out together in every term, vote for
//! themselves and split the vote forever: the simulator found a 4-node cluster that never
//! elected a leader again after a partition healed (seed 62). Real processes rarely tick in
//! step, but nothing stops it. So each node watches for a leaderless spell and, after a
//! random pause, starts an election itself, off the tick: the first to do so gets the
//! others' votes before their ticks come.

use openraft::ServerState;
use rand::Rng;
use std::time::Duration;
use tollgate_raft::runtime::SeededRuntime;
use tollgate_raft::typ::Raft;

/// How often the watch looks.
const CHECK_MS: u64 = 50;
/// Leaderless for the longest election timeout plus this long (a few rounds) before the
/// watch steps in: 1 s with openraft's default timing.
const LEADERLESS_EXTRA_MS: u64 = 700;

/// Runs until the Raft shuts down.
pub async fn break_split_votes(raft: Raft) {
    // The random pause before the nudge is the longest election timeout, wider than a
    // tick, so two nodes rarely nudge together.
    let jitter_ms = raft.config().election_timeout_max.max(1);
    let leaderless_ms = jitter_ms + LEADERLESS_EXTRA_MS;
    let mut leaderless_for = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(CHECK_MS)).await;
        let m = raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == m.id);
        if m.current_leader.is_some() || m.state == ServerState::Leader || !voter {
            leaderless_for = 0;
            continue;
        }
        leaderless_for += CHECK_MS;
        if leaderless_for < leaderless_ms {
            continue;
        }
        leaderless_for = 0;
        let pause = <SeededRuntime as openraft::AsyncRuntime>::thread_rng().gen_range(0..jitter_ms);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if raft.metrics().borrow().current_leader.is_none() {
            tracing::info!(
                leaderless_ms = leaderless_ms + pause,
                "no leader for a while; starting an election off the tick"
            );
            let _ = raft.trigger().elect().await;
        }
    }
}
