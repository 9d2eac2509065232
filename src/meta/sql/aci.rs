//! `AciStore` on SQL: one row per pushed image, per conversion and per
//! namespace's keys. Image writes replace their row; conversions keep the
//! first row written under a key (racing converters agree on it).

use std::convert::Infallible;

use async_trait::async_trait;
use bytes::Bytes;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, TransactionTrait};

use super::entity::{aci_conversions, aci_images, aci_pubkeys, repo_blobs};
use super::{SqlMeta, do_nothing, parse_digest};
use crate::meta::MetaResult;
use crate::meta::aci::{AciConversion, AciImage, AciStore};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

fn repo_name(s: &str) -> MetaResult<RepoName> {
    s.parse()
        .map_err(|e| crate::meta::MetaError::Corrupt(format!("stored repository {s:?}: {e}")))
}

fn image_from(m: aci_images::Model) -> MetaResult<AciImage> {
    Ok(AciImage {
        repo: repo_name(&m.repo)?,
        version: m.version,
        os: m.os,
        arch: m.arch,
        aci: parse_digest(&m.aci_digest)?,
        size: m.aci_size as u64,
        image_id: m.image_id,
        signature: m.signature.as_deref().map(parse_digest).transpose()?,
        manifest: Bytes::from(m.manifest),
        created_at: m.created_at,
    })
}

fn conversion_from(m: aci_conversions::Model) -> MetaResult<AciConversion> {
    Ok(AciConversion {
        key: m.key,
        repo: repo_name(&m.repo)?,
        source: parse_digest(&m.source)?,
        aci: parse_digest(&m.aci_digest)?,
        size: m.aci_size as u64,
        image_id: m.image_id,
        manifest: Bytes::from(m.manifest),
        created_at: m.created_at,
    })
}

#[async_trait]
impl AciStore for SqlMeta {
    async fn put_aci_image(&self, img: &AciImage) -> MetaResult<()> {
        let row = aci_images::ActiveModel {
            repo: Set(img.repo.as_str().to_string()),
            version: Set(img.version.clone()),
            os: Set(img.os.clone()),
            arch: Set(img.arch.clone()),
            aci_digest: Set(img.aci.to_string()),
            aci_size: Set(img.size as i64),
            image_id: Set(img.image_id.clone()),
            signature: Set(img.signature.as_ref().map(|d| d.to_string())),
            manifest: Set(img.manifest.to_vec()),
            created_at: Set(img.created_at),
        };
        let r = write_txn!(self, |t| {
            aci_images::Entity::insert(row.clone())
                .on_conflict(
                    OnConflict::columns([
                        aci_images::Column::Repo,
                        aci_images::Column::Version,
                        aci_images::Column::Os,
                        aci_images::Column::Arch,
                    ])
                    .update_columns([
                        aci_images::Column::AciDigest,
                        aci_images::Column::AciSize,
                        aci_images::Column::ImageId,
                        aci_images::Column::Signature,
                        aci_images::Column::Manifest,
                        aci_images::Column::CreatedAt,
                    ])
                    .to_owned(),
                )
                .exec_without_returning(&t)
                .await?;
            Ok(Ok::<(), Infallible>(()))
        });
        r.map(|Ok(())| ())
    }

    async fn aci_image(
        &self,
        repo: &RepoName,
        version: &str,
        os: &str,
        arch: &str,
    ) -> MetaResult<Option<AciImage>> {
        aci_images::Entity::find_by_id((
            repo.as_str().to_string(),
            version.to_string(),
            os.to_string(),
            arch.to_string(),
        ))
        .one(&self.db)
        .await?
        .map(image_from)
        .transpose()
    }

    async fn put_aci_conversion(&self, c: &AciConversion) -> MetaResult<AciConversion> {
        let row = aci_conversions::ActiveModel {
            key: Set(c.key.clone()),
            repo: Set(c.repo.as_str().to_string()),
            source: Set(c.source.to_string()),
            aci_digest: Set(c.aci.to_string()),
            aci_size: Set(c.size as i64),
            image_id: Set(c.image_id.clone()),
            manifest: Set(c.manifest.to_vec()),
            created_at: Set(c.created_at),
        };
        let r = write_txn!(self, |t| {
            aci_conversions::Entity::insert(row.clone())
                .on_conflict(do_nothing(&[aci_conversions::Column::Key]))
                .exec_without_returning(&t)
                .await?;
            let stored = aci_conversions::Entity::find_by_id(c.key.as_str())
                .one(&t)
                .await?;
            Ok(Ok::<_, Infallible>(stored))
        });
        match r? {
            Ok(Some(m)) => conversion_from(m),
            Ok(None) => Err(crate::meta::MetaError::Backend(format!(
                "conversion {} vanished after its insert",
                c.key
            ))),
        }
    }

    async fn aci_conversion(&self, key: &str) -> MetaResult<Option<AciConversion>> {
        aci_conversions::Entity::find_by_id(key)
            .one(&self.db)
            .await?
            .map(conversion_from)
            .transpose()
    }

    async fn set_aci_pubkeys(&self, namespace: &str, armored: &str, at: i64) -> MetaResult<()> {
        let row = aci_pubkeys::ActiveModel {
            namespace: Set(namespace.to_string()),
            armored: Set(armored.to_string()),
            updated_at: Set(at),
        };
        let r = write_txn!(self, |t| {
            aci_pubkeys::Entity::insert(row.clone())
                .on_conflict(
                    OnConflict::column(aci_pubkeys::Column::Namespace)
                        .update_columns([
                            aci_pubkeys::Column::Armored,
                            aci_pubkeys::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&t)
                .await?;
            Ok(Ok::<(), Infallible>(()))
        });
        r.map(|Ok(())| ())
    }

    async fn aci_pubkeys(&self, namespace: &str) -> MetaResult<Option<String>> {
        Ok(aci_pubkeys::Entity::find_by_id(namespace)
            .one(&self.db)
            .await?
            .map(|m| m.armored))
    }

    async fn delete_aci_pubkeys(&self, namespace: &str) -> MetaResult<bool> {
        let _w = self.write_guard().await;
        let r = aci_pubkeys::Entity::delete_by_id(namespace)
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected > 0)
    }

    async fn aci_blob_in_use(&self, digest: &Digest) -> MetaResult<bool> {
        let d = digest.as_str();
        // Named by an image (as ACI or signature) or a conversion of a
        // repository that links it.
        let linked = |repo_col: Expr| {
            Query::select()
                .expr(Expr::val(1))
                .from(repo_blobs::Entity)
                .and_where(Expr::col((repo_blobs::Entity, repo_blobs::Column::Repo)).eq(repo_col))
                .and_where(Expr::col((repo_blobs::Entity, repo_blobs::Column::Digest)).eq(d))
                .to_owned()
        };
        let images = Query::select()
            .expr(Expr::val(1))
            .from(aci_images::Entity)
            .cond_where(
                Expr::col((aci_images::Entity, aci_images::Column::AciDigest))
                    .eq(d)
                    .or(Expr::col((aci_images::Entity, aci_images::Column::Signature)).eq(d)),
            )
            .and_where(Expr::exists(linked(Expr::col((
                aci_images::Entity,
                aci_images::Column::Repo,
            )))))
            .limit(1)
            .to_owned();
        if self
            .db
            .query_one_raw(self.backend().build(&images))
            .await?
            .is_some()
        {
            return Ok(true);
        }
        let conversions = Query::select()
            .expr(Expr::val(1))
            .from(aci_conversions::Entity)
            .and_where(
                Expr::col((aci_conversions::Entity, aci_conversions::Column::AciDigest)).eq(d),
            )
            .and_where(Expr::exists(linked(Expr::col((
                aci_conversions::Entity,
                aci_conversions::Column::Repo,
            )))))
            .limit(1)
            .to_owned();
        Ok(self
            .db
            .query_one_raw(self.backend().build(&conversions))
            .await?
            .is_some())
    }
}
