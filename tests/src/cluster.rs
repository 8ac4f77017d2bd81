//! `Cluster`: several gateways forming a Raft cluster on loopback (certificates, flags,
//! joining).

use crate::*;
use anyhow::{bail, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
        Cluster::start_with_env(config, n, &[]).await
    }

    /// `start` with extra environment for every node (test hooks, say).
    pub async fn start_with_env(config: &str, n: usize, env: &[(&str, &str)]) -> Result<Cluster> {
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
                .push(Gateway::start_with(config, env, args).await?);
        }
        Ok(cluster)
    }

    /// The cluster CA's directory (its key too), for a test that makes more members.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
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
