//! The primitives the schemes share, each written once: constant-time compares
//! (`Mac::verify_slice`, `subtle`), the WebSub `sha256=<hex HMAC>` check (GitHub, Bitbucket,
//! Jira, Notion) and the bare hex one (Linear, Asana), the token compare (GitLab, Google,
//! Graph's `clientState`), the replay window of signed timestamps, and the content-addressed
//! dedupe key of deliveries that carry no id (Asana, Graph, Discord's webhook events).
//!
//! Slack's v0 signature (`v0=<hex HMAC-SHA256(signing secret, "v0:{timestamp}:{raw body}")>`)
//! is here too, beside `github_signature`: tests and the benchmark sign with both.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Largest distance between a signed timestamp (Slack, Discord, Standard Webhooks) and our
/// clock, either way, in seconds.
const MAX_SKEW_SECONDS: i64 = 300;

/// Whether `header` is `sha256=<hex HMAC-SHA256 of body under secret>` (WebSub's construction:
/// GitHub's `X-Hub-Signature-256`, Bitbucket's and Jira's `X-Hub-Signature`, Notion's
/// `X-Notion-Signature`).
pub fn verify_hub_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    header
        .trim()
        .strip_prefix("sha256=")
        .is_some_and(|hex_digest| verify_hmac_sha256_hex(secret, body, hex_digest))
}

/// Whether `hex_digest` is the hex HMAC-SHA256 of `body` under `secret` (constant time).
pub fn verify_hmac_sha256_hex(secret: &[u8], body: &[u8], hex_digest: &str) -> bool {
    let Ok(expected) = hex::decode(hex_digest.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// GitHub's signature header value of `body` under `secret` (tests, benchmark).
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is Slack's v0 signature of `timestamp` and `body` under `secret`.
pub fn verify_slack_signature(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("v0=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Slack's signature header value (tests).
pub fn slack_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether a signed Unix timestamp (seconds) is within 5 minutes of `now`, either way: the
/// replay window of the schemes that sign a timestamp (Slack, Discord, Standard Webhooks).
pub fn timestamp_is_fresh(timestamp: i64, now: i64) -> bool {
    within_window(timestamp, now, MAX_SKEW_SECONDS)
}

/// Whether `timestamp` is at most `max_skew` away from `now`, either way (any unit, the same
/// for all three; never overflows).
pub fn within_window(timestamp: i64, now: i64, max_skew: i64) -> bool {
    now.checked_sub(timestamp)
        .is_some_and(|skew| skew.unsigned_abs() <= max_skew.unsigned_abs())
}

/// Whether a presented token is the secret, compared in constant time over the secret's
/// length (GitLab's `X-Gitlab-Token`, Google's channel token, Graph's `clientState`).
pub fn token_matches(secret: &[u8], presented: &str) -> bool {
    secret.ct_eq(presented.as_bytes()).into()
}

/// The dedupe key of a delivery (or item) that carries no id of its own: `sha256:<hex>` of its
/// bytes, which a provider's retry repeats.
pub fn content_key(content: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(content)))
}

/// HMAC accepts keys of every length; `new_from_slice` cannot fail for it.
fn unreachable_hmac() -> HmacSha256 {
    unreachable!("HMAC-SHA256 accepts keys of any length")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    // Every parser of delivery input, on arbitrary bytes: a clean answer, never a panic.
    proptest! {
        #[test]
        fn signature_headers_of_any_shape_are_verified_or_refused(
            header in "\\PC{0,120}|sha256=[0-9a-fA-F]{0,70}|v0=[0-9a-f]{0,70}",
            body in proptest::collection::vec(any::<u8>(), 0..256),
            timestamp in "\\PC{0,20}",
        ) {
            prop_assert!(!verify_hub_signature(b"secret", &body, &header));
            prop_assert!(!verify_slack_signature(b"secret", &timestamp, &body, &header));
        }

        #[test]
        fn any_timestamp_pair_is_judged_without_overflow(timestamp in any::<i64>(), now in any::<i64>()) {
            let _ = timestamp_is_fresh(timestamp, now);
        }

        #[test]
        fn slack_and_github_bodies_of_any_bytes_parse_or_are_refused(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            form in "(command|payload|text|team_id|type)=[%A-Za-z0-9{}\":,_&=+-]{0,80}",
        ) {
            for media in [None, Some("application/json"), Some("application/x-www-form-urlencoded"), Some("text/plain")] {
                let _ = crate::webhooks::schemes::slack::parse_slack(media, &body);
                let _ = crate::webhooks::schemes::slack::parse_slack(media, form.as_bytes());
                let _ = crate::webhooks::schemes::github_delivery::github_payload(media, &body);
                let _ = crate::webhooks::schemes::github_delivery::github_payload(media, form.as_bytes());
            }
        }
    }

    /// https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    #[test]
    fn github_documentation_example() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(github_signature(secret, body), header);
        assert!(verify_hub_signature(secret, body, header));
        assert!(!verify_hub_signature(secret, b"Hello, World?", header));
        assert!(!verify_hub_signature(b"another secret", body, header));
        assert!(!verify_hub_signature(
            secret,
            body,
            &header.replace("sha256=", "sha1=")
        ));
        assert!(!verify_hub_signature(secret, body, "sha256=zz"));
        assert!(!verify_hub_signature(secret, body, "sha256=757107"));
        assert!(!verify_hub_signature(secret, body, ""));
    }

    /// https://api.slack.com/authentication/verifying-requests-from-slack
    #[test]
    fn slack_documentation_example() {
        let secret = b"8f742231b10e8888abcd99yyyzzz85a5";
        let timestamp = "1531420618";
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let header = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(slack_signature(secret, timestamp, body), header);
        assert!(verify_slack_signature(secret, timestamp, body, header));
        assert!(!verify_slack_signature(secret, "1531420619", body, header));
        assert!(!verify_slack_signature(
            secret, timestamp, b"token=x", header
        ));
        assert!(!verify_slack_signature(
            secret,
            timestamp,
            body,
            &header[3..]
        ));
    }

    #[test]
    fn slack_window_is_five_minutes_either_way() {
        let now = 1_800_000_000;
        assert!(timestamp_is_fresh(now, now));
        assert!(timestamp_is_fresh(now - 299, now));
        assert!(timestamp_is_fresh(now + 299, now));
        assert!(timestamp_is_fresh(now - 300, now));
        assert!(!timestamp_is_fresh(now - 301, now));
        assert!(!timestamp_is_fresh(now + 301, now));
        assert!(!timestamp_is_fresh(i64::MIN, now));
    }

    #[test]
    fn windows_tokens_and_content_keys() {
        assert!(within_window(1_000 - 60_000, 1_000, 60_000));
        assert!(!within_window(1_000 - 60_001, 1_000, 60_000));
        assert!(!within_window(i64::MAX, i64::MIN, 60_000));
        let secret = b"f1a5a0a7d3f0c4b2e8d9";
        assert!(token_matches(secret, "f1a5a0a7d3f0c4b2e8d9"));
        assert!(!token_matches(secret, "f1a5a0a7d3f0c4b2e8d"));
        assert!(!token_matches(secret, "f1a5a0a7d3f0c4b2e8d9x"));
        assert!(!token_matches(secret, ""));
        // echo -n abc | sha256sum
        assert_eq!(
            content_key(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
