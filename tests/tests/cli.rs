//! The `tollgate admin` CLI against a running node.

use anyhow::{bail, Result};
use serde_json::Value;
use std::process::Command;
use tollgate_tests::*;

fn admin(gw: &Gateway, args: &[&str]) -> Result<Value> {
    let out = Command::new(tollgate_bin())
        .arg("admin")
        .args(["--url", &gw.url(), "--token", ADMIN_TOKEN])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "tollgate admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[tokio::test]
async fn admin_cli_creates_keys_and_reads_usage() -> Result<()> {
    let gw = Gateway::start("").await?;
    let key = admin(
        &gw,
        &[
            "keys",
            "create",
            "--name",
            "cli",
            "--provider",
            "mock",
            "--allow",
            "regex:^claude-",
        ],
    )?;
    let (id, secret) = (
        key["id"].as_str().unwrap_or_default(),
        key["secret"].as_str().unwrap_or_default(),
    );
    assert!(secret.starts_with("tg-"), "{key}");
    admin(
        &gw,
        &[
            "set-price",
            "--model",
            "claude-x",
            "--input",
            "3",
            "--output",
            "15",
        ],
    )?;
    admin(
        &gw,
        &[
            "create-budget",
            "--owner-kind",
            "virtual_key",
            "--owner-id",
            id,
            "--limit",
            "5.00",
            "--reset",
            "1d",
        ],
    )?;
    let body = serde_json::json!({"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "ECHO:cli"}]});
    assert_eq!(messages(&gw.url(), secret, &body).await?.0, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let usage = loop {
        let u = admin(&gw, &["usage", "--virtual-key", id])?;
        if u["requests"] == 1 || std::time::Instant::now() > deadline {
            break u;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(usage["requests"], 1, "{usage}");
    assert_eq!(usage["budgets"][0]["limit_usd"], "5.00", "{usage}");
    let listed = admin(&gw, &["keys", "list"])?;
    assert!(
        !listed.to_string().contains(secret),
        "list never shows a secret"
    );
    admin(&gw, &["keys", "disable", id])?;
    assert_eq!(messages(&gw.url(), secret, &body).await?.0, 401);
    // A failing call exits non-zero.
    assert!(admin(&gw, &["keys", "get", "vk_missing"]).is_err());
    Ok(())
}
