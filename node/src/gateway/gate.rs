//! The request steps that need no HTTP, in their order: who is asking
//! (`Gate::authenticate`), where the request may go and whether the caller's rate limits
//! let it in (`Gate::admit`), and, per provider config tried, its price, its provider
//! config's limits and the reservation of its estimated cost on every budget of its
//! chain (`Gate::reserve`, which gives the `Billing` that charges it at the end). The
//! HTTP proxy calls these around its parsing and relaying; the simulator calls the same
//! steps, so what it checks is what serves.

use crate::clock::Clock;
use crate::gateway::auth::{self, AuthError};
use crate::gateway::billing::{Billing, Charger};
use crate::gateway::providers::Providers;
use crate::gateway::routing::{self, PatternCache, Route, RouteError};
use crate::governance::admission::{Admission, AdmissionError};
use crate::governance::limits::{RateLimited, RateLimiter};
use crate::governance::replicator::Replicator;
use std::sync::Arc;
use tollgate_proto::{KeyId, Owner, RateLimit, Usage, Usd, VirtualKey};

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
}

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
        Ok(Caller { key, limits })
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
        let estimate = price
            .as_ref()
            .map_or(Usd::ZERO, |p| p.cost(&estimated_usage));
        let hold = self.admission.reserve(&chain, estimate).await?;
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
            estimate: estimated_usage,
            answered: false,
            token_limits: all_limits
                .into_iter()
                .filter(|l| l.token_max.is_some())
                .collect(),
        })
    }
}
