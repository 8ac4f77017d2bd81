//! The Bedrock and Vertex front doors (issue 21): the real Claude Code CLI in its Bedrock
//! mode (`CLAUDE_CODE_USE_BEDROCK=1`, `ANTHROPIC_BEDROCK_BASE_URL=<gateway>/bedrock`,
//! `CLAUDE_CODE_SKIP_BEDROCK_AUTH=1`) and its Vertex mode (`CLAUDE_CODE_USE_VERTEX=1`,
//! `ANTHROPIC_VERTEX_BASE_URL=<gateway>/vertex/v1`, `CLAUDE_CODE_SKIP_VERTEX_AUTH=1`),
//! the virtual key in `x-tollgate-key`, each routed once to an Anthropic upstream and once
//! to a Bedrock one; and the official boto3 `bedrock-runtime`, `AnthropicBedrock` and
//! `AnthropicVertex` clients.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::process::Command;
use tollgate_tests::*;

fn config(anthropic: &FakeUpstream, bedrock: &FakeBedrock) -> String {
    format!(
        "[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"env:TEST_UPSTREAM_KEY\"\n{}",
        anthropic.base_url(),
        bedrock_provider(bedrock)
    )
}

/// How Claude Code is pointed at a front door: its environment, `{gw}` standing for the
/// gateway's URL.
const BEDROCK_MODE: &[&str] = &[
    "CLAUDE_CODE_USE_BEDROCK=1",
    "ANTHROPIC_BEDROCK_BASE_URL={gw}/bedrock",
    "CLAUDE_CODE_SKIP_BEDROCK_AUTH=1",
    "AWS_REGION=us-east-1",
];
const VERTEX_MODE: &[&str] = &[
    "CLAUDE_CODE_USE_VERTEX=1",
    "ANTHROPIC_VERTEX_BASE_URL={gw}/vertex/v1",
    "CLAUDE_CODE_SKIP_VERTEX_AUTH=1",
    "CLOUD_ML_REGION=us-east5",
    "ANTHROPIC_VERTEX_PROJECT_ID=acme-prod",
];

/// Claude Code in `mode` running a Bash tool through the front door, with a key on
/// `provider`; gives the request that carried the tool's result, as `logged` shows it.
async fn tool_round_trip(
    gw: &Gateway,
    mode: &[&str],
    provider: &str,
    logged: impl Fn() -> Vec<Value>,
) -> Result<Value> {
    let (_, secret) = gw.key(json!([{ "provider": provider }])).await?;
    let word = format!("through-{provider}");
    let env: Vec<String> = mode.iter().map(|e| e.replace("{gw}", &gw.url())).collect();
    let header = format!("x-tollgate-key: {secret}");
    let prompt = format!("RUN_BASH:echo {word}");
    let expect = format!("TOOL_RESULT:{word}");
    let mut args: Vec<&str> = env.iter().flat_map(|e| ["--env", e.as_str()]).collect();
    args.extend([
        "--header", &header, "--prompt", &prompt, "--expect", &expect,
    ]);
    args.extend(["--arg", "--allowedTools", "--arg", "Bash"]);
    claude_code(&gw.url(), "not-the-virtual-key", &args)?;
    logged()
        .into_iter()
        .find(|r| {
            r["body"].to_string().contains(&word) && r["body"].to_string().contains("tool_result")
        })
        .with_context(|| format!("the tool's result reached {provider}"))
}

#[tokio::test]
async fn claude_code_bedrock_mode_reaches_anthropic_and_bedrock_upstreams() -> Result<()> {
    let anthropic = FakeUpstream::start(&[])?;
    let bedrock = FakeBedrock::start(&[])?;
    let gw = Gateway::start_with_env(&config(&anthropic, &bedrock), BEDROCK_ENV).await?;

    // Routed to Anthropic: an Anthropic request, the Bedrock-only fields gone, the body's
    // betas in the header beside the ones Claude Code sent there.
    let main = tool_round_trip(&gw, BEDROCK_MODE, "anthropic", || anthropic.requests()).await?;
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
    let main = tool_round_trip(&gw, BEDROCK_MODE, "bedrock-us", || bedrock.requests()).await?;
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
async fn claude_code_vertex_mode_reaches_anthropic_and_bedrock_upstreams() -> Result<()> {
    let anthropic = FakeUpstream::start(&[])?;
    let bedrock = FakeBedrock::start(&[])?;
    let gw = Gateway::start_with_env(&config(&anthropic, &bedrock), BEDROCK_ENV).await?;

    // Routed to Anthropic: the model from the path, no Vertex version in the body.
    let main = tool_round_trip(&gw, VERTEX_MODE, "anthropic", || anthropic.requests()).await?;
    ensure!(
        main["path"] == "/v1/messages" && main["body"].get("anthropic_version").is_none(),
        "{main}"
    );
    let model = main["body"]["model"].as_str().unwrap_or_default();
    ensure!(
        model.starts_with("claude-") && !model.contains('@'),
        "{main}"
    );

    // Routed to Bedrock: signed, Bedrock's version in the body instead of Vertex's.
    let main = tool_round_trip(&gw, VERTEX_MODE, "bedrock-us", || bedrock.requests()).await?;
    ensure!(main["auth"] == "sigv4" && main["status"] == 200, "{main}");
    ensure!(
        main["body"]["anthropic_version"] == "bedrock-2023-05-31",
        "{main}"
    );
    Ok(())
}

#[tokio::test]
async fn boto3_anthropic_bedrock_and_vertex_clients_use_the_front_doors() -> Result<()> {
    let anthropic = FakeUpstream::start(&[])?;
    let bedrock = FakeBedrock::start(&[])?;
    let gw = Gateway::start_with_env(&config(&anthropic, &bedrock), BEDROCK_ENV).await?;
    let (key_id, secret) = gw.key(json!([{"provider": "bedrock-us"}])).await?;
    let model = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
    let out = Command::new("python3")
        .env("PYTHONPATH", prereq::python_sdk_dir()?)
        .arg(workspace_dir().join("tests/py/bedrock_clients.py"))
        .args([&format!("{}/bedrock", gw.url()), &secret, model])
        .arg(format!("{}/vertex/v1", gw.url()))
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
    ensure!(
        seen["vertex"] == "vertex-json" && seen["vertex_stream"] == "vertex-stream",
        "{seen}"
    );
    // Each went to Bedrock with the client's own model id, and was charged.
    let paths: Vec<String> = bedrock
        .requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect();
    // (Vertex's `claude-haiku-4-5@20251001` is the same model, given the same id.)
    ensure!(
        paths.len() == 6
            && paths
                .iter()
                .all(|p| p.contains("us.anthropic.claude-haiku-4-5-20251001-v1%3A0")),
        "{paths:?}"
    );
    eventually(10, || async {
        gw.usage(&key_id).await.is_ok_and(|u| u["requests"] == 6)
    })
    .await;
    let usage = gw.usage(&key_id).await?;
    ensure!(usage["requests"] == 6, "{usage}");
    Ok(())
}
