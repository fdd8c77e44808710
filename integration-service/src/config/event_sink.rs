//! The event sink's variables: `EVENT_SINK_URL` (unset: no forwarding), `EVENT_SINK_STREAM`
//! and `EVENT_SINK_SUBJECT_PREFIX`, refused at start when JetStream would refuse them later.

use std::fmt;

use url::Url;

use super::{
    env::{invalid, Env},
    ConfigError, Secret,
};

const DEFAULT_STREAM: &str = "INTEGRATIONS";
const DEFAULT_SUBJECT_PREFIX: &str = "integrations";

/// Where and how stored events are forwarded (SPEC, "Event sink").
#[derive(Clone)]
pub struct EventSinkConfig {
    /// `EVENT_SINK_URL`, `nats://host:4222` (or `tls://`); it may carry credentials, so it
    /// stays a `Secret` and `Debug` shows only the host.
    pub url: Secret,
    /// `EVENT_SINK_STREAM` (`INTEGRATIONS`): the JetStream stream, created when absent.
    pub stream: String,
    /// `EVENT_SINK_SUBJECT_PREFIX` (`integrations`): subjects are `{prefix}.{org}.{provider}.{type}`.
    pub subject_prefix: String,
}

impl fmt::Debug for EventSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = Url::parse(self.url.expose())
            .ok()
            .and_then(|url| url.host_str().map(str::to_string));
        f.debug_struct("EventSinkConfig")
            .field("host", &host)
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .finish()
    }
}

/// The sink's configuration, `None` when `EVENT_SINK_URL` is unset.
pub(super) fn event_sink(env: &Env) -> Result<Option<EventSinkConfig>, ConfigError> {
    let stream = env
        .get("EVENT_SINK_STREAM")
        .unwrap_or_else(|| DEFAULT_STREAM.into());
    let stream = stream.trim();
    if !is_token(stream) || stream.len() > 64 {
        return Err(invalid(
            "EVENT_SINK_STREAM",
            "expected 1 to 64 characters among A-Z a-z 0-9 _ -",
        ));
    }
    let prefix = env
        .get("EVENT_SINK_SUBJECT_PREFIX")
        .unwrap_or_else(|| DEFAULT_SUBJECT_PREFIX.into());
    let prefix = prefix.trim();
    if prefix.split('.').any(|token| !is_token(token)) {
        return Err(invalid(
            "EVENT_SINK_SUBJECT_PREFIX",
            "expected dot-separated tokens of A-Z a-z 0-9 _ - (no wildcards)",
        ));
    }
    let Some(url) = env.get("EVENT_SINK_URL") else {
        return Ok(None);
    };
    let url = url.trim();
    // The value is not echoed: it may hold a password or a token.
    let parsed = Url::parse(url)
        .map_err(|_| invalid("EVENT_SINK_URL", "expected nats://host:port (not a URL)"))?;
    if !matches!(parsed.scheme(), "nats" | "tls") || parsed.host_str().is_none() {
        return Err(invalid(
            "EVENT_SINK_URL",
            "expected nats://host:port or tls://host:port",
        ));
    }
    Ok(Some(EventSinkConfig {
        url: Secret::new(url),
        stream: stream.to_string(),
        subject_prefix: prefix.to_string(),
    }))
}

/// A non-empty subject token or stream name: `[A-Za-z0-9_-]+`.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn sink(pairs: &[(&str, &str)]) -> Result<Option<EventSinkConfig>, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        event_sink(&Env(&vars))
    }

    #[test]
    fn unset_is_off_and_defaults_apply_when_on() {
        assert!(sink(&[]).unwrap().is_none());
        let on = sink(&[("EVENT_SINK_URL", "nats://127.0.0.1:4222")])
            .unwrap()
            .unwrap();
        assert_eq!(on.stream, "INTEGRATIONS");
        assert_eq!(on.subject_prefix, "integrations");
        assert_eq!(on.url.expose(), "nats://127.0.0.1:4222");
    }

    #[test]
    fn bad_values_name_their_variable_and_never_echo_the_url() {
        for (pairs, variable) in [
            (
                vec![("EVENT_SINK_URL", "http://user:hunter2@host")],
                "EVENT_SINK_URL",
            ),
            (vec![("EVENT_SINK_URL", "hunter2")], "EVENT_SINK_URL"),
            (vec![("EVENT_SINK_STREAM", "A.B")], "EVENT_SINK_STREAM"),
            (vec![("EVENT_SINK_STREAM", "A B")], "EVENT_SINK_STREAM"),
            (
                vec![("EVENT_SINK_SUBJECT_PREFIX", "integrations.>")],
                "EVENT_SINK_SUBJECT_PREFIX",
            ),
            (
                vec![("EVENT_SINK_SUBJECT_PREFIX", "a..b")],
                "EVENT_SINK_SUBJECT_PREFIX",
            ),
        ] {
            let err = sink(&pairs).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{variable} is invalid")), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn debug_shows_the_host_not_the_credentials() {
        let on = sink(&[("EVENT_SINK_URL", "nats://user:hunter2@nats.internal:4222")])
            .unwrap()
            .unwrap();
        let debug = format!("{on:?}");
        assert!(debug.contains("nats.internal"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }
}
