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
    /// Filters listings (the catalog) by what this caller may pull; `None`
    /// on a standalone hub.
    pub principal: Option<Principal>,
}

impl Who {
    fn open() -> Who {
        Who {
            name: "anonymous".into(),
            principal: None,
        }
    }
}

/// The actions a request needs on its repository.
fn needs(route: &Route, method: &Method) -> Option<(RepoName, Actions)> {
    let (repo, actions) = match route {
        Route::Catalog => return None,
        Route::Tags(n) | Route::Referrers(n, _) | Route::Pieces(n, _) => (n, Actions::PULL),
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

/// What the credential allows on `repo`, and whether a push creates it.
async fn allowed(
    auth: &Auth,
    cred: &Credential,
    repo: &RepoName,
) -> Result<(Actions, bool), Response> {
    let backend = |e: crate::meta::MetaError| auth::backend_error(&e.to_string());
    let d = match cred {
        Credential::Token(claims) => auth.token_allows(claims, repo).await.map_err(backend)?,
        Credential::User(p) => auth.decide(p, repo).await.map_err(backend)?,
        Credential::Anonymous => {
            let mut d = auth
                .decide(&Principal::Anonymous, repo)
                .await
                .map_err(backend)?;
            d.creates = false;
            d
        }
    };
    Ok((d.actions, d.creates))
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
    // A challenge names every scope the request could use, the source of
    // a mount included, so clients fetch one token that does it all.
    let mount_from = match (route, query.get("mount"), query.get("from")) {
        (Some(Route::Uploads(_)), Some(_), Some(f)) => f.parse::<RepoName>().ok(),
        _ => None,
    };
    let mut scopes: Vec<String> = need.iter().map(|(r, a)| scope(r, *a)).collect();
    if let Some(from) = &mount_from {
        scopes.push(scope(from, Actions::PULL));
    }
    if matches!(route, Some(Route::Catalog)) {
        scopes.push("registry:catalog:*".to_string());
    }
    let challenge_scope = (!scopes.is_empty()).then(|| scopes.join(" "));
    let cred = match auth::credential(auth, headers, addr).await {
        Ok(c) => c,
        Err(CredentialError::Invalid { bearer }) => {
            return Err(auth::challenge(
                auth,
                headers,
                challenge_scope.as_deref(),
                bearer.then_some("invalid_token"),
            ));
        }
        Err(CredentialError::Throttled(d)) => return Err(auth::throttled(d)),
        Err(CredentialError::Backend(e)) => return Err(auth::backend_error(&e)),
    };
    let backend = |e: crate::meta::MetaError| auth::backend_error(&e.to_string());
    let who = match &cred {
        Credential::Anonymous => Who {
            name: "anonymous".to_string(),
            principal: Some(Principal::Anonymous),
        },
        Credential::User(p) => Who {
            name: p.name().to_string(),
            principal: Some(p.clone()),
        },
        Credential::Token(c) => Who {
            name: if c.sub.is_empty() {
                "anonymous".into()
            } else {
                c.sub.clone()
            },
            principal: Some(auth.principal_of_claims(c).await.map_err(backend)?),
        },
    };
    let Some((repo, wanted)) = need else {
        // The version check (`/v2/`) and the catalog need a caller who
        // proved something: an anonymous one is challenged, so `docker
        // login` can check credentials. A token lists the catalog only if
        // it was granted `registry:catalog:*`.
        let catalog_ok = match (&cred, route) {
            (Credential::Anonymous, _) => false,
            (Credential::Token(c), Some(Route::Catalog)) => c.access.iter().any(|a| {
                a.kind == "registry" && a.name == "catalog" && a.actions.iter().any(|x| x == "*")
            }),
            _ => true,
        };
        if !catalog_ok {
            let error = matches!(cred, Credential::Token(_)).then_some("insufficient_scope");
            return Err(auth::challenge(
                auth,
                headers,
                challenge_scope.as_deref(),
                error,
            ));
        }
        return Ok(who);
    };
    let (actions, creates) = allowed(auth, &cred, &repo).await?;
    if !actions.contains(wanted) {
        return Err(refuse(
            auth,
            &cred,
            &who,
            &repo,
            wanted,
            headers,
            challenge_scope.as_deref(),
        )
        .await);
    }
    if wanted.has(crate::auth::model::Action::Push) && creates {
        create_repo(state, &repo).await?;
    }
    if let (Some(_), Some(Route::Uploads(_))) = (query.get("mount"), route) {
        let from_ok = match &mount_from {
            Some(from) => allowed(auth, &cred, from)
                .await?
                .0
                .has(crate::auth::model::Action::Pull),
            // Looking a digest up across the hub is for administrators.
            None => who.principal.as_ref().is_some_and(Principal::is_admin),
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
    who: &Who,
    repo: &RepoName,
    wanted: Actions,
    headers: &HeaderMap,
    challenge_scope: Option<&str>,
) -> Response {
    let denied = || auth::denied("repository", repo.as_str(), &wanted.to_string());
    match cred {
        Credential::Anonymous => auth::challenge(auth, headers, challenge_scope, None),
        Credential::User(_) => denied(),
        Credential::Token(_) => {
            let Some(p) = &who.principal else {
                return denied();
            };
            if p.is_anonymous() {
                return auth::challenge(auth, headers, challenge_scope, Some("insufficient_scope"));
            }
            let could = auth
                .decide(p, repo)
                .await
                .map(|d| d.actions.contains(wanted))
                .unwrap_or(false);
            if could {
                auth::challenge(auth, headers, challenge_scope, Some("insufficient_scope"))
            } else {
                denied()
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
    let (Some(auth), Some(p)) = (&state.auth, &who.principal) else {
        return true;
    };
    auth.decide(p, repo)
        .await
        .is_ok_and(|d| d.actions.has(crate::auth::model::Action::Pull))
}
