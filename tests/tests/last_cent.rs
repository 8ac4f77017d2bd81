//! A budget spent to the last cent by long streams, and never past it: three nodes behind
//! HAProxy, 200 concurrent streaming clients asking `max_tokens: 128000` (as Claude Code
//! does) for real answers of 50 to 2,000 tokens from the fast mock provider (`LONG:<n>`,
//! paced like a model), on a $1.00 daily budget at $3/$15 per million tokens. Every
//! stream reserves its expected output, is metered as it comes and extends its hold;
//! when no room is left it ends as a clean length stop and the next request gets 402.
//!
//! Checked: clients see only 200s (complete, or ended with `stop_reason: max_tokens` and
//! `message_stop`) and 402s; every node ends with the same spend, between $0.97 and
//! $1.00, equal to what the answers told the clients they used, over as many requests.
//!
//! `cargo test -p tollgate-tests --test last_cent -- --nocapture` prints the figures.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_tests::budget::*;
use tollgate_tests::*;

const CLIENTS: usize = 200;
const STREAM_MODEL: &str = "claude-sonnet-4-5";
/// Micro-dollars per input and output token: $3 and $15 per million.
const INPUT_MICROS: u64 = 3;
const OUTPUT_MICROS: u64 = 15;
/// Real answers, in the mock's tokens.
const ANSWER_TOKENS: (usize, usize) = (50, 2_000);
/// The mock's pause between events (each 16 bytes, 4 tokens): a 2,000-token answer
/// takes about half a second.
const EVENT_DELAY_US: u64 = 1_000;
/// Bounds of each client's loop.
const REQUESTS_PER_CLIENT: u32 = 40;
const LOOP_DEADLINE: Duration = Duration::from_secs(120);

/// What one streamed answer said.
#[derive(Debug)]
enum Answer {
    /// Ended by the model, with what it reported.
    Complete { cost: u64 },
    /// Ended by the gateway as a length stop, with what it reported.
    Cut { cost: u64 },
}

#[derive(Default)]
struct Seen {
    complete: u64,
    cut: u64,
    refused: u64,
    /// The cost the answers reported, in micro-dollars.
    reported: u64,
    failures: Vec<String>,
    /// Clients that never got a 402 within their bounds.
    unfinished: u64,
}

/// Reads one streamed answer: it must end with `message_stop` after a `message_delta`
/// saying why; its cost from the usage of `message_start` and `message_delta`.
fn read_stream(text: &str, asked: u64) -> Result<Answer, String> {
    let mut input = None;
    let mut output = None;
    let mut stop_reason = None;
    let mut streamed = 0u64;
    let mut last = String::new();
    for frame in text.split("\n\n").filter(|f| !f.trim().is_empty()) {
        let name = frame
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap_or("");
        let data: Value = frame
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null);
        match name {
            "message_start" => input = data["message"]["usage"]["input_tokens"].as_u64(),
            "content_block_delta" => {
                streamed += data["delta"]["text"].as_str().map_or(0, |t| t.len() as u64)
            }
            "message_delta" => {
                stop_reason = data["delta"]["stop_reason"].as_str().map(str::to_owned);
                output = data["usage"]["output_tokens"].as_u64();
            }
            "error" => return Err(format!("error event: {data}")),
            _ => {}
        }
        last = name.to_owned();
    }
    if last != "message_stop" {
        return Err(format!("stream ended with {last:?}, not message_stop"));
    }
    let (Some(input), Some(output)) = (input, output) else {
        return Err("no usage in message_start or message_delta".into());
    };
    let cost = input * INPUT_MICROS + output * OUTPUT_MICROS;
    match stop_reason.as_deref() {
        Some("end_turn") if streamed == asked * 4 && output == asked => {
            Ok(Answer::Complete { cost })
        }
        // The gateway counts at least what it relayed. A cut may come right after the
        // answer's last text, before the provider said it was done: the gateway cannot
        // know the text was all there, so that is a length stop too.
        Some("max_tokens") if output * 4 >= streamed && streamed <= asked * 4 => {
            Ok(Answer::Cut { cost })
        }
        other => Err(format!(
            "stop {other:?} with {streamed} bytes streamed and {output} tokens reported for an answer of {asked}"
        )),
    }
}

/// One client: streams until its first 402, within its bounds.
async fn client(url: String, secret: String, c: usize, seen: Arc<Mutex<Seen>>) {
    let http = http();
    let deadline = Instant::now() + LOOP_DEADLINE;
    for n in 0..REQUESTS_PER_CLIENT {
        if Instant::now() > deadline {
            break;
        }
        let asked = pad(c, n, ANSWER_TOKENS) as u64;
        let body = json!({
            "model": STREAM_MODEL,
            "max_tokens": 128_000,
            "stream": true,
            "messages": [{"role": "user", "content": format!("LONG:{asked} from client {c}, request {n}")}],
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let (status, answer) = match messages_raw(&http, &url, &secret, bytes).await {
            // A stream is not JSON: its text comes back as a string.
            Ok((status, _, Value::String(text))) => (status, text),
            Ok((status, _, json)) => (status, json.to_string()),
            Err(e) => (0, e.to_string()),
        };
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        match status {
            200 => match read_stream(&answer, asked) {
                Ok(Answer::Complete { cost }) => {
                    seen.complete += 1;
                    seen.reported += cost;
                }
                Ok(Answer::Cut { cost }) => {
                    seen.cut += 1;
                    seen.reported += cost;
                }
                Err(e) => {
                    seen.failures.push(format!("client {c} request {n}: {e}"));
                    return;
                }
            },
            402 => {
                let body: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
                if body["error"]["type"] != "billing_error" {
                    seen.failures.push(format!("client {c}: 402 {answer}"));
                }
                seen.refused += 1;
                return;
            }
            s => {
                seen.failures
                    .push(format!("client {c} request {n}: {s} {answer}"));
                return;
            }
        }
    }
    seen.lock().unwrap_or_else(|e| e.into_inner()).unfinished += 1;
}

#[tokio::test]
async fn two_hundred_streams_spend_a_dollar_to_the_last_cent() -> Result<()> {
    let mock = MockUpstream::start(EVENT_DELAY_US).await?;
    let config = format!(
        "[[providers]]\nname = \"long\"\nkind = \"anthropic\"\nbase_url = \"{}\"\n",
        mock.base_url()
    );
    let started = Instant::now();
    let cluster = Balanced::start(&config, &[]).await?;
    println!("cluster up after {:?}", started.elapsed());
    cluster.price(STREAM_MODEL, "3", "15").await?;
    let key = create_key(
        &cluster,
        json!({"name": "streams", "provider_configs": [{"provider": "long"}]}),
    )
    .await?;
    let key_id = key["id"].as_str().context("key id")?.to_owned();
    let secret = key["secret"].as_str().context("secret")?.to_owned();
    let budget = create_budget(&cluster, "virtual_key", &key_id, "1.00", false).await?;
    let limit = 1_000_000;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(cluster.url(0), secret.clone(), c, Arc::clone(&seen))))
        .collect();
    for c in clients {
        c.await?;
    }
    let took = started.elapsed();
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    let answered = seen.complete + seen.cut;
    println!(
        "{CLIENTS} clients in {took:?}: {} complete, {} cut as length stops, {} refused, {} failed, {} unfinished; answers report {}",
        seen.complete,
        seen.cut,
        seen.refused,
        seen.failures.len(),
        seen.unfinished,
        usd(seen.reported),
    );
    let usage_query = format!("virtual_key={key_id}");
    let (all, agreed) = settle(&cluster, &budget, Some(&usage_query), answered, None).await?;
    for (node, f) in NODES.iter().zip(&all) {
        println!(
            "node {node}: spent {} reserved {} held here {} requests {}",
            usd(f.spent),
            usd(f.reserved),
            usd(f.held_here),
            f.requests
        );
    }
    ensure!(
        seen.failures.is_empty(),
        "{} requests neither 200 nor 402, e.g. {:?}",
        seen.failures.len(),
        &seen.failures[..seen.failures.len().min(5)]
    );
    ensure!(
        seen.unfinished == 0,
        "{} clients never got a 402",
        seen.unfinished
    );
    ensure!(seen.cut > 0, "no stream ran into the limit");
    ensure!(
        agreed,
        "nodes did not agree on {answered} charged requests: {all:#?}"
    );
    let spent = all[0].spent;
    ensure!(spent <= limit, "overspent: {}", usd(spent));
    ensure!(
        spent >= limit - 30_000,
        "the budget was not used to the last cent: spent only {}",
        usd(spent)
    );
    ensure!(
        spent == seen.reported,
        "spent {} but the answers reported {}",
        usd(spent),
        usd(seen.reported)
    );
    Ok(())
}
