//! `/uam`: the account and permission administration API, compatible with
//! the original Dockyard's (paths, JSON field names, numeric role codes),
//! and the Docker token service at `/uam/auth`.
//!
//! Callers authenticate with HTTP Basic (password; API tokens are for the
//! registry and may not administer accounts). Every change is written to
//! the audit log and clears cached permission decisions.

mod accounts;
mod audit;
mod orgs;
mod repos;
mod teams;
mod token;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::auth::Peer;
use super::state::AppState;
use crate::auth::model::Principal;
use crate::auth::service::{Auth, LoginError};
use crate::meta::MetaError;
use crate::meta::accounts::Refusal;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/uam/auth", get(token::get).post(token::post))
        .route("/uam/user/signup", post(accounts::signup))
        .route("/uam/user/signin", get(accounts::signin))
        .route("/uam/user/list", get(accounts::list))
        .route("/uam/user/add", post(accounts::add))
        .route("/uam/user/update", put(accounts::update))
        .route("/uam/user/password", put(accounts::password))
        .route(
            "/uam/user/token",
            post(accounts::create_token).get(accounts::list_tokens),
        )
        .route("/uam/user/token/{id}", delete(accounts::delete_token))
        .route(
            "/uam/user/{user}",
            get(accounts::show).delete(accounts::remove),
        )
        .route("/uam/organization", post(orgs::create))
        .route("/uam/organization/", post(orgs::create))
        .route("/uam/organization/list", get(orgs::list))
        .route("/uam/organization/update", put(orgs::update))
        .route("/uam/organization/adduser", post(orgs::add_user))
        .route("/uam/organization/adduser/", post(orgs::add_user))
        .route(
            "/uam/organization/updateorganizationusermap",
            put(orgs::add_user),
        )
        .route(
            "/uam/organization/removeuser/{org}/{user}",
            delete(orgs::remove_user),
        )
        .route("/uam/organization/{org}/listuser", get(orgs::list_users))
        .route(
            "/uam/organization/{org}",
            get(orgs::show).delete(orgs::remove),
        )
        .route("/uam/team", post(teams::create))
        .route("/uam/team/", post(teams::create))
        .route("/uam/team/adduser", post(teams::add_user))
        .route("/uam/team/updateteamusermap", put(teams::add_user))
        .route("/uam/team/addrepository", post(teams::add_repo))
        .route("/uam/team/updateteamrepositorymap", put(teams::add_repo))
        .route(
            "/uam/team/removeuser/{org}/{team}/{user}",
            delete(teams::remove_user),
        )
        .route(
            "/uam/team/removerepository/{org}/{team}/{*repo}",
            delete(teams::remove_repo),
        )
        .route("/uam/team/{org}/listteam", get(teams::list))
        .route("/uam/team/{org}/{team}/listuser", get(teams::list_users))
        .route(
            "/uam/team/{org}/{team}/listrepository",
            get(teams::list_repos),
        )
        .route("/uam/team/{org}/{team}", delete(teams::remove))
        .route("/uam/repository", post(repos::create))
        .route("/uam/repository/", post(repos::create))
        .route("/uam/repository/update", put(repos::update))
        .route("/uam/repository/{namespace}/list", get(repos::list))
        .route(
            "/uam/repository/{namespace}/{*repo}",
            get(repos::show).delete(repos::remove),
        )
        .route("/uam/permission/{user}/{*repo}", get(repos::permission))
        .route("/uam/audit", get(audit::query))
        .route("/uam/{org}", delete(orgs::remove))
        .route("/uam/{namespace}/{*repo}", delete(repos::remove))
}

/// A `/uam` error: the spec's JSON error form with a clear message.
#[derive(Debug)]
pub enum UamError {
    Unauthorized,
    Forbidden(String),
    Invalid(String),
    NotFound(String),
    Conflict(String),
    Throttled(std::time::Duration),
    /// The hub runs standalone: there are no accounts.
    Standalone,
    /// The account store or the directory cannot be reached.
    Unavailable(String),
    Internal(String),
}

impl From<MetaError> for UamError {
    fn from(e: MetaError) -> Self {
        UamError::Internal(e.to_string())
    }
}

impl From<Refusal> for UamError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Exists(m) => UamError::Conflict(format!("{m} already exists")),
            Refusal::Missing(m) => UamError::NotFound(format!("{m} does not exist")),
            Refusal::Invalid(m) => UamError::Invalid(m),
        }
    }
}

impl IntoResponse for UamError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            UamError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required".to_string(),
            ),
            UamError::Forbidden(m) => (StatusCode::FORBIDDEN, "DENIED", m),
            UamError::Invalid(m) => (StatusCode::BAD_REQUEST, "INVALID", m),
            UamError::NotFound(m) => (StatusCode::NOT_FOUND, "NOT_FOUND", m),
            UamError::Conflict(m) => (StatusCode::CONFLICT, "CONFLICT", m),
            UamError::Throttled(d) => {
                let mut r = super::auth::throttled(d);
                *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                return r;
            }
            UamError::Standalone => (
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "this hub runs standalone: it has no accounts ([dockyard] standalone = true)"
                    .to_string(),
            ),
            UamError::Unavailable(m) => {
                tracing::error!(error = %m, "authentication backend failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "authentication backend is unavailable".to_string(),
                )
            }
            UamError::Internal(m) => {
                tracing::error!(error = %m, "/uam internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "UNKNOWN",
                    "internal server error".to_string(),
                )
            }
        };
        let body = json!({"errors": [{"code": code, "message": message}]});
        let mut r = (status, body.to_string()).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"dockyard\""),
            );
        }
        r
    }
}

pub type UamResult = Result<Response, UamError>;

/// A 200 answer with a JSON body.
pub fn ok(body: serde_json::Value) -> UamResult {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(r)
}

/// The request's context: the auth service and the client's address.
pub struct Ctx {
    pub state: AppState,
    pub auth: Arc<Auth>,
    pub addr: Option<IpAddr>,
    pub headers: axum::http::HeaderMap,
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = UamError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Ctx, UamError> {
        let auth = state.auth.clone().ok_or(UamError::Standalone)?;
        Ok(Ctx {
            addr: state.client_addr(&parts.headers, parts.extensions.get::<Peer>()),
            headers: parts.headers.clone(),
            state: state.clone(),
            auth,
        })
    }
}

/// The authenticated caller of an administration request.
pub struct Caller {
    pub name: String,
    pub admin: bool,
}

impl Ctx {
    /// The caller, from Basic credentials with a password.
    pub async fn caller(&self) -> Result<Caller, UamError> {
        let Some((user, secret)) = super::auth::basic(&self.headers) else {
            return Err(UamError::Unauthorized);
        };
        match self.auth.login(&user, &secret, self.addr).await {
            Ok(Principal::User {
                name,
                admin,
                limit: None,
            }) => Ok(Caller { name, admin }),
            Ok(_) => Err(UamError::Forbidden(
                "API tokens cannot administer accounts; use a password".into(),
            )),
            Err(LoginError::Invalid) => Err(UamError::Unauthorized),
            Err(LoginError::Throttled(d)) => Err(UamError::Throttled(d)),
            Err(LoginError::Backend(e)) => Err(UamError::Unavailable(e)),
        }
    }

    /// After a change: forget cached decisions and log it.
    pub async fn changed(&self, actor: &str, action: &str, repo: Option<&str>, target: &str) {
        // New accounts and tokens change nobody's standing: keep others'
        // remembered logins (sign-ups must not force everyone through a
        // key derivation again). Anything else may have (a password, a
        // membership a directory login re-syncs): forget them.
        match action {
            "user.create" | "token.create" => self.auth.invalidate(),
            _ => self.auth.forget_credentials(),
        }
        self.state
            .audit
            .record(actor, action, repo, Some(target), self.addr)
            .await;
    }
}

/// Reads a JSON body (bounded), refusing unknown fields with a clear error.
pub async fn json_body<T: DeserializeOwned>(req: Request) -> Result<T, UamError> {
    let bytes = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| {
            UamError::Invalid("request body is unreadable or larger than 64 KiB".into())
        })?;
    serde_json::from_slice(&bytes).map_err(|e| UamError::Invalid(format!("request body: {e}")))
}

pub fn invalid(e: impl ToString) -> UamError {
    UamError::Invalid(e.to_string())
}
