//! The input side: a request body's content blocks (the system prompt's, each
//! message's: text, `tool_use` inputs, `tool_result` contents; OpenAI messages and tool
//! calls), each block's verdict cached by the hash of its bytes, and the request's
//! verdict: block it, redact it in place (structure kept, the same marker every turn),
//! or let it through flagged.
//!
//! Claude Code sends the whole conversation every turn; only the blocks not seen before
//! are scanned, so a turn costs its new blocks, not the session's length.

use super::json;
use super::verdict::{Direction, Verdict};
use super::{Finding, Guards, Plan};
use lru::LruCache;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use tollgate_proto::GuardAction;

/// The findings in one string of a block.
#[derive(Debug, Clone)]
pub struct StringHits {
    /// The string's token (quotes included), relative to the block.
    pub start: usize,
    pub end: usize,
    /// Each finding with the index of its policy in the plan; spans are in the
    /// string's text.
    pub findings: Vec<(usize, Finding)>,
}

/// What the checks found in one block (nothing, mostly).
#[derive(Debug, Clone, Default)]
pub struct BlockVerdict {
    pub strings: Vec<StringHits>,
}

/// Verdicts of blocks by the hash of their bytes and the plan that checked them.
pub struct VerdictCache {
    entries: Mutex<LruCache<u128, Arc<BlockVerdict>>>,
    /// Chosen at start: a hash an outsider cannot aim a collision at.
    seed: u64,
}

impl VerdictCache {
    pub fn new(entries: usize) -> VerdictCache {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        VerdictCache {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(entries.max(1)).unwrap_or(NonZeroUsize::MIN),
            )),
            seed: u64::from_le_bytes(seed),
        }
    }

    fn key(&self, plan: &Plan, block: &[u8]) -> u128 {
        xxhash_rust::xxh3::xxh3_128_with_seed(block, self.seed ^ plan.fingerprint)
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

/// The byte ranges of a request body's content blocks (either dialect: Anthropic's
/// `system` and messages' `content`, OpenAI's messages' `content` and `tool_calls`;
/// an array is one block per element).
pub fn blocks(body: &[u8]) -> Vec<(usize, usize)> {
    let Ok(parsed) = serde_json::from_slice::<Body<'_>>(body) else {
        return Vec::new();
    };
    let base = body.as_ptr() as usize;
    let mut out = Vec::new();
    let mut add = |raw: &RawValue| {
        let text = raw.get().as_bytes();
        let start = text.as_ptr() as usize - base;
        match json::array_elements(text) {
            Some(elements) => out.extend(elements.iter().map(|(s, e)| (start + s, start + e))),
            None => out.push((start, start + text.len())),
        }
    };
    if let Some(system) = parsed.system {
        add(system);
    }
    for m in parsed.messages.iter().flatten() {
        if let Some(c) = m.content {
            add(c);
        }
        if let Some(t) = m.tool_calls {
            add(t);
        }
    }
    out
}

/// Runs the plan's policies that look at `direction` over every string value of
/// `block`.
pub fn scan_block(plan: &Plan, direction: Direction, block: &[u8]) -> BlockVerdict {
    let mut tokens = Vec::new();
    json::string_values(block, &mut tokens);
    let mut verdict = BlockVerdict::default();
    let mut found = Vec::new();
    for (start, end) in tokens {
        let Some(text) = json::text(&block[start..end]) else {
            continue;
        };
        let mut findings = Vec::new();
        for (i, policy) in plan.policies.iter().enumerate() {
            let looks = match direction {
                Direction::Input => policy.direction.input(),
                Direction::Output => policy.direction.output(),
            };
            if !looks {
                continue;
            }
            found.clear();
            policy.scan(text.as_bytes(), &mut found);
            findings.extend(found.drain(..).map(|f| (i, on_chars(&text, f))));
        }
        if !findings.is_empty() {
            verdict.strings.push(StringHits {
                start,
                end,
                findings,
            });
        }
    }
    verdict
}

/// A finding widened to whole characters (byte regexes can stop inside one).
fn on_chars(text: &str, mut f: Finding) -> Finding {
    f.end = f.end.min(text.len());
    f.start = f.start.min(f.end);
    while !text.is_char_boundary(f.start) {
        f.start -= 1;
    }
    while !text.is_char_boundary(f.end) {
        f.end += 1;
    }
    f
}

/// A request's or an answer's verdict, and the body with its redactions (if any).
#[derive(Debug, Default)]
pub struct Checked {
    pub verdict: Verdict,
    pub redacted: Option<Vec<u8>>,
}

/// The verdict of `body` from its blocks' verdicts (each with where the block starts):
/// hits counted per guardrail and rule, redactions made unless something blocks.
pub fn conclude(
    plan: &Plan,
    direction: Direction,
    body: &[u8],
    blocks: &[(usize, Arc<BlockVerdict>)],
) -> Checked {
    let mut checked = Checked::default();
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for (at, block) in blocks {
        for s in &block.strings {
            let mut spans: Vec<(usize, usize, &str)> = Vec::new();
            for (i, f) in &s.findings {
                let Some(policy) = plan.policies.get(*i) else {
                    continue;
                };
                checked
                    .verdict
                    .add(&policy.id, &f.rule, policy.action, direction);
                if policy.action == GuardAction::Redact {
                    spans.push((f.start, f.end, &f.rule));
                }
            }
            if spans.is_empty() {
                continue;
            }
            let token = &body[at + s.start..at + s.end];
            let Some(text) = json::text(token) else {
                continue;
            };
            edits.push((
                at + s.start,
                at + s.end,
                json::quote(&json::replace(&text, &merged(spans))),
            ));
        }
    }
    if !edits.is_empty() && !checked.verdict.blocks() {
        edits.sort_by_key(|e| e.0);
        checked.redacted = Some(json::splice(body, &edits));
    }
    checked
}

/// The rule id of a webhook that failed with `on_error = "block"`.
pub const WEBHOOK_FAILED: &str = "webhook_error";

/// Blocks for each guardrail whose webhook failed with `on_error = "block"`.
pub fn webhook_failures(
    plan: &Plan,
    direction: Direction,
    failed: &[usize],
    checked: &mut Checked,
) {
    let rule: Arc<str> = Arc::from(WEBHOOK_FAILED);
    for &i in failed {
        if let Some(p) = plan.policies.get(i) {
            checked
                .verdict
                .add(&p.id, &rule, GuardAction::Block, direction);
        }
    }
}

/// The marker a match is replaced with.
pub fn marker(rule: &str) -> String {
    format!("[REDACTED:{rule}]")
}

/// Spans sorted and merged where they overlap (the first one's rule names the merged
/// span), each with its marker.
fn merged(mut spans: Vec<(usize, usize, &str)>) -> Vec<(usize, usize, String)> {
    spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1)));
    let mut out: Vec<(usize, usize, &str)> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if s.0 < last.1 => last.1 = last.1.max(s.1),
            _ => out.push(s),
        }
    }
    out.into_iter()
        .map(|(s, e, rule)| (s, e, marker(rule)))
        .collect()
}

impl Guards {
    /// Checks a request body with the plan's input policies: cached blocks cost a hash,
    /// new ones are scanned (and posted to webhooks) and remembered.
    pub async fn check_input(&self, plan: &Plan, body: &[u8]) -> Checked {
        if !plan.input() {
            return Checked::default();
        }
        let spans = blocks(body);
        let keys: Vec<u128> = spans
            .iter()
            .map(|(s, e)| self.cache.key(plan, &body[*s..*e]))
            .collect();
        let mut verdicts: Vec<Option<Arc<BlockVerdict>>> = {
            let mut cache = self.cache.entries.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter().map(|k| cache.get(k).cloned()).collect()
        };
        let mut fresh = Vec::new();
        let mut failed = Vec::new();
        for (i, (s, e)) in spans.iter().enumerate() {
            if verdicts[i].is_some() {
                continue;
            }
            let block = &body[*s..*e];
            let mut verdict = scan_block(plan, Direction::Input, block);
            let hooks = self
                .webhooks
                .check_block(plan, Direction::Input, block, &mut verdict)
                .await;
            failed.extend(hooks.failed);
            let verdict = Arc::new(verdict);
            if hooks.complete {
                fresh.push((keys[i], Arc::clone(&verdict)));
            }
            verdicts[i] = Some(verdict);
        }
        if !fresh.is_empty() {
            let mut cache = self.cache.entries.lock().unwrap_or_else(|e| e.into_inner());
            for (k, v) in fresh {
                cache.put(k, v);
            }
        }
        let blocks: Vec<(usize, Arc<BlockVerdict>)> = spans
            .iter()
            .zip(verdicts)
            .filter_map(|((s, _), v)| Some((*s, v?)))
            .filter(|(_, v)| !v.strings.is_empty())
            .collect();
        let mut checked = conclude(plan, Direction::Input, body, &blocks);
        webhook_failures(plan, Direction::Input, &failed, &mut checked);
        self.counts.count(&checked.verdict);
        checked
    }
}
