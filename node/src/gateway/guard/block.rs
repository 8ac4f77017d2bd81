//! One block of JSON checked: its string values scanned by a plan's policies, and
//! the verdict of a body made from its blocks' (hits counted, redactions made unless
//! something blocks).

use super::json;
use super::policy::Plan;
use super::verdict::{Direction, Finding, Verdict};
use std::sync::Arc;
use tollgate_proto::GuardAction;

/// Most findings a verdict the cache keeps may hold (a block with more is scanned again
/// when it comes back).
pub const MAX_KEPT_FINDINGS: usize = 32;

/// The findings in one string of a block.
#[derive(Debug, Clone)]
pub struct StringHits {
    /// The string's token (quotes included), relative to the block.
    pub start: usize,
    pub end: usize,
    /// Each finding with the index of its policy in the plan; spans are in the
    /// string's text.
    pub findings: Vec<(usize, Finding)>,
    /// The token's redactions (start, end in the token, the marker's JSON bytes), made
    /// once a request needed them: a cached verdict makes them once for every turn that
    /// resends the block, and they cost a splice, not a decode and an encode.
    pub edits: std::sync::OnceLock<Vec<(usize, usize, Vec<u8>)>>,
}

/// What the checks found in one block (nothing, mostly).
#[derive(Debug, Clone, Default)]
pub struct BlockVerdict {
    pub strings: Vec<StringHits>,
}

impl BlockVerdict {
    /// Whether the cache may keep it: few findings (each a few dozen bytes).
    pub fn small(&self) -> bool {
        self.strings.iter().map(|s| s.findings.len()).sum::<usize>() <= MAX_KEPT_FINDINGS
    }
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
                edits: Default::default(),
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
    /// Each range replaced (start, end in the old body) and its new length, in order.
    pub edits: Vec<(usize, usize, usize)>,
}

impl Checked {
    /// Where an offset of the old body outside every edited range is in the redacted
    /// one.
    pub fn moved(&self, at: usize) -> usize {
        self.edits
            .iter()
            .take_while(|(_, end, _)| *end <= at)
            .fold(at, |at, (start, end, len)| at - (end - start) + len)
    }
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
            let made = s.edits.get_or_init(|| token_edits(token, merged(spans)));
            edits.extend(made.iter().map(|(start, end, with)| {
                (at + s.start + start, at + s.start + end, with.clone())
            }));
        }
    }
    if !edits.is_empty() && !checked.verdict.blocks() {
        edits.sort_by_key(|e| e.0);
        checked.redacted = Some(json::splice(body, &edits));
        checked.edits = edits
            .iter()
            .map(|(s, e, with)| (*s, *e, with.len()))
            .collect();
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

/// The edits of a string token that replace its text's spans (sorted, not overlapping)
/// with their markers.
fn token_edits(token: &[u8], spans: Vec<(usize, usize, String)>) -> Vec<(usize, usize, Vec<u8>)> {
    let mut at: Vec<(usize, bool)> = spans
        .iter()
        .flat_map(|(s, e, _)| [(*s, false), (*e, true)])
        .collect();
    json::token_offsets(token, &mut at);
    spans
        .into_iter()
        .zip(at.chunks(2))
        .map(|((_, _, marker), raw)| {
            let quoted = json::quote(&marker);
            (raw[0].0, raw[1].0, quoted[1..quoted.len() - 1].to_vec())
        })
        .collect()
}

/// Spans sorted and merged where they overlap, each with its marker: the first span's
/// rule names the merged one, and of two on the same text a specific rule wins over a
/// catch-all (`github-pat` over `generic-api-key`).
fn merged(mut spans: Vec<(usize, usize, &str)>) -> Vec<(usize, usize, String)> {
    spans.sort_by_key(|s| (s.0, std::cmp::Reverse(s.1), s.2.starts_with("generic")));
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
