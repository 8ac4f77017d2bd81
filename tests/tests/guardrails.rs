//! Guardrails (issue 20) through real processes: the real Claude Code CLI reading a file
//! of secrets (redacted before the provider sees them, then blocked), a provider
//! streaming a secret split over deltas, a Presidio-shaped webhook, and bad policies.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tollgate_tests::*;

const AWS_ID: &str = "AKIAZ5XQ3KJ7WPLMNB2V";
const AWS_SECRET: &str = "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";
const GITHUB: &str = "ghp_R8kq2Lm4Np7Xs9Tv1Wy3Zb5Cd6Fg8Hj0Kl2M";
const KEY_BODY: &str = "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi6Z3MKDlvRDpmXBCdbMA7fsCw6Fq5kBRg7Hz4xWpQ1\nvN8bUc2yLr5Ek0Jt6Wm9Gs3Xq7Zf4Ha1Pd8Kc2Vn5Bw0Ly6Tu3Ri9Oe4Sg7Mj1Qk8Dx5Fz2Ap0Yc6Nb3";

fn secrets_file() -> String {
    format!(
        "AWS_ACCESS_KEY_ID={AWS_ID}\naws_secret_access_key = \"{AWS_SECRET}\"\nGITHUB_TOKEN={GITHUB}\n-----BEGIN RSA PRIVATE KEY-----\n{KEY_BODY}\n-----END RSA PRIVATE KEY-----\n"
    )
}

async fn guardrail(gw: &Gateway, body: Value) -> Result<String> {
    let created = gw.create("/api/v1/guardrails", body).await?;
    Ok(created["id"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn claude_code_secrets_are_redacted_then_blocked() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (_, secret) = gw
        .key(json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]))
        .await?;
    let dir = temp_dir("guard-cc");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("credentials.env");
    std::fs::write(&file, secrets_file())?;
    let id = guardrail(
        &gw,
        json!({"name": "no secrets upstream", "scope": {"kind": "global"},
               "detectors": [{"kind": "secrets"}], "action": "redact", "direction": "input"}),
    )
    .await?;

    // Claude Code reads the file with its Bash tool; the result goes back upstream.
    let prompt = format!("RUN_BASH:cat {}", file.display());
    claude_code(
        &gw.url(),
        &secret,
        &[
            "--prompt",
            &prompt,
            "--expect",
            "TOOL_RESULT:AWS_ACCESS_KEY_ID=[REDACTED:aws-access-token]",
            "--arg",
            "--allowedTools",
            "--arg",
            "Bash",
        ],
    )?;
    eventually(10, || async {
        fake.requests()
            .iter()
            .any(|r| r["body"].to_string().contains("tool_result"))
    })
    .await;
    let seen = fake
        .requests()
        .iter()
        .map(|r| r["body"].to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for leaked in [AWS_ID, AWS_SECRET, GITHUB, &KEY_BODY[..40]] {
        assert!(!seen.contains(leaked), "{leaked} reached the provider");
    }
    for marker in [
        "[REDACTED:aws-access-token]",
        "[REDACTED:generic-api-key]",
        "[REDACTED:github-pat]",
        "[REDACTED:private-key]",
    ] {
        assert!(seen.contains(marker), "no {marker} upstream");
    }
    // The request record says what was found, never the text.
    let records = log_records(&gw.url(), "").await?;
    let verdicts = records
        .iter()
        .flat_map(|r| r["guardrails"].as_array().cloned().unwrap_or_default())
        .collect::<Vec<_>>();
    assert!(
        verdicts.iter().any(|v| v["guardrail"] == id.as_str()
            && v["rule"] == "github-pat"
            && v["action"] == "redact"),
        "{verdicts:?}"
    );
    assert!(!serde_json::to_string(&records)?.contains(GITHUB));
    assert!(
        gw.metric(&format!(
            "tollgate_guardrail_matches_total{{guardrail=\"{id}\",rule=\"github-pat\",action=\"redact\",direction=\"input\"}}"
        ))
        .await?
            >= 1
    );

    // Block: a prompt holding a key never reaches the provider, and Claude Code stops
    // at once with the 400 naming the guardrail and the rule.
    gw.admin(
        "PATCH",
        &format!("/api/v1/guardrails/{id}"),
        Some(json!({"action": "block"})),
    )
    .await?;
    let before = fake.requests().len();
    let started = std::time::Instant::now();
    let refusal = match claude_code(
        &gw.url(),
        &secret,
        &[
            "--prompt",
            &format!("deploy with {GITHUB}"),
            "--expect",
            "never answered",
            "--max-retries",
            "10",
        ],
    ) {
        Ok(()) => bail!("a prompt with a GitHub token was answered"),
        Err(e) => e.to_string(),
    };
    assert!(refusal.contains("400"), "{refusal}");
    assert!(refusal.contains("github-pat"), "{refusal}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // Counting tokens sends the prompt upstream too: blocked the same way.
    let r = http()
        .post(format!("{}/v1/messages/count_tokens", gw.url()))
        .header("x-api-key", &secret)
        .json(&json!({"model": "claude-sonnet-4-6",
                      "messages": [{"role": "user", "content": format!("count {GITHUB}")}]}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await?.contains("github-pat"));
    let after = fake.requests();
    assert!(
        after[before..].iter().all(|r| !r["path"]
            .as_str()
            .unwrap_or_default()
            .starts_with("/v1/messages")),
        "the provider got {:?}",
        &after[before..]
    );
    Ok(())
}

/// SSE text deltas of a stream, joined (Anthropic `delta.text`, OpenAI
/// `choices[0].delta.content`), and whether an `error` event came.
async fn stream_text(
    gw: &Gateway,
    path: &str,
    secret: &str,
    body: Value,
) -> Result<(String, String)> {
    let r = http()
        .post(format!("{}{path}", gw.url()))
        .header("authorization", format!("Bearer {secret}"))
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await?;
    let raw = r.text().await?;
    let mut text = String::new();
    for line in raw.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for p in ["/delta/text", "/choices/0/delta/content"] {
            if let Some(t) = v.pointer(p).and_then(Value::as_str) {
                text.push_str(t);
            }
        }
    }
    Ok((text, raw))
}

/// `stream_text` of an Anthropic stream asking `ask`.
async fn anthropic_stream(gw: &Gateway, secret: &str, ask: &str) -> Result<(String, String)> {
    let body = json!({"model": "claude-sonnet-4-6", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": ask}]});
    stream_text(gw, "/v1/messages", secret, body).await
}

#[tokio::test]
async fn a_secret_streamed_over_several_deltas_is_redacted_whole() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (key_id, secret) = gw
        .key(json!([
            {"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]},
            {"provider": "fake-openai", "allowed_models": ["regex:^gpt-"]}
        ]))
        .await?;
    let id = guardrail(
        &gw,
        json!({"name": "answers", "scope": {"kind": "global"},
               "detectors": [{"kind": "secrets"}], "action": "redact", "direction": "output"}),
    )
    .await?;
    // The fake answers `ECHO:<word>` with the word, in three deltas.
    let ask = format!("ECHO:{GITHUB}");
    let (text, raw) = anthropic_stream(&gw, &secret, &ask).await?;
    assert_eq!(text, "[REDACTED:github-pat]", "{raw}");
    assert!(
        !raw.contains(&GITHUB[..12]) && raw.contains("message_stop"),
        "{raw}"
    );
    let (text, raw) = stream_text(
        &gw,
        "/v1/chat/completions",
        &secret,
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": ask}]}),
    )
    .await?;
    assert_eq!(text, "[REDACTED:github-pat]", "{raw}");
    assert!(raw.contains("[DONE]"));
    // Not streamed: the whole answer, redacted before it is relayed.
    let (status, _, answer) = messages(
        &gw.url(),
        &secret,
        &json!({"model": "claude-sonnet-4-6", "max_tokens": 50,
                "messages": [{"role": "user", "content": ask}]}),
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(answer["content"][0]["text"], "[REDACTED:github-pat]");
    // Block on output: the stream ends with an error event naming the rule; usage is
    // still charged.
    gw.admin(
        "PATCH",
        &format!("/api/v1/guardrails/{id}"),
        Some(json!({"action": "block"})),
    )
    .await?;
    let (text, raw) = anthropic_stream(&gw, &secret, &ask).await?;
    assert_eq!(text, "");
    assert!(
        raw.contains("event: error") && raw.contains("github-pat"),
        "{raw}"
    );
    let charged = || async {
        gw.usage(&key_id)
            .await
            .ok()
            .and_then(|u| u["requests"].as_u64())
            == Some(4)
    };
    assert!(
        eventually(10, charged).await,
        "the blocked stream was not charged"
    );
    assert!(!raw.contains(&GITHUB[..12]));
    Ok(())
}

#[tokio::test]
async fn a_webhook_checker_redacts_what_it_finds_and_fails_as_told() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let sink = WebhookSink::start(0)?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (_, secret) = gw
        .key(json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]))
        .await?;
    let id = guardrail(
        &gw,
        json!({"name": "presidio", "scope": {"kind": "global"}, "action": "redact",
               "detectors": [{"kind": "webhook", "url": sink.url("/analyze"), "timeout_ms": 1000, "on_error": "block"}]}),
    )
    .await?;
    let ask = |text: &str| {
        json!({"model": "claude-sonnet-4-6", "max_tokens": 20,
               "messages": [{"role": "user", "content": text}]})
    };
    let (status, _, _) = messages(
        &gw.url(),
        &secret,
        &ask("Ünïcode first, then John Smith called"),
    )
    .await?;
    assert_eq!(status, 200);
    // The fake logs a request once it has answered it.
    let sent = || {
        fake.requests()
            .iter()
            .filter_map(|r| {
                r["body"]["messages"][0]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .find(|c| c.starts_with("Ünïcode"))
    };
    eventually(10, || async { sent().is_some() }).await;
    assert_eq!(
        sent().as_deref(),
        Some("Ünïcode first, then [REDACTED:PERSON] called")
    );
    assert!(sink.posts().iter().any(|p| p["path"] == "/analyze"));
    // A checker past its deadline blocks (on_error = block).
    gw.admin(
        "PATCH",
        &format!("/api/v1/guardrails/{id}"),
        Some(json!({"detectors": [{"kind": "webhook", "url": sink.url("/slow"), "timeout_ms": 200, "on_error": "block"}]})),
    )
    .await?;
    let (status, _, body) = messages(&gw.url(), &secret, &ask("something new")).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("webhook_error"), "{body}");
    Ok(())
}

#[tokio::test]
async fn bad_guardrails_are_refused_naming_the_field() -> Result<()> {
    let gw = Gateway::start("").await?;
    let base = json!({"name": "g", "scope": {"kind": "global"}, "detectors": [{"kind": "secrets"}], "action": "redact"});
    let with = |field: &str, value: Value| {
        let mut b = base.clone();
        b[field] = value;
        b
    };
    for (body, field) in [
        (
            with("detectors", json!([{"kind": "antivirus"}])),
            "detectors[0].kind",
        ),
        (
            with(
                "detectors",
                json!([{"kind": "regex", "name": "x", "pattern": "(unclosed"}]),
            ),
            "detectors[0].pattern",
        ),
        (
            with(
                "detectors",
                json!([{"kind": "regex", "name": "x", "pattern": "\\w{1000}\\w{1000}"}]),
            ),
            "detectors[0].pattern",
        ),
        (
            with(
                "detectors",
                json!([{"kind": "regex", "name": "", "pattern": "x"}]),
            ),
            "detectors[0].name",
        ),
        (with("name", json!("  ")), "name"),
        (with("scope", json!({"kind": "galaxy"})), "scope.kind"),
        (
            with("scope", json!({"kind": "team", "id": "team_nope"})),
            "scope.id",
        ),
        (with("scope", json!({"kind": "team"})), "scope.id"),
        (with("action", json!("shred")), "action"),
        (with("direction", json!("sideways")), "direction"),
        (with("detectors", json!([])), "detectors"),
        (
            with("detectors", json!([{"kind": "pii", "entities": ["dna"]}])),
            "detectors[0].entities[0]",
        ),
        (with("colour", json!("red")), "colour"),
    ] {
        let (status, answer) = gw
            .admin("POST", "/api/v1/guardrails", Some(body.clone()))
            .await?;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} -> {answer}");
    }
    let (status, list) = gw.admin("GET", "/api/v1/guardrails", None).await?;
    assert_eq!(
        (status, list["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    Ok(())
}
