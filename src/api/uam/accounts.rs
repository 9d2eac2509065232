//! Users: sign-up, sign-in, listing, update, password change, removal, and
//! their API tokens.

use axum::extract::{Path, Request};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Ctx, UamError, UamResult, invalid, json_body, ok};
use crate::auth::model::ScopeGrant;
use crate::auth::names::check_account_name;
use crate::auth::password;
use crate::auth::service::API_TOKEN_PREFIX;
use crate::meta::accounts::{ApiToken, SystemRole, User, UserSource, UserUpdate};

pub fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "email": u.email,
        "realname": u.realname,
        "comment": u.comment,
        "role": u.role as u8,
        "source": u.source,
        "created": u.created_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    email: Option<String>,
    password: String,
    realname: Option<String>,
    comment: Option<String>,
    /// Only for `/uam/user/add` by an administrator.
    role: Option<u8>,
}

fn check_email(email: &Option<String>) -> Result<(), UamError> {
    match email {
        Some(e) if !e.is_empty() => {
            let ok = e.len() <= 254
                && e.split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'));
            if ok {
                Ok(())
            } else {
                Err(invalid(format!("email {e:?} is not an address")))
            }
        }
        _ => Ok(()),
    }
}

const MIN_PASSWORD: usize = 8;

fn check_password(p: &str) -> Result<(), UamError> {
    if p.chars().count() < MIN_PASSWORD {
        return Err(invalid(format!(
            "password must have at least {MIN_PASSWORD} characters"
        )));
    }
    Ok(())
}

/// Repositories left in a namespace (pushed while the hub ran standalone,
/// or whose account was deleted) belong to nobody; only an administrator
/// may hand them to a new account of that name.
pub async fn unclaimed_repositories(ctx: &Ctx, namespace: &str) -> Result<(), UamError> {
    if !ctx.auth.meta.repos_in(namespace).await?.is_empty() {
        return Err(UamError::Conflict(format!(
            "namespace {namespace} holds repositories of a former owner; \
             only a system administrator may create this account"
        )));
    }
    Ok(())
}

/// An account with repositories in its namespace cannot go: its name
/// would be free to take, repositories included.
pub async fn no_repositories_left(ctx: &Ctx, namespace: &str) -> Result<(), UamError> {
    let n = ctx.auth.meta.repos_in(namespace).await?.len();
    if n > 0 {
        return Err(UamError::Conflict(format!(
            "namespace {namespace} still has {n} repositories; delete them first"
        )));
    }
    Ok(())
}

async fn create(ctx: &Ctx, body: NewUser, role: SystemRole, actor: &str) -> UamResult {
    let name = check_account_name(&body.name).map_err(invalid)?;
    check_email(&body.email)?;
    check_password(&body.password)?;
    let now = chrono::Utc::now().timestamp();
    let user = User {
        name: name.clone(),
        email: body.email,
        password_hash: password::hash(&body.password).await,
        realname: body.realname,
        comment: body.comment,
        role,
        source: UserSource::Db,
        created_at: now,
        updated_at: now,
    };
    ctx.auth.meta.create_user(&user).await??;
    ctx.changed(actor, "user.create", None, &name).await;
    ok(user_json(&user))
}

/// `POST /uam/user/signup` — anyone may create an ordinary account.
pub async fn signup(ctx: Ctx, req: Request) -> UamResult {
    if ctx.auth.uses_directory() {
        return Err(UamError::Forbidden(
            "accounts come from the directory: log in with your directory password".into(),
        ));
    }
    let body: NewUser = json_body(req).await?;
    if body.role.is_some() {
        return Err(invalid("role cannot be chosen at sign-up"));
    }
    check_account_name(&body.name).map_err(invalid)?;
    check_password(&body.password)?;
    unclaimed_repositories(&ctx, &body.name).await?;
    // Only requests that will cost a key derivation count.
    ctx.auth
        .signup_allowed(ctx.addr)
        .map_err(UamError::Throttled)?;
    let name = body.name.clone();
    create(&ctx, body, SystemRole::Member, &name).await
}

/// `POST /uam/user/add` — an administrator creates an account of any role.
pub async fn add(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    if !caller.admin {
        return Err(UamError::Forbidden(
            "only system administrators may add users".into(),
        ));
    }
    let body: NewUser = json_body(req).await?;
    let role = match body.role {
        None => SystemRole::Member,
        Some(r) => SystemRole::try_from(r).map_err(invalid)?,
    };
    create(&ctx, body, role, &caller.name).await
}

/// `GET /uam/user/signin` — checks credentials, returns the account.
pub async fn signin(ctx: Ctx) -> UamResult {
    let caller = ctx.caller().await?;
    let user = ctx
        .auth
        .meta
        .user(&caller.name)
        .await?
        .ok_or(UamError::Unauthorized)?;
    ctx.state
        .audit
        .record(&caller.name, "login", None, None, ctx.addr)
        .await;
    ok(user_json(&user))
}

/// `GET /uam/user/list` — administrators only.
pub async fn list(ctx: Ctx) -> UamResult {
    let caller = ctx.caller().await?;
    if !caller.admin {
        return Err(UamError::Forbidden(
            "only system administrators may list users".into(),
        ));
    }
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ctx.auth.meta.users(after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        all.extend(page.iter().map(user_json));
        if page.len() < 1000 || all.len() >= 100_000 {
            break;
        }
    }
    ok(Value::Array(all))
}

/// `GET /uam/user/{user}` — the account itself or an administrator.
pub async fn show(ctx: Ctx, Path(user): Path<String>) -> UamResult {
    let caller = ctx.caller().await?;
    if !caller.admin && caller.name != user {
        return Err(UamError::Forbidden(
            "you may only see your own account".into(),
        ));
    }
    let u = ctx
        .auth
        .meta
        .user(&user)
        .await?
        .ok_or_else(|| UamError::NotFound(format!("user {user} does not exist")))?;
    let mut orgs = Vec::new();
    for (org, role) in ctx.auth.meta.user_orgs(&user).await? {
        let teams: Vec<Value> = ctx
            .auth
            .meta
            .user_teams(&org, &user)
            .await?
            .into_iter()
            .map(|(team, role)| json!({"teamname": team, "role": role as u8}))
            .collect();
        orgs.push(json!({"orgname": org, "role": role as u8, "teams": teams}));
    }
    let mut v = user_json(&u);
    v["organizations"] = Value::Array(orgs);
    ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    name: String,
    email: Option<String>,
    realname: Option<String>,
    comment: Option<String>,
    password: Option<String>,
    role: Option<u8>,
}

/// `PUT /uam/user/update` — the account itself or an administrator; only
/// administrators change roles, and never their own.
pub async fn update(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: Update = json_body(req).await?;
    if !caller.admin && caller.name != body.name {
        return Err(UamError::Forbidden(
            "you may only update your own account".into(),
        ));
    }
    let role = match body.role {
        None => None,
        Some(_) if !caller.admin => {
            return Err(UamError::Forbidden(
                "only system administrators change roles".into(),
            ));
        }
        Some(_) if caller.name == body.name => {
            return Err(UamError::Forbidden(
                "administrators cannot change their own role".into(),
            ));
        }
        Some(r) => Some(SystemRole::try_from(r).map_err(invalid)?),
    };
    check_email(&body.email)?;
    let password_hash = match &body.password {
        Some(p) => {
            check_password(p)?;
            Some(password::hash(p).await)
        }
        None => None,
    };
    let upd = UserUpdate {
        email: body.email,
        realname: body.realname,
        comment: body.comment,
        password_hash,
        role,
    };
    let now = chrono::Utc::now().timestamp();
    ctx.auth.meta.update_user(&body.name, &upd, now).await??;
    ctx.changed(&caller.name, "user.update", None, &body.name)
        .await;
    let u = ctx
        .auth
        .meta
        .user(&body.name)
        .await?
        .ok_or(UamError::Unauthorized)?;
    ok(user_json(&u))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    oldpassword: String,
    password: String,
}

/// `PUT /uam/user/password` — change one's own password, proving the old.
pub async fn password(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: PasswordChange = json_body(req).await?;
    let u = ctx
        .auth
        .meta
        .user(&caller.name)
        .await?
        .ok_or(UamError::Unauthorized)?;
    if u.source != UserSource::Db {
        return Err(invalid(
            "directory accounts change their password in the directory",
        ));
    }
    if !password::verify(&body.oldpassword, &u.password_hash).await {
        return Err(UamError::Forbidden("the old password is wrong".into()));
    }
    check_password(&body.password)?;
    let upd = UserUpdate {
        password_hash: Some(password::hash(&body.password).await),
        ..Default::default()
    };
    ctx.auth
        .meta
        .update_user(&caller.name, &upd, chrono::Utc::now().timestamp())
        .await??;
    ctx.changed(&caller.name, "user.password", None, &caller.name)
        .await;
    ok(json!({"name": caller.name}))
}

/// `DELETE /uam/user/{user}` — administrators; never oneself, never the
/// last administrator.
pub async fn remove(ctx: Ctx, Path(user): Path<String>) -> UamResult {
    let caller = ctx.caller().await?;
    if !caller.admin {
        return Err(UamError::Forbidden(
            "only system administrators may delete users".into(),
        ));
    }
    if caller.name == user {
        return Err(UamError::Forbidden(
            "administrators cannot delete themselves".into(),
        ));
    }
    no_repositories_left(&ctx, &user).await?;
    ctx.auth.meta.delete_user(&user).await??;
    ctx.changed(&caller.name, "user.delete", None, &user).await;
    ok(json!({"name": user}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    /// `repository:<name or prefix*>:<actions>`; none means all of the
    /// owner's repositories with pull only.
    scopes: Option<Vec<String>>,
    /// Lifetime in seconds; none means until deleted.
    expires_in: Option<u64>,
}

fn token_json(t: &ApiToken) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "scopes": t.scopes,
        "created": t.created_at,
        "expires": t.expires_at,
    })
}

/// `POST /uam/user/token` — an API token for robots and CI, used as the
/// password of its owner and limited to its scopes. The secret is shown
/// once.
pub async fn create_token(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: NewToken = json_body(req).await?;
    if body.name.is_empty() || body.name.len() > 100 {
        return Err(invalid("token name must have 1 to 100 characters"));
    }
    let scopes = body
        .scopes
        .unwrap_or_else(|| vec!["repository:*:pull".to_string()]);
    for s in &scopes {
        ScopeGrant::parse(s).ok_or_else(|| {
            invalid(format!(
                "scope {s:?} is not repository:<name or prefix*>:<pull,push,delete>"
            ))
        })?;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let now = chrono::Utc::now().timestamp();
    let token = ApiToken {
        id: id.clone(),
        user: caller.name.clone(),
        name: body.name,
        secret_hash: hex::encode(Sha256::digest(secret.as_bytes())),
        scopes,
        created_at: now,
        expires_at: body
            .expires_in
            .map(|s| now + s.min(10 * 365 * 86_400) as i64),
    };
    ctx.auth.meta.create_token(&token).await??;
    ctx.changed(&caller.name, "token.create", None, &id).await;
    let mut v = token_json(&token);
    v["token"] = json!(format!("{API_TOKEN_PREFIX}{id}_{secret}"));
    ok(v)
}

/// `GET /uam/user/token` — one's tokens (never their secrets).
pub async fn list_tokens(ctx: Ctx) -> UamResult {
    let caller = ctx.caller().await?;
    let tokens = ctx.auth.meta.tokens(&caller.name).await?;
    ok(Value::Array(tokens.iter().map(token_json).collect()))
}

/// `DELETE /uam/user/token/{id}`
pub async fn delete_token(ctx: Ctx, Path(id): Path<String>) -> UamResult {
    let caller = ctx.caller().await?;
    ctx.auth.meta.delete_token(&caller.name, &id).await??;
    ctx.changed(&caller.name, "token.delete", None, &id).await;
    ok(json!({"id": id}))
}
