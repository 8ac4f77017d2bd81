//! `Gateway`: one `tollgate serve` child with its own data dir and port, its admin API
//! and restarts; killed when dropped.

use crate::*;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tollgate serve` process.
pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    config_path: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
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

impl Gateway {
    pub async fn start(config: &str) -> Result<Gateway> {
        Gateway::start_with_env(config, &[]).await
    }

    /// A gateway started with extra `serve` arguments (cluster flags).
    pub async fn start_with_args(config: &str, args: Vec<String>) -> Result<Gateway> {
        Gateway::launch(config, Vec::new(), args).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Result<Gateway> {
        Gateway::start_with(config, env, Vec::new()).await
    }

    /// A gateway with extra environment and `serve` flags.
    pub async fn start_with(
        config: &str,
        env: &[(&str, &str)],
        args: Vec<String>,
    ) -> Result<Gateway> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Gateway::launch(config, env, args).await
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
                let log = self.data_dir.with_extension("log");
                bail!(
                    "tollgate exited early ({status}); {}:\n{}",
                    log.display(),
                    log_tail(&log, 20)
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

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process again after it exited or was killed: same port, data, flags
    /// and environment.
    pub async fn start_again(&mut self) -> Result<()> {
        if !self.exited() {
            bail!("tollgate on port {} is still running", self.port);
        }
        self.spawn().await
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
    /// Prices `model` (`*`: every model without its own price) in dollars per million
    /// input and output tokens.
    pub async fn price(&self, model: &str, input: &str, output: &str) -> Result<()> {
        self.create(
            "/api/v1/prices",
            json!({"model": model, "input_per_mtok_usd": input, "output_per_mtok_usd": output}),
        )
        .await?;
        Ok(())
    }

    /// Puts a daily budget of `limit` dollars on virtual key `key_id`.
    pub async fn daily_budget(&self, key_id: &str, limit: &str) -> Result<()> {
        self.create(
            "/api/v1/budgets",
            json!({"owner": {"kind": "virtual_key", "id": key_id}, "max_limit_usd": limit, "reset_duration": "1d"}),
        )
        .await?;
        Ok(())
    }

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

/// The last `lines` lines of a node's log before its backtrace, for an error that must
/// say why it stopped.
fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.split("\nStack backtrace:").next().unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
