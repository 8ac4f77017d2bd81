//! `[[providers]]`: each provider's kind, where it is, its credentials (references, never
//! the secrets themselves) and the fields its kind takes, checked at start so a typo
//! fails the start, not a request.

use super::error::ConfigError;
use super::secret::{resolve_reference, Secret};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Name of the built-in mock provider every node has unless the config defines one.
pub const BUILTIN_MOCK: &str = "mock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Anthropic,
    Openai,
    /// Claude on AWS Bedrock (`InvokeModel`, SigV4 or a Bedrock API key).
    Bedrock,
    #[default]
    Mock,
}

impl ProviderKind {
    /// As the config names it (and a model may be pinned by: `bedrock/…`).
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Openai => "openai",
            ProviderKind::Bedrock => "bedrock",
            ProviderKind::Mock => "mock",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
    /// Anthropic: the server root (`https://api.anthropic.com`); OpenAI-compatible: the
    /// root including the version (`https://api.openai.com/v1`, `http://vllm:8000/v1`);
    /// Bedrock: optional, the region's `bedrock-runtime` endpoint by default.
    pub base_url: Option<String>,
    /// `env:NAME` or `file:PATH`. Bedrock: a Bedrock API key, sent as a bearer token.
    pub api_key: Option<String>,
    /// Mock only: delay before the answer starts.
    #[serde(default)]
    pub latency_ms: u64,
    /// Mock only: delay between streamed events.
    #[serde(default)]
    pub stream_delay_ms: u64,
    /// Bedrock: the AWS region (`us-east-1`).
    pub region: Option<String>,
    /// Bedrock: SigV4 credentials, references like `api_key`.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Bedrock: the cross-region inference profile a model name gets when `models` has
    /// none for it (`us`, `eu`, `apac`, `global`): `claude-sonnet-4-5-20250929` is sent as
    /// `us.anthropic.claude-sonnet-4-5-20250929-v1:0`. None: `anthropic.…-v1:0`.
    pub inference_profile: Option<String>,
    /// Model names as clients and keys know them → this provider's model ids.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
}

impl ProviderSpec {
    /// Resolves `api_key` now, so a missing variable or file fails the start, not a request.
    pub fn resolve_key(&self) -> Result<Option<Secret>, ConfigError> {
        self.resolve(self.api_key.as_deref(), "api_key")
    }

    /// Resolves one of the spec's references (`None` stays `None`).
    pub fn resolve(
        &self,
        reference: Option<&str>,
        what: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        reference
            .map(|r| resolve_reference(r, what))
            .transpose()
            .map_err(|message| ConfigError::Provider {
                provider: self.name.clone(),
                message,
            })
    }

    /// The base URL, or the kind's default.
    pub fn base(&self) -> Option<String> {
        match (&self.base_url, self.kind, &self.region) {
            (Some(url), _, _) => Some(url.trim_end_matches('/').to_owned()),
            (None, ProviderKind::Bedrock, Some(region)) => {
                Some(format!("https://bedrock-runtime.{region}.amazonaws.com"))
            }
            _ => None,
        }
    }
}

/// Each provider's fields against its kind: names unique, URLs and references well
/// formed, credentials complete, no field its kind ignores.
pub fn validate(providers: &[ProviderSpec]) -> Result<(), ConfigError> {
    let mut names = std::collections::BTreeSet::new();
    for p in providers {
        let fail = |message: &str| ConfigError::Provider {
            provider: p.name.clone(),
            message: message.to_owned(),
        };
        if !names.insert(p.name.as_str()) {
            return Err(fail("the name is used twice"));
        }
        if p.name.is_empty() || p.name.contains('/') {
            return Err(fail("a provider name must be non-empty and contain no '/'"));
        }
        if p.name == BUILTIN_MOCK && p.kind != ProviderKind::Mock {
            return Err(fail(
                "`mock` is the built-in mock provider's name; give this provider another",
            ));
        }
        let bedrock = p.kind == ProviderKind::Bedrock;
        match (p.kind, &p.base_url) {
            (ProviderKind::Mock, _) | (ProviderKind::Bedrock, None) => {}
            (_, None) => return Err(fail("base_url is required")),
            (_, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(fail("base_url must start with http:// or https://"));
                }
            }
        }
        for (field, reference) in [
            ("api_key", &p.api_key),
            ("access_key_id", &p.access_key_id),
            ("secret_access_key", &p.secret_access_key),
            ("session_token", &p.session_token),
        ] {
            if let Some(r) = reference {
                if !(r.starts_with("env:") || r.starts_with("file:")) {
                    return Err(fail(&format!(
                        "{field} must be a reference, `env:NAME` or `file:PATH`, never the secret itself"
                    )));
                }
            }
        }
        let aws_fields = [
            ("region", p.region.is_some()),
            ("access_key_id", p.access_key_id.is_some()),
            ("secret_access_key", p.secret_access_key.is_some()),
            ("session_token", p.session_token.is_some()),
            ("inference_profile", p.inference_profile.is_some()),
        ];
        if !bedrock {
            if let Some((field, _)) = aws_fields.iter().find(|(_, set)| *set) {
                return Err(fail(&format!("{field} is for bedrock providers only")));
            }
            if !p.models.is_empty() && p.kind == ProviderKind::Mock {
                return Err(fail("models is not for the mock provider"));
            }
            continue;
        }
        let region_ok = p.region.as_deref().is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if !region_ok {
            return Err(fail("region is required: an AWS region such as us-east-1"));
        }
        let sigv4 = p.access_key_id.is_some() || p.secret_access_key.is_some();
        match (p.api_key.is_some(), sigv4) {
            (true, true) => {
                return Err(fail(
                    "give either api_key (a Bedrock API key) or access_key_id and secret_access_key, not both",
                ))
            }
            (false, false) => {
                return Err(fail(
                    "credentials are required: access_key_id and secret_access_key, or api_key",
                ))
            }
            (false, true) if p.access_key_id.is_none() || p.secret_access_key.is_none() => {
                return Err(fail("access_key_id and secret_access_key go together"))
            }
            _ => {}
        }
        if p.session_token.is_some() && !sigv4 {
            return Err(fail(
                "session_token goes with access_key_id and secret_access_key",
            ));
        }
        if let Some(profile) = &p.inference_profile {
            if profile.is_empty() || !profile.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(fail(
                    "inference_profile is a region group such as us, eu, apac or global",
                ));
            }
        }
    }
    Ok(())
}
