//! The providers' signatures the sandbox signs with (the service verifies them in
//! `integration-service/src/webhooks/signature.rs`; the sandbox cannot depend on the service).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    // HMAC takes keys of every length: `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// GitHub's `X-Hub-Signature-256` value: `sha256=` and the hex HMAC-SHA256 of the raw body.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, &[body]))
}

/// Slack's `X-Slack-Signature` value: `v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn slack_signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let prefix = format!("v0:{timestamp}:");
    format!("v0={}", hmac_hex(secret, &[prefix.as_bytes(), body]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented example ("Hello, World!" under "It's a Secret to Everybody").
    #[test]
    fn github_signature_matches_githubs_example() {
        assert_eq!(
            github_signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
