//! Who may make a v2 request: the repository actions each route needs,
//! checked against the bearer token's grants or the resolver's decision.

use std::net::IpAddr;

use axum::http::{HeaderMap, Method};
use axum::response::Response;

use super::Query;
use super::route::Route;
use crate::api::auth::{self, Credential, CredentialError};
use crate::api::state::AppState;
use crate::auth::model::{Actions, Principal};
use crate::auth::service::Auth;
use crate::meta::accounts::Repository;
use crate::registry::name::RepoName;

/// Who a permitted request is from, for the audit log.
pub struct Who {
    pub name: String,
    /// Filters listings (the catalog) by what this caller may pull.
    pub principal: Option<Principal>,
    pub claims_access: Option<Vec<crate::auth::token::Access>>,
}

impl Who {
    fn open() -> Who {
        Who {
            name: "anonymous".into(),
            principal: None,
            claims_access: None,
        }
    }
}

/// The actions a request needs on its repository.
fn needs(route: &Route, method: &Method) -> Option<(RepoName, Actions)> {
    let (repo, actions) = match route {
        Route::Catalog => return None,
        Route::Tags(n) | Route::Referrers(n, _) => (n, Actions::PULL),
        Route::Manifest(n, _) | Route::Blob(n, _) => match *method {
            Method::GET | Method::HEAD => (n, Actions::PULL),
            Method::DELETE => (n, Actions::DELETE),
            _ => (n, Actions::PULL_PUSH),
        },
        Route::Uploads(n) | Route::Upload(n, _) => (n, Actions::PULL_PUSH),
    };
    Some((repo.clone(), actions))
}

fn scope(repo: &RepoName, actions: Actions) -> String {
    format!("repository:{repo}:{actions}")
}

/// What the credential allows on `repo`.
async fn allowed(
    auth: &Auth,
    cred: &Credential,
    repo: &RepoName,
) -> Result<(Actions, bool), Response> {
    let backend = |e: crate::meta::MetaError| auth::backend_error(&e.to_string());
    match cred {
        Credential::Token(claims) => {
            let granted = claims
                .access
                .iter()
                .filter(|a| a.kind == "repository" && a.name == repo.as_str())
                .fold(Actions::NONE, |acc, a| {
                    acc.union(Actions::parse_list(&a.actions.join(",")))
                });
            // Whether a push creates the repository is the subject's case.
            let creates = if granted.has(crate::auth::model::Action::Push) {
                let who = auth
                    .principal_of_subject(&claims.sub)
                    .await
                    .map_err(backend)?;
                auth.decide(&who, repo).await.map_err(backend)?.creates
            } else {
                false
            };
            Ok((granted, creates))
        }
        Credential::User(p) => {
            let d = auth.decide(p, repo).await.map_err(backend)?;
            Ok((d.actions, d.creates))
        }
        Credential::Anonymous => {
            let d = auth
                .decide(&Principal::Anonymous, repo)
                .await
                .map_err(backend)?;
            Ok((d.actions, false))
        }
    }
}

/// Checks a request; on success returns who made it. A mount from a
/// repository the caller may not pull (or, for non-administrators, a
/// mount without `from`) is turned into an ordinary upload by removing
/// the mount parameters.
pub async fn authorize(
    state: &AppState,
    route: Option<&Route>,
    method: &Method,
    query: &mut Query,
    headers: &HeaderMap,
    addr: Option<IpAddr>,
) -> Result<Who, Response> {
    let Some(auth) = &state.auth else {
        return Ok(Who::open());
    };
    let need = route.and_then(|r| needs(r, method));
    let need_scope = need.as_ref().map(|(r, a)| scope(r, *a));
    let cred = match auth::credential(auth, headers, addr).await {
        Ok(c) => c,
        Err(CredentialError::Invalid { bearer }) => {
            return Err(auth::challenge(
                auth,
                headers,
                need_scope.as_deref(),
                bearer.then_some("invalid_token"),
            ));
        }
        Err(CredentialError::Throttled(d)) => return Err(auth::throttled(d)),
        Err(CredentialError::Backend(e)) => return Err(auth::backend_error(&e)),
    };
    let (name, principal, claims_access) = match &cred {
        Credential::Anonymous => ("anonymous".to_string(), Some(Principal::Anonymous), None),
        Credential::User(p) => (p.name().to_string(), Some(p.clone()), None),
        Credential::Token(c) => {
            let n = if c.sub.is_empty() {
                "anonymous"
            } else {
                &c.sub
            };
            (n.to_string(), None, Some(c.access.clone()))
        }
    };
    let who = Who {
        name,
        principal,
        claims_access,
    };
    // The version check (`/v2/`) and the catalog only need a caller: an
    // anonymous one is challenged so `docker login` can prove credentials.
    let Some((repo, wanted)) = need else {
        if matches!(cred, Credential::Anonymous) {
            return Err(auth::challenge(auth, headers, None, None));
        }
        return Ok(who);
    };
    let (actions, creates) = allowed(auth, &cred, &repo).await?;
    if !actions.contains(wanted) {
        return Err(refuse(auth, &cred, &repo, wanted, headers).await);
    }
    if wanted.has(crate::auth::model::Action::Push) && creates {
        create_repo(state, &repo).await?;
    }
    if let (Some(_), Some(Route::Uploads(_))) = (query.get("mount"), route) {
        let from_ok = match query.get("from").map(str::parse::<RepoName>) {
            Some(Ok(from)) => allowed(auth, &cred, &from)
                .await?
                .0
                .has(crate::auth::model::Action::Pull),
            // Looking a digest up across the hub is for administrators.
            None => matches!(&cred, Credential::User(p) if p.is_admin()),
            Some(Err(_)) => false,
        };
        if !from_ok {
            query.remove("mount");
            query.remove("from");
        }
    }
    Ok(who)
}

/// The answer to a request the caller may not make: a challenge if a
/// (better) token could help, `DENIED` if the account may not do it.
async fn refuse(
    auth: &Auth,
    cred: &Credential,
    repo: &RepoName,
    wanted: Actions,
    headers: &HeaderMap,
) -> Response {
    let s = scope(repo, wanted);
    match cred {
        Credential::Anonymous => auth::challenge(auth, headers, Some(&s), None),
        Credential::User(_) => auth::denied(),
        Credential::Token(claims) => {
            if claims.sub.is_empty() {
                return auth::challenge(auth, headers, Some(&s), Some("insufficient_scope"));
            }
            let could = match auth.principal_of_subject(&claims.sub).await {
                Ok(p) => auth
                    .decide(&p, repo)
                    .await
                    .map(|d| d.actions.contains(wanted))
                    .unwrap_or(false),
                Err(_) => false,
            };
            if could {
                auth::challenge(auth, headers, Some(&s), Some("insufficient_scope"))
            } else {
                auth::denied()
            }
        }
    }
}

/// A push into a namespace the pusher owns creates the repository, private.
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
        // Someone else's push may have created it meanwhile: fine.
        Ok(_) => {
            auth.resolver.invalidate();
            Ok(())
        }
        Err(e) => Err(auth::backend_error(&e.to_string())),
    }
}

/// Whether the caller may see a repository in the catalog.
pub async fn may_list(state: &AppState, who: &Who, repo: &RepoName) -> bool {
    let Some(auth) = &state.auth else { return true };
    if let Some(access) = &who.claims_access {
        // A catalog token says nothing of repositories: ask about the subject.
        let _ = access;
        let sub = if who.name == "anonymous" {
            ""
        } else {
            who.name.as_str()
        };
        return match auth.principal_of_subject(sub).await {
            Ok(p) => auth
                .decide(&p, repo)
                .await
                .is_ok_and(|d| d.actions.has(crate::auth::model::Action::Pull)),
            Err(_) => false,
        };
    }
    match &who.principal {
        Some(p) => auth
            .decide(p, repo)
            .await
            .is_ok_and(|d| d.actions.has(crate::auth::model::Action::Pull)),
        None => true,
    }
}
