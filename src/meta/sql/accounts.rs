//! `AccountStore` and `AuditStore` on SQL. Write transactions run through
//! `write_txn!` (see the parent module for how races are handled): checks
//! that guard an insert lock what they found (`FOR SHARE`), read-modify-write
//! updates lock the row (`FOR UPDATE`), and names are unique by key.

use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use super::SqlMeta;
use super::entity::{
    api_tokens, audit_events, manifest_refs, manifests, namespace_kind, namespaces, org_members,
    organizations, repo_blobs, repositories, tags, team_members, team_repos, teams, users,
};
use crate::meta::accounts::{
    AccountStore, ApiToken, Change, NamespaceKind, OrgRole, OrgUpdate, Organization, Permit,
    Refusal, Repository, SystemRole, Team, TeamRole, User, UserSource, UserUpdate,
};
use crate::meta::audit::{AuditEvent, AuditQuery, AuditStore};
use crate::meta::{MetaError, MetaResult};
use crate::registry::name::RepoName;

fn code<T: TryFrom<u8, Error = String>>(n: i16) -> MetaResult<T> {
    u8::try_from(n)
        .map_err(|_| format!("{n} is out of range"))
        .and_then(T::try_from)
        .map_err(MetaError::Corrupt)
}

fn code_of<T: Into<u8>>(v: T) -> i16 {
    v.into() as i16
}

fn user_from(m: users::Model) -> MetaResult<User> {
    Ok(User {
        role: code(m.role)?,
        source: match m.source.as_str() {
            "db" => UserSource::Db,
            "ldap" => UserSource::Ldap,
            other => return Err(MetaError::Corrupt(format!("user source {other:?}"))),
        },
        name: m.name,
        email: m.email,
        password_hash: m.password_hash,
        realname: m.realname,
        comment: m.comment,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

fn org_from(m: organizations::Model) -> MetaResult<Organization> {
    Ok(Organization {
        member_privilege: code(m.member_privilege)?,
        name: m.name,
        email: m.email,
        comment: m.comment,
        url: m.url,
        location: m.location,
        created_at: m.created_at,
    })
}

fn repo_from(m: repositories::Model) -> MetaResult<Repository> {
    Ok(Repository {
        name: m
            .name
            .parse()
            .map_err(|e| MetaError::Corrupt(format!("repository {:?}: {e}", m.name)))?,
        namespace: m.namespace,
        is_public: m.is_public,
        comment: m.comment,
        created_at: m.created_at,
    })
}

fn token_from(m: api_tokens::Model) -> MetaResult<ApiToken> {
    Ok(ApiToken {
        scopes: serde_json::from_str(&m.scopes)
            .map_err(|e| MetaError::Corrupt(format!("token scopes: {e}")))?,
        id: m.id,
        user: m.user,
        name: m.name,
        secret_hash: m.secret_hash,
        created_at: m.created_at,
        expires_at: m.expires_at,
    })
}

fn missing(what: impl std::fmt::Display) -> Change {
    Err(Refusal::Missing(what.to_string()))
}

fn exists(what: impl std::fmt::Display) -> Change {
    Err(Refusal::Exists(what.to_string()))
}

fn invalid(what: impl std::fmt::Display) -> Change {
    Err(Refusal::Invalid(what.to_string()))
}

// The checks below lock the row they find until the transaction ends, so
// that a concurrent delete waits (or, if it came first, is seen).

async fn user_exists(c: &impl ConnectionTrait, name: &str) -> Result<bool, DbErr> {
    Ok(users::Entity::find_by_id(name)
        .lock_shared()
        .one(c)
        .await?
        .is_some())
}

async fn org_exists(c: &impl ConnectionTrait, name: &str) -> Result<bool, DbErr> {
    Ok(organizations::Entity::find_by_id(name)
        .lock_shared()
        .one(c)
        .await?
        .is_some())
}

async fn team_exists(c: &impl ConnectionTrait, org: &str, team: &str) -> Result<bool, DbErr> {
    Ok(
        teams::Entity::find_by_id((org.to_string(), team.to_string()))
            .lock_shared()
            .one(c)
            .await?
            .is_some(),
    )
}

async fn is_org_member(c: &impl ConnectionTrait, org: &str, user: &str) -> Result<bool, DbErr> {
    Ok(
        org_members::Entity::find_by_id((org.to_string(), user.to_string()))
            .lock_shared()
            .one(c)
            .await?
            .is_some(),
    )
}

/// Whether a user or an organisation has the name. A racing creation is
/// caught by the `namespaces` key instead.
async fn namespace_taken(c: &impl ConnectionTrait, name: &str) -> Result<bool, DbErr> {
    Ok(namespaces::Entity::find_by_id(name).one(c).await?.is_some())
}

async fn take_namespace(c: &impl ConnectionTrait, name: &str, kind: i16) -> Result<(), DbErr> {
    namespaces::Entity::insert(namespaces::ActiveModel {
        name: Set(name.to_string()),
        kind: Set(kind),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

async fn free_namespace(c: &impl ConnectionTrait, name: &str) -> Result<(), DbErr> {
    namespaces::Entity::delete_by_id(name).exec(c).await?;
    Ok(())
}

#[async_trait]
impl AccountStore for SqlMeta {
    async fn create_user(&self, u: &User) -> MetaResult<Change> {
        write_txn!(self, |t| {
            if namespace_taken(&t, &u.name).await? {
                return Ok(exists(format!("name {}", u.name)));
            }
            take_namespace(&t, &u.name, namespace_kind::USER).await?;
            users::Entity::insert(users::ActiveModel {
                name: Set(u.name.clone()),
                email: Set(u.email.clone()),
                password_hash: Set(u.password_hash.clone()),
                realname: Set(u.realname.clone()),
                comment: Set(u.comment.clone()),
                role: Set(code_of(u.role)),
                source: Set(match u.source {
                    UserSource::Db => "db".into(),
                    UserSource::Ldap => "ldap".into(),
                }),
                created_at: Set(u.created_at),
                updated_at: Set(u.updated_at),
            })
            .exec_without_returning(&t)
            .await?;
            Ok(Ok(()))
        })
    }

    async fn user(&self, name: &str) -> MetaResult<Option<User>> {
        users::Entity::find_by_id(name)
            .one(&self.db)
            .await?
            .map(user_from)
            .transpose()
    }

    async fn users(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<User>> {
        let mut q = users::Entity::find();
        if let Some(a) = after {
            q = q.filter(users::Column::Name.gt(a));
        }
        q.order_by_asc(users::Column::Name)
            .limit(limit as u64)
            .all(&self.db)
            .await?
            .into_iter()
            .map(user_from)
            .collect()
    }

    async fn update_user(&self, name: &str, up: &UserUpdate, now: i64) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let Some(m) = users::Entity::find_by_id(name)
                .lock_exclusive()
                .one(&t)
                .await?
            else {
                return Ok(missing(format!("user {name}")));
            };
            let mut am: users::ActiveModel = m.into();
            if let Some(v) = &up.email {
                am.email = Set(Some(v.clone()));
            }
            if let Some(v) = &up.realname {
                am.realname = Set(Some(v.clone()));
            }
            if let Some(v) = &up.comment {
                am.comment = Set(Some(v.clone()));
            }
            if let Some(v) = &up.password_hash {
                am.password_hash = Set(v.clone());
            }
            if let Some(v) = up.role {
                am.role = Set(code_of(v));
            }
            am.updated_at = Set(now);
            users::Entity::update(am).exec(&t).await?;
            Ok(Ok(()))
        })
    }

    async fn delete_user(&self, name: &str) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let r = users::Entity::delete_by_id(name).exec(&t).await?;
            if r.rows_affected == 0 {
                return Ok(missing(format!("user {name}")));
            }
            free_namespace(&t, name).await?;
            org_members::Entity::delete_many()
                .filter(org_members::Column::User.eq(name))
                .exec(&t)
                .await?;
            team_members::Entity::delete_many()
                .filter(team_members::Column::User.eq(name))
                .exec(&t)
                .await?;
            api_tokens::Entity::delete_many()
                .filter(api_tokens::Column::User.eq(name))
                .exec(&t)
                .await?;
            Ok(Ok(()))
        })
    }

    async fn admin_count(&self) -> MetaResult<u64> {
        Ok(users::Entity::find()
            .filter(users::Column::Role.eq(code_of(SystemRole::Admin)))
            .count(&self.db)
            .await?)
    }

    async fn create_org(&self, o: &Organization, creator: &str) -> MetaResult<Change> {
        write_txn!(self, |t| {
            if namespace_taken(&t, &o.name).await? {
                return Ok(exists(format!("name {}", o.name)));
            }
            if !user_exists(&t, creator).await? {
                return Ok(missing(format!("user {creator}")));
            }
            take_namespace(&t, &o.name, namespace_kind::ORGANIZATION).await?;
            organizations::Entity::insert(organizations::ActiveModel {
                name: Set(o.name.clone()),
                email: Set(o.email.clone()),
                comment: Set(o.comment.clone()),
                url: Set(o.url.clone()),
                location: Set(o.location.clone()),
                member_privilege: Set(code_of(o.member_privilege)),
                created_at: Set(o.created_at),
            })
            .exec_without_returning(&t)
            .await?;
            org_members::Entity::insert(org_members::ActiveModel {
                org: Set(o.name.clone()),
                user: Set(creator.to_string()),
                role: Set(code_of(OrgRole::Admin)),
            })
            .exec_without_returning(&t)
            .await?;
            Ok(Ok(()))
        })
    }

    async fn org(&self, name: &str) -> MetaResult<Option<Organization>> {
        organizations::Entity::find_by_id(name)
            .one(&self.db)
            .await?
            .map(org_from)
            .transpose()
    }

    async fn orgs(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<Organization>> {
        let mut q = organizations::Entity::find();
        if let Some(a) = after {
            q = q.filter(organizations::Column::Name.gt(a));
        }
        q.order_by_asc(organizations::Column::Name)
            .limit(limit as u64)
            .all(&self.db)
            .await?
            .into_iter()
            .map(org_from)
            .collect()
    }

    async fn update_org(&self, name: &str, up: &OrgUpdate) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let Some(m) = organizations::Entity::find_by_id(name)
                .lock_exclusive()
                .one(&t)
                .await?
            else {
                return Ok(missing(format!("organization {name}")));
            };
            let mut am: organizations::ActiveModel = m.into();
            if let Some(v) = &up.email {
                am.email = Set(Some(v.clone()));
            }
            if let Some(v) = &up.comment {
                am.comment = Set(Some(v.clone()));
            }
            if let Some(v) = &up.url {
                am.url = Set(Some(v.clone()));
            }
            if let Some(v) = &up.location {
                am.location = Set(Some(v.clone()));
            }
            if let Some(v) = up.member_privilege {
                am.member_privilege = Set(code_of(v));
            }
            organizations::Entity::update(am).exec(&t).await?;
            Ok(Ok(()))
        })
    }

    async fn delete_org(&self, name: &str) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let r = organizations::Entity::delete_by_id(name).exec(&t).await?;
            if r.rows_affected == 0 {
                return Ok(missing(format!("organization {name}")));
            }
            free_namespace(&t, name).await?;
            org_members::Entity::delete_many()
                .filter(org_members::Column::Org.eq(name))
                .exec(&t)
                .await?;
            teams::Entity::delete_many()
                .filter(teams::Column::Org.eq(name))
                .exec(&t)
                .await?;
            team_members::Entity::delete_many()
                .filter(team_members::Column::Org.eq(name))
                .exec(&t)
                .await?;
            team_repos::Entity::delete_many()
                .filter(team_repos::Column::Org.eq(name))
                .exec(&t)
                .await?;
            Ok(Ok(()))
        })
    }

    async fn namespace_kind(&self, name: &str) -> MetaResult<Option<NamespaceKind>> {
        let Some(m) = namespaces::Entity::find_by_id(name).one(&self.db).await? else {
            return Ok(None);
        };
        match m.kind {
            namespace_kind::USER => Ok(Some(NamespaceKind::User)),
            namespace_kind::ORGANIZATION => Ok(Some(NamespaceKind::Organization)),
            other => Err(MetaError::Corrupt(format!(
                "namespace {name:?} has kind {other}"
            ))),
        }
    }

    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> MetaResult<Change> {
        write_txn!(self, |t| {
            if !org_exists(&t, org).await? {
                return Ok(missing(format!("organization {org}")));
            }
            if !user_exists(&t, user).await? {
                return Ok(missing(format!("user {user}")));
            }
            org_members::Entity::insert(org_members::ActiveModel {
                org: Set(org.to_string()),
                user: Set(user.to_string()),
                role: Set(code_of(role)),
            })
            .on_conflict(
                OnConflict::columns([org_members::Column::Org, org_members::Column::User])
                    .update_column(org_members::Column::Role)
                    .to_owned(),
            )
            .exec_without_returning(&t)
            .await?;
            Ok(Ok(()))
        })
    }

    async fn remove_org_member(&self, org: &str, user: &str) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let r = org_members::Entity::delete_by_id((org.to_string(), user.to_string()))
                .exec(&t)
                .await?;
            if r.rows_affected == 0 {
                return Ok(missing(format!("{user} in organization {org}")));
            }
            team_members::Entity::delete_many()
                .filter(team_members::Column::Org.eq(org))
                .filter(team_members::Column::User.eq(user))
                .exec(&t)
                .await?;
            Ok(Ok(()))
        })
    }

    async fn org_members(&self, org: &str) -> MetaResult<Vec<(String, OrgRole)>> {
        org_members::Entity::find()
            .filter(org_members::Column::Org.eq(org))
            .order_by_asc(org_members::Column::User)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Ok((m.user, code(m.role)?)))
            .collect()
    }

    async fn org_role(&self, org: &str, user: &str) -> MetaResult<Option<OrgRole>> {
        org_members::Entity::find_by_id((org.to_string(), user.to_string()))
            .one(&self.db)
            .await?
            .map(|m| code(m.role))
            .transpose()
    }

    async fn user_orgs(&self, user: &str) -> MetaResult<Vec<(String, OrgRole)>> {
        org_members::Entity::find()
            .filter(org_members::Column::User.eq(user))
            .order_by_asc(org_members::Column::Org)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Ok((m.org, code(m.role)?)))
            .collect()
    }

    async fn create_team(&self, team: &Team, creator: Option<&str>) -> MetaResult<Change> {
        write_txn!(self, |t| {
            if !org_exists(&t, &team.org).await? {
                return Ok(missing(format!("organization {}", team.org)));
            }
            let key = (team.org.clone(), team.name.clone());
            if teams::Entity::find_by_id(key).one(&t).await?.is_some() {
                return Ok(exists(format!("team {} in {}", team.name, team.org)));
            }
            if let Some(creator) = creator
                && !is_org_member(&t, &team.org, creator).await?
            {
                return Ok(invalid(format!(
                    "{creator} is not a member of organization {}",
                    team.org
                )));
            }
            teams::Entity::insert(teams::ActiveModel {
                org: Set(team.org.clone()),
                name: Set(team.name.clone()),
                comment: Set(team.comment.clone()),
            })
            .exec_without_returning(&t)
            .await?;
            if let Some(creator) = creator {
                team_members::Entity::insert(team_members::ActiveModel {
                    org: Set(team.org.clone()),
                    team: Set(team.name.clone()),
                    user: Set(creator.to_string()),
                    role: Set(code_of(TeamRole::Admin)),
                })
                .exec_without_returning(&t)
                .await?;
            }
            Ok(Ok(()))
        })
    }

    async fn team(&self, org: &str, name: &str) -> MetaResult<Option<Team>> {
        Ok(
            teams::Entity::find_by_id((org.to_string(), name.to_string()))
                .one(&self.db)
                .await?
                .map(|m| Team {
                    org: m.org,
                    name: m.name,
                    comment: m.comment,
                }),
        )
    }

    async fn teams(&self, org: &str) -> MetaResult<Vec<Team>> {
        Ok(teams::Entity::find()
            .filter(teams::Column::Org.eq(org))
            .order_by_asc(teams::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Team {
                org: m.org,
                name: m.name,
                comment: m.comment,
            })
            .collect())
    }

    async fn delete_team(&self, org: &str, name: &str) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let r = teams::Entity::delete_by_id((org.to_string(), name.to_string()))
                .exec(&t)
                .await?;
            if r.rows_affected == 0 {
                return Ok(missing(format!("team {name} in {org}")));
            }
            team_members::Entity::delete_many()
                .filter(team_members::Column::Org.eq(org))
                .filter(team_members::Column::Team.eq(name))
                .exec(&t)
                .await?;
            team_repos::Entity::delete_many()
                .filter(team_repos::Column::Org.eq(org))
                .filter(team_repos::Column::Team.eq(name))
                .exec(&t)
                .await?;
            Ok(Ok(()))
        })
    }

    async fn set_team_member(
        &self,
        org: &str,
        team: &str,
        user: &str,
        role: TeamRole,
    ) -> MetaResult<Change> {
        write_txn!(self, |t| {
            if !team_exists(&t, org, team).await? {
                return Ok(missing(format!("team {team} in {org}")));
            }
            if !user_exists(&t, user).await? {
                return Ok(missing(format!("user {user}")));
            }
            if !is_org_member(&t, org, user).await? {
                return Ok(invalid(format!(
                    "{user} is not a member of organization {org}"
                )));
            }
            team_members::Entity::insert(team_members::ActiveModel {
                org: Set(org.to_string()),
                team: Set(team.to_string()),
                user: Set(user.to_string()),
                role: Set(code_of(role)),
            })
            .on_conflict(
                OnConflict::columns([
                    team_members::Column::Org,
                    team_members::Column::Team,
                    team_members::Column::User,
                ])
                .update_column(team_members::Column::Role)
                .to_owned(),
            )
            .exec_without_returning(&t)
            .await?;
            Ok(Ok(()))
        })
    }

    async fn remove_team_member(&self, org: &str, team: &str, user: &str) -> MetaResult<Change> {
        let key = (org.to_string(), team.to_string(), user.to_string());
        let _w = self.write_guard().await;
        let r = team_members::Entity::delete_by_id(key)
            .exec(&self.db)
            .await?;
        Ok(if r.rows_affected == 0 {
            missing(format!("{user} in team {team} of {org}"))
        } else {
            Ok(())
        })
    }

    async fn team_members(&self, org: &str, team: &str) -> MetaResult<Vec<(String, TeamRole)>> {
        team_members::Entity::find()
            .filter(team_members::Column::Org.eq(org))
            .filter(team_members::Column::Team.eq(team))
            .order_by_asc(team_members::Column::User)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Ok((m.user, code(m.role)?)))
            .collect()
    }

    async fn team_role(&self, org: &str, team: &str, user: &str) -> MetaResult<Option<TeamRole>> {
        team_members::Entity::find_by_id((org.to_string(), team.to_string(), user.to_string()))
            .one(&self.db)
            .await?
            .map(|m| code(m.role))
            .transpose()
    }

    async fn user_teams(&self, org: &str, user: &str) -> MetaResult<Vec<(String, TeamRole)>> {
        team_members::Entity::find()
            .filter(team_members::Column::Org.eq(org))
            .filter(team_members::Column::User.eq(user))
            .order_by_asc(team_members::Column::Team)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Ok((m.team, code(m.role)?)))
            .collect()
    }

    async fn set_team_repo(
        &self,
        org: &str,
        team: &str,
        repo: &RepoName,
        permit: Permit,
    ) -> MetaResult<Change> {
        write_txn!(self, |t| {
            if !team_exists(&t, org, team).await? {
                return Ok(missing(format!("team {team} in {org}")));
            }
            let Some(r) = repositories::Entity::find_by_id(repo.as_str())
                .lock_shared()
                .one(&t)
                .await?
            else {
                return Ok(missing(format!("repository {repo}")));
            };
            if r.namespace != org {
                return Ok(invalid(format!(
                    "repository {repo} does not belong to organization {org}"
                )));
            }
            team_repos::Entity::insert(team_repos::ActiveModel {
                org: Set(org.to_string()),
                team: Set(team.to_string()),
                repo: Set(repo.as_str().to_string()),
                permit: Set(code_of(permit)),
            })
            .on_conflict(
                OnConflict::columns([
                    team_repos::Column::Org,
                    team_repos::Column::Team,
                    team_repos::Column::Repo,
                ])
                .update_column(team_repos::Column::Permit)
                .to_owned(),
            )
            .exec_without_returning(&t)
            .await?;
            Ok(Ok(()))
        })
    }

    async fn remove_team_repo(&self, org: &str, team: &str, repo: &RepoName) -> MetaResult<Change> {
        let key = (org.to_string(), team.to_string(), repo.as_str().to_string());
        let _w = self.write_guard().await;
        let r = team_repos::Entity::delete_by_id(key).exec(&self.db).await?;
        Ok(if r.rows_affected == 0 {
            missing(format!("repository {repo} in team {team} of {org}"))
        } else {
            Ok(())
        })
    }

    async fn team_repos(&self, org: &str, team: &str) -> MetaResult<Vec<(String, Permit)>> {
        team_repos::Entity::find()
            .filter(team_repos::Column::Org.eq(org))
            .filter(team_repos::Column::Team.eq(team))
            .order_by_asc(team_repos::Column::Repo)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Ok((m.repo, code(m.permit)?)))
            .collect()
    }

    async fn team_permits(&self, user: &str, repo: &RepoName) -> MetaResult<Vec<Permit>> {
        let q = Query::select()
            .column((team_repos::Entity, team_repos::Column::Permit))
            .from(team_repos::Entity)
            .inner_join(
                team_members::Entity,
                Expr::col((team_members::Entity, team_members::Column::Org))
                    .equals((team_repos::Entity, team_repos::Column::Org))
                    .and(
                        Expr::col((team_members::Entity, team_members::Column::Team))
                            .equals((team_repos::Entity, team_repos::Column::Team)),
                    ),
            )
            .and_where(Expr::col((team_repos::Entity, team_repos::Column::Repo)).eq(repo.as_str()))
            .and_where(Expr::col((team_members::Entity, team_members::Column::User)).eq(user))
            .to_owned();
        let rows = self.db.query_all_raw(self.backend().build(&q)).await?;
        rows.into_iter()
            .map(|row| {
                let p: i16 = row.try_get("", "permit")?;
                code(p)
            })
            .collect()
    }

    async fn create_repo(&self, r: &Repository) -> MetaResult<Change> {
        write_txn!(self, |t| {
            // A racing creation (or first push) fails on the key and is
            // run again, to end here.
            if repositories::Entity::find_by_id(r.name.as_str())
                .one(&t)
                .await?
                .is_some()
            {
                return Ok(exists(format!("repository {}", r.name)));
            }
            repositories::Entity::insert(repositories::ActiveModel {
                name: Set(r.name.as_str().to_string()),
                namespace: Set(r.namespace.clone()),
                is_public: Set(r.is_public),
                comment: Set(r.comment.clone()),
                created_at: Set(r.created_at),
            })
            .exec_without_returning(&t)
            .await?;
            Ok(Ok(()))
        })
    }

    async fn repo(&self, name: &RepoName) -> MetaResult<Option<Repository>> {
        repositories::Entity::find_by_id(name.as_str())
            .one(&self.db)
            .await?
            .map(repo_from)
            .transpose()
    }

    async fn repos_in(&self, namespace: &str) -> MetaResult<Vec<Repository>> {
        repositories::Entity::find()
            .filter(repositories::Column::Namespace.eq(namespace))
            .order_by_asc(repositories::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(repo_from)
            .collect()
    }

    async fn update_repo(
        &self,
        name: &RepoName,
        is_public: Option<bool>,
        comment: Option<&str>,
    ) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let Some(m) = repositories::Entity::find_by_id(name.as_str())
                .lock_exclusive()
                .one(&t)
                .await?
            else {
                return Ok(missing(format!("repository {name}")));
            };
            let mut am: repositories::ActiveModel = m.into();
            if let Some(v) = is_public {
                am.is_public = Set(v);
            }
            if let Some(v) = comment {
                am.comment = Set(Some(v.to_string()));
            }
            repositories::Entity::update(am).exec(&t).await?;
            Ok(Ok(()))
        })
    }

    async fn delete_repo(&self, name: &RepoName) -> MetaResult<Change> {
        let name = name.as_str();
        write_txn!(self, |t| {
            // First: content writes to the repository lock this row first.
            let r = repositories::Entity::delete_by_id(name).exec(&t).await?;
            if r.rows_affected == 0 {
                return Ok(missing(format!("repository {name}")));
            }
            repo_blobs::Entity::delete_many()
                .filter(repo_blobs::Column::Repo.eq(name))
                .exec(&t)
                .await?;
            manifests::Entity::delete_many()
                .filter(manifests::Column::Repo.eq(name))
                .exec(&t)
                .await?;
            manifest_refs::Entity::delete_many()
                .filter(manifest_refs::Column::Repo.eq(name))
                .exec(&t)
                .await?;
            tags::Entity::delete_many()
                .filter(tags::Column::Repo.eq(name))
                .exec(&t)
                .await?;
            team_repos::Entity::delete_many()
                .filter(team_repos::Column::Repo.eq(name))
                .exec(&t)
                .await?;
            Ok(Ok(()))
        })
    }

    async fn create_token(&self, tok: &ApiToken) -> MetaResult<Change> {
        let scopes = serde_json::to_string(&tok.scopes).expect("strings serialize");
        write_txn!(self, |t| {
            if !user_exists(&t, &tok.user).await? {
                return Ok(missing(format!("user {}", tok.user)));
            }
            if api_tokens::Entity::find_by_id(tok.id.as_str())
                .one(&t)
                .await?
                .is_some()
            {
                return Ok(exists(format!("token {}", tok.id)));
            }
            api_tokens::Entity::insert(api_tokens::ActiveModel {
                id: Set(tok.id.clone()),
                user: Set(tok.user.clone()),
                name: Set(tok.name.clone()),
                secret_hash: Set(tok.secret_hash.clone()),
                scopes: Set(scopes.clone()),
                created_at: Set(tok.created_at),
                expires_at: Set(tok.expires_at),
            })
            .exec_without_returning(&t)
            .await?;
            Ok(Ok(()))
        })
    }

    async fn token(&self, id: &str) -> MetaResult<Option<ApiToken>> {
        api_tokens::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(token_from)
            .transpose()
    }

    async fn tokens(&self, user: &str) -> MetaResult<Vec<ApiToken>> {
        api_tokens::Entity::find()
            .filter(api_tokens::Column::User.eq(user))
            .order_by_asc(api_tokens::Column::CreatedAt)
            .order_by_asc(api_tokens::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(token_from)
            .collect()
    }

    async fn delete_token(&self, user: &str, id: &str) -> MetaResult<Change> {
        let _w = self.write_guard().await;
        let r = api_tokens::Entity::delete_many()
            .filter(api_tokens::Column::Id.eq(id))
            .filter(api_tokens::Column::User.eq(user))
            .exec(&self.db)
            .await?;
        Ok(if r.rows_affected == 0 {
            missing(format!("token {id}"))
        } else {
            Ok(())
        })
    }
}

#[async_trait]
impl AuditStore for SqlMeta {
    async fn append_audit(&self, events: &[AuditEvent]) -> MetaResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let _w = self.write_guard().await;
        let txn = self.db.begin().await?;
        for batch in events.chunks(200) {
            let rows = batch.iter().map(|e| audit_events::ActiveModel {
                id: sea_orm::ActiveValue::NotSet,
                at: Set(e.at),
                actor: Set(e.actor.clone()),
                action: Set(e.action.clone()),
                repo: Set(e.repo.clone()),
                target: Set(e.target.clone()),
                detail: Set(e.detail.clone()),
                addr: Set(e.addr.clone()),
                count: Set(e.count as i64),
            });
            audit_events::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn query_audit(&self, q: &AuditQuery) -> MetaResult<Vec<(i64, AuditEvent)>> {
        let mut s = audit_events::Entity::find();
        if let Some(v) = &q.actor {
            s = s.filter(audit_events::Column::Actor.eq(v.as_str()));
        }
        if let Some(v) = &q.repo {
            s = s.filter(audit_events::Column::Repo.eq(v.as_str()));
        }
        if let Some(v) = &q.action {
            s = s.filter(audit_events::Column::Action.eq(v.as_str()));
        }
        if let Some(v) = q.since {
            s = s.filter(audit_events::Column::At.gte(v));
        }
        if let Some(v) = q.until {
            s = s.filter(audit_events::Column::At.lte(v));
        }
        if let Some(v) = q.before_id {
            s = s.filter(audit_events::Column::Id.lt(v));
        }
        Ok(s.order_by_desc(audit_events::Column::Id)
            .limit(q.limit as u64)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| {
                (
                    m.id,
                    AuditEvent {
                        at: m.at,
                        actor: m.actor,
                        action: m.action,
                        repo: m.repo,
                        target: m.target,
                        detail: m.detail,
                        addr: m.addr,
                        count: m.count as u64,
                    },
                )
            })
            .collect())
    }

    async fn prune_audit(&self, before: i64) -> MetaResult<u64> {
        let _w = self.write_guard().await;
        let r = audit_events::Entity::delete_many()
            .filter(audit_events::Column::At.lt(before))
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected)
    }
}
