//! Repository records (ownership, visibility) and effective permissions.

use axum::extract::{Path, Request};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, Ctx, UamError, UamResult, invalid, json_body, ok};
use crate::auth::model::{Action, Principal};
use crate::meta::accounts::{NamespaceKind, OrgRole, Repository};
use crate::registry::name::RepoName;

fn repo_json(r: &Repository, kind: Option<NamespaceKind>) -> Value {
    let short = r
        .name
        .as_str()
        .strip_prefix(&format!("{}/", r.namespace))
        .unwrap_or(r.name.as_str());
    json!({
        "name": r.name.as_str(),
        "namespace": r.namespace,
        "reponame": short,
        "ispublic": r.is_public,
        "comment": r.comment,
        "isorgrep": kind == Some(NamespaceKind::Organization),
        "created": r.created_at,
    })
}

fn full_name(namespace: &str, repo: &str) -> Result<RepoName, UamError> {
    format!("{namespace}/{repo}")
        .parse()
        .map_err(|e| invalid(format!("repository {namespace}/{repo}: {e}")))
}

/// Owners of a namespace: the user themself, the organisation's
/// administrators, and system administrators.
async fn require_owner(
    ctx: &Ctx,
    caller: &Caller,
    namespace: &str,
) -> Result<NamespaceKind, UamError> {
    let kind = ctx
        .auth
        .meta
        .namespace_kind(namespace)
        .await?
        .ok_or_else(|| UamError::NotFound(format!("namespace {namespace} does not exist")))?;
    let owner = caller.admin
        || match kind {
            NamespaceKind::User => namespace == caller.name,
            NamespaceKind::Organization => {
                ctx.auth.meta.org_role(namespace, &caller.name).await? == Some(OrgRole::Admin)
            }
        };
    if owner {
        Ok(kind)
    } else {
        Err(UamError::Forbidden(format!(
            "only the owners of namespace {namespace} may do this"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRepo {
    name: String,
    ispublic: bool,
    comment: Option<String>,
    orgname: Option<String>,
    username: Option<String>,
}

/// The namespace of a create/update body: exactly one of orgname/username.
fn namespace_of(orgname: &Option<String>, username: &Option<String>) -> Result<String, UamError> {
    match (orgname, username) {
        (Some(o), None) if !o.is_empty() => Ok(o.clone()),
        (None, Some(u)) if !u.is_empty() => Ok(u.clone()),
        _ => Err(invalid("give exactly one of orgname and username")),
    }
}

/// `POST /uam/repository`
pub async fn create(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: NewRepo = json_body(req).await?;
    let namespace = namespace_of(&body.orgname, &body.username)?;
    let kind = require_owner(&ctx, &caller, &namespace).await?;
    let name = full_name(&namespace, &body.name)?;
    let repo = Repository {
        name: name.clone(),
        namespace,
        is_public: body.ispublic,
        comment: body.comment,
        created_at: chrono::Utc::now().timestamp(),
    };
    ctx.auth.meta.create_repo(&repo).await??;
    ctx.changed(
        &caller.name,
        "repository.create",
        Some(name.as_str()),
        name.as_str(),
    )
    .await;
    ok(repo_json(&repo, Some(kind)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    name: String,
    ispublic: Option<bool>,
    comment: Option<String>,
    orgname: Option<String>,
    username: Option<String>,
}

/// `PUT /uam/repository/update`
pub async fn update(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: Update = json_body(req).await?;
    let namespace = namespace_of(&body.orgname, &body.username)?;
    let kind = require_owner(&ctx, &caller, &namespace).await?;
    let name = full_name(&namespace, &body.name)?;
    ctx.auth
        .meta
        .update_repo(&name, body.ispublic, body.comment.as_deref())
        .await??;
    ctx.changed(
        &caller.name,
        "repository.update",
        Some(name.as_str()),
        name.as_str(),
    )
    .await;
    let r = ctx
        .auth
        .meta
        .repo(&name)
        .await?
        .ok_or_else(|| UamError::NotFound(name.to_string()))?;
    ok(repo_json(&r, Some(kind)))
}

/// `DELETE /uam/{namespace}/{repo}` (and `/uam/repository/{namespace}/{repo}`):
/// the repository and all its content.
pub async fn remove(ctx: Ctx, Path((namespace, repo)): Path<(String, String)>) -> UamResult {
    let caller = ctx.caller().await?;
    let name = full_name(&namespace, &repo)?;
    // `library` repositories belong to the system administrators.
    if namespace == crate::registry::name::LIBRARY {
        if !caller.admin {
            return Err(UamError::Forbidden(
                "only system administrators own library".into(),
            ));
        }
    } else {
        require_owner(&ctx, &caller, &namespace).await?;
    }
    ctx.auth.meta.delete_repo(&name).await??;
    ctx.changed(
        &caller.name,
        "repository.delete",
        Some(name.as_str()),
        name.as_str(),
    )
    .await;
    ok(json!({"name": name.as_str()}))
}

fn principal(caller: &Caller) -> Principal {
    Principal::User {
        name: caller.name.clone(),
        admin: caller.admin,
        limit: None,
    }
}

/// `GET /uam/repository/{namespace}/list` — the repositories of a
/// namespace the caller may pull.
pub async fn list(ctx: Ctx, Path(namespace): Path<String>) -> UamResult {
    let caller = ctx.caller().await?;
    let kind = ctx.auth.meta.namespace_kind(&namespace).await?;
    let who = principal(&caller);
    let mut out = Vec::new();
    for r in ctx.auth.meta.repos_in(&namespace).await? {
        if ctx
            .auth
            .decide(&who, &r.name)
            .await?
            .actions
            .has(Action::Pull)
        {
            out.push(repo_json(&r, kind));
        }
    }
    ok(Value::Array(out))
}

/// `GET /uam/repository/{namespace}/{repo}` — if the caller may pull it.
pub async fn show(ctx: Ctx, Path((namespace, repo)): Path<(String, String)>) -> UamResult {
    let caller = ctx.caller().await?;
    let name = full_name(&namespace, &repo)?;
    let not_found = || UamError::NotFound(format!("repository {name} does not exist"));
    let r = ctx.auth.meta.repo(&name).await?.ok_or_else(not_found)?;
    if !ctx
        .auth
        .decide(&principal(&caller), &name)
        .await?
        .actions
        .has(Action::Pull)
    {
        return Err(not_found());
    }
    let kind = ctx.auth.meta.namespace_kind(&namespace).await?;
    ok(repo_json(&r, kind))
}

/// `GET /uam/permission/{user}/{repo}` — what a user may do to a
/// repository (the user themself, or a system administrator asking).
pub async fn permission(ctx: Ctx, Path((user, repo)): Path<(String, String)>) -> UamResult {
    let caller = ctx.caller().await?;
    if !caller.admin && caller.name != user {
        return Err(UamError::Forbidden(
            "you may only ask about yourself".into(),
        ));
    }
    let name: RepoName = repo
        .parse()
        .map_err(|e| invalid(format!("repository {repo:?}: {e}")))?;
    let who = ctx.auth.principal_of_subject(&user).await?;
    if who.is_anonymous() && !user.is_empty() {
        return Err(UamError::NotFound(format!("user {user} does not exist")));
    }
    let d = ctx.auth.decide(&who, &name).await?;
    ok(json!({
        "username": user,
        "repository": name.as_str(),
        "pull": d.actions.has(Action::Pull),
        "push": d.actions.has(Action::Push),
        "delete": d.actions.has(Action::Delete),
        "actions": d.actions.names(),
        "creates": d.creates,
    }))
}
