//! One namespace for users and organisations: a name is a user's or an
//! organisation's, never both. A key enforces it, so two transactions
//! racing to take one name cannot both succeed (checking the `users` and
//! `organizations` tables first cannot see the other's uncommitted row).

use sea_orm_migration::prelude::*;

use super::m20261123_000001_registry::{NAME_LEN, table, text_key};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Namespaces {
    Table,
    Name,
    Kind,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Name,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Name,
}

/// `namespaces.kind` of a user.
const USER: i16 = 1;
/// `namespaces.kind` of an organisation.
const ORGANIZATION: i16 = 2;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let b = m.get_database_backend();
        m.create_table(
            table(b, Namespaces::Table)
                .col(text_key(b, Namespaces::Name, NAME_LEN).primary_key())
                .col(ColumnDef::new(Namespaces::Kind).small_integer().not_null())
                .to_owned(),
        )
        .await?;
        // Names taken before this migration.
        for (source, name, kind) in [
            (Users::Table.into_iden(), Users::Name.into_iden(), USER),
            (
                Organizations::Table.into_iden(),
                Organizations::Name.into_iden(),
                ORGANIZATION,
            ),
        ] {
            let fill = Query::insert()
                .into_table(Namespaces::Table)
                .columns([Namespaces::Name, Namespaces::Kind])
                .select_from(
                    Query::select()
                        .column(name)
                        .expr(Expr::val(kind))
                        .from(source)
                        .to_owned(),
                )
                .map_err(|e| DbErr::Migration(e.to_string()))?
                .to_owned();
            m.exec_stmt(fill).await?;
        }
        Ok(())
    }
}
