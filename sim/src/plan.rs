//! What one seed runs: the cluster size, the scenario and its fault schedule, the
//! workload and its timings, all drawn from one `u64`.

use std::time::Duration;
use tollgate_proto::ResetDuration;

/// The simulated clocks start at 2026-01-01T12:00:00Z, plus `Plan::epoch_offset`.
pub const EPOCH_MS: u64 = 1_767_268_800_000;

/// A small deterministic generator for the scenario's own choices (splitmix64).
#[derive(Debug, Clone)]
pub struct Choices(u64);

impl Choices {
    pub fn new(seed: u64) -> Choices {
        Choices(seed)
    }

    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.draw() % n.max(1)
    }

    /// In `lo..=hi` milliseconds.
    pub fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }
}

/// The scenarios, one per seed in turn (`seed % 6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The leader is cut off from every other node, then healed; a node crashes.
    IsolateLeader,
    /// The leader hears nobody (its followers still hear it), then healed; a node crashes.
    OneWay,
    /// A minority of nodes is split from the majority, then healed; the provider is out
    /// for a while.
    Split,
    /// Every link drops connections at random and delays messages; the nodes' clocks
    /// disagree.
    Flaky,
    /// The provider is slow, clocks disagree, and a node crashes twice.
    SlowProvider,
    /// Every node in turn is drained, stopped and restarted while traffic flows: no
    /// client request may fail.
    RollingUpgrade,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::IsolateLeader,
        Scenario::OneWay,
        Scenario::Split,
        Scenario::Flaky,
        Scenario::SlowProvider,
        Scenario::RollingUpgrade,
    ];

    pub fn of_seed(seed: u64) -> Scenario {
        Scenario::ALL[(seed % Scenario::ALL.len() as u64) as usize]
    }
}

/// One fault, at a time on the simulated clock, lasting `length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    IsolateLeader {
        at: Duration,
        length: Duration,
    },
    /// Nothing reaches the leader from the other nodes.
    DeafLeader {
        at: Duration,
        length: Duration,
    },
    /// Nodes `minority` are cut off from the others.
    Split {
        at: Duration,
        length: Duration,
        minority: Vec<u64>,
    },
    /// The node stops (losing what its log had not flushed) and starts again.
    Crash {
        node: u64,
        at: Duration,
        length: Duration,
    },
    ProviderOutage {
        at: Duration,
        length: Duration,
    },
    SlowProvider {
        at: Duration,
        length: Duration,
        extra: Duration,
    },
    /// Drain, stop and restart every node in turn, starting at `at`.
    RollingUpgrade {
        at: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub scenario: Scenario,
    pub nodes: u64,
    pub faults: Vec<Fault>,
    /// Per-node clock offsets in ms (index = node id − 1).
    pub skew_ms: Vec<i64>,
    /// Connection failure rate per message, and the largest message latency.
    pub fail_rate: f64,
    pub max_latency: Duration,
    /// When the network stops being flaky (with `fail_rate` above zero).
    pub flaky_until: Duration,
    /// Clients sending requests, each `requests` in turn.
    pub clients: u64,
    pub requests: u64,
    /// The key budget's limit in micro-dollars; the workload asks for more than that.
    pub budget_limit: u64,
    /// The first key's rate limit: requests per minute, below what its clients send.
    pub rate_limit: u64,
    /// When the admin raises the key budget's limit, and by how much.
    pub raise_at: Duration,
    pub raise_by: u64,
    /// When the admin revokes the second key.
    pub revoke_at: Duration,
    /// Upstream latency of a request.
    pub upstream: (u64, u64),
    /// The budgets' window: a day (never rolls over in a run) or a minute, with the
    /// clocks starting a few seconds before a minute ends, so the windows roll over
    /// while the traffic flows (and the skewed clocks disagree about when).
    pub reset: ResetDuration,
    /// Simulated time 0 is `EPOCH_MS + epoch_offset_ms` on an unskewed clock.
    pub epoch_offset_ms: u64,
}

impl Plan {
    pub fn of_seed(seed: u64) -> Plan {
        let mut c = Choices::new(seed ^ 0x7011_6A7E);
        let scenario = Scenario::of_seed(seed);
        let nodes = 3 + c.below(3);
        let mut faults = Vec::new();
        let mut skew_ms = vec![0; nodes as usize];
        let (mut fail_rate, mut max_latency) = (0.0, Duration::from_millis(2));
        let crash = |c: &mut Choices| Fault::Crash {
            node: 1 + c.below(nodes),
            at: c.ms(1_000, 7_000),
            length: c.ms(200, 3_000),
        };
        let skew = |c: &mut Choices, skew_ms: &mut Vec<i64>| {
            for s in skew_ms.iter_mut() {
                *s = c.below(4_001) as i64 - 2_000;
            }
        };
        match scenario {
            Scenario::IsolateLeader => {
                faults.push(Fault::IsolateLeader {
                    at: c.ms(500, 5_000),
                    length: c.ms(1_000, 3_000),
                });
                faults.push(crash(&mut c));
            }
            Scenario::OneWay => {
                faults.push(Fault::DeafLeader {
                    at: c.ms(500, 5_000),
                    length: c.ms(1_000, 3_000),
                });
                faults.push(crash(&mut c));
            }
            Scenario::Split => {
                let size = 1 + c.below((nodes - 1) / 2);
                let first = 1 + c.below(nodes);
                let minority = (0..size).map(|i| (first - 1 + i) % nodes + 1).collect();
                faults.push(Fault::Split {
                    at: c.ms(500, 5_000),
                    length: c.ms(1_000, 4_000),
                    minority,
                });
                faults.push(Fault::ProviderOutage {
                    at: c.ms(1_000, 6_000),
                    length: c.ms(300, 2_000),
                });
            }
            Scenario::Flaky => {
                fail_rate = 0.001 * (1 + c.below(5)) as f64;
                max_latency = c.ms(5, 40);
                skew(&mut c, &mut skew_ms);
            }
            Scenario::SlowProvider => {
                faults.push(Fault::SlowProvider {
                    at: c.ms(500, 4_000),
                    length: c.ms(1_000, 4_000),
                    extra: c.ms(500, 3_000),
                });
                skew(&mut c, &mut skew_ms);
                faults.push(crash(&mut c));
                faults.push(crash(&mut c));
            }
            Scenario::RollingUpgrade => {
                faults.push(Fault::RollingUpgrade {
                    at: c.ms(1_000, 3_000),
                });
            }
        }
        let minute = c.below(3) == 0;
        let reset = if minute {
            ResetDuration::Minute
        } else {
            ResetDuration::Day
        };
        let epoch_offset_ms = if minute {
            60_000 - 1_000 - c.below(5_000)
        } else {
            0
        };
        let clients = 2 + c.below(3);
        let requests = 40 + c.below(40);
        // Requests cost 1 000 to 10 000 µ$ (estimate 10 000). Every client but the first
        // uses the key with the budget: its demand is about 5 500 × (clients − 1) ×
        // requests; the limit is below that, so the budget runs out.
        let demand = 5_500 * (clients - 1) * requests;
        let budget_limit = demand * (40 + c.below(50)) / 100;
        Plan {
            seed,
            scenario,
            nodes,
            faults,
            skew_ms,
            fail_rate,
            max_latency,
            flaky_until: c.ms(4_000, 12_000),
            clients,
            requests,
            budget_limit,
            rate_limit: (clients - 1) * requests * (30 + c.below(60)) / 100,
            raise_at: c.ms(2_000, 8_000),
            raise_by: budget_limit / 4,
            revoke_at: c.ms(1_000, 6_000),
            upstream: (5, 30 + c.below(100)),
            reset,
            epoch_offset_ms,
        }
    }

    /// One line: what this seed runs.
    /// The unskewed wall clock at simulated time `at`.
    pub fn wall_ms(&self, at: Duration) -> u64 {
        EPOCH_MS + self.epoch_offset_ms + at.as_millis() as u64
    }

    pub fn summary(&self) -> String {
        format!(
            "seed {}: {:?}, {} nodes, {} clients × {} requests, key budget {} µ$ per {:?} (+{} at {} ms), clocks start {} ms past 12:00, rate limit {}/min, revoke at {} ms, faults {:?}, skew {:?} ms, fail rate {}, latency ≤ {} ms",
            self.seed,
            self.scenario,
            self.nodes,
            self.clients,
            self.requests,
            self.budget_limit,
            self.reset,
            self.raise_by,
            self.raise_at.as_millis(),
            self.epoch_offset_ms,
            self.rate_limit,
            self.revoke_at.as_millis(),
            self.faults,
            self.skew_ms,
            self.fail_rate,
            self.max_latency.as_millis(),
        )
    }
}
