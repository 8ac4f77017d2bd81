//! Enforcement through a real gateway process and the fake upstream: revocation,
//! allowlists, budgets under concurrency, rate limits, fallback, streaming charges and
//! persistence across restarts.

use anyhow::Result;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tollgate_tests::*;

const MODEL: &str = "claude-sonnet-4-6";

fn ask(text: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]})
}

fn model_calls(fake: &FakeUpstream) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/messages") || p.ends_with("/chat/completions"))
        })
        .count()
}

/// Waits (briefly) until the fake has logged `n` model calls: it logs a stream when the
/// stream ends, a moment after the client read the last byte.
async fn wait_calls(fake: &FakeUpstream, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    while model_calls(fake) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    model_calls(fake)
}

/// Waits until the key's usage shows `n` requests (charges are applied asynchronously).
async fn wait_requests(gw: &Gateway, key: &str, n: u64) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = gw.usage(key).await?;
        if u["requests"].as_u64() == Some(n) || Instant::now() > deadline {
            return Ok(u);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn revoked_rotated_and_deleted_keys_are_refused_on_the_next_request() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (id, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    let (status, _, body) = messages(&gw.url(), &secret, &ask("ECHO:first")).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["content"][0]["text"], "first");

    let (s, _) = gw
        .admin(
            "PATCH",
            &format!("/api/v1/virtual-keys/{id}"),
            Some(json!({"disabled": true})),
        )
        .await?;
    assert_eq!(s, 200);
    let (status, headers, body) = messages(&gw.url(), &secret, &ask("ECHO:second")).await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("disabled"),
        "{body}"
    );
    assert_eq!(
        headers.get("x-should-retry").map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );

    gw.admin(
        "PATCH",
        &format!("/api/v1/virtual-keys/{id}"),
        Some(json!({"disabled": false})),
    )
    .await?;
    let (_, rotated) = gw
        .admin("POST", &format!("/api/v1/virtual-keys/{id}/rotate"), None)
        .await?;
    let new_secret = rotated["secret"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        messages(&gw.url(), &secret, &ask("x")).await?.0,
        401,
        "old secret after rotate"
    );
    assert_eq!(
        messages(&gw.url(), &new_secret, &ask("x")).await?.0,
        200,
        "new secret after rotate"
    );

    let (s, _) = gw
        .admin("DELETE", &format!("/api/v1/virtual-keys/{id}"), None)
        .await?;
    assert_eq!(s, 204);
    assert_eq!(
        messages(&gw.url(), &new_secret, &ask("x")).await?.0,
        401,
        "deleted key"
    );
    let (_, listed) = gw.admin("GET", "/api/v1/virtual-keys", None).await?;
    assert!(
        !listed.to_string().contains("tg-") || !listed.to_string().contains(&new_secret),
        "secret never listed"
    );
    Ok(())
}

#[tokio::test]
async fn model_outside_the_allowlist_is_refused_before_any_upstream_call() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    let (_, secret) = gw
        .key(json!([{"provider": "fake-anthropic", "allowed_models": [MODEL, "regex:^claude-haiku-"]}]))
        .await?;
    for model in ["claude-opus-4-1", "fake-openai/claude-sonnet-4-6", "gpt-4o"] {
        let body = json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
        let (status, headers, answer) = messages(&gw.url(), &secret, &body).await?;
        assert_eq!(status, 403, "{model}: {answer}");
        assert_eq!(answer["error"]["type"], "permission_error");
        assert_eq!(
            headers.get("x-should-retry").map(|v| v.as_bytes()),
            Some(&b"false"[..])
        );
    }
    assert_eq!(
        model_calls(&fake),
        0,
        "no upstream call for a refused model"
    );
    for model in [MODEL, "claude-haiku-4-5"] {
        let body = json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]});
        assert_eq!(messages(&gw.url(), &secret, &body).await?.0, 200, "{model}");
    }
    assert_eq!(wait_calls(&fake, 2).await, 2);
    // The fake requires the provider key: the gateway sent it, not the virtual key.
    let row = &fake.requests()[0];
    let headers = row["headers"].to_string();
    assert!(!headers.contains(&secret), "virtual key leaked upstream");
    Ok(())
}

#[tokio::test]
async fn concurrent_requests_cannot_overspend_a_budget() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    gw.price(MODEL, "50", "50").await?;
    let (id, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    let limit = 50_000u64; // $0.05
    let budget = gw
        .create("/api/v1/budgets", json!({"owner": {"kind": "virtual_key", "id": id}, "max_limit_usd": "0.05", "reset_duration": "1d"}))
        .await?;
    let body = ask("ECHO:spend");
    // The largest estimate: every body byte a token plus max_tokens, at $50/Mtok.
    let estimate = (serde_json::to_vec(&body)?.len() as u64).div_ceil(4) * 50 + 64 * 50;

    let mut workers = Vec::new();
    for _ in 0..50 {
        let url = gw.url();
        let secret = secret.clone();
        let body = body.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0u32, 0u32);
            for _ in 0..100 {
                match messages(&url, &secret, &body).await {
                    Ok((200, _, _)) => ok += 1,
                    Ok((402, _, _)) => {
                        refused += 1;
                        break;
                    }
                    Ok((status, _, b)) => panic!("unexpected {status}: {b}"),
                    Err(e) => panic!("request failed: {e}"),
                }
            }
            (ok, refused)
        }));
    }
    let mut admitted = 0u64;
    for w in workers {
        let (ok, refused) = w.await?;
        admitted += u64::from(ok);
        assert_eq!(refused, 1, "every worker ends on a 402");
    }
    let usage = wait_requests(&gw, &id, admitted).await?;
    let spent = micros(&usage["spent_usd"]);
    let budget_row = usage["budgets"]
        .as_array()
        .and_then(|b| b.first())
        .cloned()
        .unwrap_or_default();
    assert_eq!(budget_row["id"], budget["id"]);
    assert_eq!(micros(&budget_row["spent_usd"]), spent);
    println!("admitted {admitted}, spent {spent} µ$ of {limit}, estimate {estimate}");
    assert!(spent <= limit, "spent {spent} > limit {limit}");
    assert!(
        spent + 2 * estimate >= limit,
        "budget not drained: spent {spent}"
    );
    assert_eq!(
        wait_calls(&fake, admitted as usize).await as u64,
        admitted,
        "refused requests never reached upstream"
    );

    let (status, headers, answer) = messages(&gw.url(), &secret, &body).await?;
    assert_eq!(status, 402, "{answer}");
    assert_eq!(answer["error"]["type"], "billing_error");
    let message = answer["error"]["message"].as_str().unwrap_or("");
    let budget_id = budget["id"].as_str().unwrap_or("?");
    assert!(
        message.contains(budget_id) && message.contains("$0.05") && message.contains("resets at"),
        "{message}"
    );
    assert_eq!(
        headers.get("x-should-retry").map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );
    Ok(())
}

/// Claude Code's shape: a 50 KB prompt and `max_tokens: 128000`, whose worst case
/// ($0.04 of prompt and $1.92 of output at $3/$15 per Mtok) is more than a $1.00 budget.
fn claude_code_sized(text: &str) -> Value {
    json!({
        "model": MODEL,
        "max_tokens": 128_000,
        "system": "x".repeat(50_000),
        "messages": [{"role": "user", "content": text}],
    })
}

#[tokio::test]
async fn a_budget_smaller_than_the_worst_case_serves_with_a_lower_cap() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    gw.price(MODEL, "3", "15").await?;
    let (id, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    gw.daily_budget(&id, "1.00").await?;
    let body = claude_code_sized("hello");
    let (status, headers, answer) = messages(&gw.url(), &secret, &body).await?;
    assert_eq!(status, 200, "served from the first request: {answer}");
    // What $1.00 affords after the prompt: every four body bytes a token at 3 µ$, then
    // 15 µ$ an output token.
    let prompt = (serde_json::to_vec(&body)?.len() as u64).div_ceil(4);
    let cap = (1_000_000 - 3 * prompt) / 15;
    assert_eq!(wait_calls(&fake, 1).await, 1);
    let sent = fake
        .requests()
        .into_iter()
        .rfind(|r| r["path"] == "/v1/messages")
        .map(|r| r["body"]["max_tokens"].clone())
        .unwrap_or_default();
    assert_eq!(sent, json!(cap), "max_tokens sent upstream");
    assert_eq!(
        headers
            .get("x-tollgate-max-tokens")
            .and_then(|v| v.to_str().ok()),
        Some(cap.to_string().as_str()),
        "the client is told"
    );
    let usage = wait_requests(&gw, &id, 1).await?;
    let spent = micros(&usage["spent_usd"]);
    assert!(
        spent > 0 && spent < 100_000,
        "charged what was used: {spent} µ$"
    );

    // A thinking request keeps its thinking budget below the lowered cap.
    let mut thinking = claude_code_sized("think");
    thinking["thinking"] = json!({"type": "enabled", "budget_tokens": 100_000});
    let (status, _, answer) = messages(&gw.url(), &secret, &thinking).await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(wait_calls(&fake, 2).await, 2);
    let sent = fake
        .requests()
        .into_iter()
        .rfind(|r| r["path"] == "/v1/messages")
        .map(|r| r["body"].clone())
        .unwrap_or_default();
    let max_tokens = sent["max_tokens"].as_u64().unwrap_or(0);
    let budget_tokens = sent["thinking"]["budget_tokens"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        max_tokens < 128_000 && budget_tokens < max_tokens && budget_tokens >= 1024,
        "thinking {budget_tokens} within max_tokens {max_tokens}"
    );

    // Less left than the prompt alone costs: a 402 that says so, not "exhausted".
    let (small, small_secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    gw.daily_budget(&small, "0.01").await?;
    let (status, _, answer) = messages(&gw.url(), &small_secret, &body).await?;
    assert_eq!(status, 402, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("has $0.01") && message.contains("less than this request's minimum"),
        "{message}"
    );
    Ok(())
}

/// The same through the OpenAI dialect, to an OpenAI provider and translated to an
/// Anthropic one: the cap lands in the field the upstream reads.
#[tokio::test]
async fn a_lowered_cap_reaches_openai_and_translated_upstreams() -> Result<()> {
    let fake = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    gw.price("*", "3", "15").await?;
    let client = http();
    for (provider, path) in [
        ("fake-openai", "/v1/chat/completions"),
        ("fake-anthropic", "/v1/messages"),
    ] {
        let (id, secret) = gw.key(json!([{"provider": provider}])).await?;
        gw.daily_budget(&id, "0.10").await?;
        let before = fake.requests().len();
        let body = json!({
            "model": "gpt-test",
            "max_completion_tokens": 100_000,
            "messages": [{"role": "user", "content": "hello"}],
        });
        let r = client
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let lowered = r
            .headers()
            .get("x-tollgate-max-tokens")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let answer: Value = r.json().await?;
        assert_eq!(status, 200, "{provider}: {answer}");
        let cap = lowered.expect("x-tollgate-max-tokens");
        assert!(cap < 100_000 && cap > 6_000, "{provider}: cap {cap}");
        eventually(5, || async { fake.requests().len() > before }).await;
        let sent = fake
            .requests()
            .into_iter()
            .rfind(|r| r["path"] == path)
            .map(|r| r["body"].clone())
            .unwrap_or_default();
        let field = if path == "/v1/messages" {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        assert_eq!(sent[field], json!(cap), "{provider}: {sent}");
    }
    Ok(())
}

/// The answer the metered-stream tests ask the mock provider for: 48 KB in 16-byte
/// deltas, as a model streams, 12 000 tokens: $0.18 at $15 per million.
const LONG_TOKENS: u64 = 12_000;

/// The mock provider as `fake-anthropic` and `fake-openai`.
fn mock_config(mock: &MockUpstream) -> String {
    format!(
        "[[providers]]\nname = \"fake-anthropic\"\nkind = \"anthropic\"\nbase_url = \"{base}\"\n\n\
         [[providers]]\nname = \"fake-openai\"\nkind = \"openai\"\nbase_url = \"{base}/v1\"\n",
        base = mock.base_url()
    )
}

/// A streamed Messages request with `max_tokens: 128000`; the answer's status, headers
/// and the data of every event, each of which must be JSON.
async fn stream_events(
    url: &str,
    secret: &str,
) -> Result<(u16, reqwest::header::HeaderMap, Vec<Value>)> {
    let body = json!({"model": MODEL, "max_tokens": 128_000, "stream": true,
        "messages": [{"role": "user", "content": format!("write at length: LONG:{LONG_TOKENS}")}]});
    let r = http()
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", secret)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await?;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await?;
    let mut events = Vec::new();
    for frame in text.split("\n\n").filter(|f| !f.trim().is_empty()) {
        let data: String = frame
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect::<Vec<_>>()
            .join("\n");
        events.push(
            serde_json::from_str::<Value>(&data)
                .map_err(|e| anyhow::anyhow!("event not JSON ({e}): {frame:.200}"))?,
        );
    }
    Ok((status, headers, events))
}

/// A stream reserves its expected output, not `max_tokens`, and its reservation grows
/// with its output; when the budget can give no more, it ends as a length stop, charged
/// within the limit (the answer costs $0.18: it must be cut within $0.10, whatever the
/// gateway learned of how its text counts). With room enough it runs to its end, charged
/// what the provider reported.
#[tokio::test]
async fn a_stream_is_metered_and_ends_as_a_length_stop_at_the_limit() -> Result<()> {
    let mock = MockUpstream::start(0).await?;
    let gw = Gateway::start(&mock_config(&mock)).await?;
    gw.price(MODEL, "3", "15").await?;
    // Relayed, and translated from an OpenAI provider.
    for (provider, limit, cut) in [
        ("fake-anthropic", "0.10", true),
        ("fake-anthropic", "10.00", false),
        ("fake-openai", "0.10", true),
    ] {
        let (id, secret) = gw.key(json!([{"provider": provider}])).await?;
        gw.daily_budget(&id, limit).await?;
        let (status, headers, events) = stream_events(&gw.url(), &secret).await?;
        assert_eq!(status, 200, "{provider} ${limit}: {events:?}");
        assert!(
            headers.get("x-tollgate-max-tokens").is_none(),
            "{provider} ${limit}: reserved its expected output, not lowered"
        );
        let stop = events
            .iter()
            .rev()
            .find(|e| e["type"] == "message_delta")
            .map(|e| e["delta"]["stop_reason"].clone())
            .unwrap_or_default();
        assert_eq!(
            events.last().map(|e| e["type"].clone()),
            Some(json!("message_stop"))
        );
        let usage = wait_requests(&gw, &id, 1).await?;
        let spent = micros(&usage["spent_usd"]);
        println!(
            "{provider} ${limit}: stop {stop}, {} events, spent {spent} µ$",
            events.len()
        );
        if cut {
            assert_eq!(stop, json!("max_tokens"), "ended as a length stop");
            assert!(spent > 0 && spent <= 100_000, "spent {spent} µ$ of $0.10");
        } else {
            assert_eq!(stop, json!("end_turn"), "ran to its end");
            // What the provider reported: 12 000-odd output tokens at 15 µ$.
            assert!(spent > 150_000, "charged the reported usage: {spent} µ$");
        }
    }
    Ok(())
}

/// The same for an OpenAI stream to an OpenAI provider: a cut ends with
/// `finish_reason: "length"`, the usage chunk the client asked for, and `[DONE]`.
#[tokio::test]
async fn an_openai_stream_is_metered_and_ends_with_finish_reason_length() -> Result<()> {
    let mock = MockUpstream::start(0).await?;
    let gw = Gateway::start(&mock_config(&mock)).await?;
    gw.price("*", "3", "15").await?;
    // Relayed, and translated from an Anthropic provider.
    for (provider, limit, cut) in [
        ("fake-openai", "0.10", true),
        ("fake-openai", "10.00", false),
        ("fake-anthropic", "0.10", true),
    ] {
        let (id, secret) = gw.key(json!([{"provider": provider}])).await?;
        gw.daily_budget(&id, limit).await?;
        let body = json!({"model": "gpt-test", "max_completion_tokens": 100_000, "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": format!("write at length: LONG:{LONG_TOKENS}")}]});
        let r = http()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(&secret)
            .json(&body)
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 200, "${limit}");
        assert!(
            r.headers().get("x-tollgate-max-tokens").is_none(),
            "{provider} ${limit}: not lowered"
        );
        let text = r.text().await?;
        let data: Vec<&str> = text
            .split("\n\n")
            .filter_map(|f| f.trim().strip_prefix("data: "))
            .collect();
        assert_eq!(data.last(), Some(&"[DONE]"), "${limit}");
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d))
            .collect::<Result<_, _>>()?;
        let finish = chunks
            .iter()
            .rev()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str())
            .unwrap_or("")
            .to_owned();
        let reported = chunks
            .iter()
            .rev()
            .find(|c| c["usage"].is_object())
            .cloned();
        let usage = wait_requests(&gw, &id, 1).await?;
        let spent = micros(&usage["spent_usd"]);
        println!(
            "{provider} ${limit}: finish {finish}, {} chunks, spent {spent} µ$",
            chunks.len()
        );
        assert!(
            reported.is_some(),
            "{provider} ${limit}: the usage chunk the client asked for"
        );
        if cut {
            assert_eq!(finish, "length");
            assert!(spent > 0 && spent <= 100_000, "spent {spent} µ$ of $0.10");
        } else {
            assert_eq!(finish, "stop");
            assert!(spent > 150_000, "charged the reported usage: {spent} µ$");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_model_without_a_price_cannot_spend_a_budget() -> Result<()> {
    let gw = Gateway::start("").await?;
    let (id, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    assert_eq!(
        messages(&gw.url(), &secret, &ask("x")).await?.0,
        200,
        "no budget: no price needed"
    );
    gw.create("/api/v1/budgets", json!({"owner": {"kind": "virtual_key", "id": id}, "max_limit_usd": "1", "reset_duration": "1M"})).await?;
    let (status, _, body) = messages(&gw.url(), &secret, &ask("x")).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no price"),
        "{body}"
    );
    gw.price("*", "1", "2").await?;
    assert_eq!(
        messages(&gw.url(), &secret, &ask("x")).await?.0,
        200,
        "default price applies"
    );
    Ok(())
}

#[tokio::test]
async fn a_rate_limit_of_n_per_minute_admits_exactly_n() -> Result<()> {
    // Stay clear of a minute boundary, where the window (rightly) starts over: the node's
    // clock (a test hook) starts a second into a minute, so the test has 59 s of it.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let offset_ms = (61_000 - now_ms % 60_000).to_string();
    let gw = Gateway::start_with_env("", &[("TOLLGATE_TEST_CLOCK_OFFSET_MS", &offset_ms)]).await?;
    let (id, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    gw.create("/api/v1/rate-limits", json!({"owner": {"kind": "virtual_key", "id": id}, "request_max": 10, "request_window": "1m"})).await?;
    let mut tasks = Vec::new();
    for i in 0..25 {
        let (url, secret) = (gw.url(), secret.clone());
        tasks.push(tokio::spawn(async move {
            messages(&url, &secret, &ask(&format!("ECHO:r{i}"))).await
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (status, headers, body) = t.await??;
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(body["error"]["type"], "rate_limit_error");
                let retry_after: u64 = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
            }
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert_eq!((ok, limited), (10, 15));
    Ok(())
}

/// A config with two Anthropic providers on two fakes, for fallback.
fn two_fakes(a: &FakeUpstream, b: &FakeUpstream) -> String {
    format!(
        "[[providers]]\nname = \"primary\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"env:TEST_UPSTREAM_KEY\"\n\n\
         [[providers]]\nname = \"secondary\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"env:TEST_UPSTREAM_KEY\"\n",
        a.base_url(),
        b.base_url()
    )
}

#[tokio::test]
async fn failing_provider_falls_back_to_the_next_config_before_the_first_byte() -> Result<()> {
    let primary = FakeUpstream::start(&["--fail-status", "503", "--fail-count", "-1"])?;
    let secondary = FakeUpstream::start(&[])?;
    let gw = Gateway::start(&two_fakes(&primary, &secondary)).await?;
    let (id, secret) = gw.key(json!([{"provider": "primary", "weight": 1000}, {"provider": "secondary", "weight": 0.001}])).await?;
    for stream in [false, true] {
        let mut body = ask("ECHO:fallback");
        body["stream"] = json!(stream);
        let (status, _, answer) = messages(&gw.url(), &secret, &body).await?;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(
        wait_calls(&primary, 2).await,
        2,
        "primary tried once per request"
    );
    assert_eq!(wait_calls(&secondary, 2).await, 2, "secondary served both");
    let metrics = http()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await?
        .text()
        .await?;
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(value("tollgate_upstream_failures_total"), 2, "{metrics}");
    assert!(
        value("tollgate_responses_total{class=\"2xx\"}") >= 2,
        "{metrics}"
    );
    wait_requests(&gw, &id, 2).await?;

    // With only a failing provider the client gets the upstream failure, not a hang.
    primary
        .configure(json!({"fail_status": 429, "fail_count": -1, "retry_after": "7"}))
        .await?;
    let (_, only_primary) = gw.key(json!([{"provider": "primary"}])).await?;
    let (status, headers, answer) = messages(&gw.url(), &only_primary, &ask("x")).await?;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    primary
        .configure(json!({"fail_status": 500, "fail_count": -1}))
        .await?;
    let (status, _, answer) = messages(&gw.url(), &only_primary, &ask("x")).await?;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["type"], "api_error");
    Ok(())
}

#[tokio::test]
async fn streams_are_relayed_as_they_come_and_a_disconnect_is_charged() -> Result<()> {
    let fake = FakeUpstream::start(&["--stream-delay", "0.4"])?;
    let gw = Gateway::start(&fake_config(&fake)).await?;
    gw.price(MODEL, "3", "15").await?;
    let (id, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    let mut body = ask("ECHO:streaming");
    body["stream"] = json!(true);

    // Full stream: the first event arrives long before the upstream finishes.
    let started = Instant::now();
    let mut resp = http()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", &secret)
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await?.unwrap_or_default();
    let first_at = started.elapsed();
    let mut all = first.to_vec();
    while let Some(c) = resp.chunk().await? {
        all.extend_from_slice(&c);
    }
    let total = started.elapsed();
    let text = String::from_utf8_lossy(&all);
    assert!(
        String::from_utf8_lossy(&first).starts_with("event: message_start"),
        "{text}"
    );
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(
        first_at * 3 < total,
        "first byte after {first_at:?} of {total:?}: buffered?"
    );

    // Disconnect after the first event: still charged for what was used.
    let mut resp = http()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", &secret)
        .json(&body)
        .send()
        .await?;
    let _ = resp.chunk().await?;
    drop(resp);
    let usage = wait_requests(&gw, &id, 2).await?;
    assert_eq!(usage["requests"], 2, "{usage}");
    assert!(usage["input_tokens"].as_u64().unwrap_or(0) > 0, "{usage}");
    assert!(micros(&usage["spent_usd"]) > 0, "{usage}");
    Ok(())
}

#[tokio::test]
async fn spend_survives_restart_and_crash() -> Result<()> {
    let gw_config = "";
    let mut gw = Gateway::start(gw_config).await?;
    gw.price(MODEL, "3", "15").await?;
    let (id, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    gw.create("/api/v1/budgets", json!({"owner": {"kind": "virtual_key", "id": id}, "max_limit_usd": "10", "reset_duration": "1d"})).await?;
    for i in 0..5 {
        assert_eq!(
            messages(&gw.url(), &secret, &ask(&format!("ECHO:p{i}")))
                .await?
                .0,
            200
        );
    }
    // What must survive: the ledger, not the holds of requests just finished.
    let durable = |u: Value| {
        json!([
            u["requests"],
            u["spent_usd"],
            u["input_tokens"],
            u["budgets"][0]["spent_usd"]
        ])
    };
    let before = durable(wait_requests(&gw, &id, 5).await?);
    assert_eq!(before[0], 5);
    gw.restart().await?;
    assert_eq!(durable(gw.usage(&id).await?), before, "graceful restart");
    gw.kill();
    gw.restart().await?;
    assert_eq!(
        durable(gw.usage(&id).await?),
        before,
        "crash after the charges were applied"
    );
    assert_eq!(
        messages(&gw.url(), &secret, &ask("ECHO:after")).await?.0,
        200,
        "key still valid"
    );
    Ok(())
}

#[tokio::test]
async fn token_limits_count_used_tokens() -> Result<()> {
    let gw = Gateway::start("").await?;
    let (id, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    gw.create(
        "/api/v1/rate-limits",
        json!({"owner": {"kind": "virtual_key", "id": id}, "token_max": 30, "token_window": "1h"}),
    )
    .await?;
    let mut ok = 0;
    let mut used = 0;
    for i in 0..20 {
        let (status, _, body) = messages(&gw.url(), &secret, &ask(&format!("ECHO:t{i}"))).await?;
        match status {
            200 => {
                ok += 1;
                used += body["usage"]["input_tokens"].as_u64().unwrap_or(0)
                    + body["usage"]["output_tokens"].as_u64().unwrap_or(0);
            }
            429 => {
                assert_eq!(body["error"]["type"], "rate_limit_error");
                assert!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("tokens"),
                    "{body}"
                );
                break;
            }
            s => panic!("unexpected {s}: {body}"),
        }
    }
    // Requests are admitted while the window has room, so the last one may cross it.
    assert!(ok > 0 && ok < 20, "admitted {ok}");
    assert!(used >= 30, "refused after {used} tokens");
    Ok(())
}

#[tokio::test]
async fn a_provider_that_does_not_answer_in_time_gives_504() -> Result<()> {
    let port = free_port();
    let mut mock = std::process::Command::new(bench_bin())
        .args([
            "mock-upstream",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--latency-ms",
            "3000",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let config = format!(
        "[limits]\nupstream_response_timeout_ms = 300\nmax_attempts = 1\n\n\
         [[providers]]\nname = \"slow\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:{port}\"\n"
    );
    let gw = Gateway::start(&config).await?;
    let (_, secret) = gw.key(json!([{"provider": "slow"}])).await?;
    let listening = eventually(10, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(listening, "the slow mock upstream listens");
    let (status, _, body) = messages(&gw.url(), &secret, &ask("x")).await?;
    let _ = mock.kill();
    let _ = mock.wait();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["type"], "api_error");
    Ok(())
}

/// Starts a streamed request and reads its first chunk.
async fn stream_started(
    gw: &Gateway,
    secret: &str,
    text: &str,
) -> Result<(reqwest::Response, Vec<u8>)> {
    let mut body = ask(text);
    body["stream"] = json!(true);
    let mut resp = http()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", secret)
        .json(&body)
        .send()
        .await?;
    let first = resp.chunk().await?.unwrap_or_default().to_vec();
    Ok((resp, first))
}

#[tokio::test]
async fn sigterm_lets_a_stream_in_flight_finish_and_keeps_its_charge() -> Result<()> {
    let fake = FakeUpstream::start(&["--stream-delay", "0.3"])?;
    let mut gw = Gateway::start(&fake_config(&fake)).await?;
    let (id, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    let (mut resp, mut all) = stream_started(&gw, &secret, "ECHO:draining").await?;
    gw.signal_term();
    let not_ready = eventually(5, || async {
        let ready = http()
            .get(format!("{}/health/ready", gw.url()))
            .send()
            .await;
        ready.map(|r| r.status() != 200).unwrap_or(true)
    })
    .await;
    assert!(not_ready, "a draining node is not ready");
    while let Some(c) = resp.chunk().await? {
        all.extend_from_slice(&c);
    }
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.contains("event: message_stop") && text.matches("text_delta").count() >= 4,
        "{text}"
    );
    assert!(
        gw.wait_exited(10).await,
        "node exits once the stream is done"
    );
    gw.restart().await?;
    assert_eq!(
        gw.usage(&id).await?["requests"],
        1,
        "the drained stream's charge was applied before exit"
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_longer_than_the_drain_timeout_is_cut_and_charged() -> Result<()> {
    // About a second between events: the stream outlasts the 500 ms drain timeout.
    let fake = FakeUpstream::start(&["--stream-delay", "1.0"])?;
    let config = format!(
        "[limits]\ndrain_grace_ms = 100\ndrain_timeout_ms = 500\n\n{}",
        fake_config(&fake)
    );
    let mut gw = Gateway::start(&config).await?;
    let (id, secret) = gw.key(json!([{"provider": "fake-anthropic"}])).await?;
    let (mut resp, mut all) = stream_started(&gw, &secret, "ECHO:cut by the drain timeout").await?;
    let sent = Instant::now();
    gw.signal_term();
    while let Ok(Some(c)) = resp.chunk().await {
        all.extend_from_slice(&c);
    }
    let cut_after = sent.elapsed();
    let text = String::from_utf8_lossy(&all);
    assert!(!text.contains("event: message_stop"), "not cut: {text}");
    assert!(
        cut_after < Duration::from_secs(3),
        "cut {cut_after:?} after SIGTERM"
    );
    assert!(
        gw.wait_exited(10).await,
        "node exits once the stream is cut"
    );
    let log = std::fs::read_to_string(gw.data_dir.with_extension("log"))?;
    assert!(log.contains("cutting open streams"), "{log}");
    assert!(!log.contains("requests still open after the cut"), "{log}");
    gw.restart().await?;
    assert_eq!(
        gw.usage(&id).await?["requests"],
        1,
        "the cut stream was charged before exit"
    );
    Ok(())
}

#[tokio::test]
async fn patching_a_keys_provider_configs_keeps_their_budgets() -> Result<()> {
    let gw = Gateway::start("").await?;
    let key = gw
        .create(
            "/api/v1/virtual-keys",
            json!({"name": "k", "provider_configs": [{"provider": "mock"}]}),
        )
        .await?;
    let (id, pc) = (
        key["id"].as_str().unwrap_or_default(),
        key["provider_configs"][0]["id"]
            .as_str()
            .unwrap_or_default(),
    );
    let budget = gw
        .create("/api/v1/budgets", json!({"owner": {"kind": "provider_config", "id": pc}, "max_limit_usd": "2", "reset_duration": "1d"}))
        .await?;
    let patch = json!({"provider_configs": [{"provider": "mock", "weight": 2.0, "allowed_models": ["regex:^claude-"]}]});
    let (status, patched) = gw
        .admin("PATCH", &format!("/api/v1/virtual-keys/{id}"), Some(patch))
        .await?;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["provider_configs"][0]["id"], pc,
        "same provider keeps its config id"
    );
    let (status, _) = gw
        .admin(
            "GET",
            &format!(
                "/api/v1/budgets/{}",
                budget["id"].as_str().unwrap_or_default()
            ),
            None,
        )
        .await?;
    assert_eq!(
        status, 200,
        "the provider config's budget survives the PATCH"
    );
    Ok(())
}

#[tokio::test]
async fn a_crash_between_answer_and_commit_loses_no_charge() -> Result<()> {
    // The hook holds every proposal for 5 s: answered charges sit in the outbox only.
    let mut gw = Gateway::start_with_env("", &[("TOLLGATE_TEST_PROPOSE_DELAY_MS", "5000")]).await?;
    gw.price(MODEL, "3", "15").await?;
    let (id, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    for i in 0..3 {
        assert_eq!(
            messages(&gw.url(), &secret, &ask(&format!("ECHO:c{i}")))
                .await?
                .0,
            200
        );
    }
    // Answered means written to the outbox; the hook keeps them from being proposed.
    let pending = eventually(10, || async {
        gw.metric("tollgate_outbox_pending").await.ok() == Some(3)
    })
    .await;
    assert!(pending, "three answered charges in the outbox");
    assert_eq!(gw.usage(&id).await?["requests"], 0, "not committed yet");
    gw.kill();
    gw.set_env(&[]);
    gw.restart().await?;
    let usage = wait_requests(&gw, &id, 3).await?;
    assert_eq!(
        usage["requests"], 3,
        "every answered charge replayed from the outbox: {usage}"
    );
    assert!(micros(&usage["spent_usd"]) > 0);
    // A second restart replays nothing twice: once the outbox holds nothing unapplied
    // (a replay would sit there until applied), the count is still three.
    gw.restart().await?;
    let settled = eventually(10, || async {
        gw.metric("tollgate_outbox_pending").await.ok() == Some(0)
    })
    .await;
    assert!(settled, "the outbox settles after the restart");
    assert_eq!(gw.usage(&id).await?["requests"], 3);
    Ok(())
}
