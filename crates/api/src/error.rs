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
    /// No HTTP exchange completed: connection refused or reset, TLS failure, DNS.
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
    /// signature (170: the request did not arrive as sent), a redirect): retrying the same request
    /// cannot help.
    InvalidRequest,
}

impl CallError {
    pub fn disposition(&self) -> Disposition {
        match self {
            CallError::Api { code, .. } => match *code {
                153 => Disposition::Throttled,
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
            CallError::Timeout(_) | CallError::Transport(_) | CallError::Malformed(_) => {
                Disposition::Transient
            }
        }
    }

    /// Whether retrying sooner than the normal poll interval is worthwhile.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.disposition(),
            Disposition::Throttled | Disposition::Transient
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
