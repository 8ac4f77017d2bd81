//! Model resolution: `provider/model` or a bare model name → the key's provider configs
//! that may serve it, in the order to try them (weighted first pick, then the rest).

use crate::gateway::providers::{Provider, Providers};
use regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_proto::{ProviderConfig, VirtualKey};

/// Prefix of an allowed-model entry that is a regular expression.
pub const REGEX_PREFIX: &str = "regex:";
/// Compiled patterns kept at most; beyond it the cache starts over. Keys rarely carry
/// more than a handful of patterns, so this only bounds a misbehaving admin.
const MAX_CACHED_PATTERNS: usize = 4096;

/// One way to serve a request.
#[derive(Debug, Clone)]
pub struct Route {
    pub config: ProviderConfig,
    pub provider: Arc<Provider>,
    /// The model name to send upstream.
    pub upstream_model: String,
}

/// Compiled `regex:` patterns of allowed-model lists.
#[derive(Default)]
pub struct PatternCache(Mutex<HashMap<String, Option<Arc<Regex>>>>);

impl PatternCache {
    fn get(&self, pattern: &str) -> Option<Arc<Regex>> {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = cache.get(pattern) {
            return hit.clone();
        }
        if cache.len() >= MAX_CACHED_PATTERNS {
            cache.clear();
        }
        let compiled = Regex::new(pattern).ok().map(Arc::new);
        cache.insert(pattern.to_owned(), compiled.clone());
        compiled
    }
}

/// Whether `allowed` (exact names and `regex:` patterns; empty allows all) admits `model`.
pub fn model_allowed(allowed: &[String], model: &str, patterns: &PatternCache) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|entry| match entry.strip_prefix(REGEX_PREFIX) {
                Some(pattern) => patterns.get(pattern).is_some_and(|re| re.is_match(model)),
                None => entry == model,
            })
}

/// The model a config sends upstream for `requested`, if the config admits it. An alias
/// is an admin's explicit mapping, so it admits its name by itself.
fn upstream_model(
    config: &ProviderConfig,
    requested: &str,
    patterns: &PatternCache,
) -> Option<String> {
    if let Some(target) = config.aliases.get(requested) {
        return Some(target.clone());
    }
    model_allowed(&config.allowed_models, requested, patterns).then(|| requested.to_owned())
}

/// The routes able to serve `requested` for `key`, the first picked by weight using
/// Why a model cannot be routed for a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("model: must not be empty")]
    EmptyModel,
    /// The key may not use the model or the provider it pinned.
    #[error("{0}")]
    NotAllowed(String),
}

/// `pick` (any number that varies per request), the rest as fallbacks in weight order.
pub fn resolve(
    key: &VirtualKey,
    providers: &Providers,
    requested: &str,
    pick: u64,
    patterns: &PatternCache,
) -> Result<Vec<Route>, RouteError> {
    // `provider/model` pins one provider when the prefix names one of this node's
    // providers; otherwise the slash belongs to the model name (`meta-llama/Llama-3`).
    let (pinned, model) = match requested.split_once('/') {
        Some((p, m)) if providers.get(p).is_some() => (Some(p), m),
        _ => (None, requested),
    };
    if model.is_empty() {
        return Err(RouteError::EmptyModel);
    }
    let mut routes: Vec<Route> = Vec::new();
    for config in &key.provider_configs {
        if pinned.is_some_and(|p| p != config.provider) {
            continue;
        }
        let Some(provider) = providers.get(&config.provider) else {
            continue;
        };
        if let Some(upstream_model) = upstream_model(config, model, patterns) {
            routes.push(Route {
                config: config.clone(),
                provider: Arc::clone(provider),
                upstream_model,
            });
        }
    }
    if routes.is_empty() {
        let message = match pinned {
            Some(p) if !key.provider_configs.iter().any(|c| c.provider == p) => {
                format!("provider '{p}' is not allowed for virtual key {}", key.id)
            }
            _ => format!(
                "model '{requested}' is not allowed for virtual key {}",
                key.id
            ),
        };
        return Err(RouteError::NotAllowed(message));
    }
    order_by_weight(&mut routes, pick);
    Ok(routes)
}

/// Moves the weighted pick to the front; the others follow by descending weight.
fn order_by_weight(routes: &mut [Route], pick: u64) {
    routes.sort_by_key(|r| std::cmp::Reverse(r.config.weight_milli));
    let total: u64 = routes
        .iter()
        .map(|r| u64::from(r.config.weight_milli))
        .sum();
    if total == 0 || routes.len() < 2 {
        return;
    }
    let mut point = pick % total;
    let chosen = routes
        .iter()
        .position(|r| {
            let w = u64::from(r.config.weight_milli);
            if point < w {
                true
            } else {
                point -= w;
                false
            }
        })
        .unwrap_or(0);
    routes[..=chosen].rotate_right(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ProviderKind, ProviderSpec};
    use std::collections::BTreeMap;

    fn providers() -> Providers {
        let spec = |name: &str| ProviderSpec {
            name: name.into(),
            kind: ProviderKind::Mock,
            base_url: None,
            api_key: None,
            latency_ms: 0,
            stream_delay_ms: 0,
        };
        Providers::from_specs(&[spec("a"), spec("b"), spec("c")]).expect("providers")
    }

    /// (provider, weight in thousandths, allowed models, aliases).
    type ConfigRow<'a> = (&'a str, u32, &'a [&'a str], &'a [(&'a str, &'a str)]);

    fn key(configs: &[ConfigRow<'_>]) -> VirtualKey {
        VirtualKey {
            id: "vk_t".into(),
            name: "t".into(),
            secret_sha256: [0; 32],
            secret_prefix: String::new(),
            team_id: None,
            customer_id: None,
            provider_configs: configs
                .iter()
                .map(|(p, w, allowed, aliases)| ProviderConfig {
                    id: format!("pc_{p}").as_str().into(),
                    provider: (*p).into(),
                    weight_milli: *w,
                    allowed_models: allowed.iter().map(|s| s.to_string()).collect(),
                    aliases: aliases
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<BTreeMap<_, _>>(),
                })
                .collect(),
            disabled: false,
            created_at_ms: 0,
            rotated_at_ms: None,
        }
    }

    fn check(key: &VirtualKey, requested: &str, pick: u64, expect: Result<&[(&str, &str)], &str>) {
        let got = resolve(key, &providers(), requested, pick, &PatternCache::default());
        match (got, expect) {
            (Ok(routes), Ok(want)) => {
                let got: Vec<(&str, &str)> = routes
                    .iter()
                    .map(|r| (r.config.provider.as_str(), r.upstream_model.as_str()))
                    .collect();
                assert_eq!(got, want, "{requested} pick {pick}");
            }
            (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{e}"),
            (got, want) => panic!("{requested}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn resolution_table() {
        let k = key(&[
            (
                "a",
                1000,
                &["claude-sonnet-4-6", "regex:^claude-haiku-.*$"],
                &[("sonnet", "claude-sonnet-4-6")],
            ),
            ("b", 3000, &["regex:^gpt-"], &[]),
            ("c", 1000, &[], &[]),
        ]);
        check(
            &k,
            "claude-sonnet-4-6",
            0,
            Ok(&[("a", "claude-sonnet-4-6"), ("c", "claude-sonnet-4-6")]),
        );
        check(
            &k,
            "claude-haiku-4-5",
            0,
            Ok(&[("a", "claude-haiku-4-5"), ("c", "claude-haiku-4-5")]),
        );
        check(
            &k,
            "sonnet",
            0,
            Ok(&[("a", "claude-sonnet-4-6"), ("c", "sonnet")]),
        );
        // Weights 3000 (b) and 1000 (c): picks 0..2999 choose b, 3000..3999 choose c.
        check(&k, "gpt-4o", 5, Ok(&[("b", "gpt-4o"), ("c", "gpt-4o")]));
        check(&k, "gpt-4o", 3500, Ok(&[("c", "gpt-4o"), ("b", "gpt-4o")]));
        check(
            &k,
            "a/claude-sonnet-4-6",
            0,
            Ok(&[("a", "claude-sonnet-4-6")]),
        );
        check(&k, "a/gpt-4o", 0, Err("model 'a/gpt-4o' is not allowed"));
        check(
            &k,
            "meta-llama/Llama-3",
            0,
            Ok(&[("c", "meta-llama/Llama-3")]),
        );
        let narrow = key(&[("a", 1000, &["claude-sonnet-4-6"], &[])]);
        check(
            &narrow,
            "claude-opus-4",
            0,
            Err("model 'claude-opus-4' is not allowed"),
        );
        check(
            &narrow,
            "b/claude-sonnet-4-6",
            0,
            Err("provider 'b' is not allowed"),
        );
        check(&narrow, "regex:^claude", 0, Err("not allowed"));
    }
}
