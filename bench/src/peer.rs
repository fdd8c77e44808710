//! The Node.js peer (`bench/node-peer/server.mjs`): installed from the npm registry into its
//! own folder with `npm ci` (the committed `package-lock.json` fixes the versions), started
//! on a free port against the run's PostgreSQL database.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

use bench::process::Measured;

/// Installs the peer's packages when its `node_modules` is missing.
pub async fn install(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    println!(
        "installing the Node peer's packages (npm ci in {})",
        dir.display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .status()
        .await
        .context("run npm (install Node.js 20 or later)")?;
    if !status.success() {
        bail!("npm ci failed in {}", dir.display());
    }
    Ok(())
}

/// Starts the peer and answers it with the port it listens on.
pub async fn start(
    dir: &Path,
    database_url: &str,
    webhook_secret: &str,
) -> anyhow::Result<(Measured, u16)> {
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        .env("WEBHOOK_SECRET", webhook_secret)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start node")?;
    let stdout = child.stdout.take().context("peer stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .context("the Node peer did not start within 20 s")??
        .context("the Node peer exited")?;
    let port = line
        .strip_prefix("listening ")
        .and_then(|p| p.trim().parse().ok())
        .with_context(|| format!("unexpected first line of the Node peer: {line:?}"))?;
    Ok((
        Measured {
            name: "node",
            child,
        },
        port,
    ))
}
