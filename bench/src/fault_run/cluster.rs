//! A PostgreSQL cluster of the run's own: `initdb` into a temporary folder, `pg_ctl start` on
//! a free loopback port, `pg_ctl restart -m fast` as a fault, `pg_ctl stop` at the end (also
//! when dropped). The shared server other sessions test against is never touched.
//!
//! PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user
//! (`runuser`), which is given the folder.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// The folder of PostgreSQL's server binaries (`initdb`, `pg_ctl`): the newest
/// `/usr/lib/postgresql/<version>/bin`, or the folder of an `initdb` on `PATH`.
pub fn find_server_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
    })
}

pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    /// The run's folder: the data folder, the socket and the server log.
    pub dir: PathBuf,
    pub port: u16,
    run_as_postgres: bool,
    running: bool,
}

impl Cluster {
    /// `initdb` (trust authentication, user `postgres`) and start on a free port.
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let run_as_postgres = is_root();
        if run_as_postgres {
            give_to_postgres(dir)?;
        }
        let port = crate::fixtures::free_port()?;
        let mut cluster = Self {
            bin: bin.to_path_buf(),
            data: dir.join("pgdata"),
            dir: dir.to_path_buf(),
            port,
            run_as_postgres,
            running: false,
        };
        let data = cluster.data.display().to_string();
        cluster
            .pg(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )
            .await?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.display()
        );
        let log = dir.join("postgres.log").display().to_string();
        cluster
            .pg(
                "pg_ctl",
                &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
            )
            .await?;
        cluster.running = true;
        Ok(cluster)
    }

    /// The URL of its `postgres` database, over TCP.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is cut, the server comes back on the same
    /// port. Answers how long the server was away.
    pub async fn restart_fast(&self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let data = self.data.display().to_string();
        // The server's output goes to its log, not to our pipe (which it would keep open).
        let log = self.dir.join("postgres.log").display().to_string();
        self.pg(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-m", "fast", "-w", "restart"],
        )
        .await?;
        Ok(started.elapsed())
    }

    pub async fn stop(&mut self) {
        if self.running {
            let data = self.data.display().to_string();
            let _ = self
                .pg("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
                .await;
            self.running = false;
        }
    }

    async fn pg(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = tokio::time::timeout(
            Duration::from_secs(120),
            self.command(program, args).output(),
        )
        .await
        .with_context(|| format!("{program} did not finish in 2 minutes"))?
        .with_context(|| format!("run {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {}: {}\n{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    fn command(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = tokio::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            tokio::process::Command::new(path)
        };
        command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            // Synchronous: the runtime may be gone. The server is a daemon of pg_ctl, so
            // nothing else would stop it.
            let path = self.bin.join("pg_ctl");
            let data = self.data.display().to_string();
            let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
            let mut command = if self.run_as_postgres {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", "postgres", "--"]).arg(path);
                command
            } else {
                std::process::Command::new(path)
            };
            let _ = command
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // Our own process's owner, as /proc tells it (no libc call needed).
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Makes `dir` the `postgres` user's (uid and gid from `id`).
fn give_to_postgres(dir: &Path) -> anyhow::Result<()> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let output = std::process::Command::new("id")
            .args([flag, "postgres"])
            .output()
            .context("id postgres")?;
        if !output.status.success() {
            bail!("running as root and there is no postgres user to run PostgreSQL as");
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))?;
    Ok(())
}
