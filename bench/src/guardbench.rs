//! `tollgate-bench guard-bench`: what the guardrails cost, in process and on one core: a
//! Claude Code-shaped request checked cold (nothing cached), then turn after turn with
//! only its last turn new; scan throughput of each detector; and what a stream's first
//! event and each text delta cost. `tollgate-bench guard-scan DIR`: every `.rs` file
//! under DIR through the secrets rules (and the PII validators), with what was found by
//! rule: the false-positive rate over code nobody wrote secrets into.

use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_node::gateway::guard::output::StreamGuard;
use tollgate_node::gateway::guard::policy::{Plan, Policy};
use tollgate_node::gateway::guard::verdict::Finding;
use tollgate_node::gateway::guard::Guards;
use tollgate_node::http::error::Dialect;
use tollgate_proto::{Detector, GuardAction, GuardDirection, GuardScope, Guardrail, PiiEntity};

#[derive(clap::Args)]
pub struct GuardBenchArgs {
    /// A Claude Code-shaped request body (JSON).
    #[arg(long)]
    body_file: PathBuf,
    /// Checks of each kind to time (the median is reported).
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Time only this part (`cold`, `turns` or `resend`), e.g. under a profiler.
    #[arg(long)]
    only: Option<String>,
}

#[derive(clap::Args)]
pub struct GuardScanArgs {
    /// Directory scanned for `.rs` files (e.g. `$CARGO_HOME/registry/src`).
    dir: PathBuf,
    /// Stop after this many bytes of files.
    #[arg(long, default_value_t = 2_000_000_000)]
    max_bytes: u64,
    /// Also run the PII validators.
    #[arg(long)]
    pii: bool,
}

fn plan(detectors: Vec<Detector>) -> anyhow::Result<Plan> {
    let g = Guardrail {
        id: "gr_bench".into(),
        name: "bench".into(),
        scope: GuardScope::Global,
        detectors,
        action: GuardAction::Redact,
        direction: GuardDirection::Both,
        created_at_ms: 0,
    };
    Ok(Plan {
        policies: vec![Arc::new(Policy::compile(&g)?)],
        fingerprint: 1,
    })
}

/// The bench body's first messages, which carry its secrets and PII.
const KEPT_MESSAGES: usize = 10;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Bytes of text in a body's string values (what the detectors read).
fn text_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_bytes).sum(),
        Value::Object(o) => o.values().map(text_bytes).sum(),
        _ => 0,
    }
}

pub fn run(args: GuardBenchArgs) -> anyhow::Result<()> {
    let body = Bytes::from(std::fs::read(&args.body_file)?);
    let value: Value = serde_json::from_slice(&body)?;
    let both = plan(vec![Detector::Secrets, Detector::Pii { entities: vec![] }])?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let n = args.iterations.max(3);
    let want = |part: &str| args.only.as_deref().is_none_or(|only| only == part);
    let n_of = |part: &str| if want(part) { n } else { 1 };

    // Cold: a fresh cache each time, so every block is scanned.
    let mut cold = Vec::with_capacity(n);
    let mut found = 0;
    for _ in 0..n_of("cold") {
        let guards = Guards::new(65_536);
        let t = Instant::now();
        let checked = rt.block_on(guards.check_input(&both, &body));
        cold.push(t.elapsed());
        found = checked.verdict.hits.iter().map(|h| h.count).sum::<u32>();
    }
    // Turn after turn: the conversation so far is cached, one new user turn (a tool
    // result of ~2 KB) comes each time.
    let guards = Guards::new(65_536);
    rt.block_on(guards.check_input(&both, &body));
    let mut warm = Vec::with_capacity(n);
    let mut turns = value.clone();
    for i in 0..n_of("turns") {
        if let Some(messages) = turns["messages"].as_array_mut() {
            messages.push(json!({"role": "user", "content": [{"type": "tool_result",
                "tool_use_id": format!("toolu_b{i}"),
                "content": format!("turn {i}: {}", "fn step() -> Result<(), Error> { Ok(()) }\n".repeat(48))}]}));
        }
        let next = Bytes::from(serde_json::to_vec(&turns)?);
        let t = Instant::now();
        rt.block_on(guards.check_input(&both, &next));
        warm.push(t.elapsed());
        // Keep the request the size of the first: the oldest message after the ones
        // carrying secrets goes (they stay, as in a session, and are redacted each turn).
        if let Some(messages) = turns["messages"].as_array_mut() {
            messages.remove(KEPT_MESSAGES);
        }
    }
    // Nothing new: the same request again (a retry, or a benchmark loop).
    let mut same = Vec::with_capacity(n);
    for _ in 0..n_of("resend") {
        let t = Instant::now();
        rt.block_on(guards.check_input(&both, &body));
        same.push(t.elapsed());
    }
    // Throughput of each detector over the body's text.
    let text = collect_text(&value);
    let mut throughput = BTreeMap::new();
    let parts = if args.only.is_some() { 0 } else { 3 };
    for (name, detectors) in [
        ("secrets", vec![Detector::Secrets]),
        (
            "pii",
            vec![Detector::Pii {
                entities: PiiEntity::ALL.to_vec(),
            }],
        ),
        (
            "secrets+pii",
            vec![Detector::Secrets, Detector::Pii { entities: vec![] }],
        ),
    ]
    .into_iter()
    .take(parts)
    {
        let p = plan(detectors)?;
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let mut out: Vec<Finding> = Vec::new();
            let t = Instant::now();
            for policy in &p.policies {
                policy.scan(text.as_bytes(), &mut out);
            }
            times.push(t.elapsed());
        }
        let us = median(times);
        throughput.insert(name, text.len() as f64 / us);
    }
    // A stream: its first event (what time to first byte waits on) and a text delta.
    let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"m\",\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n";
    let delta = b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"the build fails in module \"}}\n\n";
    let (mut first, mut per_delta) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n_of("stream") {
        let mut stream = StreamGuard::new(both.clone(), Arc::default(), Dialect::Anthropic);
        let t = Instant::now();
        let out = stream.push(start);
        first.push(t.elapsed());
        anyhow::ensure!(!out.is_empty(), "the first event was held");
        for _ in 0..40 {
            stream.push(delta);
        }
        let t = Instant::now();
        stream.push(delta);
        per_delta.push(t.elapsed());
    }
    let report = json!({
        "body_bytes": body.len(),
        "text_bytes": text_bytes(&value),
        "blocks_found": found,
        "cold_us": median(cold),
        "last_turn_new_us": median(warm),
        "nothing_new_us": median(same),
        "scan_mb_per_s": throughput,
        "stream_first_event_us": median(first),
        "stream_text_delta_us": median(per_delta),
    });
    println!("{report}");
    Ok(())
}

fn collect_text(v: &Value) -> String {
    let mut out = String::new();
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::String(s) => {
                out.push_str(s);
                out.push('\n');
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => rust_files(&path, out),
            Ok(t) if t.is_file() && path.extension().is_some_and(|x| x == "rs") => out.push(path),
            _ => {}
        }
    }
}

pub fn scan(args: GuardScanArgs) -> anyhow::Result<()> {
    let mut detectors = vec![Detector::Secrets];
    if args.pii {
        detectors.push(Detector::Pii { entities: vec![] });
    }
    let p = plan(detectors)?;
    let mut files = Vec::new();
    rust_files(&args.dir, &mut files);
    files.sort();
    let (mut bytes, mut scanned, mut with_findings) = (0u64, 0u64, 0u64);
    let mut by_rule: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut examples: BTreeMap<String, String> = BTreeMap::new();
    let started = Instant::now();
    for file in files {
        let Ok(text) = std::fs::read(&file) else {
            continue;
        };
        if bytes >= args.max_bytes {
            break;
        }
        bytes += text.len() as u64;
        scanned += 1;
        let mut out = Vec::new();
        for policy in &p.policies {
            policy.scan(&text, &mut out);
        }
        if out.is_empty() {
            continue;
        }
        with_findings += 1;
        let mut rules_here = std::collections::BTreeSet::new();
        for f in &out {
            let entry = by_rule.entry(f.rule.to_string()).or_default();
            entry.0 += 1;
            if rules_here.insert(f.rule.to_string()) {
                entry.1 += 1;
            }
            examples
                .entry(f.rule.to_string())
                .or_insert_with(|| format!("{}:{}", file.display(), f.start));
        }
    }
    let findings: u64 = by_rule.values().map(|v| v.0).sum();
    let mut worst: Vec<(&String, &(u64, u64))> = by_rule.iter().collect();
    worst.sort_by_key(|w| std::cmp::Reverse(w.1 .0));
    let worst: Vec<Value> = worst
        .iter()
        .take(12)
        .map(|(rule, (n, files))| {
            json!({"rule": rule, "findings": n, "files": files, "example": examples.get(*rule)})
        })
        .collect();
    let report = json!({
        "files": scanned,
        "bytes": bytes,
        "seconds": started.elapsed().as_secs_f64(),
        "mb_per_s": bytes as f64 / 1e6 / started.elapsed().as_secs_f64(),
        "findings": findings,
        "files_with_findings": with_findings,
        "file_rate": with_findings as f64 / scanned.max(1) as f64,
        "findings_per_mb": findings as f64 / (bytes as f64 / 1e6).max(1e-9),
        "worst_rules": worst,
    });
    println!("{report}");
    Ok(())
}
