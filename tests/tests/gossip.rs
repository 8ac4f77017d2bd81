//! Issue 5, gossip, black-box: three nodes behind HAProxy (`Balanced`).
//!
//! - a key limited to 600 requests a minute, hammered through HAProxy for two windows,
//!   is admitted 600 to 630 times per window, and every refusal is a 429 with
//!   `retry-after`; with all the demand on one node, that node gets nearly all of it;
//! - when one node opens a provider config's circuit breaker, the others route around
//!   the provider within 2 s without failing themselves, and traffic returns after it
//!   recovers;
//! - a SIGKILLed node is marked dead within the failure detector's bound and is live
//!   again after a restart;
//! - gossip from a host without the cluster's credentials (plain chitchat over UDP, or
//!   chitchat over QUIC with another CA's certificate) changes nothing, while the same
//!   gossip with the cluster's credentials is heard (the control).
//!
//! `cargo test -p tollgate-tests --test gossip -- --nocapture` prints the figures.

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tollgate_tests::budget::now_ms;
use tollgate_tests::gossip::*;
use tollgate_tests::*;

/// Each test runs three nodes and HAProxy; on a small machine they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn create_key(cluster: &Balanced, provider_configs: Value) -> Result<(Value, String)> {
    let key = cluster
        .admin(
            1,
            "POST",
            "/api/v1/virtual-keys",
            Some(json!({"name": "gossip", "provider_configs": provider_configs})),
        )
        .await?;
    let secret = key["secret"].as_str().context("secret")?.to_owned();
    let id = key["id"].as_str().context("key id")?;
    cluster
        .known_everywhere(&format!("/api/v1/virtual-keys/{id}"))
        .await?;
    Ok((key, secret))
}

fn request(word: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model": "claude-gossip",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("ECHO:{word}")}],
    }))
    .unwrap_or_default()
}

// ------------------------------------------------------------------ rate limits

/// What the clients of one window saw.
#[derive(Default, Debug)]
struct Hammered {
    ok: u64,
    limited: u64,
    /// Anything but a 200 or a well-formed 429.
    failures: Vec<String>,
    retry_after_s: std::collections::BTreeSet<u64>,
    /// When the last request was admitted, from the start.
    last_ok: Duration,
}

/// `clients` loops send requests at `url` for `length`, as fast as answers come.
async fn hammer(url: &str, secret: &str, clients: usize, length: Duration) -> Hammered {
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, secret) = (url.to_owned(), secret.to_owned());
        tasks.push(tokio::spawn(async move {
            let client = http();
            let mut seen = Hammered::default();
            // Bounded by time and by count.
            for n in 0..50_000u32 {
                if Instant::now() >= deadline {
                    break;
                }
                let body = request(&format!("c{c}n{n}"));
                match messages_raw(&client, &url, &secret, body).await {
                    Ok((200, _, _)) => {
                        seen.ok += 1;
                        seen.last_ok = start.elapsed();
                    }
                    Ok((429, headers, body)) => {
                        let retry = headers
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<u64>().ok());
                        match (retry, body["error"]["type"].as_str()) {
                            (Some(s), Some("rate_limit_error")) if s >= 1 => {
                                seen.limited += 1;
                                seen.retry_after_s.insert(s);
                            }
                            _ => seen.failures.push(format!("429 {headers:?} {body}")),
                        }
                    }
                    Ok((status, _, body)) => seen.failures.push(format!("{status} {body}")),
                    Err(e) => seen.failures.push(format!("transport: {e}")),
                }
            }
            seen
        }));
    }
    let mut all = Hammered::default();
    for t in tasks {
        match t.await {
            Ok(seen) => {
                all.ok += seen.ok;
                all.limited += seen.limited;
                all.failures.extend(seen.failures);
                all.retry_after_s.extend(seen.retry_after_s);
                all.last_ok = all.last_ok.max(seen.last_ok);
            }
            Err(e) => all.failures.push(format!("client task: {e}")),
        }
    }
    all
}

/// The per-node counts of `limit` in node `node`'s gossip view: (total, [(node, count, claim)]).
async fn limit_use(cluster: &Balanced, node: u16, limit: &str) -> (u64, Vec<(u64, u64, u64)>) {
    let Ok(view) = gossip_view(cluster, node).await else {
        return (0, Vec::new());
    };
    let Some(entry) = view["rate_limits"]
        .as_array()
        .and_then(|l| {
            l.iter()
                .find(|e| e["rate_limit"] == limit && e["dimension"] == "requests")
        })
        .cloned()
    else {
        return (0, Vec::new());
    };
    let nodes = entry["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| {
                    (
                        n["node_id"].as_u64().unwrap_or(0),
                        n["count"].as_u64().unwrap_or(0),
                        n["claim"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (entry["total"].as_u64().unwrap_or(0), nodes)
}

/// Moves every node's clock to `at_ms` (through the clock file the nodes reread every
/// 50 ms), hammers `url` for `length`, and returns what the clients saw with the gossiped
/// use of `limit_id` as node 2 sees it once the counts have spread.
async fn at_window(
    cluster: &Balanced,
    clock: &Path,
    limit_id: &str,
    at_ms: u64,
    (url, secret, length): (String, &str, Duration),
) -> Result<(Hammered, (u64, Vec<(u64, u64, u64)>))> {
    const CLIENTS: usize = 24;
    std::fs::write(clock, (at_ms as i64 - now_ms() as i64).to_string())?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = hammer(&url, secret, CLIENTS, length).await;
    eventually(5, || async {
        limit_use(cluster, 2, limit_id).await.0 == seen.ok
    })
    .await;
    Ok((seen, limit_use(cluster, 2, limit_id).await))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_holds_across_the_cluster_in_every_window() -> Result<()> {
    const LIMIT: u64 = 600;
    const HAMMER: Duration = Duration::from_secs(5);
    /// How far into a fresh window the nodes' clocks are put.
    const LEAD_MS: u64 = 300;
    let _turn = SERIAL.lock().await;
    let dir = temp_dir("gossip-rate");
    let clock = dir.join("clock-offset");
    let cluster = Balanced::start(
        "",
        &[("TOLLGATE_TEST_CLOCK_FILE", &clock.to_string_lossy())],
    )
    .await?;
    all_live_and_ready(&cluster, 20).await?;
    let (key, secret) = create_key(&cluster, json!([{"provider": "mock"}])).await?;
    let limit = cluster
        .admin(
            1,
            "POST",
            "/api/v1/rate-limits",
            Some(json!({"owner": {"kind": "virtual_key", "id": key["id"]}, "request_max": LIMIT, "request_window": "1m"})),
        )
        .await?;
    let limit_id = limit["id"].as_str().context("rate limit id")?.to_owned();
    cluster
        .known_everywhere(&format!("/api/v1/rate-limits/{limit_id}"))
        .await?;

    // Each window: move every node's clock just past a minute boundary (a minute at
    // least one ahead, so clocks only move forward), then hammer through HAProxy.
    let mut window_start = (now_ms() / 60_000 + 2) * 60_000;
    for window in 1..=2 {
        let (seen, gossiped) = at_window(
            &cluster,
            &clock,
            &limit_id,
            window_start + LEAD_MS,
            (cluster.url(0), &secret, HAMMER),
        )
        .await?;
        println!(
            "window {window}: admitted {} of {LIMIT}, refused {} (retry-after {:?} s), per node (id, count, claim) as node 2 sees it: {:?}",
            seen.ok, seen.limited, seen.retry_after_s, gossiped.1
        );
        ensure!(
            seen.failures.is_empty(),
            "window {window}: {} answers were neither 200 nor a 429 with retry-after, e.g. {:?}",
            seen.failures.len(),
            seen.failures.iter().take(3).collect::<Vec<_>>()
        );
        ensure!(
            (LIMIT..=LIMIT + LIMIT / 20).contains(&seen.ok),
            "window {window}: admitted {} of a {LIMIT}/minute limit",
            seen.ok
        );
        ensure!(seen.limited > 0, "window {window}: nothing was refused");
        ensure!(
            gossiped.0 == seen.ok && gossiped.1.len() == 3,
            "window {window}: node 2's gossip view counts {gossiped:?}, the clients {}",
            seen.ok
        );
        window_start += 60_000;
    }

    // A third window with all the demand on node 1 (straight to it, not through
    // HAProxy): the idle nodes claim nothing, so node 1 claims its way to the whole
    // limit, a third of what is left every claim round.
    let (seen, gossiped) = at_window(
        &cluster,
        &clock,
        &limit_id,
        window_start + LEAD_MS,
        (cluster.url(1), &secret, Duration::from_secs(9)),
    )
    .await?;
    println!(
        "window 3, all demand on node 1: admitted {} of {LIMIT}, the last {:?} into the window, per node: {:?}",
        seen.ok,
        seen.last_ok,
        gossiped.1
    );
    ensure!(
        seen.failures.is_empty(),
        "window 3: {:?}",
        seen.failures.iter().take(3).collect::<Vec<_>>()
    );
    ensure!(
        (LIMIT * 95 / 100..=LIMIT + LIMIT / 20).contains(&seen.ok),
        "window 3: the one busy node was admitted {} of {LIMIT}",
        seen.ok
    );
    Ok(())
}

// ------------------------------------------------------------------ breakers

/// The words a fake logged with `status`, in order.
fn logged(fake: &FakeUpstream, status: u64) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| r["path"] == "/v1/messages" && r["status"] == status)
        .filter_map(|r| {
            let content = r["body"]["messages"][0]["content"].as_str()?;
            Some(content.strip_prefix("ECHO:")?.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nodes_open_breaker_reroutes_every_node_and_traffic_returns() -> Result<()> {
    /// Requests the nodes send in each phase; each waits `PAUSE` after an answer.
    const PAUSE: Duration = Duration::from_millis(100);
    let _turn = SERIAL.lock().await;
    let primary = FakeUpstream::start(&[])?;
    let secondary = FakeUpstream::start(&[])?;
    let config = format!(
        "[breaker]\nopen_ms = 3000\n\n{}",
        primary_secondary_config(&primary, &secondary)
    );
    let cluster = Balanced::start(&config, &[]).await?;
    all_live_and_ready(&cluster, 20).await?;
    // The primary comes first for the first million requests of a node (weights).
    let (key, secret) = create_key(
        &cluster,
        json!([{"provider": "primary", "weight": 1000}, {"provider": "secondary", "weight": 0.001}]),
    )
    .await?;
    let pc = provider_config_id(&key, "primary")?;
    let client = http();
    let send = |node: u16, word: String| {
        let (client, url, secret) = (client.clone(), cluster.url(node), secret.clone());
        async move {
            match messages_raw(&client, &url, &secret, request(&word)).await {
                Ok((200, _, _)) => Ok(()),
                Ok((status, _, body)) => Err(format!("{word} on node {node}: {status} {body}")),
                Err(e) => Err(format!("{word} on node {node}: {e}")),
            }
        }
    };

    // 1. Healthy: every node sends to the primary.
    for node in NODES {
        for i in 0..3 {
            send(node, format!("n{node}-healthy-{i}"))
                .await
                .map_err(anyhow::Error::msg)?;
        }
    }
    // The fake writes its log line after its answer: wait for the ninth.
    eventually(5, || async { logged(&primary, 200).len() >= 9 }).await;
    let healthy = logged(&primary, 200);
    ensure!(
        healthy.len() == 9 && logged(&secondary, 200).is_empty(),
        "healthy traffic goes to the primary: primary {healthy:?}, secondary {:?}",
        logged(&secondary, 200)
    );

    // 2. The primary fails. Only node 1 sends, until its breaker opens; its clients
    //    never notice (each request falls back to the secondary).
    primary
        .configure(json!({"fail_status": 500, "fail_count": -1}))
        .await?;
    let mut opened = None;
    for i in 0..30 {
        send(1, format!("n1-failing-{i}"))
            .await
            .map_err(anyhow::Error::msg)?;
        if open_breakers(&cluster, 1)
            .await
            .iter()
            .any(|(p, _)| *p == pc)
        {
            opened = Some(Instant::now());
            break;
        }
    }
    let opened = opened.context("node 1 never opened the breaker")?;
    let node1_failures = logged(&primary, 500).len();
    println!("node 1 opened the breaker after {node1_failures} failed attempts");

    // 3. Nodes 2 and 3 now send too. They have not failed once themselves, so only
    //    gossip can keep them away from the primary.
    let mut heard = [None::<Duration>; 3];
    let mut failures = Vec::new();
    let phase = Instant::now();
    while phase.elapsed() < Duration::from_millis(2500) {
        for node in NODES {
            if let Err(e) = send(
                node,
                format!("n{node}-open-{}", phase.elapsed().as_millis()),
            )
            .await
            {
                failures.push(e);
            }
            let i = usize::from(node - 1);
            if heard[i].is_none()
                && open_breakers(&cluster, node)
                    .await
                    .contains(&(pc.clone(), 1))
            {
                heard[i] = Some(opened.elapsed());
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    // Words of this phase that reached the primary: `n{node}-open-{ms into the phase}`.
    let reached_primary: Vec<(u16, u64)> = logged(&primary, 500)
        .iter()
        .filter_map(|w| {
            let (node, ms) = w.strip_prefix('n')?.split_once("-open-")?;
            Some((node.parse().ok()?, ms.parse().ok()?))
        })
        .collect();
    println!(
        "breaker open on nodes 1..3 {heard:?} after node 1 opened it; requests of nodes 2 and 3 that still reached the primary (node, ms): {reached_primary:?}"
    );
    ensure!(
        failures.is_empty(),
        "requests failed while the breaker was open: {failures:?}"
    );
    for (i, h) in heard.iter().enumerate() {
        ensure!(
            h.is_some_and(|d| d <= Duration::from_secs(2)),
            "node {} did not see the breaker open within 2 s: {h:?}",
            i + 1
        );
    }
    for node in [2u16, 3] {
        let attempts = reached_primary.iter().filter(|(n, _)| *n == node).count();
        // Fewer than the 5 consecutive failures that would open a breaker locally.
        ensure!(
            attempts < 5,
            "node {node} sent {attempts} requests to the failing primary: it did not hear node 1"
        );
    }
    ensure!(
        reached_primary.iter().all(|(_, ms)| *ms < 2000),
        "a node still sent to the primary 2 s after the breaker opened: {reached_primary:?}"
    );

    // 4. The primary recovers: after the open time a probe closes the breaker and every
    //    node sends to the primary again.
    primary.configure(json!({"fail_status": 0})).await?;
    let recovered = Instant::now();
    let mut back = [None::<Duration>; 3];
    let mut n = 0;
    while back.iter().any(Option::is_none) && recovered.elapsed() < Duration::from_secs(15) {
        for node in NODES {
            n += 1;
            let word = format!("n{node}-recovered-{n}");
            if let Err(e) = send(node, word.clone()).await {
                failures.push(e);
            }
            let i = usize::from(node - 1);
            if back[i].is_none() && logged(&primary, 200).contains(&word) {
                back[i] = Some(recovered.elapsed());
            }
        }
        tokio::time::sleep(PAUSE).await;
    }
    println!("after the primary recovered, nodes 1..3 sent to it again after {back:?}");
    ensure!(
        failures.is_empty(),
        "requests failed around recovery: {failures:?}"
    );
    ensure!(
        back.iter().all(Option::is_some),
        "traffic did not return to the primary on every node: {back:?}"
    );
    for node in NODES {
        ensure!(
            open_breakers(&cluster, node).await.is_empty(),
            "node {node} still shows an open breaker"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ membership

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_marked_dead_in_time_and_rejoins_after_restart() -> Result<()> {
    /// The failure detector's bound with the default settings: phi 12 over ~100 ms
    /// heartbeats is about 1.2 s of silence; allow for a loaded machine.
    const DEAD_BOUND: Duration = Duration::from_secs(5);
    let _turn = SERIAL.lock().await;
    let mut cluster = Balanced::start("", &[]).await?;
    all_live_and_ready(&cluster, 20).await?;
    let before = members(&gossip_view(&cluster, 1).await?);
    let generation = before
        .iter()
        .find(|m| m.0 == 3)
        .map(|m| m.1)
        .context("node 3 in the view")?;

    cluster.kill(3).await?;
    let killed = Instant::now();
    let mut dead_after = [None::<Duration>; 2];
    while dead_after.iter().any(Option::is_none) && killed.elapsed() < Duration::from_secs(20) {
        for node in [1u16, 2] {
            let i = usize::from(node - 1);
            if dead_after[i].is_none() {
                let view = gossip_view(&cluster, node).await?;
                if members(&view)
                    .iter()
                    .any(|m| m.0 == 3 && m.1 == generation && !m.2)
                {
                    dead_after[i] = Some(killed.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("node 3 SIGKILLed: marked dead by nodes 1 and 2 after {dead_after:?}");
    for (i, d) in dead_after.iter().enumerate() {
        ensure!(
            d.is_some_and(|d| d <= DEAD_BOUND),
            "node {} marked node 3 dead after {d:?} (bound {DEAD_BOUND:?})",
            i + 1
        );
    }
    let live: Vec<u64> = members(&gossip_view(&cluster, 1).await?)
        .into_iter()
        .filter(|m| m.2)
        .map(|m| m.0)
        .collect();
    ensure!(live == [1, 2], "live after the kill: {live:?}");

    cluster.start_node(3).await?;
    let restarted = Instant::now();
    all_live_and_ready(&cluster, 30).await?;
    let view = members(&gossip_view(&cluster, 1).await?);
    let new_generation = view
        .iter()
        .filter(|m| m.0 == 3 && m.2)
        .map(|m| m.1)
        .next()
        .context("node 3 live again")?;
    ensure!(
        new_generation > generation,
        "node 3 came back as a new generation: {view:?}"
    );
    println!(
        "node 3 restarted: live and ready on every node after {:?}",
        restarted.elapsed()
    );
    Ok(())
}

// ------------------------------------------------------------------ authentication

/// What a rogue peer claims: it is a ready node, and `pc`'s breaker is open for an hour.
fn rogue_values(pc: &str) -> Vec<(String, String)> {
    let now = now_ms();
    vec![
        ("node.state".to_owned(), "ready".to_owned()),
        (
            format!("breaker.{pc}"),
            format!("open:{now}:{}", now + 3_600_000),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_without_the_clusters_credentials_changes_nothing() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _turn = SERIAL.lock().await;
    let dir = temp_dir("gossip-auth");
    let cluster = Balanced::start("", &[]).await?;
    all_live_and_ready(&cluster, 20).await?;
    let (key, secret) = create_key(&cluster, json!([{"provider": "mock"}])).await?;
    let pc = key["provider_configs"][0]["id"]
        .as_str()
        .context("provider config id")?
        .to_owned();
    // Where the nodes gossip: their QUIC ports.
    let seeds: Vec<SocketAddr> = NODES.iter().map(|n| cluster.raft_addr(*n)).collect();

    // Rogue 1: plain chitchat over UDP to the nodes' gossip addresses, which is what
    // an unauthenticated gossip layer would accept.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let plain = chitchat::spawn_chitchat(
        chitchat::ChitchatConfig {
            chitchat_id: chitchat::ChitchatId::new("99".to_owned(), now_ms(), udp),
            cluster_id: "tollgate".to_owned(),
            gossip_interval: Duration::from_millis(100),
            listen_addr: udp,
            seed_nodes: seeds.iter().map(ToString::to_string).collect(),
            failure_detector_config: chitchat::FailureDetectorConfig::default(),
            marked_for_deletion_grace_period: Duration::from_secs(60),
            catchup_callback: None,
            extra_liveness_predicate: None,
        },
        rogue_values(&pc),
        &chitchat::transport::UdpTransport,
    )
    .await?;

    // Rogue 2: the production gossip over QUIC, with a certificate of another CA.
    let rogue_ca = dir.join("rogue-ca");
    let rogue_certs = dir.join("rogue-node");
    cert(&["ca", "--out", &rogue_ca.to_string_lossy()])?;
    cert(&[
        "node",
        "--ca-dir",
        &rogue_ca.to_string_lossy(),
        "--name",
        "rogue",
        "--out",
        &rogue_certs.to_string_lossy(),
    ])?;
    let foreign = quic_gossiper(98, &rogue_certs, seeds.clone()).await?;
    for (k, v) in rogue_values(&pc) {
        foreign.publish(k, v);
    }

    // The control, gossiping from the same moment: a peer with a certificate of the
    // cluster's CA. Once every node lists it, gossip rounds have carried what any peer
    // sent, so the rogues had their chance (a positive wait, not a pause).
    let member_certs = dir.join("member-node");
    cert(&[
        "node",
        "--ca-dir",
        &cluster.cluster.ca_dir().to_string_lossy(),
        "--name",
        "member",
        "--out",
        &member_certs.to_string_lossy(),
    ])?;
    let member = quic_gossiper(97, &member_certs, seeds).await?;
    let everywhere = eventually(20, || async {
        for node in NODES {
            let Ok(view) = gossip_view(&cluster, node).await else {
                return false;
            };
            if !members(&view).iter().any(|m| m.0 == 97 && m.2) {
                return false;
            }
        }
        true
    })
    .await;
    ensure!(
        everywhere,
        "a peer with the cluster's credentials was not heard by every node"
    );
    for node in NODES {
        let view = gossip_view(&cluster, node).await?;
        let ids: Vec<u64> = members(&view)
            .iter()
            .map(|m| m.0)
            .filter(|id| *id != 97)
            .collect();
        ensure!(
            ids == [1, 2, 3],
            "node {node} lists members {ids:?}: {view}"
        );
        ensure!(
            view["open_breakers"].as_array().is_some_and(Vec::is_empty),
            "node {node} took a rogue breaker: {view}"
        );
        let (status, _, body) =
            messages_raw(&http(), &cluster.url(node), &secret, request("still-fine")).await?;
        ensure!(status == 200, "node {node} answered {status} {body}");
    }
    let plain_heard = plain.with_chitchat(|c| c.live_nodes().count()).await;
    let foreign_heard = foreign.view().members.len();
    println!(
        "rogue peers heard nothing from the cluster: plain UDP sees {plain_heard} live node(s) (itself), foreign CA sees {foreign_heard} member(s)"
    );
    ensure!(
        plain_heard <= 1 && foreign_heard <= 1,
        "a rogue peer heard the cluster"
    );
    let _ = plain.shutdown().await;
    foreign.shutdown().await;

    // The control's claims are taken, so the checks above would have seen a rogue's.
    for (k, v) in rogue_values(&pc) {
        member.publish(k, v);
    }
    let heard = eventually(10, || async {
        let Ok(view) = gossip_view(&cluster, 1).await else {
            return false;
        };
        members(&view).iter().any(|m| m.0 == 97 && m.2)
            && open_breakers(&cluster, 1).await.contains(&(pc.clone(), 97))
    })
    .await;
    member.shutdown().await;
    ensure!(heard, "a peer with the cluster's credentials was not heard");
    println!(
        "control: a peer with a certificate of the cluster's CA was heard, and its breaker taken"
    );
    Ok(())
}
