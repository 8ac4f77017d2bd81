//! Claude on AWS Bedrock: a provider's endpoint, credentials and model ids, and the
//! request an Anthropic Messages body becomes (`InvokeModel`, or
//! `InvokeModelWithResponseStream` for a stream: the model in the path, `model` and
//! `stream` out of the body, `anthropic_version: "bedrock-2023-05-31"` and the client's
//! `anthropic-beta` headers in it), signed with SigV4 or carrying a Bedrock API key.
//!
//! # Layout
//! - `sign`: SigV4 with the `aws-sigv4` crate.
//! - `frames`: AWS event-stream frames to Anthropic SSE and back.

pub mod frames;
mod sign;

use crate::config::{ConfigError, ProviderSpec, Secret};
use axum::http::{header, HeaderMap, HeaderValue};
use bytes::Bytes;
use std::collections::BTreeMap;

/// The body's API version Bedrock's Anthropic models take.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// How requests to a Bedrock provider are authorised.
#[derive(Debug)]
enum Auth {
    SigV4 {
        access_key_id: Secret,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    /// A Bedrock API key, as `Authorization: Bearer`.
    Bearer(HeaderValue),
}

#[derive(Debug)]
pub struct Bedrock {
    region: String,
    /// `scheme://host[:port]` and any path prefix, without a trailing slash.
    base: String,
    auth: Auth,
    inference_profile: Option<String>,
    models: BTreeMap<String, String>,
}

/// One request ready to send.
pub struct Signed {
    pub url: hyper::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Bedrock {
    pub fn from_spec(spec: &ProviderSpec) -> Result<Bedrock, ConfigError> {
        let fail = |message: String| ConfigError::Provider {
            provider: spec.name.clone(),
            message,
        };
        let base = spec
            .base()
            .ok_or_else(|| fail("region is required".into()))?;
        let auth = match spec.resolve_key()? {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| fail("api_key cannot be sent in a header".into()))?;
                value.set_sensitive(true);
                Auth::Bearer(value)
            }
            None => Auth::SigV4 {
                access_key_id: spec
                    .resolve(spec.access_key_id.as_deref(), "access_key_id")?
                    .ok_or_else(|| fail("access_key_id is required".into()))?,
                secret_access_key: spec
                    .resolve(spec.secret_access_key.as_deref(), "secret_access_key")?
                    .ok_or_else(|| fail("secret_access_key is required".into()))?,
                session_token: spec.resolve(spec.session_token.as_deref(), "session_token")?,
            },
        };
        Ok(Bedrock {
            region: spec.region.clone().unwrap_or_default(),
            base,
            auth,
            inference_profile: spec.inference_profile.clone(),
            models: spec.models.clone(),
        })
    }

    /// The Bedrock model id for a model name: the provider's `models` entry, a name that
    /// already is a Bedrock id (`…anthropic.…`, an ARN) as it is, else
    /// `[profile.]anthropic.<name>-v1:0`.
    pub fn model_id(&self, model: &str) -> String {
        if let Some(id) = self.models.get(model) {
            return id.clone();
        }
        if model.contains("anthropic.") || model.starts_with("arn:") {
            return model.to_owned();
        }
        match &self.inference_profile {
            Some(profile) => format!("{profile}.anthropic.{model}-v1:0"),
            None => format!("anthropic.{model}-v1:0"),
        }
    }

    /// The signed request for an Anthropic Messages body (`body`: its JSON, whose
    /// `model` and `stream` are dropped), with the client's `anthropic-beta` headers.
    pub fn request(
        &self,
        model: &str,
        body: &serde_json::Value,
        stream: bool,
        client: &HeaderMap,
    ) -> Result<Signed, String> {
        let body = bedrock_body(body, client);
        let body = Bytes::from(serde_json::to_vec(&body).map_err(|e| e.to_string())?);
        let action = if stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        let url = format!(
            "{}/model/{}/{action}",
            self.base,
            encode_path_segment(&self.model_id(model))
        );
        let url: hyper::Uri = url
            .parse()
            .map_err(|e| format!("the Bedrock URL {url} is invalid: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static(if stream {
                frames::CONTENT_TYPE
            } else {
                "application/json"
            }),
        );
        match &self.auth {
            Auth::Bearer(value) => {
                headers.insert(header::AUTHORIZATION, value.clone());
            }
            Auth::SigV4 {
                access_key_id,
                secret_access_key,
                session_token,
            } => sign::sign(
                &sign::Credentials {
                    access_key_id: access_key_id.expose(),
                    secret_access_key: secret_access_key.expose(),
                    session_token: session_token.as_ref().map(Secret::expose),
                    region: &self.region,
                },
                &url,
                &mut headers,
                &body,
                std::time::SystemTime::now(),
            )?,
        }
        Ok(Signed { url, headers, body })
    }

    /// Secrets a Bedrock error may echo, to scrub from messages.
    pub fn secrets(&self) -> Vec<&str> {
        match &self.auth {
            Auth::SigV4 {
                access_key_id,
                secret_access_key,
                session_token,
            } => [
                Some(access_key_id),
                Some(secret_access_key),
                session_token.as_ref(),
            ]
            .into_iter()
            .flatten()
            .map(Secret::expose)
            .collect(),
            Auth::Bearer(_) => Vec::new(),
        }
    }
}

/// An Anthropic Messages body as Bedrock takes it.
pub fn bedrock_body(body: &serde_json::Value, client: &HeaderMap) -> serde_json::Value {
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("model");
        object.remove("stream");
        object
            .entry("anthropic_version")
            .or_insert_with(|| BEDROCK_ANTHROPIC_VERSION.into());
        let betas: Vec<serde_json::Value> = client
            .get_all("anthropic-beta")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| b.to_owned().into())
            .collect();
        if !betas.is_empty() && !object.contains_key("anthropic_beta") {
            object.insert("anthropic_beta".into(), betas.into());
        }
    }
    body
}

/// The Anthropic model name a Bedrock model id stands for: the inference profile, the
/// `anthropic.` vendor and the `-v1:0` version taken off
/// (`us.anthropic.claude-sonnet-4-5-20250929-v1:0` → `claude-sonnet-4-5-20250929`).
/// Anything else (an ARN, another vendor's model) is kept as it is.
pub fn anthropic_name(id: &str) -> String {
    let Some((_, rest)) = id.split_once("anthropic.") else {
        return id.to_owned();
    };
    match rest.rsplit_once("-v") {
        Some((name, version))
            if !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit() || b == b':') =>
        {
            name.to_owned()
        }
        _ => rest.to_owned(),
    }
}

/// A path segment percent-encoded as AWS expects (`:` in a model id is `%3A`).
fn encode_path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_and_names_map_both_ways() {
        let spec = ProviderSpec {
            name: "b".into(),
            kind: crate::config::ProviderKind::Bedrock,
            region: Some("us-east-1".into()),
            api_key: Some("env:PATH".into()),
            inference_profile: Some("us".into()),
            models: [(
                "haiku".to_owned(),
                "anthropic.claude-3-haiku-20240307-v1:0".to_owned(),
            )]
            .into(),
            ..ProviderSpec::default()
        };
        let b = Bedrock::from_spec(&spec).expect("builds");
        assert_eq!(
            b.model_id("claude-sonnet-4-5-20250929"),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            b.model_id("haiku"),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
        assert_eq!(
            b.model_id("global.anthropic.claude-sonnet-4-6"),
            "global.anthropic.claude-sonnet-4-6"
        );
        for (id, name) in [
            (
                "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5-20250929",
            ),
            (
                "anthropic.claude-3-5-haiku-20241022-v1:0",
                "claude-3-5-haiku-20241022",
            ),
            ("global.anthropic.claude-sonnet-4-6", "claude-sonnet-4-6"),
            ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ] {
            assert_eq!(anthropic_name(id), name, "{id}");
        }
        assert_eq!(
            encode_path_segment("us.anthropic.claude-x-v1:0"),
            "us.anthropic.claude-x-v1%3A0"
        );
    }

    #[test]
    fn the_body_loses_model_and_stream_and_gains_version_and_betas() {
        let mut client = HeaderMap::new();
        client.append("anthropic-beta", HeaderValue::from_static("a-1, b-2"));
        client.append("anthropic-beta", HeaderValue::from_static("c-3"));
        let body =
            serde_json::json!({"model": "m", "stream": true, "max_tokens": 5, "messages": []});
        let out = bedrock_body(&body, &client);
        assert_eq!(
            out,
            serde_json::json!({"max_tokens": 5, "messages": [], "anthropic_version": "bedrock-2023-05-31",
                "anthropic_beta": ["a-1", "b-2", "c-3"]})
        );
    }
}
