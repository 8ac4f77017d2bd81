//! Unit tests of the request head parser and the depth check.

use super::*;

#[test]
fn nesting_is_counted_outside_strings_only() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(too_deep(nested(MAX_DEPTH).as_bytes()), None);
    assert_eq!(too_deep(nested(MAX_DEPTH + 1).as_bytes()), Some(MAX_DEPTH));
    assert_eq!(too_deep(nested(100_000).as_bytes()), Some(MAX_DEPTH));
    // Brackets in strings, escaped quotes and backslashes do not count.
    let text = format!(
        r#"{{"a":"{}\"{}\\","b":[1]}}"#,
        "[{".repeat(500),
        "{".repeat(300)
    );
    assert_eq!(too_deep(text.as_bytes()), None);
    // A string left open, or an escape at the very end: left to the parser.
    assert_eq!(too_deep(br#"{"a":"[[[[\"#), None);
    assert_eq!(too_deep(br#"{"a":"x"#), None);
    let deep = format!(
        r#"{{"messages":[{{"role":"user","content":{}}}]}}"#,
        nested(200)
    );
    assert!(matches!(
        parse(deep.as_bytes(), Dialect::Anthropic, false),
        Err(ApiError::BadRequest(m)) if m.contains("deeper than 127")
    ));
}

/// Expected (model, stream, max_tokens), or a fragment of the error.
type Expect = Result<(&'static str, bool, Option<u64>), &'static str>;

fn check(body: &str, dialect: Dialect, expect: Expect) {
    match (parse(body.as_bytes(), dialect, false), expect) {
        (Ok(h), Ok((model, stream, max))) => assert_eq!(
            (h.model.as_str(), h.stream, h.max_tokens),
            (model, stream, max),
            "{body}"
        ),
        (Err(e), Err(fragment)) => assert!(e.to_string().contains(fragment), "{body}: {e}"),
        (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn head_validation_table() {
    use Dialect::*;
    let cases: &[(&str, Dialect, Expect)] = &[
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            Anthropic,
            Ok(("m", false, Some(5))),
        ),
        (
            r#"{"messages":[{}],"stream":true,"max_tokens":1,"model":"a\/b"}"#,
            Anthropic,
            Ok(("a/b", true, Some(1))),
        ),
        (
            r#"{"model":"m","messages":[{}]}"#,
            OpenAi,
            Ok(("m", false, None)),
        ),
        (
            r#"{"model":"m","messages":[{}],"max_completion_tokens":9,"max_tokens":3}"#,
            OpenAi,
            Ok(("m", false, Some(9))),
        ),
        (
            r#"{"model":"m","messages":[{}]}"#,
            Anthropic,
            Err("max_tokens: field required"),
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[]}"#,
            Anthropic,
            Err("at least one message"),
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[ ]}"#,
            Anthropic,
            Err("at least one message"),
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":{}}"#,
            Anthropic,
            Err("messages: must be an array"),
        ),
        (
            r#"{"max_tokens":5,"messages":[{}]}"#,
            Anthropic,
            Err("model: field required"),
        ),
        (
            r#"{"model":7,"max_tokens":5,"messages":[{}]}"#,
            Anthropic,
            Err("model: must be a string"),
        ),
        (
            r#"{"model":"","max_tokens":5,"messages":[{}]}"#,
            Anthropic,
            Err("model: must not be empty"),
        ),
        (
            r#"{"model":"m","max_tokens":"5","messages":[{}]}"#,
            Anthropic,
            Err("max_tokens: must be a positive integer"),
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{}],"stream":"yes"}"#,
            Anthropic,
            Err("stream: must be a boolean"),
        ),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{}]"#,
            Anthropic,
            Err("not valid JSON"),
        ),
        (r#"[1,2]"#, Anthropic, Err("must be a JSON object")),
        ("", Anthropic, Err("empty")),
    ];
    for (body, dialect, expect) in cases {
        check(body, *dialect, *expect);
    }
}

#[test]
fn model_swap_keeps_every_other_byte() {
    let body = Bytes::from_static(br#"{ "system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral"}}], "model" : "sonnet","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#);
    let head = parse(&body, Dialect::Anthropic, false).expect("head");
    let swapped = head.with_model(&body, "claude-\"x\"");
    let text = std::str::from_utf8(&swapped).expect("utf8");
    assert_eq!(
        text,
        body_str(&body).replace(r#""sonnet""#, r#""claude-\"x\"""#)
    );
    assert_eq!(
        head.with_model(&body, "sonnet").as_ptr(),
        body.as_ptr(),
        "same model: no copy"
    );
}

fn inbound(body: &str, dialect: Dialect) -> Inbound {
    let body = Bytes::from(body.to_owned());
    Inbound {
        dialect,
        head: parse(&body, dialect, false).expect("head"),
        body,
        headers: HeaderMap::new(),
        request_id: "req".into(),
        seq: 0,
        guard: None,
    }
}

#[test]
fn a_capped_request_keeps_to_the_cap_and_the_api_rules() {
    let thinking = inbound(
        r#"{"model":"m","max_tokens":128000,"thinking":{"type":"enabled","budget_tokens":31999},"messages":[{}]}"#,
        Dialect::Anthropic,
    );
    assert_eq!(thinking.head.min_output(), MIN_THINKING_BUDGET + 1);
    let capped = thinking.capped(20_000).expect("capped");
    let v: serde_json::Value = serde_json::from_slice(&capped.body).expect("json");
    assert_eq!(v["max_tokens"], 20_000);
    assert_eq!(v["thinking"]["budget_tokens"], 19_999, "below max_tokens");
    assert_eq!(capped.head.max_tokens, Some(20_000));
    // A thinking budget already below the cap stays.
    let kept = thinking.capped(40_000).expect("capped");
    let v: serde_json::Value = serde_json::from_slice(&kept.body).expect("json");
    assert_eq!(v["thinking"]["budget_tokens"], 31_999);

    let openai = inbound(
        r#"{"model":"m","max_completion_tokens":9000,"messages":[{}]}"#,
        Dialect::OpenAi,
    );
    assert_eq!(openai.head.min_output(), 1);
    let v: serde_json::Value =
        serde_json::from_slice(&openai.capped(100).expect("capped").body).expect("json");
    assert_eq!(v["max_completion_tokens"], 100);
    assert!(v.get("max_tokens").is_none());
    let bare = inbound(r#"{"model":"m","messages":[{}]}"#, Dialect::OpenAi);
    assert_eq!(bare.capped(100).expect("capped").head.max_tokens, Some(100));
}

fn body_str(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).expect("utf8")
}
