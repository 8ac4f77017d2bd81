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

#[test]
#[ignore = "a measurement helper: which rules a text makes candidates"]
fn print_candidates() {
    let text = std::fs::read(std::env::var("GUARD_TEXT").unwrap_or_default()).unwrap_or_default();
    let r = rules();
    let t = std::time::Instant::now();
    let mut found = Vec::new();
    for _ in 0..20 {
        found.clear();
        r.keywords.find_all(&text, &mut found);
    }
    println!(
        "keywords: {} hits, {:?} per pass",
        found.len(),
        t.elapsed() / 20
    );
    let mut hits = std::collections::BTreeMap::new();
    for hit in &found {
        for &rule in &r.keyword_rules[hit.keyword] {
            *hits.entry(r.rules[rule].id.to_string()).or_insert(0) += 1;
        }
    }
    for (rule, n) in &hits {
        let t = std::time::Instant::now();
        let mut out = Vec::new();
        for _ in 0..20 {
            out.clear();
            r.scan_rule(
                &r.rules[r.rules.iter().position(|x| &*x.id == rule).unwrap_or(0)],
                &text,
                (0, text.len()),
                &mut out,
            );
        }
        println!(
            "{rule}: {n} keyword hits, {:?} per scan, {} findings",
            t.elapsed() / 20,
            out.len()
        );
    }
}

/// What a gated rule finds in `text` as `scan` runs it, and over the whole text.
fn gated_and_whole(r: &Secrets, rule: &Rule, text: &str) -> (Vec<Finding>, Vec<Finding>) {
    let mut gated = Vec::new();
    r.scan(text.as_bytes(), &mut gated);
    gated.retain(|x| x.rule == rule.id);
    let mut whole = Vec::new();
    r.scan_rule(rule, text.as_bytes(), (0, text.len()), &mut whole);
    (gated, whole)
}

fn gated_rules(r: &Secrets) -> Vec<&Rule> {
    let gated: Vec<&Rule> = r.rules.iter().filter(|x| x.gate.is_some()).collect();
    assert_eq!(
        gated.len(),
        gate::GATED.len(),
        "every gated rule is in the set"
    );
    gated
}

/// A gated rule finds exactly what it finds over the whole text: each of its gitleaks
/// fixtures, inside code full of its keywords, near and far.
#[test]
fn gated_rules_find_what_the_whole_text_holds() {
    let fixtures: Fixtures =
        serde_json::from_str(include_str!("../gitleaks/fixtures.json")).expect("fixtures parse");
    let r = rules();
    let filler = "let key = map.get(&token)?; // they ask this.api auth access path\n".repeat(12);
    let long_line = format!("x = \"{}\" key: ", "a".repeat(300));
    let mut compared = 0;
    for rule in gated_rules(r) {
        let Some(f) = fixtures.rules.get(&*rule.id) else {
            continue;
        };
        for sample in f.tps.iter().chain(&f.fps) {
            for text in [
                format!("{filler}{sample}\n{filler}"),
                format!("{sample}{filler}"),
                format!("{filler}{long_line}{sample}"),
                format!("{}{sample}", "key ".repeat(40)),
            ] {
                let (gated, whole) = gated_and_whole(r, rule, &text);
                assert_eq!(gated, whole, "{}: {text:?}", rule.id);
                compared += 1;
            }
        }
    }
    assert!(compared > 100, "{compared}");
}

/// The same over random text made of the rules' own parts (keywords, names, quotes,
/// operators, values and tokens of every length, line breaks), where a window's edges
/// and the test that passes over a keyword are most likely to be wrong.
#[test]
fn gated_rules_agree_on_random_text() {
    let r = rules();
    let gated = gated_rules(r);
    let parts: &[&str] = &[
        "key",
        "token",
        "api",
        "Api",
        "API",
        "secret",
        "passwd",
        "password",
        "access",
        "auth",
        "credential",
        "creds",
        "_",
        ".",
        "-",
        " ",
        "\t",
        "\n",
        "\"",
        "'",
        "`",
        "=",
        ":",
        ":=",
        ":::=",
        "=>",
        "||",
        "?=",
        ",",
        ">",
        "|",
        "?",
        ";",
        "(",
        "\\n",
        "+",
        "/",
        "map.get",
        "let ",
        "aZ3kQ9xW2mP7",
        "Zq8Xv1Lp0Rt6Ys4Wn2Kb",
        "c0ffee",
        "id",
        "name",
        "  \"'",
        "``",
        "==",
        " \t ",
        "ey",
        "eyJ",
        "they",
        "s.",
        "hvs.",
        "this.",
        "SK",
        "task",
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut with_findings, mut samples) = (BTreeMap::new(), 0);
    let pick = |n: u64, from: &[&'static str]| from[(n % from.len() as u64) as usize];
    while samples < 20_000 {
        let mut text = String::new();
        for _ in 0..1 + next() % 4 {
            if next() % 3 == 0 {
                // A token after a keyword: runs of token bytes near every length the
                // rules need, dots between them.
                text.push_str(pick(next(), &[" ", "", "=", "x"]));
                text.push_str(pick(next(), &["ey", "eyJ", "EY", "s.", "hvs.", "SK", "sk"]));
                for _ in 0..1 + next() % 3 {
                    let run = pick(next(), &[
                        "0123456789abcdefABCDEFghijkLMNOPqrstu_-vwxyz0123456789abcdef0123456789abcdef",
                        "0123456789abcdefABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef012345",
                    ]);
                    let from = (next() % 20) as usize;
                    // Near every length a rule needs, and any other.
                    let len = [17, 18, 23, 24, 25, 32, 33][(next() % 7) as usize];
                    let len = if next() % 3 == 0 {
                        10 + (next() % 40) as usize
                    } else {
                        len
                    };
                    text.push_str(&run[from..from + len]);
                    text.push_str(pick(next(), &[".", ".ey", "", "=", ".", " ", "\""]));
                }
                text.push_str(pick(next(), &["\"", ";", "\n", " ", "(", ""]));
                continue;
            }
            if next() % 2 == 0 {
                for _ in 0..next() % 30 {
                    text.push_str(pick(next(), parts));
                }
                continue;
            }
            // An assignment, near what the rule takes: keyword, name bytes, operator,
            // quotes, a value of 6 to 17 bytes, an ending.
            text.push_str(pick(next(), &parts[..12]));
            for _ in 0..next() % 4 {
                text.push_str(pick(
                    next(),
                    &["_id", ".x", "-", " ", "\t", "\"", "'", "\n", "name"],
                ));
            }
            text.push_str(pick(
                next(),
                &["=", ":", ":=", ":::=", "=>", "||", "?=", ",", ">"],
            ));
            for _ in 0..next() % 4 {
                text.push_str(pick(next(), &["`", "'", "\"", " ", "=", "\t", "  "]));
            }
            let value = "aZ3kQ9xW2mP7v5Lr0Ty8";
            text.push_str(&value[..6 + (next() % 12) as usize]);
            text.push_str(pick(next(), &["\"", ";", "\n", " ", "(", "", "\\n"]));
        }
        for rule in &gated {
            let (gated, whole) = gated_and_whole(r, rule, &text);
            assert_eq!(gated, whole, "{}: {text:?}", rule.id);
            *with_findings.entry(rule.id.to_string()).or_insert(0) +=
                usize::from(!whole.is_empty());
        }
        samples += 1;
    }
    // Every rule found something often enough for the comparison to mean something.
    for rule in &gated {
        let n = with_findings.get(&*rule.id).copied().unwrap_or(0);
        assert!(n > 20, "{}: {n} of {samples} texts had findings", rule.id);
    }
}
