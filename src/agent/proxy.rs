//! Read requests forwarded to the hub as they are (`/v2/`, manifests,
//! tags, catalog, referrers, blob HEADs) with the client's credentials,
//! and the hub's answers passed back, its `401` challenge included: docker
//! then fetches a token from the hub's realm and sends it to the agent,
//! which forwards it.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::http;
use super::hub::Hub;

/// Request headers forwarded to the hub.
const FORWARDED: &[&str] = &[
    "authorization",
    "accept",
    "range",
    "if-none-match",
    "if-modified-since",
];

/// Response headers passed back to the client.
const PASSED_BACK: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "docker-content-digest",
    "docker-distribution-api-version",
    "www-authenticate",
    "etag",
    "last-modified",
    "link",
    "location",
    "oci-filters-applied",
    "retry-after",
];

pub async fn forward(
    hub: &Hub,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
) -> Response {
    let mut fwd: Vec<(&str, String)> = Vec::new();
    for name in FORWARDED {
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !values.is_empty() {
            fwd.push((name, values.join(", ")));
        }
    }
    let refs: Vec<(&str, &str)> = fwd.iter().map(|(n, v)| (*n, v.as_str())).collect();
    match hub.forward(method.as_str(), path_and_query, &refs).await {
        Ok(r) => pass_back(r, method == Method::HEAD),
        Err(e) => hub_unreachable(&anyhow::Error::from(e)),
    }
}

/// The hub's response, its relevant headers and streamed body.
pub fn pass_back(r: http::Response, head: bool) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for (name, value) in &r.headers {
        if PASSED_BACK.contains(&name.as_str())
            && let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            )
        {
            headers.append(n, v);
        }
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from_stream(r.into_stream())
    };
    let mut resp = (status, body).into_response();
    // A HEAD keeps the hub's Content-Length (of the body it would send).
    resp.headers_mut().extend(headers);
    resp
}

/// The hub's refusal of a HEAD (which has no body) as the answer to a
/// GET: its status and challenge, with an error body of the agent's.
pub fn refusal(r: &http::Response) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let code = match r.status {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "BLOB_UNKNOWN",
        _ => "UNKNOWN",
    };
    let mut resp = error(status, code, &format!("the hub answered {}", r.status));
    for (name, value) in &r.headers {
        if name == "www-authenticate"
            && let Ok(v) = HeaderValue::from_str(value)
        {
            resp.headers_mut().append("www-authenticate", v);
        }
    }
    resp
}

pub fn hub_unreachable(e: &anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{e:#}"), "hub request failed");
    error(
        StatusCode::BAD_GATEWAY,
        "UNAVAILABLE",
        &format!("the agent cannot reach the hub: {e:#}"),
    )
}

/// A registry error body: `{"errors":[{"code","message"}]}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]});
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}
