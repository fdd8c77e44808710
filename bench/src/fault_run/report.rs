//! What a fault run reports: the faults done, the figures, each check's verdict and the sink
//! scenario's PASS/FAIL line.

use std::{fmt, path::PathBuf, time::Duration};

use super::{checks, Findings, SinkVerdict, Violation, CHECKS};

/// What the faults did.
#[derive(Debug, Default)]
pub struct FaultLog {
    pub kills: u32,
    /// Exits of a replica nobody killed (each is also a violation).
    pub unexpected_exits: u32,
    pub postgres_restart: Option<Duration>,
    pub rotate_keys: Option<String>,
    /// The sink scenario's broker SIGKILLed and started again: how long it was away.
    pub broker_restart: Option<Duration>,
}

/// Figures, violations and the faults of a run.
pub struct Report {
    pub findings: Findings,
    pub faults: FaultLog,
    pub deliveries_answered_2xx: usize,
    pub leases: usize,
    pub refreshes: usize,
    pub drained_in: Duration,
    /// The sink scenario's verdict (`None` without it).
    pub sink: Option<SinkVerdict>,
    /// The run's folder (kept when something was violated, or with `keep_dir`).
    pub dir: Option<PathBuf>,
}

impl Report {
    pub fn violations(&self) -> &[Violation] {
        &self.findings.violations
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "faults:")?;
        writeln!(
            f,
            "  {:<70} {}",
            "replicas SIGKILLed (and restarted)", self.faults.kills
        )?;
        writeln!(
            f,
            "  {:<70} {}",
            "replica exits nobody caused", self.faults.unexpected_exits
        )?;
        writeln!(
            f,
            "  {:<70} {}",
            "PostgreSQL restart (pg_ctl restart -m fast)",
            self.faults
                .postgres_restart
                .map_or("not done".into(), |d| format!(
                    "took {:.1} s",
                    d.as_secs_f64()
                ))
        )?;
        writeln!(
            f,
            "  {:<70} {}",
            "integration-service rotate-keys",
            self.faults.rotate_keys.as_deref().unwrap_or("not done")
        )?;
        writeln!(f, "figures:")?;
        for (label, value) in &self.findings.figures {
            writeln!(f, "  {label:<70} {value}")?;
        }
        writeln!(
            f,
            "  {:<70} {:.1} s",
            "drain (faults stopped until every event settled)",
            self.drained_in.as_secs_f64()
        )?;
        writeln!(f, "checks:")?;
        for check in CHECKS {
            let broken: Vec<&Violation> = self
                .violations()
                .iter()
                .filter(|v| v.check == check)
                .collect();
            let verdict = if broken.is_empty() {
                "ok".to_string()
            } else {
                format!("{} VIOLATIONS", broken.len())
            };
            writeln!(f, "  {check:<70} {verdict}")?;
            for violation in broken.iter().take(10) {
                writeln!(f, "      {}", violation.detail)?;
            }
        }
        if let Some(sink) = &self.sink {
            writeln!(
                f,
                "sink: {} events in, {} distinct messages on the stream ({} in total), {} lost, \
                 {} duplicated, broker SIGKILLed and restarted {}: {}",
                sink.events,
                sink.distinct,
                sink.messages,
                sink.lost,
                sink.duplicated,
                self.faults
                    .broker_restart
                    .map_or("not done".into(), |d| format!(
                        "(away {:.1} s)",
                        d.as_secs_f64()
                    )),
                if sink.passed() && self.faults.broker_restart.is_some() {
                    "PASS"
                } else {
                    "FAIL"
                }
            )?;
            for violation in self
                .violations()
                .iter()
                .filter(|v| v.check == checks::SINK)
                .take(10)
            {
                writeln!(f, "      {}", violation.detail)?;
            }
        }
        if let Some(dir) = &self.dir {
            writeln!(f, "logs and data: {}", dir.display())?;
        }
        Ok(())
    }
}
