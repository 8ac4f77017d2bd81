//! The guardrails end to end over bodies and streams, without HTTP.

use super::output::StreamGuard;
use super::policy::{Plan, Policy};
use super::*;
use crate::http::error::Dialect;
use tollgate_proto::{Detector, GuardAction, GuardDirection, GuardScope, PiiEntity};

const AWS: &str = "AKIAZ5XQ3KJ7WPLMNB2V";
const GITHUB: &str = "ghp_R8kq2Lm4Np7Xs9Tv1Wy3Zb5Cd6Fg8Hj0Kl2M";

fn plan(action: GuardAction, direction: GuardDirection) -> Plan {
    let g = Guardrail {
        id: "gr_1".into(),
        name: "secrets".into(),
        scope: GuardScope::Global,
        detectors: vec![
            Detector::Secrets,
            Detector::Pii {
                entities: vec![PiiEntity::Email],
            },
        ],
        action,
        direction,
        created_at_ms: 0,
    };
    Plan {
        policies: vec![Arc::new(Policy::compile(&g).expect("compiles"))],
        fingerprint: 7,
    }
}

fn claude_code_body(file: &str) -> String {
    serde_json::json!({
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [
            {"role": "user", "content": "read .env"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "/w/.env"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": file}
            ]}
        ],
        "tools": [{"name": "Read", "input_schema": {"type": "object"}}]
    })
    .to_string()
}

#[tokio::test]
async fn input_is_redacted_in_place_and_the_same_every_turn() {
    let guards = Guards::new(1000);
    let plan = plan(GuardAction::Redact, GuardDirection::Input);
    let file = format!("1\tAWS_ACCESS_KEY_ID={AWS}\n2\tGITHUB={GITHUB}\n3\tmail ops@example.com\n");
    let body = claude_code_body(&file);
    let checked = guards.check_input(&plan, body.as_bytes()).await;
    let redacted = String::from_utf8(checked.redacted.expect("redacted")).expect("utf-8");
    assert!(!redacted.contains(AWS) && !redacted.contains(GITHUB) && !redacted.contains("ops@"));
    let v: serde_json::Value = serde_json::from_str(&redacted).expect("still JSON");
    assert_eq!(
        v.pointer("/messages/2/content/0/content").and_then(|c| c.as_str()),
        Some("1\tAWS_ACCESS_KEY_ID=[REDACTED:aws-access-token]\n2\tGITHUB=[REDACTED:github-pat]\n3\tmail [REDACTED:email]\n")
    );
    // The rest is byte for byte what came.
    assert_eq!(
        redacted.len() - redacted.find("\"tools\"").expect("tools"),
        body.len() - body.find("\"tools\"").expect("tools")
    );
    let rules: Vec<String> = checked.verdict.hits.iter().map(|h| h.record()).collect();
    assert_eq!(
        rules,
        [
            "gr_1:aws-access-token:redact:input:1",
            "gr_1:github-pat:redact:input:1",
            "gr_1:email:redact:input:1"
        ]
    );
    // The next turn: the same blocks come from the cache, redacted the same way.
    let cached = guards.cache.len();
    let again = guards.check_input(&plan, body.as_bytes()).await;
    assert_eq!(again.redacted.as_deref(), Some(redacted.as_bytes()));
    assert_eq!(guards.cache.len(), cached);
}

#[tokio::test]
async fn a_block_names_the_guardrail_and_rule_and_changes_nothing() {
    let guards = Guards::new(1000);
    let both = plan(GuardAction::Block, GuardDirection::Both);
    let body = claude_code_body(&format!("key {AWS}"));
    let checked = guards.check_input(&both, body.as_bytes()).await;
    assert!(checked.verdict.blocks());
    assert!(checked.redacted.is_none());
    assert_eq!(
        checked.verdict.block_message(),
        "blocked by guardrail gr_1 (rule aws-access-token)"
    );
    // Output-only policies leave the input alone.
    let out_only = plan(GuardAction::Block, GuardDirection::Output);
    assert!(guards
        .check_input(&out_only, body.as_bytes())
        .await
        .verdict
        .is_empty());
}

#[tokio::test]
async fn openai_messages_and_tool_calls_are_checked() {
    let guards = Guards::new(10);
    let plan = plan(GuardAction::Redact, GuardDirection::Input);
    let body = serde_json::json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": format!("my key {GITHUB}")}]},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": format!("{{\"k\":\"{AWS}\"}}")}}]}
        ]
    })
    .to_string();
    let checked = guards.check_input(&plan, body.as_bytes()).await;
    let redacted = String::from_utf8(checked.redacted.expect("redacted")).expect("utf-8");
    assert!(
        redacted.contains("my key [REDACTED:github-pat]"),
        "{redacted}"
    );
    assert!(
        redacted.contains(r#"{\"k\":\"[REDACTED:aws-access-token]\"}"#),
        "{redacted}"
    );
}

fn delta(index: u64, text: &str) -> String {
    let data = serde_json::json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}});
    format!("event: content_block_delta\ndata: {data}\n\n")
}

fn client_text(sse: &[u8]) -> String {
    let mut parser = crate::gateway::sse::SseParser::new();
    parser
        .push(sse)
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
        .filter_map(|v| {
            v.pointer("/delta/text")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn a_secret_split_over_deltas_is_redacted_whole() {
    let plan = plan(GuardAction::Redact, GuardDirection::Output);
    let mut stream = StreamGuard::new(plan, Arc::default(), Dialect::Anthropic);
    let text = format!(
        "Here it is: {GITHUB} and more text after it. {}",
        "x".repeat(400)
    );
    let mut sent = Vec::new();
    sent.extend(stream.push(b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"));
    assert!(!sent.is_empty(), "what is not text passes at once");
    for piece in text.as_bytes().chunks(5) {
        let piece = std::str::from_utf8(piece).expect("ascii");
        let chunk = delta(0, piece);
        // Even the SSE frames arrive split.
        let (a, b) = chunk.as_bytes().split_at(chunk.len() / 2);
        sent.extend(stream.push(a));
        sent.extend(stream.push(b));
    }
    sent.extend(stream.push(
        b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    ));
    sent.extend(stream.finish());
    let got = client_text(&sent);
    assert_eq!(got, text.replace(GITHUB, "[REDACTED:github-pat]"));
    assert!(String::from_utf8_lossy(&sent).ends_with("\"index\":0}\n\n"));
    assert_eq!(stream.verdict.hits.len(), 1);
}

#[test]
fn a_block_on_output_ends_the_stream_with_an_error_event() {
    let plan = plan(GuardAction::Block, GuardDirection::Output);
    let mut stream = StreamGuard::new(plan, Arc::default(), Dialect::Anthropic);
    let mut sent = stream.push(delta(0, &format!("ok {AWS} then")).as_bytes());
    sent.extend(stream.push(delta(0, "more").as_bytes()));
    sent.extend(stream.finish());
    let sent = String::from_utf8(sent).expect("utf-8");
    assert!(!sent.contains(AWS));
    assert!(sent.starts_with("event: error\n"), "{sent}");
    assert!(sent.contains("blocked by guardrail gr_1 (rule aws-access-token)"));
    assert!(!sent.contains("more"));
}

#[tokio::test]
async fn a_moved_cache_marker_keeps_the_verdict_cached_and_redactions_right() {
    let guards = Guards::new(100);
    let plan = plan(GuardAction::Redact, GuardDirection::Input);
    let block = |text: &str, marked: bool| {
        let mut b =
            serde_json::json!({"type": "tool_result", "tool_use_id": "t1", "content": text});
        if marked {
            b["cache_control"] = serde_json::json!({"type": "ephemeral"});
        }
        b
    };
    let body = |blocks: Vec<serde_json::Value>| {
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": blocks}]})
            .to_string()
    };
    let plain = "a long file with nothing in it ".repeat(20);
    let secret = format!("x {GITHUB} y");
    let first = body(vec![block(&plain, true), block(&secret, true)]);
    let second = body(vec![block(&plain, false), block(&secret, false)]);
    // A verdict with findings is kept only for the bytes it was made from; one without
    // is the same whatever the marker.
    let mut sizes = Vec::new();
    for b in [&first, &second, &first, &second] {
        let checked = guards.check_input(&plan, b.as_bytes()).await;
        let redacted = String::from_utf8(checked.redacted.expect("redacted")).expect("utf-8");
        assert_eq!(redacted, b.replace(GITHUB, "[REDACTED:github-pat]"));
        sizes.push(guards.cache.len());
    }
    assert_eq!(sizes, [1, 2, 2, 2]);
}

#[tokio::test]
async fn a_redacted_body_keeps_its_head_without_a_second_parse() {
    use crate::gateway::proxy::head;
    let guards = Guards::new(10);
    let plan = plan(GuardAction::Redact, GuardDirection::Input);
    // The model after the content, so the redaction moves it.
    let body = format!(
        r#"{{"messages":[{{"role":"user","content":"a {GITHUB} b {AWS}"}}],"max_tokens":5,"model":"claude-x"}}"#
    );
    let mut h = head::parse(body.as_bytes(), Dialect::Anthropic, false).expect("parses");
    let checked = guards.check_input(&plan, body.as_bytes()).await;
    let redacted = bytes::Bytes::from(checked.redacted.clone().expect("redacted"));
    h.moved(|at| checked.moved(at));
    let swapped = h.with_model(&redacted, "upstream-model");
    let again = head::parse(&redacted, Dialect::Anthropic, false).expect("parses");
    assert_eq!(
        String::from_utf8(swapped.to_vec()).expect("utf-8"),
        String::from_utf8(again.with_model(&redacted, "upstream-model").to_vec()).expect("utf-8")
    );
    assert!(String::from_utf8_lossy(&swapped).ends_with(r#""model":"upstream-model"}"#));
}

#[tokio::test]
async fn the_cache_keeps_no_heavy_verdict() {
    let guards = Guards::new(100);
    let plan = plan(GuardAction::Redact, GuardDirection::Input);
    // A block with many findings is redacted every time but never kept.
    let many = vec![format!("k {GITHUB} m"); 40].join("\n");
    let body = claude_code_body(&many);
    for _ in 0..2 {
        let checked = guards.check_input(&plan, body.as_bytes()).await;
        let redacted = String::from_utf8(checked.redacted.expect("redacted")).expect("utf-8");
        assert!(!redacted.contains(GITHUB));
        assert_eq!(redacted.matches("[REDACTED:github-pat]").count(), 40);
    }
    let light = guards.cache.len();
    // The same with one finding is kept (one more entry than the blocks without).
    let one = claude_code_body(&format!("k {GITHUB} m"));
    guards.check_input(&plan, one.as_bytes()).await;
    assert_eq!(guards.cache.len(), light + 1);
}
