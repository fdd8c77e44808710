//! One measured phase of the attack program: the legitimate client running beside the
//! attackers, the peak RSS of both processes reset at its start, the CPU of the processes, of
//! this program and of the machine over its window; and how its figures are printed.

use std::time::{Duration, Instant};

use bench::{
    process::{cpu_time, CpuWindow, Measured},
    stack::Stack,
};

use crate::{
    legit::{LegitClient, LegitReport, Tenant},
    outcome::format_quantile,
};

/// One measured phase: the legitimate client running, the peaks reset, the CPU window open.
pub struct Phase {
    legit: LegitClient,
    cpu: CpuWindow,
    /// CPU of this program (the attackers and the legitimate client) at the start.
    own_cpu: Option<Duration>,
    machine: Option<MachineCpu>,
    started: Instant,
    peaks_reset: bool,
}

/// What a phase measured.
pub struct Figures {
    pub legit: LegitReport,
    pub elapsed: Duration,
    pub service_rss: f64,
    pub gateway_rss: f64,
    pub peaks_reset: bool,
    pub cpu: Vec<Option<Duration>>,
    pub own_cpu: Option<Duration>,
    /// Share of the machine's CPU time that was busy (every process, every core).
    pub machine_busy: Option<f64>,
    /// Both processes still running at the end.
    pub alive: bool,
}

impl Phase {
    pub fn start(stack: &Stack, tenant: Tenant, rate: f64) -> anyhow::Result<Self> {
        let peaks_reset = stack.service.reset_peak_rss() & stack.gateway.reset_peak_rss();
        Ok(Self {
            cpu: CpuWindow::start(&[&stack.service, &stack.gateway]),
            own_cpu: cpu_time(std::process::id()),
            machine: MachineCpu::read(),
            legit: LegitClient::start(tenant, rate)?,
            started: Instant::now(),
            peaks_reset,
        })
    }

    pub async fn finish(self, stack: &mut Stack) -> anyhow::Result<Figures> {
        let legit = self.legit.finish().await;
        let elapsed = self.started.elapsed();
        let rss = |p: &Measured| p.peak_rss_mib().unwrap_or(f64::NAN);
        let mut alive = true;
        for process in [&mut stack.service, &mut stack.gateway] {
            if let Some(status) = process.exited() {
                println!("  !! the {} exited: {status}", process.name);
                alive = false;
            }
        }
        let own_cpu = cpu_time(std::process::id())
            .zip(self.own_cpu)
            .map(|(now, before)| now.saturating_sub(before));
        let machine_busy = MachineCpu::read()
            .zip(self.machine)
            .and_then(|(now, before)| now.busy_since(&before));
        Ok(Figures {
            cpu: self.cpu.used(&[&stack.service, &stack.gateway]),
            own_cpu,
            machine_busy,
            service_rss: rss(&stack.service),
            gateway_rss: rss(&stack.gateway),
            legit,
            elapsed,
            peaks_reset: self.peaks_reset,
            alive,
        })
    }
}

impl Figures {
    pub fn print(&self) {
        let l = &self.legit.latencies;
        println!(
            "  legitimate: {} deliveries, p50 {}, p99 {}, failed {} ({})",
            l.attempts(),
            format_quantile(l.quantile(0.5)),
            format_quantile(l.quantile(0.99)),
            l.failures(),
            self.legit.failures,
        );
        let cpu = |d: &Option<Duration>| {
            d.map_or("?".into(), |d| {
                format!(
                    "{:.0} %",
                    100.0 * d.as_secs_f64() / self.elapsed.as_secs_f64()
                )
            })
        };
        println!(
            "  peak RSS{}: service {:.1} MiB + gateway {:.1} MiB = {:.1} MiB",
            if self.peaks_reset {
                ""
            } else {
                " (since start: could not reset)"
            },
            self.service_rss,
            self.gateway_rss,
            self.service_rss + self.gateway_rss,
        );
        println!(
            "  CPU (100 % = one core): service {}, gateway {}, this program {}; machine busy {}",
            self.cpu.first().map_or("?".into(), cpu),
            self.cpu.get(1).map_or("?".into(), cpu),
            cpu(&self.own_cpu),
            self.machine_busy
                .map_or("?".into(), |busy| format!("{:.0} %", busy * 100.0)),
        );
    }
}

/// The first line of `/proc/stat`: CPU time of the whole machine, in clock ticks.
#[derive(Clone, Copy)]
struct MachineCpu {
    total: u64,
    idle: u64,
}

impl MachineCpu {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        Some(Self {
            total: ticks.iter().sum(),
            idle,
        })
    }

    /// Busy share of the time between `before` and this reading.
    fn busy_since(&self, before: &MachineCpu) -> Option<f64> {
        let total = self.total.checked_sub(before.total)?;
        let idle = self.idle.checked_sub(before.idle)?;
        (total > 0).then(|| 1.0 - idle as f64 / total as f64)
    }
}
