//! The Bedrock front door (issue 21): the real Claude Code CLI in its Bedrock mode
//! (`CLAUDE_CODE_USE_BEDROCK=1`, `ANTHROPIC_BEDROCK_BASE_URL=<gateway>/bedrock`,
//! `CLAUDE_CODE_SKIP_BEDROCK_AUTH=1`, the virtual key in `x-tollgate-key`) routed once to
//! an Anthropic upstream and once to a Bedrock one, and the official boto3
//! `bedrock-runtime` and `AnthropicBedrock` clients.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::process::Command;
use tollgate_tests::*;

fn config(anthropic: &FakeUpstream, bedrock: &FakeBedrock) -> String {
    format!(
        r#"
[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "{}"
api_key = "env:TEST_UPSTREAM_KEY"

[[providers]]
name = "bedrock-us"
kind = "bedrock"
region = "us-east-1"
base_url = "{}"
access_key_id = "env:TEST_BEDROCK_AKID"
secret_access_key = "env:TEST_BEDROCK_SECRET"
session_token = "env:TEST_BEDROCK_TOKEN"
inference_profile = "us"
"#,
        anthropic.base_url(),
        bedrock.base_url()
    )
}

const BEDROCK_ENV: &[(&str, &str)] = &[
    ("TEST_BEDROCK_AKID", BEDROCK_ACCESS_KEY),
    ("TEST_BEDROCK_SECRET", BEDROCK_SECRET_KEY),
    ("TEST_BEDROCK_TOKEN", BEDROCK_SESSION_TOKEN),
];

/// Claude Code in its Bedrock mode against the front door, running a Bash tool.
fn claude_code_bedrock_mode(gw: &Gateway, secret: &str, word: &str) -> Result<()> {
    let base = format!("ANTHROPIC_BEDROCK_BASE_URL={}/bedrock", gw.url());
    let header = format!("x-tollgate-key: {secret}");
    let prompt = format!("RUN_BASH:echo {word}");
    let expect = format!("TOOL_RESULT:{word}");
    claude_code(
        &gw.url(),
        "not-the-virtual-key",
        &[
            "--env",
            "CLAUDE_CODE_USE_BEDROCK=1",
            "--env",
            &base,
            "--env",
            "CLAUDE_CODE_SKIP_BEDROCK_AUTH=1",
            "--env",
            "AWS_REGION=us-east-1",
            "--header",
            &header,
            "--prompt",
            &prompt,
            "--expect",
            &expect,
            "--arg",
            "--allowedTools",
            "--arg",
            "Bash",
        ],
    )
}

#[tokio::test]
async fn claude_code_bedrock_mode_reaches_anthropic_and_bedrock_upstreams() -> Result<()> {
    let anthropic = FakeUpstream::start(&[])?;
    let bedrock = FakeBedrock::start(&[])?;
    let gw = Gateway::start_with_env(&config(&anthropic, &bedrock), BEDROCK_ENV).await?;

    // Routed to Anthropic: an Anthropic request, the Bedrock-only fields gone, the body's
    // betas in the header beside the ones Claude Code sent there.
    let (_, to_anthropic) = gw.key(json!([{"provider": "anthropic"}])).await?;
    claude_code_bedrock_mode(&gw, &to_anthropic, "front-anthropic")?;
    let seen = anthropic.requests();
    let main = seen
        .iter()
        .find(|r| r["body"].to_string().contains("tool_result"))
        .context("the tool's result reached Anthropic")?;
    ensure!(
        main["path"] == "/v1/messages" && main["body"].get("anthropic_version").is_none(),
        "{main}"
    );
    ensure!(
        main["body"].get("anthropic_beta").is_none() && main["body"]["model"].is_string(),
        "{main}"
    );
    let betas = main["headers"]["anthropic-beta"]
        .as_str()
        .unwrap_or_default();
    ensure!(
        betas.contains("claude-code-20250219") && betas.contains("interleaved-thinking"),
        "{betas}"
    );

    // Routed to Bedrock: the client's model id in the path, the body's own betas (not
    // the header's), signed by the gateway.
    let (_, to_bedrock) = gw.key(json!([{"provider": "bedrock-us"}])).await?;
    claude_code_bedrock_mode(&gw, &to_bedrock, "front-bedrock")?;
    let seen = bedrock.requests();
    let main = seen
        .iter()
        .find(|r| r["body"].to_string().contains("tool_result"))
        .context("the tool's result reached Bedrock")?;
    ensure!(main["auth"] == "sigv4" && main["status"] == 200, "{main}");
    let path = main["path"].as_str().unwrap_or_default();
    ensure!(
        path.starts_with("/model/us.anthropic.claude-") && !path.contains("-v1%3A0-v1"),
        "{path}"
    );
    let body_betas = main["body"]["anthropic_beta"].to_string();
    ensure!(
        body_betas.contains("interleaved-thinking") && !body_betas.contains("claude-code-20250219"),
        "{body_betas}"
    );
    Ok(())
}

#[tokio::test]
async fn boto3_and_anthropic_bedrock_clients_use_the_front_door() -> Result<()> {
    let anthropic = FakeUpstream::start(&[])?;
    let bedrock = FakeBedrock::start(&[])?;
    let gw = Gateway::start_with_env(&config(&anthropic, &bedrock), BEDROCK_ENV).await?;
    let (key_id, secret) = gw.key(json!([{"provider": "bedrock-us"}])).await?;
    let model = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
    let out = Command::new("python3")
        .env("PYTHONPATH", prereq::python_sdk_dir()?)
        .arg(workspace_dir().join("tests/py/bedrock_clients.py"))
        .args([&format!("{}/bedrock", gw.url()), &secret, model])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim())?;
    ensure!(
        seen["invoke"] == "boto3-json" && seen["stream"] == "boto3-stream",
        "{seen}"
    );
    ensure!(
        seen["stream_types"][0] == "message_start"
            && seen["stream_output_tokens"].as_u64() > Some(0),
        "{seen}"
    );
    ensure!(
        seen["refused"]["code"] == "ValidationException" && seen["refused"]["status"] == 400,
        "{seen}"
    );
    ensure!(
        seen["sdk"] == "sdk-json" && seen["sdk_stream"] == "sdk-stream",
        "{seen}"
    );
    // Each went to Bedrock with the client's own model id, and was charged.
    let paths: Vec<String> = bedrock
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        paths.len() == 4
            && paths
                .iter()
                .all(|p| p.contains("us.anthropic.claude-haiku-4-5-20251001-v1%3A0")),
        "{paths:?}"
    );
    eventually(10, || async {
        gw.usage(&key_id).await.is_ok_and(|u| u["requests"] == 4)
    })
    .await;
    let usage = gw.usage(&key_id).await?;
    ensure!(usage["requests"] == 4, "{usage}");
    Ok(())
}
