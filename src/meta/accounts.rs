//! Accounts and permissions as stored: users, organisations, their members,
//! teams, team permits on repositories, repository ownership and
//! visibility, and API tokens. The numeric codes are those of the original
//! Dockyard `/uam` API.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::MetaResult;
use crate::registry::name::RepoName;

/// `role` of a user: 1 system administrator, 2 ordinary user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum SystemRole {
    Admin = 1,
    Member = 2,
}

/// Role in an organisation: 3 admin, 4 member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum OrgRole {
    Admin = 3,
    Member = 4,
}

/// Role in a team: 5 admin, 6 member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum TeamRole {
    Admin = 5,
    Member = 6,
}

/// What plain members may do with an organisation's repositories:
/// 2 push and pull, 3 pull, 4 nothing beyond what public repositories and
/// their teams give.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum MemberPrivilege {
    Write = 2,
    Read = 3,
    None = 4,
}

/// A team's permit on a repository: 2 push and pull, 3 pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Permit {
    Write = 2,
    Read = 3,
}

macro_rules! code_enum {
    ($t:ident { $($v:ident = $n:literal),* }) => {
        impl From<$t> for u8 {
            fn from(v: $t) -> u8 {
                v as u8
            }
        }
        impl TryFrom<u8> for $t {
            type Error = String;
            fn try_from(n: u8) -> Result<Self, String> {
                match n {
                    $($n => Ok($t::$v),)*
                    _ => Err(format!("{n} is not a valid {}", stringify!($t))),
                }
            }
        }
    };
}

code_enum!(SystemRole { Admin = 1, Member = 2 });
code_enum!(OrgRole { Admin = 3, Member = 4 });
code_enum!(TeamRole { Admin = 5, Member = 6 });
code_enum!(MemberPrivilege { Write = 2, Read = 3, None = 4 });
code_enum!(Permit { Write = 2, Read = 3 });

/// Where a user's password is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserSource {
    /// The hub's own database (Argon2 hash).
    Db,
    /// The directory; the account was created at first login.
    Ldap,
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub email: Option<String>,
    /// Argon2 PHC string; empty for directory users.
    pub password_hash: String,
    pub realname: Option<String>,
    pub comment: Option<String>,
    pub role: SystemRole,
    pub source: UserSource,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub realname: Option<String>,
    pub comment: Option<String>,
    pub password_hash: Option<String>,
    pub role: Option<SystemRole>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Organization {
    pub name: String,
    pub email: Option<String>,
    pub comment: Option<String>,
    pub url: Option<String>,
    pub location: Option<String>,
    pub member_privilege: MemberPrivilege,
    pub created_at: i64,
}

#[derive(Clone, Debug, Default)]
pub struct OrgUpdate {
    pub email: Option<String>,
    pub comment: Option<String>,
    pub url: Option<String>,
    pub location: Option<String>,
    pub member_privilege: Option<MemberPrivilege>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Team {
    pub org: String,
    pub name: String,
    pub comment: Option<String>,
}

/// Who owns a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceKind {
    User,
    Organization,
}

/// A repository's access settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Repository {
    pub name: RepoName,
    pub namespace: String,
    pub is_public: bool,
    pub comment: Option<String>,
    pub created_at: i64,
}

/// A robot/CI credential: used as the password of its owner, limited to
/// its scopes (never more than the owner may do).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiToken {
    pub id: String,
    pub user: String,
    pub name: String,
    /// SHA-256 (hex) of the secret; the secret itself is never stored.
    pub secret_hash: String,
    /// `repository:<name or prefix*>:<actions>` scopes, JSON array text.
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

/// Why a change was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
}

/// The outcome of a change: done, or refused for a reason the caller can
/// report. Backend failures are the outer `MetaResult` error.
pub type Change = Result<(), Refusal>;

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    async fn create_user(&self, user: &User) -> MetaResult<Change>;
    async fn user(&self, name: &str) -> MetaResult<Option<User>>;
    /// Users in name order after `after`, at most `limit`.
    async fn users(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<User>>;
    async fn update_user(&self, name: &str, update: &UserUpdate, now: i64) -> MetaResult<Change>;
    /// Removes the user with their memberships and tokens. Repositories in
    /// their namespace stay (only administrators reach them then).
    async fn delete_user(&self, name: &str) -> MetaResult<Change>;
    /// Number of system administrators.
    async fn admin_count(&self) -> MetaResult<u64>;

    /// Creates the organisation with `creator` as its first administrator.
    async fn create_org(&self, org: &Organization, creator: &str) -> MetaResult<Change>;
    async fn org(&self, name: &str) -> MetaResult<Option<Organization>>;
    async fn orgs(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<Organization>>;
    async fn update_org(&self, name: &str, update: &OrgUpdate) -> MetaResult<Change>;
    /// Removes the organisation, its memberships, teams and permits.
    async fn delete_org(&self, name: &str) -> MetaResult<Change>;
    /// Whether a name is taken by a user or an organisation.
    async fn namespace_kind(&self, name: &str) -> MetaResult<Option<NamespaceKind>>;

    /// Adds a member or changes their role.
    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> MetaResult<Change>;
    /// Removes a member (and their memberships in the org's teams).
    async fn remove_org_member(&self, org: &str, user: &str) -> MetaResult<Change>;
    async fn org_members(&self, org: &str) -> MetaResult<Vec<(String, OrgRole)>>;
    async fn org_role(&self, org: &str, user: &str) -> MetaResult<Option<OrgRole>>;
    async fn user_orgs(&self, user: &str) -> MetaResult<Vec<(String, OrgRole)>>;

    /// Creates a team with `creator` (who must be an org member) as admin,
    /// or with no member if `creator` is `None`.
    async fn create_team(&self, team: &Team, creator: Option<&str>) -> MetaResult<Change>;
    async fn team(&self, org: &str, name: &str) -> MetaResult<Option<Team>>;
    async fn teams(&self, org: &str) -> MetaResult<Vec<Team>>;
    async fn delete_team(&self, org: &str, name: &str) -> MetaResult<Change>;
    /// Adds a team member (who must be a member of the organisation) or
    /// changes their role.
    async fn set_team_member(
        &self,
        org: &str,
        team: &str,
        user: &str,
        role: TeamRole,
    ) -> MetaResult<Change>;
    async fn remove_team_member(&self, org: &str, team: &str, user: &str) -> MetaResult<Change>;
    async fn team_members(&self, org: &str, team: &str) -> MetaResult<Vec<(String, TeamRole)>>;
    async fn team_role(&self, org: &str, team: &str, user: &str) -> MetaResult<Option<TeamRole>>;
    /// Teams of `org` the user belongs to.
    async fn user_teams(&self, org: &str, user: &str) -> MetaResult<Vec<(String, TeamRole)>>;
    /// Grants a team a permit on a repository of its organisation.
    async fn set_team_repo(
        &self,
        org: &str,
        team: &str,
        repo: &RepoName,
        permit: Permit,
    ) -> MetaResult<Change>;
    async fn remove_team_repo(&self, org: &str, team: &str, repo: &RepoName) -> MetaResult<Change>;
    async fn team_repos(&self, org: &str, team: &str) -> MetaResult<Vec<(String, Permit)>>;
    /// The permits that `user`'s teams hold on `repo`.
    async fn team_permits(&self, user: &str, repo: &RepoName) -> MetaResult<Vec<Permit>>;

    /// Creates a repository record (settings only; content comes by push).
    async fn create_repo(&self, repo: &Repository) -> MetaResult<Change>;
    async fn repo(&self, name: &RepoName) -> MetaResult<Option<Repository>>;
    async fn repos_in(&self, namespace: &str) -> MetaResult<Vec<Repository>>;
    async fn update_repo(
        &self,
        name: &RepoName,
        is_public: Option<bool>,
        comment: Option<&str>,
    ) -> MetaResult<Change>;
    /// Removes a repository with all its content (manifests, tags, blob
    /// links, permits); the bytes of its blobs go at the next `gc`.
    async fn delete_repo(&self, name: &RepoName) -> MetaResult<Change>;

    async fn create_token(&self, token: &ApiToken) -> MetaResult<Change>;
    async fn token(&self, id: &str) -> MetaResult<Option<ApiToken>>;
    async fn tokens(&self, user: &str) -> MetaResult<Vec<ApiToken>>;
    async fn delete_token(&self, user: &str, id: &str) -> MetaResult<Change>;
}
