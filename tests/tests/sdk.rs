//! The official `anthropic` and `openai` Python SDKs through the gateway, natively and
//! with the gateway translating between the two APIs.

use anyhow::{bail, Result};
use serde_json::json;
use std::process::Command;
use tollgate_tests::*;

fn sdk_check(base_url: &str, secret: &str) -> Result<String> {
    let out = Command::new("python3")
        .env("PYTHONPATH", prereq::python_sdk_dir()?)
        .arg(kit_dir().join("sdk_check.py"))
        .args([
            base_url,
            secret,
            "--anthropic-model",
            "claude-sonnet-4-5",
            "--openai-model",
            "gpt-4o-mini",
        ])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    if !out.status.success() {
        bail!("sdk_check failed against {base_url}:\n{text}");
    }
    Ok(text)
}

fn paths(fake: &FakeUpstream) -> Vec<String> {
    fake.requests()
        .iter()
        .filter_map(|r| r["path"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn official_sdks_work_natively_and_translated() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;

    // Native: Anthropic models to the Anthropic provider, OpenAI models to the OpenAI one.
    let (_, native) = gw
        .key(json!([
            {"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]},
            {"provider": "fake-openai", "allowed_models": ["regex:^gpt-"]},
        ]))
        .await?;
    sdk_check(&gw.url(), &native)?;
    let seen = paths(&fake);
    assert!(seen.iter().any(|p| p == "/v1/messages"), "{seen:?}");
    assert!(
        seen.iter().any(|p| p == "/v1/messages/count_tokens"),
        "{seen:?}"
    );
    assert!(seen.iter().any(|p| p == "/v1/chat/completions"), "{seen:?}");
    let native_calls = seen.len();

    // Translated: the Anthropic SDK is served by the OpenAI-format provider and the
    // OpenAI SDK by the Anthropic-format one.
    let (_, crossed) = gw
        .key(json!([
            {"provider": "fake-openai", "allowed_models": ["regex:^claude-"]},
            {"provider": "fake-anthropic", "allowed_models": ["regex:^gpt-"]},
        ]))
        .await?;
    sdk_check(&gw.url(), &crossed)?;
    let rows = fake.requests();
    let crossed_rows = &rows[native_calls..];
    for row in crossed_rows {
        let path = row["path"].as_str().unwrap_or("");
        let model = row["body"]["model"].as_str().unwrap_or("");
        match path {
            "/v1/chat/completions" => assert!(model.starts_with("claude-"), "{row}"),
            "/v1/messages" => assert!(model.starts_with("gpt-"), "{row}"),
            other => panic!("unexpected upstream call {other}: {row}"),
        }
    }
    assert!(
        crossed_rows.len() >= 6,
        "{} translated calls",
        crossed_rows.len()
    );
    Ok(())
}
