//! Providers configured on this node, with resolved credentials and endpoint URLs.

use crate::config::{ConfigError, ProviderKind, ProviderSpec, Secret};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub api_key: Option<Secret>,
    /// The key as this kind of provider is sent it (Anthropic's `x-api-key` value,
    /// OpenAI's `Bearer …`), made once here and marked sensitive; `None` without a key
    /// (or one no header can carry).
    pub credential: Option<axum::http::HeaderValue>,
    /// Anthropic: `{base}/v1/messages`; OpenAI: `{base}/chat/completions`; parsed once
    /// here rather than on every request. `None` for the in-process mock and Bedrock.
    pub inference_url: Option<hyper::Uri>,
    /// Anthropic only: `{base}/v1/messages/count_tokens`.
    pub count_tokens_url: Option<hyper::Uri>,
    pub latency_ms: u64,
    pub stream_delay_ms: u64,
    /// Bedrock only: its endpoint, credentials and model ids.
    pub bedrock: Option<crate::gateway::bedrock::Bedrock>,
}

#[derive(Debug, Default)]
pub struct Providers(BTreeMap<String, Arc<Provider>>);

impl Providers {
    pub fn from_specs(specs: &[ProviderSpec]) -> Result<Providers, ConfigError> {
        let mut map = BTreeMap::new();
        for spec in specs {
            let base = spec.base_url.as_deref().unwrap_or("").trim_end_matches('/');
            // Bedrock's URL names the model: made per request.
            let (inference_url, count_tokens_url) = match spec.kind {
                ProviderKind::Anthropic => (
                    format!("{base}/v1/messages"),
                    format!("{base}/v1/messages/count_tokens"),
                ),
                ProviderKind::Openai => (format!("{base}/chat/completions"), String::new()),
                ProviderKind::Mock | ProviderKind::Bedrock => (String::new(), String::new()),
            };
            let parse = |url: String| -> Result<Option<hyper::Uri>, ConfigError> {
                if url.is_empty() {
                    return Ok(None);
                }
                let invalid = |e: String| ConfigError::Provider {
                    provider: spec.name.clone(),
                    message: format!("base_url gives an invalid URL {url}: {e}"),
                };
                // Checked as a URL (scheme, host), then kept in the form the client sends.
                let parsed = reqwest::Url::parse(&url).map_err(|e| invalid(e.to_string()))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(invalid("the scheme must be http or https".into()));
                }
                hyper::Uri::try_from(parsed.as_str())
                    .map(Some)
                    .map_err(|e| invalid(e.to_string()))
            };
            let (inference_url, count_tokens_url) =
                (parse(inference_url)?, parse(count_tokens_url)?);
            let api_key = spec.resolve_key()?;
            let credential = api_key.as_ref().and_then(|key| {
                let value = match spec.kind {
                    ProviderKind::Anthropic => key.expose().to_owned(),
                    ProviderKind::Openai => format!("Bearer {}", key.expose()),
                    ProviderKind::Mock | ProviderKind::Bedrock => return None,
                };
                let mut value = axum::http::HeaderValue::from_str(&value).ok()?;
                value.set_sensitive(true);
                Some(value)
            });
            let provider = Provider {
                name: spec.name.clone(),
                kind: spec.kind,
                api_key,
                credential,
                inference_url,
                count_tokens_url,
                latency_ms: spec.latency_ms,
                stream_delay_ms: spec.stream_delay_ms,
                bedrock: match spec.kind {
                    ProviderKind::Bedrock => {
                        Some(crate::gateway::bedrock::Bedrock::from_spec(spec)?)
                    }
                    _ => None,
                },
            };
            map.insert(spec.name.clone(), Arc::new(provider));
        }
        Ok(Providers(map))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.0.get(name)
    }

    /// Whether a provider of the kind named `kind` is configured.
    pub fn has_kind(&self, kind: &str) -> bool {
        self.0.values().any(|p| p.kind.name() == kind)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}
