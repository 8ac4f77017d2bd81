//! A careless operator is told what is wrong, and what they start is private and whole:
//! bad configs and flags stop the start with the reason; a second process on a data dir
//! is refused naming the first; the data dir is the node's alone (0700/0600); the admin
//! API's 413 is JSON; two different virtual keys in one request are refused; a node
//! given another cluster CA's certificate says so; a `cluster.sh up` that fails leaves
//! nothing running.

use anyhow::{bail, Result};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_tests::*;

/// Runs `tollgate serve ARGS` (with a config of `config`), which must exit non-zero
/// within 30 s; its stderr.
fn refused_start(config: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let dir = temp_dir("refused");
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, config)?;
    let mut child = Command::new(tollgate_bin())
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("tollgate serve {args:?} did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        bail!("tollgate serve {args:?} succeeded");
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A config, `serve` flags, environment, and what the refusal must say.
type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn careless_configs_and_flags_stop_the_start_with_the_reason() -> Result<()> {
    let raft = format!("127.0.0.1:{}", free_port());
    let cases: [Case<'_>; 6] = [
        (
            "[limits]\nmax_concurrent_requests = 0\n",
            vec![],
            vec![],
            "limits.max_concurrent_requests: must be at least 1",
        ),
        (
            "[limits]\nheader_read_timeout_ms = 0\n",
            vec![],
            vec![],
            "limits.header_read_timeout_ms",
        ),
        (
            "[[providers]]\nname = \"mock\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9\"\n",
            vec![],
            vec![],
            "built-in mock provider's name",
        ),
        (
            "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9\"\napi_key = \"env:EMPTY_KEY\"\n",
            vec![],
            vec![("EMPTY_KEY", " ")],
            "api_key env:EMPTY_KEY is empty",
        ),
        (
            "",
            vec!["--node-id", "0", "--raft-addr", &raft],
            vec![],
            "a node id must be a positive number",
        ),
        (
            "",
            vec!["--node-id", "1", "--raft-addr", &raft, "--bootstrap-expect", "3"],
            vec![],
            "name each of the other 2 with --peer",
        ),
    ];
    for (config, args, env, want) in cases {
        let stderr = refused_start(config, &args, &env)?;
        assert!(stderr.contains(want), "{config:?} {args:?}: {stderr}");
    }
    Ok(())
}

#[tokio::test]
async fn a_data_dir_is_one_process_s_and_private() -> Result<()> {
    let gw = Gateway::start("").await?;
    // A second node on the same data dir is refused, naming the first.
    let mut second = Command::new(tollgate_bin())
        .args(["serve", "--data-dir"])
        .arg(&gw.data_dir)
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = second.kill();
    let out = second.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let pid = gw.pid().unwrap_or(0);
    assert!(
        stderr.contains(&format!(
            "is in use by another tollgate process (pid {pid})"
        )),
        "{stderr}"
    );
    // What the node writes is for its user only.
    fn walk(path: &Path, out: &mut Vec<(String, u32, bool)>) -> Result<()> {
        let meta = std::fs::metadata(path)?;
        out.push((
            path.display().to_string(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                walk(&entry?.path(), out)?;
            }
        }
        Ok(())
    }
    let mut entries = Vec::new();
    walk(&gw.data_dir, &mut entries)?;
    assert!(entries.len() > 3, "{entries:?}");
    for (path, mode, dir) in entries {
        let want = if dir { 0o700 } else { 0o600 };
        assert_eq!(mode & 0o077, 0, "{path} is {mode:o}, want {want:o}");
    }
    Ok(())
}

#[tokio::test]
async fn the_admin_413_is_json_and_two_keys_in_one_request_are_refused() -> Result<()> {
    let gw = Gateway::start("[limits]\nmax_body_bytes = 4096\n").await?;
    let (status, v) = gw
        .admin(
            "POST",
            "/api/v1/customers",
            Some(json!({"name": "x".repeat(10_000)})),
        )
        .await?;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["type"], "request_too_large", "{v}");
    let (_, a) = gw.key(json!([{"provider": "mock"}])).await?;
    let (_, b) = gw.key(json!([{"provider": "mock"}])).await?;
    let r = http()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", &a)
        .bearer_auth(&b)
        .json(&json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await?;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("two different virtual keys"),
        "{body}"
    );
    // The same key twice is fine.
    let r = http()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", &a)
        .bearer_auth(&a)
        .json(&json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 200);
    Ok(())
}

/// Two nodes whose certificates come from different cluster CAs cannot form a cluster,
/// and the logs say why instead of waiting in silence.
#[tokio::test]
async fn a_certificate_from_another_ca_is_named_in_the_log() -> Result<()> {
    let dir = temp_dir("two-cas");
    let ports = [free_port(), free_port()];
    let mut nodes = Vec::new();
    for (i, ca) in ["ca1", "ca2"].iter().enumerate() {
        let ca_dir = dir.join(ca);
        let certs = dir.join(format!("n{}", i + 1));
        cert(&["ca", "--out", &ca_dir.to_string_lossy()])?;
        cert(&[
            "node",
            "--ca-dir",
            &ca_dir.to_string_lossy(),
            "--name",
            &format!("n{}", i + 1),
            "--out",
            &certs.to_string_lossy(),
        ])?;
        let args = vec![
            "--node-id".to_string(),
            (i + 1).to_string(),
            "--raft-addr".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--cert-dir".into(),
            certs.to_string_lossy().into_owned(),
            "--bootstrap-expect".into(),
            "2".into(),
            "--peer".into(),
            format!("127.0.0.1:{}", ports[1 - i]),
        ];
        nodes.push(Gateway::start_with("", &[], args).await?);
    }
    let logs = || {
        nodes
            .iter()
            .map(|n| std::fs::read_to_string(n.data_dir.with_extension("log")).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let told = eventually(30, || async {
        logs()
            .iter()
            .all(|l| l.contains("from the same cluster CA"))
    })
    .await;
    assert!(told, "{:#?}", logs());
    // Garbage datagrams on the peer port (from a source anyone can spoof) and the
    // refused handshakes that keep coming are not logged one line each.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    for n in 0..2_000u32 {
        let mut datagram = vec![0xc3u8; 1200];
        datagram[1..5].copy_from_slice(&n.to_be_bytes());
        socket.send_to(&datagram, ("127.0.0.1", ports[0]))?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A formation attempt every few hundred milliseconds for seconds, each refused: one
    // WARN line per 10 s per node, not one per refusal.
    for log in logs() {
        let refused = log.matches("peer handshake refused").count();
        assert!(refused <= 2, "{refused} refusal lines: {log}");
        assert!(log.lines().count() < 40, "{log}");
    }
    Ok(())
}

/// `cluster.sh up` with node 3's port taken: it fails, naming the node, and stops the
/// nodes and the HAProxy it had started.
#[test]
fn a_failed_cluster_up_leaves_nothing_running() -> Result<()> {
    prereq::ensure_haproxy()?;
    let cluster = Scripted::new(temp_dir("up-fails").join("cluster"))?;
    let _taken = std::net::TcpListener::bind(("127.0.0.1", cluster.base + 3))?;
    let config = temp_dir("up-fails-config").join("tollgate.toml");
    std::fs::write(&config, "")?;
    let error = match cluster.run(&["up", "--config", &config.to_string_lossy()]) {
        Ok(out) => bail!("up succeeded with a port taken: {out}"),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("node 3 exited"), "{error}");
    assert!(error.contains("stopping what it started"), "{error}");
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    for node in [1, 2, 3] {
        let pid = cluster.pid(node)?;
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(50));
            !alive(pid)
        });
        assert!(gone, "node {node} (pid {pid}) still runs");
    }
    let haproxy: u32 = std::fs::read_to_string(cluster.dir.join("haproxy.pid"))?
        .trim()
        .parse()?;
    assert!(!alive(haproxy), "HAProxy (pid {haproxy}) still runs");
    Ok(())
}

/// List endpoints answer in pages: `?limit=N` after `?cursor=C`, in id order, with the
/// `next_cursor` to follow; a page size out of range is a 400 naming `limit`.
#[tokio::test]
async fn lists_come_in_pages_that_follow_each_other() -> Result<()> {
    let gw = Gateway::start("").await?;
    for n in 0..25 {
        gw.create("/api/v1/customers", json!({"name": format!("c{n:02}")}))
            .await?;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/customers?limit=10&cursor={c}"),
            None => "/api/v1/customers?limit=10".into(),
        };
        let (status, page) = gw.admin("GET", &path, None).await?;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let data = page["data"].as_array().cloned().unwrap_or_default();
        assert!(data.len() <= 10);
        seen.extend(
            data.iter()
                .filter_map(|c| c["id"].as_str().map(str::to_owned)),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "pages do not end");
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        (seen.len(), sorted),
        (25, seen.clone()),
        "in id order, each once"
    );
    let (_, all) = gw.admin("GET", "/api/v1/customers", None).await?;
    assert_eq!(all["data"].as_array().map(Vec::len), Some(25));
    assert!(all["next_cursor"].is_null());
    let (status, v) = gw.admin("GET", "/api/v1/customers?limit=0", None).await?;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "limit");
    Ok(())
}
