//! Harness for black-box tests: real `tollgate` processes and the fake Anthropic upstream
//! on loopback, plus small HTTP helpers. Every process is killed when its handle drops.
//!
//! # Layout
//! - `Gateway`: a `tollgate serve` child with its own data dir and port.
//! - `Cluster`: several gateways forming a Raft cluster (certificates, flags, joining).
//! - `Scripted`: the three-node cluster behind HAProxy made by `scripts/cluster.sh`.
//! - `FakeUpstream`: `fake_anthropic.py` with its JSONL request log.
//! - `kit_dir`, `tollgate_bin`, `bench_bin`: where the real-client kit and the binaries are.
//! - `prereq`: the Python SDKs and HAProxy, installed on first use.
//! - `budget`: requests with known costs, client tallies and cluster figures for the
//!   budget tests.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod budget;
pub mod prereq;

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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
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

/// The fake Anthropic/OpenAI upstream from the real-client kit.
pub struct FakeUpstream {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: PathBuf,
}

impl FakeUpstream {
    pub fn start(extra: &[&str]) -> Result<FakeUpstream> {
        let dir = temp_dir("fake");
        let port_file = dir.join("port");
        let log = dir.join("requests.jsonl");
        let child = Command::new("python3")
            .arg(kit_dir().join("fake_anthropic.py"))
            .args(["--port", "0", "--require-key", UPSTREAM_KEY])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start fake_anthropic.py")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                if let Ok(port) = text.trim().parse() {
                    return Ok(FakeUpstream {
                        child,
                        port,
                        log,
                        _dir: dir,
                    });
                }
            }
            if Instant::now() > deadline {
                bail!("fake upstream did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every logged model request (JSONL rows).
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Reconfigures the fake live (`POST /__fake/config`).
    pub async fn configure(&self, config: Value) -> Result<()> {
        let r = http()
            .post(format!("{}/__fake/config", self.base_url()))
            .json(&config)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("fake config failed: {}", r.status());
        }
        Ok(())
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tollgate serve` process.
pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    config_path: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// A config with the fake as an `anthropic` provider and as an `openai` provider.
/// `[[providers]]` entries named `primary` and `secondary`, Anthropic-kind, on two fakes.
pub fn primary_secondary_config(primary: &FakeUpstream, secondary: &FakeUpstream) -> String {
    ["primary", "secondary"]
        .iter()
        .zip([primary, secondary])
        .map(|(name, fake)| {
            format!(
                "[[providers]]\nname = \"{name}\"\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key = \"env:TEST_UPSTREAM_KEY\"\n\n",
                fake.base_url()
            )
        })
        .collect()
}

/// The id of the provider config of `key` (a create answer) on `provider`.
pub fn provider_config_id(key: &Value, provider: &str) -> Result<String> {
    key["provider_configs"]
        .as_array()
        .and_then(|pcs| pcs.iter().find(|pc| pc["provider"] == provider))
        .and_then(|pc| pc["id"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no {provider} provider config id in {key}"))
}

pub fn fake_config(fake: &FakeUpstream) -> String {
    format!(
        r#"
[[providers]]
name = "fake-anthropic"
kind = "anthropic"
base_url = "{base}"
api_key = "env:TEST_UPSTREAM_KEY"

[[providers]]
name = "fake-openai"
kind = "openai"
base_url = "{base}/v1"
api_key = "env:TEST_UPSTREAM_KEY"
"#,
        base = fake.base_url()
    )
}

impl Gateway {
    pub async fn start(config: &str) -> Result<Gateway> {
        Gateway::start_with_env(config, &[]).await
    }

    /// A gateway started with extra `serve` arguments (cluster flags).
    pub async fn start_with_args(config: &str, args: Vec<String>) -> Result<Gateway> {
        Gateway::launch(config, Vec::new(), args).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Result<Gateway> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Gateway::launch(config, env, Vec::new()).await
    }

    async fn launch(
        config: &str,
        env: Vec<(String, String)>,
        args: Vec<String>,
    ) -> Result<Gateway> {
        let data_dir = temp_dir("gw");
        let config_path = data_dir.join("tollgate.toml");
        std::fs::write(&config_path, config)?;
        let mut gw = Gateway {
            child: None,
            port: free_port(),
            data_dir: data_dir.join("data"),
            config_path,
            env,
            args,
        };
        gw.spawn().await?;
        Ok(gw)
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir.with_extension("log"))?;
        let child = Command::new(tollgate_bin())
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start tollgate")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = http();
        // A cluster node is ready only once the cluster has formed, which needs its
        // peers: for those, wait until it is alive and let the test wait for readiness.
        let probe = if self.args.is_empty() {
            "ready"
        } else {
            "live"
        };
        loop {
            if let Ok(r) = client
                .get(format!("{}/health/{probe}", self.url()))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!(
                    "tollgate exited early ({status}); see {}",
                    self.data_dir.with_extension("log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("tollgate did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Replaces the extra environment used by the next (re)start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn signal_term(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `secs` for the process to exit; whether it did.
    pub async fn wait_exited(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !self.exited() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.exited()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    pub async fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn().await
    }

    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        admin_at(&self.url(), method, path, body).await
    }

    /// POST that must succeed; returns the body.
    pub async fn create(&self, path: &str, body: Value) -> Result<Value> {
        let (status, v) = self.admin("POST", path, Some(body.clone())).await?;
        if status != 201 && status != 200 {
            bail!("POST {path} {body} answered {status}: {v}");
        }
        Ok(v)
    }

    /// A key on the given provider configs; returns (id, secret).
    pub async fn key(&self, provider_configs: Value) -> Result<(String, String)> {
        let v = self
            .create(
                "/api/v1/virtual-keys",
                json!({"name": "test", "provider_configs": provider_configs}),
            )
            .await?;
        Ok((
            v["id"].as_str().unwrap_or_default().to_owned(),
            v["secret"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// The value of one line of `/metrics` (`name` with its labels, as printed).
    pub async fn metric(&self, name: &str) -> Result<u64> {
        let text = http()
            .get(format!("{}/metrics", self.url()))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
            .with_context(|| format!("no metric {name} in {text}"))
    }

    pub async fn usage(&self, key_id: &str) -> Result<Value> {
        let (_, v) = self
            .admin("GET", &format!("/api/v1/usage?virtual_key={key_id}"), None)
            .await?;
        Ok(v)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
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

/// Nodes of one Raft cluster on loopback: node `i` (0-based) has id `i + 1`.
pub struct Cluster {
    pub nodes: Vec<Gateway>,
    pub raft_ports: Vec<u16>,
    config: String,
    dir: PathBuf,
}

impl Cluster {
    /// Makes a CA and starts `n` nodes that form a cluster (`--bootstrap-expect n`);
    /// returns once every node is alive (not yet ready: see `wait_ready`).
    pub async fn start(config: &str, n: usize) -> Result<Cluster> {
        let dir = temp_dir("cluster");
        cert(&["ca", "--out", &dir.join("ca").to_string_lossy()])?;
        let raft_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            raft_ports: raft_ports.clone(),
            config: config.to_owned(),
            dir,
        };
        for i in 0..n {
            let mut args = cluster.node_args(i)?;
            args.extend(["--bootstrap-expect".into(), n.to_string()]);
            for (j, port) in raft_ports.iter().enumerate() {
                if j != i {
                    args.extend(["--peer".into(), format!("127.0.0.1:{port}")]);
                }
            }
            cluster
                .nodes
                .push(Gateway::start_with_args(config, args).await?);
        }
        Ok(cluster)
    }

    /// Certificates and the flags every node has.
    fn node_args(&self, i: usize) -> Result<Vec<String>> {
        let certs = self.dir.join(format!("n{}", i + 1));
        cert(&[
            "node",
            "--ca-dir",
            &self.dir.join("ca").to_string_lossy(),
            "--name",
            &format!("n{}", i + 1),
            "--out",
            &certs.to_string_lossy(),
        ])?;
        Ok(vec![
            "--node-id".into(),
            (i + 1).to_string(),
            "--raft-addr".into(),
            format!("127.0.0.1:{}", self.raft_ports[i]),
            "--cert-dir".into(),
            certs.to_string_lossy().into_owned(),
        ])
    }

    /// Starts one more node that joins through node `via`; returns its index.
    pub async fn join(&mut self, via: usize) -> Result<usize> {
        self.join_with_args(via, &[]).await
    }

    /// `join` with more `serve` flags for the new node (`--protocol-version 1`, say).
    pub async fn join_with_args(&mut self, via: usize, extra: &[&str]) -> Result<usize> {
        let i = self.nodes.len();
        self.raft_ports.push(free_port());
        let mut args = self.node_args(i)?;
        args.extend([
            "--join".into(),
            format!("127.0.0.1:{}", self.raft_ports[via]),
        ]);
        args.extend(extra.iter().map(|a| a.to_string()));
        self.nodes
            .push(Gateway::start_with_args(&self.config, args).await?);
        Ok(i)
    }

    /// `GET /api/v1/cluster` as node `i` answers it.
    pub async fn view(&self, i: usize) -> Value {
        self.nodes[i]
            .admin("GET", "/api/v1/cluster", None)
            .await
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    /// The leader every running node agrees on, waiting up to `secs`.
    pub async fn leader(&self, running: &[usize], secs: u64) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let mut leaders = Vec::new();
            for &i in running {
                leaders.push(self.view(i).await["leader"].as_u64());
            }
            if let Some(Some(l)) = leaders.first() {
                if leaders.iter().all(|x| *x == Some(*l)) {
                    return Ok(*l);
                }
            }
            if Instant::now() > deadline {
                bail!("no common leader among nodes {running:?}: {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `i` answers `/health/ready` with 200.
    pub async fn wait_ready(&self, i: usize, secs: u64) -> Result<()> {
        let url = format!("{}/health/ready", self.nodes[i].url());
        let ready = eventually(secs, || async {
            http()
                .get(&url)
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false)
        })
        .await;
        if !ready {
            bail!("node {} not ready within {secs} s", i + 1);
        }
        Ok(())
    }
}

/// A base port whose neighbours `scripts/cluster.sh` uses (TCP BASE..BASE+3 and BASE+10,
/// UDP BASE+11..BASE+13) are all free.
pub fn free_base() -> Result<u16> {
    for attempt in 0..200u16 {
        let base = 20_000 + (std::process::id() as u16 % 2_000) * 10 + attempt * 97 % 20_000;
        let tcp_free = [0, 1, 2, 3, 10]
            .iter()
            .all(|d| TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        let udp_free = [11, 12, 13]
            .iter()
            .all(|d| UdpSocket::bind(("127.0.0.1", base + d)).is_ok());
        if tcp_free && udp_free {
            return Ok(base);
        }
    }
    bail!("no free base port")
}

/// The three-node cluster behind HAProxy that `scripts/cluster.sh` makes: HAProxy on
/// `base`, node N's HTTP on `base + N`. Every `cluster.sh` call gets the test binary, the
/// admin token, the upstream key and the extra environment given with `env`, which the
/// nodes it starts inherit (`up` and `start N`). `down` when dropped.
pub struct Scripted {
    pub dir: PathBuf,
    pub base: u16,
    env: Vec<(String, String)>,
    /// Whether dropping this handle takes the cluster down (not for `attach`ed ones).
    owner: bool,
}

impl Scripted {
    /// A cluster to be made in `dir` on a free base port (nothing runs until `up`).
    pub fn new(dir: PathBuf) -> Result<Scripted> {
        Ok(Scripted {
            dir,
            base: free_base()?,
            env: Vec::new(),
            owner: true,
        })
    }

    /// Another handle on the same cluster (for a thread running a script), which leaves
    /// the cluster running when dropped.
    pub fn attach(other: &Scripted) -> Scripted {
        Scripted {
            dir: other.dir.clone(),
            base: other.base,
            env: other.env.clone(),
            owner: false,
        }
    }

    /// Adds an environment variable for every node started from now on.
    pub fn env(mut self, name: &str, value: &str) -> Scripted {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `cluster.sh up --config CONFIG`: returns once all three nodes and HAProxy are ready.
    pub fn up(&self, config: &Path) -> Result<String> {
        prereq::ensure_haproxy()?;
        self.run(&["up", "--config", &config.to_string_lossy()])
    }

    /// Runs `scripts/cluster.sh ARGS --dir DIR`; fails with its output unless it succeeds.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.script("cluster.sh", args, &[])
    }

    /// Runs `scripts/SCRIPT ARGS --dir DIR` with the cluster's environment, less the
    /// variables named in `without` (e.g. to restart nodes without a test switch).
    pub fn script(&self, script: &str, args: &[&str], without: &[&str]) -> Result<String> {
        let mut command = Command::new("bash");
        command
            .arg(workspace_dir().join("scripts").join(script))
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .env("TOLLGATE_BIN", tollgate_bin())
            .env("TOLLGATE_BASE_PORT", self.base.to_string())
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("TEST_UPSTREAM_KEY", UPSTREAM_KEY)
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| !without.contains(&k.as_str()))
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
        for name in without {
            command.env_remove(name);
        }
        let out = command
            .output()
            .with_context(|| format!("run scripts/{script}"))?;
        if !out.status.success() {
            bail!(
                "{script} {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Node N's process id, as `cluster.sh` recorded it.
    pub fn pid(&self, node: u16) -> Result<u32> {
        let path = self.dir.join(format!("node{node}/pid"));
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        Ok(text.trim().parse()?)
    }

    /// HAProxy's address for `node` 0, node N's own HTTP address for 1..=3.
    pub fn url(&self, node: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + node)
    }

    /// An admin call at `node` (0: through HAProxy) that must answer 2xx; returns the body.
    pub async fn admin(
        &self,
        node: u16,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let (status, v) = admin_at(&self.url(node), method, path, body).await?;
        if !(200..300).contains(&status) {
            bail!("{method} {path} on {node}: {status} {v}");
        }
        Ok(v)
    }
}

impl Scripted {
    /// Creates a key with these provider configs and a $1000 daily budget on it, known
    /// on every node before this returns; returns (key id, secret).
    pub async fn key_with_budget(
        &self,
        name: &str,
        provider_configs: Value,
    ) -> Result<(String, String)> {
        let key = self
            .admin(
                0,
                "POST",
                "/api/v1/virtual-keys",
                Some(json!({"name": name, "provider_configs": provider_configs})),
            )
            .await?;
        let id = key["id"].as_str().context("key id")?.to_owned();
        let secret = key["secret"].as_str().context("secret")?.to_owned();
        self.admin(
            0,
            "POST",
            "/api/v1/budgets",
            Some(json!({"owner": {"kind": "virtual_key", "id": id}, "max_limit_usd": "1000.00", "reset_duration": "1d"})),
        )
        .await?;
        self.known_everywhere(&format!("/api/v1/virtual-keys/{id}"))
            .await?;
        Ok((id, secret))
    }

    /// Reads `path` (an admin resource just written) on every node with a linearizable
    /// read, so each node has applied the write before the test goes on.
    pub async fn known_everywhere(&self, path: &str) -> Result<()> {
        for node in 1..=3 {
            self.admin(
                node,
                "GET",
                &format!("{path}?consistency=linearizable"),
                None,
            )
            .await?;
        }
        Ok(())
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if self.owner {
            let _ = self.run(&["down"]);
        }
    }
}
