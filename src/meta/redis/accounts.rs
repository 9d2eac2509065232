//! `AccountStore` and `AuditStore` on Redis.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{RedisMeta, esc, lex_after};
use crate::meta::accounts::{
    AccountStore, ApiToken, Change, NamespaceKind, OrgRole, OrgUpdate, Organization, Permit,
    Refusal, Repository, SystemRole, Team, TeamRole, User, UserSource, UserUpdate,
};
use crate::meta::audit::{AuditEvent, AuditQuery, AuditStore};
use crate::meta::{MetaError, MetaResult};
use crate::registry::name::RepoName;

/// A record as `HGETALL` returns it.
type Fields = HashMap<String, String>;

fn req<'a>(f: &'a Fields, what: &str, field: &str) -> MetaResult<&'a str> {
    f.get(field)
        .map(String::as_str)
        .ok_or_else(|| MetaError::Corrupt(format!("{what} has no {field}")))
}

fn num<T: FromStr>(f: &Fields, what: &str, field: &str) -> MetaResult<T> {
    let v = req(f, what, field)?;
    v.parse()
        .map_err(|_| MetaError::Corrupt(format!("{what}: {field} {v:?}")))
}

fn opt(f: &Fields, field: &str) -> Option<String> {
    f.get(field).cloned()
}

/// A role, privilege or permit from its stored numeric code.
fn code<T: TryFrom<u8, Error = String>>(s: &str) -> MetaResult<T> {
    s.parse::<u8>()
        .map_err(|_| format!("{s:?} is not a code"))
        .and_then(T::try_from)
        .map_err(MetaError::Corrupt)
}

fn code_of<T: Into<u8>>(v: T) -> String {
    v.into().to_string()
}

/// Field/value pairs for `HSET`, leaving out absent optional fields.
#[derive(Default)]
struct Pairs(Vec<(&'static str, String)>);

impl Pairs {
    fn set(&mut self, field: &'static str, value: impl ToString) -> &mut Self {
        self.0.push((field, value.to_string()));
        self
    }

    fn opt(&mut self, field: &'static str, value: Option<&String>) -> &mut Self {
        if let Some(v) = value {
            self.0.push((field, v.clone()));
        }
        self
    }

    fn add_to(&self, inv: &mut redis::ScriptInvocation<'_>) {
        for (f, v) in &self.0 {
            inv.arg(*f).arg(v);
        }
    }
}

fn user_from(f: Fields) -> MetaResult<User> {
    let name = req(&f, "user", "name")?.to_string();
    let what = format!("user {name}");
    Ok(User {
        email: opt(&f, "email"),
        password_hash: req(&f, &what, "pw")?.to_string(),
        realname: opt(&f, "realname"),
        comment: opt(&f, "comment"),
        role: code(req(&f, &what, "role")?)?,
        source: match req(&f, &what, "source")? {
            "db" => UserSource::Db,
            "ldap" => UserSource::Ldap,
            other => return Err(MetaError::Corrupt(format!("user source {other:?}"))),
        },
        created_at: num(&f, &what, "created")?,
        updated_at: num(&f, &what, "updated")?,
        name,
    })
}

fn org_from(f: Fields) -> MetaResult<Organization> {
    let name = req(&f, "organization", "name")?.to_string();
    let what = format!("organization {name}");
    Ok(Organization {
        email: opt(&f, "email"),
        comment: opt(&f, "comment"),
        url: opt(&f, "url"),
        location: opt(&f, "location"),
        member_privilege: code(req(&f, &what, "priv")?)?,
        created_at: num(&f, &what, "created")?,
        name,
    })
}

fn repo_from(f: Fields) -> MetaResult<Repository> {
    let name = req(&f, "repository", "name")?;
    let what = format!("repository {name}");
    Ok(Repository {
        name: name
            .parse()
            .map_err(|e| MetaError::Corrupt(format!("repository {name:?}: {e}")))?,
        namespace: req(&f, &what, "ns")?.to_string(),
        is_public: req(&f, &what, "pub")? == "1",
        comment: opt(&f, "comment"),
        created_at: num(&f, &what, "at")?,
    })
}

fn token_from(f: Fields) -> MetaResult<ApiToken> {
    let id = req(&f, "token", "id")?.to_string();
    let what = format!("token {id}");
    Ok(ApiToken {
        user: req(&f, &what, "user")?.to_string(),
        name: req(&f, &what, "name")?.to_string(),
        secret_hash: req(&f, &what, "secret")?.to_string(),
        scopes: serde_json::from_str(req(&f, &what, "scopes")?)
            .map_err(|e| MetaError::Corrupt(format!("token scopes: {e}")))?,
        created_at: num(&f, &what, "created")?,
        expires_at: f
            .get("expires")
            .map(|v| {
                v.parse()
                    .map_err(|_| MetaError::Corrupt(format!("{what}: expires {v:?}")))
            })
            .transpose()?,
        id,
    })
}

/// A team's comment as stored in `P:teams:{org}`.
fn team_comment_enc(c: Option<&str>) -> String {
    match c {
        Some(c) => format!("+{c}"),
        None => "-".to_string(),
    }
}

fn team_comment_dec(s: &str) -> Option<String> {
    s.strip_prefix('+').map(str::to_string)
}

/// `(name, code)` pairs of a hash, in name order.
fn sorted_codes<T: TryFrom<u8, Error = String>>(
    h: HashMap<String, String>,
) -> MetaResult<Vec<(String, T)>> {
    let mut v = h
        .into_iter()
        .map(|(k, c)| Ok((k, code(&c)?)))
        .collect::<MetaResult<Vec<_>>>()?;
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

fn missing(what: impl std::fmt::Display) -> Change {
    Err(Refusal::Missing(what.to_string()))
}

fn unexpected(outcome: &str) -> MetaError {
    MetaError::Backend(format!("unexpected script outcome {outcome:?}"))
}

impl RedisMeta {
    async fn hgetall(&self, key: &str) -> MetaResult<Fields> {
        self.query(redis::cmd("HGETALL").arg(self.key(key))).await
    }

    async fn hget<T: redis::FromRedisValue>(&self, key: &str, field: &str) -> MetaResult<T> {
        self.query(redis::cmd("HGET").arg(self.key(key)).arg(field))
            .await
    }

    async fn page(
        &self,
        set: &str,
        record: &str,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<Fields>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.script(&self.scripts.page);
        inv.arg(set).arg(record).arg(lex_after(after)).arg(limit);
        self.run(&inv).await
    }
}

#[async_trait]
impl AccountStore for RedisMeta {
    async fn create_user(&self, u: &User) -> MetaResult<Change> {
        let mut p = Pairs::default();
        p.set("name", &u.name)
            .opt("email", u.email.as_ref())
            .set("pw", &u.password_hash)
            .opt("realname", u.realname.as_ref())
            .opt("comment", u.comment.as_ref())
            .set("role", code_of(u.role))
            .set(
                "source",
                match u.source {
                    UserSource::Db => "db",
                    UserSource::Ldap => "ldap",
                },
            )
            .set("created", u.created_at)
            .set("updated", u.updated_at);
        let mut inv = self.script(&self.scripts.create_user);
        inv.arg(&u.name).arg(if u.role == SystemRole::Admin {
            "1"
        } else {
            "0"
        });
        p.add_to(&mut inv);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "exists" => Ok(Err(Refusal::Exists(format!("name {}", u.name)))),
            other => Err(unexpected(other)),
        }
    }

    async fn user(&self, name: &str) -> MetaResult<Option<User>> {
        let f = self.hgetall(&format!("user:{name}")).await?;
        if f.is_empty() {
            return Ok(None);
        }
        user_from(f).map(Some)
    }

    async fn users(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<User>> {
        self.page("users", "user:", after, limit)
            .await?
            .into_iter()
            .map(user_from)
            .collect()
    }

    async fn update_user(&self, name: &str, up: &UserUpdate, now: i64) -> MetaResult<Change> {
        let mut p = Pairs::default();
        p.opt("email", up.email.as_ref())
            .opt("realname", up.realname.as_ref())
            .opt("comment", up.comment.as_ref())
            .opt("pw", up.password_hash.as_ref());
        if let Some(role) = up.role {
            p.set("role", code_of(role));
        }
        p.set("updated", now);
        let mut inv = self.script(&self.scripts.update_user);
        inv.arg(name).arg(match up.role {
            None => "",
            Some(SystemRole::Admin) => "1",
            Some(SystemRole::Member) => "2",
        });
        p.add_to(&mut inv);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("user {name}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_user(&self, name: &str) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.delete_user);
        inv.arg(name);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("user {name}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn admin_count(&self) -> MetaResult<u64> {
        self.query(redis::cmd("SCARD").arg(self.key("admins")))
            .await
    }

    async fn create_org(&self, o: &Organization, creator: &str) -> MetaResult<Change> {
        let mut p = Pairs::default();
        p.set("name", &o.name)
            .opt("email", o.email.as_ref())
            .opt("comment", o.comment.as_ref())
            .opt("url", o.url.as_ref())
            .opt("location", o.location.as_ref())
            .set("priv", code_of(o.member_privilege))
            .set("created", o.created_at);
        let mut inv = self.script(&self.scripts.create_org);
        inv.arg(&o.name).arg(creator);
        p.add_to(&mut inv);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "exists" => Ok(Err(Refusal::Exists(format!("name {}", o.name)))),
            "no_user" => Ok(missing(format!("user {creator}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn org(&self, name: &str) -> MetaResult<Option<Organization>> {
        let f = self.hgetall(&format!("org:{name}")).await?;
        if f.is_empty() {
            return Ok(None);
        }
        org_from(f).map(Some)
    }

    async fn orgs(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<Organization>> {
        self.page("orgs", "org:", after, limit)
            .await?
            .into_iter()
            .map(org_from)
            .collect()
    }

    async fn update_org(&self, name: &str, up: &OrgUpdate) -> MetaResult<Change> {
        let mut p = Pairs::default();
        p.opt("email", up.email.as_ref())
            .opt("comment", up.comment.as_ref())
            .opt("url", up.url.as_ref())
            .opt("location", up.location.as_ref());
        if let Some(v) = up.member_privilege {
            p.set("priv", code_of(v));
        }
        let mut inv = self.script(&self.scripts.update_org);
        inv.arg(name);
        p.add_to(&mut inv);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("organization {name}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_org(&self, name: &str) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.delete_org);
        inv.arg(name);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("organization {name}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn namespace_kind(&self, name: &str) -> MetaResult<Option<NamespaceKind>> {
        let (user, org): (bool, bool) = redis::pipe()
            .exists(self.key(&format!("user:{name}")))
            .exists(self.key(&format!("org:{name}")))
            .query_async(&mut self.conn())
            .await?;
        Ok(if user {
            Some(NamespaceKind::User)
        } else if org {
            Some(NamespaceKind::Organization)
        } else {
            None
        })
    }

    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.set_org_member);
        inv.arg(org).arg(user).arg(code_of(role));
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "no_org" => Ok(missing(format!("organization {org}"))),
            "no_user" => Ok(missing(format!("user {user}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn remove_org_member(&self, org: &str, user: &str) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.remove_org_member);
        inv.arg(org).arg(user);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("{user} in organization {org}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn org_members(&self, org: &str) -> MetaResult<Vec<(String, OrgRole)>> {
        sorted_codes(self.hgetall(&format!("org_members:{org}")).await?)
    }

    async fn org_role(&self, org: &str, user: &str) -> MetaResult<Option<OrgRole>> {
        let r: Option<String> = self.hget(&format!("org_members:{org}"), user).await?;
        r.map(|c| code(&c)).transpose()
    }

    async fn user_orgs(&self, user: &str) -> MetaResult<Vec<(String, OrgRole)>> {
        sorted_codes(self.hgetall(&format!("user_orgs:{user}")).await?)
    }

    async fn create_team(&self, team: &Team, creator: Option<&str>) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.create_team);
        inv.arg(&team.org)
            .arg(&team.name)
            .arg(team_comment_enc(team.comment.as_deref()))
            .arg(if creator.is_some() { "1" } else { "0" })
            .arg(creator.unwrap_or(""));
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "no_org" => Ok(missing(format!("organization {}", team.org))),
            "exists" => Ok(Err(Refusal::Exists(format!(
                "team {} in {}",
                team.name, team.org
            )))),
            "not_member" => Ok(Err(Refusal::Invalid(format!(
                "{} is not a member of organization {}",
                creator.unwrap_or(""),
                team.org
            )))),
            other => Err(unexpected(other)),
        }
    }

    async fn team(&self, org: &str, name: &str) -> MetaResult<Option<Team>> {
        let c: Option<String> = self.hget(&format!("teams:{org}"), name).await?;
        Ok(c.map(|c| Team {
            org: org.to_string(),
            name: name.to_string(),
            comment: team_comment_dec(&c),
        }))
    }

    async fn teams(&self, org: &str) -> MetaResult<Vec<Team>> {
        let mut v: Vec<Team> = self
            .hgetall(&format!("teams:{org}"))
            .await?
            .into_iter()
            .map(|(name, c)| Team {
                org: org.to_string(),
                name,
                comment: team_comment_dec(&c),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    async fn delete_team(&self, org: &str, name: &str) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.delete_team);
        inv.arg(org).arg(name);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("team {name} in {org}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn set_team_member(
        &self,
        org: &str,
        team: &str,
        user: &str,
        role: TeamRole,
    ) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.set_team_member);
        inv.arg(org).arg(team).arg(user).arg(code_of(role));
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "no_team" => Ok(missing(format!("team {team} in {org}"))),
            "no_user" => Ok(missing(format!("user {user}"))),
            "not_member" => Ok(Err(Refusal::Invalid(format!(
                "{user} is not a member of organization {org}"
            )))),
            other => Err(unexpected(other)),
        }
    }

    async fn remove_team_member(&self, org: &str, team: &str, user: &str) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.remove_team_member);
        inv.arg(org).arg(team).arg(user);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("{user} in team {team} of {org}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn team_members(&self, org: &str, team: &str) -> MetaResult<Vec<(String, TeamRole)>> {
        sorted_codes(
            self.hgetall(&format!("team_members:{}:{team}", esc(org)))
                .await?,
        )
    }

    async fn team_role(&self, org: &str, team: &str, user: &str) -> MetaResult<Option<TeamRole>> {
        let r: Option<String> = self
            .hget(&format!("team_members:{}:{team}", esc(org)), user)
            .await?;
        r.map(|c| code(&c)).transpose()
    }

    async fn user_teams(&self, org: &str, user: &str) -> MetaResult<Vec<(String, TeamRole)>> {
        sorted_codes(
            self.hgetall(&format!("user_teams:{}:{user}", esc(org)))
                .await?,
        )
    }

    async fn set_team_repo(
        &self,
        org: &str,
        team: &str,
        repo: &RepoName,
        permit: Permit,
    ) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.set_team_repo);
        inv.arg(org)
            .arg(team)
            .arg(repo.as_str())
            .arg(code_of(permit));
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "no_team" => Ok(missing(format!("team {team} in {org}"))),
            "no_repo" => Ok(missing(format!("repository {repo}"))),
            "other_org" => Ok(Err(Refusal::Invalid(format!(
                "repository {repo} does not belong to organization {org}"
            )))),
            other => Err(unexpected(other)),
        }
    }

    async fn remove_team_repo(&self, org: &str, team: &str, repo: &RepoName) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.remove_team_repo);
        inv.arg(org).arg(team).arg(repo.as_str());
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!(
                "repository {repo} in team {team} of {org}"
            ))),
            other => Err(unexpected(other)),
        }
    }

    async fn team_repos(&self, org: &str, team: &str) -> MetaResult<Vec<(String, Permit)>> {
        sorted_codes(
            self.hgetall(&format!("team_repos:{}:{team}", esc(org)))
                .await?,
        )
    }

    async fn team_permits(&self, user: &str, repo: &RepoName) -> MetaResult<Vec<Permit>> {
        let mut inv = self.script(&self.scripts.team_permits);
        inv.arg(user).arg(repo.as_str());
        let codes: Vec<String> = self.run(&inv).await?;
        codes.iter().map(|c| code(c)).collect()
    }

    async fn create_repo(&self, r: &Repository) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.create_repo);
        inv.arg(r.name.as_str())
            .arg(&r.namespace)
            .arg(if r.is_public { "1" } else { "0" })
            .arg(if r.comment.is_some() { "1" } else { "0" })
            .arg(r.comment.as_deref().unwrap_or(""))
            .arg(r.created_at);
        let res: String = self.run(&inv).await?;
        match res.as_str() {
            "ok" => Ok(Ok(())),
            "exists" => Ok(Err(Refusal::Exists(format!("repository {}", r.name)))),
            other => Err(unexpected(other)),
        }
    }

    async fn repo(&self, name: &RepoName) -> MetaResult<Option<Repository>> {
        let f = self.hgetall(&format!("repo:{name}")).await?;
        if f.is_empty() {
            return Ok(None);
        }
        repo_from(f).map(Some)
    }

    async fn repos_in(&self, namespace: &str) -> MetaResult<Vec<Repository>> {
        let mut inv = self.script(&self.scripts.repos_in);
        inv.arg(namespace);
        let rows: Vec<Fields> = self.run(&inv).await?;
        rows.into_iter().map(repo_from).collect()
    }

    async fn update_repo(
        &self,
        name: &RepoName,
        is_public: Option<bool>,
        comment: Option<&str>,
    ) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.update_repo);
        inv.arg(name.as_str())
            .arg(match is_public {
                None => "",
                Some(true) => "1",
                Some(false) => "0",
            })
            .arg(if comment.is_some() { "1" } else { "0" })
            .arg(comment.unwrap_or(""));
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("repository {name}"))),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_repo(&self, name: &RepoName) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.delete_repo);
        inv.arg(name.as_str());
        let id: Option<String> = self.run(&inv).await?;
        let Some(id) = id else {
            return Ok(missing(format!("repository {name}")));
        };
        // The repository is gone; its content is unreachable and is removed
        // now in bounded steps. If that fails, the next `gc` finishes it.
        if let Err(e) = self.drain(&id).await {
            tracing::warn!(repository = %name, error = %e, "removing a deleted repository's content failed; gc will finish it");
        }
        Ok(Ok(()))
    }

    async fn create_token(&self, tok: &ApiToken) -> MetaResult<Change> {
        let scopes = serde_json::to_string(&tok.scopes).expect("strings serialize");
        let mut p = Pairs::default();
        p.set("id", &tok.id)
            .set("user", &tok.user)
            .set("name", &tok.name)
            .set("secret", &tok.secret_hash)
            .set("scopes", scopes)
            .set("created", tok.created_at);
        if let Some(e) = tok.expires_at {
            p.set("expires", e);
        }
        let mut inv = self.script(&self.scripts.create_token);
        inv.arg(&tok.id).arg(&tok.user);
        p.add_to(&mut inv);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "no_user" => Ok(missing(format!("user {}", tok.user))),
            "exists" => Ok(Err(Refusal::Exists(format!("token {}", tok.id)))),
            other => Err(unexpected(other)),
        }
    }

    async fn token(&self, id: &str) -> MetaResult<Option<ApiToken>> {
        let f = self.hgetall(&format!("token:{id}")).await?;
        if f.is_empty() {
            return Ok(None);
        }
        token_from(f).map(Some)
    }

    async fn tokens(&self, user: &str) -> MetaResult<Vec<ApiToken>> {
        let mut inv = self.script(&self.scripts.tokens);
        inv.arg(user);
        let rows: Vec<(u64, Fields)> = self.run(&inv).await?;
        let mut v = rows
            .into_iter()
            .map(|(seq, f)| Ok((seq, token_from(f)?)))
            .collect::<MetaResult<Vec<_>>>()?;
        // By creation time, ties in the order they were stored (as SQL).
        v.sort_by_key(|(seq, t)| (t.created_at, *seq));
        Ok(v.into_iter().map(|(_, t)| t).collect())
    }

    async fn delete_token(&self, user: &str, id: &str) -> MetaResult<Change> {
        let mut inv = self.script(&self.scripts.delete_token);
        inv.arg(user).arg(id);
        let r: String = self.run(&inv).await?;
        match r.as_str() {
            "ok" => Ok(Ok(())),
            "missing" => Ok(missing(format!("token {id}"))),
            other => Err(unexpected(other)),
        }
    }
}

/// An audit event as stored in `P:audit:ev` (the scripts read `actor`,
/// `action` and `repo`).
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    at: i64,
    actor: String,
    action: String,
    repo: Option<String>,
    target: Option<String>,
    detail: Option<String>,
    addr: Option<String>,
    count: u64,
}

/// Events appended by one script call.
const AUDIT_APPEND_BATCH: usize = 1000;
/// Events deleted by one script call.
const AUDIT_PRUNE_BATCH: u32 = 500;

#[async_trait]
impl AuditStore for RedisMeta {
    async fn append_audit(&self, events: &[AuditEvent]) -> MetaResult<()> {
        for batch in events.chunks(AUDIT_APPEND_BATCH) {
            let mut inv = self.script(&self.scripts.append_audit);
            for e in batch {
                let json = serde_json::to_string(&StoredEvent {
                    at: e.at,
                    actor: e.actor.clone(),
                    action: e.action.clone(),
                    repo: e.repo.clone(),
                    target: e.target.clone(),
                    detail: e.detail.clone(),
                    addr: e.addr.clone(),
                    count: e.count,
                })
                .expect("events serialize");
                inv.arg(e.at)
                    .arg(&e.actor)
                    .arg(&e.action)
                    .arg(if e.repo.is_some() { "1" } else { "0" })
                    .arg(e.repo.as_deref().unwrap_or(""))
                    .arg(json);
            }
            let _: i64 = self.run(&inv).await?;
        }
        Ok(())
    }

    async fn query_audit(&self, q: &AuditQuery) -> MetaResult<Vec<(i64, AuditEvent)>> {
        let limit = q.limit as usize;
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Walk the smallest index that every match is in, newest first.
        let mut indexes: Vec<String> = [
            q.actor.as_ref().map(|v| format!("audit:actor:{v}")),
            q.repo.as_ref().map(|v| format!("audit:repo:{v}")),
            q.action.as_ref().map(|v| format!("audit:action:{v}")),
        ]
        .into_iter()
        .flatten()
        .map(|k| self.key(&k))
        .collect();
        let index = match indexes.len() {
            0 => self.key("audit:ids"),
            1 => indexes.remove(0),
            _ => {
                let mut pipe = redis::pipe();
                for k in &indexes {
                    pipe.zcard(k);
                }
                let sizes: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
                let i = (0..indexes.len()).min_by_key(|&i| sizes[i]).unwrap_or(0);
                indexes.swap_remove(i)
            }
        };
        let batch = limit.clamp(100, 1000);
        let mut max = match q.before_id {
            Some(b) => format!("({b}"),
            None => "+inf".to_string(),
        };
        let mut out = Vec::new();
        loop {
            let ids: Vec<i64> = self
                .query(
                    redis::cmd("ZREVRANGEBYSCORE")
                        .arg(&index)
                        .arg(&max)
                        .arg("-inf")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(batch),
                )
                .await?;
            let Some(&last) = ids.last() else { break };
            let events: Vec<Option<String>> = self
                .query(redis::cmd("HMGET").arg(self.key("audit:ev")).arg(&ids))
                .await?;
            for (id, json) in ids.iter().zip(events) {
                // Pruned meanwhile.
                let Some(json) = json else { continue };
                let e: StoredEvent = serde_json::from_str(&json)
                    .map_err(|e| MetaError::Corrupt(format!("audit event {id}: {e}")))?;
                let wanted = q.actor.as_ref().is_none_or(|v| *v == e.actor)
                    && q.repo.as_ref().is_none_or(|v| Some(v) == e.repo.as_ref())
                    && q.action.as_ref().is_none_or(|v| *v == e.action)
                    && q.since.is_none_or(|v| e.at >= v)
                    && q.until.is_none_or(|v| e.at <= v);
                if !wanted {
                    continue;
                }
                out.push((
                    *id,
                    AuditEvent {
                        at: e.at,
                        actor: e.actor,
                        action: e.action,
                        repo: e.repo,
                        target: e.target,
                        detail: e.detail,
                        addr: e.addr,
                        count: e.count,
                    },
                ));
                if out.len() == limit {
                    return Ok(out);
                }
            }
            if ids.len() < batch {
                break;
            }
            max = format!("({last}");
        }
        Ok(out)
    }

    async fn prune_audit(&self, before: i64) -> MetaResult<u64> {
        let mut total = 0;
        loop {
            let mut inv = self.script(&self.scripts.prune_audit);
            inv.arg(before).arg(AUDIT_PRUNE_BATCH);
            let n: u64 = self.run(&inv).await?;
            total += n;
            if n < AUDIT_PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }
}
