//! What a process costs, read from `/proc/<pid>`: CPU time (user + system, `stat`) and peak
//! resident memory (`VmHWM`, `status`); and `perf record` of a process during a run.

use std::{path::Path, process::Stdio, sync::OnceLock, time::Duration};

use anyhow::Context;
use tokio::process::{Child, Command};

/// A child process the benchmark measures.
pub struct Measured {
    pub name: &'static str,
    pub child: Child,
}

impl Measured {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// CPU time used so far (user + system, all threads).
    pub fn cpu(&self) -> Option<Duration> {
        cpu_time(self.pid()?)
    }

    /// Peak resident set size so far, in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Starts a new peak: the kernel resets `VmHWM` to the current RSS when `5` is written to
    /// `/proc/<pid>/clear_refs` (Linux ≥ 4.0). False when it could not be reset, in which case
    /// `peak_rss_mib` keeps answering the peak since the process started.
    pub fn reset_peak_rss(&self) -> bool {
        self.pid()
            .is_some_and(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok())
    }

    /// The exit status, when the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The CPU times of a process, from `/proc/<pid>/stat`.
pub struct ProcStat {
    /// The command name (field 2, without its parentheses).
    pub name: String,
    /// `utime` + `stime`: the process's own CPU.
    pub cpu: Duration,
    /// `cutime` + `cstime`: what it collected from its ended (waited-for) children.
    pub children: Duration,
}

impl ProcStat {
    /// Fields 14–17 of the file, in clock ticks. The command name may hold spaces and
    /// parentheses, so fields are counted after its last `)`.
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (open, close) = (stat.find('(')?, stat.rfind(')')?);
        // After the name: state is 0, utime 11, stime 12, cutime 13, cstime 14.
        let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
        let field = |i: usize| -> Option<u64> {
            // `cutime` and `cstime` are signed in the kernel's format.
            Some(fields.get(i)?.parse::<i64>().ok()?.max(0) as u64)
        };
        Some(Self {
            name: stat.get(open + 1..close)?.to_string(),
            cpu: ticks(field(11)? + field(12)?),
            children: ticks(field(13)? + field(14)?),
        })
    }
}

/// CPU time of `pid`: `utime` + `stime`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    Some(ProcStat::read(pid)?.cpu)
}

/// `n` clock ticks as a duration.
pub fn ticks(n: u64) -> Duration {
    Duration::from_secs_f64(n as f64 / clock_ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)` as `getconf` reports it (100 on Linux unless configured otherwise).
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU used by a set of processes between two readings.
pub struct CpuWindow {
    before: Vec<Option<Duration>>,
}

impl CpuWindow {
    pub fn start(processes: &[&Measured]) -> Self {
        Self {
            before: processes.iter().map(|p| p.cpu()).collect(),
        }
    }

    /// Per process, the CPU used since `start`.
    pub fn used(&self, processes: &[&Measured]) -> Vec<Option<Duration>> {
        processes
            .iter()
            .zip(&self.before)
            .map(|(p, before)| Some(p.cpu()?.saturating_sub((*before)?)))
            .collect()
    }
}

/// A running `perf record` of one process; `finish` stops it and keeps its data file.
pub struct PerfRecording {
    child: Child,
    output: String,
}

impl PerfRecording {
    /// Samples `pid` on the cpu-clock event with call graphs (frame pointers are not
    /// required: `--call-graph dwarf` is heavier, so plain `-g` plus symbols is the default).
    pub fn start(pid: u32, output: &Path) -> anyhow::Result<Self> {
        let output = output.display().to_string();
        let child = Command::new("perf")
            .args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "999",
                "-g",
                "-o",
                &output,
            ])
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start perf (install it: apt-get install linux-perf)")?;
        Ok(Self { child, output })
    }

    /// Stops the recording (SIGINT, as perf expects) and answers its flat profile's top lines.
    pub async fn finish(mut self) -> anyhow::Result<String> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let report = Command::new("perf")
            .args([
                "report",
                "-i",
                &self.output,
                "--stdio",
                "--no-children",
                "-g",
                "none",
            ])
            .args(["--sort", "dso,symbol", "--percent-limit", "1", "-q"])
            .stderr(Stdio::null())
            .output()
            .await
            .context("perf report")?;
        let text = String::from_utf8_lossy(&report.stdout);
        Ok(text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .take(16)
            .collect::<Vec<_>>()
            .join("\n"))
    }
}
