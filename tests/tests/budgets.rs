//! Exact budgets across the cluster via escrow leases, black-box: three nodes
//! behind HAProxy (`Balanced`) and the fake upstream on loopback.
//!
//! - a $1.00 key budget under 200 concurrent clients through HAProxy is never overspent
//!   by more than the largest estimate error, is really used, and every node agrees;
//!   the same workload with naive check-then-charge admission shows the overshoot;
//! - a team budget is one budget whatever node its keys' requests reach;
//! - a provider config whose budget is exhausted hands its requests to the key's next
//!   provider config without the client noticing;
//! - a calendar-aligned daily budget rolls over at UTC midnight on every node at once
//!   (the nodes' clocks moved with `TOLLGATE_TEST_CLOCK_FILE`), old leases void;
//! - a node stopped with SIGTERM gives its leases back, and the leader reclaims those of
//!   a node killed with SIGKILL, so the others can spend the whole budget.
//!
//! Every request here has a known estimate and a known true cost: input and output
//! tokens cost the same (100 µ$ a token), admission reserves `ceil(body bytes / 4) +
//! max_tokens` tokens, and the fake reports `len(json.dumps(prompt)) // 4` input tokens
//! (a little less than our compact body's quarter) and `len(json.dumps(content)) // 4`
//! output tokens (9 for the 7-character words used here, below `MAX_TOKENS`). So the
//! estimate is never below the true cost; the tests still compute the largest estimate
//! error from the answers' usage and allow exactly that.
//!
//! `cargo test -p tollgate-tests --test budgets -- --nocapture` prints the figures.

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tollgate_raft::rfc3339;
use tollgate_tests::budget::*;
use tollgate_tests::*;

/// Each test runs three nodes, HAProxy and up to 200 clients: on a small machine two at
/// once would skew each other's timing, so they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ------------------------------------------------------------------ 1: $1.00, 200 clients

/// Clients of test 1, all through HAProxy.
const CLIENTS: usize = 200;
/// Prompt pads of test 1: true costs from about $0.0106 to $0.0499.
const PADS_1: (usize, usize) = (300, 1_850);

/// Figures of one run of test 1's workload.
struct Run {
    limit: u64,
    spent: u64,
    ok: u64,
    refused: usize,
    max_error: u64,
    max_estimate: u64,
    took: Duration,
}

/// Test 1's workload on a fresh cluster (`naive`: started with
/// `TOLLGATE_TEST_NAIVE_BUDGETS=1`). With escrow, asserts everything; naive, only that
/// something was spent.
async fn one_dollar_run(naive: bool) -> Result<Run> {
    let label = if naive { "naive" } else { "escrow" };
    let fake = FakeUpstream::start(&[])?;
    let env: &[(&str, &str)] = if naive {
        &[("TOLLGATE_TEST_NAIVE_BUDGETS", "1")]
    } else {
        &[]
    };
    let started = Instant::now();
    let cluster = Balanced::start(&fake_config(&fake), env).await?;
    println!("[{label}] cluster up after {:?}", started.elapsed());

    set_price(&cluster).await?;
    let (key_id, secret, budget) = budgeted_key(&cluster, "dollar", "1.00", false).await?;
    let limit = 1_000_000;

    let started = Instant::now();
    let target = Target {
        url: cluster.url(0),
        secret,
        tag: 'w',
    };
    let tally = drain(&[target], CLIENTS, PADS_1).await?;
    let took = started.elapsed();
    let ok = tally.ok();
    println!(
        "[{label}] {CLIENTS} clients: {ok} answered, {} refused, {} failed, {} unfinished in {took:?}; largest estimate {} error {}",
        tally.refusals.len(),
        tally.failures.len(),
        tally.unfinished,
        usd(tally.max_estimate),
        usd(tally.max_error),
    );

    let usage_query = format!("virtual_key={key_id}");
    let (all, agreed) = settle(&cluster, &budget, Some(&usage_query), ok, None).await?;
    let spent = all[0].spent;
    let run = Run {
        limit,
        spent,
        ok,
        refused: tally.refusals.len(),
        max_error: tally.max_error,
        max_estimate: tally.max_estimate,
        took,
    };
    for (node, f) in NODES.iter().zip(&all) {
        println!(
            "[{label}] node {node}: spent {} reserved {} held here {} requests {} leases {}",
            usd(f.spent),
            usd(f.reserved),
            usd(f.held_here),
            f.requests,
            f.leases
        );
    }
    if naive {
        ensure!(spent > 0, "naive run spent nothing");
        return Ok(run);
    }

    ensure!(
        tally.failures.is_empty(),
        "{} requests neither 200 nor 402, e.g. {:?}",
        tally.failures.len(),
        &tally.failures[..tally.failures.len().min(5)]
    );
    ensure!(
        tally.unfinished == 0,
        "{} clients never got a 402",
        tally.unfinished
    );
    ensure!(
        agreed,
        "nodes did not agree on {ok} charged requests: {all:#?}"
    );
    check_refusals(
        &tally,
        &Refusal {
            budget: budget.clone(),
            owner: format!("virtual_key {key_id}"),
            limit: "1.00".into(),
            resets_at: all[0].window_end.clone(),
        },
    )?;
    ensure!(
        spent <= limit + tally.max_error,
        "overspent: {} > {} + largest estimate error {}",
        usd(spent),
        usd(limit),
        usd(tally.max_error)
    );
    ensure!(
        spent + 100_000 >= limit,
        "budget not used: spent only {}",
        usd(spent)
    );
    ensure!(
        spent == tally.true_cost,
        "spent {} but the answers' usage adds up to {}",
        usd(spent),
        usd(tally.true_cost)
    );
    for (node, f) in NODES.iter().zip(&all) {
        ensure!(
            f.leases_sum == f.reserved,
            "node {node}: reserved {} but leases add up to {}",
            usd(f.reserved),
            usd(f.leases_sum)
        );
        ensure!(
            f.spent + f.reserved <= limit + tally.max_error,
            "node {node}: spent {} + leased {} beyond the limit",
            usd(f.spent),
            usd(f.reserved)
        );
    }
    let upstream = upstream_words(&fake, ok as usize).await;
    ensure!(
        upstream.len() as u64 == ok,
        "the upstream answered {} model requests, the clients got {ok}",
        upstream.len()
    );
    ensure!(
        upstream.iter().cloned().collect::<BTreeSet<_>>() == tally.words(),
        "the upstream's requests are not the answered ones"
    );
    Ok(run)
}

#[tokio::test]
async fn one_dollar_budget_holds_across_three_nodes() -> Result<()> {
    let _turn = SERIAL.lock().await;
    let escrow = one_dollar_run(false).await?;
    let naive = one_dollar_run(true).await?;
    let overshoot = |r: &Run| r.spent as i64 - r.limit as i64;
    for (label, r) in [("escrow", &escrow), ("naive", &naive)] {
        println!(
            "{label:>6}: limit {} spent {} overshoot {}{} ({} answered, {} refused, largest estimate {}, largest estimate error {}, {:?})",
            usd(r.limit),
            usd(r.spent),
            if overshoot(r) < 0 { "-" } else { "" },
            usd(overshoot(r).unsigned_abs()),
            r.ok,
            r.refused,
            usd(r.max_estimate),
            usd(r.max_error),
            r.took,
        );
    }
    Ok(())
}

// ------------------------------------------------------------------ 2: team budget

/// Clients per key in test 2.
const TEAM_CLIENTS: usize = 20;
/// Prompt pads of test 2: true costs from about $0.0056 to $0.0156.
const PADS_2: (usize, usize) = (100, 500);

#[tokio::test]
async fn team_budget_is_one_budget_across_nodes() -> Result<()> {
    let _turn = SERIAL.lock().await;
    let (fake, cluster) = priced_cluster("budget-team").await?;
    let team = cluster
        .admin(1, "POST", "/api/v1/teams", Some(json!({"name": "team"})))
        .await?;
    let team_id = team["id"].as_str().context("team id")?.to_owned();
    let mut keys = Vec::new();
    for name in ["a", "b"] {
        keys.push(
            create_key(
                &cluster,
                json!({"name": name, "team_id": team_id, "provider_configs": [{"provider": "fake-anthropic"}]}),
            )
            .await?,
        );
    }
    let budget = create_budget(&cluster, "team", &team_id, "0.30", false).await?;
    let limit = 300_000;

    // Key A only ever reaches node 1, key B only node 2.
    let targets = [
        Target {
            url: cluster.url(1),
            secret: keys[0]["secret"].as_str().unwrap_or_default().into(),
            tag: 'a',
        },
        Target {
            url: cluster.url(2),
            secret: keys[1]["secret"].as_str().unwrap_or_default().into(),
            tag: 'b',
        },
    ];
    let started = Instant::now();
    let tally = drain(&targets, TEAM_CLIENTS, PADS_2).await?;
    let ok = tally.ok();
    let refused_of = |tag| tally.refusals.iter().filter(|(t, _, _)| *t == tag).count();
    println!(
        "key A on node 1: {} answered, {} refused; key B on node 2: {} answered, {} refused; {} failed, {} unfinished in {:?}; largest estimate {} error {}",
        tally.ok_of('a'),
        refused_of('a'),
        tally.ok_of('b'),
        refused_of('b'),
        tally.failures.len(),
        tally.unfinished,
        started.elapsed(),
        usd(tally.max_estimate),
        usd(tally.max_error),
    );
    ensure!(
        tally.failures.is_empty(),
        "requests neither 200 nor 402: {:?}",
        &tally.failures[..tally.failures.len().min(5)]
    );
    ensure!(
        tally.unfinished == 0,
        "{} clients never got a 402",
        tally.unfinished
    );
    ensure!(
        refused_of('a') > 0 && refused_of('b') > 0,
        "both keys end refused"
    );

    let (all, agreed) = settle(
        &cluster,
        &budget,
        Some(&format!("team={team_id}")),
        ok,
        Some(tally.true_cost),
    )
    .await?;
    for (node, f) in NODES.iter().zip(&all) {
        println!(
            "node {node}: team spent {} of {} reserved {} held here {} requests {} leases {}",
            usd(f.spent),
            usd(limit),
            usd(f.reserved),
            usd(f.held_here),
            f.requests,
            f.leases
        );
    }
    ensure!(
        agreed,
        "nodes did not agree on {ok} requests costing {}: {all:#?}",
        usd(tally.true_cost)
    );
    let spent = all[0].spent;
    ensure!(
        spent <= limit + tally.max_error,
        "team overspent: {} > {} + {}",
        usd(spent),
        usd(limit),
        usd(tally.max_error)
    );
    ensure!(
        spent * 2 >= limit,
        "team budget hardly used: {}",
        usd(spent)
    );
    for (node, f) in NODES.iter().zip(&all) {
        ensure!(
            f.leases_sum == f.reserved && f.spent + f.reserved <= limit + tally.max_error,
            "node {node}: spent {} reserved {} leases {}",
            usd(f.spent),
            usd(f.reserved),
            f.leases
        );
    }
    check_refusals(
        &tally,
        &Refusal {
            budget: budget.clone(),
            owner: format!("team {team_id}"),
            limit: "0.30".into(),
            resets_at: all[0].window_end.clone(),
        },
    )?;
    // Each key's own usage, as the third node sees it.
    for (key, tag) in keys.iter().zip(['a', 'b']) {
        let id = key["id"].as_str().unwrap_or_default();
        let u = cluster
            .admin(
                3,
                "GET",
                &format!("/api/v1/usage?virtual_key={id}&consistency=linearizable"),
                None,
            )
            .await?;
        ensure!(
            u["requests"].as_u64() == Some(tally.ok_of(tag)),
            "key {tag}: {} charged, {} answered",
            u["requests"],
            tally.ok_of(tag)
        );
    }
    let upstream = upstream_words(&fake, ok as usize).await;
    ensure!(
        upstream.len() as u64 == ok
            && upstream.iter().cloned().collect::<BTreeSet<_>>() == tally.words(),
        "the upstream answered {} model requests, the clients got {ok}",
        upstream.len()
    );
    Ok(())
}

// ------------------------------------------------------------------ 3: provider config

/// Sequential requests in test 3.
const SEQUENTIAL: u32 = 24;

#[tokio::test]
async fn provider_config_budget_exhausted_fails_over() -> Result<()> {
    let _turn = SERIAL.lock().await;
    let primary = FakeUpstream::start(&[])?;
    let secondary = FakeUpstream::start(&[])?;
    let cluster = Balanced::start(&primary_secondary_config(&primary, &secondary), &[]).await?;
    set_price(&cluster).await?;
    // The weighted pick uses the request's sequence number modulo the total weight: with
    // these weights the primary comes first for the first million requests of a node.
    let key = create_key(
        &cluster,
        json!({"name": "pc", "provider_configs": [
            {"provider": "primary", "weight": 1000},
            {"provider": "secondary", "weight": 0.001},
        ]}),
    )
    .await?;
    let key_id = key["id"].as_str().unwrap_or_default().to_owned();
    let secret = key["secret"].as_str().unwrap_or_default().to_owned();
    let pc = provider_config_id(&key, "primary")?;
    // Four requests' worth (each costs $0.0106, reserves $0.0111).
    let budget = create_budget(&cluster, "provider_config", &pc, "0.05", false).await?;
    let limit = 50_000;

    let client = http();
    let mut tally = Tally::default();
    let mut asks = Vec::new();
    let mut costs = BTreeMap::new();
    for n in 0..SEQUENTIAL {
        let a = ask(&format!("p{n:06}"), 300);
        let answer = send(&client, &cluster.url(0), &secret, &a).await;
        if let Ok((200, _, body)) = &answer {
            costs.insert(a.word.clone(), true_cost(&body["usage"]).unwrap_or(0));
        }
        tally.record('p', &a, answer);
        asks.push(a);
    }
    ensure!(
        tally.failures.is_empty() && tally.refusals.is_empty(),
        "every request answered 200: failures {:?}, refusals {:?}",
        tally.failures,
        tally
            .refusals
            .iter()
            .map(|(_, _, b)| b.to_string())
            .collect::<Vec<_>>()
    );

    // Both fakes log a request just after answering it.
    let total = SEQUENTIAL as usize;
    let logged = |fake: &FakeUpstream| -> BTreeSet<String> {
        fake.requests()
            .iter()
            .filter(|r| r["path"] == "/v1/messages")
            .filter_map(logged_word)
            .collect()
    };
    eventually(5, || async {
        logged(&primary).len() + logged(&secondary).len() >= total
    })
    .await;
    let (from_primary, from_secondary) = (logged(&primary), logged(&secondary));
    let mut path = String::new();
    let mut primary_spend = 0u64;
    let mut exhausted_at = None;
    for (i, a) in asks.iter().enumerate() {
        let (p, s) = (
            from_primary.contains(&a.word),
            from_secondary.contains(&a.word),
        );
        ensure!(
            p != s,
            "{} reached primary {p}, secondary {s}: exactly one, once",
            a.word
        );
        if p {
            path.push('P');
            ensure!(
                exhausted_at.is_none(),
                "request {i} reached the primary after its budget was exhausted at request {exhausted_at:?}: {path}"
            );
            primary_spend += costs[&a.word];
            // No room left for another request of this size.
            if primary_spend + a.estimate > limit {
                exhausted_at = Some(i);
            }
        } else {
            path.push('S');
        }
    }
    println!(
        "route of each request: {path} (primary spend {}, limit {}, estimate {}, error {})",
        usd(primary_spend),
        usd(limit),
        usd(tally.max_estimate),
        usd(tally.max_error)
    );
    ensure!(
        from_primary.len() + from_secondary.len() == total,
        "{} + {} upstream requests for {total} answers",
        from_primary.len(),
        from_secondary.len()
    );
    ensure!(
        path.starts_with('P'),
        "the first request went to the primary: {path}"
    );
    ensure!(
        path.ends_with('S'),
        "the last request went to the secondary: {path}"
    );
    ensure!(
        exhausted_at.is_some(),
        "the primary's budget was never used up ({} of {}): {path}",
        usd(primary_spend),
        usd(limit)
    );

    // Every answer charged to the key once (the secondary's too), the primary's to the
    // provider config's budget as well.
    let (all, agreed) = settle(
        &cluster,
        &budget,
        Some(&format!("virtual_key={key_id}")),
        u64::from(SEQUENTIAL),
        Some(primary_spend),
    )
    .await?;
    for (node, f) in NODES.iter().zip(&all) {
        println!(
            "node {node}: pc budget spent {} reserved {} held here {} leases {}; key requests {}",
            usd(f.spent),
            usd(f.reserved),
            usd(f.held_here),
            f.leases,
            f.requests
        );
    }
    ensure!(
        agreed,
        "nodes did not agree on {SEQUENTIAL} requests and the primary's spend {}: {all:#?}",
        usd(primary_spend)
    );
    ensure!(
        all[0].spent <= limit + tally.max_error,
        "pc budget overspent: {}",
        usd(all[0].spent)
    );
    Ok(())
}

// ------------------------------------------------------------------ 4: calendar rollover

/// How far before midnight the nodes' clocks are put: enough to exhaust the budget
/// through three nodes (a second or two) with a margin for a slow machine.
const LEAD_MS: u64 = 20_000;
/// Test 4's requests: estimate (39 + 12) tokens = $0.0051, true cost about $0.0046.
const PAD_4: usize = 60;

/// Writes the nodes' clock offset, atomically (they reread the file every ~50 ms).
fn set_offset(file: &Path, offset_ms: i64) -> Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, offset_ms.to_string())?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// Sends round-robin to nodes 1–3 until all three refuse in one round (at most
/// `rounds`); returns what the clients saw.
async fn exhaust_round_robin(
    cluster: &Balanced,
    secret: &str,
    tag: char,
    rounds: u32,
) -> Result<Tally> {
    let client = http();
    let mut tally = Tally::default();
    for round in 0..rounds {
        let mut refused = 0;
        for node in NODES {
            let a = ask(&format!("{tag}{node:02}r{round:03}"), PAD_4);
            let answer = send(&client, &cluster.url(node), secret, &a).await;
            if tally.record(tag, &a, answer) {
                refused += 1;
            }
        }
        if refused == NODES.len() {
            return Ok(tally);
        }
    }
    bail!(
        "after {rounds} rounds some node still admits: {} answered",
        tally.ok()
    )
}

#[tokio::test]
async fn budget_window_rolls_over_at_calendar_boundary_on_all_nodes() -> Result<()> {
    let _turn = SERIAL.lock().await;
    let fake = FakeUpstream::start(&[])?;
    let dir = temp_dir("budget-midnight");
    let clock = dir.join("clock-offset");
    // No file yet: the nodes start at the real time.
    let cluster = Balanced::start(
        &fake_config(&fake),
        &[("TOLLGATE_TEST_CLOCK_FILE", &clock.to_string_lossy())],
    )
    .await?;

    // A midnight at least a day ahead, so the clocks only ever move forward.
    let midnight = (now_ms() / DAY_MS + 2) * DAY_MS;
    let before = midnight as i64 - now_ms() as i64 - LEAD_MS as i64;
    set_offset(&clock, before)?;
    let moved = Instant::now();
    let (old_start, old_end) = (rfc3339(midnight - DAY_MS), rfc3339(midnight));
    let (new_start, new_end) = (rfc3339(midnight), rfc3339(midnight + DAY_MS));
    println!("nodes' clocks moved to {LEAD_MS} ms before {old_end}");

    set_price(&cluster).await?;
    let (key_id, secret, budget) = budgeted_key(&cluster, "daily", "0.05", true).await?;
    let limit = 50_000;
    let usage_query = format!("virtual_key={key_id}");
    // Every node reads the moved clock: the window it shows ends at that midnight.
    for node in NODES {
        let shows_old = eventually(5, || async {
            figures(&cluster, node, &budget, None)
                .await
                .is_ok_and(|f| f.window_start == old_start && f.window_end == old_end)
        })
        .await;
        ensure!(
            shows_old,
            "node {node} never showed the window {old_start}..{old_end}"
        );
    }

    // Exhaust the old window through every node.
    let old = exhaust_round_robin(&cluster, &secret, 'o', 40).await?;
    let exhausted_after = moved.elapsed();
    ensure!(
        exhausted_after < Duration::from_millis(LEAD_MS),
        "exhausting took {exhausted_after:?}, past the nodes' midnight: raise LEAD_MS"
    );
    ensure!(old.failures.is_empty(), "old window: {:?}", old.failures);
    check_refusals(
        &old,
        &Refusal {
            budget: budget.clone(),
            owner: format!("virtual_key {key_id}"),
            limit: "0.05".into(),
            resets_at: old_end.clone(),
        },
    )?;
    let (old_figures, agreed) = settle(
        &cluster,
        &budget,
        Some(&usage_query),
        old.ok(),
        Some(old.true_cost),
    )
    .await?;
    ensure!(agreed, "old window: nodes disagree: {old_figures:#?}");
    let old_spent = old_figures[0].spent;
    println!(
        "old window: {} answered, {} refused, spent {} reserved {} leases {} (checked {exhausted_after:?} after the move)",
        old.ok(),
        old.refusals.len(),
        usd(old_spent),
        usd(old_figures[0].reserved),
        old_figures[0].leases
    );
    ensure!(
        old_spent <= limit + old.max_error,
        "old window overspent: {}",
        usd(old_spent)
    );
    ensure!(
        old_spent + 3 * old.max_estimate >= limit,
        "old window hardly used: {}",
        usd(old_spent)
    );
    ensure!(
        moved.elapsed() < Duration::from_millis(LEAD_MS),
        "checking the old window ran past the nodes' midnight: raise LEAD_MS"
    );

    // Past midnight on every node.
    let after = midnight as i64 - now_ms() as i64 + 1_000;
    set_offset(&clock, after)?;
    let rolled = Instant::now();
    for node in NODES {
        let shows_new = eventually(5, || async {
            figures(&cluster, node, &budget, None)
                .await
                .is_ok_and(|f| f.window_start == new_start && f.window_end == new_end)
        })
        .await;
        let f = figures(&cluster, node, &budget, None).await?;
        ensure!(
            shows_new,
            "node {node} did not roll over to {new_start}: {f:?}"
        );
        // Nothing asked for in the new window yet: no spend, and the old window's leases
        // do not count.
        ensure!(
            f.spent == 0 && f.reserved == 0,
            "node {node} at {new_start}: spent {} reserved {} leases {}",
            usd(f.spent),
            usd(f.reserved),
            f.leases
        );
    }
    println!(
        "every node in the new window {:?} after the move",
        rolled.elapsed()
    );

    // Every node admits again, within a short bound.
    let client = http();
    let mut new = Tally::default();
    for node in NODES {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut n = 0;
        loop {
            let a = ask(&format!("n{node:02}r{n:03}"), PAD_4);
            n += 1;
            let answer = send(&client, &cluster.url(node), &secret, &a).await;
            let refused = new.record('n', &a, answer);
            ensure!(new.failures.is_empty(), "new window: {:?}", new.failures);
            if !refused {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "node {node} still refuses after the rollover: {:?}",
                new.refusals.last().map(|(_, _, b)| b.to_string())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "every node admitted again {:?} after the move ({} refused on the way)",
        rolled.elapsed(),
        new.refusals.len()
    );
    let total_requests = old.ok() + new.ok();
    let (all, agreed) = settle(
        &cluster,
        &budget,
        Some(&usage_query),
        total_requests,
        Some(new.true_cost),
    )
    .await?;
    for (node, f) in NODES.iter().zip(&all) {
        println!(
            "node {node}: window {}..{} spent {} reserved {} leases {}",
            f.window_start,
            f.window_end,
            usd(f.spent),
            usd(f.reserved),
            f.leases
        );
    }
    ensure!(
        agreed,
        "new window: nodes disagree or count old spend (new spend {}): {all:#?}",
        usd(new.true_cost)
    );
    for (node, f) in NODES.iter().zip(&all) {
        ensure!(
            f.window_start == new_start && f.spent + f.reserved <= limit,
            "node {node}: {f:?}"
        );
    }

    // The whole new window's room is there: exhaust it again.
    let again = exhaust_round_robin(&cluster, &secret, 'm', 40).await?;
    ensure!(
        again.failures.is_empty(),
        "new window: {:?}",
        again.failures
    );
    check_refusals(
        &again,
        &Refusal {
            budget: budget.clone(),
            owner: format!("virtual_key {key_id}"),
            limit: "0.05".into(),
            resets_at: new_end.clone(),
        },
    )?;
    let new_spend = new.true_cost + again.true_cost;
    let (all, agreed) = settle(
        &cluster,
        &budget,
        Some(&usage_query),
        total_requests + again.ok(),
        Some(new_spend),
    )
    .await?;
    ensure!(agreed, "new window exhausted: nodes disagree: {all:#?}");
    let max_error = new.max_error.max(again.max_error);
    println!(
        "new window exhausted: spent {} of {} ({} more answered)",
        usd(all[0].spent),
        usd(limit),
        again.ok()
    );
    ensure!(
        all[0].spent <= limit + max_error,
        "new window overspent: {}",
        usd(all[0].spent)
    );
    ensure!(
        all[0].spent + 3 * again.max_estimate >= limit,
        "new window hardly usable ({}): old leases still count?",
        usd(all[0].spent)
    );
    Ok(())
}

// ------------------------------------------------- leases come back from gone nodes

/// The nodes holding a lease of `budget`, as `node` reports them (linearizable).
async fn lease_holders(cluster: &Balanced, node: u16, budget: &str) -> Result<BTreeSet<u64>> {
    let view = cluster
        .admin(
            node,
            "GET",
            &format!("/api/v1/budgets/{budget}?consistency=linearizable"),
            None,
        )
        .await?;
    Ok(view["leases"]
        .as_array()
        .context("leases")?
        .iter()
        .filter(|l| micros(&l["outstanding_usd"]) > 0)
        .filter_map(|l| l["node"].as_u64())
        .collect())
}

#[tokio::test]
async fn leases_come_back_from_a_drained_node_and_a_killed_one() -> Result<()> {
    let _turn = SERIAL.lock().await;
    let (_fake, mut cluster) = priced_cluster("budget-reclaim").await?;
    let (_, secret, budget) = budgeted_key(&cluster, "k", "0.50", false).await?;
    let client = http();
    let mut n = 0u32;
    let urls: Vec<String> = (0..=3).map(|node| cluster.url(node)).collect();
    let mut one = |node: u16| {
        n += 1;
        let url = urls[usize::from(node)].clone();
        let ask = ask(&format!("r{n:06}"), 200);
        let (client, secret) = (client.clone(), secret.clone());
        async move {
            send(&client, &url, &secret, &ask)
                .await
                .map(|(status, _, _)| status)
        }
    };
    // Nodes 2 and 3 serve a few requests each, so both hold leases.
    for node in [2, 3, 2, 3] {
        ensure!(one(node).await? == 200, "request on node {node} refused");
    }
    let holders = lease_holders(&cluster, 1, &budget).await?;
    ensure!(
        holders.contains(&2) && holders.contains(&3),
        "nodes 2 and 3 should hold leases: {holders:?}"
    );

    // SIGTERM: node 2 drains and gives its leases back before it exits.
    cluster.stop(2).await?;
    let holders = lease_holders(&cluster, 1, &budget).await?;
    println!("after node 2 stopped: leases held by {holders:?}");
    ensure!(!holders.contains(&2), "a drained node gave its leases back");
    cluster.start_node(2).await?;
    // The drain's grace period and the restart took seconds, long enough for node 3 to
    // give an idle lease back by itself: a request makes it take one again.
    ensure!(one(3).await? == 200, "request on node 3 refused");
    let holders = lease_holders(&cluster, 1, &budget).await?;
    ensure!(
        holders.contains(&3),
        "node 3 should hold a lease: {holders:?}"
    );

    // SIGKILL: node 3 cannot give anything back; the leader reclaims its leases once its
    // replication has not moved for 15 s while requests keep the log moving.
    cluster.kill(3).await?;
    let killed = Instant::now();
    let mut reclaimed = None;
    while killed.elapsed() < Duration::from_secs(45) {
        ensure!(
            one(1).await? == 200,
            "a request on node 1 refused while room is left"
        );
        if !lease_holders(&cluster, 1, &budget).await?.contains(&3) {
            reclaimed = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reclaimed = reclaimed.context("node 3's leases were never reclaimed")?;
    println!("node 3's leases reclaimed {reclaimed:?} after its kill");
    ensure!(
        reclaimed >= Duration::from_secs(5),
        "reclaimed after {reclaimed:?}: before the node itself stops trusting its leases (5 s)"
    );

    // The room node 3 held is usable again: nodes 1 and 2 spend the budget to its end.
    let mut refused = 0;
    for i in 0..200 {
        match one(1 + (i % 2) as u16).await? {
            200 => {}
            402 => {
                refused += 1;
                if refused == 2 {
                    break;
                }
            }
            other => bail!("unexpected status {other}"),
        }
    }
    let view = cluster
        .admin(
            1,
            "GET",
            &format!("/api/v1/budgets/{budget}?consistency=linearizable"),
            None,
        )
        .await?;
    let spent = micros(&view["spent_usd"]);
    let largest = ask("r000000", 200).estimate;
    println!(
        "spent {} of $0.50 after the reclaim (largest estimate {})",
        usd(spent),
        usd(largest)
    );
    ensure!(spent <= 500_000, "spent {} past the limit", usd(spent));
    ensure!(
        spent + 2 * largest >= 500_000,
        "only {} of $0.50 spent: room is still locked in a lease",
        usd(spent)
    );
    Ok(())
}
