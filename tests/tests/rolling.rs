//! Zero-downtime rolling restarts and upgrades (issue 7), on the three-node cluster of
//! `scripts/cluster.sh` behind HAProxy, under continuous traffic: non-streaming and
//! streaming requests in both dialects (the fake upstream streams slowly, so streams are
//! in flight at every drain) and, in the restart test, the real Claude Code CLI in a loop.
//! Every request must succeed, every stream must end with its final event, and the
//! ledgers must agree on every node at the end. These are also the operator scripts'
//! smoke tests (`scripts/cluster.sh`, `scripts/rolling-restart.sh`); the other cluster
//! tests start their nodes and HAProxy from the harness (`Balanced`).

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// Seconds between two SSE events of the fake upstream: a streamed answer takes a few
/// seconds, longer than the drain's grace period.
const STREAM_DELAY_S: &str = "0.4";
/// A request slower than this counts as stalled (a slow stream takes about 4 s).
const STALL: Duration = Duration::from_secs(20);
/// The tests run one at a time: each takes a cluster's worth of ports (picked free, so
/// two picking at once could pick the same) and most of this machine's two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Steady-state traffic measured before the roll, as the baseline (hundreds of requests).
const STEADY: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
struct Record {
    kind: &'static str,
    /// When the request started, since the traffic began.
    at: Duration,
    latency: Duration,
    error: Option<String>,
}

/// Clients sending through HAProxy until stopped; each records every request.
struct Traffic {
    origin: Instant,
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(url: &str, secret: &str, claude_code: bool) -> Traffic {
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (kind, stream, openai) in [
            ("json", false, false),
            ("openai-json", false, true),
            ("stream", true, false),
            ("stream", true, false),
            ("openai-stream", true, true),
        ] {
            let (url, secret) = (url.to_owned(), secret.to_owned());
            let (stop, records) = (Arc::clone(&stop), Arc::clone(&records));
            tasks.push(tokio::spawn(async move {
                let client = http();
                while !stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    let result = tokio::time::timeout(
                        STALL,
                        one_request(&client, &url, &secret, stream, openai),
                    )
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("stalled for {STALL:?}")));
                    records.lock().unwrap().push(Record {
                        kind,
                        at: started - origin,
                        latency: started.elapsed(),
                        error: result.err().map(|e| format!("{e:#}")),
                    });
                }
            }));
        }
        let mut threads = Vec::new();
        if claude_code {
            let (url, secret) = (url.to_owned(), secret.to_owned());
            let (stop, records) = (Arc::clone(&stop), Arc::clone(&records));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    let result = claude_code_once(&url, &secret);
                    records.lock().unwrap().push(Record {
                        kind: "claude-code",
                        at: started - origin,
                        latency: started.elapsed(),
                        error: result.err().map(|e| format!("{e:#}")),
                    });
                }
            }));
        }
        Traffic {
            origin,
            stop,
            records,
            tasks,
            threads,
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Stops the clients after their current request and returns every record.
    async fn stop(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            let _ = task.await;
        }
        for thread in self.threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let records = self.records.lock().unwrap().clone();
        records
    }
}

/// One request; an error unless it got a 200 with a whole answer (a stream must end
/// with its final event).
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    stream: bool,
    openai: bool,
) -> Result<()> {
    let request = if openai {
        client
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(secret)
            .json(
                &json!({"model": "claude-sonnet-4-6", "max_tokens": 32, "stream": stream,
                "messages": [{"role": "user", "content": "hello"}]}),
            )
    } else {
        client
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", secret)
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-sonnet-4-6", "max_tokens": 32, "stream": stream,
                "messages": [{"role": "user", "content": "hello"}]}),
            )
    };
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await.context("body cut")?;
    ensure!(status == 200, "status {status}: {text}");
    let complete = match (stream, openai) {
        (true, false) => text.contains("event: message_stop"),
        (true, true) => text.trim_end().ends_with("data: [DONE]"),
        (false, false) => serde_json::from_str::<Value>(&text)?["content"].is_array(),
        (false, true) => serde_json::from_str::<Value>(&text)?["choices"].is_array(),
    };
    ensure!(complete, "truncated answer: {text}");
    Ok(())
}

/// One run of the real Claude Code CLI (`--print`, streaming) through `url`.
fn claude_code_once(url: &str, secret: &str) -> Result<()> {
    let out = std::process::Command::new("bash")
        .arg(kit_dir().join("run_claude_code_e2e.sh"))
        .arg("--install-dir")
        .arg(workspace_dir().join("target/claude-code"))
        .args(["--base-url", url, "--token", secret, "--timeout", "150"])
        .output()?;
    if !out.status.success() {
        bail!(
            "claude code failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Count, failures and latency percentiles of the records of `kinds` started in
/// `[from, to)`.
fn summary(
    records: &[Record],
    kinds: &[&str],
    from: Duration,
    to: Duration,
) -> (usize, usize, Duration, Duration) {
    let mut window: Vec<&Record> = records
        .iter()
        .filter(|r| r.at >= from && r.at < to && kinds.contains(&r.kind))
        .collect();
    window.sort_by_key(|r| r.latency);
    let pct = |p: usize| {
        window
            .get((window.len() * p / 100).min(window.len().saturating_sub(1)))
            .map_or(Duration::ZERO, |r| r.latency)
    };
    let failed = window.iter().filter(|r| r.error.is_some()).count();
    (window.len(), failed, pct(50), pct(99))
}

/// Prints requests sent, failed and latency percentiles, steady state against the roll.
fn report(records: &[Record], steady_end: Duration, roll_end: Duration) {
    for (name, kinds) in [
        ("non-streaming", &["json", "openai-json"][..]),
        (
            "streaming (slow upstream)",
            &["stream", "openai-stream"][..],
        ),
        ("Claude Code runs", &["claude-code"][..]),
    ] {
        for (phase, from, to) in [
            ("steady", Duration::ZERO, steady_end),
            ("during the roll", steady_end, roll_end),
        ] {
            let (n, f, p50, p99) = summary(records, kinds, from, to);
            if n > 0 {
                println!("{name}, {phase}: {n} sent, {f} failed, p50 {p50:.1?}, p99 {p99:.1?}");
            }
        }
    }
    let failed = records.iter().filter(|r| r.error.is_some()).count();
    println!("in all: {} requests, {failed} failed", records.len());
}

/// Fails with the first few failures, if any.
fn no_failures(records: &[Record]) -> Result<()> {
    let failed: Vec<&Record> = records.iter().filter(|r| r.error.is_some()).collect();
    if !failed.is_empty() {
        let shown: Vec<String> = failed
            .iter()
            .take(5)
            .map(|r| {
                format!(
                    "{} at {:?}: {}",
                    r.kind,
                    r.at,
                    r.error.as_deref().unwrap_or("")
                )
            })
            .collect();
        bail!(
            "{} of {} requests failed, e.g.:\n{}",
            failed.len(),
            records.len(),
            shown.join("\n")
        );
    }
    Ok(())
}

fn write_config(dir: &Path, fake: &FakeUpstream) -> Result<PathBuf> {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, fake_config(fake))?;
    Ok(path)
}

/// A default price, and a key for the fake upstream with a budget (so leases are taken
/// and returned at each drain); returns (key id, secret).
async fn key_with_budget(cluster: &Scripted) -> Result<(String, String)> {
    cluster.price("*", "3.00", "15.00").await?;
    cluster
        .key_with_budget(
            "roller",
            json!([{"provider": "fake-anthropic", "allowed_models": ["regex:^claude-"]}]),
        )
        .await
}

/// Every node counts the same requests and spend for the key (read through the leader),
/// and that is every answer the upstream gave. Charges of the last answers may still be
/// on their way from the outboxes, so this waits up to 10 s for them.
async fn ledgers_agree(cluster: &Scripted, key_id: &str, fake: &FakeUpstream) -> Result<u64> {
    let answered = fake
        .requests()
        .iter()
        .filter(|r| r["path"] == "/v1/messages" || r["path"] == "/v1/chat/completions")
        .count() as u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut seen: Vec<Value> = Vec::new();
        for node in 1..=3u16 {
            let usage = cluster
                .admin(
                    node,
                    "GET",
                    &format!("/api/v1/usage?virtual_key={key_id}&consistency=linearizable"),
                    None,
                )
                .await?;
            seen.push(json!({
                "requests": usage["requests"],
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
                "spent": usage["budgets"][0]["spent_usd"],
            }));
        }
        let charged = seen[0]["requests"].as_u64().unwrap_or(0);
        if seen.iter().all(|s| *s == seen[0]) && charged == answered {
            return Ok(charged);
        }
        ensure!(
            Instant::now() < deadline,
            "after 10 s the ledgers still differ from each other or from the {answered} answers of the upstream: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Fails if any node logged that it received a log entry it cannot read.
fn no_unreadable_entries(cluster: &Scripted) -> Result<()> {
    for node in 1..=3 {
        let log = std::fs::read_to_string(cluster.dir.join(format!("node{node}/log")))?;
        ensure!(
            !log.contains("protocol version this node does not speak"),
            "node {node} received an entry of a protocol it does not speak"
        );
    }
    Ok(())
}

/// The slow fake upstream and a cluster on it (nodes started with `env`), with a key.
async fn setup(
    tag: &str,
    env: &[(&str, &str)],
) -> Result<(FakeUpstream, Scripted, String, String)> {
    let fake = FakeUpstream::start(&["--stream-delay", STREAM_DELAY_S])?;
    let dir = temp_dir(tag);
    let mut cluster = Scripted::new(dir.join("cluster"))?;
    for (name, value) in env {
        cluster = cluster.env(name, value);
    }
    cluster.up(&write_config(&dir, &fake)?)?;
    let (key_id, secret) = key_with_budget(&cluster).await?;
    Ok((fake, cluster, key_id, secret))
}

async fn cluster_json(cluster: &Scripted) -> Result<Value> {
    cluster.admin(0, "GET", "/api/v1/cluster", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_twice_under_traffic_fails_nothing() -> Result<()> {
    let _turn = SERIAL.lock().await;
    let (fake, cluster, key_id, secret) = setup("rolling", &[]).await?;

    let traffic = Traffic::start(&cluster.url(0), &secret, true);
    tokio::time::sleep(STEADY).await;
    let steady_end = traffic.now();
    for round in 1..=2 {
        let dir = cluster.dir.clone();
        let script = tokio::task::spawn_blocking({
            let cluster = Scripted::attach(&cluster);
            move || cluster.script("rolling-restart.sh", &[], &[])
        });
        let out = script.await??;
        println!("roll {round} ({}):\n{out}", dir.display());
    }
    let roll_end = traffic.now();
    let records = traffic.stop().await;
    report(&records, steady_end, roll_end);
    no_failures(&records)?;
    ensure!(
        records.iter().any(|r| r.kind == "claude-code"),
        "Claude Code never ran"
    );
    let charged = ledgers_agree(&cluster, &key_id, &fake).await?;
    println!("ledgers agree on every node: {charged} requests charged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_version_rolling_upgrade_fails_nothing() -> Result<()> {
    const NEWEST: u64 = tollgate_proto::peer::PROTOCOL_VERSION as u64;
    let _turn = SERIAL.lock().await;
    // Version N: every node speaks protocol 1 only, as the previous build would.
    let (fake, cluster, key_id, secret) =
        setup("upgrade", &[("TOLLGATE_PROTOCOL_VERSION", "1")]).await?;
    let before = cluster_json(&cluster).await?;
    ensure!(before["protocol_version"] == 1, "{before}");

    let traffic = Traffic::start(&cluster.url(0), &secret, false);
    tokio::time::sleep(STEADY).await;
    let steady_end = traffic.now();
    // Nodes 1 and 2 become version N+1; node 3 still speaks 1, so the cluster must keep
    // writing protocol 1 (the new entry kind would be unreadable to node 3).
    let upgrade = |nodes: &'static str| {
        let cluster = Scripted::attach(&cluster);
        tokio::task::spawn_blocking(move || {
            cluster.script(
                "rolling-restart.sh",
                &["--nodes", nodes],
                &["TOLLGATE_PROTOCOL_VERSION"],
            )
        })
    };
    println!("{}", upgrade("1 2").await??);
    // The cluster must not move on while the members report what they speak: once the
    // reports show nodes 1 and 2 at 2 and node 3 at 1 (what the leader's raise check
    // reads), three of its checks (one a second) must leave the version at 1.
    let speaks = |c: &Value| -> Vec<u64> {
        c["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| n["protocol"]["max"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    };
    let reported = eventually(30, || async {
        cluster_json(&cluster)
            .await
            .is_ok_and(|c| speaks(&c) == [NEWEST, NEWEST, 1])
    })
    .await;
    ensure!(
        reported,
        "the members never reported speaking [{NEWEST}, {NEWEST}, 1]: {}",
        cluster_json(&cluster).await?
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mixed = cluster_json(&cluster).await?;
    println!("mixed cluster: {mixed}");
    ensure!(
        mixed["protocol_version"] == 1,
        "the cluster moved on while node 3 speaks only 1: {mixed}"
    );
    println!("{}", upgrade("3").await??);
    // Every member speaks the newest now: the leader raises the cluster's version.
    let raised = eventually(10, || async {
        cluster_json(&cluster)
            .await
            .is_ok_and(|c| c["protocol_version"] == NEWEST)
    })
    .await;
    ensure!(
        raised,
        "protocol version not raised: {}",
        cluster_json(&cluster).await?
    );
    // A drain now writes the protocol 2 entry, which every node applies.
    println!("{}", upgrade("1").await??);
    let roll_end = traffic.now();
    let records = traffic.stop().await;
    report(&records, steady_end, roll_end);
    no_failures(&records)?;
    let after = cluster_json(&cluster).await?;
    ensure!(
        after["last_drained"]["1"].is_string(),
        "node 1's drain not recorded: {after}"
    );
    for node in 1..=3u16 {
        let view = cluster.admin(node, "GET", "/api/v1/cluster", None).await?;
        ensure!(view["last_drained"] == after["last_drained"], "{view}");
    }
    no_unreadable_entries(&cluster)?;
    ledgers_agree(&cluster, &key_id, &fake).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_over_without_a_failed_request() -> Result<()> {
    let _turn = SERIAL.lock().await;
    let (_fake, cluster, _, secret) = setup("leader-term", &[]).await?;
    let c = cluster_json(&cluster).await?;
    let leader = c["leader"].as_u64().context("no leader")? as u16;
    let survivor = if leader == 1 { 2 } else { 1 };

    let traffic = Traffic::start(&cluster.url(0), &secret, false);
    // Admin writes through a node that stays, back to back, timed.
    let stop_writes = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn({
        let url = cluster.url(survivor);
        let stop = Arc::clone(&stop_writes);
        async move {
            let mut done: Vec<(Instant, Duration, u16)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let started = Instant::now();
                let status = admin_at(
                    &url,
                    "POST",
                    "/api/v1/customers",
                    Some(json!({"name": format!("c{i}")})),
                )
                .await
                .map_or(0, |(s, _)| s);
                done.push((started, started.elapsed(), status));
            }
            done
        }
    });
    tokio::time::sleep(STEADY).await;
    let steady_end = traffic.now();
    let term_at = Instant::now();
    let pid = cluster.pid(leader)?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    // A new leader, other than the draining node.
    let handed = eventually(5, || async {
        admin_at(&cluster.url(survivor), "GET", "/api/v1/cluster", None)
            .await
            .is_ok_and(|(_, c)| c["leader"].as_u64().is_some_and(|l| l != leader as u64))
    })
    .await;
    let handed_after = term_at.elapsed();
    ensure!(handed, "leadership did not move off the draining leader");
    // Traffic through the drain and some after it.
    let exited = eventually(60, || async {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    ensure!(exited, "the old leader did not exit");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_writes.store(true, Ordering::Release);
    let writes = writes.await?;
    let drain_end = traffic.now();
    let records = traffic.stop().await;
    let log = std::fs::read_to_string(cluster.dir.join(format!("node{leader}/log")))?;
    let handover_line = log
        .lines()
        .find(|l| l.contains("leadership handed over"))
        .unwrap_or("(no hand-over logged)");
    println!(
        "leader {leader} SIGTERMed; a new leader seen after {handed_after:?}; {handover_line}"
    );
    report(&records, steady_end, drain_end);
    no_failures(&records)?;
    ensure!(
        log.contains("stopped"),
        "the old leader did not finish its drain"
    );

    // Admin writes: none failed, and none around the hand-over waited longer than one
    // election timeout (the nodes' longest).
    let election_timeout = Duration::from_millis(tollgate_raft::config::NODE_ELECTION_TIMEOUT_MS.1);
    let failed = writes.iter().filter(|(_, _, s)| *s != 201).count();
    let slowest = |after: bool| {
        writes
            .iter()
            .filter(|(at, _, _)| (*at >= term_at) == after)
            .map(|(_, l, _)| *l)
            .max()
            .unwrap_or_default()
    };
    println!(
        "admin writes: {} sent, {failed} failed, slowest before SIGTERM {:?}, after {:?}",
        writes.len(),
        slowest(false),
        slowest(true)
    );
    ensure!(failed == 0, "{failed} admin writes failed");
    ensure!(
        handed_after <= election_timeout,
        "a new leader took {handed_after:?}, more than an election timeout"
    );
    ensure!(
        slowest(true) <= election_timeout,
        "an admin write took {:?} around the hand-over, more than an election timeout",
        slowest(true)
    );

    // `tollgate admin drain N` through HAProxy drains another node the same way.
    cluster.run(&["start", &leader.to_string()])?;
    let other = (1..=3u16)
        .find(|n| *n != leader && *n != survivor)
        .context("third node")?;
    let other_pid = cluster.pid(other)?;
    let out = std::process::Command::new(tollgate_bin())
        .args([
            "admin",
            "--url",
            &cluster.url(0),
            "--token",
            ADMIN_TOKEN,
            "drain",
        ])
        .arg(other.to_string())
        .output()?;
    ensure!(
        out.status.success(),
        "admin drain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drained = eventually(30, || async {
        !std::path::Path::new(&format!("/proc/{other_pid}")).exists()
    })
    .await;
    ensure!(drained, "node {other} did not exit after admin drain");
    let log = std::fs::read_to_string(cluster.dir.join(format!("node{other}/log")))?;
    ensure!(
        log.contains("drain requested by a peer") || log.contains("drain requested"),
        "node {other} did not log the drain request"
    );
    ensure!(
        log.contains("stopped"),
        "node {other} did not finish its drain"
    );
    let c = cluster
        .admin(survivor, "GET", "/api/v1/cluster", None)
        .await?;
    ensure!(
        c["last_drained"][other.to_string()].is_string(),
        "node {other}'s drain not recorded: {c}"
    );
    // And who asked for it is in the audit trail.
    let events = cluster
        .admin(survivor, "GET", "/api/v1/audit?action=node.drain", None)
        .await?;
    ensure!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| {
                e["target"] == json!({"kind": "node", "id": other.to_string()})
                    && e["actor"]["kind"] == "admin_token"
            })),
        "node {other}'s drain is not an audit event: {events}"
    );
    Ok(())
}
