//! Docker Registry v1: v1 images (global, by id), layer facts, conversions
//! between v1 image chains and v2 manifests (both directions), and which
//! repositories declare or reference which v1 images.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use super::m20261123_000001_registry::{NAME_LEN, big, binary_collation, table, text_key};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum LegacyImages {
    Table,
    Id,
    Json,
    Parent,
    Ancestry,
    LayerDigest,
    LayerSize,
    Checksum,
    Complete,
    PushRepo,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LegacyLayers {
    Table,
    Digest,
    DiffId,
    MediaType,
}

#[derive(DeriveIden)]
enum LegacyConversions {
    Table,
    Manifest,
    Image,
    MediaType,
    Body,
}

#[derive(DeriveIden)]
enum LegacyImageManifests {
    Table,
    Image,
    Manifest,
}

#[derive(DeriveIden)]
enum LegacyRepoImages {
    Table,
    Repo,
    Image,
    Declared,
    Referenced,
}

/// A v1 image id: 64 hex digits.
const ID_LEN: u32 = 64;
const DIGEST_LEN: u32 = 140;

fn nullable(backend: DbBackend, col: impl IntoIden, len: u32) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    c.string_len(len).null();
    binary_collation(backend, &mut c).to_owned()
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

fn flag(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .boolean()
        .not_null()
        .default(false)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let b = m.get_database_backend();
        m.create_table(
            table(b, LegacyImages::Table)
                .col(text_key(b, LegacyImages::Id, ID_LEN).primary_key())
                .col(large_binary(b, LegacyImages::Json))
                .col(nullable(b, LegacyImages::Parent, ID_LEN))
                .col(ColumnDef::new(LegacyImages::Ancestry).text().not_null())
                .col(nullable(b, LegacyImages::LayerDigest, DIGEST_LEN))
                .col(ColumnDef::new(LegacyImages::LayerSize).big_integer().null())
                .col(nullable(b, LegacyImages::Checksum, DIGEST_LEN))
                .col(flag(LegacyImages::Complete))
                .col(nullable(b, LegacyImages::PushRepo, NAME_LEN))
                .col(big(LegacyImages::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, LegacyLayers::Table)
                .col(text_key(b, LegacyLayers::Digest, DIGEST_LEN).primary_key())
                .col(text_key(b, LegacyLayers::DiffId, DIGEST_LEN))
                .col(text_key(b, LegacyLayers::MediaType, NAME_LEN))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, LegacyConversions::Table)
                .col(text_key(b, LegacyConversions::Manifest, DIGEST_LEN).primary_key())
                .col(text_key(b, LegacyConversions::Image, ID_LEN))
                .col(text_key(b, LegacyConversions::MediaType, NAME_LEN))
                .col(large_binary(b, LegacyConversions::Body))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, LegacyImageManifests::Table)
                .col(text_key(b, LegacyImageManifests::Image, ID_LEN).primary_key())
                .col(text_key(b, LegacyImageManifests::Manifest, DIGEST_LEN))
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, LegacyRepoImages::Table)
                .col(text_key(b, LegacyRepoImages::Repo, NAME_LEN))
                .col(text_key(b, LegacyRepoImages::Image, ID_LEN))
                .col(flag(LegacyRepoImages::Declared))
                .col(flag(LegacyRepoImages::Referenced))
                .primary_key(
                    Index::create()
                        .col(LegacyRepoImages::Repo)
                        .col(LegacyRepoImages::Image),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_legacy_repo_images_image")
                .table(LegacyRepoImages::Table)
                .col(LegacyRepoImages::Image)
                .col(LegacyRepoImages::Repo)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
