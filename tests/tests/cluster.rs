//! Three real nodes forming a Raft cluster over mutual-TLS QUIC: a key created through
//! one node works through another, and a key revoked through a third is refused by all.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use tollgate_tests::*;

fn cert(args: &[&str]) -> Result<()> {
    let out = Command::new(tollgate_bin())
        .arg("cert")
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "tollgate cert {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn ask() -> Value {
    json!({"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": "ECHO:cluster"}]})
}

/// Polls until `check` holds, for at most `secs`.
async fn eventually<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(
    secs: u64,
    check: F,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn three_nodes_share_keys_and_revocations() -> Result<()> {
    let started = Instant::now();
    let dir = temp_dir("cluster");
    let ca = dir.join("ca");
    cert(&["ca", "--out", ca.to_str().unwrap_or_default()])?;
    let raft: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes = Vec::new();
    for i in 0..3 {
        let certs = dir.join(format!("n{}", i + 1));
        cert(&[
            "node",
            "--ca-dir",
            ca.to_str().unwrap_or_default(),
            "--name",
            &format!("n{}", i + 1),
            "--out",
            certs.to_str().unwrap_or_default(),
        ])?;
        let mut args = vec![
            "--node-id".to_string(),
            (i + 1).to_string(),
            "--raft-addr".into(),
            format!("127.0.0.1:{}", raft[i]),
            "--bootstrap-expect".into(),
            "3".into(),
            "--cert-dir".into(),
            certs.to_string_lossy().into_owned(),
        ];
        for (j, port) in raft.iter().enumerate() {
            if j != i {
                args.push("--peer".into());
                args.push(format!("127.0.0.1:{port}"));
            }
        }
        nodes.push(Gateway::start_with_args("", args).await?);
        if i == 0 {
            let r = http()
                .get(format!("{}/health/ready", nodes[0].url()))
                .send()
                .await?;
            assert_eq!(r.status(), 503, "a node without a cluster is not ready");
        }
    }
    println!("nodes up after {:?}", started.elapsed());
    // A leader, seen the same by every node.
    let formed = eventually(20, || async {
        let mut leaders = Vec::new();
        for n in &nodes {
            let (_, v) = n
                .admin("GET", "/api/v1/cluster", None)
                .await
                .unwrap_or_default();
            leaders.push(v["leader"].clone());
        }
        leaders[0].is_u64() && leaders.iter().all(|l| *l == leaders[0])
    })
    .await;
    assert!(formed, "no common leader");
    let ready = eventually(10, || async {
        let mut all = true;
        for n in &nodes {
            let r = http().get(format!("{}/health/ready", n.url())).send().await;
            all &= r.map(|r| r.status() == 200).unwrap_or(false);
        }
        all
    })
    .await;
    assert!(ready, "every node ready once the cluster formed");
    let (_, view) = nodes[0].admin("GET", "/api/v1/cluster", None).await?;
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(3), "{view}");

    println!("cluster formed after {:?}", started.elapsed());
    // Created through node 1 (whoever leads), usable through node 3.
    let (id, secret) = nodes[0].key(json!([{"provider": "mock"}])).await?;
    let url3 = nodes[2].url();
    let works = eventually(5, || async {
        messages(&url3, &secret, &ask())
            .await
            .map(|r| r.0 == 200)
            .unwrap_or(false)
    })
    .await;
    assert!(works, "key created on node 1 not accepted by node 3");

    println!("key usable on node 3 after {:?}", started.elapsed());
    // Revoked through node 2: refused by every node.
    let (status, _) = nodes[1]
        .admin(
            "PATCH",
            &format!("/api/v1/virtual-keys/{id}"),
            Some(json!({"disabled": true})),
        )
        .await?;
    assert_eq!(status, 200);
    for n in &nodes {
        let url = n.url();
        let refused = eventually(2, || async {
            messages(&url, &secret, &ask())
                .await
                .map(|r| r.0 == 401)
                .unwrap_or(false)
        })
        .await;
        assert!(refused, "revoked key still accepted by {url}");
    }
    Ok(())
}
