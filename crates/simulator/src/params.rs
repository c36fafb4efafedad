//! Request parameters the way the gateway receives them: from the query string, a form body (what
//! both official SDKs send) or a JSON body, merged into one flat set of strings.

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Map, Value};

use compshare_api::signing::{self, Params};

/// Larger than any sane request: 100 ids and the rest are a few kilobytes.
const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub(super) enum ParamsError {
    #[error("cannot read the request body: {0}")]
    Body(String),
    #[error("the JSON body is not an object of parameters: {0}")]
    Json(String),
}

/// Reads every parameter of `request`. Body parameters win over query parameters of the same name
/// (the Go SDK repeats `Action` in the query string; the body is what it signs).
pub(super) async fn read(request: Request<Body>) -> Result<Params, ParamsError> {
    let (parts, body) = request.into_parts();
    let mut params: Params = parts
        .uri
        .query()
        .map(|query| parse_form(query.as_bytes()))
        .unwrap_or_default();
    if parts.method == Method::GET || parts.method == Method::HEAD {
        return Ok(params);
    }
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| ParamsError::Body(e.to_string()))?;
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|content_type| content_type.contains("json"));
    let body_params = if is_json {
        let object: Map<String, Value> =
            serde_json::from_slice(&body).map_err(|e| ParamsError::Json(e.to_string()))?;
        signing::flatten(&object)
    } else {
        parse_form(&body)
    };
    params.extend(body_params);
    Ok(params)
}

fn parse_form(bytes: &[u8]) -> Params {
    form_urlencoded::parse(bytes).into_owned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(content_type) = content_type {
            builder = builder.header(header::CONTENT_TYPE, content_type);
        }
        builder.body(Body::from(body.to_owned())).unwrap()
    }

    async fn params(request: Request<Body>) -> Vec<(String, String)> {
        read(request).await.unwrap().into_iter().collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn get_reads_the_query_string() {
        let got = params(request(
            Method::GET,
            "/?Action=GetProjectList&UHostIds.0=uhost%2D1&Name=a+b",
            None,
            "ignored=1",
        ))
        .await;
        assert_eq!(
            got,
            pairs(&[
                ("Action", "GetProjectList"),
                ("Name", "a b"),
                ("UHostIds.0", "uhost-1")
            ])
        );
    }

    #[tokio::test]
    async fn a_form_body_merges_with_the_query_and_wins() {
        let got = params(request(
            Method::POST,
            "/?Action=FromQuery&Extra=1",
            Some("application/x-www-form-urlencoded"),
            "Action=FromBody&Region=cn-wlcb",
        ))
        .await;
        assert_eq!(
            got,
            pairs(&[
                ("Action", "FromBody"),
                ("Extra", "1"),
                ("Region", "cn-wlcb")
            ])
        );
    }

    #[tokio::test]
    async fn a_json_body_is_flattened_like_the_signer_does() {
        let got = params(request(
            Method::POST,
            "/",
            Some("application/json; charset=utf-8"),
            r#"{"Action": "X", "UHostIds": ["a", "b"], "Limit": 100, "WithoutGpu": false, "Skip": null}"#,
        ))
        .await;
        assert_eq!(
            got,
            pairs(&[
                ("Action", "X"),
                ("Limit", "100"),
                ("UHostIds.0", "a"),
                ("UHostIds.1", "b"),
                ("WithoutGpu", "false"),
            ])
        );
    }

    #[tokio::test]
    async fn a_json_body_that_is_not_an_object_is_an_error() {
        for body in ["[1]", "{", "\"Action\""] {
            let result = read(request(Method::POST, "/", Some("application/json"), body)).await;
            assert!(matches!(result, Err(ParamsError::Json(_))), "{body}");
        }
    }
}
