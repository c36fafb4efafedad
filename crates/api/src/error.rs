//! What can go wrong in a call, and what the caller should do about it.

use std::time::Duration;

/// A failed API call.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// The gateway answered with a non-zero `RetCode`.
    #[error("RetCode {code}: {message}")]
    Api { code: i64, message: String },
    /// The gateway answered with an HTTP error status (the body is not read).
    #[error("HTTP status {status}")]
    Http { status: u16 },
    /// The endpoint answered with a redirect, which is not followed: a signed request must reach
    /// the gateway itself.
    #[error(
        "HTTP status {status}, a redirect to {location:?}, which is not followed (a signed request must reach the API gateway itself; check the operator's --endpoint)"
    )]
    Redirect { status: u16, location: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// No connection could be made (refused, DNS, TLS handshake): the request was not sent.
    #[error("cannot connect: {0}")]
    Unreachable(String),
    /// The exchange broke after the request may have been sent (a reset, a closed connection).
    #[error("transport error: {0}")]
    Transport(String),
    /// The answer could not be read as the documented JSON envelope.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// How a failure should be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// Slow down: RetCode 153 or HTTP 429.
    Throttled,
    /// Try again after a backoff: network, timeouts, 5xx, malformed answers, RetCode 110, 130, 150
    /// and ≥ 2000.
    Transient,
    /// The key pair is wrong or unknown (RetCode 171, 172, 174, HTTP 401/403): a person must fix
    /// the credentials.
    CredentialsRejected,
    /// The account may not do this (project, zone, IP, IAM: RetCode 292–299).
    PermissionDenied,
    /// The request itself is wrong (missing or invalid parameters, unknown action, a missing
    /// signature (170: the request did not arrive as sent), a redirect, a GPU type the image does
    /// not support): retrying the same request cannot help.
    InvalidRequest,
    /// The instance is locked by an operation still in progress (`InstanceOperationInProgress`,
    /// for up to 10 minutes): wait, then try again; do not hammer.
    Busy,
    /// The zone has no capacity for what was asked (RetCode 226604): try again later.
    OutOfCapacity,
    /// The account may not buy now: in arrears (226601), expired (226602), not verified
    /// (226606), or at its instance quota (226607, the simulator's code: the documentation gives
    /// none). A person must act.
    AccountBlocked,
}

/// The message the gateway gives when an instance is locked by another operation.
pub const OPERATION_IN_PROGRESS: &str = "InstanceOperationInProgress";

impl CallError {
    pub fn disposition(&self) -> Disposition {
        match self {
            CallError::Api { message, .. } if message.contains(OPERATION_IN_PROGRESS) => {
                Disposition::Busy
            }
            CallError::Api { code, .. } => match *code {
                153 => Disposition::Throttled,
                226601 | 226602 | 226606 | 226607 => Disposition::AccountBlocked,
                226603 => Disposition::InvalidRequest,
                226604 => Disposition::OutOfCapacity,
                110 | 130 | 150 => Disposition::Transient,
                c if c >= 2000 => Disposition::Transient,
                171..=174 => Disposition::CredentialsRejected,
                292..=299 => Disposition::PermissionDenied,
                _ => Disposition::InvalidRequest,
            },
            CallError::Http { status: 429 } => Disposition::Throttled,
            CallError::Http { status } if *status >= 500 => Disposition::Transient,
            CallError::Http { status: 401 | 403 } => Disposition::CredentialsRejected,
            CallError::Http { .. } | CallError::Redirect { .. } => Disposition::InvalidRequest,
            CallError::Timeout(_)
            | CallError::Unreachable(_)
            | CallError::Transport(_)
            | CallError::Malformed(_) => Disposition::Transient,
        }
    }

    /// Whether the call may have been carried out although it failed: the request may have
    /// reached the gateway and only the answer was lost (a timeout, a broken connection, an
    /// unreadable answer, a 5xx from a proxy, the gateway's own timeout 110). A create that
    /// failed so must not simply be made again.
    pub fn may_have_taken_effect(&self) -> bool {
        match self {
            CallError::Timeout(_) | CallError::Transport(_) | CallError::Malformed(_) => true,
            CallError::Http { status } => *status >= 500,
            CallError::Api { code, .. } => *code == 110,
            CallError::Unreachable(_) | CallError::Redirect { .. } => false,
        }
    }

    /// Whether retrying sooner than the normal poll interval is worthwhile.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.disposition(),
            Disposition::Throttled
                | Disposition::Transient
                | Disposition::Busy
                | Disposition::OutOfCapacity
        )
    }

    /// A short, bounded label for metrics: the RetCode, `http_<status>`, `timeout`, `transport` or
    /// `malformed`.
    pub fn code_label(&self) -> String {
        match self {
            CallError::Api { code, .. } => code.to_string(),
            CallError::Http { status } | CallError::Redirect { status, .. } => {
                format!("http_{status}")
            }
            CallError::Timeout(_) => "timeout".to_owned(),
            CallError::Unreachable(_) => "unreachable".to_owned(),
            CallError::Transport(_) => "transport".to_owned(),
            CallError::Malformed(_) => "malformed".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: i64) -> CallError {
        CallError::Api {
            code,
            message: String::new(),
        }
    }

    #[test]
    fn dispositions_follow_the_gateway_documentation() {
        use Disposition::*;
        let cases = [
            (api(153), Throttled),
            (CallError::Http { status: 429 }, Throttled),
            (api(110), Transient),
            (api(130), Transient),
            (api(150), Transient),
            (api(2000), Transient),
            (api(8433), Transient),
            (CallError::Http { status: 502 }, Transient),
            (CallError::Timeout(Duration::from_secs(1)), Transient),
            (CallError::Transport("reset".into()), Transient),
            (CallError::Malformed("eof".into()), Transient),
            (api(170), InvalidRequest),
            (
                CallError::Redirect {
                    status: 301,
                    location: "https://example.com/".into(),
                },
                InvalidRequest,
            ),
            (api(226601), AccountBlocked),
            (api(226604), OutOfCapacity),
            (api(226603), InvalidRequest),
            (
                CallError::Api {
                    code: 8040,
                    message: "InstanceOperationInProgress: try again later".into(),
                },
                Busy,
            ),
            (CallError::Unreachable("refused".into()), Transient),
            (api(171), CredentialsRejected),
            (api(172), CredentialsRejected),
            (api(174), CredentialsRejected),
            (api(292), PermissionDenied),
            (api(299), PermissionDenied),
            (api(160), InvalidRequest),
            (api(161), InvalidRequest),
            (api(210), InvalidRequest),
            (api(230), InvalidRequest),
            (CallError::Http { status: 404 }, InvalidRequest),
        ];
        for (error, expected) in cases {
            assert_eq!(error.disposition(), expected, "{error}");
        }
    }

    #[test]
    fn a_call_that_may_have_taken_effect_is_told_apart() {
        assert!(CallError::Timeout(Duration::from_secs(1)).may_have_taken_effect());
        assert!(CallError::Transport("reset".into()).may_have_taken_effect());
        assert!(CallError::Http { status: 502 }.may_have_taken_effect());
        assert!(api(110).may_have_taken_effect());
        assert!(!CallError::Unreachable("refused".into()).may_have_taken_effect());
        assert!(!api(226604).may_have_taken_effect());
        assert!(!CallError::Http { status: 400 }.may_have_taken_effect());
    }

    #[test]
    fn only_throttling_and_transient_failures_are_retried() {
        assert!(api(153).is_retryable());
        assert!(api(150).is_retryable());
        assert!(!api(171).is_retryable());
        assert!(!api(230).is_retryable());
        assert!(!api(299).is_retryable());
    }

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(api(153).code_label(), "153");
        assert_eq!(CallError::Http { status: 503 }.code_label(), "http_503");
        assert_eq!(CallError::Malformed("x".into()).code_label(), "malformed");
    }
}
