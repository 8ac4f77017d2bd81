//! The audit trail: admin changes with who made them (from where, under which request
//! id, the target before and after, never a secret), failed admin logins; and
//! `tollgate audit verify` finding a flipped byte, a deleted record or a truncated log
//! in a node's request log, naming the node and the sequence, while an untouched node
//! verifies.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::process::Command;
use tollgate_tests::*;

fn verify(gw: &Gateway) -> Result<(bool, String)> {
    let out = Command::new(tollgate_bin())
        .args([
            "audit",
            "verify",
            "--url",
            &gw.url(),
            "--token",
            ADMIN_TOKEN,
        ])
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test]
async fn admin_changes_and_failed_logins_are_audited() -> Result<()> {
    let gw = Gateway::start("").await?;
    let customer = gw
        .create("/api/v1/customers", json!({"name": "Acme"}))
        .await?;
    let customer_id = customer["id"].as_str().context("id")?;
    gw.admin(
        "PATCH",
        &format!("/api/v1/customers/{customer_id}"),
        Some(json!({"name": "Acme Ltd"})),
    )
    .await?;
    let key = gw
        .create(
            "/api/v1/virtual-keys",
            json!({"name": "eng", "provider_configs": [{"provider": "mock"}]}),
        )
        .await?;
    let key_id = key["id"].as_str().context("id")?;
    let secret = key["secret"].as_str().context("secret")?.to_owned();
    let (_, rotated) = gw
        .admin(
            "POST",
            &format!("/api/v1/virtual-keys/{key_id}/rotate"),
            None,
        )
        .await?;
    let new_secret = rotated["secret"].as_str().context("secret")?.to_owned();
    gw.daily_budget(key_id, "5.00").await?;
    // Failed logins: a bad token five times (one event, counted).
    for _ in 0..5 {
        let r = http()
            .get(format!("{}/api/v1/customers", gw.url()))
            .bearer_auth("not-the-token")
            .send()
            .await?;
        assert_eq!(r.status(), 401);
    }
    // The request id an admin answer names is the one its event carries.
    let r = http()
        .post(format!("{}/api/v1/teams", gw.url()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "platform"}))
        .send()
        .await?;
    let team_request_id = r
        .headers()
        .get("x-tollgate-request-id")
        .and_then(|v| v.to_str().ok())
        .context("request id header")?
        .to_owned();

    let mut events = Vec::new();
    ensure!(
        eventually(10, || async {
            match admin_at(&gw.url(), "GET", "/api/v1/audit", None).await {
                Ok((200, v)) => {
                    let all = v["events"].as_array().cloned().unwrap_or_default();
                    let done = all.iter().any(|e| e["action"] == "admin.auth_failed")
                        && all.iter().any(|e| e["action"] == "team.create");
                    done
                }
                _ => false,
            }
        })
        .await,
        "events recorded"
    );
    let (_, page) = admin_at(&gw.url(), "GET", "/api/v1/audit?limit=1000", None).await?;
    events.extend(page["events"].as_array().cloned().unwrap_or_default());
    events.reverse(); // oldest first
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    let expect = [
        "customer.create",
        "customer.update",
        "virtual_key.create",
        "virtual_key.rotate",
        "budget.create",
        "admin.auth_failed",
        "team.create",
    ];
    ensure!(actions == expect, "actions {actions:?}");
    for e in &events {
        let text = e.to_string();
        ensure!(
            !text.contains(&secret) && !text.contains(&new_secret),
            "a secret in {e}"
        );
        ensure!(!text.contains("secret_sha256"), "a secret's hash in {e}");
        ensure!(e["source_ip"] == "127.0.0.1", "{e}");
    }
    let update = &events[1];
    ensure!(update["actor"]["id"] == "bootstrap", "{update}");
    ensure!(
        update["before"]["name"] == "Acme" && update["after"]["name"] == "Acme Ltd",
        "{update}"
    );
    ensure!(
        update["target"] == json!({"kind": "customer", "id": customer_id}),
        "{update}"
    );
    let failed = &events[5];
    ensure!(
        failed["after"]["failed_attempts"] == 1,
        "first failure proposed at once: {failed}"
    );
    ensure!(failed["actor"]["kind"] == "unauthenticated", "{failed}");
    ensure!(
        events[6]["request_id"] == team_request_id.as_str(),
        "{}",
        events[6]
    );
    // The events chain.
    for pair in events.windows(2) {
        ensure!(
            pair[1]["prev_hash"] == pair[0]["hash"],
            "chain broken at {}",
            pair[1]
        );
    }
    // Filters and bad parameters.
    let (_, only) = admin_at(
        &gw.url(),
        "GET",
        "/api/v1/audit?action=virtual_key.rotate",
        None,
    )
    .await?;
    ensure!(only["events"].as_array().map(Vec::len) == Some(1), "{only}");
    let (status, body) = admin_at(&gw.url(), "GET", "/api/v1/audit?since=never", None).await?;
    ensure!(status == 400 && body["error"]["field"] == "since", "{body}");
    let (ok, text) = verify(&gw)?;
    ensure!(ok, "untouched node does not verify:\n{text}");
    Ok(())
}

/// A gateway with `n` requests logged and its log anchored, then stopped.
async fn logged_and_stopped(n: usize) -> Result<Gateway> {
    let mut gw = Gateway::start("").await?;
    let (_, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    let ask =
        json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..n {
        let (status, _, _) = messages(&gw.url(), &secret, &ask).await?;
        ensure!(status == 200, "request refused");
    }
    // Every record written and anchored (the node anchors its head every few seconds).
    let anchored = eventually(30, || async {
        admin_at(&gw.url(), "GET", "/api/v1/audit/verify", None)
            .await
            .is_ok_and(|(_, v)| v["nodes"][0]["anchored_seq"].as_u64() >= Some(n as u64))
    })
    .await;
    ensure!(anchored, "log never anchored");
    let (ok, text) = verify(&gw)?;
    ensure!(ok, "untouched log does not verify:\n{text}");
    println!("{text}");
    gw.stop();
    Ok(gw)
}

fn tamper(gw: &Gateway, how: &str, seq: u64) -> Result<()> {
    let out = Command::new(bench_bin())
        .arg("log-tamper")
        .arg("--dir")
        .arg(gw.data_dir.join("logs"))
        .args(["--seq", &seq.to_string(), "--how", how])
        .output()?;
    ensure!(
        out.status.success(),
        "tamper: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn verify_names_the_first_bad_sequence_of_a_tampered_log() -> Result<()> {
    for (how, seq) in [("flip", 7), ("delete", 12), ("truncate", 16)] {
        let mut gw = logged_and_stopped(20).await?;
        tamper(&gw, how, seq)?;
        gw.start_again().await?;
        let (ok, text) = verify(&gw)?;
        println!("after {how} at {seq}:\n{text}");
        ensure!(!ok, "{how} at {seq} not found:\n{text}");
        ensure!(
            text.contains(&format!(
                "node 1, chain request_log, first bad sequence {seq}"
            )),
            "{how} at {seq}: {text}"
        );
        // The audit trail itself is untouched.
        ensure!(text.contains("audit trail: ok"), "{text}");
    }
    Ok(())
}

#[tokio::test]
async fn a_cluster_verifies_every_node() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let cluster = Balanced::start(&fake_config(&fake), &[]).await?;
    cluster.price("claude-x", "3", "15").await?;
    let (_, secret) = cluster
        .key_with_budget("audit", json!([{"provider": "fake-anthropic"}]))
        .await?;
    let ask = json!({"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    for node in NODES {
        for _ in 0..5 {
            let (status, _, body) = messages(&cluster.url(node), &secret, &ask).await?;
            ensure!(status == 200, "request refused: {status} {body}");
        }
    }
    let anchored = eventually(30, || async {
        cluster
            .admin(1, "GET", "/api/v1/audit/verify", None)
            .await
            .is_ok_and(|v| {
                v["nodes"].as_array().is_some_and(|n| {
                    n.len() == 3 && n.iter().all(|n| n["anchored_seq"].as_u64() >= Some(5))
                })
            })
    })
    .await;
    ensure!(anchored, "not every node anchored its log");
    let out = Command::new(tollgate_bin())
        .args([
            "audit",
            "verify",
            "--url",
            &cluster.url(0),
            "--token",
            ADMIN_TOKEN,
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}");
    ensure!(out.status.success(), "{text}");
    ensure!(text.matches("request log: ok").count() == 3, "{text}");
    // A change made through one node is an event on every node (the cluster records
    // the trail once every member speaks protocol 3, as the anchors show it does).
    cluster
        .admin(
            3,
            "POST",
            "/api/v1/customers",
            Some(json!({"name": "audited"})),
        )
        .await?;
    for node in NODES {
        let seen = eventually(10, || async {
            cluster
                .admin(node, "GET", "/api/v1/audit?action=customer.create", None)
                .await
                .is_ok_and(|v: Value| v["events"].as_array().is_some_and(|e| e.len() == 1))
        })
        .await;
        ensure!(seen, "node {node} does not hold the event");
    }
    Ok(())
}
