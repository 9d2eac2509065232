//! Who makes a v1 request and what they may do, asked of the one resolver
//! (`Auth::decide`) as every front-end does.
//!
//! Credentials are those of the v1 protocol: HTTP Basic, or the token a
//! `X-Docker-Token: true` request got (`Authorization: Token
//! signature=<JWT>,repository="ns/repo",access=read|write`). The signature
//! is a JWT of the hub's token service, so it is verified and expires; its
//! repository must be one the JWT grants. A token speaks for its subject
//! and names the repository of the session (the one whose push an image
//! upload belongs to).
//!
//! Images are global in v1: reading one needs the right to pull some
//! repository referencing it; pushing one needs the right to push the
//! repository whose session announced it (or, once its JSON is stored,
//! the repository it is being pushed to).

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{hv, v1_error};
use crate::api::auth::{self, Credential, CredentialError};
use crate::api::state::AppState;
use crate::auth::model::{Action, Actions, Principal, RequestedScope};
use crate::auth::token::Claims;
use crate::meta::accounts::Repository;
use crate::meta::legacy::V1Image;
use crate::registry::legacy::ImageId;
use crate::registry::name::RepoName;

pub const X_DOCKER_TOKEN: HeaderName = HeaderName::from_static("x-docker-token");
pub const X_DOCKER_ENDPOINTS: HeaderName = HeaderName::from_static("x-docker-endpoints");

/// The caller of a request.
pub struct Caller {
    /// For the audit log.
    pub name: String,
    /// `None` on a hub without accounts: everything is allowed.
    pub principal: Option<Principal>,
    /// The verified claims of a v1 token (none on a hub without accounts).
    pub claims: Option<Claims>,
    /// The repository of the token's session.
    pub token_repo: Option<RepoName>,
}

/// The parameters of `Token signature=...,repository="...",access=...`.
fn token_params(value: &str) -> Option<(String, String)> {
    let rest = value.trim();
    let (scheme, rest) = rest.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("token") {
        return None;
    }
    let (mut signature, mut repository) = (None, None);
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_string();
        match k.trim() {
            "signature" => signature = Some(v),
            "repository" => repository = Some(v),
            _ => {}
        }
    }
    Some((signature?, repository?))
}

fn unauthorized(msg: &str) -> Response {
    let mut r = v1_error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"dockyard\""),
    );
    r
}

/// Parses and checks the request's credentials.
pub async fn caller(
    state: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Caller, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(token_params);
    let Some(auth) = &state.auth else {
        // Nothing to check; the token's repository still names the session.
        return Ok(Caller {
            name: "anonymous".into(),
            principal: None,
            claims: None,
            token_repo: token.and_then(|(_, r)| r.parse().ok()),
        });
    };
    let backend = |e: crate::meta::MetaError| auth::backend_error(&e.to_string());
    if let Some((signature, repository)) = token {
        let Some(claims) = auth.bearer(&signature) else {
            return Err(unauthorized("Invalid or expired token"));
        };
        let repo: RepoName = repository
            .parse()
            .map_err(|_| unauthorized("Token names an invalid repository"))?;
        if !claims
            .access
            .iter()
            .any(|a| a.kind == "repository" && a.name == repo.as_str())
        {
            return Err(unauthorized("Token is not for this repository"));
        }
        let principal = auth.principal_of_claims(&claims).await.map_err(backend)?;
        return Ok(Caller {
            name: principal.name().to_string(),
            principal: Some(principal),
            claims: Some(claims),
            token_repo: Some(repo),
        });
    }
    let principal = match auth::credential(auth, headers, addr).await {
        Ok(Credential::Anonymous) => Principal::Anonymous,
        Ok(Credential::User(p)) => p,
        Ok(Credential::Token(c)) => auth.principal_of_claims(&c).await.map_err(backend)?,
        Err(CredentialError::Invalid { .. }) => {
            return Err(unauthorized("Wrong login/password"));
        }
        Err(CredentialError::Throttled(d)) => return Err(throttled(d)),
        Err(CredentialError::Backend(e)) => return Err(auth::backend_error(&e)),
    };
    Ok(Caller {
        name: principal.name().to_string(),
        principal: Some(principal),
        claims: None,
        token_repo: None,
    })
}

pub fn throttled(wait: std::time::Duration) -> Response {
    let mut r = v1_error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed logins; try again later",
    );
    let secs = wait.as_millis().div_ceil(1000).max(1);
    r.headers_mut()
        .insert(header::RETRY_AFTER, hv(secs.to_string()));
    r
}

/// What the caller may do to `repo`, and whether a push would create it.
async fn decision(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
) -> Result<(Actions, bool), Response> {
    let Some(auth) = &state.auth else {
        return Ok((Actions::ALL, false));
    };
    let backend = |e: crate::meta::MetaError| auth::backend_error(&e.to_string());
    let principal = caller.principal.clone().unwrap_or(Principal::Anonymous);
    let d = match (&caller.claims, &caller.token_repo) {
        // A token is for its repository only.
        (Some(claims), Some(t)) if t == repo => {
            auth.token_allows(claims, repo).await.map_err(backend)?
        }
        (Some(_), Some(_)) => return Ok((Actions::NONE, false)),
        _ => {
            let mut d = auth.decide(&principal, repo).await.map_err(backend)?;
            d.creates &= !principal.is_anonymous();
            d
        }
    };
    Ok((d.actions, d.creates))
}

/// Refuses a request the caller may not make: 401 for the anonymous (so
/// they log in), 403 for an account.
fn refuse(caller: &Caller) -> Response {
    match &caller.principal {
        Some(p) if !p.is_anonymous() => v1_error(StatusCode::FORBIDDEN, "Access denied"),
        _ => unauthorized("Requires authorization"),
    }
}

/// Checks that the caller may do `wanted` to `repo`; a push into a
/// namespace the caller owns creates the repository (private).
pub async fn allow(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    wanted: Actions,
) -> Result<(), Response> {
    let (actions, creates) = decision(state, caller, repo).await?;
    if !actions.contains(wanted) {
        return Err(refuse(caller));
    }
    if wanted.has(Action::Push) && creates {
        create_repo(state, repo).await?;
    }
    Ok(())
}

async fn may(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    a: Action,
) -> Result<bool, Response> {
    Ok(decision(state, caller, repo).await?.0.has(a))
}

/// Whether the caller's account (whatever its token's repository) may do
/// `a` to `repo`: images are global, so reading one is a question of who
/// the caller is.
async fn account_may(
    state: &AppState,
    caller: &Caller,
    repo: &RepoName,
    a: Action,
) -> Result<bool, Response> {
    let Some(auth) = &state.auth else {
        return Ok(true);
    };
    let principal = caller.principal.clone().unwrap_or(Principal::Anonymous);
    auth.decide(&principal, repo)
        .await
        .map(|d| d.actions.has(a))
        .map_err(|e| auth::backend_error(&e.to_string()))
}

async fn create_repo(state: &AppState, repo: &RepoName) -> Result<(), Response> {
    let Some(auth) = &state.auth else {
        return Ok(());
    };
    let record = Repository {
        name: repo.clone(),
        namespace: repo.namespace().to_string(),
        is_public: false,
        comment: None,
        created_at: chrono::Utc::now().timestamp(),
    };
    match auth.meta.create_repo(&record).await {
        // A racing push may have created it: fine.
        Ok(_) => {
            auth.resolver.invalidate();
            Ok(())
        }
        Err(e) => Err(auth::backend_error(&e.to_string())),
    }
}

fn internal(e: crate::registry::legacy::LegacyError) -> Response {
    super::error_response(e)
}

/// Whether the caller may read an image: it may pull a repository that
/// references it.
pub async fn may_read_image(
    state: &AppState,
    caller: &Caller,
    id: &ImageId,
) -> Result<bool, Response> {
    if state.auth.is_none() {
        return Ok(true);
    }
    let reg = &state.registry;
    if let Some(t) = &caller.token_repo
        && reg.v1_references(t, id).await.map_err(internal)?
        && may(state, caller, t, Action::Pull).await?
    {
        return Ok(true);
    }
    for repo in reg.v1_image_repos(id).await.map_err(internal)? {
        if account_may(state, caller, &repo, Action::Pull).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The repository a push of image `id` belongs to, if the caller may make
/// it: the repository it is being pushed to, or else one whose push
/// announced it (the token's, if the caller has one) and that the caller
/// may push.
pub async fn push_repo(
    state: &AppState,
    caller: &Caller,
    id: &ImageId,
    existing: Option<&V1Image>,
) -> Result<Option<RepoName>, Response> {
    if state.auth.is_none() {
        return Ok(caller
            .token_repo
            .clone()
            .or_else(|| existing.and_then(|e| e.push_repo.clone())));
    }
    if let Some(e) = existing
        && !e.complete
        && let Some(p) = &e.push_repo
    {
        return if may(state, caller, p, Action::Push).await? {
            Ok(Some(p.clone()))
        } else {
            Err(refuse(caller))
        };
    }
    let declaring = state
        .registry
        .v1_declaring_repos(id)
        .await
        .map_err(internal)?;
    let candidates: Vec<RepoName> = match &caller.token_repo {
        Some(t) => declaring.into_iter().filter(|r| r == t).collect(),
        None => declaring,
    };
    for repo in candidates {
        if may(state, caller, &repo, Action::Push).await? {
            return Ok(Some(repo));
        }
    }
    match &caller.principal {
        Some(p) if !p.is_anonymous() => Err(v1_error(
            StatusCode::FORBIDDEN,
            "This image does not belong to a repository you may push",
        )),
        _ => Err(unauthorized("Requires authorization")),
    }
}

/// `X-Docker-Endpoints` (always) and, if the request asked with
/// `X-Docker-Token: true`, a token for the repository's session.
pub async fn session_headers(
    state: &AppState,
    caller: &Caller,
    request: &HeaderMap,
    repo: &RepoName,
    write: bool,
) -> Result<Vec<(HeaderName, HeaderValue)>, Response> {
    let endpoint = state
        .domains
        .first()
        .cloned()
        .or_else(|| {
            request
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    let mut out = vec![(
        X_DOCKER_ENDPOINTS,
        HeaderValue::from_str(&endpoint).unwrap_or(HeaderValue::from_static("localhost")),
    )];
    let asked = request
        .get(&X_DOCKER_TOKEN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !asked {
        return Ok(out);
    }
    let (signature, access) = match &state.auth {
        None => (
            uuid::Uuid::new_v4().simple().to_string(),
            if write { "write" } else { "read" },
        ),
        Some(auth) => {
            let principal = caller.principal.clone().unwrap_or(Principal::Anonymous);
            let actions = if write {
                vec!["pull", "push"]
            } else {
                vec!["pull"]
            };
            let scope = RequestedScope {
                kind: "repository".into(),
                name: repo.to_string(),
                actions: actions.into_iter().map(String::from).collect(),
            };
            let (jwt, claims) = auth
                .issue(&principal, &[scope])
                .await
                .map_err(|e| auth::backend_error(&e.to_string()))?;
            let granted: Vec<&String> = claims.access.iter().flat_map(|a| &a.actions).collect();
            let access = if granted.iter().any(|a| *a == "push") {
                "write"
            } else {
                "read"
            };
            (jwt, access)
        }
    };
    let token = format!("signature={signature},repository=\"{repo}\",access={access}");
    out.push((header::WWW_AUTHENTICATE, hv(format!("Token {token}"))));
    out.push((X_DOCKER_TOKEN, hv(token)));
    Ok(out)
}
