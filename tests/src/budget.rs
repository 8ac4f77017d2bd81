//! Helpers of the budget tests (`tests/budgets.rs`): requests with known estimates and
//! true costs, client loops with their tally, refusals checked against what they must
//! say, every node's figures for a key, and the priced three-node cluster they run on.
//!
//! Every request here has a known estimate and a known true cost: input and output
//! tokens cost the same (100 µ$ a token), admission reserves `ceil(body bytes / 4) +
//! max_tokens` tokens, and the fake reports `len(json.dumps(prompt)) // 4` input tokens
//! and `len(json.dumps(content)) // 4` output tokens. So the estimate is never below
//! the true cost.

use crate::*;
use anyhow::{ensure, Context, Result};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const MODEL: &str = "claude-budget";
/// Dollars per million tokens, input and output alike: a token costs exactly 100 µ$.
pub const PRICE_PER_MTOK: &str = "100";
pub const MICROS_PER_TOKEN: u64 = 100;
/// Above the fake's 9 output tokens for a 7-character word, so the estimate covers them.
pub const MAX_TOKENS: u64 = 12;
pub const DAY_MS: u64 = 86_400_000;
/// Bounds of every client loop: requests per client and time.
pub const MAX_REQUESTS_PER_CLIENT: u32 = 50;
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(30);
/// How long the nodes get to agree on the figures after the load.
pub const SETTLE_SECS: u64 = 20;

// ------------------------------------------------------------------ requests

/// One request: its word (`ECHO:` makes the fake answer it, and it finds the request in
/// the fake's log), its exact bytes and what admission reserves for it in micro-dollars.
pub struct Ask {
    pub word: String,
    pub bytes: Vec<u8>,
    pub estimate: u64,
}

/// A request answered with `word` whose prompt is padded by `pad` bytes.
pub fn ask(word: &str, pad: usize) -> Ask {
    let body = json!({
        "model": MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": format!("ECHO:{word} {}", "x".repeat(pad))}],
    });
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let estimate = ((bytes.len() as u64).div_ceil(4) + MAX_TOKENS) * MICROS_PER_TOKEN;
    Ask {
        word: word.to_owned(),
        bytes,
        estimate,
    }
}

/// The true cost of an answer in micro-dollars, from the usage it reports (`None` when it
/// reports none, or cache tokens, which these tests do not price).
pub fn true_cost(usage: &Value) -> Option<u64> {
    let input = usage["input_tokens"].as_u64()?;
    let output = usage["output_tokens"].as_u64()?;
    let cache = usage["cache_creation_input_tokens"].as_u64().unwrap_or(0)
        + usage["cache_read_input_tokens"].as_u64().unwrap_or(0);
    (cache == 0).then_some((input + output) * MICROS_PER_TOKEN)
}

/// A pad between `lo` and `hi` that varies with the client and its request number.
pub fn pad(client: usize, n: u32, (lo, hi): (usize, usize)) -> usize {
    let mut x = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (u64::from(n) + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    lo + (x % (hi - lo + 1) as u64) as usize
}

pub async fn send(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    ask: &Ask,
) -> Result<(u16, HeaderMap, Value)> {
    messages_raw(client, url, secret, ask.bytes.clone()).await
}

/// Where one group of clients sends, with which key; `tag` starts each request's word so
/// the fake's log tells the groups apart.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub secret: String,
    pub tag: char,
}

/// What the clients saw.
#[derive(Default)]
pub struct Tally {
    /// Words answered 200, by tag.
    pub answered: BTreeMap<char, Vec<String>>,
    /// Σ true costs of the answered requests.
    pub true_cost: u64,
    /// max(true cost − estimate, 0) over the answered requests.
    pub max_error: u64,
    /// Largest estimate of any request sent.
    pub max_estimate: u64,
    /// Every 402: tag, headers, body.
    pub refusals: Vec<(char, HeaderMap, Value)>,
    /// Anything that is neither 200 nor 402, or a 200 without usage.
    pub failures: Vec<String>,
    /// Clients that stopped at a bound instead of a 402.
    pub unfinished: u64,
}

impl Tally {
    pub fn ok(&self) -> u64 {
        self.answered.values().map(|w| w.len() as u64).sum()
    }

    pub fn ok_of(&self, tag: char) -> u64 {
        self.answered.get(&tag).map_or(0, |w| w.len() as u64)
    }

    pub fn words(&self) -> BTreeSet<String> {
        self.answered.values().flatten().cloned().collect()
    }

    /// Records one answer; returns whether it was a 402.
    pub fn record(
        &mut self,
        tag: char,
        ask: &Ask,
        answer: Result<(u16, HeaderMap, Value)>,
    ) -> bool {
        self.max_estimate = self.max_estimate.max(ask.estimate);
        match answer {
            Ok((200, headers, body)) => match true_cost(&body["usage"]) {
                Some(cost) => {
                    self.true_cost += cost;
                    // A request the room left could not take whole went upstream with a
                    // lower max_tokens, and was reserved for that (the fake provider does
                    // not keep to max_tokens; a real one does).
                    let estimate = headers
                        .get("x-tollgate-max-tokens")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map_or(ask.estimate, |cap| {
                            ask.estimate - MAX_TOKENS.saturating_sub(cap) * MICROS_PER_TOKEN
                        });
                    self.max_error = self.max_error.max(cost.saturating_sub(estimate));
                    self.answered.entry(tag).or_default().push(ask.word.clone());
                }
                None => self
                    .failures
                    .push(format!("{}: 200 without usage: {body}", ask.word)),
            },
            Ok((402, headers, body)) => {
                self.refusals.push((tag, headers, body));
                return true;
            }
            Ok((status, _, body)) => self.failures.push(format!("{}: {status} {body}", ask.word)),
            Err(e) => self.failures.push(format!("{}: {e:#}", ask.word)),
        }
        false
    }
}

/// `clients` clients per target, each sending requests padded within `pads` one at a
/// time until it gets a 402 (at most `MAX_REQUESTS_PER_CLIENT` requests and
/// `CLIENT_DEADLINE`). Any other failure also ends a client.
pub async fn drain(targets: &[Target], clients: usize, pads: (usize, usize)) -> Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for target in targets {
        for c in 0..clients {
            let (target, tally) = (target.clone(), Arc::clone(&tally));
            tasks.push(tokio::spawn(async move {
                let client = http();
                let started = Instant::now();
                for n in 0..MAX_REQUESTS_PER_CLIENT {
                    if started.elapsed() > CLIENT_DEADLINE {
                        break;
                    }
                    let ask = ask(&format!("{}{c:03}r{n:02}", target.tag), pad(c, n, pads));
                    let answer = send(&client, &target.url, &target.secret, &ask).await;
                    let failed = matches!(&answer, Ok((s, _, _)) if *s != 200 && *s != 402)
                        || answer.is_err();
                    let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                    if t.record(target.tag, &ask, answer) || failed {
                        return;
                    }
                }
                tally.lock().unwrap_or_else(|e| e.into_inner()).unfinished += 1;
            }));
        }
    }
    for task in tasks {
        task.await?;
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(tally)
}

/// What a 402 must say.
pub struct Refusal {
    pub budget: String,
    /// `"<kind> <id>"` of the budget's owner.
    pub owner: String,
    /// The limit as the node prints it, `"1.00"`.
    pub limit: String,
    /// RFC 3339 end of the budget's window.
    pub resets_at: String,
}

/// Checks one 402: Anthropic `billing_error` naming the budget, its owner, its limit and
/// its reset time, with `x-should-retry: false`.
pub fn check_refusal(headers: &HeaderMap, body: &Value, want: &Refusal) -> Result<(), String> {
    let message = body["error"]["message"].as_str().unwrap_or("");
    let problems: Vec<&str> = [
        (body["type"] == "error", "type is not error"),
        (
            body["error"]["type"] == "billing_error",
            "error.type is not billing_error",
        ),
        (
            message.contains(&format!("budget {} of {}", want.budget, want.owner)),
            "does not name the budget and its owner",
        ),
        (
            message.contains(&format!("limit ${}", want.limit)),
            "does not name the limit",
        ),
        (
            message.contains(&format!("resets at {}", want.resets_at)),
            "does not name the reset time",
        ),
        (
            headers.get("x-should-retry").map(|v| v.as_bytes()) == Some(&b"false"[..]),
            "no x-should-retry: false",
        ),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, what)| what)
    .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{problems:?}: {body}"))
    }
}

/// Every 402 of `tally` checked against `want`; fails naming the first few bad ones.
pub fn check_refusals(tally: &Tally, want: &Refusal) -> Result<()> {
    let bad: Vec<String> = tally
        .refusals
        .iter()
        .filter_map(|(tag, h, b)| {
            check_refusal(h, b, want)
                .err()
                .map(|e| format!("{tag}: {e}"))
        })
        .collect();
    ensure!(
        bad.is_empty(),
        "{} of {} refusals malformed, e.g. {:?}",
        bad.len(),
        tally.refusals.len(),
        &bad[..bad.len().min(3)]
    );
    Ok(())
}

// ------------------------------------------------------------------ cluster figures

/// One node's view of one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub spent: u64,
    pub reserved: u64,
    /// Node-local: reservations of requests in flight there.
    pub held_here: u64,
    /// Σ outstanding_usd of the listed leases.
    pub leases_sum: u64,
    pub leases: Value,
    pub window_start: String,
    pub window_end: String,
    /// `requests` of the usage answer asked with the budget.
    pub requests: u64,
}

impl Figures {
    /// What every node must agree on (`held_here` is the node's own).
    pub fn replicated(&self) -> (u64, u64, &Value, &str, &str, u64) {
        (
            self.spent,
            self.reserved,
            &self.leases,
            &self.window_start,
            &self.window_end,
            self.requests,
        )
    }
}

/// Budget `id` and the usage of `usage_query` (`virtual_key=ID`, `team=ID`; `None`: no
/// usage, `requests` 0) as `node` answers them, linearizably.
pub async fn figures(
    cluster: &impl Nodes,
    node: u16,
    id: &str,
    usage_query: Option<&str>,
) -> Result<Figures> {
    let b = cluster
        .admin(
            node,
            "GET",
            &format!("/api/v1/budgets/{id}?consistency=linearizable"),
            None,
        )
        .await?;
    let requests = match usage_query {
        Some(q) => cluster
            .admin(
                node,
                "GET",
                &format!("/api/v1/usage?{q}&consistency=linearizable"),
                None,
            )
            .await?["requests"]
            .as_u64()
            .unwrap_or(0),
        None => 0,
    };
    let leases = b["leases"].clone();
    ensure!(
        leases.is_array() && b["held_here_usd"].is_string() && b["reserved_usd"].is_string(),
        "node {node}: budget view without leases/held_here_usd/reserved_usd: {b}"
    );
    let leases_sum = leases
        .as_array()
        .map(|l| l.iter().map(|x| micros(&x["outstanding_usd"])).sum())
        .unwrap_or(0);
    Ok(Figures {
        spent: micros(&b["spent_usd"]),
        reserved: micros(&b["reserved_usd"]),
        held_here: micros(&b["held_here_usd"]),
        leases_sum,
        leases,
        window_start: b["window_start"].as_str().unwrap_or_default().to_owned(),
        window_end: b["window_end"].as_str().unwrap_or_default().to_owned(),
        requests,
    })
}

/// Polls every node until all report the same replicated figures for budget `id` with
/// `requests` charged requests in `usage_query`, spend `spent` (when given) and nothing
/// held anywhere. Returns the last figures of every node and whether they settled.
pub async fn settle(
    cluster: &impl Nodes,
    id: &str,
    usage_query: Option<&str>,
    requests: u64,
    spent: Option<u64>,
) -> Result<(Vec<Figures>, bool)> {
    let deadline = Instant::now() + Duration::from_secs(SETTLE_SECS);
    loop {
        let mut all = Vec::new();
        for node in NODES {
            all.push(figures(cluster, node, id, usage_query).await?);
        }
        let agreed = all.iter().all(|f| f.replicated() == all[0].replicated())
            && all[0].requests == requests
            && spent.is_none_or(|s| all[0].spent == s)
            && all.iter().all(|f| f.held_here == 0);
        if agreed || Instant::now() > deadline {
            return Ok((all, agreed));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The word a logged model request was asked to echo.
pub fn logged_word(row: &Value) -> Option<String> {
    let content = row["body"]["messages"][0]["content"].as_str()?;
    let rest = content.strip_prefix("ECHO:")?;
    Some(rest.split_whitespace().next()?.to_owned())
}

/// The words of the model requests `fake` answered, once their count holds still.
pub async fn upstream_words(fake: &FakeUpstream, expect: usize) -> Vec<String> {
    let words = || {
        fake.requests()
            .iter()
            .filter(|r| r["path"] == "/v1/messages")
            .filter_map(logged_word)
            .collect::<Vec<_>>()
    };
    // The fake logs a request just after answering it.
    eventually(5, || async { words().len() >= expect }).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    words()
}

// ------------------------------------------------------------------ setup

/// A config file in `dir` with `text`.
pub fn write_config(dir: &Path, text: &str) -> Result<PathBuf> {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

pub async fn set_price(cluster: &impl Nodes) -> Result<()> {
    cluster.price(MODEL, PRICE_PER_MTOK, PRICE_PER_MTOK).await
}

/// A fake upstream and a three-node cluster on it, with the test price set.
pub async fn priced_cluster(tag: &str) -> Result<(FakeUpstream, Balanced)> {
    let fake = FakeUpstream::start(&[])?;
    println!("[{tag}] starting a balanced cluster");
    let cluster = Balanced::start(&fake_config(&fake), &[]).await?;
    set_price(&cluster).await?;
    Ok((fake, cluster))
}

/// Creates a key; returns its create answer.
pub async fn create_key(cluster: &impl Nodes, body: Value) -> Result<Value> {
    let key = cluster
        .admin(1, "POST", "/api/v1/virtual-keys", Some(body))
        .await?;
    ensure!(key["secret"].is_string(), "no secret: {key}");
    Ok(key)
}

/// Creates a budget; returns its id once every node knows it.
pub async fn create_budget(
    cluster: &impl Nodes,
    kind: &str,
    owner: &str,
    limit: &str,
    calendar_aligned: bool,
) -> Result<String> {
    let b = cluster
        .admin(
            1,
            "POST",
            "/api/v1/budgets",
            Some(json!({"owner": {"kind": kind, "id": owner}, "max_limit_usd": limit, "reset_duration": "1d", "calendar_aligned": calendar_aligned})),
        )
        .await?;
    let id = b["id"].as_str().context("budget id")?.to_owned();
    cluster
        .known_everywhere(&format!("/api/v1/budgets/{id}"))
        .await?;
    Ok(id)
}

/// A key on the fake provider with a daily budget of `limit`: its id, secret and budget id.
pub async fn budgeted_key(
    cluster: &impl Nodes,
    name: &str,
    limit: &str,
    calendar_aligned: bool,
) -> Result<(String, String, String)> {
    let key = create_key(
        cluster,
        json!({"name": name, "provider_configs": [{"provider": "fake-anthropic"}]}),
    )
    .await?;
    let key_id = key["id"].as_str().context("key id")?.to_owned();
    let secret = key["secret"].as_str().context("secret")?.to_owned();
    let budget = create_budget(cluster, "virtual_key", &key_id, limit, calendar_aligned).await?;
    Ok((key_id, secret, budget))
}

pub fn usd(micros: u64) -> String {
    format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
