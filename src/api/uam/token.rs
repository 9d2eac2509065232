//! The Docker registry token service (`/uam/auth`): `GET` with optional
//! Basic credentials, as `docker login` and pulls use it, and the OAuth2
//! `POST` password grant. Tokens grant, of each requested scope, exactly
//! what the resolver allows the caller — possibly nothing.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Ctx;
use crate::api::auth;
use crate::auth::model::{Principal, RequestedScope};
use crate::auth::service::LoginError;

fn token_error(status: StatusCode, code: &str, message: &str) -> Response {
    auth::error(status, code, message)
}

/// Parses every `scope` value (each may hold several space-separated).
fn scopes(values: &[String]) -> Result<Vec<RequestedScope>, Response> {
    let mut out = Vec::new();
    for v in values {
        for s in v.split_whitespace() {
            let parsed = RequestedScope::parse(s).ok_or_else(|| {
                token_error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    &format!("scope {s:?} is not type:name:actions"),
                )
            })?;
            out.push(parsed);
        }
    }
    if out.len() > 64 {
        return Err(token_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "too many scopes",
        ));
    }
    Ok(out)
}

async fn respond(
    ctx: &Ctx,
    who: Principal,
    service: Option<&str>,
    scope_values: &[String],
) -> Response {
    if let Some(s) = service
        && s != ctx.auth.service()
    {
        return token_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            &format!(
                "this token service serves {:?}, not {s:?}",
                ctx.auth.service()
            ),
        );
    }
    let scopes = match scopes(scope_values) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (token, claims) = match ctx.auth.issue(&who, &scopes).await {
        Ok(t) => t,
        Err(e) => return auth::backend_error(&e.to_string()),
    };
    if !who.is_anonymous() {
        ctx.state
            .audit
            .record(who.name(), "login", None, None, ctx.addr)
            .await;
    }
    let issued = chrono::DateTime::from_timestamp(claims.iat as i64, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": ctx.auth.token_lifetime().as_secs(),
        "issued_at": issued,
    });
    super::ok(body).unwrap_or_else(IntoResponse::into_response)
}

async fn login(ctx: &Ctx, user: &str, secret: &str) -> Result<Principal, Response> {
    match ctx.auth.login(user, secret, ctx.addr).await {
        Ok(p) => Ok(p),
        Err(LoginError::Invalid) => Err(token_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "invalid username or password",
        )),
        Err(LoginError::Throttled(d)) => Err(auth::throttled(d)),
        Err(LoginError::Backend(e)) => Err(auth::backend_error(&e)),
    }
}

fn params(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn all(params: &[(String, String)], key: &str) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn one<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// `GET /uam/auth?service=&scope=&account=`
pub async fn get(ctx: Ctx, req: Request) -> Response {
    let p = params(req.uri().query());
    let who = match auth::basic(&ctx.headers) {
        Some((user, secret)) => {
            if let Some(account) = one(&p, "account")
                && account != user
            {
                return token_error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "account does not match the credentials",
                );
            }
            match login(&ctx, &user, &secret).await {
                Ok(p) => p,
                Err(r) => return r,
            }
        }
        None if ctx.headers.contains_key(axum::http::header::AUTHORIZATION) => {
            return token_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "only Basic credentials are accepted here",
            );
        }
        None => Principal::Anonymous,
    };
    respond(&ctx, who, one(&p, "service"), &all(&p, "scope")).await
}

/// `POST /uam/auth` with `grant_type=password&username=&password=&service=&scope=`
pub async fn post(ctx: Ctx, req: Request) -> Response {
    let bytes = match axum::body::to_bytes(req.into_body(), 64 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return token_error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "unreadable form body",
            );
        }
    };
    let p: Vec<(String, String)> = form_urlencoded::parse(&bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if one(&p, "grant_type") != Some("password") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "only grant_type=password is supported",
        );
    }
    let (Some(user), Some(secret)) = (one(&p, "username"), one(&p, "password")) else {
        return token_error(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "username and password are required",
        );
    };
    let who = match login(&ctx, user, secret).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    respond(&ctx, who, one(&p, "service"), &all(&p, "scope")).await
}
