//! The request steps that need no HTTP, in their order: who is asking
//! (`Gate::authenticate`), where the request may go and whether the caller's rate limits
//! let it in (`Gate::admit`), and, per provider config tried, its price, its provider
//! config's limits and the reservation of its estimated cost on every budget of its
//! chain (`Gate::reserve`, which gives the `Billing` that charges it at the end). The
//! HTTP proxy calls these around its parsing and relaying; the simulator calls the same
//! steps, so what it checks is what serves.

use crate::clock::Clock;
use crate::gateway::auth::{self, AuthError};
use crate::gateway::billing::{Billing, Charger, STREAM_HEADROOM_TOKENS};
use crate::gateway::providers::Providers;
use crate::gateway::routing::{self, PatternCache, Route, RouteError};
use crate::governance::admission::{Admission, AdmissionError, Hold};
use crate::governance::limits::{RateLimited, RateLimiter};
use crate::governance::replicator::Replicator;
use std::sync::Arc;
use tollgate_proto::{KeyId, LogContent, Owner, Price, RateLimit, Usage, Usd, VirtualKey};

/// What the request steps read and write: the replicated state, the providers, the rate
/// limiter, the escrow leases and the charge pipeline.
pub struct Gate {
    pub replicator: Arc<dyn Replicator>,
    pub providers: Providers,
    pub patterns: PatternCache,
    pub limiter: Arc<RateLimiter>,
    pub admission: Arc<Admission>,
    pub charger: Arc<Charger>,
    pub clock: Arc<dyn Clock>,
    /// The completion size reserved for when a request names no `max_tokens`.
    pub default_max_tokens: u64,
}

/// An authenticated caller: its key and the rate limits of its key, team and customer.
pub struct Caller {
    pub key: VirtualKey,
    /// What the request log keeps of this key's requests, if the key says.
    pub log_content: Option<LogContent>,
    limits: Vec<RateLimit>,
}

/// What one request asks of its budgets: its size and its completion cap.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub request_id: &'a str,
    pub body_bytes: u64,
    /// The request's `max_tokens` (or its OpenAI equivalent), if it names one.
    pub max_tokens: Option<u64>,
    /// Completions asked for (OpenAI `n`), each up to `max_tokens`.
    pub choices: u64,
    /// The fewest output tokens per completion the request can be served with (more
    /// than its thinking budget, when it thinks): the floor of a lowered cap.
    pub min_output: u64,
    /// A stream whose relay meters it: it reserves its expected output at first (the
    /// key's recent answers from this model, `Charger::outputs`; at most `max_tokens`)
    /// instead of its worst case.
    pub metered: bool,
}

/// The smallest answer a request can be lowered to: one token.
pub const MIN_ANSWER_TOKENS: u64 = 1;

/// Why the steps after authentication refused a request.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error("model '{model}' has no price and virtual key {key} spends against a budget; ask your gateway admin to set a price for it or a default price (model \"*\")")]
    NoPrice { model: String, key: KeyId },
    #[error(transparent)]
    Admission(#[from] AdmissionError),
}

impl Gate {
    /// The cost of the highest completion cap (per completion) the room left on
    /// `chain` affords for this request's prompt; or the 402 that names why none does
    /// (`why`: the refusal of the full request, kept when nothing is left at all).
    fn lowered(
        &self,
        chain: &[tollgate_proto::BudgetId],
        price: &Price,
        estimated: &Usage,
        ask: Ask<'_>,
        why: String,
    ) -> Result<Usd, GateError> {
        let Some((tightest, left)) = self.admission.room_left(chain) else {
            return Err(AdmissionError::Exhausted(why).into());
        };
        let most = estimated.output_tokens / ask.choices.max(1);
        match affordable_output(price, estimated, ask.choices, left, ask.min_output, most) {
            Some(cap) => {
                let usage = Usage {
                    output_tokens: cap.saturating_mul(ask.choices),
                    ..*estimated
                };
                Ok(price.cost(&usage))
            }
            None if left.0 == 0 => Err(AdmissionError::Exhausted(why).into()),
            None => {
                let minimum = price.cost(&Usage {
                    output_tokens: ask.min_output.saturating_mul(ask.choices),
                    ..*estimated
                });
                Err(self
                    .admission
                    .too_little_left(&tightest, left, minimum)
                    .into())
            }
        }
    }
}

impl Gate {
    /// For a request whose reservation (`most`) did not fit: what the leases have free
    /// now, up to `most`, or else the request's minimum (its prompt and the smallest
    /// answer: for a metered stream `STREAM_HEADROOM_TOKENS`); or the 402 that says
    /// which of the two the budget lacks.
    async fn least(
        &self,
        chain: &[tollgate_proto::BudgetId],
        price: &Price,
        estimated: &Usage,
        ask: Ask<'_>,
        most: Usd,
        why: String,
    ) -> Result<(Hold, Usd), GateError> {
        // A metered stream's smallest answer keeps the headroom its metering needs,
        // within its cap.
        let headroom = if ask.metered {
            STREAM_HEADROOM_TOKENS
        } else {
            MIN_ANSWER_TOKENS
        };
        let smallest = ask
            .min_output
            .max(headroom)
            .min(estimated.output_tokens / ask.choices.max(1));
        let minimum = price.cost(&Usage {
            output_tokens: smallest.saturating_mul(ask.choices),
            ..*estimated
        });
        if let Some(free) = self.admission.reserve_free(chain, minimum, most) {
            return Ok(free);
        }
        match self.admission.reserve(chain, minimum).await {
            Ok(hold) => Ok((hold, minimum)),
            Err(AdmissionError::Exhausted(refused)) => match self.admission.room_left(chain) {
                Some((tightest, left)) if left < minimum => Err(self
                    .admission
                    .too_little_left(&tightest, left, minimum)
                    .into()),
                _ if refused.is_empty() => Err(AdmissionError::Exhausted(why).into()),
                _ => Err(AdmissionError::Exhausted(refused).into()),
            },
            Err(e) => Err(e.into()),
        }
    }
}

/// The most output tokens per completion, between `min` and `max`, whose cost with the
/// prompt of `estimated` and `choices` completions fits in `room`.
pub fn affordable_output(
    price: &Price,
    estimated: &Usage,
    choices: u64,
    room: Usd,
    min: u64,
    max: u64,
) -> Option<u64> {
    let cost = |tokens: u64| {
        price.cost(&Usage {
            output_tokens: tokens.saturating_mul(choices),
            ..*estimated
        })
    };
    if min > max || cost(min) > room {
        return None;
    }
    // Cost grows with the tokens: the largest that fits, by bisection.
    let (mut fits, mut over) = (min, max.saturating_add(1));
    while over - fits > 1 {
        let mid = fits + (over - fits) / 2;
        if cost(mid) <= room {
            fits = mid;
        } else {
            over = mid;
        }
    }
    Some(fits)
}

impl Caller {
    /// The rate limits of the caller's key, team and customer.
    pub fn limits(&self) -> &[RateLimit] {
        &self.limits
    }
}

impl Gate {
    /// The enabled key whose secret the caller presented (`None`: it presented none).
    pub fn authenticate(&self, secret: Option<&str>) -> Result<Caller, AuthError> {
        let state = self.replicator.state().read();
        let key = auth::key_for_secret(&state, secret.ok_or(AuthError::MissingKey)?)?;
        let limits = state
            .rate_limit_chain(&key.id, None)
            .into_iter()
            .cloned()
            .collect();
        let log_content = state.key_log_content(&key.id);
        Ok(Caller {
            key,
            limits,
            log_content,
        })
    }

    /// The provider configs that may serve `model` for this caller, in the order to try
    /// them (`pick` turns the weighted choice), once its rate limits admit the request.
    pub fn admit(&self, caller: &Caller, model: &str, pick: u64) -> Result<Vec<Route>, GateError> {
        let routes = routing::resolve(&caller.key, &self.providers, model, pick, &self.patterns)?;
        self.limiter.admit(&caller.limits, self.clock.now_ms())?;
        Ok(routes)
    }

    /// Checks the price and the provider config's rate limits for one route, and
    /// reserves the request's estimated cost on every budget of its chain.
    pub async fn reserve(
        &self,
        caller: &Caller,
        route: &Route,
        ask: Ask<'_>,
    ) -> Result<Billing, GateError> {
        let key = &caller.key;
        let (chain, price, all_limits) = {
            let state = self.replicator.state().read();
            let chain = state.budget_chain(&key.id, Some(&route.config.id));
            let price = state.price_for(&route.upstream_model).cloned();
            let all_limits: Vec<RateLimit> = state
                .rate_limit_chain(&key.id, Some(&route.config.id))
                .into_iter()
                .cloned()
                .collect();
            (chain, price, all_limits)
        };
        if price.is_none() && !chain.is_empty() {
            return Err(GateError::NoPrice {
                model: route.upstream_model.clone(),
                key: key.id.clone(),
            });
        }
        // The estimate: every four body bytes a prompt token, every completion at its cap.
        let estimated_usage = Usage {
            input_tokens: ask.body_bytes.div_ceil(4),
            output_tokens: ask
                .max_tokens
                .unwrap_or(self.default_max_tokens)
                .saturating_mul(ask.choices),
            ..Usage::default()
        };
        let cost_of = |usage: &Usage| price.as_ref().map_or(Usd::ZERO, |p| p.cost(usage));
        // A metered stream reserves its expected output (its relay extends the hold as
        // the output comes); anything else its worst case.
        let expected = ask.metered.then(|| Usage {
            output_tokens: self
                .charger
                .outputs
                .expected(&key.id, &route.upstream_model)
                .min(ask.max_tokens.unwrap_or(self.default_max_tokens))
                .saturating_mul(ask.choices),
            ..estimated_usage
        });
        let first = expected.unwrap_or(estimated_usage);
        let first_cost = cost_of(&first);
        let (hold, cap, reserved, reserved_usage) =
            match self.admission.reserve(&chain, first_cost).await {
                Ok(hold) => (hold, None, first_cost, first),
                // The whole does not fit: the request may still, with a lower cap, or a
                // metered stream with a smaller start (its relay extends the hold).
                Err(AdmissionError::Exhausted(why)) => {
                    let Some(price) = price.as_ref() else {
                        return Err(AdmissionError::Exhausted(why).into());
                    };
                    let metered = expected.is_some();
                    let (hold, cost) = if metered {
                        self.least(&chain, price, &estimated_usage, ask, first_cost, why)
                            .await?
                    } else {
                        let cost = self.lowered(&chain, price, &estimated_usage, ask, why)?;
                        match self.admission.reserve(&chain, cost).await {
                            Ok(hold) => (hold, cost),
                            // Part of the room is held elsewhere: what is free here.
                            Err(AdmissionError::Exhausted(why)) => {
                                self.least(&chain, price, &estimated_usage, ask, cost, why)
                                    .await?
                            }
                            Err(e) => return Err(e.into()),
                        }
                    };
                    let most = estimated_usage.output_tokens / ask.choices.max(1);
                    let output =
                        affordable_output(price, &estimated_usage, ask.choices, cost, 0, most)
                            .unwrap_or(ask.min_output);
                    let usage = Usage {
                        output_tokens: output.saturating_mul(ask.choices),
                        ..estimated_usage
                    };
                    let lower = !metered && usage.output_tokens < estimated_usage.output_tokens;
                    (hold, lower.then_some(output), cost, usage)
                }
                Err(e) => return Err(e.into()),
            };
        let metered = expected.is_some() && cap.is_none() && !chain.is_empty();
        let config_limits: Vec<RateLimit> = all_limits
            .iter()
            .filter(|l| matches!(l.owner, Owner::ProviderConfig(_)))
            .cloned()
            .collect();
        // The time again: the reservation above may have waited.
        self.limiter.admit(&config_limits, self.clock.now_ms())?;
        Ok(Billing {
            charger: Arc::clone(&self.charger),
            request_id: ask.request_id.into(),
            key_id: key.id.clone(),
            provider_config_id: route.config.id.clone(),
            model: route.upstream_model.clone(),
            price,
            hold: Some(hold),
            cap,
            metered,
            counting: self.charger.outputs.bytes_per_token(&route.upstream_model),
            chain,
            reserved,
            estimate: reserved_usage,
            answered: false,
            trail: None,
            token_limits: all_limits
                .into_iter()
                .filter(|l| l.token_max.is_some())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// $3 / $15 per million input / output tokens.
    fn price() -> Price {
        Price {
            model: "m".into(),
            input_per_mtok: Usd(3_000_000),
            output_per_mtok: Usd(15_000_000),
            cache_write_per_mtok: Usd(0),
            cache_read_per_mtok: Usd(0),
        }
    }

    fn prompt(tokens: u64) -> Usage {
        Usage {
            input_tokens: tokens,
            ..Usage::default()
        }
    }

    #[test]
    fn the_largest_cap_that_fits_the_room() {
        // 12 500 prompt tokens cost 37 500 µ$; each output token 15 µ$.
        let p = prompt(12_500);
        let cap = affordable_output(&price(), &p, 1, Usd(1_000_000), 1, 128_000);
        assert_eq!(cap, Some(64_166));
        let cost = |t: u64| {
            price().cost(&Usage {
                output_tokens: t,
                ..p
            })
        };
        assert!(cost(64_166) <= Usd(1_000_000) && cost(64_167) > Usd(1_000_000));
        // Never above what the request asked.
        assert_eq!(
            affordable_output(&price(), &p, 1, Usd(10_000_000), 1, 128_000),
            Some(128_000)
        );
        // Two completions share the room.
        assert_eq!(
            affordable_output(&price(), &p, 2, Usd(1_000_000), 1, 128_000),
            Some(32_083)
        );
    }

    #[test]
    fn no_cap_when_not_even_the_minimum_fits() {
        let p = prompt(12_500);
        // The prompt alone is 37 500 µ$.
        assert_eq!(
            affordable_output(&price(), &p, 1, Usd(37_500), 1, 128_000),
            None
        );
        assert_eq!(
            affordable_output(&price(), &p, 1, Usd(37_515), 1, 128_000),
            Some(1)
        );
        // A thinking request needs 1 025 output tokens at least.
        assert_eq!(
            affordable_output(&price(), &p, 1, Usd(50_000), 1_025, 128_000),
            None
        );
        assert_eq!(
            affordable_output(&price(), &p, 1, Usd(100_000), 1_025, 128_000),
            Some(4_166)
        );
        assert_eq!(
            affordable_output(&price(), &p, 1, Usd(100_000), 10, 5),
            None
        );
    }
}
