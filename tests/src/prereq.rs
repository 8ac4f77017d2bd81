//! What the tests need beyond Rust, installed on first use so that `cargo test
//! --workspace` alone passes on a fresh machine: the official Python SDKs (pip, into
//! `target/`) and HAProxy (apt-get, as root). The real Claude Code CLI is installed by
//! the kit's own script (`run_claude_code_e2e.sh --install-dir`).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The Python packages `sdk_check.py` imports, and boto3 (whose botocore signer the
/// fake Bedrock checks signatures with, and whose `bedrock-runtime` client the front
/// door is tried with).
const PYTHON_SDKS: &[&str] = &["anthropic", "openai", "boto3"];

/// A directory holding the official `anthropic` and `openai` SDKs, for `PYTHONPATH`.
/// Installed once with pip into `target/python-sdk` (to a scratch directory first and
/// renamed, so a run killed mid-install leaves nothing half-installed behind).
pub fn python_sdk_dir() -> Result<PathBuf> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| install_python_sdks().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn install_python_sdks() -> Result<PathBuf> {
    let target = crate::workspace_dir().join("target");
    let dir = target.join("python-sdk");
    // The marker names the packages: a list that grew is installed again.
    let marker = format!(".installed-{}", PYTHON_SDKS.join("-"));
    if dir.join(&marker).exists() {
        return Ok(dir);
    }
    let scratch = target.join(format!("python-sdk.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&scratch)
        .args(PYTHON_SDKS)
        .status()
        .context("cannot run python3 -m pip")?;
    if !status.success() {
        bail!(
            "pip could not install {PYTHON_SDKS:?} into {}",
            scratch.display()
        );
    }
    std::fs::write(scratch.join(&marker), "")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&scratch, &dir)
        .with_context(|| format!("cannot move {} into place", scratch.display()))?;
    Ok(dir)
}

/// Makes sure `haproxy` is on the PATH, installing Debian's package when it is not (as
/// root, the way CI and the development machines run).
pub fn ensure_haproxy() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| ensure_apt_package("haproxy", "haproxy").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn ensure_apt_package(command: &str, package: &str) -> Result<()> {
    let on_path = |name: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if on_path(command) {
        return Ok(());
    }
    if !on_path("apt-get") {
        bail!("{command} is not installed and there is no apt-get to install it");
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // The package lists of a fresh machine may be empty or stale: update once on failure.
    if !install() {
        let updated = Command::new("apt-get")
            .args(["update", "-qq"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !updated || !install() {
            bail!("apt-get could not install {package} (are you root?)");
        }
    }
    Ok(())
}
