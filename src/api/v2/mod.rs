//! The OCI distribution / Docker Registry v2 front-end: parses requests into
//! domain types, calls the registry core, and writes responses.

mod blobs;
mod listing;
mod manifests;
pub mod route;
mod uploads;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

use super::error::ApiError;
use crate::registry::uploads as core_uploads;
use crate::registry::{Registry, RegistryError};
use route::Route;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

pub type ApiResult = Result<Response, ApiError>;

/// `GET /v2/`: the API version check.
pub async fn base() -> Response {
    let mut r = (StatusCode::OK, "{}").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// Any other method on `/v2/`.
pub async fn base_not_allowed(m: Method) -> Response {
    not_allowed(&m).unwrap_or_else(IntoResponse::into_response)
}

/// Every `/v2/...` request other than the version check.
pub async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/v2/").unwrap_or("");
    let Some(route) = route::parse(path) else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    let route = match route {
        Ok(r) => r,
        Err(e) => return ApiError(e).into_response(),
    };
    let query = Query::parse(parts.uri.query());
    let h = &parts.headers;
    let m = &parts.method;
    let result = match route {
        Route::Catalog if m == Method::GET => listing::catalog(&reg, &query).await,
        Route::Tags(name) if m == Method::GET => listing::tags(&reg, &name, &query).await,
        Route::Referrers(name, d) if m == Method::GET => {
            listing::referrers(&reg, &name, &d, &query).await
        }
        Route::Manifest(name, r) => match (m.clone(), r) {
            (Method::PUT, Err(e)) => Err(e.into()),
            // No manifest can exist under a malformed reference.
            (Method::GET | Method::HEAD | Method::DELETE, Err(_)) => {
                Err(RegistryError::ManifestUnknown.into())
            }
            (Method::GET, Ok(r)) => manifests::get(&reg, &name, &r, h, false).await,
            (Method::HEAD, Ok(r)) => manifests::get(&reg, &name, &r, h, true).await,
            (Method::PUT, Ok(r)) => manifests::put(&reg, &name, &r, h, body).await,
            (Method::DELETE, Ok(r)) => manifests::delete(&reg, &name, &r).await,
            _ => not_allowed(m),
        },
        Route::Blob(name, d) => match *m {
            Method::GET => blobs::get(&reg, &name, &d, h, false).await,
            Method::HEAD => blobs::get(&reg, &name, &d, h, true).await,
            Method::DELETE => blobs::delete(&reg, &name, &d).await,
            _ => not_allowed(m),
        },
        Route::Uploads(name) if m == Method::POST => {
            uploads::start(&reg, &name, &query, h, body).await
        }
        Route::Upload(name, id) => match *m {
            Method::GET => uploads::status(&reg, &name, &id).await,
            Method::PATCH => uploads::patch(&reg, &name, &id, h, body).await,
            Method::PUT => uploads::put(&reg, &name, &id, &query, h, body).await,
            Method::DELETE => uploads::cancel(&reg, &name, &id).await,
            _ => not_allowed(m),
        },
        _ => not_allowed(m),
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            let sends_body = matches!(*m, Method::POST | Method::PUT | Method::PATCH);
            let mut r = e.into_response();
            // A refused body may be unread: say the connection ends here
            // instead of leaving the client to find out on its next request.
            if sends_body {
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            r
        }
    }
}

fn not_allowed(m: &Method) -> ApiResult {
    Err(RegistryError::Unsupported(format!("method {m} is not allowed here")).into())
}

/// The query string, decoded.
pub struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The request body as the core takes it: a byte stream and its length.
fn core_body(headers: &HeaderMap, body: Body) -> core_uploads::Body {
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let stream = body
        .into_data_stream()
        .map_err(|e| std::io::Error::other(e.to_string()));
    core_uploads::Body {
        stream: Box::pin(stream),
        len,
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Builds a header value from text the server produced (always valid).
fn hv(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).expect("server-made header values are ASCII")
}

/// An empty response with a status and headers.
fn empty(status: StatusCode, headers: &[(HeaderName, HeaderValue)]) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    let h = r.headers_mut();
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}
