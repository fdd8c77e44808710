//! The log lines of the in-process servers, captured as JSON objects (the `LOG_FORMAT=json`
//! shape), so a test can follow one request by its id across the gateway and the service.
//!
//! One global subscriber per test binary, installed on first use; lines of every test land in
//! one buffer, so assertions select lines by a value unique to the test (its request id).

use std::{
    io::Write,
    sync::{Arc, Mutex, OnceLock},
};

use serde_json::Value;
use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

static CAPTURED: OnceLock<Buffer> = OnceLock::new();

/// Starts capturing (debug level for our crates) if not yet started.
pub fn capture_logs() {
    CAPTURED.get_or_init(|| {
        let buffer = Buffer::default();
        let installed = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(
                "warn,integration_service=debug,rest_gateway=debug",
            ))
            .with_writer(buffer.clone())
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .flatten_event(true)
            .try_init();
        assert!(installed.is_ok(), "another global subscriber was installed");
        buffer
    });
}

/// Every captured line, parsed, whose text contains `needle`.
pub fn lines_containing(needle: &str) -> Vec<Value> {
    let Some(buffer) = CAPTURED.get() else {
        return Vec::new();
    };
    let bytes = buffer
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|line| line.contains(needle))
        .map(|line| serde_json::from_str(line).expect("each log line is one JSON object"))
        .collect()
}
