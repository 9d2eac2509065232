//! Who may make an ACI request: the same credentials (Basic, or a bearer
//! token of this hub) and the same resolver as v2. Images the caller may
//! not pull answer exactly as images that do not exist.

use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::api::auth::{self, Credential, CredentialError};
use crate::api::state::AppState;
use crate::auth::model::{Action, Actions, Principal};
use crate::meta::accounts::Repository;
use crate::registry::name::RepoName;

/// A permitted caller, for the audit log.
pub struct Who {
    pub name: String,
}

/// Why a request is refused.
pub enum Refused {
    /// No (valid) credentials: ask for some.
    Challenge,
    /// The caller may not, or the thing does not exist: the same to them.
    NotFound,
    Forbidden,
    Response(Response),
}

impl Refused {
    pub fn into_response(self, what: &str) -> Response {
        match self {
            Refused::Challenge => {
                let mut r = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"dockyard\""),
                );
                r
            }
            Refused::NotFound => {
                (StatusCode::NOT_FOUND, format!("{what} not found\n")).into_response()
            }
            Refused::Forbidden => (
                StatusCode::FORBIDDEN,
                format!("access to {what} is denied\n"),
            )
                .into_response(),
            Refused::Response(r) => r,
        }
    }
}

/// Checks that the caller may do `wanted` on `repo`. A push into a
/// namespace the caller owns creates the repository, as on v2.
pub async fn check(
    state: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    repo: &RepoName,
    wanted: Actions,
) -> Result<Who, Refused> {
    let Some(auth) = &state.auth else {
        return Ok(Who {
            name: "anonymous".into(),
        });
    };
    let cred = match auth::credential(auth, headers, addr).await {
        Ok(c) => c,
        Err(CredentialError::Invalid { .. }) => return Err(Refused::Challenge),
        Err(CredentialError::Throttled(d)) => return Err(Refused::Response(auth::throttled(d))),
        Err(CredentialError::Backend(e)) => {
            return Err(Refused::Response(auth::backend_error(&e)));
        }
    };
    let backend =
        |e: crate::meta::MetaError| Refused::Response(auth::backend_error(&e.to_string()));
    let (name, decision) = match &cred {
        Credential::Anonymous => {
            let mut d = auth
                .decide(&Principal::Anonymous, repo)
                .await
                .map_err(backend)?;
            d.creates = false;
            ("anonymous".to_string(), d)
        }
        Credential::User(p) => (
            p.name().to_string(),
            auth.decide(p, repo).await.map_err(backend)?,
        ),
        Credential::Token(c) => (
            if c.sub.is_empty() {
                "anonymous".to_string()
            } else {
                c.sub.clone()
            },
            auth.token_allows(c, repo).await.map_err(backend)?,
        ),
    };
    if !decision.actions.contains(wanted) {
        let anonymous = matches!(cred, Credential::Anonymous);
        return Err(if anonymous {
            Refused::Challenge
        } else if decision.actions.has(Action::Pull) {
            Refused::Forbidden
        } else {
            Refused::NotFound
        });
    }
    if wanted.has(Action::Push) && decision.creates {
        let record = Repository {
            name: repo.clone(),
            namespace: repo.namespace().to_string(),
            is_public: false,
            comment: None,
            created_at: chrono::Utc::now().timestamp(),
        };
        match auth.meta.create_repo(&record).await {
            // Someone else's push may have created it meanwhile: fine.
            Ok(_) => auth.resolver.invalidate(),
            Err(e) => return Err(backend(e)),
        }
    }
    Ok(Who { name })
}

/// Whether the caller may pull `repo`, without challenging anyone (for
/// discovery pages, which answer as if a hidden repository did not exist).
pub async fn may_pull(
    state: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    repo: &RepoName,
) -> bool {
    check(state, headers, addr, repo, Actions::PULL)
        .await
        .is_ok()
}

/// The caller of a key administration request, if they own `namespace`
/// (the user themself, an organisation administrator, a system
/// administrator; anyone on a standalone hub). Passwords only, as `/uam`.
pub async fn namespace_owner(
    state: &AppState,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
    namespace: &str,
) -> Result<String, Refused> {
    use crate::auth::service::LoginError;
    use crate::meta::accounts::{NamespaceKind, OrgRole};
    let Some(auth) = &state.auth else {
        return Ok("anonymous".into());
    };
    let Some((user, secret)) = auth::basic(headers) else {
        return Err(Refused::Challenge);
    };
    let (name, admin) = match auth.login(&user, &secret, addr).await {
        Ok(Principal::User {
            name,
            admin,
            limit: None,
        }) => (name, admin),
        Ok(_) => return Err(Refused::Forbidden),
        Err(LoginError::Invalid) => return Err(Refused::Challenge),
        Err(LoginError::Throttled(d)) => return Err(Refused::Response(auth::throttled(d))),
        Err(LoginError::Backend(e)) => return Err(Refused::Response(auth::backend_error(&e))),
    };
    if admin {
        return Ok(name);
    }
    let backend =
        |e: crate::meta::MetaError| Refused::Response(auth::backend_error(&e.to_string()));
    let owner = match auth.meta.namespace_kind(namespace).await.map_err(backend)? {
        Some(NamespaceKind::User) => namespace == name,
        Some(NamespaceKind::Organization) => {
            auth.meta
                .org_role(namespace, &name)
                .await
                .map_err(backend)?
                == Some(OrgRole::Admin)
        }
        None => false,
    };
    if owner {
        Ok(name)
    } else {
        Err(Refused::Forbidden)
    }
}
