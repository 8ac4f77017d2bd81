//! A guardrail compiled: its local checks (secrets, PII, named regexes) and its
//! webhooks; and the checks an admin write must pass before a guardrail is proposed.

use super::pii;
use super::secrets::Secrets;
use super::verdict::Finding;
use regex::bytes::{Regex, RegexBuilder};
use std::sync::Arc;
use std::time::Duration;
use tollgate_proto::{
    Detector, GuardAction, GuardDirection, Guardrail, GuardrailId, OnError, PiiEntity,
};

/// Longest pattern a `regex` detector may have, and the most memory its compiled form
/// may take (the `regex` crate's size limit).
pub const MAX_PATTERN_BYTES: usize = 4_096;
pub const MAX_REGEX_SIZE: usize = 1 << 20;
/// Longest deadline a webhook may be given.
pub const MAX_WEBHOOK_TIMEOUT_MS: u64 = 30_000;

enum Check {
    Secrets(&'static Secrets),
    Pii(Vec<PiiEntity>),
    Regex { rule: Arc<str>, regex: Regex },
}

/// An external checker the text is posted to.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub timeout: Duration,
    pub on_error: OnError,
}

/// A compiled guardrail.
pub struct Policy {
    pub id: GuardrailId,
    pub name: String,
    pub action: GuardAction,
    pub direction: GuardDirection,
    checks: Vec<Check>,
    pub webhooks: Vec<Webhook>,
    /// What a cached verdict of this guardrail depends on, hashed: its id, what it looks
    /// for and (for the redactions a verdict keeps) what it does.
    pub print: u64,
}

/// Why a detector cannot be used; `field` names where in the guardrail's body.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DetectorError {
    pub field: String,
    pub message: String,
}

fn bad(field: String, message: impl Into<String>) -> DetectorError {
    DetectorError {
        field,
        message: message.into(),
    }
}

/// Compiles a `regex` detector's pattern with the size cap.
pub fn compile_regex(field: String, pattern: &str) -> Result<Regex, DetectorError> {
    if pattern.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(bad(
            field,
            format!("is longer than {MAX_PATTERN_BYTES} bytes"),
        ));
    }
    let regex = RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_SIZE)
        .dfa_size_limit(MAX_REGEX_SIZE)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => bad(
                field.clone(),
                format!("compiles to more than {limit} bytes; simplify it"),
            ),
            other => bad(
                field.clone(),
                format!(
                    "is not a valid regular expression: {}",
                    other.to_string().lines().last().unwrap_or_default()
                ),
            ),
        })?;
    if regex.is_match(b"") {
        return Err(bad(field, "matches the empty string"));
    }
    Ok(regex)
}

impl Policy {
    /// Compiles a guardrail (every detector checked as an admin write checks it).
    pub fn compile(g: &Guardrail) -> Result<Policy, DetectorError> {
        let mut checks = Vec::new();
        let mut webhooks = Vec::new();
        for (i, d) in g.detectors.iter().enumerate() {
            let field = |name: &str| format!("detectors[{i}].{name}");
            match d {
                Detector::Secrets => {
                    let rules = Secrets::builtin().map_err(|e| {
                        bad(field("kind"), format!("the secrets rules do not load: {e}"))
                    })?;
                    checks.push(Check::Secrets(rules));
                }
                Detector::Pii { entities } => {
                    let entities = match entities.is_empty() {
                        true => PiiEntity::ALL.to_vec(),
                        false => entities.clone(),
                    };
                    checks.push(Check::Pii(entities));
                }
                Detector::Regex { name, pattern } => {
                    if name.trim().is_empty() {
                        return Err(bad(field("name"), "must not be empty"));
                    }
                    checks.push(Check::Regex {
                        rule: Arc::from(name.as_str()),
                        regex: compile_regex(field("pattern"), pattern)?,
                    });
                }
                Detector::Webhook {
                    url,
                    timeout_ms,
                    on_error,
                } => {
                    let parsed = reqwest::Url::parse(url)
                        .map_err(|e| bad(field("url"), format!("is not a URL: {e}")))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(bad(field("url"), "must be http or https"));
                    }
                    if *timeout_ms == 0 || *timeout_ms > MAX_WEBHOOK_TIMEOUT_MS {
                        return Err(bad(
                            field("timeout_ms"),
                            format!("must be from 1 to {MAX_WEBHOOK_TIMEOUT_MS}"),
                        ));
                    }
                    webhooks.push(Webhook {
                        url: url.clone(),
                        timeout: Duration::from_millis(*timeout_ms),
                        on_error: *on_error,
                    });
                }
            }
        }
        if g.detectors.is_empty() {
            return Err(bad("detectors".into(), "must name at least one detector"));
        }
        Ok(Policy {
            id: g.id.clone(),
            name: g.name.clone(),
            action: g.action,
            direction: g.direction,
            checks,
            webhooks,
            print: xxhash_rust::xxh3::xxh3_64(
                &tollgate_raft::codec::encode(&(&g.id, &g.detectors, g.action, g.direction))
                    .unwrap_or_default(),
            ),
        })
    }

    /// The local checks' findings in `text`.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Finding>) {
        for check in &self.checks {
            match check {
                Check::Secrets(rules) => rules.scan(text, out),
                Check::Pii(entities) => pii::scan(entities, text, out),
                Check::Regex { rule, regex } => {
                    out.extend(regex.find_iter(text).map(|m| Finding {
                        rule: Arc::clone(rule),
                        start: m.start(),
                        end: m.end(),
                    }))
                }
            }
        }
    }
}

/// The guardrails that apply to one request, compiled, in the state's order.
#[derive(Clone, Default)]
pub struct Plan {
    pub policies: Vec<Arc<Policy>>,
    /// Identifies this list of policies (ids and what each checks) in the verdict cache.
    pub fingerprint: u64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn input(&self) -> bool {
        self.policies.iter().any(|p| p.direction.input())
    }

    pub fn output(&self) -> bool {
        self.policies.iter().any(|p| p.direction.output())
    }
}
