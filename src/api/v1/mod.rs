//! The Docker Registry v1 (legacy) front-end: parses `/v1/...` requests,
//! checks them with the one resolver (`access.rs`), calls the core
//! (`registry::legacy`) and answers in the v1 form (`{"error": "..."}` for
//! errors, JSON strings for plain answers).

mod access;
mod images;
mod repos;
pub mod route;
mod search;
mod users;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use futures_util::TryStreamExt;
use serde_json::json;

use super::auth::Peer;
use super::state::AppState;
use crate::registry::legacy::LegacyError;
use crate::registry::uploads as core_uploads;
use route::{Route, RouteError};

pub const REGISTRY_VERSION: HeaderName = HeaderName::from_static("x-docker-registry-version");
pub const REGISTRY_STANDALONE: HeaderName = HeaderName::from_static("x-docker-registry-standalone");

/// The v1 protocol version this front-end speaks.
const VERSION: &str = "0.9.1";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/{*rest}", any(dispatch))
        .layer(axum::middleware::map_response(version_headers))
}

/// Every v1 answer names the protocol version and that this registry is
/// its own index.
async fn version_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(REGISTRY_VERSION, HeaderValue::from_static(VERSION));
    h.insert(REGISTRY_STANDALONE, HeaderValue::from_static("true"));
    r
}

/// What a handler needs of the request.
pub struct Ctx {
    pub state: AppState,
    pub headers: HeaderMap,
    pub method: Method,
    pub query: Option<String>,
    pub addr: Option<std::net::IpAddr>,
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/v1/").unwrap_or("");
    let route = match route::parse(path) {
        Ok(r) => r,
        Err(RouteError::NotFound) => return v1_error(StatusCode::NOT_FOUND, "Not found"),
        Err(RouteError::BadName(m)) => return v1_error(StatusCode::BAD_REQUEST, &m),
    };
    let ctx = Ctx {
        addr: state.client_addr(&parts.headers, parts.extensions.get::<Peer>()),
        state,
        headers: parts.headers,
        method: parts.method,
        query: parts.uri.query().map(str::to_string),
    };
    let m = ctx.method.clone();
    let sends_body = matches!(m, Method::PUT | Method::POST);
    let r = match (route, &m) {
        (Route::Ping, &Method::GET | &Method::HEAD) => json_response(StatusCode::OK, "\"\""),
        (Route::Users, &Method::GET) => users::check(&ctx).await,
        (Route::Users, &Method::POST) => users::signup(&ctx, body).await,
        (Route::Search, &Method::GET) => search::search(&ctx).await,
        (Route::Image(id, part), _) => images::handle(&ctx, id, part, body).await,
        (Route::Repository(repo), &Method::PUT) => repos::put_repository(&ctx, &repo, body).await,
        (Route::Repository(repo), &Method::DELETE) => repos::delete_repository(&ctx, &repo).await,
        (Route::RepoImages(repo), &Method::GET) => repos::get_images(&ctx, &repo).await,
        (Route::RepoImages(repo), &Method::PUT) => repos::put_images(&ctx, &repo, body).await,
        (Route::Tags(repo), &Method::GET) => repos::get_tags(&ctx, &repo).await,
        (Route::Tags(repo), &Method::DELETE) => repos::delete_repository(&ctx, &repo).await,
        (Route::Tag(repo, tag), &Method::GET) => repos::get_tag(&ctx, &repo, &tag).await,
        (Route::Tag(repo, tag), &Method::PUT) => repos::put_tag(&ctx, &repo, &tag, body).await,
        (Route::Tag(repo, tag), &Method::DELETE) => repos::delete_tag(&ctx, &repo, &tag).await,
        _ => Err(method_not_allowed()),
    };
    let mut r = r.unwrap_or_else(|e| e);
    // A refused body may be unread: the connection ends with the answer.
    if sends_body && !r.status().is_success() {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

pub type V1Result = Result<Response, Response>;

fn method_not_allowed() -> Response {
    v1_error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

/// A JSON answer.
pub fn json_response(status: StatusCode, body: impl Into<Body>) -> V1Result {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// The plain `""` answer of a v1 write.
pub fn done() -> V1Result {
    json_response(StatusCode::OK, "\"\"")
}

/// An error in the v1 form.
pub fn v1_error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }).to_string()).unwrap_or_else(|e| e)
}

/// The one place a core v1 error becomes an answer.
pub fn error_response(e: LegacyError) -> Response {
    let status = match &e {
        LegacyError::NotFound(_) => StatusCode::NOT_FOUND,
        LegacyError::Invalid(_) | LegacyError::InProgress => StatusCode::BAD_REQUEST,
        LegacyError::Exists(_) => StatusCode::CONFLICT,
        LegacyError::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
        LegacyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        LegacyError::Internal(m) => {
            tracing::error!(error = %m, "v1 internal error");
            return v1_error(StatusCode::INTERNAL_SERVER_ERROR, "internal server error");
        }
    };
    let mut r = v1_error(status, &e.to_string());
    if let LegacyError::RangeNotSatisfiable(size) = e {
        r.headers_mut()
            .insert(header::CONTENT_RANGE, hv(format!("bytes */{size}")));
    }
    r
}

/// Builds a header value from text the server produced (always valid).
pub fn hv(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).expect("server-made header values are ASCII")
}

/// Reads a small body (JSON) into memory, refusing one over `limit`.
pub async fn small_body(body: Body, limit: usize) -> Result<bytes::Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        v1_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body is unreadable or larger than {limit} bytes"),
        )
    })
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

impl Ctx {
    /// The query parameter `key`, decoded.
    pub fn param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    pub async fn audit(&self, who: &str, action: &str, repo: Option<&str>, target: Option<&str>) {
        self.state
            .audit
            .record(who, action, repo, target, self.addr)
            .await;
    }
}
