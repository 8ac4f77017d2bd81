//! Cluster-wide rate limits, the pure part: how much of a limit's window a node claims.
//!
//! Each node admits only against its own **claim** on the window, and gossips its claim
//! and count. A node that has used its claim takes a new one: `1/n` (n = live nodes, never
//! fewer than the Raft voters, so a node wrongly thought dead keeps its share) of
//! what no node holds as far as it has heard, `limit − Σ held`, where a node holds the
//! larger of its claim and its count. A node gives back what its recent demand will not
//! use (`trimmed`), and all of it when idle. So nodes under equal pressure split the
//! limit evenly, a burst on a quiet node is served at once from its share, and a node
//! with more demand keeps claiming what the quieter ones give back.
//!
//! **Bound.** Claims that no node had heard of when it made its own ("concurrent") each
//! take their rank's part of `1/n` of the free room they saw (`free / n`, the first
//! `free mod n` nodes by id one more), so claims on the same view add up to exactly the
//! free room, and claims on different views to at most it plus less than one each. A
//! node's two successive claims cannot both be concurrent with the same claim of another
//! node as long as a claim reaches every node within half a claim round (`CLAIM_ROUND_MS`
//! in `limits.rs`, 500 ms or five gossip intervals; gossip takes about one interval,
//! 100 ms). Then the cluster
//! admits at most `limit + n − 1` requests in a window (n nodes), and exactly `limit`
//! when the nodes' views agree. (Room left to nodes that do not want it goes to the
//! others a round later, one unit at a time, which the same bound covers.) When gossip is slower than that, each extra half round of
//! delay can let each node take `1/n` of the same room once more. Tokens are counted
//! when a request completes, so a token limit is also passed by what the requests in
//! flight use. A node restarted within a window starts its own count from zero; the
//! claims its previous run gossiped still count for at least 12 hours (gossip keeps a
//! dead generation 25 hours and passes it on for half of that), so for windows longer
//! than a day a restart can pass the bound by what that node had admitted.

use crate::cluster::gossip::keys::RateClaim;

/// What claiming once more gives a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nothing is free: the window is used up.
    Exhausted,
    /// The node's new claim.
    To(u64),
    /// Room is free, but for now it is the other nodes' share.
    Later,
}

/// Claims once more. `others_held`: Σ held by the other nodes in the same window, as
/// last heard. `rank`: this node's place (0-based) among the `live_nodes` by id, so that
/// nodes claiming the same free room at once split it exactly: each takes `free / n`,
/// and the first `free mod n` one more. `tail_waited`: this node found its share empty a
/// round ago and room is still free (the nodes it was left to did not want it), so it
/// takes one.
pub fn next_claim(
    limit: u64,
    own: RateClaim,
    others_held: u64,
    live_nodes: usize,
    rank: usize,
    tail_waited: bool,
) -> Claim {
    let held = own.held().saturating_add(others_held);
    let free = limit.saturating_sub(held);
    if free == 0 {
        return Claim::Exhausted;
    }
    let n = live_nodes.max(1) as u64;
    let mut share = free / n + u64::from((rank as u64) < free % n);
    if share == 0 && tail_waited {
        share = 1;
    }
    if share == 0 {
        Claim::Later
    } else {
        Claim::To(own.held() + share)
    }
}

/// The claim a node keeps when its demand will use less than it holds: `want` is what
/// it expects to use over the next stretch (two rounds). Only a claim more than twice
/// that above the count is cut, so a steady node does not trim and re-claim every round.
/// Giving back is always safe: the others only ever see a claim larger than the truth.
pub fn trimmed(own: RateClaim, want: u64) -> Option<u64> {
    let keep = own.count.saturating_add(want.max(1));
    (own.claim
        > own
            .count
            .saturating_add(want.saturating_mul(2))
            .saturating_add(1))
    .then_some(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(count: u64, claim: u64) -> RateClaim {
        RateClaim {
            window_start_ms: 0,
            count,
            claim,
        }
    }

    #[test]
    fn a_node_alone_claims_everything_and_three_split_evenly() {
        assert_eq!(next_claim(600, own(0, 0), 0, 1, 0, false), Claim::To(600));
        assert_eq!(next_claim(600, own(0, 0), 0, 3, 2, false), Claim::To(200));
        assert_eq!(
            next_claim(600, own(200, 200), 400, 3, 0, false),
            Claim::Exhausted
        );
        // A node that used its claim while the others idle claims a third of the rest.
        assert_eq!(
            next_claim(600, own(200, 200), 20, 3, 1, false),
            Claim::To(200 + 127)
        );
        // Three nodes claiming 10 at once take exactly 10.
        let split: Vec<Claim> = (0..3)
            .map(|r| next_claim(10, own(0, 0), 0, 3, r, false))
            .collect();
        assert_eq!(split, [Claim::To(4), Claim::To(3), Claim::To(3)]);
        // The last unit is the first node's; another takes it only a round later.
        assert_eq!(next_claim(10, own(3, 3), 6, 3, 0, false), Claim::To(4));
        assert_eq!(next_claim(10, own(3, 3), 6, 3, 2, false), Claim::Later);
        assert_eq!(next_claim(10, own(3, 3), 6, 3, 2, true), Claim::To(4));
        // Tokens counted past the claim hold what they used.
        assert_eq!(
            next_claim(600, own(650, 200), 0, 3, 0, false),
            Claim::Exhausted
        );
        // A quiet node keeps what it will use; a steady one keeps its claim.
        assert_eq!(trimmed(own(10, 200), 7), Some(17));
        assert_eq!(trimmed(own(10, 200), 0), Some(11));
        assert_eq!(trimmed(own(10, 30), 10), None);
        assert_eq!(trimmed(own(10, 10), 0), None);
    }

    /// Three nodes under uneven, relentless demand, in steps of time. A node hears the
    /// others' claims `delay` steps late, claims at most once every `round` steps, and
    /// trims its claim to its demand since its last claim. With a round at least twice
    /// the delay the cluster never admits more than `limit + n − 1`, the limit is used
    /// up, and the busiest node gets the most of it.
    #[test]
    fn simulated_nodes_stay_within_the_stated_bound() {
        for (seed, delay, round) in [(1u64, 0usize, 2usize), (2, 1, 4), (3, 4, 10), (4, 9, 20)] {
            let limit = 600u64;
            let n = 3;
            let mut rng = seed;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut claimed_at = [None::<usize>; 3];
            let mut asked = [0u64; 3];
            let mut step = 0usize;
            // Two windows: the first has no demand history, the second has.
            for window in 0..2 {
                // What each node published at each step of this window.
                let mut history: Vec<[RateClaim; 3]> = Vec::new();
                let mut now = [own(0, 0); 3];
                let mut round_start = [None::<usize>; 3];
                let mut tail = [None::<usize>; 3];
                for _ in 0..2_000 {
                    for node in 0..n {
                        // Demand: node 0 gets 6 requests a step, node 1 three, node 2 one.
                        let asks = [6u64, 3, 1][node] + next() % 2;
                        for _ in 0..asks {
                            asked[node] += 1;
                            if now[node].count >= now[node].claim
                                && round_start[node].is_none_or(|t| step - t >= round)
                            {
                                let heard = history
                                    .len()
                                    .checked_sub(delay + 1)
                                    .and_then(|s| history.get(s));
                                let others: u64 = (0..n)
                                    .filter(|&o| o != node)
                                    .map(|o| heard.map_or(0, |h| h[o].held()))
                                    .sum();
                                let waited = tail[node].is_some_and(|t| step - t >= round);
                                match next_claim(limit, now[node], others, n, node, waited) {
                                    Claim::To(c) => {
                                        now[node].claim = c;
                                        claimed_at[node] = Some(step);
                                        round_start[node] = Some(step);
                                        asked[node] = 0;
                                        tail[node] = None;
                                    }
                                    Claim::Later if tail[node].is_none() => tail[node] = Some(step),
                                    Claim::Later | Claim::Exhausted => {}
                                }
                            }
                            if now[node].count < now[node].claim {
                                now[node].count += 1;
                            }
                        }
                        // Two rounds of the demand seen since the last claim.
                        if let Some(t) = claimed_at[node].filter(|t| step - t >= round) {
                            let want = asked[node] * 2 * round as u64 / (step - t).max(1) as u64;
                            if let Some(c) = trimmed(now[node], want) {
                                now[node].claim = c;
                            }
                        }
                    }
                    history.push(now);
                    step += 1;
                }
                let total: u64 = now.iter().map(|c| c.count).sum();
                let counts: Vec<u64> = now.iter().map(|c| c.count).collect();
                println!("delay {delay}, round {round}, window {window}: admitted {total} of {limit} {counts:?}");
                assert!(total < limit + n as u64, "admitted {total} of {limit}");
                assert!(
                    total >= limit - 2 * n as u64,
                    "only {total} of {limit} used"
                );
                if window == 1 {
                    assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
                }
            }
        }
    }
}
