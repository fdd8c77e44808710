//! What the clients of a scenario saw: answers counted by status (or by how the connection
//! failed), and latency percentiles in which a failed attempt counts as infinitely slow, so a
//! p99 is only printed when 99 % of the attempts were answered with success.

use std::{collections::BTreeMap, fmt, time::Duration};

/// Counts by outcome: `"404"`, `"503"`, `"timeout"`, `"reset"`, ...
#[derive(Debug, Default, Clone)]
pub struct Outcomes(BTreeMap<String, u64>);

impl Outcomes {
    pub fn add(&mut self, outcome: impl Into<String>) {
        *self.0.entry(outcome.into()).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Outcomes) {
        for (outcome, count) in &other.0 {
            *self.0.entry(outcome.clone()).or_default() += count;
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn count(&self, outcome: &str) -> u64 {
        self.0.get(outcome).copied().unwrap_or(0)
    }
}

impl fmt::Display for Outcomes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(outcome, count)| format!("{outcome} ×{count}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// The outcome name of an I/O failure.
pub fn io_outcome(error: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => "refused",
        ConnectionReset => "reset",
        ConnectionAborted => "aborted",
        BrokenPipe => "broken pipe",
        TimedOut => "timeout",
        _ => "io error",
    }
}

/// The status of an HTTP/1.1 response head at the start of `bytes`.
pub fn response_status(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|&b| b == b'\r').next()?;
    let mut parts = line.split(|&b| b == b' ');
    if !parts.next()?.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

/// Latencies of successes plus the number of failures: percentiles over all attempts.
#[derive(Debug, Default, Clone)]
pub struct Latencies {
    successes: Vec<Duration>,
    failures: u64,
}

impl Latencies {
    pub fn success(&mut self, latency: Duration) {
        self.successes.push(latency);
    }

    pub fn failure(&mut self) {
        self.failures += 1;
    }

    pub fn attempts(&self) -> u64 {
        self.successes.len() as u64 + self.failures
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The `q` quantile over every attempt; `None` when it falls among the failures (or
    /// there was no attempt).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let attempts = self.attempts();
        if attempts == 0 {
            return None;
        }
        let mut sorted = self.successes.clone();
        sorted.sort_unstable();
        let rank = ((attempts as f64 * q).ceil() as usize).clamp(1, attempts as usize);
        sorted.get(rank - 1).copied()
    }
}

/// `12.3 ms`, or `failed` when the quantile fell among the failures.
pub fn format_quantile(latency: Option<Duration>) -> String {
    match latency {
        Some(latency) => format!("{:.1} ms", latency.as_secs_f64() * 1000.0),
        None => "failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_among_the_failures_is_none() {
        let mut latencies = Latencies::default();
        for ms in 1..=98 {
            latencies.success(Duration::from_millis(ms));
        }
        assert_eq!(latencies.quantile(0.99), Some(Duration::from_millis(98)));
        latencies.failure();
        latencies.failure();
        latencies.failure();
        assert_eq!(latencies.quantile(0.5), Some(Duration::from_millis(51)));
        assert_eq!(latencies.quantile(0.99), None);
    }

    #[test]
    fn statuses_are_read_from_a_response_head() {
        assert_eq!(
            response_status(b"HTTP/1.1 408 Request Timeout\r\n"),
            Some(408)
        );
        assert_eq!(response_status(b"HTTP/1.1 503"), Some(503));
        assert_eq!(response_status(b"garbage"), None);
        assert_eq!(response_status(b""), None);
    }
}
