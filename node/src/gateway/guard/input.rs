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
use std::borrow::Cow;
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

/// The byte ranges of a request body's content blocks (either dialect: Anthropic's
/// `system` and messages' `content`, OpenAI's messages' `content` and `tool_calls`;
/// an array is one block per element), each with whether it has a `cache_control`
/// member. One walk over the body that jumps over strings; keys are decoded, so an
/// escaped key hides nothing.
pub fn blocks(body: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    // One block: where it ends, and whether it has a `cache_control` member.
    fn block(body: &[u8], at: usize, out: &mut Vec<(usize, usize, bool)>) -> Option<usize> {
        let mut marked = false;
        let end = json::walk_object(body, at, |key, _| {
            marked |= key == "cache_control";
            None
        })
        .or_else(|| json::value_end(body, at))?;
        out.push((at, end, marked));
        Some(end)
    }
    // A value that is content: an array is a block per element, anything else one block.
    fn content(body: &[u8], at: usize, out: &mut Vec<(usize, usize, bool)>) -> Option<usize> {
        json::walk_array(body, at, |element| block(body, element, out))
            .or_else(|| block(body, at, out))
    }
    json::walk_object(body, 0, |key, at| match key {
        "system" => content(body, at, &mut out),
        "messages" => json::walk_array(body, at, |message| {
            json::walk_object(body, message, |key, at| match key {
                "content" | "tool_calls" => content(body, at, &mut out),
                _ => None,
            })
            .or_else(|| json::value_end(body, message))
        }),
        _ => None,
    });
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
    if !plan.input() {
        return Checked::default();
    }
    let spans = blocks(body);
    // Each block's key, and whether its bytes differ from what was hashed.
    let keys: Vec<(u128, bool)> = spans
        .iter()
        .map(|(s, e, marked)| match marked {
            false => (cache.key(plan, &body[*s..*e]), false),
            true => match stable(&body[*s..*e]) {
                Cow::Borrowed(b) => (cache.key(plan, b), false),
                Cow::Owned(b) => (cache.key(plan, &b), true),
            },
        })
        .collect();
    let mut verdicts: Vec<Option<Arc<BlockVerdict>>> = {
        let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .map(|(k, moved)| {
                // A verdict with findings has their places in the bytes it was made
                // from: a block whose marker moved is scanned again.
                entries
                    .get(k)
                    .filter(|v| !*moved || v.strings.is_empty())
                    .cloned()
            })
            .collect()
    };
    let mut fresh = Vec::new();
    let mut failed = Vec::new();
    for (i, (s, e, _)) in spans.iter().enumerate() {
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
        // Findings are placed in these bytes: kept only when they are what was hashed.
        if hooks.complete && verdict.small() && (!keys[i].1 || verdict.strings.is_empty()) {
            fresh.push((keys[i].0, Arc::clone(&verdict)));
        }
        verdicts[i] = Some(verdict);
    }
    if !fresh.is_empty() {
        let mut entries = cache.entries.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in fresh {
            entries.put(k, v);
        }
    }
    let blocks: Vec<(usize, Arc<BlockVerdict>)> = spans
        .iter()
        .zip(verdicts)
        .filter_map(|((s, _, _), v)| Some((*s, v?)))
        .filter(|(_, v)| !v.strings.is_empty())
        .collect();
    let mut checked = block::conclude(plan, Direction::Input, body, &blocks);
    block::webhook_failures(plan, Direction::Input, &failed, &mut checked);
    counts.count(&checked.verdict);
    checked
}

/// A block as its cache key sees it: without its `cache_control` member, which Claude
/// Code moves to the newest blocks every turn (the block itself is unchanged).
fn stable(block: &[u8]) -> Cow<'_, [u8]> {
    let members = json::object_members(block, 0).unwrap_or_default();
    let Some(at) = members.iter().position(|(k, _)| k == "cache_control") else {
        return Cow::Borrowed(block);
    };
    let (value_start, value_end) = members[at].1;
    let Some(key_start) = memchr::memmem::rfind(&block[..value_start], b"\"cache_control\"") else {
        return Cow::Borrowed(block);
    };
    // The member and one comma next to it, so the rest reads as the block without it.
    let (start, end) = match (at.checked_sub(1), members.get(at + 1)) {
        (Some(before), _) => (members[before].1 .1, value_end),
        (None, Some(_)) => (
            key_start,
            memchr::memchr(b'"', &block[value_end..]).map_or(value_end, |i| value_end + i),
        ),
        (None, None) => (key_start, value_end),
    };
    let mut out = Vec::with_capacity(block.len());
    out.extend_from_slice(&block[..start]);
    out.extend_from_slice(&block[end..]);
    Cow::Owned(out)
}
