//! Harness for black-box tests: real `tollgate` processes and the fake Anthropic upstream
//! on loopback, plus small HTTP helpers. Every process is killed when its handle drops.
//!
//! # Layout
//! - `gateway`: `Gateway`, a `tollgate serve` child with its own data dir and port.
//! - `cluster`: `Cluster`, several gateways forming a Raft cluster (certificates, flags).
//! - `balanced`: `Balanced`, three nodes behind HAProxy (`deploy/haproxy.cfg`), and the
//!   `Nodes` helpers it shares with `Scripted`.
//! - `scripted`: `Scripted`, the same made by `scripts/cluster.sh`, for the operator
//!   scripts' own tests.
//! - `upstream`: `FakeUpstream`, `fake_anthropic.py` with its JSONL request log;
//!   `FakeBedrock`, `sink/fake_bedrock.py` (SigV4 checked with botocore).
//! - `kit_dir`, `tollgate_bin`, `bench_bin`: where the real-client kit and the binaries are.
//! - `gossip`: what gossip shows of a cluster, and a gossip peer run by the test.
//! - `prereq`: the Python SDKs and HAProxy, installed on first use.
//! - `budget`: requests with known costs, client tallies and cluster figures for the
//!   budget tests.

use anyhow::{bail, Result};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod balanced;
pub mod budget;
pub mod cluster;
pub mod gateway;
pub mod gossip;
pub mod prereq;
pub mod scripted;
pub mod upstream;

pub use balanced::{Balanced, Nodes, NODES};
pub use cluster::Cluster;
pub use gateway::{provider_config_id, Gateway};
pub use scripted::{free_base, Scripted};
pub use upstream::{
    bedrock_provider, fake_config, primary_secondary_config, FakeBedrock, FakeUpstream,
    MockUpstream, WebhookSink, BEDROCK_ACCESS_KEY, BEDROCK_ENV, BEDROCK_SECRET_KEY,
    BEDROCK_SESSION_TOKEN,
};

/// Admin token every test gateway is started with.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Provider key the fake upstream requires; the gateway must send it, never the virtual key.
pub const UPSTREAM_KEY: &str = "sk-upstream-secret";
/// How long a process gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The real-client kit: `../shared/claude-code` next to the checkout when present (the
/// reference copy), else the copy vendored in `tests/kit`.
pub fn kit_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TOLLGATE_KIT_DIR") {
        return PathBuf::from(dir);
    }
    let shared = workspace_dir().join("../shared/claude-code");
    if shared.join("fake_anthropic.py").exists() {
        return shared;
    }
    workspace_dir().join("tests/kit")
}

/// The `tollgate` binary with the `test-hooks` feature, built once per test run.
pub fn tollgate_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_bin("tollgate", &["--features", "tollgate-node/test-hooks"]))
        .clone()
}

/// The `tollgate-bench` binary (mock upstream, load generator), built once per test run.
pub fn bench_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build_bin("tollgate-bench", &[]))
        .clone()
}

/// Builds one binary of the workspace as `cargo test --workspace` builds it: every member
/// selected, so features unify the same way and a fresh build is a no-op.
fn build_bin(bin: &str, extra: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-q", "--workspace", "--bin", bin])
        .args(extra)
        .current_dir(workspace_dir());
    // What cargo set for this test crate would reach the build scripts of the nested
    // build (ring's reads CARGO_MANIFEST_DIR) and make it rebuild them and everything
    // above them, and the next outer build rebuild them again.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name.as_ref(),
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
            )
        {
            build.env_remove(name.as_ref());
        }
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build of {bin} failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_dir().join("target"));
    target.join("debug").join(bin)
}

/// A loopback port free for both TCP and UDP (a node's Raft address is QUIC, its HTTP
/// address TCP), never handed out twice by this process: the OS may offer a port it just
/// gave back, and a cluster picks all its ports before any node binds them.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1_000 {
        let Ok(port) = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
        else {
            continue;
        };
        if !given.contains(&port) && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    0
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tollgate-test-{name}-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

/// Calls the admin API at `base` with the test admin token; returns the status and the
/// JSON body (`null` when the body is not JSON).
pub async fn admin_at(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let client = http();
    let url = format!("{base}{path}");
    let mut req = match method {
        "POST" => client.post(url),
        "PATCH" => client.patch(url),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    }
    .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Sends an Anthropic Messages request with `x-api-key`; returns status, headers and body.
pub async fn messages(
    url: &str,
    secret: &str,
    body: &Value,
) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
    messages_raw(&http(), url, secret, serde_json::to_vec(body)?).await
}

/// `messages` with the exact body bytes and a client of the caller's (kept alive across
/// requests).
pub async fn messages_raw(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    body: Vec<u8>,
) -> Result<(u16, reqwest::header::HeaderMap, Value)> {
    let r = client
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", secret)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await?;
    Ok((
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Dollars in a decimal string as micro-dollars.
pub fn micros(usd: &Value) -> u64 {
    let s = usd.as_str().unwrap_or("0");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac = format!("{frac:0<6}");
    whole.parse::<u64>().unwrap_or(0) * 1_000_000 + frac[..6].parse::<u64>().unwrap_or(0)
}

/// Polls until `check` holds, for at most `secs`.
pub async fn eventually<F: Fn() -> Fut, Fut: std::future::Future<Output = bool>>(
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

/// Runs `tollgate cert ...`.
pub fn cert(args: &[&str]) -> Result<()> {
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

/// Every record of the request log matching `query` (`virtual_key=...&session=...`),
/// asked of the node at `base`, page by page, newest first; fails on a partial answer or
/// a record listed twice.
pub async fn log_records(base: &str, query: &str) -> Result<Vec<Value>> {
    let mut records: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/logs?{query}&limit=1000&cursor={c}"),
            None => format!("/api/v1/logs?{query}&limit=1000"),
        };
        let (status, page) = admin_at(base, "GET", &path, None).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status} {page}");
        anyhow::ensure!(page["partial"] == false, "partial answer: {page}");
        for r in page["records"].as_array().cloned().unwrap_or_default() {
            let id = r["request_id"].as_str().unwrap_or_default().to_owned();
            anyhow::ensure!(seen.insert(id.clone()), "{id} listed twice");
            records.push(r);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(records),
        }
    }
    anyhow::bail!("the log's pages never ended")
}

/// Runs the real Claude Code CLI (the kit's `run_claude_code_e2e.sh`) against
/// `base_url` with `token` and the script's `extra` flags; fails with its output.
pub fn claude_code(base_url: &str, token: &str, extra: &[&str]) -> Result<()> {
    let install_dir = workspace_dir().join("target/claude-code");
    let out = Command::new("bash")
        .arg(kit_dir().join("run_claude_code_e2e.sh"))
        .arg("--install-dir")
        .arg(&install_dir)
        .args(["--base-url", base_url, "--token", token, "--timeout", "150"])
        .args(extra)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    if !out.status.success() {
        bail!("claude code e2e failed ({extra:?}):\n{text}");
    }
    Ok(())
}
