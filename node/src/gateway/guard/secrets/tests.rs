//! The gitleaks rules as vendored: they compile, translate from Go, and pass gitleaks'
//! own test cases.

use super::*;
use std::collections::BTreeMap;

fn rules() -> &'static Secrets {
    Secrets::builtin().expect("the vendored rules compile")
}

fn found(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    rules().scan(text.as_bytes(), &mut out);
    out.into_iter()
        .map(|f| (f.rule.to_string(), text[f.start..f.end].to_owned()))
        .collect()
}

#[test]
fn every_rule_compiles_except_path_only_ones() {
    let text = RULES_TOML;
    let total = text.matches("[[rules]]").count();
    let with_path = text.lines().filter(|l| l.starts_with("path = ")).count();
    assert_eq!(total, 222);
    assert_eq!(rules().rule_count(), total - with_path);
}

#[test]
fn go_syntax_becomes_rust_syntax() {
    assert_eq!(from_go(r"[^]]+"), r"[^\]]+");
    assert_eq!(from_go(r"a{2,3}b{x}"), r"a{2,3}b\{x\}");
    assert_eq!(from_go(r"\{\{[ \t\w]+}}"), r"\{\{[ \t\w]+\}\}");
    assert_eq!(from_go(r"[[:alnum:]]{3}"), r"[[:alnum:]]{3}");
    assert_eq!(from_go(r"[a[b]"), r"[a\[b]");
}

#[test]
fn entropy_is_shannons() {
    assert_eq!(shannon_entropy(b""), 0.0);
    assert_eq!(shannon_entropy(b"aaaa"), 0.0);
    assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
}

#[derive(serde::Deserialize)]
struct Fixtures {
    rules: BTreeMap<String, Fixture>,
}

#[derive(serde::Deserialize)]
struct Fixture {
    #[serde(default)]
    tps: Vec<String>,
    #[serde(default)]
    fps: Vec<String>,
    #[serde(default)]
    tp_paths: Vec<String>,
}

/// gitleaks' own test cases for its rules (`gitleaks/fixtures.json`, made from its rule
/// generators by `scripts/gitleaks-fixtures.py`): each true positive is found by its
/// rule, no false positive is.
#[test]
fn gitleaks_fixtures_pass() {
    let fixtures: Fixtures =
        serde_json::from_str(include_str!("../gitleaks/fixtures.json")).expect("fixtures parse");
    let ids: Vec<String> = rules().rules.iter().map(|r| r.id.to_string()).collect();
    let (mut tps, mut fps) = (0, 0);
    let mut failures = Vec::new();
    for (id, f) in &fixtures.rules {
        // Rules that only apply to some paths, and rules gitleaks does not ship.
        if !f.tp_paths.is_empty() || !ids.contains(id) {
            continue;
        }
        for tp in &f.tps {
            tps += 1;
            if !found(tp).iter().any(|(rule, _)| rule == id) {
                failures.push(format!("{id} missed {tp:?}"));
            }
        }
        for fp in &f.fps {
            fps += 1;
            if found(fp).iter().any(|(rule, _)| rule == id) {
                failures.push(format!("{id} matched its false positive {fp:?}"));
            }
        }
    }
    assert!(tps > 900 && fps > 300, "{tps} tps, {fps} fps");
    assert!(
        failures.is_empty(),
        "{} of {}:\n{}",
        failures.len(),
        tps + fps,
        failures.join("\n")
    );
}

#[test]
fn findings_are_the_secret_not_the_whole_match() {
    let text = "export AWS_ACCESS_KEY_ID=AKIAZ5XQ3KJ7WPLMNB2V\ntoken: ghp_R8kq2Lm4Np7Xs9Tv1Wy3Zb5Cd6Fg8Hj0Kl2M\n";
    let f = found(text);
    assert!(
        f.contains(&("aws-access-token".into(), "AKIAZ5XQ3KJ7WPLMNB2V".into())),
        "{f:?}"
    );
    assert!(
        f.contains(&(
            "github-pat".into(),
            "ghp_R8kq2Lm4Np7Xs9Tv1Wy3Zb5Cd6Fg8Hj0Kl2M".into()
        )),
        "{f:?}"
    );
    // Allowlisted: AWS's documentation key ends in EXAMPLE.
    assert!(found("AKIAIOSFODNN7EXAMPLE").is_empty());
    // Plain prose and code find nothing.
    assert!(found("fn main() { let key = map.get(&id); println!(\"{key:?}\"); }").is_empty());
}
