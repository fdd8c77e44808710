//! Where a run's CPU went on the whole machine, beside what the measured processes used: the
//! database server (every `postgres` process, including the backends that ended during the
//! run, whose time the postmaster collects as its children's), the event sink's broker (every
//! `nats-server` process, for the `sink` row), this benchmark itself (the load generator, and
//! the client of the `insert` baseline), and the machine's idle time
//! (`/proc/stat`). With it a row of the table says whether the system was bound by the cores
//! (no idle left) or by waiting (cores idle while every client waits on its round trips).

use std::time::{Duration, Instant};

use crate::process::{cpu_time, ticks, ProcStat};

/// One reading of the machine.
#[derive(Clone, Copy)]
struct Reading {
    /// Jiffies of all cores, busy and idle (`/proc/stat`'s first line).
    busy: u64,
    idle: u64,
    /// CPU of the PostgreSQL server's processes, none when it is not running here.
    database: Option<Duration>,
    /// CPU of the `nats-server` processes, when the system forwards to one.
    broker: Option<Duration>,
    client: Option<Duration>,
}

/// Which servers beside the measured processes take part in a system's work here.
#[derive(Clone, Copy, Default)]
pub struct Servers {
    /// The system writes to the PostgreSQL server (SQLite is in the measured process itself).
    pub postgres: bool,
    /// The system forwards events to a `nats-server` on this machine.
    pub broker: bool,
}

/// The machine between two readings.
pub struct MachineWindow {
    before: Reading,
    started: Instant,
    servers: Servers,
}

/// What the machine did during a window.
#[derive(Clone, Copy)]
pub struct MachineUse {
    /// Share of the window's core time the machine was idle (idle + iowait), 0–1.
    pub idle: f64,
    /// Core time the machine was busy during the window, all cores together.
    pub busy: Duration,
    pub database: Option<Duration>,
    pub broker: Option<Duration>,
    pub client: Option<Duration>,
    pub elapsed: Duration,
}

impl MachineWindow {
    pub fn start(servers: Servers) -> Self {
        Self {
            before: read(servers),
            started: Instant::now(),
            servers,
        }
    }

    pub fn finish(self) -> MachineUse {
        let after = read(self.servers);
        let elapsed = self.started.elapsed();
        let busy = after.busy.saturating_sub(self.before.busy);
        let idle = after.idle.saturating_sub(self.before.idle);
        let since = |a: Option<Duration>, b: Option<Duration>| Some(a?.saturating_sub(b?));
        MachineUse {
            idle: idle as f64 / (busy + idle).max(1) as f64,
            // `/proc/stat` counts in the same clock ticks as the processes' times.
            busy: ticks(busy),
            database: since(after.database, self.before.database),
            broker: since(after.broker, self.before.broker),
            client: since(after.client, self.before.client),
            elapsed,
        }
    }
}

fn read(servers: Servers) -> Reading {
    let (busy, idle) = machine_jiffies().unwrap_or((0, 0));
    Reading {
        busy,
        idle,
        database: servers.postgres.then(|| server_cpu("postgres")).flatten(),
        broker: servers.broker.then(|| server_cpu("nats-server")).flatten(),
        client: cpu_time(std::process::id()),
    }
}

/// Busy and idle jiffies of all cores: `cpu user nice system idle iowait irq softirq steal`.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields.as_slice() else {
        return None;
    };
    Some((user + nice + system + irq + softirq + steal, idle + iowait))
}

/// CPU of every process called `name` now, plus what they collected from their ended
/// children (the postmasters' backends), so a backend that ends during a window still counts.
fn server_cpu(name: &str) -> Option<Duration> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(stat) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
            .and_then(ProcStat::read)
        else {
            continue;
        };
        if stat.name == name {
            *total.get_or_insert(Duration::ZERO) += stat.cpu + stat.children;
        }
    }
    total
}

impl MachineUse {
    /// `database 180 · client 41 · other 12 µs/req · idle 22 %, 1.56 cores busy`.
    pub fn describe(&self, requests: u64, measured: Option<Duration>) -> String {
        let requests = requests.max(1) as f64;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / requests;
        let accounted = measured.unwrap_or_default()
            + self.database.unwrap_or_default()
            + self.broker.unwrap_or_default()
            + self.client.unwrap_or_default();
        let mut parts = Vec::new();
        if let Some(database) = self.database {
            parts.push(format!("database {:.0}", per(database)));
        }
        if let Some(broker) = self.broker {
            parts.push(format!("broker {:.0}", per(broker)));
        }
        if let Some(client) = self.client {
            parts.push(format!("client {:.0}", per(client)));
        }
        parts.push(format!(
            "other {:.0}",
            per(self.busy.saturating_sub(accounted))
        ));
        format!(
            "{} µs/req · machine idle {:.0} %, {:.2} cores busy",
            parts.join(" · "),
            self.idle * 100.0,
            self.busy.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
        )
    }
}
