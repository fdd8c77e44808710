//! Tracing setup: human-readable lines by default, one JSON object per line with
//! `LOG_FORMAT=json` (for log pipelines), the level from `RUST_LOG` (default `info`).
//!
//! Logging starts before the typed configuration is read (so that configuration errors are
//! logged); these two variables are therefore read here, the one other place that reads the
//! environment.

use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// `json` (any case) → JSON lines; empty or `text` → text; anything else is an error that
    /// names the variable.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim).map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!("LOG_FORMAT must be text or json, got {other:?}")),
        }
    }
}

/// Installs the global subscriber from `LOG_FORMAT` and `RUST_LOG`.
pub fn init_from_env() -> Result<LogFormat, String> {
    let format = LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref())?;
    init(format);
    Ok(format)
}

/// Installs the global subscriber; a second call does nothing (tests start several servers).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    init_with(format, filter);
}

/// For one-shot commands whose output is meant to be captured (`dev-token`): warnings and
/// errors only, whatever `RUST_LOG` says, so `TOKEN=$(...)` shows nothing but a problem.
pub fn init_quiet_from_env() -> Result<LogFormat, String> {
    let format = LogFormat::parse(std::env::var("LOG_FORMAT").ok().as_deref())?;
    init_with(format, EnvFilter::new("warn"));
    Ok(format)
}

fn init_with(format: LogFormat, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // Span fields (request id, method, organization, integration) go on every line.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_values() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some(" ")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("JSON")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert!(LogFormat::parse(Some("yaml"))
            .unwrap_err()
            .contains("LOG_FORMAT"));
    }
}
