//! Bedrock (issue 21) through real processes: a fake Bedrock that recomputes every
//! request's SigV4 signature with botocore and streams real event-stream frames, reached
//! by both dialects, by the real Claude Code CLI, and as the failover of an Anthropic
//! provider that answers 529, whose breaker opens, or whose budget runs out.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tollgate_tests::*;

const MODEL: &str = "claude-sonnet-4-5-20250929";
/// What `MODEL` is sent to Bedrock as, with `inference_profile = "us"`.
const MODEL_PATH: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1%3A0";

async fn post(gw: &Gateway, path: &str, secret: &str, body: Value) -> Result<(u16, String)> {
    let resp = http()
        .post(format!("{}{path}", gw.url()))
        .bearer_auth(secret)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&body)
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

fn ask(text: &str, stream: bool) -> Value {
    json!({"model": MODEL, "max_tokens": 64, "stream": stream,
           "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn bedrock_serves_both_dialects_signed_streamed_with_tools_and_usage() -> Result<()> {
    let bedrock = FakeBedrock::start(&[])?;
    let gw = Gateway::start_with_env(&bedrock_provider(&bedrock), BEDROCK_ENV).await?;
    let (key_id, secret) = gw
        .key(json!([{"provider": "bedrock-us", "allowed_models": ["regex:^claude-"]}]))
        .await?;

    // A JSON answer: the model in the path, the body as Bedrock takes it, signed.
    let (status, body) = post(
        &gw,
        "/anthropic/v1/messages",
        &secret,
        ask("ECHO:from-bedrock", false),
    )
    .await?;
    ensure!(status == 200, "{status} {body}");
    let answer: Value = serde_json::from_str(&body)?;
    ensure!(answer["content"][0]["text"] == "from-bedrock", "{answer}");
    let seen = bedrock.requests();
    let first = seen.first().context("the fake Bedrock saw the request")?;
    ensure!(
        first["path"] == format!("/model/{MODEL_PATH}/invoke"),
        "{first}"
    );
    ensure!(
        first["auth"] == "sigv4" && first["status"] == 200,
        "{first}"
    );
    ensure!(
        first["body"]["anthropic_beta"] == json!(["interleaved-thinking-2025-05-14"]),
        "{first}"
    );
    ensure!(first["body"].get("model").is_none() && first["body"].get("stream").is_none());
    ensure!(first["headers"]["x-amz-security-token"] == BEDROCK_SESSION_TOKEN);

    // A stream with a tool call, from event-stream frames back to Anthropic SSE.
    let (status, sse) = post(
        &gw,
        "/anthropic/v1/messages",
        &secret,
        ask("RUN_BASH:echo hi", true),
    )
    .await?;
    ensure!(status == 200, "{status} {sse}");
    for part in [
        "event: message_start",
        "tool_use",
        "Bash",
        "input_json_delta",
        "event: message_stop",
    ] {
        ensure!(sse.contains(part), "no {part} in {sse}");
    }
    ensure!(bedrock
        .requests()
        .iter()
        .any(|r| r["path"] == format!("/model/{MODEL_PATH}/invoke-with-response-stream")));

    // The OpenAI dialect, translated to Anthropic's and streamed back as chunks.
    let (status, sse) = post(
        &gw,
        "/v1/chat/completions",
        &secret,
        json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "ECHO:via-openai"}]}),
    )
    .await?;
    let text: String = sse
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.strip_prefix("data: ")?).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    ensure!(
        status == 200 && text == "via-openai" && sse.contains("[DONE]"),
        "{status} {sse}"
    );

    // Usage counted from Bedrock's answers.
    // Charges reach the ledger a moment after the answers.
    eventually(10, || async {
        gw.usage(&key_id).await.is_ok_and(|u| u["requests"] == 3)
    })
    .await;
    let usage = gw.usage(&key_id).await?;
    ensure!(usage["requests"] == 3, "{usage}");
    ensure!(
        usage["input_tokens"].as_u64().unwrap_or(0) > 0
            && usage["output_tokens"].as_u64().unwrap_or(0) > 0,
        "{usage}"
    );

    // Bedrock's errors in the caller's dialect: a refused request is a 400 naming
    // Bedrock's exception; throttling is a 429.
    bedrock.fail(400, 1).await?;
    let (status, body) = post(&gw, "/anthropic/v1/messages", &secret, ask("hello", false)).await?;
    ensure!(
        status == 400
            && body.contains("invalid_request_error")
            && body.contains("ValidationException"),
        "{status} {body}"
    );
    bedrock.fail(429, 10).await?;
    let (status, body) = post(&gw, "/anthropic/v1/messages", &secret, ask("hello", false)).await?;
    ensure!(
        status == 429 && body.contains("rate_limit_error"),
        "{status} {body}"
    );
    bedrock.fail(429, 0).await?;
    Ok(())
}

#[tokio::test]
async fn bedrock_takes_an_api_key_and_refuses_a_wrong_signature() -> Result<()> {
    // A Bedrock API key, sent as a bearer token.
    let keyed = FakeBedrock::start(&["--api-key", "bedrock-api-key-123"])?;
    let config = format!(
        "[[providers]]\nname = \"bedrock-key\"\nkind = \"bedrock\"\nregion = \"us-east-1\"\nbase_url = \"{}\"\napi_key = \"env:TEST_BEDROCK_API_KEY\"\n",
        keyed.base_url()
    );
    let gw = Gateway::start_with_env(&config, &[("TEST_BEDROCK_API_KEY", "bedrock-api-key-123")])
        .await?;
    let (_, secret) = gw.key(json!([{"provider": "bedrock-key"}])).await?;
    let (status, body) = post(
        &gw,
        "/anthropic/v1/messages",
        &secret,
        ask("ECHO:keyed", false),
    )
    .await?;
    ensure!(status == 200 && body.contains("keyed"), "{status} {body}");
    let seen = keyed.requests();
    ensure!(
        seen[0]["auth"] == "bearer"
            && seen[0]["path"] == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
        "{seen:?}"
    );

    // A model pinned to the Bedrock kind, by its Bedrock id, goes as it is.
    let pinned = json!({"model": "bedrock/global.anthropic.claude-sonnet-4-6", "max_tokens": 16,
                        "messages": [{"role": "user", "content": "ECHO:pinned"}]});
    let (status, body) = post(&gw, "/anthropic/v1/messages", &secret, pinned).await?;
    ensure!(status == 200 && body.contains("pinned"), "{status} {body}");
    let last = keyed.requests().pop().context("a request")?;
    ensure!(
        last["path"] == "/model/global.anthropic.claude-sonnet-4-6/invoke",
        "{last}"
    );

    // A wrong secret: botocore's signature differs, the fake refuses, the client is told
    // the gateway's credentials were refused (and never sees them).
    let bedrock = FakeBedrock::start(&[])?;
    let env = [
        ("TEST_BEDROCK_AKID", BEDROCK_ACCESS_KEY),
        ("TEST_BEDROCK_SECRET", "not-the-secret"),
        ("TEST_BEDROCK_TOKEN", BEDROCK_SESSION_TOKEN),
    ];
    let gw = Gateway::start_with_env(&bedrock_provider(&bedrock), &env).await?;
    let (_, secret) = gw.key(json!([{"provider": "bedrock-us"}])).await?;
    let (status, body) = post(&gw, "/anthropic/v1/messages", &secret, ask("hello", false)).await?;
    ensure!(
        status == 502
            && body.contains("refused the gateway's credentials")
            && !body.contains("not-the-secret"),
        "{status} {body}"
    );
    ensure!(
        bedrock.requests().iter().all(|r| r["status"] == 403),
        "{:?}",
        bedrock.requests()
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_fails_over_to_bedrock_on_529_open_breaker_and_spent_budget() -> Result<()> {
    let anthropic = FakeUpstream::start(&[])?;
    let bedrock = FakeBedrock::start(&[])?;
    let config = format!(
        "[breaker]\nconsecutive_failures = 2\nopen_ms = 600000\n\n[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"env:TEST_UPSTREAM_KEY\"\n{}",
        anthropic.base_url(),
        bedrock_provider(&bedrock)
    );
    let gw = Gateway::start_with_env(&config, BEDROCK_ENV).await?;
    gw.price("*", "3", "15").await?;
    // Anthropic first for every request (the pick goes by weight), Bedrock behind it.
    let key = |name: &str| {
        json!({"name": name, "provider_configs": [
            {"provider": "anthropic", "weight": 1000},
            {"provider": "bedrock-us", "weight": 0.001}]})
    };

    // 529 (overloaded): the two requests it hits are answered by Bedrock, and charged
    // to the Bedrock provider config, not to Anthropic's.
    let overloaded = gw.create("/api/v1/virtual-keys", key("overloaded")).await?;
    let secret = overloaded["secret"].as_str().unwrap_or_default();
    let mut budget_of = std::collections::BTreeMap::new();
    for provider in ["anthropic", "bedrock-us"] {
        let pc = provider_config_id(&overloaded, provider)?;
        let b = gw
            .create("/api/v1/budgets", json!({"owner": {"kind": "provider_config", "id": pc}, "max_limit_usd": "100", "reset_duration": "1d"}))
            .await?;
        budget_of.insert(provider, b["id"].as_str().unwrap_or_default().to_owned());
    }
    anthropic
        .configure(json!({"fail_status": 529, "fail_count": 2}))
        .await?;
    for n in 0..2 {
        let (status, body) = post(
            &gw,
            "/anthropic/v1/messages",
            secret,
            ask(&format!("ECHO:o{n}"), false),
        )
        .await?;
        ensure!(
            status == 200 && body.contains(&format!("o{n}")),
            "{status} {body}"
        );
    }
    ensure!(bedrock.requests().len() == 2, "{:?}", bedrock.requests());
    let spent = |id: String| {
        let gw = &gw;
        async move {
            let (_, b) = gw
                .admin("GET", &format!("/api/v1/budgets/{id}"), None)
                .await?;
            Ok::<f64, anyhow::Error>(
                b["spent_usd"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1.0),
            )
        }
    };
    // Charges reach the ledger a moment after the answers.
    let bedrock_budget = budget_of["bedrock-us"].clone();
    eventually(10, || async {
        spent(bedrock_budget.clone()).await.is_ok_and(|s| s > 0.0)
    })
    .await;
    let on_bedrock = spent(bedrock_budget.clone()).await?;
    let on_anthropic = spent(budget_of["anthropic"].clone()).await?;
    ensure!(
        on_bedrock > 0.0 && on_anthropic == 0.0,
        "bedrock {on_bedrock}, anthropic {on_anthropic}"
    );

    // An open breaker: after two failures Anthropic is not tried at all.
    let broken = gw.create("/api/v1/virtual-keys", key("broken")).await?;
    let secret = broken["secret"].as_str().unwrap_or_default();
    anthropic
        .configure(json!({"fail_status": 529, "fail_count": -1}))
        .await?;
    let tried_before = anthropic.requests().len();
    for n in 0..6 {
        let (status, body) = post(
            &gw,
            "/anthropic/v1/messages",
            secret,
            ask(&format!("ECHO:b{n}"), true),
        )
        .await?;
        ensure!(
            status == 200 && body.contains(&format!("b{n}")) && !body.contains("event: error"),
            "{status} {body}"
        );
    }
    let tried = anthropic.requests().len() - tried_before;
    ensure!(
        tried == 2,
        "Anthropic was tried {tried} times, not 2, with its breaker open"
    );
    anthropic
        .configure(json!({"fail_status": 529, "fail_count": 0}))
        .await?;

    // A spent provider-config budget: Anthropic answers until its budget is spent,
    // Bedrock after, and no request fails. Each request costs about $0.00016.
    let capped = gw.create("/api/v1/virtual-keys", key("capped")).await?;
    let secret = capped["secret"].as_str().unwrap_or_default();
    let pc = provider_config_id(&capped, "anthropic")?;
    gw.create("/api/v1/budgets", json!({"owner": {"kind": "provider_config", "id": pc}, "max_limit_usd": "0.0005", "reset_duration": "1d"}))
        .await?;
    let before = bedrock.requests().len();
    for n in 0..8 {
        let (status, body) = post(
            &gw,
            "/anthropic/v1/messages",
            secret,
            ask(&format!("ECHO:c{n}"), false),
        )
        .await?;
        ensure!(
            status == 200 && body.contains(&format!("c{n}")),
            "{status} {body}"
        );
    }
    let on_bedrock = bedrock.requests().len() - before;
    let (_, budgets) = gw.admin("GET", "/api/v1/budgets", None).await?;
    ensure!(
        (1..8).contains(&on_bedrock),
        "{on_bedrock} of 8 went to Bedrock; budgets {budgets}"
    );
    Ok(())
}

#[tokio::test]
async fn claude_code_runs_a_tool_through_a_bedrock_upstream() -> Result<()> {
    let bedrock = FakeBedrock::start(&[])?;
    let gw = Gateway::start_with_env(&bedrock_provider(&bedrock), BEDROCK_ENV).await?;
    let (_, secret) = gw
        .key(json!([{"provider": "bedrock-us", "allowed_models": ["regex:^claude-"]}]))
        .await?;
    claude_code(
        &gw.url(),
        &secret,
        &[
            "--prompt",
            "RUN_BASH:echo bedrock-cc",
            "--expect",
            "TOOL_RESULT:bedrock-cc",
            "--arg",
            "--allowedTools",
            "--arg",
            "Bash",
        ],
    )?;
    let seen = bedrock.requests();
    ensure!(
        seen.iter()
            .all(|r| r["auth"] == "sigv4" && r["status"] == 200),
        "{seen:?}"
    );
    ensure!(
        seen.iter()
            .any(|r| r["body"].to_string().contains("tool_result")),
        "the tool's result went to Bedrock"
    );
    Ok(())
}
