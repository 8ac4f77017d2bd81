//! `Balanced`: three nodes of one Raft cluster behind HAProxy, as an operator runs them,
//! with HAProxy configured from `deploy/haproxy.cfg` (what `scripts/cluster.sh` writes
//! too). Nodes are `Gateway` children of the test; `stop`, `kill` and `start` act on one
//! node and return once the cluster and HAProxy have seen it go or come back.

use crate::*;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};

/// The node ids of a balanced cluster.
pub const NODES: [u16; 3] = [1, 2, 3];
/// How long a node, or HAProxy's view of it, gets to become ready: an election,
/// catching up and two health checks take seconds; a minute means something is wrong.
const READY_SECS: u64 = 60;
/// How long a SIGTERMed node gets to drain and exit (its grace period, charges,
/// leases and hand-over are bounded well below this).
const STOP_SECS: u64 = 60;

/// The nodes and the addresses of a balanced cluster, for the helpers shared with
/// `Scripted`.
#[allow(async_fn_in_trait)]
pub trait Nodes {
    /// HAProxy's address for `node` 0, node N's own HTTP address for 1..=3.
    fn url(&self, node: u16) -> String;

    /// An admin call at `node` (0: through HAProxy) that must answer 2xx; the body.
    async fn admin(
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

    /// Reads `path` (an admin resource just written) on every node with a linearizable
    /// read, so each node has applied the write before the test goes on.
    async fn known_everywhere(&self, path: &str) -> Result<()> {
        for node in NODES {
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

    /// Sets the price of `model` in dollars per million input and output tokens.
    async fn price(&self, model: &str, input: &str, output: &str) -> Result<()> {
        self.admin(
            0,
            "POST",
            "/api/v1/prices",
            Some(
                json!({"model": model, "input_per_mtok_usd": input, "output_per_mtok_usd": output}),
            ),
        )
        .await
        .map(|_| ())
    }

    /// Creates a key with these provider configs and a $1000 daily budget on it, known
    /// on every node before this returns; returns (key id, secret).
    async fn key_with_budget(
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
}

pub struct Balanced {
    pub cluster: Cluster,
    haproxy: Child,
    port: u16,
    stats_port: u16,
}

impl Nodes for Balanced {
    fn url(&self, node: u16) -> String {
        match node {
            0 => format!("http://127.0.0.1:{}", self.port),
            n => self.cluster.nodes[usize::from(n - 1)].url(),
        }
    }
}

impl Balanced {
    /// Starts three nodes with `config` and `env`, then HAProxy in front of them;
    /// returns once every node is ready and HAProxy sends traffic to each.
    pub async fn start(config: &str, env: &[(&str, &str)]) -> Result<Balanced> {
        prereq::ensure_haproxy()?;
        let cluster = Cluster::start_with_env(config, NODES.len(), env).await?;
        for i in 0..NODES.len() {
            cluster.wait_ready(i, READY_SECS).await?;
        }
        let dir = temp_dir("haproxy");
        std::fs::create_dir_all(&dir)?;
        let (port, stats_port) = (free_port(), free_port());
        let servers: Vec<String> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("    server node{} 127.0.0.1:{}", i + 1, n.port))
            .collect();
        let cfg = include_str!("../../deploy/haproxy.cfg")
            .replace("{{FRONTEND}}", &format!("127.0.0.1:{port}"))
            .replace("{{STATS}}", &format!("127.0.0.1:{stats_port}"))
            .replace("{{SERVERS}}", &servers.join("\n"));
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        // -db: in the foreground, a child of the test that dies with its handle.
        let haproxy = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start haproxy")?;
        let balanced = Balanced {
            cluster,
            haproxy,
            port,
            stats_port,
        };
        for node in NODES {
            balanced.wait_balanced(node, true).await?;
        }
        Ok(balanced)
    }

    fn gateway(&mut self, node: u16) -> &mut Gateway {
        &mut self.cluster.nodes[usize::from(node - 1)]
    }

    /// Node `node`'s process id, while it runs.
    pub fn pid(&self, node: u16) -> Result<u32> {
        self.cluster.nodes[usize::from(node - 1)]
            .pid()
            .with_context(|| format!("node {node} is not running"))
    }

    /// Node `node`'s Raft (QUIC) address, where it also gossips.
    pub fn raft_addr(&self, node: u16) -> std::net::SocketAddr {
        std::net::SocketAddr::from((
            [127, 0, 0, 1],
            self.cluster.raft_ports[usize::from(node - 1)],
        ))
    }

    /// SIGKILL node `node`, as a crash; returns once HAProxy has taken it out.
    pub async fn kill(&mut self, node: u16) -> Result<()> {
        self.gateway(node).kill();
        self.wait_balanced(node, false).await
    }

    /// SIGTERM node `node` and wait until it has drained and exited.
    pub async fn stop(&mut self, node: u16) -> Result<()> {
        let gateway = self.gateway(node);
        gateway.signal_term();
        ensure!(
            gateway.wait_exited(STOP_SECS).await,
            "node {node} did not exit within {STOP_SECS} s of SIGTERM"
        );
        self.wait_balanced(node, false).await
    }

    /// Starts node `node` again with its data and flags (it rejoins with its log);
    /// returns once it is ready and HAProxy sends it traffic again.
    pub async fn start_node(&mut self, node: u16) -> Result<()> {
        self.gateway(node).start_again().await?;
        self.cluster
            .wait_ready(usize::from(node - 1), READY_SECS)
            .await?;
        self.wait_balanced(node, true).await
    }

    /// Waits until HAProxy's stats show node `node` in service (`up`) or out of it.
    async fn wait_balanced(&self, node: u16, up: bool) -> Result<()> {
        let stats = format!("http://127.0.0.1:{}/;csv", self.stats_port);
        let server = format!("node{node}");
        let seen = eventually(READY_SECS, || async {
            let Ok(answer) = http().get(&stats).send().await else {
                return false;
            };
            let csv = answer.text().await.unwrap_or_default();
            // `nodes,nodeN,...`: the 18th field is the server's status ("UP", "DOWN",
            // "UP 1/2" while a check is pending, "MAINT", ...).
            csv.lines()
                .map(|l| l.split(',').collect::<Vec<_>>())
                .any(|f| {
                    f.len() > 17
                        && f[0] == "nodes"
                        && f[1] == server
                        && (f[17] == "UP") == up
                        && (up || !f[17].starts_with("UP"))
                })
        })
        .await;
        if !seen {
            bail!(
                "HAProxy did not see node {node} {} within {READY_SECS} s",
                if up { "up" } else { "down" }
            );
        }
        Ok(())
    }
}

impl Drop for Balanced {
    fn drop(&mut self) {
        let _ = self.haproxy.kill();
        let _ = self.haproxy.wait();
    }
}
