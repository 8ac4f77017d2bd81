//! Circuit breakers per provider config, shared by gossip.
//!
//! Each node counts the outcome of its own attempts. Consecutive failures, or a high
//! error rate over enough attempts, open the breaker: the node records an `Open` event
//! and gossips it. Every node takes the newest event any node reported for a provider
//! config, so one node's discovery reroutes all of them within a gossip round. When an
//! open breaker's time is up it is half-open: each node lets one probe request through
//! at a time; a success records `Closed` (and traffic returns everywhere), a failure
//! opens it again.

use crate::cluster::gossip::keys::{BreakerEvent, BREAKER_PREFIX};
use crate::cluster::gossip::{Gossip, View};
use crate::config::BreakerConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tollgate_proto::ProviderConfigId;

/// A probe that has not finished after this long no longer blocks the next one.
const PROBE_TIMEOUT_MS: u64 = 30_000;
/// What a refused caller is told to wait while another request probes.
const PROBE_WAIT_MS: u64 = 1_000;

/// What a request may do with a provider config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send as usual.
    Closed,
    /// Send: this request is the probe of a half-open breaker.
    Probe,
    /// Do not send before `until_ms`.
    Open { until_ms: u64 },
}

/// What one attempt at a provider config came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered (any answer that is not a provider failure).
    Answered,
    /// Connect error, timeout, 5xx, refused credentials.
    Failed,
    /// Neither (e.g. a 429: the provider is up and busy).
    Neutral,
}

#[derive(Debug, Default)]
struct Local {
    consecutive: u32,
    window_start_ms: u64,
    attempts: u32,
    failures: u32,
    /// This node's last event (also gossiped).
    event: Option<BreakerEvent>,
    /// When this node's probe started, while it runs.
    probe_since_ms: Option<u64>,
    /// The event in force when the counts above started: when another node opens or
    /// closes the breaker, this node counts afresh.
    counting_since: Option<BreakerEvent>,
}

/// One attempt let through by `Breakers::gate`: `finish` records its outcome. Dropped
/// unfinished (the request was cancelled, e.g. its client went away), a probe gives its
/// slot back so the next request can probe.
pub struct Attempt<'a> {
    breakers: &'a Breakers,
    pc: ProviderConfigId,
    gate: Gate,
    finished: bool,
}

impl<'a> Attempt<'a> {
    pub fn gate(&self) -> Gate {
        self.gate
    }

    pub fn finish(mut self, outcome: Outcome, now_ms: u64) {
        self.finished = true;
        self.breakers.record(&self.pc, self.gate, outcome, now_ms);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.finished && self.gate == Gate::Probe {
            // A neutral outcome only frees the probe slot (the time is not used).
            self.breakers
                .record(&self.pc, self.gate, Outcome::Neutral, 0);
        }
    }
}

/// A provider config's breaker as this node sees it, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStatus {
    pub provider_config: String,
    pub event: BreakerEvent,
    /// Which node reported the event that holds (this node's id for its own).
    pub reported_by: u64,
}

pub struct Breakers {
    config: BreakerConfig,
    gossip: Arc<Gossip>,
    local: Mutex<HashMap<ProviderConfigId, Local>>,
}

impl Breakers {
    pub fn new(config: BreakerConfig, gossip: Arc<Gossip>) -> Breakers {
        Breakers {
            config,
            gossip,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ProviderConfigId, Local>> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest event for `pc` among this node's and the others' (in `view`).
    fn effective(
        &self,
        view: &View,
        pc: &ProviderConfigId,
        local: Option<&Local>,
    ) -> Option<(BreakerEvent, u64)> {
        let mut best: Option<(BreakerEvent, u64)> = local
            .and_then(|l| l.event)
            .map(|e| (e, self.gossip.node_id()));
        for (node, event) in view.breakers.get(pc.as_str()).into_iter().flatten() {
            if best.is_none_or(|(b, _)| event.newer_than(b)) {
                best = Some((*event, *node));
            }
        }
        best
    }

    /// Whether a request may go to `pc` now. A `Probe` answer makes the caller this
    /// node's probe: it must `record` the outcome.
    pub fn gate(&self, pc: &ProviderConfigId, now_ms: u64) -> Gate {
        let mut map = self.lock();
        let local = map.get(pc);
        match self.effective(&self.gossip.view(), pc, local) {
            None | Some((BreakerEvent::Closed { .. }, _)) => Gate::Closed,
            Some((BreakerEvent::Open { until_ms, .. }, _)) if now_ms < until_ms => {
                Gate::Open { until_ms }
            }
            Some(_) => {
                let local = map.entry(pc.clone()).or_default();
                match local.probe_since_ms {
                    Some(since) if now_ms.saturating_sub(since) < PROBE_TIMEOUT_MS => Gate::Open {
                        until_ms: now_ms + PROBE_WAIT_MS,
                    },
                    _ => {
                        local.probe_since_ms = Some(now_ms);
                        Gate::Probe
                    }
                }
            }
        }
    }

    /// `gate` as an `Attempt` that records its outcome (or frees a probe slot when
    /// dropped); `Err` with the time the breaker opens again when it is open.
    pub fn attempt(&self, pc: &ProviderConfigId, now_ms: u64) -> Result<Attempt<'_>, u64> {
        match self.gate(pc, now_ms) {
            Gate::Open { until_ms } => Err(until_ms),
            gate => Ok(Attempt {
                breakers: self,
                pc: pc.clone(),
                gate,
                finished: false,
            }),
        }
    }

    /// Records the outcome of an attempt let through by `gate`.
    pub fn record(&self, pc: &ProviderConfigId, gate: Gate, outcome: Outcome, now_ms: u64) {
        let mut map = self.lock();
        let open = BreakerEvent::Open {
            at_ms: now_ms,
            until_ms: now_ms.saturating_add(self.config.open_ms),
        };
        if gate == Gate::Probe {
            let local = map.entry(pc.clone()).or_default();
            local.probe_since_ms = None;
            let event = match outcome {
                Outcome::Answered => BreakerEvent::Closed { at_ms: now_ms },
                Outcome::Failed => open,
                // A busy provider neither proves nor disproves health: probe again.
                Outcome::Neutral => return,
            };
            self.set(pc, local, event);
            return;
        }
        if outcome == Outcome::Neutral {
            return;
        }
        let effective = self
            .effective(&self.gossip.view(), pc, map.get(pc))
            .map(|(e, _)| e);
        let closed = matches!(effective, None | Some(BreakerEvent::Closed { .. }));
        let config = &self.config;
        let local = map.entry(pc.clone()).or_default();
        if local.counting_since != effective {
            local.counting_since = effective;
            local.consecutive = 0;
            local.window_start_ms = now_ms;
            local.attempts = 0;
            local.failures = 0;
        }
        if now_ms.saturating_sub(local.window_start_ms) >= config.window_ms {
            local.window_start_ms = now_ms;
            local.attempts = 0;
            local.failures = 0;
        }
        local.attempts += 1;
        if outcome == Outcome::Answered {
            local.consecutive = 0;
            return;
        }
        local.consecutive += 1;
        local.failures += 1;
        let too_many = local.consecutive >= config.consecutive_failures
            || (local.attempts >= config.min_requests
                && u64::from(local.failures) * 100
                    >= u64::from(config.error_rate_percent) * u64::from(local.attempts));
        if closed && too_many {
            tracing::warn!(provider_config = %pc, failures = local.failures, attempts = local.attempts, "circuit breaker opened");
            self.set(pc, local, open);
        }
    }

    fn set(&self, pc: &ProviderConfigId, local: &mut Local, event: BreakerEvent) {
        local.event = Some(event);
        local.counting_since = Some(event);
        local.consecutive = 0;
        local.attempts = 0;
        local.failures = 0;
        if matches!(event, BreakerEvent::Closed { .. }) {
            tracing::info!(provider_config = %pc, "circuit breaker closed");
        }
        self.gossip
            .publish(format!("{BREAKER_PREFIX}{pc}"), event.encode());
    }

    /// Breakers that are open or half-open now, as this node sees them.
    pub fn not_closed(&self) -> Vec<BreakerStatus> {
        let map = self.lock();
        let view = self.gossip.view();
        let mut pcs: std::collections::BTreeSet<String> = view.breakers.keys().cloned().collect();
        pcs.extend(map.keys().map(|pc| pc.as_str().to_owned()));
        pcs.into_iter()
            .filter_map(|pc| {
                let id = ProviderConfigId::from(pc.as_str());
                match self.effective(&view, &id, map.get(&id)) {
                    Some((event @ BreakerEvent::Open { .. }, reported_by)) => Some(BreakerStatus {
                        provider_config: pc,
                        event,
                        reported_by,
                    }),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(BreakerConfig::default(), Gossip::alone(1))
    }

    #[test]
    fn consecutive_failures_open_then_one_probe_closes() {
        let b = breakers();
        let pc = ProviderConfigId::from("pc_a");
        for t in 0..4 {
            assert_eq!(b.gate(&pc, t), Gate::Closed);
            b.record(&pc, Gate::Closed, Outcome::Failed, t);
        }
        b.record(&pc, Gate::Closed, Outcome::Answered, 4);
        for t in 5..9 {
            b.record(&pc, Gate::Closed, Outcome::Failed, t);
        }
        assert_eq!(
            b.gate(&pc, 9),
            Gate::Closed,
            "four in a row after a success"
        );
        b.record(&pc, Gate::Closed, Outcome::Failed, 9);
        assert_eq!(b.gate(&pc, 10), Gate::Open { until_ms: 5_009 });
        // Half-open: one probe; the others wait for it.
        assert_eq!(b.gate(&pc, 5_009), Gate::Probe);
        assert_eq!(b.gate(&pc, 5_010), Gate::Open { until_ms: 6_010 });
        b.record(&pc, Gate::Probe, Outcome::Failed, 5_020);
        assert_eq!(b.gate(&pc, 5_021), Gate::Open { until_ms: 10_020 });
        assert_eq!(b.gate(&pc, 10_020), Gate::Probe);
        b.record(&pc, Gate::Probe, Outcome::Answered, 10_030);
        assert_eq!(b.gate(&pc, 10_031), Gate::Closed);
        assert!(b.not_closed().is_empty());
    }

    #[test]
    fn a_cancelled_probe_frees_its_slot() {
        let b = breakers();
        let pc = ProviderConfigId::from("pc_d");
        for t in 0..5 {
            b.record(&pc, Gate::Closed, Outcome::Failed, t);
        }
        let probe = b.attempt(&pc, 5_004).expect("half-open");
        assert_eq!(probe.gate(), Gate::Probe);
        assert!(b.attempt(&pc, 5_005).is_err(), "one probe at a time");
        drop(probe);
        let again = b.attempt(&pc, 5_006).expect("the slot is free again");
        assert_eq!(again.gate(), Gate::Probe);
        again.finish(Outcome::Answered, 5_007);
        assert_eq!(b.gate(&pc, 5_008), Gate::Closed);
    }

    #[test]
    fn counts_start_afresh_when_another_node_changes_the_state() {
        let b = breakers();
        let pc = ProviderConfigId::from("pc_e");
        for t in 0..4 {
            b.record(&pc, Gate::Closed, Outcome::Failed, t);
        }
        // Another node opened and then closed it: this node's four failures are history.
        let mut view = View::default();
        view.breakers
            .insert("pc_e".into(), vec![(2, BreakerEvent::Closed { at_ms: 10 })]);
        b.gossip.set_view(view);
        b.record(&pc, Gate::Closed, Outcome::Failed, 20);
        assert_eq!(b.gate(&pc, 21), Gate::Closed);
    }

    #[test]
    fn a_high_error_rate_opens_and_busy_answers_do_not() {
        let b = breakers();
        let pc = ProviderConfigId::from("pc_b");
        for t in 0..100 {
            b.record(&pc, Gate::Closed, Outcome::Neutral, t);
        }
        assert_eq!(b.gate(&pc, 100), Gate::Closed);
        // Alternating: never 5 in a row, but half of 20 attempts failed.
        for t in 0..19u64 {
            let outcome = if t % 2 == 0 {
                Outcome::Answered
            } else {
                Outcome::Failed
            };
            b.record(&pc, Gate::Closed, outcome, 200 + t);
        }
        assert_eq!(b.gate(&pc, 300), Gate::Closed, "9 of 19");
        b.record(&pc, Gate::Closed, Outcome::Failed, 301);
        assert!(matches!(b.gate(&pc, 302), Gate::Open { .. }), "10 of 20");
    }

    #[test]
    fn another_nodes_event_holds_here_until_a_newer_one() {
        let b = breakers();
        let pc = ProviderConfigId::from("pc_c");
        let open = BreakerEvent::Open {
            at_ms: 1_000,
            until_ms: 6_000,
        };
        let mut view = View::default();
        view.breakers.insert("pc_c".into(), vec![(2, open)]);
        b.gossip.set_view(view);
        assert_eq!(b.gate(&pc, 2_000), Gate::Open { until_ms: 6_000 });
        assert_eq!(b.not_closed().first().map(|s| s.reported_by), Some(2));
        // Another node closed it later: closed here too.
        let mut view = View::default();
        view.breakers.insert(
            "pc_c".into(),
            vec![(2, open), (3, BreakerEvent::Closed { at_ms: 7_000 })],
        );
        b.gossip.set_view(view);
        assert_eq!(b.gate(&pc, 7_001), Gate::Closed);
        // An old local event does not override a newer remote one.
        assert_eq!(b.gate(&pc, 6_500), Gate::Closed);
    }
}
