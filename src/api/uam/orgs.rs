//! Organisations and their members.

use axum::extract::{Path, Request};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, Ctx, UamError, UamResult, invalid, json_body, ok};
use crate::auth::names::check_account_name;
use crate::meta::accounts::{MemberPrivilege, OrgRole, OrgUpdate, Organization};

fn org_json(o: &Organization) -> Value {
    json!({
        "name": o.name,
        "email": o.email,
        "comment": o.comment,
        "url": o.url,
        "location": o.location,
        "memberprivilege": o.member_privilege as u8,
        "created": o.created_at,
    })
}

/// System administrators and the organisation's administrators.
pub async fn require_org_admin(ctx: &Ctx, caller: &Caller, org: &str) -> Result<(), UamError> {
    if ctx.auth.meta.org(org).await?.is_none() {
        return Err(UamError::NotFound(format!(
            "organization {org} does not exist"
        )));
    }
    if caller.admin || ctx.auth.meta.org_role(org, &caller.name).await? == Some(OrgRole::Admin) {
        Ok(())
    } else {
        Err(UamError::Forbidden(format!(
            "only administrators of organization {org} may do this"
        )))
    }
}

/// Members of any role, and system administrators.
pub async fn require_org_member(ctx: &Ctx, caller: &Caller, org: &str) -> Result<(), UamError> {
    if ctx.auth.meta.org(org).await?.is_none() {
        return Err(UamError::NotFound(format!(
            "organization {org} does not exist"
        )));
    }
    if caller.admin || ctx.auth.meta.org_role(org, &caller.name).await?.is_some() {
        Ok(())
    } else {
        Err(UamError::Forbidden(format!(
            "you are not a member of organization {org}"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
    email: Option<String>,
    comment: Option<String>,
    url: Option<String>,
    location: Option<String>,
    memberprivilege: Option<u8>,
}

/// `POST /uam/organization` — any user; the creator becomes its admin.
pub async fn create(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: NewOrg = json_body(req).await?;
    let name = check_account_name(&body.name).map_err(invalid)?;
    if !caller.admin {
        super::accounts::unclaimed_repositories(&ctx, &name).await?;
    }
    let privilege = match body.memberprivilege {
        None => MemberPrivilege::Read,
        Some(p) => MemberPrivilege::try_from(p).map_err(invalid)?,
    };
    let org = Organization {
        name: name.clone(),
        email: body.email,
        comment: body.comment,
        url: body.url,
        location: body.location,
        member_privilege: privilege,
        created_at: chrono::Utc::now().timestamp(),
    };
    ctx.auth.meta.create_org(&org, &caller.name).await??;
    ctx.changed(&caller.name, "organization.create", None, &name)
        .await;
    ok(org_json(&org))
}

/// `GET /uam/organization/list`
pub async fn list(ctx: Ctx) -> UamResult {
    ctx.caller().await?;
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = ctx.auth.meta.orgs(after.as_deref(), 1000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        all.extend(page.iter().map(org_json));
        if page.len() < 1000 || all.len() >= 100_000 {
            break;
        }
    }
    ok(Value::Array(all))
}

/// `GET /uam/organization/{org}`
pub async fn show(ctx: Ctx, Path(org): Path<String>) -> UamResult {
    ctx.caller().await?;
    let o = ctx
        .auth
        .meta
        .org(&org)
        .await?
        .ok_or_else(|| UamError::NotFound(format!("organization {org} does not exist")))?;
    ok(org_json(&o))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    name: String,
    email: Option<String>,
    comment: Option<String>,
    url: Option<String>,
    location: Option<String>,
    memberprivilege: Option<u8>,
}

/// `PUT /uam/organization/update`
pub async fn update(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: Update = json_body(req).await?;
    require_org_admin(&ctx, &caller, &body.name).await?;
    let upd = OrgUpdate {
        email: body.email,
        comment: body.comment,
        url: body.url,
        location: body.location,
        member_privilege: body
            .memberprivilege
            .map(MemberPrivilege::try_from)
            .transpose()
            .map_err(invalid)?,
    };
    ctx.auth.meta.update_org(&body.name, &upd).await??;
    ctx.changed(&caller.name, "organization.update", None, &body.name)
        .await;
    let o = ctx
        .auth
        .meta
        .org(&body.name)
        .await?
        .ok_or_else(|| UamError::NotFound(body.name.clone()))?;
    ok(org_json(&o))
}

/// `DELETE /uam/{org}` (and `/uam/organization/{org}`): its members, teams
/// and permits go; its repositories stay for system administrators.
pub async fn remove(ctx: Ctx, Path(org): Path<String>) -> UamResult {
    let caller = ctx.caller().await?;
    require_org_admin(&ctx, &caller, &org).await?;
    super::accounts::no_repositories_left(&ctx, &org).await?;
    ctx.auth.meta.delete_org(&org).await??;
    ctx.changed(&caller.name, "organization.delete", None, &org)
        .await;
    ok(json!({"name": org}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Membership {
    username: String,
    role: u8,
    orgname: String,
}

/// `POST /uam/organization/adduser` (and `PUT .../updateorganizationusermap`
/// to change a role): organisation administrators.
pub async fn add_user(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: Membership = json_body(req).await?;
    let role = OrgRole::try_from(body.role).map_err(invalid)?;
    require_org_admin(&ctx, &caller, &body.orgname).await?;
    if role != OrgRole::Admin && body.username == caller.name && !caller.admin {
        last_admin_guard(&ctx, &body.orgname, &body.username).await?;
    }
    ctx.auth
        .meta
        .set_org_member(&body.orgname, &body.username, role)
        .await??;
    ctx.changed(
        &caller.name,
        "organization.adduser",
        None,
        &format!("{}/{}", body.orgname, body.username),
    )
    .await;
    ok(json!({"username": body.username, "role": role as u8, "orgname": body.orgname}))
}

/// An organisation must keep an administrator.
async fn last_admin_guard(ctx: &Ctx, org: &str, user: &str) -> Result<(), UamError> {
    let admins: Vec<String> = ctx
        .auth
        .meta
        .org_members(org)
        .await?
        .into_iter()
        .filter(|(_, r)| *r == OrgRole::Admin)
        .map(|(u, _)| u)
        .collect();
    if admins == [user] {
        return Err(UamError::Forbidden(format!(
            "{user} is the last administrator of organization {org}"
        )));
    }
    Ok(())
}

/// `DELETE /uam/organization/removeuser/{org}/{user}`
pub async fn remove_user(ctx: Ctx, Path((org, user)): Path<(String, String)>) -> UamResult {
    let caller = ctx.caller().await?;
    require_org_admin(&ctx, &caller, &org).await?;
    last_admin_guard(&ctx, &org, &user).await?;
    ctx.auth.meta.remove_org_member(&org, &user).await??;
    ctx.changed(
        &caller.name,
        "organization.removeuser",
        None,
        &format!("{org}/{user}"),
    )
    .await;
    ok(json!({"username": user, "orgname": org}))
}

/// `GET /uam/organization/{org}/listuser` — members may see each other.
pub async fn list_users(ctx: Ctx, Path(org): Path<String>) -> UamResult {
    let caller = ctx.caller().await?;
    require_org_member(&ctx, &caller, &org).await?;
    let members = ctx.auth.meta.org_members(&org).await?;
    ok(Value::Array(
        members
            .into_iter()
            .map(|(u, r)| json!({"username": u, "role": r as u8, "orgname": org}))
            .collect(),
    ))
}
