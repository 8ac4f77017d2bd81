//! Cluster-wide rate limits (issue 5; pure, not yet fed by gossip): how much of a limit's
//! window one node may admit, given its own exact count and the other nodes' counts and
//! demand as last heard.
//!
//! The rule: a node may admit while its count is below
//! `own + (limit − Σ counts) × share`, where `share` is its part of the nodes' recent
//! demand. Every node takes only its share of what remains, recomputed as counts arrive,
//! so the nodes together never take more than what remains as they saw it. What they saw
//! is late by the gossip delay, so the cluster total can pass the limit by at most what
//! the other nodes admitted in that delay (about `total rate × gossip delay`), plus the
//! floor shares given to nodes with no recent demand. A busy node with all the demand has
//! a share near 1 and can use nearly all of the limit.

use std::collections::BTreeMap;

/// A node with no recent demand still gets this fraction (in thousandths) of the share a
/// fair split would give it, so its first requests are not refused for want of history.
const FLOOR_PER_MILLE_OF_FAIR: u64 = 100;

/// What is known of one node in one window of one limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// What the node admitted in the window.
    pub count: u64,
    /// Its recent demand: requests (or tokens) asked for per second, admitted or not,
    /// smoothed.
    pub demand: u64,
}

/// This node's view of one window of one limit.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// This node's own exact figures.
    pub own: Peer,
    /// The other nodes' figures as last heard, by node id.
    pub others: BTreeMap<u64, Peer>,
}

impl Window {
    /// How much this node may still admit in the window under `limit`.
    pub fn allowance(&self, limit: u64) -> u64 {
        let total: u64 = self
            .others
            .values()
            .map(|p| p.count)
            .fold(self.own.count, u64::saturating_add);
        let remaining = limit.saturating_sub(total);
        if remaining == 0 {
            return 0;
        }
        let nodes = self.others.len() as u64 + 1;
        let floor = |demand: u64, sum: u64| {
            // The floor, in the same unit as demand: a tenth of a fair split of the sum.
            let fair = sum.max(1) / nodes;
            demand
                .max(fair.saturating_mul(FLOOR_PER_MILLE_OF_FAIR) / 1000)
                .max(1)
        };
        let raw_sum: u64 = self
            .others
            .values()
            .map(|p| p.demand)
            .fold(self.own.demand, u64::saturating_add);
        let mine = floor(self.own.demand, raw_sum);
        let sum: u64 = self
            .others
            .values()
            .map(|p| floor(p.demand, raw_sum))
            .fold(mine, u64::saturating_add);
        // remaining × mine / sum, rounded up so a node alone with its demand can use
        // the whole remaining room.
        let share = (u128::from(remaining) * u128::from(mine)).div_ceil(u128::from(sum.max(1)));
        u64::try_from(share).unwrap_or(u64::MAX).min(remaining)
    }

    /// Whether one more (of `amount`) may be admitted here under `limit`.
    pub fn admits(&self, limit: u64, amount: u64) -> bool {
        amount <= self.allowance(limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(own: (u64, u64), others: &[(u64, u64)]) -> Window {
        Window {
            own: Peer {
                count: own.0,
                demand: own.1,
            },
            others: others
                .iter()
                .enumerate()
                .map(|(i, &(count, demand))| (i as u64 + 2, Peer { count, demand }))
                .collect(),
        }
    }

    #[test]
    fn alone_a_node_may_use_the_whole_limit() {
        assert_eq!(window((0, 0), &[]).allowance(600), 600);
        assert_eq!(window((590, 50), &[]).allowance(600), 10);
        assert_eq!(window((600, 50), &[]).allowance(600), 0);
    }

    #[test]
    fn the_busy_node_gets_most_of_what_remains() {
        // Node 1 has all the demand; two idle peers keep only their floors.
        let busy = window((0, 100), &[(0, 0), (0, 0)]).allowance(600);
        assert!(busy >= 500, "busy node may admit {busy}");
        let idle = window((0, 0), &[(0, 100), (0, 0)]).allowance(600);
        assert!((1..60).contains(&idle), "idle node may admit {idle}");
    }

    #[test]
    fn equal_demand_splits_what_remains() {
        let a = window((100, 10), &[(100, 10), (100, 10)]).allowance(600);
        assert_eq!(a, 100);
    }

    /// Three nodes with uneven demand admit one request at a time; each hears the others'
    /// counts only every `delay` steps. The total stays within the limit plus what the
    /// others admitted in one delay, and the limit is nearly used.
    #[test]
    fn simulated_nodes_stay_within_the_stated_bound() {
        for (seed, delay) in [(1u64, 1u64), (2, 5), (3, 20), (4, 50)] {
            let limit = 600u64;
            let demand = [60u64, 25, 15];
            let mut counts = [0u64; 3];
            let mut heard = [[0u64; 3]; 3];
            let mut rng = seed;
            let mut step = 0u64;
            let mut tries = 0;
            while tries < 10_000 {
                tries += 1;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                // Requests arrive at each node in proportion to its demand.
                let r = rng % 100;
                let node = if r < 60 {
                    0
                } else if r < 85 {
                    1
                } else {
                    2
                };
                let mut view = Window {
                    own: Peer {
                        count: counts[node],
                        demand: demand[node],
                    },
                    others: BTreeMap::new(),
                };
                for other in 0..3 {
                    if other != node {
                        view.others.insert(
                            other as u64,
                            Peer {
                                count: heard[node][other],
                                demand: demand[other],
                            },
                        );
                    }
                }
                if view.admits(limit, 1) {
                    counts[node] += 1;
                }
                step += 1;
                if step.is_multiple_of(delay) {
                    heard = [counts; 3];
                }
            }
            let total: u64 = counts.iter().sum();
            println!("gossip every {delay} requests: admitted {total} of {limit} ({counts:?})");
            assert!(
                total <= limit + 2 * delay,
                "delay {delay}: admitted {total} of {limit}"
            );
            assert!(total >= limit - 3, "delay {delay}: only {total} of {limit}");
        }
    }
}
