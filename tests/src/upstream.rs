//! The fake Anthropic/OpenAI upstream of the real-client kit (`fake_anthropic.py`), its
//! JSONL request log, and provider configs that point at it.

use crate::*;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The fake Anthropic/OpenAI upstream from the real-client kit.
pub struct FakeUpstream {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    _dir: PathBuf,
}

impl FakeUpstream {
    pub fn start(extra: &[&str]) -> Result<FakeUpstream> {
        let mut command = Command::new("python3");
        command
            .arg(kit_dir().join("fake_anthropic.py"))
            .args(["--port", "0", "--require-key", UPSTREAM_KEY])
            .args(extra)
            .stderr(Stdio::null());
        let (child, port, log, dir) = start_python("fake", command, "fake upstream")?;
        Ok(FakeUpstream {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every logged model request (JSONL rows).
    pub fn requests(&self) -> Vec<Value> {
        jsonl(&self.log)
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

/// The rows of a helper's JSONL log.
fn jsonl(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Starts a Python helper (`command`: the script and its own flags) with `--port-file`
/// and `--log` in a fresh scratch directory, and waits until it has written its port:
/// (the process, its port, its log, the directory).
fn start_python(
    tag: &str,
    mut command: Command,
    what: &str,
) -> Result<(Child, u16, PathBuf, PathBuf)> {
    let dir = temp_dir(tag);
    std::fs::create_dir_all(&dir)?;
    let port_file = dir.join("port");
    let log = dir.join("log.jsonl");
    let mut child = command
        .arg("--port-file")
        .arg(&port_file)
        .arg("--log")
        .arg(&log)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("start {what}"))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Ok(port)) = std::fs::read_to_string(&port_file).map(|t| t.trim().parse()) {
            return Ok((child, port, log, dir));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{what} did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

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

/// A config with the fake as an `anthropic` provider and as an `openai` provider.
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

/// `tollgate-bench mock-upstream`: the fast Rust fake provider (`LONG:<n>` in a prompt
/// makes it answer with `n` tokens), streams paced `event_delay_us` apart.
pub struct MockUpstream {
    child: Child,
    pub port: u16,
}

impl MockUpstream {
    pub async fn start(event_delay_us: u64) -> Result<MockUpstream> {
        let port = free_port();
        let child = Command::new(bench_bin())
            .args(["mock-upstream", "--addr", &format!("127.0.0.1:{port}")])
            .args(["--event-delay-us", &event_delay_us.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start tollgate-bench mock-upstream")?;
        let mock = MockUpstream { child, port };
        let listening = eventually(READY_TIMEOUT.as_secs(), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        if !listening {
            bail!("mock upstream did not start");
        }
        Ok(mock)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver (`tests/sink/webhook_sink.py`) logging every POST it takes; the
/// first `fail_first` POSTs to a path ending in `/flaky` are refused with 503.
pub struct WebhookSink {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: PathBuf,
}

impl WebhookSink {
    pub fn start(fail_first: usize) -> Result<WebhookSink> {
        let mut command = Command::new("python3");
        command
            .arg(workspace_dir().join("tests/sink/webhook_sink.py"))
            .args(["--fail-first", &fail_first.to_string()])
            .stderr(Stdio::null());
        let (child, port, log, dir) = start_python("sink", command, "webhook sink")?;
        Ok(WebhookSink {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The POSTs taken so far: (path, headers, body).
    pub fn posts(&self) -> Vec<Value> {
        jsonl(&self.log)
    }
}

impl Drop for WebhookSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fake Bedrock runtime (`tests/sink/fake_bedrock.py`): SigV4 recomputed with
/// botocore (or a Bedrock API key required), Bedrock's body rules, event-stream frames.
pub struct FakeBedrock {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: PathBuf,
}

/// The SigV4 credentials the fake Bedrock takes (and the test gateway is given).
pub const BEDROCK_ACCESS_KEY: &str = "AKIDFAKEBEDROCK";
pub const BEDROCK_SECRET_KEY: &str = "fake/bedrock/secret+key";
pub const BEDROCK_SESSION_TOKEN: &str = "fake-session-token";

impl FakeBedrock {
    /// SigV4 with `BEDROCK_*` (session token included), or `--api-key KEY` in `extra`.
    pub fn start(extra: &[&str]) -> Result<FakeBedrock> {
        let mut command = Command::new("python3");
        command
            .env("PYTHONPATH", crate::prereq::python_sdk_dir()?)
            .arg(workspace_dir().join("tests/sink/fake_bedrock.py"))
            .args([
                "--access-key",
                BEDROCK_ACCESS_KEY,
                "--secret-key",
                BEDROCK_SECRET_KEY,
            ])
            .args(["--session-token", BEDROCK_SESSION_TOKEN])
            .args(extra);
        let (child, port, log, dir) = start_python("bedrock", command, "the fake Bedrock")?;
        Ok(FakeBedrock {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests taken so far: path, headers, body, status, auth.
    pub fn requests(&self) -> Vec<Value> {
        jsonl(&self.log)
    }

    /// Fails the next `count` requests with `status` in Bedrock's shape.
    pub async fn fail(&self, status: u16, count: u32) -> Result<()> {
        let resp = reqwest::Client::new()
            .post(format!("{}/__fake/config", self.base_url()))
            .json(&serde_json::json!({"fail_status": status, "fail_count": count}))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "fake Bedrock config: {}",
            resp.status()
        );
        Ok(())
    }
}

impl Drop for FakeBedrock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `[[providers]]` entry `bedrock-us` on the fake Bedrock (SigV4 from `BEDROCK_ENV`,
/// inference profile `us`).
pub fn bedrock_provider(bedrock: &FakeBedrock) -> String {
    format!(
        r#"
[[providers]]
name = "bedrock-us"
kind = "bedrock"
region = "us-east-1"
base_url = "{}"
access_key_id = "env:TEST_BEDROCK_AKID"
secret_access_key = "env:TEST_BEDROCK_SECRET"
session_token = "env:TEST_BEDROCK_TOKEN"
inference_profile = "us"
"#,
        bedrock.base_url()
    )
}

/// The environment a gateway with `bedrock_provider` needs.
pub const BEDROCK_ENV: &[(&str, &str)] = &[
    ("TEST_BEDROCK_AKID", BEDROCK_ACCESS_KEY),
    ("TEST_BEDROCK_SECRET", BEDROCK_SECRET_KEY),
    ("TEST_BEDROCK_TOKEN", BEDROCK_SESSION_TOKEN),
];
