//! Real nodes forming a Raft cluster over mutual-TLS QUIC: keys and revocations are
//! shared, reads can be linearizable on any node, `/api/v1/cluster` reports every node,
//! a node joins as learner then voter and is removed with the CLI, garbage changes
//! nothing, and a follower killed between answering and committing loses no charge.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Instant;
use tollgate_tests::*;

const MODEL: &str = "claude-x";

fn ask(word: &str) -> Value {
    json!({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": format!("ECHO:{word}")}]})
}

fn admin_cli(gw: &Gateway, args: &[&str]) -> Result<(bool, Value, String)> {
    let out = Command::new(tollgate_bin())
        .arg("admin")
        .args(["--url", &gw.url(), "--token", ADMIN_TOKEN])
        .args(args)
        .output()?;
    let body = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Ok((
        out.status.success(),
        body,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn a_node_that_never_met_its_peers_is_not_ready() -> Result<()> {
    let dir = temp_dir("lone");
    let ca = dir.join("ca").to_string_lossy().into_owned();
    let certs = dir.join("n1").to_string_lossy().into_owned();
    cert(&["ca", "--out", &ca])?;
    cert(&["node", "--ca-dir", &ca, "--name", "n1", "--out", &certs])?;
    let args = [
        "--node-id",
        "1",
        "--raft-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--bootstrap-expect",
        "3",
        "--peer",
        &format!("127.0.0.1:{}", free_port()),
        "--peer",
        &format!("127.0.0.1:{}", free_port()),
        "--cert-dir",
        &certs,
    ];
    let gw = Gateway::start_with_args("", args.iter().map(|s| s.to_string()).collect()).await?;
    let r = http()
        .get(format!("{}/health/ready", gw.url()))
        .send()
        .await?;
    assert_eq!(r.status(), 503, "a node without a cluster is not ready");
    Ok(())
}

#[tokio::test]
async fn three_nodes_share_keys_revocations_and_membership() -> Result<()> {
    let started = Instant::now();
    let mut c = Cluster::start("", 3).await?;
    let leader = c.leader(&[0, 1, 2], 20).await?;
    for i in 0..3 {
        c.wait_ready(i, 10).await?;
    }
    println!("cluster formed after {:?}", started.elapsed());

    // Every node reports every node, each from its own figures.
    let view = c.view(1).await;
    let nodes = view["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 3, "{view}");
    for n in &nodes {
        assert_eq!(n["state"], "ready", "{view}");
        assert!(n["applied_index"].as_u64() > Some(0), "{view}");
        assert!(n["committed_index"].as_u64() > Some(0), "{view}");
        assert!(n["storage_bytes"].as_u64() > Some(0), "{view}");
        assert!(n["staleness_ms"].as_u64() < Some(5_000), "{view}");
        assert_eq!(n["leader"], leader, "{view}");
    }
    assert_eq!(
        nodes.iter().filter(|n| n["role"] == "leader").count(),
        1,
        "{view}"
    );

    // Created through node 1, readable at once on node 3 with a linearizable read,
    // and usable through node 3.
    let (id, secret) = c.nodes[0].key(json!([{"provider": "mock"}])).await?;
    let (status, key) = c.nodes[2]
        .admin(
            "GET",
            &format!("/api/v1/virtual-keys/{id}?consistency=linearizable"),
            None,
        )
        .await?;
    assert_eq!(status, 200, "linearizable read on node 3: {key}");
    let url3 = c.nodes[2].url();
    let works = eventually(5, || async {
        messages(&url3, &secret, &ask("n3"))
            .await
            .map(|r| r.0 == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(works, "key created on node 1 not accepted by node 3");
    println!("key usable on node 3 after {:?}", started.elapsed());

    // Revoked through node 2: refused by every node.
    let (status, _) = c.nodes[1]
        .admin(
            "PATCH",
            &format!("/api/v1/virtual-keys/{id}"),
            Some(json!({"disabled": true})),
        )
        .await?;
    assert_eq!(status, 200);
    for n in &c.nodes {
        let url = n.url();
        let refused = eventually(2, || async {
            messages(&url, &secret, &ask("revoked"))
                .await
                .map(|r| r.0 == 401)
                .unwrap_or(false)
        })
        .await;
        assert!(refused, "revoked key still accepted by {url}");
    }

    // Garbage on the admin API changes nothing.
    let (_, before) = c.nodes[0]
        .admin("GET", "/api/v1/virtual-keys", None)
        .await?;
    let (status, body) = c.nodes[1]
        .admin("GET", "/api/v1/cluster?consistency=sometimes", None)
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("consistency"), "{body}");
    for garbage in [
        &b"\x00\xff{{{"[..],
        b"{\"name\": 3}",
        b"[]",
        b"{\"name\":\"x\",\"provider_configs\":[],\"bogus\":1}",
    ] {
        let r = http()
            .post(format!("{}/api/v1/virtual-keys", c.nodes[1].url()))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(garbage.to_vec())
            .send()
            .await?;
        assert_eq!(r.status(), 400, "garbage {garbage:?}");
    }
    let r = http()
        .delete(format!("{}/api/v1/cluster/nodes/1", c.nodes[1].url()))
        .send()
        .await?;
    assert_eq!(r.status(), 401, "membership changes need the admin token");
    let (_, after) = c.nodes[2]
        .admin("GET", "/api/v1/virtual-keys?consistency=linearizable", None)
        .await?;
    assert_eq!(before, after, "garbage changed the keys");
    assert_eq!(c.view(0).await["voters"], json!([1, 2, 3]));

    // A fourth node joins through node 2: learner, then voter, then ready with the
    // state everyone has.
    let joined_at = Instant::now();
    let n4 = c.join(1).await?;
    c.wait_ready(n4, 30).await?;
    let voters = eventually(10, || async {
        c.view(0).await["voters"] == json!([1, 2, 3, 4])
    })
    .await;
    assert!(voters, "node 4 did not become a voter: {}", c.view(0).await);
    println!("node 4 joined in {:?}", joined_at.elapsed());
    let (status, _, _) = messages(&c.nodes[n4].url(), &secret, &ask("n4")).await?;
    assert_eq!(status, 401, "node 4 knows the revocation");

    // Removed with the CLI through node 3; removing it again is refused. (Once the
    // cluster speaks the protocol that audits removals.)
    let raised = eventually(15, || async {
        c.view(0).await["protocol_version"] == NEWEST
    })
    .await;
    assert!(raised, "protocol not raised: {}", c.view(0).await);
    let (ok, body, err) = admin_cli(&c.nodes[2], &["cluster", "remove", "4"])?;
    assert!(ok, "cluster remove 4: {body} {err}");
    assert_eq!(body["voters"], json!([1, 2, 3]), "{body}");
    let (ok, _, err) = admin_cli(&c.nodes[0], &["cluster", "remove", "4"])?;
    assert!(!ok, "removing a removed node must fail");
    assert!(err.contains("404") || err.contains("409"), "{err}");
    // The removal is an audit event, once.
    let (_, events) = c.nodes[0]
        .admin(
            "GET",
            "/api/v1/audit?action=node.remove&consistency=linearizable",
            None,
        )
        .await?;
    let removals: Vec<&Value> = events["events"]
        .as_array()
        .map(|e| e.iter().collect())
        .unwrap_or_default();
    assert_eq!(removals.len(), 1, "{events}");
    assert_eq!(removals[0]["target"], json!({"kind": "node", "id": "4"}));
    assert_eq!(removals[0]["actor"]["kind"], "admin_token");
    let (ok, body, err) = admin_cli(&c.nodes[0], &["cluster", "status", "--linearizable"])?;
    assert!(ok, "{err}");
    assert_eq!(body["voters"], json!([1, 2, 3]), "{body}");
    // The cluster still commits without node 4.
    c.nodes[n4].kill();
    let (status, _) = c.nodes[0]
        .admin("POST", "/api/v1/customers", Some(json!({"name": "after"})))
        .await?;
    assert_eq!(status, 201);
    Ok(())
}

/// The hook holds a follower's proposals for 5 s: its answered charges sit in its outbox
/// only; kill -9 it there, and after the restart every charge is applied once, on all.
#[tokio::test]
async fn a_follower_killed_between_answer_and_commit_loses_no_charge() -> Result<()> {
    let mut c = Cluster::start("", 3).await?;
    let leader = c.leader(&[0, 1, 2], 20).await?;
    let f = (0..3).find(|i| *i as u64 + 1 != leader).unwrap_or(0);
    c.nodes[f].set_env(&[("TOLLGATE_TEST_PROPOSE_DELAY_MS", "5000")]);
    c.nodes[f].restart().await?;
    for i in 0..3 {
        c.wait_ready(i, 20).await?;
    }
    c.nodes[0]
        .create(
            "/api/v1/prices",
            json!({"model": MODEL, "input_per_mtok_usd": "3", "output_per_mtok_usd": "15"}),
        )
        .await?;
    let (id, secret) = c.nodes[0].key(json!([{"provider": "mock"}])).await?;
    c.nodes[0]
        .create(
            "/api/v1/budgets",
            json!({"owner": {"kind": "virtual_key", "id": id}, "max_limit_usd": "10.00", "reset_duration": "1d"}),
        )
        .await?;
    let url = c.nodes[f].url();
    let known = eventually(5, || async {
        messages(&url, &secret, &ask("warm"))
            .await
            .map(|r| r.0)
            .ok()
            == Some(200)
    })
    .await;
    assert!(known, "the follower never accepted the key");
    for i in 0..4 {
        let (status, _, _) = messages(&url, &secret, &ask(&format!("c{i}"))).await?;
        assert_eq!(status, 200);
    }
    // Answered means written to the follower's outbox; the hook keeps them there.
    let pending = eventually(10, || async {
        let pending = c.nodes[f].metric("tollgate_outbox_pending").await;
        pending.is_ok_and(|n| n >= 4)
    })
    .await;
    assert!(pending, "the answered charges in the outbox");
    let committed = c.nodes[(f + 1) % 3].usage(&id).await?;
    assert_eq!(committed["requests"], 0, "not committed yet: {committed}");
    c.nodes[f].kill();
    c.nodes[f].set_env(&[]);
    c.nodes[f].restart().await?;
    c.wait_ready(f, 20).await?;

    // Every node reports the five charges, once, with the same spend.
    let mut figures = Vec::new();
    for i in 0..3 {
        let n = &c.nodes[i];
        let applied = eventually(10, || async {
            n.usage(&id)
                .await
                .map(|u| u["requests"] == 5)
                .unwrap_or(false)
        })
        .await;
        let usage = n.usage(&id).await?;
        if !applied {
            bail!("node {} shows {usage}", i + 1);
        }
        figures.push((
            usage["requests"].clone(),
            usage["budgets"][0]["spent_usd"].clone(),
        ));
    }
    assert!(figures.iter().all(|f| *f == figures[0]), "{figures:?}");
    assert!(micros(&figures[0].1) > 0, "{figures:?}");
    // A further restart replays nothing twice.
    c.nodes[f].restart().await?;
    c.wait_ready(f, 20).await?;
    let settled = eventually(10, || async {
        c.nodes[f].metric("tollgate_outbox_pending").await.ok() == Some(0)
    })
    .await;
    assert!(settled, "the outbox settles after the restart");
    assert_eq!(c.nodes[f].usage(&id).await?["requests"], 5);
    Ok(())
}

/// A node cut off from the quorum keeps serving on its last applied state, says how stale
/// that is, and its charges are committed once the quorum is back.
#[tokio::test]
async fn a_node_without_quorum_keeps_serving_and_its_charges_land_later() -> Result<()> {
    let mut c = Cluster::start("", 3).await?;
    c.leader(&[0, 1, 2], 20).await?;
    for i in 0..3 {
        c.wait_ready(i, 20).await?;
    }
    let (id, secret) = c.nodes[0].key(json!([{"provider": "mock"}])).await?;
    let url = c.nodes[2].url();
    let known = eventually(5, || async {
        messages(&url, &secret, &ask("before"))
            .await
            .map(|r| r.0)
            .ok()
            == Some(200)
    })
    .await;
    assert!(known, "node 3 never accepted the key");

    // Nodes 1 and 2 die: node 3 has no quorum.
    c.nodes[0].kill();
    c.nodes[1].kill();
    for i in 0..3 {
        let (status, _, _) = messages(&url, &secret, &ask(&format!("alone{i}"))).await?;
        assert_eq!(status, 200, "node 3 refused a request without a quorum");
    }
    let stale = eventually(5, || async {
        let view = c.view(2).await;
        view["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == 3))
            .and_then(|n| n["staleness_ms"].as_u64())
            > Some(1_000)
    })
    .await;
    assert!(stale, "staleness not reported: {}", c.view(2).await);
    let metrics = http()
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let staleness: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tollgate_staleness_milliseconds "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(staleness > 1_000, "{metrics}");
    let r = http().get(format!("{url}/health/ready")).send().await?;
    assert_eq!(
        r.status(),
        200,
        "a caught-up node stays ready without the quorum"
    );

    // The quorum is back: node 3's charges (1 before, 3 alone) are committed, once.
    c.nodes[0].restart().await?;
    c.nodes[1].restart().await?;
    for i in 0..3 {
        let n = &c.nodes[i];
        let applied = eventually(20, || async {
            n.usage(&id)
                .await
                .map(|u| u["requests"] == 4)
                .unwrap_or(false)
        })
        .await;
        if !applied {
            bail!("node {} shows {}", i + 1, n.usage(&id).await?);
        }
    }
    Ok(())
}

/// The newest protocol version, which a cluster of this build moves to.
const NEWEST: u16 = tollgate_proto::peer::PROTOCOL_VERSION;

/// Three ready nodes, once the cluster has moved to the newest protocol.
async fn cluster_at_newest_protocol() -> Result<Cluster> {
    let cluster = Cluster::start("", 3).await?;
    for i in 0..3 {
        cluster.wait_ready(i, 30).await?;
    }
    let raised = eventually(15, || async {
        cluster.view(0).await["protocol_version"] == NEWEST
    })
    .await;
    if !raised {
        bail!("not raised: {}", cluster.view(0).await);
    }
    Ok(cluster)
}

/// Asserts that a node capped at protocol 1 stops on its own (exit 1) and says why.
async fn assert_stops_behind_the_newest(node: &mut Gateway) -> Result<()> {
    node.wait_exited(20).await;
    let status = node.exit_status();
    let log = std::fs::read_to_string(node.data_dir.with_extension("log"))?;
    assert!(
        status.is_some_and(|s| s.code() == Some(1)),
        "exit {status:?}; log: {log}"
    );
    assert!(
        log.contains(&format!(
            "uses protocol version {NEWEST}, and this node speaks 1-1"
        )),
        "{log}"
    );
    Ok(())
}

/// A write through `gw` succeeds.
async fn write_through(gw: &Gateway, name: &str) -> Result<()> {
    let (status, body) = gw
        .admin("POST", "/api/v1/customers", Some(json!({ "name": name })))
        .await?;
    if status != 201 {
        bail!("write {name:?}: {status} {body}");
    }
    Ok(())
}

/// A node restarted with a build behind the cluster's protocol version (a downgrade after
/// the cluster moved to version 2) meets the raise in its own log and stops: it drains
/// and exits 1, naming the version to run. The others go on.
#[tokio::test]
async fn a_node_restarted_below_the_clusters_protocol_version_stops() -> Result<()> {
    let mut cluster = cluster_at_newest_protocol().await?;
    let node = &mut cluster.nodes[2];
    node.set_env(&[("TOLLGATE_PROTOCOL_VERSION", "1")]);
    // It may refuse at once or stop once it has replayed its log.
    let _ = node.restart().await;
    assert_stops_behind_the_newest(node).await?;
    write_through(&cluster.nodes[0], "after the downgrade").await
}

/// An old build (protocol 1) joining a cluster at protocol 2 is sent the raise with the
/// log, stops (drain, exit 1), and holds nothing up: the leader's wait for the learner
/// is bounded and outside the hand-over's gate, so the leader still hands over at once
/// when it drains.
#[tokio::test]
async fn an_old_build_joining_a_newer_cluster_stops_and_holds_nothing_up() -> Result<()> {
    let mut cluster = cluster_at_newest_protocol().await?;
    let old = cluster
        .join_with_args(0, &["--protocol-version", "1"])
        .await?;
    assert_stops_behind_the_newest(&mut cluster.nodes[old]).await?;
    let leader = cluster.leader(&[0, 1, 2], 10).await? as usize - 1;
    let gw = &mut cluster.nodes[leader];
    gw.signal_term();
    gw.wait_exited(20).await;
    let log = std::fs::read_to_string(gw.data_dir.with_extension("log"))?;
    assert!(log.contains("leadership handed over"), "{log}");
    let other = (leader + 1) % 3;
    write_through(&cluster.nodes[other], "after the old build left").await
}
