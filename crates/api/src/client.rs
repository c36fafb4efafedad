//! The HTTP side of the CompShare API: form-encoded, signed POSTs and the JSON envelope.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::error::CallError;
use super::lenient;
use super::model::DescribeResponse;
use super::signing::{self, Params};

/// The public CompShare gateway.
pub const DEFAULT_ENDPOINT: &str = "https://api.compshare.cn";
/// Header in which the gateway returns its request id.
pub const REQUEST_ID_HEADER: &str = "X-UCLOUD-REQUEST-UUID";
/// The action the operator is built around.
pub const DESCRIBE_ACTION: &str = "DescribeCompShareInstance";
/// Most instance ids (and most results) one `DescribeCompShareInstance` call may carry.
pub const MAX_IDS_PER_CALL: usize = 100;

/// An API key pair. The private key is only ever used to sign; `Debug` does not show it.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub public_key: String,
    pub private_key: SecretString,
}

impl Credentials {
    pub fn new(public_key: impl Into<String>, private_key: impl Into<String>) -> Self {
        Credentials {
            public_key: public_key.into(),
            private_key: SecretString::from(private_key.into()),
        }
    }

    /// Whether both hold the same key pair (a deliberate comparison: `PartialEq` on secrets is
    /// not offered, so they are not compared by accident).
    pub fn same_keys(&self, other: &Credentials) -> bool {
        self.public_key == other.public_key
            && self.private_key.expose_secret() == other.private_key.expose_secret()
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub endpoint: String,
    pub timeout: Duration,
    /// Plain HTTP sends signatures (not keys) in clear text and lets anyone on the path forge
    /// answers; it is meant for the simulator only.
    pub allow_insecure_http: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            timeout: Duration::from_secs(10),
            allow_insecure_http: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("endpoint {0:?} is not an http(s) URL")]
    NotAUrl(String),
    #[error(
        "endpoint {0:?} uses plain HTTP; pass --allow-insecure-http to accept that (simulator only)"
    )]
    InsecureHttp(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A client for the CompShare API gateway. Cheap to clone; it knows nothing of Kubernetes.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoint: String,
    timeout: Duration,
}

/// One `DescribeCompShareInstance` request.
#[derive(Clone, Debug, Default)]
pub struct DescribeRequest {
    pub region: String,
    pub zone: Option<String>,
    pub project_id: Option<String>,
    pub uhost_ids: Vec<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

impl Client {
    pub fn new(config: &ClientConfig) -> Result<Self, ConfigError> {
        let endpoint = config.endpoint.trim_end_matches('/').to_owned();
        if endpoint.starts_with("http://") {
            if !config.allow_insecure_http {
                return Err(ConfigError::InsecureHttp(endpoint));
            }
            tracing::warn!(%endpoint, "CompShare endpoint uses plain HTTP: certificate verification and transport encryption are off");
        } else if !endpoint.starts_with("https://") {
            return Err(ConfigError::NotAUrl(endpoint));
        }
        // One process-wide rustls provider (ring), shared with the Kubernetes client; installing
        // it a second time is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("compshare-operator/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .https_only(!config.allow_insecure_http)
            // A followed redirect would arrive as a GET without the signed form, and the
            // gateway's answer ("Missing Signature") would look like a key problem. A redirect
            // means the endpoint is wrong: it is reported as such (`CallError::Redirect`).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Client {
            http,
            endpoint,
            timeout: config.timeout,
        })
    }

    /// Calls `DescribeCompShareInstance` once.
    pub async fn describe(
        &self,
        credentials: &Credentials,
        request: &DescribeRequest,
    ) -> Result<DescribeResponse, CallError> {
        let mut params = Map::new();
        params.insert("Region".into(), json!(request.region));
        if let Some(zone) = &request.zone {
            params.insert("Zone".into(), json!(zone));
        }
        if let Some(project) = &request.project_id {
            params.insert("ProjectId".into(), json!(project));
        }
        if !request.uhost_ids.is_empty() {
            params.insert("UHostIds".into(), json!(request.uhost_ids));
        }
        if let Some(limit) = request.limit {
            params.insert("Limit".into(), json!(limit));
        }
        if let Some(offset) = request.offset {
            params.insert("Offset".into(), json!(offset));
        }
        self.call(credentials, DESCRIBE_ACTION, params).await
    }

    /// Calls any action: signs `params` (plus `Action`), posts them as a form, and reads the
    /// envelope. A non-zero `RetCode` is an error.
    pub async fn call<T: DeserializeOwned>(
        &self,
        credentials: &Credentials,
        action: &str,
        mut params: Map<String, Value>,
    ) -> Result<T, CallError> {
        params.insert("Action".into(), json!(action));
        let mut form: Params = signing::flatten(&params);
        signing::sign(
            &mut form,
            &credentials.public_key,
            credentials.private_key.expose_secret(),
        );

        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let mut request_id = String::new();
        // The bound covers sending, reading the (capped) body and parsing it.
        let exchange = async {
            let response = self
                .http
                .post(&self.endpoint)
                .query(&[("Action", action)])
                .header("U-Timestamp-Ms", millis.to_string())
                .form(&form)
                .send()
                .await
                .map_err(|e| self.transport_error(e))?;
            request_id = response
                .headers()
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            read_answer(response, self).await
        };
        let outcome = tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout(self.timeout)));
        if let Err(error) = &outcome {
            tracing::warn!(action, %error, request_id, "CompShare API call failed");
        }
        outcome
    }

    fn transport_error(&self, error: reqwest::Error) -> CallError {
        if error.is_timeout() {
            CallError::Timeout(self.timeout)
        } else if error.is_connect() {
            CallError::Unreachable(error_chain(&error))
        } else {
            CallError::Transport(error_chain(&error))
        }
    }
}

/// The most of an answer that is read. A page of 100 instances is about 300 KiB; anything near
/// this is not an answer, and reading it whole could exhaust the operator's memory.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;

async fn read_answer<T: DeserializeOwned>(
    mut response: reqwest::Response,
    client: &Client,
) -> Result<T, CallError> {
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or("")
            .to_owned();
        return Err(CallError::Redirect {
            status: status.as_u16(),
            location,
        });
    }
    if status.is_client_error() || status.is_server_error() {
        return Err(CallError::Http {
            status: status.as_u16(),
        });
    }
    let too_large = || {
        CallError::Malformed(format!(
            "the answer is larger than {} MiB, far more than any page of instances; it was not read",
            MAX_ANSWER_BYTES >> 20
        ))
    };
    if response
        .content_length()
        .is_some_and(|length| length > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| client.transport_error(e))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    parse_envelope(&body).map_err(|error| describe_non_json(error, &body, &content_type))
}

/// "expected value at line 1 column 1" says nothing to a person: when the body is not JSON at
/// all (an HTML error page from a proxy, say), the error says what came back instead. Only then
/// are its first bytes shown: a JSON answer cut short could carry a password further on.
fn describe_non_json(error: CallError, body: &[u8], content_type: &str) -> CallError {
    let starts_like_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| matches!(b, b'{' | b'['));
    match error {
        CallError::Malformed(_) if !starts_like_json => {
            let start: String = String::from_utf8_lossy(&body[..body.len().min(60)])
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            CallError::Malformed(format!(
                "the answer is not JSON ({} bytes, content type {:?}, starting {:?})",
                body.len(),
                content_type,
                start.trim()
            ))
        }
        other => other,
    }
}

/// Reads the JSON envelope: `RetCode` 0 (number or string) yields the body, anything else an error.
pub fn parse_envelope<T: DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| CallError::Malformed(e.to_string()))?;
    let field = |name: &str| value.get(name).filter(|v| !v.is_null());
    let ret_code = match field("RetCode") {
        None => return Err(CallError::Malformed("no RetCode in the answer".to_owned())),
        Some(code) => lenient::int(code)
            .flatten()
            .ok_or_else(|| CallError::Malformed(format!("RetCode {code} is not a number")))?,
    };
    if ret_code != 0 {
        return Err(CallError::Api {
            code: ret_code,
            message: field("Message")
                .and_then(lenient::string)
                .map(String::from)
                .unwrap_or_default(),
        });
    }
    serde_json::from_value(value).map_err(|e| CallError::Malformed(e.to_string()))
}

/// reqwest's top-level message is generic ("error sending request"); the cause says what happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CallError;

    #[test]
    fn ret_code_may_be_a_string() {
        let r: DescribeResponse = parse_envelope(
            br#"{"RetCode": "0", "TotalCount": "1", "UHostSet": [{"UHostId": "uhost-1"}]}"#,
        )
        .unwrap();
        assert_eq!(r.total_count, Some(1));
        assert_eq!(r.u_host_set[0].u_host_id, "uhost-1");
    }

    #[test]
    fn non_zero_ret_code_is_an_api_error_with_the_message() {
        let e = parse_envelope::<DescribeResponse>(
            br#"{"Action": "DescribeCompShareInstanceResponse", "RetCode": "171", "Message": "Signature VerifyAC Error"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e,
            CallError::Api {
                code: 171,
                message: "Signature VerifyAC Error".into()
            }
        );
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        for body in [
            &b"{"[..],
            b"",
            b"[]",
            b"null",
            b"{\"UHostSet\": []}",
            b"<html>",
        ] {
            assert!(
                matches!(
                    parse_envelope::<DescribeResponse>(body),
                    Err(CallError::Malformed(_))
                ),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(matches!(
            parse_envelope::<DescribeResponse>(br#"{"RetCode": 0, "UHostSet": "oops"}"#),
            Err(CallError::Malformed(_))
        ));
    }

    #[test]
    fn plain_http_needs_an_explicit_opt_in() {
        let mut config = ClientConfig {
            endpoint: "http://127.0.0.1:1".into(),
            ..ClientConfig::default()
        };
        assert!(matches!(
            Client::new(&config),
            Err(ConfigError::InsecureHttp(_))
        ));
        config.allow_insecure_http = true;
        assert!(Client::new(&config).is_ok());
        config.endpoint = "ftp://x".into();
        assert!(matches!(Client::new(&config), Err(ConfigError::NotAUrl(_))));
    }

    #[test]
    fn credentials_debug_hides_the_private_key() {
        let c = Credentials::new("pub", "very-private");
        assert!(!format!("{c:?}").contains("very-private"));
    }
}
