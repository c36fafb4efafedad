//! Answers as the gateway writes them: `{"Action": "<Action>Response", "RetCode": n, ...}` with
//! HTTP 200 even for errors, plus the broken answers faults call for.

use std::fmt::Display;

use axum::Json;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::accounts::Account;
use super::inventory::Page;
use super::shape::NUMBERS_SENT_AS_STRINGS;

/// `<Action>Response`; just `Response` when the request named no action.
fn response_name(action: Option<&str>) -> String {
    format!("{}Response", action.unwrap_or(""))
}

pub(super) fn error(action: Option<&str>, code: i64, message: &str) -> Response {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorBody<'a> {
        action: String,
        ret_code: i64,
        message: &'a str,
    }
    Json(ErrorBody {
        action: response_name(action),
        ret_code: code,
        message,
    })
    .into_response()
}

/// The `DescribeCompShareInstance` answer. With `numbers_as_strings`, `RetCode`, `TotalCount` and
/// the fields older answers quote are sent as strings.
pub(super) fn instances(action: &str, page: &Page, numbers_as_strings: bool) -> Response {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Body<'a> {
        total_count: Number<usize>,
        u_host_set: Vec<Element<'a>>,
    }
    success(
        action,
        numbers_as_strings,
        Body {
            total_count: Number(page.total, numbers_as_strings),
            u_host_set: page
                .instances
                .iter()
                .map(|instance| Element(&instance.fields, numbers_as_strings))
                .collect(),
        },
    )
}

/// The `GetProjectList` answer.
pub(super) fn projects(action: &str, account: &Account, numbers_as_strings: bool) -> Response {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Project<'a> {
        project_id: &'a str,
        project_name: &'a str,
        is_default: bool,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Body<'a> {
        project_count: Number<usize>,
        project_set: Vec<Project<'a>>,
    }
    let projects = account.projects();
    success(
        action,
        numbers_as_strings,
        Body {
            project_count: Number(projects.len(), numbers_as_strings),
            project_set: projects
                .iter()
                .map(|p| Project {
                    project_id: &p.id,
                    project_name: &p.name,
                    is_default: p.is_default,
                })
                .collect(),
        },
    )
}

/// The answer of any other action: its fields after `Action` and `RetCode`.
pub(super) fn fields(
    action: &str,
    fields: &Map<String, Value>,
    numbers_as_strings: bool,
) -> Response {
    success(action, numbers_as_strings, fields)
}

fn success<B: Serialize>(action: &str, numbers_as_strings: bool, body: B) -> Response {
    #[derive(serde::Serialize)]
    struct Success<B> {
        #[serde(rename = "Action")]
        action: String,
        #[serde(rename = "RetCode")]
        ret_code: Number<i64>,
        #[serde(flatten)]
        body: B,
    }
    Json(Success {
        action: response_name(Some(action)),
        ret_code: Number(0, numbers_as_strings),
        body,
    })
    .into_response()
}

/// HTTP 200 with a body cut off mid-answer, as a broken proxy or a truncated read delivers it.
pub(super) fn malformed(action: Option<&str>) -> Response {
    let body = format!(
        r#"{{"Action": "{}", "RetCode": 0, "TotalCount": 1, "UHostSet": [{{"UHostId": "#,
        response_name(action)
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A redirect, as a proxy or a moved endpoint sends it.
pub(super) fn redirect(status: u16, location: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
    (status, [(header::LOCATION, location.to_owned())], "").into_response()
}

/// A 200 answer that is an HTML page, as a captive portal or a misrouted proxy sends.
pub(super) fn html_page() -> Response {
    let body = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please sign in to continue.</body></html>\n";
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A 200 envelope of `bytes` bytes (a huge padding field), streamed in chunks so that the
/// simulator never holds it.
pub(super) fn oversized(action: Option<&str>, bytes: u64) -> Response {
    const CHUNK: usize = 64 << 10;
    let head = format!(
        r#"{{"Action": "{}", "RetCode": 0, "UHostSet": [], "Padding": ""#,
        response_name(action)
    );
    let tail = "\"}";
    let padding = bytes.saturating_sub((head.len() + tail.len()) as u64);
    let chunks = (padding / CHUNK as u64, (padding % CHUNK as u64) as usize);
    let filler = Bytes::from(vec![b'x'; CHUNK]);
    let body = futures::stream::iter(
        std::iter::once(Bytes::from(head))
            .chain(std::iter::repeat_n(filler.clone(), chunks.0 as usize))
            .chain(std::iter::once(filler.slice(..chunks.1)))
            .chain(std::iter::once(Bytes::from_static(tail.as_bytes())))
            .map(Ok::<_, std::convert::Infallible>),
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// An HTTP error status with the kind of page a load balancer answers with.
pub(super) fn http_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let body = format!(
        "<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center></body></html>\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

/// A number, or its decimal string when the answer quotes numbers.
struct Number<T>(T, bool);

impl<T: Serialize + Display> Serialize for Number<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Number(value, as_string) = self;
        if *as_string {
            serializer.collect_str(value)
        } else {
            value.serialize(serializer)
        }
    }
}

/// A `UHostSet` element, serialized from the stored fields without copying them.
struct Element<'a>(&'a Map<String, Value>, bool);

impl Serialize for Element<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Element(fields, numbers_as_strings) = self;
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (name, value) in *fields {
            match value {
                Value::Number(n)
                    if *numbers_as_strings && NUMBERS_SENT_AS_STRINGS.contains(&name.as_str()) =>
                {
                    map.serialize_entry(name, &n.to_string())?
                }
                _ => map.serialize_entry(name, value)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::Fixture;
    use serde_json::json;
    use std::sync::Arc;

    async fn body(response: Response) -> (StatusCode, Vec<u8>) {
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    async fn json_body(response: Response) -> Value {
        let (status, bytes) = body(response).await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&bytes).unwrap()
    }

    fn page() -> Page {
        let fixture = Fixture::from_yaml(
            "accounts: [{publicKey: p, privateKey: k}]\ninstances: [{UHostId: uhost-1, Region: r, Memory: 1024, CPU: 4}]",
        )
        .unwrap();
        Page {
            total: 7,
            instances: vec![Arc::clone(fixture.inventory.get("uhost-1").unwrap())],
        }
    }

    #[tokio::test]
    async fn errors_carry_action_retcode_and_message() {
        let got = json_body(error(
            Some("DescribeCompShareInstance"),
            171,
            "Signature VerifyAC Error",
        ))
        .await;
        assert_eq!(
            got,
            json!({"Action": "DescribeCompShareInstanceResponse", "RetCode": 171, "Message": "Signature VerifyAC Error"})
        );
        let got = json_body(error(None, 160, "Missing Action")).await;
        assert_eq!(got["Action"], "Response");
    }

    #[tokio::test]
    async fn instances_are_served_with_numbers_or_quoted_numbers() {
        let got = json_body(instances("DescribeCompShareInstance", &page(), false)).await;
        assert_eq!(got["Action"], "DescribeCompShareInstanceResponse");
        assert_eq!(got["RetCode"], 0);
        assert_eq!(got["TotalCount"], 7);
        assert!(got.get("Message").is_none());
        let element = &got["UHostSet"][0];
        assert_eq!(element["UHostId"], "uhost-1");
        assert_eq!(element["Memory"], 1024);
        assert_eq!(element["IPSet"], json!([]));

        let got = json_body(instances("DescribeCompShareInstance", &page(), true)).await;
        assert_eq!(got["RetCode"], "0");
        assert_eq!(got["TotalCount"], "7");
        let element = &got["UHostSet"][0];
        assert_eq!(element["Memory"], "1024");
        assert!(element["CreateTime"].is_string());
        assert_eq!(element["CPU"], 4);
    }

    #[tokio::test]
    async fn projects_list_the_accounts_projects() {
        let fixture = Fixture::from_yaml(
            "accounts: [{publicKey: p, privateKey: k, projects: [{projectId: org-1, name: Main, default: true}, {projectId: org-2}]}]",
        )
        .unwrap();
        let account = fixture.accounts.get("p").unwrap();
        let got = json_body(projects("GetProjectList", account, false)).await;
        assert_eq!(
            got,
            json!({"Action": "GetProjectListResponse", "RetCode": 0, "ProjectCount": 2, "ProjectSet": [
                {"ProjectId": "org-1", "ProjectName": "Main", "IsDefault": true},
                {"ProjectId": "org-2", "ProjectName": "org-2", "IsDefault": false},
            ]})
        );
    }

    #[tokio::test]
    async fn other_answers_carry_their_fields_after_the_envelope() {
        let body = json!({"UHostIds": ["uhost-1"]})
            .as_object()
            .unwrap()
            .clone();
        let got = json_body(fields("CreateCompShareInstance", &body, false)).await;
        assert_eq!(
            got,
            json!({"Action": "CreateCompShareInstanceResponse", "RetCode": 0, "UHostIds": ["uhost-1"]})
        );
        let got = json_body(fields("CreateCompShareInstance", &body, true)).await;
        assert_eq!(got["RetCode"], "0");
    }

    #[tokio::test]
    async fn broken_answers_are_broken() {
        let (status, bytes) = body(malformed(Some("DescribeCompShareInstance"))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(serde_json::from_slice::<Value>(&bytes).is_err());
        let (status, _) = body(http_error(503)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
