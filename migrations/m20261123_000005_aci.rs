//! appc ACIs: images pushed with acpush, Docker/OCI images converted to
//! ACIs (a cache), and the armored public keys of each namespace.

use sea_orm_migration::prelude::*;

use super::m20261123_000001_registry::{NAME_LEN, big, binary_collation, table, text_key};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AciImages {
    Table,
    Repo,
    Version,
    Os,
    Arch,
    AciDigest,
    AciSize,
    ImageId,
    Signature,
    Manifest,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AciConversions {
    Table,
    Key,
    Repo,
    Source,
    AciDigest,
    AciSize,
    ImageId,
    Manifest,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AciPubkeys {
    Table,
    Namespace,
    Armored,
    UpdatedAt,
}

const DIGEST_LEN: u32 = 140;
/// A tag's length: versions are tags.
const VERSION_LEN: u32 = 128;
const OS_ARCH_LEN: u32 = 32;
/// `sha512-` and 128 hex digits.
const IMAGE_ID_LEN: u32 = 140;

/// Text up to several MiB (MySQL's plain TEXT stops at 64 KiB).
fn long_text(b: sea_orm_migration::sea_orm::DbBackend, col: impl IntoIden) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    match b {
        sea_orm_migration::sea_orm::DbBackend::MySql => c.custom(Alias::new("LONGTEXT")),
        _ => c.text(),
    };
    c.not_null().to_owned()
}

fn long_binary(b: sea_orm_migration::sea_orm::DbBackend, col: impl IntoIden) -> ColumnDef {
    let mut c = ColumnDef::new(col);
    match b {
        sea_orm_migration::sea_orm::DbBackend::MySql => c.custom(Alias::new("LONGBLOB")),
        _ => c.blob(),
    };
    c.not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let b = m.get_database_backend();
        m.create_table(
            table(b, AciImages::Table)
                .col(text_key(b, AciImages::Repo, NAME_LEN))
                .col(text_key(b, AciImages::Version, VERSION_LEN))
                .col(text_key(b, AciImages::Os, OS_ARCH_LEN))
                .col(text_key(b, AciImages::Arch, OS_ARCH_LEN))
                .col(text_key(b, AciImages::AciDigest, DIGEST_LEN))
                .col(big(AciImages::AciSize))
                .col(text_key(b, AciImages::ImageId, IMAGE_ID_LEN))
                .col(binary_collation(
                    b,
                    ColumnDef::new(AciImages::Signature)
                        .string_len(DIGEST_LEN)
                        .null(),
                ))
                .col(long_binary(b, AciImages::Manifest))
                .col(big(AciImages::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(AciImages::Repo)
                        .col(AciImages::Version)
                        .col(AciImages::Os)
                        .col(AciImages::Arch),
                )
                .to_owned(),
        )
        .await?;
        for (name, col) in [
            ("idx_aci_images_digest", AciImages::AciDigest),
            ("idx_aci_images_signature", AciImages::Signature),
        ] {
            m.create_index(
                Index::create()
                    .name(name)
                    .table(AciImages::Table)
                    .col(col)
                    .to_owned(),
            )
            .await?;
        }
        m.create_table(
            table(b, AciConversions::Table)
                .col(text_key(b, AciConversions::Key, 64).primary_key())
                .col(text_key(b, AciConversions::Repo, NAME_LEN))
                .col(text_key(b, AciConversions::Source, DIGEST_LEN))
                .col(text_key(b, AciConversions::AciDigest, DIGEST_LEN))
                .col(big(AciConversions::AciSize))
                .col(text_key(b, AciConversions::ImageId, IMAGE_ID_LEN))
                .col(long_binary(b, AciConversions::Manifest))
                .col(big(AciConversions::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_aci_conversions_digest")
                .table(AciConversions::Table)
                .col(AciConversions::AciDigest)
                .to_owned(),
        )
        .await?;
        m.create_table(
            table(b, AciPubkeys::Table)
                .col(text_key(b, AciPubkeys::Namespace, NAME_LEN).primary_key())
                .col(long_text(b, AciPubkeys::Armored))
                .col(big(AciPubkeys::UpdatedAt))
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
