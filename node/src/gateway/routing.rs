//! Model resolution: `provider/model` or a bare model name → the key's provider configs
//! that may serve it, in the order to try them (weighted first pick, then the rest).

use crate::gateway::providers::{Provider, Providers};
use regex::{Regex, RegexBuilder};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tollgate_proto::{ProviderConfig, VirtualKey};
use tollgate_raft::GovState;

/// Prefix of an allowed-model entry that is a regular expression.
pub const REGEX_PREFIX: &str = "regex:";
/// Limits of `regex:` patterns, checked when an admin writes them: characters, compiled
/// size (a pattern past it is refused in microseconds, before it takes memory), the size
/// of the lazy DFA each match may build, patterns per key and distinct patterns in the
/// whole state (all of which every node keeps compiled).
pub const MAX_PATTERN_CHARS: usize = 256;
const PATTERN_SIZE_LIMIT: usize = 32 * 1024;
const PATTERN_DFA_LIMIT: usize = 256 * 1024;
pub const MAX_KEY_PATTERNS: usize = 16;
pub const MAX_PATTERNS: usize = 4_096;

/// One way to serve a request.
#[derive(Debug, Clone)]
pub struct Route {
    pub config: ProviderConfig,
    pub provider: Arc<Provider>,
    /// The model name to send upstream.
    pub upstream_model: String,
}

/// A `regex:` pattern compiled within the limits, or why it cannot be.
pub fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    if pattern.chars().count() > MAX_PATTERN_CHARS {
        return Err(format!(
            "a pattern may have at most {MAX_PATTERN_CHARS} characters"
        ));
    }
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_DFA_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!(
                "the pattern compiles to more than {} KiB; write it more simply (e.g. `.` for `\\w`, no large repetition counts)",
                PATTERN_SIZE_LIMIT / 1024
            ),
            other => other.to_string(),
        })
}

/// The `regex:` patterns of allowed-model lists, compiled once per node: when the node
/// takes the admin write, or by `warm` (every few seconds, from the applied state) for
/// writes taken by other nodes. Requests only read it; a pattern a request meets before
/// `warm` did is compiled then, outside the lock (bounded by the limits above).
#[derive(Default)]
pub struct PatternCache(RwLock<HashMap<String, Option<Arc<Regex>>>>);

impl PatternCache {
    fn get(&self, pattern: &str) -> Option<Arc<Regex>> {
        if let Some(hit) = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(pattern)
        {
            return hit.clone();
        }
        self.insert(pattern, compile_pattern(pattern).ok())
    }

    /// Keeps `compiled` for `pattern` (`None`: it does not compile).
    pub fn insert(&self, pattern: &str, compiled: Option<Regex>) -> Option<Arc<Regex>> {
        let compiled = compiled.map(Arc::new);
        let mut cache = self.0.write().unwrap_or_else(|e| e.into_inner());
        // The state holds at most MAX_PATTERNS: more means patterns were removed since.
        if cache.len() >= 2 * MAX_PATTERNS {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), compiled.clone());
        compiled
    }

    /// The patterns of `state`'s keys this node has not compiled yet.
    pub fn missing(&self, state: &GovState) -> Vec<String> {
        let cache = self.0.read().unwrap_or_else(|e| e.into_inner());
        let mut missing: Vec<String> = patterns_of(state)
            .filter(|p| !cache.contains_key(*p))
            .map(str::to_owned)
            .collect();
        missing.sort_unstable();
        missing.dedup();
        missing
    }

    /// Compiles `patterns` (from `missing`, with no lock held).
    pub fn warm(&self, patterns: Vec<String>) {
        for pattern in patterns {
            let compiled = compile_pattern(&pattern).ok();
            self.insert(&pattern, compiled);
        }
    }
}

/// Every `regex:` pattern of `state`'s keys (repeated where keys share one).
pub fn patterns_of(state: &GovState) -> impl Iterator<Item = &str> {
    state
        .keys()
        .values()
        .flat_map(|k| &k.provider_configs)
        .flat_map(|c| &c.allowed_models)
        .filter_map(|m| m.strip_prefix(REGEX_PREFIX))
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
    // providers, `kind/model` the providers of a kind (`bedrock/global.anthropic.…`);
    // otherwise the slash belongs to the model name (`meta-llama/Llama-3`).
    let (pinned, model) = match requested.split_once('/') {
        Some((p, m)) if providers.get(p).is_some() || providers.has_kind(p) => (Some(p), m),
        _ => (None, requested),
    };
    if model.is_empty() {
        return Err(RouteError::EmptyModel);
    }
    let mut routes: Vec<Route> = Vec::new();
    for config in &key.provider_configs {
        let Some(provider) = providers.get(&config.provider) else {
            continue;
        };
        if pinned.is_some_and(|p| p != config.provider && p != provider.kind.name()) {
            continue;
        }
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
            Some(p)
                if !key.provider_configs.iter().any(|c| {
                    c.provider == p
                        || providers
                            .get(&c.provider)
                            .is_some_and(|x| x.kind.name() == p)
                }) =>
            {
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

    #[test]
    fn patterns_past_the_limits_are_refused_at_once() {
        // The hostile case: 64 of these on one key took 5 s and 650 MB when compiled
        // unbounded on the request path. Now the first is refused in microseconds.
        let started = std::time::Instant::now();
        for n in 0..64 {
            let e = compile_pattern(&format!("\\w{{200}}z{n}")).expect_err("too big");
            assert!(e.contains("compiles to more than 32 KiB"), "{e}");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
        assert!(compile_pattern(&"a".repeat(MAX_PATTERN_CHARS + 1)).is_err());
        assert!(compile_pattern("(unclosed").is_err());
        let re = compile_pattern("^claude-(sonnet|haiku)-4-[0-9]+$").expect("ordinary");
        assert!(re.is_match("claude-haiku-4-5") && !re.is_match("claude-haiku-4-5-x"));
    }

    #[test]
    fn warm_compiles_each_pattern_once() {
        let cache = PatternCache::default();
        let key = key(&[("p", 1000, &["regex:^a$", "exact", "regex:^b$"], &[])]);
        let patterns: Vec<&str> = key
            .provider_configs
            .iter()
            .flat_map(|c| &c.allowed_models)
            .filter_map(|m| m.strip_prefix(REGEX_PREFIX))
            .collect();
        assert_eq!(patterns, ["^a$", "^b$"]);
        cache.warm(patterns.iter().map(|p| p.to_string()).collect());
        assert!(cache.get("^a$").is_some_and(|re| re.is_match("a")));
        assert_eq!(cache.0.read().map(|c| c.len()).unwrap_or(0), 2);
    }
    use crate::config::{ProviderKind, ProviderSpec};
    use std::collections::BTreeMap;

    fn providers() -> Providers {
        let spec = |name: &str| ProviderSpec {
            name: name.into(),
            kind: ProviderKind::Mock,
            ..ProviderSpec::default()
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
        // A kind pins its providers (all three are mocks here).
        check(
            &k,
            "mock/claude-sonnet-4-6",
            0,
            Ok(&[("a", "claude-sonnet-4-6"), ("c", "claude-sonnet-4-6")]),
        );
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
