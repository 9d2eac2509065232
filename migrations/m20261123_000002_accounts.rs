//! Accounts and permissions: users, organisations and their members, teams
//! with their members and repository permits, API tokens, and the audit log.

use sea_orm_migration::prelude::*;

use super::m20261123_000001_registry::{NAME_LEN, big, table, text_key};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Name,
    Email,
    PasswordHash,
    Realname,
    Comment,
    Role,
    Source,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Name,
    Email,
    Comment,
    Url,
    Location,
    MemberPrivilege,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OrgMembers {
    Table,
    Org,
    User,
    Role,
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Org,
    Name,
    Comment,
}

#[derive(DeriveIden)]
enum TeamMembers {
    Table,
    Org,
    Team,
    User,
    Role,
}

#[derive(DeriveIden)]
enum TeamRepos {
    Table,
    Org,
    Team,
    Repo,
    Permit,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    User,
    Name,
    SecretHash,
    Scopes,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Actor,
    Action,
    Repo,
    Target,
    Detail,
    Addr,
    Count,
}

fn small(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).small_integer().not_null().to_owned()
}

fn text_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().null().to_owned()
}

fn string_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(NAME_LEN).null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let b = m.get_database_backend();
        let key = |col| text_key(b, col, NAME_LEN);
        m.create_table(
            table(b, Users::Table)
                .col(text_key(b, Users::Name, NAME_LEN).primary_key())
                .col(string_null(Users::Email))
                .col(ColumnDef::new(Users::PasswordHash).text().not_null())
                .col(string_null(Users::Realname))
                .col(text_null(Users::Comment))
                .col(small(Users::Role))
                .col(ColumnDef::new(Users::Source).string_len(16).not_null())
                .col(big(Users::CreatedAt))
                .col(big(Users::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, Organizations::Table)
                .col(text_key(b, Organizations::Name, NAME_LEN).primary_key())
                .col(string_null(Organizations::Email))
                .col(text_null(Organizations::Comment))
                .col(string_null(Organizations::Url))
                .col(string_null(Organizations::Location))
                .col(small(Organizations::MemberPrivilege))
                .col(big(Organizations::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, OrgMembers::Table)
                .col(key(OrgMembers::Org.into_iden()))
                .col(key(OrgMembers::User.into_iden()))
                .col(small(OrgMembers::Role))
                .primary_key(Index::create().col(OrgMembers::Org).col(OrgMembers::User))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_org_members_user")
                .table(OrgMembers::Table)
                .col(OrgMembers::User)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, Teams::Table)
                .col(key(Teams::Org.into_iden()))
                .col(key(Teams::Name.into_iden()))
                .col(text_null(Teams::Comment))
                .primary_key(Index::create().col(Teams::Org).col(Teams::Name))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, TeamMembers::Table)
                .col(key(TeamMembers::Org.into_iden()))
                .col(key(TeamMembers::Team.into_iden()))
                .col(key(TeamMembers::User.into_iden()))
                .col(small(TeamMembers::Role))
                .primary_key(
                    Index::create()
                        .col(TeamMembers::Org)
                        .col(TeamMembers::Team)
                        .col(TeamMembers::User),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_team_members_user")
                .table(TeamMembers::Table)
                .col(TeamMembers::User)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, TeamRepos::Table)
                .col(key(TeamRepos::Org.into_iden()))
                .col(key(TeamRepos::Team.into_iden()))
                .col(key(TeamRepos::Repo.into_iden()))
                .col(small(TeamRepos::Permit))
                .primary_key(
                    Index::create()
                        .col(TeamRepos::Org)
                        .col(TeamRepos::Team)
                        .col(TeamRepos::Repo),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_team_repos_repo")
                .table(TeamRepos::Table)
                .col(TeamRepos::Repo)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, ApiTokens::Table)
                .col(text_key(b, ApiTokens::Id, 64).primary_key())
                .col(key(ApiTokens::User.into_iden()))
                .col(
                    ColumnDef::new(ApiTokens::Name)
                        .string_len(NAME_LEN)
                        .not_null(),
                )
                .col(
                    ColumnDef::new(ApiTokens::SecretHash)
                        .string_len(64)
                        .not_null(),
                )
                .col(ColumnDef::new(ApiTokens::Scopes).text().not_null())
                .col(big(ApiTokens::CreatedAt))
                .col(ColumnDef::new(ApiTokens::ExpiresAt).big_integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_api_tokens_user")
                .table(ApiTokens::Table)
                .col(ApiTokens::User)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, AuditEvents::Table)
                .col(
                    ColumnDef::new(AuditEvents::Id)
                        .big_integer()
                        .not_null()
                        .auto_increment()
                        .primary_key(),
                )
                .col(big(AuditEvents::At))
                .col(key(AuditEvents::Actor.into_iden()))
                .col(
                    ColumnDef::new(AuditEvents::Action)
                        .string_len(32)
                        .not_null(),
                )
                .col(string_null(AuditEvents::Repo))
                .col(string_null(AuditEvents::Target))
                .col(text_null(AuditEvents::Detail))
                .col(ColumnDef::new(AuditEvents::Addr).string_len(64).null())
                .col(big(AuditEvents::Count))
                .to_owned(),
        )
        .await?;
        for (name, cols) in [
            ("idx_audit_at", vec![AuditEvents::At]),
            ("idx_audit_actor", vec![AuditEvents::Actor, AuditEvents::At]),
            ("idx_audit_repo", vec![AuditEvents::Repo, AuditEvents::At]),
        ] {
            let mut idx = Index::create();
            idx.name(name).table(AuditEvents::Table);
            for c in cols {
                idx.col(c);
            }
            m.create_index(idx.to_owned()).await?;
        }
        Ok(())
    }
}
