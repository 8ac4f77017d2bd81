//! Every gossip key this node writes or reads, and the typed values behind them. chitchat
//! values are strings; nothing outside this module spells a key or parses a value.

use std::fmt;

/// `joining` | `ready` | `draining`.
pub const NODE_STATE: &str = "node.state";
/// The node's build version (`CARGO_PKG_VERSION`).
pub const NODE_VERSION: &str = "node.version";
/// Where the node serves HTTP (proxy and admin API).
pub const NODE_HTTP_ADDR: &str = "node.http_addr";
/// The peer protocol versions the node speaks, `min-max`.
pub const NODE_PROTOCOL: &str = "node.protocol";
/// `breaker.{provider config id}` → the node's last breaker event for it.
pub const BREAKER_PREFIX: &str = "breaker.";
/// `rate.{rate limit id}.{requests|tokens}` → the node's claim in the current window.
pub const RATE_PREFIX: &str = "rate.";

/// A node's own view of its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    Joining,
    Ready,
    Draining,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Joining => "joining",
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
        }
    }

    pub fn parse(text: &str) -> Option<NodeState> {
        match text {
            "joining" => Some(NodeState::Joining),
            "ready" => Some(NodeState::Ready),
            "draining" => Some(NodeState::Draining),
            _ => None,
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A breaker's last transition as one node saw it. Nodes share these and each takes the
/// newest (an open wins a tie), so one node's discovery reroutes all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerEvent {
    /// Opened at `at_ms`; no request until `until_ms`, then one probe at a time.
    Open { at_ms: u64, until_ms: u64 },
    /// Closed (a probe succeeded) at `at_ms`.
    Closed { at_ms: u64 },
}

impl BreakerEvent {
    pub fn at_ms(self) -> u64 {
        match self {
            BreakerEvent::Open { at_ms, .. } | BreakerEvent::Closed { at_ms } => at_ms,
        }
    }

    /// Whether `self` supersedes `other`.
    pub fn newer_than(self, other: BreakerEvent) -> bool {
        (self.at_ms(), matches!(self, BreakerEvent::Open { .. }))
            > (other.at_ms(), matches!(other, BreakerEvent::Open { .. }))
    }

    pub fn encode(self) -> String {
        match self {
            BreakerEvent::Open { at_ms, until_ms } => format!("open:{at_ms}:{until_ms}"),
            BreakerEvent::Closed { at_ms } => format!("closed:{at_ms}"),
        }
    }

    pub fn decode(text: &str) -> Option<BreakerEvent> {
        let mut parts = text.split(':');
        let event = match (parts.next()?, parts.next()?, parts.next()) {
            ("open", at, Some(until)) => BreakerEvent::Open {
                at_ms: at.parse().ok()?,
                until_ms: until.parse().ok()?,
            },
            ("closed", at, None) => BreakerEvent::Closed {
                at_ms: at.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(event)
    }
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Requests,
    Tokens,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Requests => "requests",
            Dimension::Tokens => "tokens",
        }
    }
}

/// The gossip key of one dimension of one rate limit.
pub fn rate_key(limit_id: &str, dimension: Dimension) -> String {
    format!("{RATE_PREFIX}{limit_id}.{}", dimension.as_str())
}

/// Splits a `rate_key` into the limit id and dimension.
pub fn parse_rate_key(key: &str) -> Option<(&str, Dimension)> {
    let rest = key.strip_prefix(RATE_PREFIX)?;
    let (id, dimension) = rest.rsplit_once('.')?;
    let dimension = match dimension {
        "requests" => Dimension::Requests,
        "tokens" => Dimension::Tokens,
        _ => return None,
    };
    Some((id, dimension))
}

/// One node's part of one window of a rate limit: what it has admitted (`count`) and the
/// part of the limit it has claimed for itself (`claim`, never below `count` except for
/// tokens, which are counted after the fact).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateClaim {
    pub window_start_ms: u64,
    pub count: u64,
    pub claim: u64,
}

impl RateClaim {
    pub fn encode(self) -> String {
        format!("{}:{}:{}", self.window_start_ms, self.count, self.claim)
    }

    pub fn decode(text: &str) -> Option<RateClaim> {
        let mut parts = text.split(':').map(str::parse::<u64>);
        let claim = RateClaim {
            window_start_ms: parts.next()?.ok()?,
            count: parts.next()?.ok()?,
            claim: parts.next()?.ok()?,
        };
        parts.next().is_none().then_some(claim)
    }

    /// What this node holds of the limit: its claim, or its count if it went past it.
    pub fn held(self) -> u64 {
        self.claim.max(self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_ignored() {
        for e in [
            BreakerEvent::Open {
                at_ms: 5,
                until_ms: 9,
            },
            BreakerEvent::Closed { at_ms: 7 },
        ] {
            assert_eq!(BreakerEvent::decode(&e.encode()), Some(e));
        }
        for bad in ["", "open:1", "closed:x", "open:1:2:3", "half:1"] {
            assert_eq!(BreakerEvent::decode(bad), None, "{bad}");
        }
        let c = RateClaim {
            window_start_ms: 60_000,
            count: 3,
            claim: 200,
        };
        assert_eq!(RateClaim::decode(&c.encode()), Some(c));
        assert_eq!(RateClaim::decode("1:2"), None);
        assert_eq!(RateClaim::decode("1:2:3:4"), None);
        let key = rate_key("rl_a.b", Dimension::Tokens);
        assert_eq!(parse_rate_key(&key), Some(("rl_a.b", Dimension::Tokens)));
        assert_eq!(parse_rate_key("rate.x.bytes"), None);
        assert_eq!(NodeState::parse("draining"), Some(NodeState::Draining));
    }

    #[test]
    fn the_newest_event_wins_and_open_wins_a_tie() {
        let open = BreakerEvent::Open {
            at_ms: 10,
            until_ms: 20,
        };
        assert!(BreakerEvent::Closed { at_ms: 11 }.newer_than(open));
        assert!(open.newer_than(BreakerEvent::Closed { at_ms: 10 }));
        assert!(!BreakerEvent::Closed { at_ms: 10 }.newer_than(open));
    }
}
