//! What a request owes: the reservation it holds and, at completion, the charge it sends
//! into the pipeline. A request that never reached a provider is charged nothing; one the
//! provider answered is always charged, even if the answer is then lost (client gone,
//! answer unreadable): for the usage seen, else for its estimate.

use crate::clock::Clock;
use crate::governance::admission::Admission;
use crate::governance::admission::Hold;
use crate::governance::charge::ChargeSender;
use crate::governance::charge::PendingCharge;
use crate::governance::limits::RateLimiter;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tollgate_proto::{
    BudgetId, Charge, KeyId, Price, ProviderConfigId, RateLimit, RequestId, Usage, Usd,
};

/// Where finished requests' charges go: the charge pipeline, and the token windows of
/// their rate limits.
pub struct Charger {
    pub charges: ChargeSender,
    /// Where a metered stream's reservation is extended.
    pub admission: Arc<Admission>,
    /// Recent output sizes, which size a metered stream's first reservation.
    pub outputs: crate::gateway::estimate::OutputEstimates,
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
    /// A stream reserved for its expected output, not its worst case: its relay meters
    /// it (`keep_ahead`) and ends it when no budget can cover more.
    pub metered: bool,
    /// How a metered stream's text counts as tokens until the provider reports them.
    pub counting: crate::gateway::estimate::BytesPerToken,
    /// The budgets the hold is on, for extending it.
    pub chain: Vec<BudgetId>,
    /// What the hold is on each budget of the chain.
    pub reserved: Usd,
    /// Limits whose token windows count this request's tokens.
    pub token_limits: Vec<RateLimit>,
    /// The usage the reservation was sized for: charged when no usage was reported.
    pub estimate: Usage,
    /// The provider accepted the request (answered 2xx), so it must be paid for.
    pub answered: bool,
    /// The request's record, which the charge completes (none in the simulator).
    pub trail: Option<Arc<crate::gateway::trail::Trail>>,
}

/// A metered stream's reservation is extended once what it used leaves less than this
/// share of it (a quarter) free, or less than `STREAM_HEADROOM_TOKENS`; it ends only
/// when it cannot be and less than `STREAM_HEADROOM_TOKENS` is free.
const HEADROOM_DIVISOR: u64 = 4;
/// The output a metered stream always keeps reserved ahead of what it used: more than
/// one read from the provider brings (its events are a few tokens each; a read bringing
/// more than this past the end of the room is what a stream can overshoot by). It is
/// also the smallest answer a metered stream starts with.
pub const STREAM_HEADROOM_TOKENS: u64 = 256;

impl Billing {
    /// Keeps a metered stream's reservation ahead of `used` (the usage so far, output
    /// counted generously): once less than a quarter of it (or `STREAM_HEADROOM_TOKENS`)
    /// is free, it is extended by as much again, or by what the budgets have left; the
    /// stream may use it up to its last `STREAM_HEADROOM_TOKENS`. False when nothing
    /// more could be reserved and less than that is free: the stream must end now, while
    /// its reservation still covers it.
    pub async fn keep_ahead(&mut self, used: &Usage) -> bool {
        let Some(price) = self.price.as_ref() else {
            return true;
        };
        if !self.metered || self.chain.is_empty() {
            return true;
        }
        // Before the provider reports the prompt, count the estimate's.
        let mut used = *used;
        if used.input_tokens == 0
            && used.cache_creation_input_tokens == 0
            && used.cache_read_input_tokens == 0
        {
            used.input_tokens = self.estimate.input_tokens;
        }
        let cost = price.cost(&used).0;
        let least = price
            .cost(&Usage {
                output_tokens: STREAM_HEADROOM_TOKENS,
                ..Usage::default()
            })
            .0;
        let headroom = |reserved: u64| (reserved / HEADROOM_DIVISOR).max(least);
        let admission = Arc::clone(&self.charger.admission);
        let before = self.reserved;
        // A chunk may carry more than the headroom: extend until it is covered again.
        while cost.saturating_add(headroom(self.reserved.0)) > self.reserved.0 {
            let reserved = self.reserved.0;
            let left = admission
                .room_left(&self.chain)
                .map_or(0, |(_, left)| left.0);
            let short = cost
                .saturating_add(headroom(reserved))
                .saturating_sub(reserved);
            let more = reserved.max(short).max(1).min(left);
            if more == 0 {
                break;
            }
            // What this node's leases have free, at once; asking the cluster (which may
            // wait for other nodes) only when the stream would otherwise end.
            let (extension, got) = match admission.reserve_free(&self.chain, Usd(1), Usd(more)) {
                Some(free) => free,
                // Only what it needs to go on: more could fail where this fits.
                None if cost.saturating_add(least) > reserved => {
                    let need = cost.saturating_add(least).saturating_sub(reserved).max(1);
                    match admission.reserve(&self.chain, Usd(need)).await {
                        Ok(hold) => (hold, Usd(need)),
                        Err(_) => break,
                    }
                }
                None => break,
            };
            let Some(hold) = self.hold.as_mut() else {
                break;
            };
            hold.absorb(extension);
            self.reserved = Usd(reserved.saturating_add(got.0));
            tracing::debug!(request_id = %self.request_id, reserved = self.reserved.0, "stream reservation extended");
        }
        if self.reserved > before {
            if let Some(trail) = &self.trail {
                trail.extended(self.reserved);
            }
        }
        // Without more room, the stream goes on while the least headroom is left.
        if cost.saturating_add(least) <= self.reserved.0 {
            return true;
        }
        let reserved = self.reserved.0;
        tracing::info!(request_id = %self.request_id, reserved, used = cost, "no budget room for more of this stream; ending it as a length stop");
        false
    }

    /// Learns how this model's streamed text counts, from an answer that streamed
    /// `bytes` of text for `tokens` reported output tokens.
    pub fn learn_counting(&self, bytes: u64, tokens: u64) {
        self.charger
            .outputs
            .learn_counting(&self.model, bytes, tokens);
    }

    /// Marks that the provider answered: from here on, dropping this charges the estimate.
    pub fn answered(&mut self) {
        self.answered = true;
        if let Some(trail) = &self.trail {
            trail.first_byte();
        }
    }

    /// Bytes of the answer as the client gets them (kept when content is captured).
    pub fn answer(&self, bytes: &[u8]) {
        if let Some(trail) = self.trail.as_ref().filter(|t| t.captures()) {
            trail.answer(bytes);
        }
    }

    /// The request is about to go to `provider`: its intent is written first.
    pub fn intent(&self, provider: &str) {
        if let Some(trail) = &self.trail {
            trail.attempt(
                provider,
                &self.key_id,
                &self.provider_config_id,
                &self.model,
                self.reserved,
            );
        }
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
        // Only budgeted requests are metered, so only they need the estimates.
        if !self.chain.is_empty() {
            self.charger
                .outputs
                .record(&self.key_id, &self.model, usage.output_tokens);
        }
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
        let pending = PendingCharge {
            charge,
            hold: hold.settle(cost),
        };
        match &self.trail {
            Some(trail) => trail.charged(pending, 200),
            None => self.charger.charges.send(pending),
        }
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
