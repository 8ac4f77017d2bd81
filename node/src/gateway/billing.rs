//! What a request owes: the reservation it holds and, at completion, the charge it sends
//! into the pipeline. A request that never reached a provider is charged nothing; one the
//! provider answered is always charged, even if the answer is then lost (client gone,
//! answer unreadable): for the usage seen, else for its estimate.

use crate::clock::Clock;
use crate::governance::charge::ChargeSender;
use crate::governance::limits::RateLimiter;
use std::sync::atomic::AtomicU64;
use crate::governance::admission::Hold;
use crate::governance::charge::PendingCharge;
use std::sync::Arc;
use tollgate_proto::{Charge, KeyId, Price, ProviderConfigId, RateLimit, RequestId, Usage, Usd};

/// Where finished requests' charges go: the charge pipeline, and the token windows of
/// their rate limits.
pub struct Charger {
    pub charges: ChargeSender,
    pub limiter: Arc<RateLimiter>,
    pub clock: Arc<dyn Clock>,
    /// Charges sent into the pipeline (`tollgate_charges_total`).
    pub sent: AtomicU64,
}

pub struct Billing {
    pub charger: Arc<Charger>,
    pub request_id: RequestId,
    pub key_id: KeyId,
    pub provider_config_id: ProviderConfigId,
    /// The upstream model, whose price applies.
    pub model: String,
    pub price: Option<Price>,
    /// `None` once charged.
    pub hold: Option<Hold>,
    /// The completion cap the reservation affords, when lower than the request asked:
    /// the request must go upstream with it (`Inbound::capped`).
    pub cap: Option<u64>,
    /// Limits whose token windows count this request's tokens.
    pub token_limits: Vec<RateLimit>,
    /// The usage the reservation was sized for: charged when no usage was reported.
    pub estimate: Usage,
    /// The provider accepted the request (answered 2xx), so it must be paid for.
    pub answered: bool,
}

impl Billing {
    /// Marks that the provider answered: from here on, dropping this charges the estimate.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// Charges `usage`: the reservation becomes the real cost until the charge is
    /// applied. Gives the cost charged.
    pub fn finish(mut self, usage: Usage) -> Usd {
        self.charge(usage)
    }

    fn charge(&mut self, mut usage: Usage) -> Usd {
        let Some(hold) = self.hold.take() else {
            return Usd::ZERO;
        };
        if usage.input_tokens == 0
            && usage.cache_creation_input_tokens == 0
            && usage.cache_read_input_tokens == 0
        {
            // The stream ended before reporting its prompt (a client gone early, an
            // upstream that omits usage): the prompt was still processed.
            usage.input_tokens = self.estimate.input_tokens;
        }
        let cost = self.price.as_ref().map_or(Usd::ZERO, |p| p.cost(&usage));
        let now_ms = self.charger.clock.now_ms();
        self.charger
            .limiter
            .add_tokens(&self.token_limits, usage.total_tokens(), now_ms);
        tracing::debug!(
            request_id = %self.request_id,
            key = %self.key_id,
            model = %self.model,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            cost_micros = cost.0,
            "request charged"
        );
        let charge = Charge {
            request_id: self.request_id.clone(),
            key_id: self.key_id.clone(),
            provider_config_id: Some(self.provider_config_id.clone()),
            model: self.model.clone(),
            usage,
            cost,
            at_ms: now_ms,
        };
        self.charger
            .sent
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.charger.charges.send(PendingCharge {
            charge,
            hold: hold.settle(cost),
        });
        cost
    }
}

impl Drop for Billing {
    fn drop(&mut self) {
        if self.answered && self.hold.is_some() {
            tracing::warn!(request_id = %self.request_id, "answered request lost before its usage was read; charging its estimate");
            let estimate = self.estimate;
            self.charge(estimate);
        }
    }
}
