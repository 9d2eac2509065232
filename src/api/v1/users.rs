//! `GET /v1/users/` (checks Basic credentials) and `POST /v1/users/`
//! (sign-up, under the rules of `/uam/user/signup`: not with accounts from
//! a directory, a valid account name, a password of 8 characters or more,
//! a plausible email, a namespace holding no repositories of a former
//! owner, sign-ups per address throttled). Refusals are 400, as the v1
//! protocol has it (an old client then checks the credentials with `GET`).

use axum::body::Body;
use axum::http::StatusCode;
use serde::Deserialize;

use super::access::throttled;
use super::{Ctx, V1Result, json_response, small_body, v1_error};
use crate::api::auth;
use crate::auth::names::check_account_name;
use crate::auth::password;
use crate::auth::service::LoginError;
use crate::meta::accounts::{SystemRole, User, UserSource};

const MIN_PASSWORD: usize = 8;

/// `GET /v1/users/`
pub async fn check(ctx: &Ctx) -> V1Result {
    let Some(a) = &ctx.state.auth else {
        return json_response(StatusCode::OK, "\"OK\"");
    };
    let Some((user, secret)) = auth::basic(&ctx.headers) else {
        return Err(v1_error(StatusCode::UNAUTHORIZED, "Requires authorization"));
    };
    match a.login(&user, &secret, ctx.addr).await {
        Ok(_) => {
            ctx.audit(&user, "login", None, None).await;
            json_response(StatusCode::OK, "\"OK\"")
        }
        Err(LoginError::Invalid) => Err(v1_error(StatusCode::UNAUTHORIZED, "Wrong login/password")),
        Err(LoginError::Throttled(d)) => Err(throttled(d)),
        Err(LoginError::Backend(e)) => Err(auth::backend_error(&e)),
    }
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
}

fn bad(msg: &str) -> axum::response::Response {
    v1_error(StatusCode::BAD_REQUEST, msg)
}

/// `POST /v1/users/` with `{"username", "password", "email"}`.
pub async fn signup(ctx: &Ctx, body: Body) -> V1Result {
    let Some(a) = &ctx.state.auth else {
        return Err(bad(
            "this hub has no accounts ([dockyard] standalone = true)",
        ));
    };
    if a.uses_directory() {
        return Err(bad(
            "accounts come from the directory: log in with your directory password",
        ));
    }
    let bytes = small_body(body, 64 * 1024).await?;
    let u: NewUser = serde_json::from_slice(&bytes).map_err(|_| bad("Error Decoding JSON"))?;
    let name = check_account_name(&u.username).map_err(|e| bad(&e))?;
    if u.password.chars().count() < MIN_PASSWORD {
        return Err(bad(&format!(
            "password must have at least {MIN_PASSWORD} characters"
        )));
    }
    if let Some(e) = u.email.as_deref().filter(|e| !e.is_empty()) {
        let ok = e.len() <= 254
            && e.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'));
        if !ok {
            return Err(bad(&format!("email {e:?} is not an address")));
        }
    }
    let backend = |e: crate::meta::MetaError| auth::backend_error(&e.to_string());
    if !a.meta.repos_in(&name).await.map_err(backend)?.is_empty() {
        return Err(bad(&format!(
            "namespace {name} holds repositories of a former owner; \
             only a system administrator may create this account"
        )));
    }
    if a.meta
        .namespace_kind(&name)
        .await
        .map_err(backend)?
        .is_some()
    {
        return Err(bad("Username or email already exists"));
    }
    a.signup_allowed(ctx.addr).map_err(throttled)?;
    let now = chrono::Utc::now().timestamp();
    let user = User {
        name: name.clone(),
        email: u.email.filter(|e| !e.is_empty()),
        password_hash: password::hash(&u.password).await,
        realname: None,
        comment: None,
        role: SystemRole::Member,
        source: UserSource::Db,
        created_at: now,
        updated_at: now,
    };
    match a.meta.create_user(&user).await.map_err(backend)? {
        Ok(()) => {}
        Err(_) => return Err(bad("Username or email already exists")),
    }
    a.invalidate();
    ctx.audit(&name, "user.create", None, Some(&name)).await;
    json_response(StatusCode::CREATED, "\"User Created\"")
}
