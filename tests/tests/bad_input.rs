//! Bad input on every surface gets the documented status, a message in the caller's
//! dialect, `x-should-retry: false`, and never reaches the upstream.

use anyhow::Result;
use serde_json::{json, Value};
use tollgate_tests::*;

struct Case {
    path: &'static str,
    body: Vec<u8>,
    status: u16,
    kind: &'static str,
    mentions: &'static str,
}

fn case(
    path: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    kind: &'static str,
    mentions: &'static str,
) -> Case {
    Case {
        path,
        body: body.into(),
        status,
        kind,
        mentions,
    }
}

#[tokio::test]
async fn bad_inference_requests_get_documented_errors_and_no_upstream_call() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (_, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    let huge = {
        let text = "x".repeat(20 * 1024 * 1024);
        serde_json::to_vec(
            &json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}),
        )?
    };
    let cases = vec![
        case(
            "/v1/messages",
            "{not json",
            400,
            "invalid_request_error",
            "not valid JSON",
        ),
        case(
            "/v1/messages",
            "[1,2]",
            400,
            "invalid_request_error",
            "JSON object",
        ),
        case("/v1/messages", "", 400, "invalid_request_error", "empty"),
        case(
            "/v1/messages",
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            400,
            "invalid_request_error",
            "model",
        ),
        case(
            "/v1/messages",
            r#"{"model":5,"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            400,
            "invalid_request_error",
            "model",
        ),
        case(
            "/v1/messages",
            r#"{"model":"m","max_tokens":"lots","messages":[{"role":"user","content":"x"}]}"#,
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        case(
            "/v1/messages",
            r#"{"model":"m","max_tokens":5,"messages":[]}"#,
            400,
            "invalid_request_error",
            "messages",
        ),
        case(
            "/v1/messages",
            r#"{"model":"m","max_tokens":5,"messages":"hi"}"#,
            400,
            "invalid_request_error",
            "messages",
        ),
        case(
            "/v1/messages",
            r#"{"model":"m","max_tokens":5,"stream":"yes","messages":[{"role":"user","content":"x"}]}"#,
            400,
            "invalid_request_error",
            "stream",
        ),
        case(
            "/anthropic/v1/messages",
            huge.clone(),
            413,
            "request_too_large",
            "larger than",
        ),
        case(
            "/v1/chat/completions",
            huge,
            413,
            "request_too_large",
            "larger than",
        ),
        case(
            "/v1/chat/completions",
            "{oops",
            400,
            "invalid_request_error",
            "not valid JSON",
        ),
        case(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            400,
            "invalid_request_error",
            "model",
        ),
        case(
            "/v1/chat/completions",
            r#"{"model":"m","messages":[]}"#,
            400,
            "invalid_request_error",
            "messages",
        ),
        case("/v1/nope", "{}", 404, "not_found_error", "no route"),
        case(
            "/anthropic/v2/messages",
            "{}",
            404,
            "not_found_error",
            "no route",
        ),
    ];
    let client = http();
    for c in cases {
        // A server that refuses an oversized body answers 413 and closes while the client
        // may still be sending; the client can then see a reset instead of the answer.
        // Retry a few times: the answer must come back at least once.
        let mut tries = 0;
        let r = loop {
            let sent = client
                .post(format!("{}{}", gw.url(), c.path))
                .header("x-api-key", &secret)
                .header("content-type", "application/json")
                .body(c.body.clone())
                .send()
                .await;
            match sent {
                Ok(r) => break r,
                Err(e) if c.status == 413 && tries < 5 => {
                    tries += 1;
                    println!("413 case: {e}; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        };
        let status = r.status().as_u16();
        let retry = r
            .headers()
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let label = format!(
            "{} {}",
            c.path,
            String::from_utf8_lossy(&c.body[..c.body.len().min(80)])
        );
        assert_eq!(status, c.status, "{label}: {body}");
        assert_eq!(retry.as_deref(), Some("false"), "{label}");
        let error = if c.path.contains("chat/completions") {
            assert!(
                body.get("type").is_none(),
                "OpenAI shape for {label}: {body}"
            );
            &body["error"]
        } else {
            assert_eq!(body["type"], "error", "Anthropic shape for {label}: {body}");
            &body["error"]
        };
        assert_eq!(error["type"], c.kind, "{label}: {body}");
        assert!(
            error["message"].as_str().unwrap_or("").contains(c.mentions),
            "{label}: {body}"
        );
    }
    assert!(
        fake.requests().is_empty(),
        "bad input reached the upstream: {:?}",
        fake.requests()
    );
    Ok(())
}

#[tokio::test]
async fn missing_and_unknown_keys_are_refused_in_each_dialect() -> Result<()> {
    let gw = Gateway::start("").await?;
    let client = http();
    let body =
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]});
    for (path, key) in [
        ("/v1/messages", None),
        ("/v1/messages", Some("tg-unknown")),
        ("/v1/chat/completions", Some("tg-unknown")),
    ] {
        let mut req = client.post(format!("{}{path}", gw.url())).json(&body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await?;
        assert_eq!(r.status(), 401, "{path} {key:?}");
        assert_eq!(
            r.headers()
                .get("x-should-retry")
                .and_then(|v| v.to_str().ok()),
            Some("false")
        );
        let v: Value = r.json().await?;
        assert_eq!(v["error"]["type"], "authentication_error", "{v}");
    }
    // A caller without a valid key learns nothing about its body: count_tokens
    // authenticates before it parses.
    let r = client
        .post(format!("{}/v1/messages/count_tokens", gw.url()))
        .bearer_auth("tg-unknown")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status(), 401);
    // A known route with the wrong method is a 405 in the route's dialect.
    for (path, openai) in [("/v1/messages", false), ("/v1/chat/completions", true)] {
        let r = client.get(format!("{}{path}", gw.url())).send().await?;
        assert_eq!(r.status(), 405, "GET {path}");
        let v: Value = r.json().await?;
        assert_eq!(v["type"].is_null(), openai, "GET {path}: {v}");
        assert_eq!(
            v["error"]["type"], "invalid_request_error",
            "GET {path}: {v}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn admin_api_requires_the_token_and_names_bad_fields() -> Result<()> {
    let gw = Gateway::start("").await?;
    let client = http();
    for token in [None, Some("wrong")] {
        let mut req = client.get(format!("{}/api/v1/virtual-keys", gw.url()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await?.status(), 401, "token {token:?}");
    }
    let cases = [
        (
            "/api/v1/customers",
            json!({"name": "a", "colour": "red"}),
            "colour",
        ),
        ("/api/v1/customers", json!({}), "name"),
        ("/api/v1/customers", json!({"name": 5}), "name"),
        (
            "/api/v1/virtual-keys",
            json!({"name": "k", "provider_configs": [{"provider": "nope"}]}),
            "provider_configs[0].provider",
        ),
        (
            "/api/v1/virtual-keys",
            json!({"name": "k", "provider_configs": [{"provider": "mock", "allowed_models": ["regex:("]}]}),
            "provider_configs[0].allowed_models[0]",
        ),
        (
            "/api/v1/virtual-keys",
            json!({"name": "k", "provider_configs": []}),
            "provider_configs",
        ),
        (
            "/api/v1/budgets",
            json!({"owner": {"kind": "virtual_key", "id": "vk_x"}, "max_limit_usd": "1.2.3", "reset_duration": "1d"}),
            "max_limit_usd",
        ),
        (
            "/api/v1/budgets",
            json!({"owner": {"kind": "virtual_key", "id": "vk_x"}, "max_limit_usd": "1", "reset_duration": "2d"}),
            "reset_duration",
        ),
        (
            "/api/v1/budgets",
            json!({"owner": {"kind": "planet", "id": "x"}, "max_limit_usd": "1", "reset_duration": "1d"}),
            "owner.kind",
        ),
        (
            "/api/v1/budgets",
            json!({"owner": {"kind": "virtual_key", "id": "x"}, "max_limit_usd": 1, "reset_duration": "1d"}),
            "max_limit_usd",
        ),
        (
            "/api/v1/rate-limits",
            json!({"owner": {"kind": "virtual_key", "id": "x"}, "request_max": 5}),
            "request_window",
        ),
        (
            "/api/v1/prices",
            json!({"model": "m", "input_per_mtok_usd": "-1", "output_per_mtok_usd": "1"}),
            "input_per_mtok_usd",
        ),
    ];
    for (path, body, field) in cases {
        let (status, v) = gw.admin("POST", path, Some(body.clone())).await?;
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert_eq!(v["error"]["field"], field, "{path} {body}: {v}");
    }
    let (status, v) = gw
        .admin("POST", "/api/v1/budgets", Some(json!({"owner": {"kind": "virtual_key", "id": "vk_missing"}, "max_limit_usd": "1", "reset_duration": "1d"})))
        .await?;
    assert_eq!(status, 404, "{v}");
    let (status, _) = gw
        .admin("GET", "/api/v1/virtual-keys/vk_missing", None)
        .await?;
    assert_eq!(status, 404);
    Ok(())
}

/// `regex:` allowlists are compiled when the admin writes them, within limits: the
/// hostile 64 × `\w{200}zN` (5 s and 650 MB per node when compiled unbounded) is refused
/// at once, naming the entry; more than 16 patterns on a key too; an anchored pattern
/// admits exactly the models it names.
#[tokio::test]
async fn allowlist_patterns_are_bounded_and_compiled_at_write_time() -> Result<()> {
    let gw = Gateway::start("").await?;
    let hostile: Vec<String> = (0..64).map(|n| format!("regex:\\w{{200}}z{n}")).collect();
    let started = std::time::Instant::now();
    let (status, v) = gw
        .admin(
            "POST",
            "/api/v1/virtual-keys",
            Some(json!({"name": "k", "provider_configs": [{"provider": "mock", "allowed_models": hostile}]})),
        )
        .await?;
    let took = started.elapsed();
    println!("hostile patterns refused in {took:?}: {v}");
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "provider_configs[0].allowed_models[0]");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("compiles to more than"),
        "{v}"
    );
    assert!(took < std::time::Duration::from_millis(100), "{took:?}");
    let many: Vec<String> = (0..17).map(|n| format!("regex:^m{n}$")).collect();
    let (status, v) = gw
        .admin(
            "POST",
            "/api/v1/virtual-keys",
            Some(json!({"name": "k", "provider_configs": [{"provider": "mock", "allowed_models": many}]})),
        )
        .await?;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        v["error"]["field"],
        "provider_configs[0].allowed_models[16]"
    );
    // Anchored patterns admit exactly what they say.
    let (_, secret) = gw
        .key(json!([{"provider": "mock", "allowed_models": ["regex:^claude-haiku-[0-9-]+$"]}]))
        .await?;
    for (model, status) in [("claude-haiku-4-5", 200), ("claude-haiku-4-5-evil", 403)] {
        let body = json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(
            messages(&gw.url(), &secret, &body).await?.0,
            status,
            "{model}"
        );
    }
    Ok(())
}

/// What a client sends cannot forge a log line: a model name with a newline and a fake
/// warning after it is refused and logged inside its own line, escaped.
#[tokio::test]
async fn control_characters_from_clients_cannot_forge_log_lines() -> Result<()> {
    let gw = Gateway::start("").await?;
    let (_, secret) = gw
        .key(json!([{"provider": "mock", "allowed_models": ["claude-haiku-4-5"]}]))
        .await?;
    let forged = "WARN tollgate_node::auth: admin token accepted from 6.6.6.6";
    for sep in ["\n", "\r\n", "\u{2028}", "\u{1b}[2K\r"] {
        let body = json!({"model": format!("x{sep}{forged}"), "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(messages(&gw.url(), &secret, &body).await?.0, 403, "{sep:?}");
    }
    let path = gw.data_dir.with_extension("log");
    let logged = eventually(10, || async {
        std::fs::read_to_string(&path).is_ok_and(|l| l.matches("admin token accepted").count() >= 4)
    })
    .await;
    let log = std::fs::read_to_string(&path)?;
    assert!(logged, "the refusals were logged: {log}");
    for line in log.lines() {
        assert!(!line.starts_with(forged), "a forged line: {line:?}");
        assert!(
            !line.contains('\r') && !line.contains('\u{2028}') && !line.contains('\u{1b}'),
            "{line:?}"
        );
    }
    assert!(log.contains(&format!("x\\n{forged}")), "{log}");
    Ok(())
}

/// A provider that echoes the credentials it was sent, in a 400 and in a 500: the client
/// gets the provider's wording with the key scrubbed out, and the log never holds it.
#[tokio::test]
async fn a_provider_echoing_its_credentials_never_leaks_them() -> Result<()> {
    for status in ["400", "500"] {
        let body = format!(
            r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"header x-api-key: {UPSTREAM_KEY} is not valid for this model (Bearer {UPSTREAM_KEY})"}}}}"#
        );
        let fake = FakeUpstream::start(&["--fail-status", status, "--fail-body", &body])?;
        let gw = Gateway::start(&fake_config(&fake)).await?;
        let (_, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
        let (got, _, answer) = messages(
            &gw.url(),
            &secret,
            &json!({"model": "claude-haiku-4-5",
            "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await?;
        let text = answer.to_string();
        println!("provider {status} -> {got}: {text}");
        assert!(got >= 400, "{got} {text}");
        assert!(!text.contains(UPSTREAM_KEY), "{text}");
        assert!(
            text.contains("header x-api-key: [REDACTED] is not valid"),
            "{text}"
        );
        let log = std::fs::read_to_string(gw.data_dir.with_extension("log"))?;
        assert!(
            log.contains("[REDACTED]"),
            "the upstream error was logged: {log}"
        );
        assert!(!log.contains(UPSTREAM_KEY), "the key is in the log");
    }
    Ok(())
}

/// A body nested 100,000 deep is refused (400) before any provider sees it, on the path
/// that relays bodies untouched as on the translated one.
#[tokio::test]
async fn a_body_nested_too_deep_never_reaches_a_provider() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    for provider in ["fake-anthropic", "fake-openai"] {
        let (_, secret) = gw.key(json!([{"provider": provider}])).await?;
        let body = format!(
            r#"{{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{{"role":"user","content":{deep}}}]}}"#
        );
        let (status, _, v) = messages_raw(&http(), &gw.url(), &secret, body.into_bytes()).await?;
        assert_eq!(status, 400, "{provider}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("deeper than 127"),
            "{v}"
        );
    }
    assert!(fake.requests().is_empty(), "a provider saw it");
    Ok(())
}
