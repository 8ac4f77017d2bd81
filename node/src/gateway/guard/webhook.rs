//! External checkers: each string of a new block is posted as `{"text", "language"}`
//! (Presidio's analyzer request) and the answer read as Presidio's: a list of
//! `{"entity_type", "start", "end"}` in characters (or that list under `"results"` or
//! `"findings"`). Every post of one request to one webhook shares the webhook's
//! deadline; a failure (error, deadline, bad answer) is what the webhook's `on_error`
//! says: let the text through unchecked, or block.

use super::block::{BlockVerdict, StringHits};
use super::json;
use super::policy::Plan;
use super::verdict::{Direction, Finding};
use serde::Deserialize;
use std::sync::Arc;
use tollgate_proto::OnError;

/// Largest answer read from a webhook.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The HTTP client for webhooks, made at the first post (after `main` has installed
/// the TLS provider).
#[derive(Default)]
pub struct Client {
    http: std::sync::OnceLock<Option<reqwest::Client>>,
}

#[derive(Deserialize)]
struct Entity {
    entity_type: String,
    start: usize,
    end: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    List(Vec<Entity>),
    Results { results: Vec<Entity> },
    Findings { findings: Vec<Entity> },
}

/// What the webhooks made of a block.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Every webhook answered: the block's verdict may be cached.
    pub complete: bool,
    /// Guardrails whose webhook failed with `on_error = "block"`.
    pub failed: Vec<usize>,
}

/// A character range as a byte range of `text`.
fn char_span(text: &str, start: usize, end: usize) -> Option<(usize, usize)> {
    let mut indices = text.char_indices().map(|(i, _)| i).chain([text.len()]);
    let s = indices.clone().nth(start)?;
    let e = indices.nth(end)?;
    (s <= e).then_some((s, e))
}

impl Client {
    async fn post(&self, url: &str, text: &str) -> Result<Vec<Entity>, String> {
        let http = self
            .http
            .get_or_init(|| reqwest::Client::builder().no_proxy().build().ok())
            .as_ref()
            .ok_or("no HTTP client")?;
        let response = http
            .post(url)
            .json(&serde_json::json!({"text": text, "language": "en"}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err("answer too large".into());
        }
        match serde_json::from_slice::<Answer>(&body).map_err(|e| e.to_string())? {
            Answer::List(l) | Answer::Results { results: l } | Answer::Findings { findings: l } => {
                Ok(l)
            }
        }
    }

    /// Posts the strings of `block` to the plan's webhooks that look at `direction`,
    /// adding what they find to `verdict`.
    pub async fn check_block(
        &self,
        plan: &Plan,
        direction: Direction,
        block: &[u8],
        verdict: &mut BlockVerdict,
    ) -> Outcome {
        let mut outcome = Outcome {
            complete: true,
            failed: Vec::new(),
        };
        let hooked = plan.policies.iter().enumerate().filter(|(_, p)| {
            !p.webhooks.is_empty()
                && match direction {
                    Direction::Input => p.direction.input(),
                    Direction::Output => p.direction.output(),
                }
        });
        let mut tokens = Vec::new();
        for (i, policy) in hooked {
            if tokens.is_empty() {
                json::string_values(block, &mut tokens);
            }
            for hook in &policy.webhooks {
                let posts = async {
                    let mut found = Vec::new();
                    for &(start, end) in &tokens {
                        let Some(text) = json::text(&block[start..end]) else {
                            continue;
                        };
                        if text.trim().is_empty() {
                            continue;
                        }
                        for e in self.post(&hook.url, &text).await? {
                            if let Some((s, t)) = char_span(&text, e.start, e.end) {
                                let rule = Arc::from(e.entity_type.as_str());
                                found.push((
                                    start,
                                    end,
                                    (
                                        i,
                                        Finding {
                                            rule,
                                            start: s,
                                            end: t,
                                        },
                                    ),
                                ));
                            }
                        }
                    }
                    Ok::<_, String>(found)
                };
                match tokio::time::timeout(hook.timeout, posts).await {
                    Ok(Ok(found)) => {
                        for (start, end, finding) in found {
                            match verdict.strings.iter_mut().find(|s| s.start == start) {
                                Some(s) => s.findings.push(finding),
                                None => verdict.strings.push(StringHits {
                                    start,
                                    end,
                                    findings: vec![finding],
                                    edits: Default::default(),
                                }),
                            }
                        }
                    }
                    failed => {
                        let why = match failed {
                            Err(_) => "deadline passed".to_owned(),
                            Ok(Err(e)) => e,
                            Ok(Ok(_)) => String::new(),
                        };
                        tracing::warn!(guardrail = %policy.id, url = %hook.url, error = %why, "guardrail webhook failed");
                        outcome.complete = false;
                        if hook.on_error == OnError::Block {
                            outcome.failed.push(i);
                        }
                    }
                }
            }
        }
        outcome
    }
}
