//! The OCI distribution / Docker Registry v2 front-end: parses requests into
//! domain types, calls the registry core, and writes responses.

mod access;
mod blobs;
mod listing;
mod manifests;
pub mod route;
mod uploads;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

use super::auth::Peer;
use super::error::ApiError;
use super::state::AppState;
use crate::registry::RegistryError;
use crate::registry::name::RepoName;
use crate::registry::uploads as core_uploads;
use route::Route;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

pub type ApiResult = Result<Response, ApiError>;

/// `GET /v2/`: the API version check (which also proves credentials).
pub async fn base(State(state): State<AppState>, req: Request) -> Response {
    let addr = state.client_addr(req.headers(), req.extensions().get::<Peer>());
    let mut query = Query::parse(None);
    if let Err(r) =
        access::authorize(&state, None, req.method(), &mut query, req.headers(), addr).await
    {
        return r;
    }
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
pub async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/v2/").unwrap_or("");
    let Some(route) = route::parse(path) else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    let route = match route {
        Ok(r) => r,
        Err(e) => return ApiError(e).into_response(),
    };
    let mut query = Query::parse(parts.uri.query());
    let h = &parts.headers;
    let m = &parts.method;
    let addr = state.client_addr(h, parts.extensions.get::<Peer>());
    let who = match access::authorize(&state, Some(&route), m, &mut query, h, addr).await {
        Ok(who) => who,
        Err(r) => return r,
    };
    let reg = &state.registry;
    let event = audit_event(&route, m);
    let blob_get = matches!(route, Route::Blob(..)) && *m == Method::GET;
    let result = match route {
        Route::Catalog if m == Method::GET => listing::catalog(&state, &who, &query).await,
        Route::Tags(name) if m == Method::GET => listing::tags(reg, &name, &query).await,
        Route::Referrers(name, d) if m == Method::GET => {
            listing::referrers(reg, &name, &d, &query).await
        }
        Route::Manifest(name, r) => match (m.clone(), r) {
            (Method::PUT, Err(e)) => Err(e.into()),
            // No manifest can exist under a malformed reference.
            (Method::GET | Method::HEAD | Method::DELETE, Err(_)) => {
                Err(RegistryError::ManifestUnknown.into())
            }
            (Method::GET, Ok(r)) => manifests::get(reg, &name, &r, h, false).await,
            (Method::HEAD, Ok(r)) => manifests::get(reg, &name, &r, h, true).await,
            (Method::PUT, Ok(r)) => manifests::put(reg, &name, &r, h, body).await,
            (Method::DELETE, Ok(r)) => manifests::delete(reg, &name, &r).await,
            _ => not_allowed(m),
        },
        Route::Blob(name, d) => match *m {
            Method::GET => blobs::get(reg, &name, &d, h, false).await,
            Method::HEAD => blobs::get(reg, &name, &d, h, true).await,
            Method::DELETE => blobs::delete(reg, &name, &d).await,
            _ => not_allowed(m),
        },
        Route::Pieces(name, d) if m == Method::GET => {
            crate::api::p2p::pieces(&state, &name, &d, h).await
        }
        Route::Uploads(name) if m == Method::POST => {
            uploads::start(reg, &name, &query, h, body).await
        }
        Route::Upload(name, id) => match *m {
            Method::GET => uploads::status(reg, &name, &id).await,
            Method::PATCH => uploads::patch(reg, &name, &id, h, body).await,
            Method::PUT => uploads::put(reg, &name, &id, &query, h, body).await,
            Method::DELETE => uploads::cancel(reg, &name, &id).await,
            _ => not_allowed(m),
        },
        _ => not_allowed(m),
    };
    match result {
        Ok(r) => {
            if blob_get {
                let len = r
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok());
                state.counters.blob_served(len.unwrap_or(0));
            }
            if let Some((action, repo, target)) = event {
                let digest = r
                    .headers()
                    .get(&CONTENT_DIGEST)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let created = r.status() == StatusCode::CREATED;
                record(&state, &who, action, &repo, target, created, digest, addr).await;
            }
            r
        }
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

/// What a request means for the audit log, if anything: manifest fetches
/// are pulls (blob fetches are not logged: every pull fetches a manifest),
/// a finished blob upload or a manifest put is a push, deletes are deletes.
fn audit_event(route: &Route, m: &Method) -> Option<(&'static str, RepoName, Option<String>)> {
    match (route, m) {
        (Route::Manifest(n, Ok(r)), &Method::GET) => Some(("pull", n.clone(), Some(r.to_string()))),
        (Route::Manifest(n, Ok(r)), &Method::PUT) => Some(("push", n.clone(), Some(r.to_string()))),
        (Route::Manifest(n, Ok(r)), &Method::DELETE) => {
            Some(("delete", n.clone(), Some(r.to_string())))
        }
        (Route::Blob(n, d), &Method::DELETE) => Some(("delete", n.clone(), Some(d.to_string()))),
        (Route::Uploads(n), &Method::POST) | (Route::Upload(n, _), &Method::PUT) => {
            Some(("push", n.clone(), None))
        }
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
/// Records a successful request; uploads count only when a blob was
/// committed (201), with its digest.
async fn record(
    state: &AppState,
    who: &access::Who,
    action: &str,
    repo: &RepoName,
    target: Option<String>,
    created: bool,
    digest: Option<String>,
    addr: Option<std::net::IpAddr>,
) {
    let target = match target {
        Some(t) => Some(t),
        None if created => digest,
        None => return,
    };
    state
        .audit
        .record(
            &who.name,
            action,
            Some(repo.as_str()),
            target.as_deref(),
            addr,
        )
        .await;
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

    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
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
