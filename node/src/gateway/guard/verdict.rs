//! What the guardrails found in a request or an answer: per guardrail and rule, how
//! many matches and what was done (never the matched text). It goes into the request
//! record, `/metrics` and a block's error message.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tollgate_proto::{GuardAction, GuardrailId};

/// One match: the rule that found it and its byte range in the text scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Arc<str>,
    pub start: usize,
    pub end: usize,
}

/// Which way the text went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

pub fn action_name(action: GuardAction) -> &'static str {
    match action {
        GuardAction::Block => "block",
        GuardAction::Redact => "redact",
        GuardAction::Flag => "flag",
    }
}

/// Matches of one rule of one guardrail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub guardrail: GuardrailId,
    pub rule: Arc<str>,
    pub action: GuardAction,
    pub direction: Direction,
    pub count: u32,
}

impl Hit {
    /// The record's form: `guardrail:rule:action:direction:count`.
    pub fn record(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.guardrail,
            self.rule,
            action_name(self.action),
            self.direction.name(),
            self.count
        )
    }
}

/// Every hit of one check, in guardrail then rule order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub hits: Vec<Hit>,
}

impl Verdict {
    pub fn add(
        &mut self,
        guardrail: &GuardrailId,
        rule: &Arc<str>,
        action: GuardAction,
        direction: Direction,
    ) {
        match self
            .hits
            .iter_mut()
            .find(|h| h.guardrail == *guardrail && h.rule == *rule && h.direction == direction)
        {
            Some(h) => h.count += 1,
            None => self.hits.push(Hit {
                guardrail: guardrail.clone(),
                rule: Arc::clone(rule),
                action,
                direction,
                count: 1,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    pub fn blocks(&self) -> bool {
        self.hits.iter().any(|h| h.action == GuardAction::Block)
    }

    /// The message of a block: the guardrails and rules that blocked, never the text.
    pub fn block_message(&self) -> String {
        let mut by_guardrail: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for h in self.hits.iter().filter(|h| h.action == GuardAction::Block) {
            let rules = by_guardrail.entry(h.guardrail.as_str()).or_default();
            if !rules.contains(&&*h.rule) {
                rules.push(&h.rule);
            }
        }
        let mut out = String::from("blocked by guardrail");
        for (i, (g, rules)) in by_guardrail.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; guardrail " };
            let _ = write!(out, "{sep}{g} (rule {})", rules.join(", "));
        }
        out
    }

    pub fn merge(&mut self, other: Verdict) {
        for h in other.hits {
            match self.hits.iter_mut().find(|x| {
                x.guardrail == h.guardrail && x.rule == h.rule && x.direction == h.direction
            }) {
                Some(x) => x.count += h.count,
                None => self.hits.push(h),
            }
        }
    }
}

/// Most label sets `/metrics` keeps (guardrail × rule × action × direction).
pub const MAX_COUNTED: usize = 10_000;

/// Matches counted for `/metrics`, by guardrail, rule, action and direction.
#[derive(Default)]
pub struct Counts(Mutex<BTreeMap<Labels, u64>>);

/// Guardrail, rule, action, direction.
pub type Labels = (String, String, &'static str, &'static str);

impl Counts {
    pub fn count(&self, verdict: &Verdict) {
        if verdict.is_empty() {
            return;
        }
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for h in &verdict.hits {
            let key = (
                h.guardrail.to_string(),
                h.rule.to_string(),
                action_name(h.action),
                h.direction.name(),
            );
            if counts.len() >= MAX_COUNTED && !counts.contains_key(&key) {
                continue;
            }
            *counts.entry(key).or_default() += u64::from(h.count);
        }
    }

    /// Each label set and its count.
    pub fn snapshot(&self) -> Vec<(Labels, u64)> {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}
