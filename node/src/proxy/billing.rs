//! What a request owes: the reservation it holds and, at completion, the charge it sends
//! into the pipeline. A request that never reached a provider is charged nothing.

use crate::app::App;
use crate::charge::PendingCharge;
use crate::limits::Hold;
use std::sync::Arc;
use tollgate_proto::{Charge, KeyId, Price, ProviderConfigId, RateLimit, RequestId, Usage, Usd};

pub struct Billing {
    pub app: Arc<App>,
    pub request_id: RequestId,
    pub key_id: KeyId,
    pub provider_config_id: ProviderConfigId,
    /// The upstream model, whose price applies.
    pub model: String,
    pub price: Option<Price>,
    pub hold: Hold,
    /// Limits whose token windows count this request's tokens.
    pub token_limits: Vec<RateLimit>,
}

impl Billing {
    /// Charges `usage`: the reservation becomes the real cost until the charge is applied.
    pub fn finish(self, usage: Usage) {
        let cost = self.price.as_ref().map_or(Usd::ZERO, |p| p.cost(&usage));
        let now_ms = self.app.now_ms();
        self.app
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
        let hold = self.hold.settle(cost);
        let charge = Charge {
            request_id: self.request_id,
            key_id: self.key_id,
            provider_config_id: Some(self.provider_config_id),
            model: self.model,
            usage,
            cost,
            at_ms: now_ms,
        };
        self.app.charges.send(PendingCharge { charge, hold });
    }
}
