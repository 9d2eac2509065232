//! HTTP side of authentication, shared by every front-end: reading the
//! client address and the `Authorization` header, and answering 401s with
//! the Docker token challenge.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::json;

use crate::auth::model::Principal;
use crate::auth::service::{Auth, LoginError};
use crate::auth::token::Claims;

/// The peer address of a connection, put on every request by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The client's address: the peer, or, if `trust_proxy`, what a proxy on
/// the same host (nginx) says the client was.
pub fn client_addr(headers: &HeaderMap, peer: Option<&Peer>, trust_proxy: bool) -> Option<IpAddr> {
    let peer = peer?.0.ip();
    if trust_proxy && peer.is_loopback() {
        let forwarded = headers
            .get("x-real-ip")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                headers
                    .get("x-forwarded-for")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(',').next())
            })
            .and_then(|v| v.trim().parse().ok());
        return Some(forwarded.unwrap_or(peer));
    }
    Some(peer)
}

/// `scheme://host` as the client addressed this hub.
pub fn origin(headers: &HeaderMap) -> String {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = get("x-forwarded-proto").unwrap_or("http");
    let host = get("x-forwarded-host")
        .or_else(|| get("host"))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// What the request's `Authorization` header proves.
pub enum Credential {
    Anonymous,
    /// Basic credentials that checked out.
    User(Principal),
    /// A valid bearer token of this hub.
    Token(Claims),
}

pub enum CredentialError {
    /// Wrong credentials, or a token that is not valid.
    Invalid {
        bearer: bool,
    },
    Throttled(std::time::Duration),
    Backend(String),
}

pub fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

pub async fn credential(
    auth: &Auth,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Credential, CredentialError> {
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Ok(Credential::Anonymous);
    };
    let v = v.to_str().unwrap_or("");
    if let Some((scheme, token)) = v.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return match auth.bearer(token.trim()) {
            Some(claims) => Ok(Credential::Token(claims)),
            None => Err(CredentialError::Invalid { bearer: true }),
        };
    }
    let Some((user, pass)) = basic(headers) else {
        return Err(CredentialError::Invalid { bearer: false });
    };
    match auth.login(&user, &pass, addr).await {
        Ok(p) => Ok(Credential::User(p)),
        Err(LoginError::Invalid) => Err(CredentialError::Invalid { bearer: false }),
        Err(LoginError::Throttled(d)) => Err(CredentialError::Throttled(d)),
        Err(LoginError::Backend(e)) => Err(CredentialError::Backend(e)),
    }
}

/// 401 with the token challenge for `scope` (`type:name:actions`).
pub fn challenge(
    auth: &Auth,
    headers: &HeaderMap,
    scope: Option<&str>,
    error: Option<&str>,
) -> Response {
    let mut value = format!(
        "Bearer realm=\"{}\",service=\"{}\"",
        auth.realm(&origin(headers)),
        auth.service()
    );
    if let Some(s) = scope {
        value.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        value.push_str(&format!(",error=\"{e}\""));
    }
    let body = json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": scope}]});
    let mut r = (StatusCode::UNAUTHORIZED, body.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// An error in the spec's JSON form with a code outside the core's enum.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "detail": null}]});
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// 403 for an account that may not do what it asked. The detail names
/// the access (Docker's client treats a bare code as retryable).
pub fn denied(kind: &str, name: &str, actions: &str) -> Response {
    let body = json!({"errors": [{
        "code": "DENIED",
        "message": "requested access to the resource is denied",
        "detail": [{"Type": kind, "Name": name, "Action": actions}],
    }]});
    let mut r = (StatusCode::FORBIDDEN, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

pub fn throttled(wait: std::time::Duration) -> Response {
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "TOOMANYREQUESTS",
        "too many failed logins; try again later",
    );
    // Round up: a client that waits as told must not be refused again.
    let secs = wait.as_millis().div_ceil(1000).max(1);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// The account store or the directory failed: the hub cannot tell who the
/// caller is right now.
pub fn backend_error(e: &str) -> Response {
    tracing::error!(error = %e, "authentication backend failed");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "authentication backend is unavailable",
    )
}
