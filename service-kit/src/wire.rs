//! Names the gateway and the service agree on: the `google.rpc.ErrorInfo` domain and reasons
//! the service attaches to its statuses, and the metadata keys that carry a request's identity.

/// Domain of the `ErrorInfo` details the service attaches. A status without it did not come
/// from the service's rules (a transport failure, a bug) and its text is never forwarded.
pub const ERROR_DOMAIN: &str = "integrations.v1";

/// `ErrorInfo.reason` of a failed provider call (the gateway answers 502 for it).
pub const REASON_PROVIDER_FAILED: &str = "PROVIDER_FAILED";

/// `ErrorInfo.reason` of a body larger than its scheme accepts (the gateway answers 413).
pub const REASON_PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";

/// The request id: accepted from the caller or created by the gateway, returned on every HTTP
/// response and forwarded to the service as gRPC metadata of the same name.
pub const REQUEST_ID: &str = "x-request-id";

/// W3C Trace Context header, forwarded untouched when valid.
pub const TRACEPARENT: &str = "traceparent";

/// Whether a caller's request id may be kept: short, printable, no spaces or quotes, so that
/// it cannot forge log fields. Anything else is replaced by a new id.
pub fn is_valid_request_id(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Whether a `traceparent` is a well-formed W3C Trace Context (version 00):
/// `00-<32 hex trace id, not all zero>-<16 hex parent id, not all zero>-<2 hex flags>`.
pub fn is_valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    matches!(parts.as_slice(), [version, trace, parent, flags]
        if *version == "00"
            && hex(trace, 32)
            && nonzero(trace)
            && hex(parent, 16)
            && nonzero(parent)
            && hex(flags, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(is_valid_request_id("4bf92f35-77b3-4da6-a3ce-929d0e0e4736"));
        assert!(is_valid_request_id("req_1.2:3"));
        for bad in ["", "a b", "x\ny", "a=\"b\"", &"a".repeat(129)] {
            assert!(!is_valid_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn traceparents_follow_w3c() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
    }
}
