//! Repositories (with their namespace and visibility), blobs and their
//! links, manifests with their references, and tags.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Repositories {
    Table,
    Name,
    Namespace,
    IsPublic,
    Comment,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Blobs {
    Table,
    Digest,
    Size,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RepoBlobs {
    Table,
    Repo,
    Digest,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Manifests {
    Table,
    Repo,
    Digest,
    MediaType,
    Body,
    Size,
    Subject,
    ArtifactType,
    Annotations,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ManifestRefs {
    Table,
    Repo,
    Manifest,
    Target,
    IsManifest,
}

#[derive(DeriveIden)]
enum Tags {
    Table,
    Repo,
    Name,
    Digest,
    UpdatedAt,
}

pub const NAME_LEN: u32 = 255;
const DIGEST_LEN: u32 = 140;
const TAG_LEN: u32 = 128;

/// Names, tags and digests compare and sort byte by byte on every
/// backend (MySQL and PostgreSQL would otherwise fold case or sort by
/// locale). On MySQL every table says so too (see [`table`]).
pub fn binary_collation(backend: DbBackend, c: &mut ColumnDef) -> &mut ColumnDef {
    match backend {
        DbBackend::MySql => c.extra("COLLATE utf8mb4_bin"),
        DbBackend::Postgres => c.extra("COLLATE \"C\""),
        _ => c,
    }
}

/// `CREATE TABLE` with, on MySQL, InnoDB, utf8mb4 (whatever the database's
/// default character set) and the binary collation for every text column
/// (whatever the database's default collation).
pub fn table(backend: DbBackend, name: impl IntoIden) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(name);
    if backend == DbBackend::MySql {
        t.engine("InnoDB")
            .character_set("utf8mb4")
            .collate("utf8mb4_bin");
    }
    t
}

pub fn text_key(backend: DbBackend, col: impl IntoIden, len: u32) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.string_len(len).not_null();
    binary_collation(backend, &mut c).to_owned()
}

fn name(backend: DbBackend, col: impl IntoIden) -> ColumnDef {
    text_key(backend, col, NAME_LEN)
}

fn digest(backend: DbBackend, col: impl IntoIden) -> ColumnDef {
    text_key(backend, col, DIGEST_LEN)
}

pub fn big(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

/// Binary of up to several MiB (MySQL's plain BLOB stops at 64 KiB).
fn large_binary(backend: DbBackend, col: impl IntoIden) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    match backend {
        DbBackend::MySql => c.custom(Alias::new("LONGBLOB")),
        _ => c.blob(),
    };
    c.not_null().to_owned()
}

fn large_text_null(backend: DbBackend, col: impl IntoIden) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    match backend {
        DbBackend::MySql => c.custom(Alias::new("LONGTEXT")),
        _ => c.text(),
    };
    c.null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let backend = m.get_database_backend();
        m.create_table(
            table(backend, Repositories::Table)
                .col(name(backend, Repositories::Name).primary_key())
                .col(name(backend, Repositories::Namespace))
                .col(
                    ColumnDef::new(Repositories::IsPublic)
                        .boolean()
                        .not_null()
                        .default(false),
                )
                .col(ColumnDef::new(Repositories::Comment).text().null())
                .col(big(Repositories::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_repositories_namespace")
                .table(Repositories::Table)
                .col(Repositories::Namespace)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(backend, Blobs::Table)
                .col(digest(backend, Blobs::Digest).primary_key())
                .col(big(Blobs::Size))
                .col(big(Blobs::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(backend, RepoBlobs::Table)
                .col(name(backend, RepoBlobs::Repo))
                .col(digest(backend, RepoBlobs::Digest))
                .col(big(RepoBlobs::CreatedAt))
                .primary_key(Index::create().col(RepoBlobs::Repo).col(RepoBlobs::Digest))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_repo_blobs_digest")
                .table(RepoBlobs::Table)
                .col(RepoBlobs::Digest)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(backend, Manifests::Table)
                .col(name(backend, Manifests::Repo))
                .col(digest(backend, Manifests::Digest))
                .col(name(backend, Manifests::MediaType))
                .col(large_binary(backend, Manifests::Body))
                .col(big(Manifests::Size))
                .col(binary_collation(
                    backend,
                    ColumnDef::new(Manifests::Subject)
                        .string_len(DIGEST_LEN)
                        .null(),
                ))
                .col(binary_collation(
                    backend,
                    ColumnDef::new(Manifests::ArtifactType)
                        .string_len(NAME_LEN)
                        .null(),
                ))
                .col(large_text_null(backend, Manifests::Annotations))
                .col(big(Manifests::CreatedAt))
                .primary_key(Index::create().col(Manifests::Repo).col(Manifests::Digest))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_manifests_subject")
                .table(Manifests::Table)
                .col(Manifests::Repo)
                .col(Manifests::Subject)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(backend, ManifestRefs::Table)
                .col(name(backend, ManifestRefs::Repo))
                .col(digest(backend, ManifestRefs::Manifest))
                .col(digest(backend, ManifestRefs::Target))
                .col(
                    ColumnDef::new(ManifestRefs::IsManifest)
                        .boolean()
                        .not_null(),
                )
                .primary_key(
                    Index::create()
                        .col(ManifestRefs::Repo)
                        .col(ManifestRefs::Manifest)
                        .col(ManifestRefs::Target),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_manifest_refs_target")
                .table(ManifestRefs::Table)
                .col(ManifestRefs::Target)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(backend, Tags::Table)
                .col(name(backend, Tags::Repo))
                .col(text_key(backend, Tags::Name, TAG_LEN))
                .col(digest(backend, Tags::Digest))
                .col(big(Tags::UpdatedAt))
                .primary_key(Index::create().col(Tags::Repo).col(Tags::Name))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_tags_digest")
                .table(Tags::Table)
                .col(Tags::Repo)
                .col(Tags::Digest)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
