//! `Scripted`: the three-node cluster behind HAProxy that `scripts/cluster.sh` makes, with
//! the ports it needs.

use crate::*;
use anyhow::{bail, Context, Result};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

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
}

impl Nodes for Scripted {
    fn url(&self, node: u16) -> String {
        format!("http://127.0.0.1:{}", self.base + node)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if self.owner {
            let _ = self.run(&["down"]);
        }
    }
}
