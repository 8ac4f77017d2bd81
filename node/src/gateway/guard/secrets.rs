//! The `secrets` detector: the gitleaks v8.30.1 rule set (`gitleaks/gitleaks.toml`, MIT,
//! `gitleaks/LICENSE`), run as gitleaks runs it: one Aho-Corasick pass over the text for
//! every rule's keywords, then only the regexes of the rules whose keywords occur, then
//! each match's entropy and the allowlists (global, then the rule's).
//!
//! Differences from gitleaks, all because a prompt has no file: rules that apply only
//! to some paths are left out, path allowlists never match, and nothing is decoded
//! (gitleaks can also look inside base64 and hex).
//!
//! # Layout
//! - `keywords`: every occurrence of every rule's keywords, four walks of one DFA at once.
//! - `gate`: rules passed over unless a keyword of theirs can begin a match, and run
//!   only around such keywords (`generic-api-key`).

use super::verdict::Finding;
use aho_corasick::AhoCorasick;
use gate::{Gated, GATED, WINDOW_AFTER};
use keywords::Keywords;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};

const RULES_TOML: &str = include_str!("gitleaks/gitleaks.toml");

#[derive(Deserialize)]
struct ConfigToml {
    #[serde(default)]
    allowlist: Option<AllowlistToml>,
    rules: Vec<RuleToml>,
}

#[derive(Deserialize)]
struct RuleToml {
    id: String,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default, rename = "secretGroup")]
    secret_group: Option<usize>,
    #[serde(default)]
    allowlists: Vec<AllowlistToml>,
}

#[derive(Deserialize)]
struct AllowlistToml {
    #[serde(default)]
    condition: Option<String>,
    #[serde(default, rename = "regexTarget")]
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
}

/// What an allowlist's regexes are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Secret,
    Match,
    Line,
}

struct Allowlist {
    target: Target,
    regexes: Vec<Regex>,
    /// Lower case; a secret containing one is allowed.
    stopwords: Option<AhoCorasick>,
}

struct Rule {
    id: Arc<str>,
    regex: Regex,
    /// A candidate only where a keyword can begin a match (`gate::GATED`).
    gate: Option<&'static Gated>,
    entropy: Option<f64>,
    secret_group: Option<usize>,
    allowlists: Vec<Allowlist>,
}

/// The compiled rule set.
pub struct Secrets {
    rules: Vec<Rule>,
    /// Every rule's keywords; keyword `i` belongs to the rules `keyword_rules[i]`.
    keywords: Keywords,
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords: always run.
    unconditional: Vec<usize>,
    global: Vec<Allowlist>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("the gitleaks rule file does not parse: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("gitleaks rule {rule}: {error}")]
    Regex { rule: String, error: String },
    #[error("gitleaks keywords: {0}")]
    Keywords(String),
}

/// Go's RE2 syntax as the `regex` crate reads it: a `]` first in a class is a literal
/// in Go (escaped here), and a `{` that does not start a repetition is a literal in Go
/// (escaped here).
pub fn from_go(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\\' => {
                let end = (i + 2).min(bytes.len());
                out.push_str(&pattern[i..end]);
                i = end;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                out.push('[');
                if bytes.get(i + 1) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            b'[' if in_class && bytes.get(i + 1) == Some(&b':') => {
                // A POSIX class `[:alpha:]` inside a class.
                match pattern[i..].find(":]") {
                    Some(end) => {
                        out.push_str(&pattern[i..i + end + 2]);
                        i += end + 2;
                        continue;
                    }
                    None => out.push_str("\\["),
                }
            }
            b'[' => out.push_str("\\["),
            b']' if in_class => {
                in_class = false;
                out.push(']');
            }
            b'{' if !in_class && !starts_repetition(&bytes[i..]) => out.push_str("\\{"),
            b'}' if !in_class => {
                // Only a repetition's own `}` (copied with it below) is special.
                out.push_str("\\}");
            }
            b'{' if !in_class => {
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .map_or(bytes.len(), |p| i + p + 1);
                out.push_str(&pattern[i..end]);
                i = end;
                continue;
            }
            _ => {
                let len = utf8_len(c);
                out.push_str(&pattern[i..(i + len).min(bytes.len())]);
                i += len;
                continue;
            }
        }
        i += 1;
    }
    out
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Whether `s` (starting at `{`) is a repetition `{n}`, `{n,}` or `{n,m}`.
fn starts_repetition(s: &[u8]) -> bool {
    let Some(close) = s.iter().position(|&b| b == b'}') else {
        return false;
    };
    let inner = &s[1..close];
    let mut parts = inner.splitn(2, |&b| b == b',');
    let first = parts.next().unwrap_or_default();
    let digits = |p: &[u8]| p.iter().all(u8::is_ascii_digit);
    if first.is_empty() || !digits(first) {
        return false;
    }
    parts.next().is_none_or(digits)
}

fn compile(rule: &str, pattern: &str) -> Result<Regex, RulesError> {
    RegexBuilder::new(&from_go(pattern))
        .unicode(false)
        .build()
        .map_err(|e| RulesError::Regex {
            rule: rule.to_owned(),
            error: e.to_string().lines().last().unwrap_or_default().to_owned(),
        })
}

fn allowlist(rule: &str, a: &AllowlistToml) -> Result<Option<Allowlist>, RulesError> {
    // Paths never match a prompt: an allowlist that needs one (AND) never applies, and
    // one that is only paths allows nothing.
    let and = a.condition.as_deref() == Some("AND");
    if and && !a.paths.is_empty() || a.regexes.is_empty() && a.stopwords.is_empty() {
        return Ok(None);
    }
    let target = match a.regex_target.as_deref() {
        Some("match") => Target::Match,
        Some("line") => Target::Line,
        _ => Target::Secret,
    };
    let regexes = a
        .regexes
        .iter()
        .map(|r| compile(rule, r))
        .collect::<Result<_, _>>()?;
    let stopwords = match a.stopwords.is_empty() {
        true => None,
        false => Some(
            AhoCorasick::new(a.stopwords.iter().map(|w| w.to_lowercase()))
                .map_err(|e| RulesError::Keywords(e.to_string()))?,
        ),
    };
    Ok(Some(Allowlist {
        target,
        regexes,
        stopwords,
    }))
}

impl Secrets {
    /// The vendored rule set, compiled once per process.
    pub fn builtin() -> Result<&'static Secrets, &'static RulesError> {
        static RULES: OnceLock<Result<Secrets, RulesError>> = OnceLock::new();
        RULES.get_or_init(|| Secrets::parse(RULES_TOML)).as_ref()
    }

    pub fn parse(text: &str) -> Result<Secrets, RulesError> {
        let config: ConfigToml = toml::from_str(text)?;
        let mut rules = Vec::new();
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut unconditional = Vec::new();
        for r in &config.rules {
            let (Some(regex), None) = (&r.regex, &r.path) else {
                continue;
            };
            let index = rules.len();
            let mut lists = Vec::new();
            for a in &r.allowlists {
                lists.extend(allowlist(&r.id, a)?);
            }
            rules.push(Rule {
                id: Arc::from(r.id.as_str()),
                regex: compile(&r.id, regex)?,
                gate: GATED.iter().find(|g| g.rule == r.id),
                entropy: r.entropy.filter(|e| *e > 0.0),
                secret_group: r.secret_group.filter(|g| *g > 0),
                allowlists: lists,
            });
            if r.keywords.is_empty() {
                unconditional.push(index);
            }
            for k in &r.keywords {
                let k = k.to_lowercase();
                match keywords.iter().position(|have| *have == k) {
                    Some(at) => keyword_rules[at].push(index),
                    None => {
                        keywords.push(k);
                        keyword_rules.push(vec![index]);
                    }
                }
            }
        }
        let keywords = Keywords::new(&keywords).map_err(RulesError::Keywords)?;
        let global = match &config.allowlist {
            Some(a) => allowlist("global allowlist", a)?.into_iter().collect(),
            None => Vec::new(),
        };
        Ok(Secrets {
            rules,
            keywords,
            keyword_rules,
            unconditional,
            global,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The secrets in `text`: each finding's span is the secret (the rule's secret
    /// group, else its first non-empty group, else the whole match).
    pub fn scan(&self, text: &[u8], out: &mut Vec<Finding>) {
        let mut candidates = vec![false; self.rules.len()];
        let mut any = false;
        // Rules run in windows: where their keywords are, when a match can begin there.
        let mut at: Vec<(usize, usize)> = Vec::new();
        let mut hits = Vec::new();
        self.keywords.find_all(text, &mut hits);
        for hit in &hits {
            for &rule in &self.keyword_rules[hit.keyword] {
                match self.rules[rule].gate {
                    None => candidates[rule] = true,
                    Some(g) if (g.may_match)(text, hit.end) => {
                        candidates[rule] = true;
                        if g.before.is_some() {
                            at.push((rule, hit.start));
                        }
                    }
                    Some(_) => continue,
                }
                any = true;
            }
        }
        at.sort_unstable();
        for &rule in &self.unconditional {
            candidates[rule] = true;
            any = true;
        }
        if !any {
            return;
        }
        for (i, _) in candidates.iter().enumerate().filter(|(_, c)| **c) {
            let rule = &self.rules[i];
            match rule.gate.and_then(|g| g.before) {
                None => self.scan_rule(rule, text, (0, text.len()), out),
                Some(before) => {
                    let mut window: Option<(usize, usize)> = None;
                    for &(_, p) in at.iter().filter(|(r, _)| *r == i) {
                        let start = p.saturating_sub(before);
                        let reach = (p + WINDOW_AFTER).min(text.len());
                        let end = memchr::memchr(b'\n', &text[reach..])
                            .map_or(text.len(), |n| reach + n + 1);
                        window = match window {
                            Some((s, e)) if start <= e => Some((s, e.max(end))),
                            Some(done) => {
                                self.scan_rule(rule, text, done, out);
                                Some((start, end))
                            }
                            None => Some((start, end)),
                        };
                    }
                    if let Some(last) = window {
                        self.scan_rule(rule, text, last, out);
                    }
                }
            }
        }
    }

    /// The rule's matches in `text[from..to]` (lines and positions are the text's).
    fn scan_rule(
        &self,
        rule: &Rule,
        text: &[u8],
        (from, to): (usize, usize),
        out: &mut Vec<Finding>,
    ) {
        for caps in rule.regex.captures_iter(&text[from..to]) {
            let Some(whole) = caps.get(0) else { continue };
            let secret = match rule.secret_group {
                Some(g) => caps.get(g),
                None => caps.iter().skip(1).flatten().find(|m| !m.is_empty()),
            }
            .unwrap_or(whole);
            let bytes = secret.as_bytes();
            if rule
                .entropy
                .is_some_and(|floor| shannon_entropy(bytes) <= floor)
            {
                continue;
            }
            let line = line_around(text, from + whole.start(), from + whole.end());
            let allowed = |lists: &[Allowlist]| {
                lists.iter().any(|a| {
                    let target = match a.target {
                        Target::Secret => bytes,
                        Target::Match => whole.as_bytes(),
                        Target::Line => line,
                    };
                    a.regexes.iter().any(|r| r.is_match(target))
                        || a.stopwords
                            .as_ref()
                            .is_some_and(|s| contains_lower(s, bytes))
                })
            };
            if allowed(&self.global) || allowed(&rule.allowlists) {
                continue;
            }
            out.push(Finding {
                rule: Arc::clone(&rule.id),
                start: from + secret.start(),
                end: from + secret.end(),
            });
        }
    }
}

/// Whether `text`, lower-cased, contains one of the (lower-case) words.
fn contains_lower(words: &AhoCorasick, text: &[u8]) -> bool {
    let lower = text.to_ascii_lowercase();
    words.is_match(&lower)
}

/// The lines a match is on (from the start of its first line to the end of its last).
fn line_around(text: &[u8], start: usize, end: usize) -> &[u8] {
    let from = memchr::memrchr(b'\n', &text[..start]).map_or(0, |i| i + 1);
    let to = memchr::memchr(b'\n', &text[end..]).map_or(text.len(), |i| end + i);
    &text[from..to]
}

/// Shannon entropy of a byte string, in bits per byte (gitleaks counts characters; the
/// same for ASCII, which secrets are).
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    if bytes.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let len = bytes.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

mod gate;
mod keywords;
#[cfg(test)]
mod tests;
