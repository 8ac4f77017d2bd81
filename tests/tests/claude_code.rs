//! The real Claude Code CLI through the gateway to the fake Anthropic upstream:
//! bearer and x-api-key auth, streaming, and one tool-use round trip.

use anyhow::{bail, Result};
use serde_json::json;
use tollgate_tests::*;

#[tokio::test]
async fn claude_code_works_through_the_gateway() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (key_id, secret) = gw
        .key(json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]))
        .await?;

    // Bearer (ANTHROPIC_AUTH_TOKEN) at the server root; streaming is Claude Code's default.
    claude_code(&gw.url(), &secret, &["--auth-mode", "bearer"])?;
    // x-api-key (ANTHROPIC_API_KEY) under the /anthropic prefix.
    claude_code(
        &format!("{}/anthropic", gw.url()),
        &secret,
        &["--auth-mode", "api-key"],
    )?;
    // One tool-use round trip: the fake asks for Bash, Claude Code runs it, the result
    // goes back through the gateway.
    claude_code(
        &gw.url(),
        &secret,
        &[
            "--prompt",
            "RUN_BASH:echo tollgate-tool-ok",
            "--expect",
            "TOOL_RESULT:tollgate-tool-ok",
            "--arg",
            "--allowedTools",
            "--arg",
            "Bash",
        ],
    )?;

    let rows = fake.requests();
    let streamed = rows
        .iter()
        .filter(|r| r["path"] == "/v1/messages" && r["body"]["stream"] == true)
        .count();
    assert!(streamed >= 4, "Claude Code streamed {streamed} requests");
    for row in &rows {
        assert!(
            !row["headers"].to_string().contains(&secret),
            "virtual key leaked upstream"
        );
    }
    // Everything Claude Code sent was charged to its key.
    let usage = gw.usage(&key_id).await?;
    assert!(
        usage["requests"].as_u64().unwrap_or(0) >= streamed as u64,
        "{usage}"
    );

    // A revoked key: Claude Code fails fast (x-should-retry: false), it does not retry for minutes.
    gw.admin(
        "PATCH",
        &format!("/api/v1/virtual-keys/{key_id}"),
        Some(json!({"disabled": true})),
    )
    .await?;
    let started = std::time::Instant::now();
    assert!(
        claude_code(
            &gw.url(),
            &secret,
            &["--max-retries", "10", "--timeout", "60"]
        )
        .is_err(),
        "revoked key must fail"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "Claude Code retried a terminal 401 for {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Claude Code sends `max_tokens: 128000` (about $1.92 of output at $15 per Mtok) with a
/// prompt of tens of kilobytes: a $0.25 daily budget must still serve it, turn after
/// turn, from the first request.
#[tokio::test]
async fn claude_code_works_on_a_quarter_dollar_budget() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    gw.price("*", "3", "15").await?;
    let (key_id, secret) = gw
        .key(json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]))
        .await?;
    gw.daily_budget(&key_id, "0.25").await?;
    // Turn after turn until the room left is less than one request's prompt: then a 402.
    let mut turns = 0;
    let refusal = loop {
        match claude_code(&gw.url(), &secret, &["--auth-mode", "bearer"]) {
            Ok(()) => turns += 1,
            Err(e) => break e.to_string(),
        }
        if turns == 20 {
            bail!("20 turns on a $0.25 budget");
        }
    };
    let (_, usage) = gw
        .admin("GET", &format!("/api/v1/usage?virtual_key={key_id}"), None)
        .await?;
    let spent = micros(&usage["spent_usd"]);
    println!("{turns} turns, then refused; spent {spent} µ$: {usage}");
    if turns < 3 || !refusal.contains("api_error_status=402") {
        bail!("after {turns} turns: {refusal}");
    }
    // Each turn's prompt costs about $0.037: what is left is less than one.
    if !(250_000 - 40_000..=250_000).contains(&spent) {
        bail!("spent {spent} µ$ of a $0.25 budget");
    }
    Ok(())
}

/// At Opus prices ($15 / $75 per Mtok) Claude Code's `max_tokens: 128000` would
/// reserve $9.60: on a $5 budget its stream reserves its expected output instead and is
/// served from the first request, its `max_tokens` untouched.
#[tokio::test]
async fn claude_code_works_on_a_five_dollar_budget_at_opus_prices() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    gw.price("*", "15", "75").await?;
    let (key_id, secret) = gw
        .key(json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]))
        .await?;
    gw.daily_budget(&key_id, "5.00").await?;
    claude_code(&gw.url(), &secret, &["--auth-mode", "bearer"])?;
    // The fake logs a request once it has answered it.
    eventually(5, || async {
        fake.requests().iter().any(|r| r["path"] == "/v1/messages")
    })
    .await;
    let sent = fake
        .requests()
        .iter()
        .filter(|r| r["path"] == "/v1/messages")
        .filter_map(|r| r["body"]["max_tokens"].as_u64())
        .collect::<Vec<_>>();
    println!("max_tokens sent upstream: {sent:?}");
    if sent.is_empty() {
        bail!("no request reached the provider");
    }
    Ok(())
}
