//! The real Claude Code CLI through the gateway to the fake Anthropic upstream:
//! bearer and x-api-key auth, streaming, and one tool-use round trip.

use anyhow::{bail, Result};
use serde_json::json;
use std::process::Command;
use tollgate_tests::*;

fn claude(base_url: &str, token: &str, extra: &[&str]) -> Result<()> {
    let install_dir = workspace_dir().join("target/claude-code");
    let out = Command::new("bash")
        .arg(kit_dir().join("run_claude_code_e2e.sh"))
        .arg("--install-dir")
        .arg(&install_dir)
        .args(["--base-url", base_url, "--token", token, "--timeout", "150"])
        .args(extra)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    if !out.status.success() {
        bail!("claude code e2e failed ({extra:?}):\n{text}");
    }
    Ok(())
}

#[tokio::test]
async fn claude_code_works_through_the_gateway() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (key_id, secret) = gw
        .key(json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]))
        .await?;

    // Bearer (ANTHROPIC_AUTH_TOKEN) at the server root; streaming is Claude Code's default.
    claude(&gw.url(), &secret, &["--auth-mode", "bearer"])?;
    // x-api-key (ANTHROPIC_API_KEY) under the /anthropic prefix.
    claude(
        &format!("{}/anthropic", gw.url()),
        &secret,
        &["--auth-mode", "api-key"],
    )?;
    // One tool-use round trip: the fake asks for Bash, Claude Code runs it, the result
    // goes back through the gateway.
    claude(
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
        claude(
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
