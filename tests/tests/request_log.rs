//! The request log as an operator and a compliance team use it: every request of a real
//! Claude Code session listed on any node of a cluster with tokens and cost that add up
//! to the ledgers; captured bodies and text search; stats; 400s naming the parameter;
//! retention and the disk cap (with the clock moved by the test hook).

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tollgate_tests::*;

#[tokio::test]
async fn claude_code_sessions_are_listed_on_every_node_and_add_up_to_the_ledgers() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let cluster = Balanced::start(&fake_config(&fake), &[]).await?;
    cluster.price("*", "3", "15").await?;
    let (key_id, secret) = cluster
        .key_with_budget(
            "claude",
            json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]),
        )
        .await?;
    // Two sessions through HAProxy, their requests on every node; the second asks for
    // a tool, runs it and sends its result back (several requests in one session).
    claude_code(&cluster.url(0), &secret, &[])?;
    claude_code(
        &cluster.url(0),
        &secret,
        &[
            "--prompt",
            "RUN_BASH:echo logged-tool-ok",
            "--expect",
            "TOOL_RESULT:logged-tool-ok",
            "--arg",
            "--allowedTools",
            "--arg",
            "Bash",
        ],
    )?;

    // What the provider received.
    let sent = fake
        .requests()
        .iter()
        .filter(|r| r["path"] == "/v1/messages")
        .count();
    // The ledgers, settled (the same on every node).
    let usage_path = format!("/api/v1/usage?virtual_key={key_id}&consistency=linearizable");
    let settled = eventually(30, || async {
        let mut figures = Vec::new();
        for node in NODES {
            match cluster.admin(node, "GET", &usage_path, None).await {
                Ok(u) => figures.push(u["requests"].as_u64()),
                Err(_) => return false,
            }
        }
        figures.iter().all(|f| *f == Some(sent as u64))
    })
    .await;
    ensure!(settled, "the ledgers never counted the {sent} requests");
    let usage = cluster.admin(1, "GET", &usage_path, None).await?;
    // The sessions Claude Code named (`X-Claude-Code-Session-Id`), from the records.
    let mut sessions: BTreeMap<String, usize> = BTreeMap::new();
    for r in log_records(&cluster.url(1), &format!("virtual_key={key_id}")).await? {
        let session = r["session_id"]
            .as_str()
            .context("every request names its session")?;
        *sessions.entry(session.to_owned()).or_default() += 1;
    }
    ensure!(sessions.len() == 2, "sessions {sessions:?}");
    ensure!(
        sessions.values().any(|n| *n >= 2),
        "no session of several requests: {sessions:?}"
    );

    for node in NODES {
        let url = cluster.url(node);
        // Every session, asked of every node, lists all its requests.
        for (session, count) in &sessions {
            let ok = eventually(10, || async {
                log_records(&url, &format!("session={session}"))
                    .await
                    .is_ok_and(|r| r.len() == *count)
            })
            .await;
            ensure!(
                ok,
                "node {node}: session {session} should list {count} requests"
            );
        }
        // The key's records add up to its ledger.
        let records = log_records(&url, &format!("virtual_key={key_id}")).await?;
        let sum =
            |field: &str| -> u64 { records.iter().map(|r| r[field].as_u64().unwrap_or(0)).sum() };
        let cost: u64 = records.iter().map(|r| micros(&r["cost_usd"])).sum();
        println!(
            "node {node}: {} records, {} in / {} out tokens, {cost} µ$",
            records.len(),
            sum("input_tokens"),
            sum("output_tokens")
        );
        ensure!(
            records.len() == sent,
            "node {node}: {} records",
            records.len()
        );
        ensure!(
            sum("input_tokens") == usage["input_tokens"].as_u64().unwrap_or(0),
            "{usage}"
        );
        ensure!(
            sum("output_tokens") == usage["output_tokens"].as_u64().unwrap_or(0),
            "{usage}"
        );
        ensure!(
            cost == micros(&usage["budgets"][0]["spent_usd"]),
            "cost {cost}: {usage}"
        );
        for r in &records {
            ensure!(r["status"] == 200 && r["stream"] == true, "{r}");
            ensure!(
                r["user_agent"]
                    .as_str()
                    .is_some_and(|ua| ua.contains("claude")),
                "{r}"
            );
            ensure!(r["client_ip"] == "127.0.0.1", "{r}");
            ensure!(
                r["virtual_key_name"] == "claude" && r["attempts"] == 1,
                "{r}"
            );
            ensure!(
                !r.to_string().contains(&secret),
                "a record holds the secret"
            );
        }
        // Stats from the totals kept at write time agree.
        let stats = cluster
            .admin(node, "GET", "/api/v1/stats?group_by=virtual_key", None)
            .await?;
        let group = stats["groups"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["key"] == key_id.as_str()))
            .context("the key's group")?;
        ensure!(group["requests"] == sent as u64, "{stats}");
        ensure!(micros(&group["cost_usd"]) == cost, "{stats}");
    }
    Ok(())
}

/// A node alone with content capture: what a record holds, search, stats, bad input.
#[tokio::test]
async fn records_hold_bodies_answer_searches_and_refuse_bad_parameters() -> Result<()> {
    let config = "[logs]\ncontent = \"full\"\n";
    let gw = Gateway::start(config).await?;
    let (key_id, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    let client = http();
    let send = |body: Value, session: &'static str| {
        let (client, url, secret) = (client.clone(), gw.url(), secret.clone());
        async move {
            client
                .post(format!("{url}/v1/messages"))
                .header("x-api-key", secret)
                .header("x-claude-code-session-id", session)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let ask = |text: &str, stream: bool| {
        json!({"model": "mock-model", "max_tokens": 32, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
    };
    assert_eq!(send(ask("hello there", false), "s-a").await?, 200);
    assert_eq!(
        send(ask("find the zebra-17 please", true), "s-a").await?,
        200
    );
    assert_eq!(send(ask("third", false), "s-b").await?, 200);
    // Refused: a malformed body, then an unknown key.
    assert_eq!(send(json!({"model": 7}), "s-a").await?, 400);
    let (status, _, _) = messages(&gw.url(), "tg-nope", &ask("x", false)).await?;
    assert_eq!(status, 401);

    let base = gw.url();
    let all = eventually(10, || async {
        log_records(&base, "").await.is_ok_and(|r| r.len() == 5)
    })
    .await;
    ensure!(all, "{:?}", log_records(&base, "").await);
    let records = log_records(&base, "").await?;
    let statuses: Vec<u64> = records
        .iter()
        .map(|r| r["status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![401, 400, 200, 200, 200], "newest first");
    assert_eq!(records[0]["error_type"], "authentication_error");
    assert_eq!(records[0]["virtual_key_id"], Value::Null);
    assert_eq!(records[1]["error_type"], "invalid_request_error");
    assert_eq!(records[1]["virtual_key_id"], key_id.as_str());
    assert_eq!(log_records(&base, "session=s-a").await?.len(), 3);
    assert_eq!(log_records(&base, "session=s-a&status=200").await?.len(), 2);

    // Text search reads the captured bodies; the record shows them.
    let found = log_records(&base, "q=zebra-17").await?;
    assert_eq!(found.len(), 1);
    let id = found[0]["request_id"].as_str().context("id")?;
    let (status, entry) = admin_at(&base, "GET", &format!("/api/v1/logs/{id}"), None).await?;
    assert_eq!(status, 200);
    assert!(
        entry["request_body"]
            .as_str()
            .is_some_and(|b| b.contains("zebra-17")),
        "{entry}"
    );
    assert!(
        entry["response_body"]
            .as_str()
            .is_some_and(|b| b.contains("message_stop")),
        "{entry}"
    );
    assert_eq!(entry["stream"], true);
    let (status, _) = admin_at(&base, "GET", "/api/v1/logs/req_unknown", None).await?;
    assert_eq!(status, 404);

    let (_, stats) = admin_at(&base, "GET", "/api/v1/stats?group_by=model", None).await?;
    let model = stats["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"] == "mock-model"))
        .context("model group")?;
    assert_eq!(model["requests"], 3, "{stats}");
    assert_eq!(model["errors"], 0, "{stats}");
    // The refusals before the body was read name no model.
    let unnamed = stats["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"] == ""))
        .context("unnamed group")?;
    assert_eq!(
        (unnamed["requests"].as_u64(), unnamed["errors"].as_u64()),
        (Some(2), Some(2))
    );

    for (query, field) in [
        ("/api/v1/logs?since=yesterday", "since"),
        ("/api/v1/logs?until=2026-13-01T00:00:00Z", "until"),
        ("/api/v1/logs?limit=0", "limit"),
        ("/api/v1/logs?limit=5000", "limit"),
        ("/api/v1/logs?status=ok", "status"),
        ("/api/v1/logs?cursor=zzz", "cursor"),
        ("/api/v1/logs?team=", "team"),
        ("/api/v1/logs?colour=red", "colour"),
        (
            "/api/v1/logs?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
            "until",
        ),
        ("/api/v1/stats?group_by=week", "group_by"),
        ("/api/v1/stats?since=soon", "since"),
    ] {
        let (status, body) = admin_at(&base, "GET", query, None).await?;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    assert!(gw.metric("tollgate_log_records_total").await? >= 5);
    Ok(())
}

#[tokio::test]
async fn a_keys_log_content_overrides_the_nodes() -> Result<()> {
    // The node keeps metadata; one key asks for its bodies, one for nothing.
    let gw = Gateway::start("").await?;
    let base = gw.url();
    let create = |name: &str, content: Value| {
        let (base, name) = (base.clone(), name.to_owned());
        async move {
            admin_at(
                &base,
                "POST",
                "/api/v1/virtual-keys",
                Some(
                    json!({"name": name, "provider_configs": [{"provider": "mock"}],
                            "log_content": content}),
                ),
            )
            .await
        }
    };
    let (status, body) = create("bad", json!("everything")).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("log_content"), "{body}");
    let mut keys = BTreeMap::new();
    for (name, content) in [
        ("plain", Value::Null),
        ("full", json!("full")),
        ("quiet", Value::Null),
    ] {
        let (status, key) = create(name, content.clone()).await?;
        assert_eq!(status, 201, "{key}");
        assert_eq!(key["log_content"], content, "{key}");
        let id = key["id"].as_str().context("id")?.to_owned();
        let secret = key["secret"].as_str().context("secret")?.to_owned();
        keys.insert(name, (id, secret));
    }
    let quiet = &keys["quiet"].0;
    let (status, patched) = admin_at(
        &base,
        "PATCH",
        &format!("/api/v1/virtual-keys/{quiet}"),
        Some(json!({"log_content": "off"})),
    )
    .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["log_content"], "off");
    assert_eq!(patched["name"], "quiet", "the rest of the key is kept");

    let ask = |text: &str| {
        json!({"model": "mock-model", "max_tokens": 32,
               "messages": [{"role": "user", "content": text}]})
    };
    // The quiet key first: once the later records are in, its turn has passed.
    for name in ["quiet", "plain", "full"] {
        let (status, _, _) = messages(&base, &keys[name].1, &ask(&format!("from {name}"))).await?;
        assert_eq!(status, 200);
    }
    let two = eventually(10, || async {
        log_records(&base, "").await.is_ok_and(|r| r.len() == 2)
    })
    .await;
    ensure!(two, "{:?}", log_records(&base, "").await);
    let by_key = |name: &str| {
        let (base, id) = (base.clone(), keys[name].0.clone());
        async move { log_records(&base, &format!("virtual_key={id}")).await }
    };
    assert!(
        by_key("quiet").await?.is_empty(),
        "a key set to off leaves no record"
    );
    for (name, kept) in [("plain", false), ("full", true)] {
        let records = by_key(name).await?;
        assert_eq!(records.len(), 1, "{name}: {records:?}");
        let id = records[0]["request_id"].as_str().context("id")?;
        let (_, entry) = admin_at(&base, "GET", &format!("/api/v1/logs/{id}"), None).await?;
        let body = entry["request_body"].as_str().unwrap_or_default();
        assert_eq!(
            body.contains(&format!("from {name}")),
            kept,
            "{name}: {entry}"
        );
    }

    // Back to the node's setting: the quiet key is recorded again.
    let (status, patched) = admin_at(
        &base,
        "PATCH",
        &format!("/api/v1/virtual-keys/{quiet}"),
        Some(json!({"log_content": null})),
    )
    .await?;
    assert_eq!((status, &patched["log_content"]), (200, &Value::Null));
    let (status, _, _) = messages(&base, &keys["quiet"].1, &ask("again")).await?;
    assert_eq!(status, 200);
    let back = eventually(10, || async {
        by_key("quiet").await.is_ok_and(|r| r.len() == 1)
    })
    .await;
    ensure!(back, "{:?}", by_key("quiet").await);
    // Each change is in the audit trail, with the key before and after.
    let (_, audit) = admin_at(&base, "GET", "/api/v1/audit", None).await?;
    let changes = audit["events"]
        .as_array()
        .context("events")?
        .iter()
        .filter(|e| e["target"]["id"] == quiet.as_str() && e["action"] == "virtual_key.update")
        .count();
    assert_eq!(changes, 2, "{audit}");
    Ok(())
}

#[tokio::test]
async fn the_client_address_comes_from_a_trusted_proxy_only() -> Result<()> {
    // The test's connections come from 127.0.0.1: one gateway trusts it as its load
    // balancer, the other trusts only another address.
    let trusting =
        Gateway::start("[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\n").await?;
    let wary = Gateway::start("[server]\ntrusted_proxies = [\"192.0.2.1\"]\n").await?;
    let client = http();
    let body = json!({"model": "mock-model", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "hi"}]});
    for (gw, cases) in [
        (
            &trusting,
            vec![
                (None, "127.0.0.1"),
                (Some("203.0.113.7"), "203.0.113.7"),
                (Some("6.6.6.6, 198.51.100.9, 10.1.1.1"), "198.51.100.9"),
                (Some("not-an-address"), "127.0.0.1"),
            ],
        ),
        (&wary, vec![(Some("203.0.113.7"), "127.0.0.1")]),
    ] {
        let (_, secret) = gw.key(json!([{"provider": "mock"}])).await?;
        let base = gw.url();
        for (i, (forwarded, _)) in cases.iter().enumerate() {
            let mut request = client
                .post(format!("{base}/v1/messages"))
                .header("x-api-key", &secret)
                .header("x-claude-code-session-id", format!("s{i}"))
                .json(&body);
            if let Some(f) = forwarded {
                request = request.header("x-forwarded-for", *f);
            }
            assert_eq!(request.send().await?.status(), 200);
        }
        for (i, (forwarded, expected)) in cases.iter().enumerate() {
            let query = format!("session=s{i}");
            let logged = eventually(10, || async {
                log_records(&base, &query).await.is_ok_and(|r| r.len() == 1)
            })
            .await;
            ensure!(logged, "{:?}", log_records(&base, &query).await);
            let record = &log_records(&base, &query).await?[0];
            assert_eq!(record["client_ip"], *expected, "{forwarded:?}: {record}");
        }
    }
    // An admin change through the load balancer names the admin's address.
    let r = client
        .post(format!("{}/api/v1/prices", trusting.url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("x-forwarded-for", "198.51.100.20")
        .json(&json!({"model": "m", "input_per_mtok_usd": "1", "output_per_mtok_usd": "2"}))
        .send()
        .await?;
    assert!(r.status().is_success(), "{}", r.status());
    let (_, audit) = admin_at(
        &trusting.url(),
        "GET",
        "/api/v1/audit?action=price.set",
        None,
    )
    .await?;
    assert_eq!(audit["events"][0]["source_ip"], "198.51.100.20", "{audit}");
    // A block that is not one stops the node at start, naming the setting.
    let bad = Gateway::start("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").await;
    let e = format!("{:#}", bad.err().context("a bad block must stop the node")?);
    assert!(
        e.contains("server.trusted_proxies") && e.contains("10.0.0.0/33"),
        "{e}"
    );
    Ok(())
}

/// Text that does not compress: `n` bytes from a xorshift generator, as letters.
fn noise(seed: u64, n: usize) -> String {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

#[tokio::test]
async fn retention_and_the_disk_cap_drop_the_oldest_partitions() -> Result<()> {
    const CAP: u64 = 256 << 20;
    let dir = temp_dir("log-clock");
    std::fs::create_dir_all(&dir)?;
    let clock = dir.join("offset");
    std::fs::write(&clock, "0")?;
    let config = format!(
        "[logs]\ncontent = \"full\"\nretention = \"3d\"\ncontent_retention = \"1d\"\nmax_disk_bytes = {CAP}\n"
    );
    let gw = Gateway::start_with_env(
        &config,
        &[("TOLLGATE_TEST_CLOCK_FILE", clock.to_str().context("path")?)],
    )
    .await?;
    let (_, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    let client = http();
    let base = gw.url();
    let send = |text: String| {
        let body = serde_json::to_vec(&json!({"model": "m", "max_tokens": 8,
            "messages": [{"role": "user", "content": text}]}));
        let (client, base, secret) = (client.clone(), base.clone(), secret.clone());
        async move {
            messages_raw(&client, &base, &secret, body?)
                .await
                .map(|r| r.0)
        }
    };
    let has_body = |id: String| {
        let base = base.clone();
        async move {
            let (status, entry) = admin_at(&base, "GET", &format!("/api/v1/logs/{id}"), None)
                .await
                .ok()?;
            Some(status == 200 && entry["request_body"].is_string())
        }
    };
    let hour: i64 = 3_600_000;

    // Retention: bodies go after a day, records after three, whole partitions at a time.
    for i in 0..3 {
        assert_eq!(send(format!("old {i}")).await?, 200);
    }
    ensure!(
        eventually(10, || async {
            log_records(&base, "").await.is_ok_and(|r| r.len() == 3)
        })
        .await,
        "records written"
    );
    let old = log_records(&base, "").await?[0]["request_id"]
        .as_str()
        .context("id")?
        .to_owned();
    ensure!(has_body(old.clone()).await == Some(true), "body captured");
    std::fs::write(&clock, (31 * hour).to_string())?;
    let bodies_gone = eventually(30, || async { has_body(old.clone()).await == Some(false) }).await;
    ensure!(bodies_gone, "bodies past content retention still kept");
    ensure!(
        log_records(&base, "").await?.len() == 3,
        "records went with the bodies"
    );
    std::fs::write(&clock, (79 * hour).to_string())?;
    let records_gone = eventually(30, || async {
        log_records(&base, "").await.is_ok_and(|r| r.is_empty())
    })
    .await;
    ensure!(records_gone, "records past retention still listed");

    // The cap: 48 MB of bodies a partition, about 200 MB within the day bodies are kept
    // (partitions may use 128 MiB of the 256: the rest is the journal's).
    let mut offset = 79 * hour;
    let mut batches: Vec<Vec<String>> = Vec::new();
    let mut peak = 0u64;
    let mut written = 3;
    for batch in 0..4u64 {
        for i in 0..48u64 {
            assert_eq!(send(noise(batch * 100 + i + 1, 1 << 20)).await?, 200);
        }
        written += 48;
        // The writer has caught up before the disk is read.
        let caught_up = eventually(30, || async {
            gw.metric("tollgate_log_records_total")
                .await
                .is_ok_and(|n| n >= written)
        })
        .await;
        ensure!(caught_up, "batch {batch} not written");
        let ids: Vec<String> = log_records(&base, "")
            .await?
            .iter()
            .take(48)
            .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
            .collect();
        batches.push(ids);
        peak = peak.max(gw.metric("tollgate_log_disk_bytes").await?);
        // The next batch in the next partition (6 hours on).
        offset += 6 * hour;
        std::fs::write(&clock, offset.to_string())?;
    }
    let settled = eventually(30, || async {
        gw.metric("tollgate_log_disk_bytes")
            .await
            .is_ok_and(|b| b <= CAP)
    })
    .await;
    let disk = gw.metric("tollgate_log_disk_bytes").await?;
    let dropped = gw.metric("tollgate_log_dropped_partitions_total").await?;
    println!("disk {disk} bytes (peak seen {peak}), {dropped} partitions dropped for space");
    ensure!(settled, "the store is over its cap: {disk} > {CAP}");
    ensure!(dropped >= 1, "nothing dropped for space");
    // Past the cap by one write of the writer at most.
    ensure!(peak <= CAP + (8 << 20), "peak {peak}");
    // The bodies' records outlive them.
    ensure!(
        log_records(&base, "").await?.len() == 4 * 48,
        "records dropped with bodies"
    );
    // The oldest bodies went first; the newest are kept.
    for id in &batches[0] {
        ensure!(
            has_body(id.clone()).await != Some(true),
            "{id}'s body outlived newer ones"
        );
    }
    for id in &batches[3] {
        ensure!(
            has_body(id.clone()).await == Some(true),
            "{id}'s body dropped"
        );
    }
    Ok(())
}

/// `[[logs.exports]]`: every record reaches a JSON-lines webhook that refuses the first
/// deliveries (retried), a Splunk HEC and an Elasticsearch `_bulk` endpoint in their
/// formats, and a file rotated by size; a restart sends nothing twice that was taken.
#[tokio::test]
async fn exports_deliver_every_record_in_each_format() -> Result<()> {
    let sink = WebhookSink::start(2)?;
    let dir = temp_dir("export-file");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("requests.jsonl");
    let config = format!(
        r#"
[[logs.exports]]
name = "lines"
kind = "webhook"
url = "{lines}"
batch_max = 7

[[logs.exports]]
name = "splunk"
kind = "webhook"
url = "{hec}"
format = "splunk-hec"
token = "env:HEC_TOKEN"

[[logs.exports]]
name = "elastic"
kind = "webhook"
url = "{bulk}"
format = "elastic-bulk"

[[logs.exports]]
kind = "file"
path = "{file}"
max_file_bytes = 8192
keep_files = 20
batch_max = 5
"#,
        lines = sink.url("/lines/flaky"),
        hec = sink.url("/services/collector/event"),
        bulk = sink.url("/_bulk"),
        file = file.display(),
    );
    let mut gw = Gateway::start_with_env(&config, &[("HEC_TOKEN", "hec-secret-1")]).await?;
    let (_, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    let ask =
        json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..30 {
        let (status, _, _) = messages(&gw.url(), &secret, &ask).await?;
        ensure!(status == 200, "request refused");
    }
    let all_logged = eventually(10, || async {
        log_records(&gw.url(), "")
            .await
            .is_ok_and(|r| r.len() == 30)
    })
    .await;
    ensure!(all_logged, "records not written");
    let ids: std::collections::BTreeSet<String> = log_records(&gw.url(), "")
        .await?
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    ensure!(ids.len() == 30, "{} records", ids.len());
    // The ids each webhook path received.
    let received = |path: &'static str| {
        let mut seen = Vec::new();
        for post in sink.posts() {
            if post["path"] != path {
                continue;
            }
            for line in post["body"].as_str().unwrap_or("").lines() {
                let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                let id = v["request_id"]
                    .as_str()
                    .or(v["event"]["request_id"].as_str());
                if let Some(id) = id {
                    seen.push(id.to_owned());
                }
            }
        }
        seen
    };
    let file_ids = || -> Vec<String> {
        let mut seen = Vec::new();
        let mut paths = vec![file.clone()];
        paths.extend((1..=20).map(|n| dir.join(format!("requests.jsonl.{n}"))));
        for p in paths {
            for line in std::fs::read_to_string(p).unwrap_or_default().lines() {
                let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                if let Some(id) = v["request_id"].as_str() {
                    seen.push(id.to_owned());
                }
            }
        }
        seen
    };
    let all_in = eventually(30, || async {
        ["/lines/flaky", "/services/collector/event", "/_bulk"]
            .iter()
            .all(|p| received(p).len() >= 30)
            && file_ids().len() >= 30
    })
    .await;
    ensure!(
        all_in,
        "lines {} hec {} bulk {} file {}",
        received("/lines/flaky").len(),
        received("/services/collector/event").len(),
        received("/_bulk").len(),
        file_ids().len()
    );
    for path in ["/lines/flaky", "/services/collector/event", "/_bulk"] {
        let got: std::collections::BTreeSet<String> = received(path).into_iter().collect();
        ensure!(got == ids, "{path} got other records");
    }
    // In chain order, each exactly once (a refused delivery was sent again, whole).
    ensure!(received("/lines/flaky").len() == 30, "lines duplicated");
    let got: std::collections::BTreeSet<String> = file_ids().into_iter().collect();
    ensure!(got == ids, "the file got other records");
    ensure!(
        dir.join("requests.jsonl.1").exists(),
        "the file was never rotated"
    );
    for post in sink.posts() {
        match post["path"].as_str() {
            Some("/services/collector/event") => {
                ensure!(
                    post["headers"]["authorization"] == "Splunk hec-secret-1",
                    "{post}"
                )
            }
            Some("/_bulk") => {
                let first = post["body"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("");
                ensure!(first.contains("\"index\""), "{first}");
            }
            _ => {}
        }
    }
    let metrics = http()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains("tollgate_log_export_failures_total{sink=\"lines\"} 2"),
        "{metrics}"
    );
    ensure!(
        metrics.contains("tollgate_log_export_lag_records{sink=\"splunk\"} 0"),
        "{metrics}"
    );
    // A restart resumes after what was taken.
    gw.restart().await?;
    let (status, _, _) = messages(&gw.url(), &secret, &ask).await?;
    ensure!(status == 200, "request refused");
    let resumed = eventually(30, || async { received("/lines/flaky").len() >= 31 }).await;
    ensure!(resumed, "no delivery after the restart");
    ensure!(
        received("/lines/flaky").len() == 31,
        "records sent again after the restart"
    );
    Ok(())
}
