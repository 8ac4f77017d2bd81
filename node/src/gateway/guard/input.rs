//! The input side: a request body's content blocks (the system prompt's, each
//! message's: text, `tool_use` inputs, `tool_result` contents; OpenAI messages and tool
//! calls), each block's verdict cached by the hash of its bytes, and the request's
//! verdict: block it, redact it in place (structure kept, the same marker every turn),
//! or let it through flagged.
//!
//! Claude Code sends the whole conversation every turn; only the blocks not seen before
//! are scanned, so a turn costs its new blocks, not the session's length.

use super::block::{self, BlockVerdict, Checked};
use super::json;
use super::policy::Plan;
use super::verdict::{Counts, Direction};
use super::webhook;
use lru::LruCache;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

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

/// Checks a request body with the plan's input policies: cached blocks cost a hash,
/// new ones are scanned (and posted to webhooks) and remembered.
pub async fn check(
    cache: &VerdictCache,
    webhooks: &webhook::Client,
    counts: &Counts,
    plan: &Plan,
    body: &[u8],
) -> Checked {
    {
        if !plan.input() {
            return Checked::default();
        }
        let spans = blocks(body);
        let keys: Vec<u128> = spans
            .iter()
            .map(|(s, e)| cache.key(plan, &body[*s..*e]))
            .collect();
        let mut verdicts: Vec<Option<Arc<BlockVerdict>>> = {
            let mut cache = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter().map(|k| cache.get(k).cloned()).collect()
        };
        let mut fresh = Vec::new();
        let mut failed = Vec::new();
        for (i, (s, e)) in spans.iter().enumerate() {
            if verdicts[i].is_some() {
                continue;
            }
            let block = &body[*s..*e];
            let mut verdict = block::scan_block(plan, Direction::Input, block);
            let hooks = webhooks
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
            let mut cache = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut checked = block::conclude(plan, Direction::Input, body, &blocks);
        block::webhook_failures(plan, Direction::Input, &failed, &mut checked);
        counts.count(&checked.verdict);
        checked
    }
}
