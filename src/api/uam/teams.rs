//! Teams of an organisation: their members and their permits on the
//! organisation's repositories.

use axum::extract::{Path, Request};
use serde::Deserialize;
use serde_json::{Value, json};

use super::orgs::{require_org_admin, require_org_member};
use super::{Caller, Ctx, UamError, UamResult, invalid, json_body, ok};
use crate::auth::names::check_team_name;
use crate::meta::accounts::{OrgRole, Permit, Team, TeamRole};
use crate::registry::name::RepoName;

/// System administrators, organisation administrators and the team's own
/// administrators.
async fn require_team_admin(
    ctx: &Ctx,
    caller: &Caller,
    org: &str,
    team: &str,
) -> Result<(), UamError> {
    if ctx.auth.meta.team(org, team).await?.is_none() {
        return Err(UamError::NotFound(format!(
            "team {team} of {org} does not exist"
        )));
    }
    if caller.admin
        || ctx.auth.meta.org_role(org, &caller.name).await? == Some(OrgRole::Admin)
        || ctx.auth.meta.team_role(org, team, &caller.name).await? == Some(TeamRole::Admin)
    {
        Ok(())
    } else {
        Err(UamError::Forbidden(format!(
            "only administrators of team {team} or of organization {org} may do this"
        )))
    }
}

/// The full name of a repository of `org` given as `reponame`.
fn org_repo(org: &str, reponame: &str) -> Result<RepoName, UamError> {
    let full = match reponame.strip_prefix(&format!("{org}/")) {
        Some(_) => reponame.to_string(),
        None => format!("{org}/{reponame}"),
    };
    full.parse()
        .map_err(|e| invalid(format!("repository {reponame:?}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTeam {
    teamname: String,
    comment: Option<String>,
    orgname: String,
}

/// `POST /uam/team` — organisation administrators; the creator, if a
/// member of the organisation, becomes the team's administrator.
pub async fn create(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: NewTeam = json_body(req).await?;
    let name = check_team_name(&body.teamname).map_err(invalid)?;
    require_org_admin(&ctx, &caller, &body.orgname).await?;
    let team = Team {
        org: body.orgname.clone(),
        name: name.clone(),
        comment: body.comment,
    };
    let member = ctx
        .auth
        .meta
        .org_role(&body.orgname, &caller.name)
        .await?
        .is_some();
    ctx.auth
        .meta
        .create_team(&team, member.then_some(caller.name.as_str()))
        .await??;
    ctx.changed(
        &caller.name,
        "team.create",
        None,
        &format!("{}/{name}", body.orgname),
    )
    .await;
    ok(json!({"teamname": team.name, "comment": team.comment, "orgname": team.org}))
}

/// `DELETE /uam/team/{org}/{team}`
pub async fn remove(ctx: Ctx, Path((org, team)): Path<(String, String)>) -> UamResult {
    let caller = ctx.caller().await?;
    require_team_admin(&ctx, &caller, &org, &team).await?;
    ctx.auth.meta.delete_team(&org, &team).await??;
    ctx.changed(&caller.name, "team.delete", None, &format!("{org}/{team}"))
        .await;
    ok(json!({"teamname": team, "orgname": org}))
}

/// `GET /uam/team/{org}/listteam` — members of the organisation.
pub async fn list(ctx: Ctx, Path(org): Path<String>) -> UamResult {
    let caller = ctx.caller().await?;
    require_org_member(&ctx, &caller, &org).await?;
    let teams = ctx.auth.meta.teams(&org).await?;
    ok(Value::Array(
        teams
            .into_iter()
            .map(|t| json!({"teamname": t.name, "comment": t.comment, "orgname": t.org}))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamMember {
    teamname: String,
    orgname: String,
    username: String,
    role: u8,
}

/// `POST /uam/team/adduser` (and `PUT /uam/team/updateteamusermap`)
pub async fn add_user(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: TeamMember = json_body(req).await?;
    let role = TeamRole::try_from(body.role).map_err(invalid)?;
    require_team_admin(&ctx, &caller, &body.orgname, &body.teamname).await?;
    ctx.auth
        .meta
        .set_team_member(&body.orgname, &body.teamname, &body.username, role)
        .await??;
    ctx.changed(
        &caller.name,
        "team.adduser",
        None,
        &format!("{}/{}/{}", body.orgname, body.teamname, body.username),
    )
    .await;
    ok(json!({
        "teamname": body.teamname,
        "orgname": body.orgname,
        "username": body.username,
        "role": role as u8,
    }))
}

/// `DELETE /uam/team/removeuser/{org}/{team}/{user}`
pub async fn remove_user(
    ctx: Ctx,
    Path((org, team, user)): Path<(String, String, String)>,
) -> UamResult {
    let caller = ctx.caller().await?;
    require_team_admin(&ctx, &caller, &org, &team).await?;
    ctx.auth
        .meta
        .remove_team_member(&org, &team, &user)
        .await??;
    ctx.changed(
        &caller.name,
        "team.removeuser",
        None,
        &format!("{org}/{team}/{user}"),
    )
    .await;
    ok(json!({"teamname": team, "orgname": org, "username": user}))
}

/// `GET /uam/team/{org}/{team}/listuser` — members of the organisation.
pub async fn list_users(ctx: Ctx, Path((org, team)): Path<(String, String)>) -> UamResult {
    let caller = ctx.caller().await?;
    require_org_member(&ctx, &caller, &org).await?;
    if ctx.auth.meta.team(&org, &team).await?.is_none() {
        return Err(UamError::NotFound(format!(
            "team {team} of {org} does not exist"
        )));
    }
    let members = ctx.auth.meta.team_members(&org, &team).await?;
    ok(Value::Array(
        members
            .into_iter()
            .map(|(u, r)| json!({"teamname": team, "orgname": org, "username": u, "role": r as u8}))
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamRepo {
    orgname: String,
    reponame: String,
    teamname: String,
    permit: u8,
}

/// `POST /uam/team/addrepository` (and `PUT .../updateteamrepositorymap`)
pub async fn add_repo(ctx: Ctx, req: Request) -> UamResult {
    let caller = ctx.caller().await?;
    let body: TeamRepo = json_body(req).await?;
    let permit = Permit::try_from(body.permit).map_err(invalid)?;
    require_team_admin(&ctx, &caller, &body.orgname, &body.teamname).await?;
    let repo = org_repo(&body.orgname, &body.reponame)?;
    ctx.auth
        .meta
        .set_team_repo(&body.orgname, &body.teamname, &repo, permit)
        .await??;
    ctx.changed(
        &caller.name,
        "team.addrepository",
        Some(repo.as_str()),
        &format!("{}/{}", body.orgname, body.teamname),
    )
    .await;
    ok(json!({
        "orgname": body.orgname,
        "reponame": body.reponame,
        "teamname": body.teamname,
        "permit": permit as u8,
    }))
}

/// `DELETE /uam/team/removerepository/{org}/{team}/{repo}`
pub async fn remove_repo(
    ctx: Ctx,
    Path((org, team, reponame)): Path<(String, String, String)>,
) -> UamResult {
    let caller = ctx.caller().await?;
    require_team_admin(&ctx, &caller, &org, &team).await?;
    let repo = org_repo(&org, &reponame)?;
    ctx.auth.meta.remove_team_repo(&org, &team, &repo).await??;
    ctx.changed(
        &caller.name,
        "team.removerepository",
        Some(repo.as_str()),
        &format!("{org}/{team}"),
    )
    .await;
    ok(json!({"orgname": org, "reponame": reponame, "teamname": team}))
}

/// `GET /uam/team/{org}/{team}/listrepository` — members of the organisation.
pub async fn list_repos(ctx: Ctx, Path((org, team)): Path<(String, String)>) -> UamResult {
    let caller = ctx.caller().await?;
    require_org_member(&ctx, &caller, &org).await?;
    if ctx.auth.meta.team(&org, &team).await?.is_none() {
        return Err(UamError::NotFound(format!(
            "team {team} of {org} does not exist"
        )));
    }
    let repos = ctx.auth.meta.team_repos(&org, &team).await?;
    let prefix = format!("{org}/");
    ok(Value::Array(
        repos
            .into_iter()
            .map(|(r, p)| {
                let short = r.strip_prefix(&prefix).unwrap_or(&r).to_string();
                json!({"orgname": org, "reponame": short, "teamname": team, "permit": p as u8})
            })
            .collect(),
    ))
}
