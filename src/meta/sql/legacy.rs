//! `LegacyStore` on SQL: v1 images, layer facts, conversions and the
//! repositories declaring or referencing v1 images. Checks that guard a
//! change read the row `FOR UPDATE` inside `write_txn!` (see the parent
//! module); insert-only facts are inserted with `ON CONFLICT DO NOTHING`.

use async_trait::async_trait;
use bytes::Bytes;
use sea_orm::sea_query::{Condition, Expr, ExprTrait, Func, LikeExpr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use super::entity::{
    legacy_conversions, legacy_image_manifests, legacy_images, legacy_layers, legacy_repo_images,
    repositories,
};
use super::{SqlMeta, do_nothing, parse_digest};
use crate::meta::accounts::{Change, Refusal};
use crate::meta::legacy::{Conversion, LayerInfo, LegacyStore, RepoMatch, V1Image, V1Layer};
use crate::meta::{MetaError, MetaResult};
use crate::registry::name::RepoName;

/// Rows per multi-row insert: well under every backend's parameter limit.
const BATCH: usize = 200;

fn image_from(m: legacy_images::Model) -> MetaResult<V1Image> {
    let ancestry: Vec<String> = serde_json::from_str(&m.ancestry)
        .map_err(|e| MetaError::Corrupt(format!("ancestry of v1 image {}: {e}", m.id)))?;
    let layer = match (m.layer_digest, m.layer_size) {
        (Some(d), Some(s)) => Some(V1Layer {
            digest: parse_digest(&d)?,
            size: s as u64,
        }),
        _ => None,
    };
    let push_repo = m
        .push_repo
        .map(|r| {
            r.parse::<RepoName>()
                .map_err(|e| MetaError::Corrupt(format!("push repository {r:?}: {e}")))
        })
        .transpose()?;
    Ok(V1Image {
        id: m.id,
        json: Bytes::from(m.json),
        parent: m.parent,
        ancestry,
        layer,
        checksum: m.checksum,
        complete: m.complete,
        push_repo,
        created_at: m.created_at,
    })
}

fn image_model(i: &V1Image) -> legacy_images::ActiveModel {
    legacy_images::ActiveModel {
        id: Set(i.id.clone()),
        json: Set(i.json.to_vec()),
        parent: Set(i.parent.clone()),
        ancestry: Set(serde_json::to_string(&i.ancestry).expect("strings serialize")),
        layer_digest: Set(i.layer.as_ref().map(|l| l.digest.to_string())),
        layer_size: Set(i.layer.as_ref().map(|l| l.size as i64)),
        checksum: Set(i.checksum.clone()),
        complete: Set(i.complete),
        push_repo: Set(i.push_repo.as_ref().map(|r| r.to_string())),
        created_at: Set(i.created_at),
    }
}

fn refused(r: Refusal) -> Result<Change, sea_orm::DbErr> {
    Ok(Err(r))
}

impl SqlMeta {
    /// Upserts repository-image rows, setting `flag` on each.
    async fn mark_repo_images(
        &self,
        repo: &RepoName,
        ids: &[String],
        flag: legacy_repo_images::Column,
    ) -> MetaResult<()> {
        let declared = matches!(flag, legacy_repo_images::Column::Declared);
        for batch in ids.chunks(BATCH) {
            let rows: Vec<legacy_repo_images::ActiveModel> = batch
                .iter()
                .map(|id| legacy_repo_images::ActiveModel {
                    repo: Set(repo.to_string()),
                    image: Set(id.clone()),
                    declared: Set(declared),
                    referenced: Set(!declared),
                })
                .collect();
            let _w = self.write_guard().await;
            legacy_repo_images::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        legacy_repo_images::Column::Repo,
                        legacy_repo_images::Column::Image,
                    ])
                    .update_column(flag)
                    .to_owned(),
                )
                .exec_without_returning(&self.db)
                .await?;
        }
        Ok(())
    }

    async fn image_repos(
        &self,
        id: &str,
        flag: legacy_repo_images::Column,
        limit: u32,
    ) -> MetaResult<Vec<RepoName>> {
        let names: Vec<String> = legacy_repo_images::Entity::find()
            .select_only()
            .column(legacy_repo_images::Column::Repo)
            .filter(legacy_repo_images::Column::Image.eq(id))
            .filter(Expr::col(flag).eq(true))
            .order_by_asc(legacy_repo_images::Column::Repo)
            .limit(limit as u64)
            .into_tuple()
            .all(&self.db)
            .await?;
        names
            .into_iter()
            .map(|n| {
                n.parse()
                    .map_err(|e| MetaError::Corrupt(format!("repository {n:?}: {e}")))
            })
            .collect()
    }
}

#[async_trait]
impl LegacyStore for SqlMeta {
    async fn put_v1_image(&self, image: &V1Image, replace_complete: bool) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let existing = legacy_images::Entity::find_by_id(image.id.as_str())
                .lock_exclusive()
                .one(&t)
                .await?;
            match existing {
                Some(e) if e.complete && !replace_complete => {
                    return refused(Refusal::Exists(format!("v1 image {}", image.id)));
                }
                Some(_) => {
                    legacy_images::Entity::update(image_model(image))
                        .exec(&t)
                        .await?;
                }
                None => {
                    legacy_images::Entity::insert(image_model(image))
                        .exec_without_returning(&t)
                        .await?;
                }
            }
            Ok(Ok(()))
        })
    }

    async fn add_v1_images(&self, images: &[V1Image]) -> MetaResult<()> {
        for batch in images.chunks(BATCH) {
            let _w = self.write_guard().await;
            legacy_images::Entity::insert_many(batch.iter().map(image_model))
                .on_conflict(do_nothing(&[legacy_images::Column::Id]))
                .exec_without_returning(&self.db)
                .await?;
        }
        Ok(())
    }

    async fn v1_image(&self, id: &str) -> MetaResult<Option<V1Image>> {
        legacy_images::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(image_from)
            .transpose()
    }

    async fn set_v1_layer(&self, id: &str, layer: &V1Layer, checksum: &str) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let Some(m) = legacy_images::Entity::find_by_id(id)
                .lock_exclusive()
                .one(&t)
                .await?
            else {
                return refused(Refusal::Missing(format!("v1 image {id}")));
            };
            if m.complete {
                return refused(Refusal::Exists(format!("v1 image {id}")));
            }
            let mut am: legacy_images::ActiveModel = m.into();
            am.layer_digest = Set(Some(layer.digest.to_string()));
            am.layer_size = Set(Some(layer.size as i64));
            am.checksum = Set(Some(checksum.to_string()));
            legacy_images::Entity::update(am).exec(&t).await?;
            Ok(Ok(()))
        })
    }

    async fn complete_v1_image(&self, id: &str, checksum: &str) -> MetaResult<Change> {
        write_txn!(self, |t| {
            let Some(m) = legacy_images::Entity::find_by_id(id)
                .lock_exclusive()
                .one(&t)
                .await?
            else {
                return refused(Refusal::Missing(format!("v1 image {id}")));
            };
            if m.complete {
                return refused(Refusal::Exists(format!("v1 image {id}")));
            }
            if m.layer_digest.is_none() {
                return refused(Refusal::Invalid(format!("v1 image {id} has no layer yet")));
            }
            if m.checksum.as_deref() != Some(checksum) {
                return refused(Refusal::Invalid(format!(
                    "checksum {checksum} is not that of v1 image {id}"
                )));
            }
            let mut am: legacy_images::ActiveModel = m.into();
            am.complete = Set(true);
            legacy_images::Entity::update(am).exec(&t).await?;
            Ok(Ok(()))
        })
    }

    async fn set_v1_checksum(&self, id: &str, checksum: &str) -> MetaResult<()> {
        let _w = self.write_guard().await;
        legacy_images::Entity::update_many()
            .col_expr(legacy_images::Column::Checksum, Expr::val(checksum))
            .filter(legacy_images::Column::Id.eq(id))
            .filter(legacy_images::Column::Complete.eq(true))
            .filter(legacy_images::Column::Checksum.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn put_layer_info(
        &self,
        layer: &crate::registry::digest::Digest,
        info: &LayerInfo,
    ) -> MetaResult<()> {
        let _w = self.write_guard().await;
        legacy_layers::Entity::insert(legacy_layers::ActiveModel {
            digest: Set(layer.to_string()),
            diff_id: Set(info.diff_id.to_string()),
            media_type: Set(info.media_type.clone()),
        })
        .on_conflict(do_nothing(&[legacy_layers::Column::Digest]))
        .exec_without_returning(&self.db)
        .await?;
        Ok(())
    }

    async fn layer_info(
        &self,
        layer: &crate::registry::digest::Digest,
    ) -> MetaResult<Option<LayerInfo>> {
        legacy_layers::Entity::find_by_id(layer.as_str())
            .one(&self.db)
            .await?
            .map(|m| {
                Ok(LayerInfo {
                    diff_id: parse_digest(&m.diff_id)?,
                    media_type: m.media_type,
                })
            })
            .transpose()
    }

    async fn put_v1_conversion(&self, c: &Conversion) -> MetaResult<()> {
        let r = write_txn!(self, |t| {
            legacy_conversions::Entity::insert(legacy_conversions::ActiveModel {
                manifest: Set(c.manifest.to_string()),
                image: Set(c.image.clone()),
                media_type: Set(c.media_type.clone()),
                body: Set(c.body.to_vec()),
            })
            .on_conflict(do_nothing(&[legacy_conversions::Column::Manifest]))
            .exec_without_returning(&t)
            .await?;
            legacy_image_manifests::Entity::insert(legacy_image_manifests::ActiveModel {
                image: Set(c.image.clone()),
                manifest: Set(c.manifest.to_string()),
            })
            .on_conflict(do_nothing(&[legacy_image_manifests::Column::Image]))
            .exec_without_returning(&t)
            .await?;
            Ok(Ok::<(), std::convert::Infallible>(()))
        });
        r.map(|Ok(())| ())
    }

    async fn v1_image_of_manifest(
        &self,
        manifest: &crate::registry::digest::Digest,
    ) -> MetaResult<Option<String>> {
        Ok(legacy_conversions::Entity::find_by_id(manifest.as_str())
            .select_only()
            .column(legacy_conversions::Column::Image)
            .into_tuple::<String>()
            .one(&self.db)
            .await?)
    }

    async fn manifest_of_v1_image(&self, image: &str) -> MetaResult<Option<Conversion>> {
        let Some(link) = legacy_image_manifests::Entity::find_by_id(image)
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let Some(m) = legacy_conversions::Entity::find_by_id(link.manifest.as_str())
            .one(&self.db)
            .await?
        else {
            return Err(MetaError::Corrupt(format!(
                "v1 image {image} names manifest {} which has no conversion",
                link.manifest
            )));
        };
        Ok(Some(Conversion {
            manifest: parse_digest(&m.manifest)?,
            media_type: m.media_type,
            body: Bytes::from(m.body),
            image: image.to_string(),
        }))
    }

    async fn declare_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()> {
        self.mark_repo_images(repo, ids, legacy_repo_images::Column::Declared)
            .await
    }

    async fn reference_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()> {
        self.mark_repo_images(repo, ids, legacy_repo_images::Column::Referenced)
            .await
    }

    async fn v1_references(&self, repo: &RepoName, id: &str) -> MetaResult<bool> {
        Ok(
            legacy_repo_images::Entity::find_by_id((repo.to_string(), id.to_string()))
                .one(&self.db)
                .await?
                .is_some_and(|m| m.referenced),
        )
    }

    async fn v1_repo_images(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>> {
        let mut q = legacy_repo_images::Entity::find()
            .select_only()
            .column(legacy_repo_images::Column::Image)
            .filter(legacy_repo_images::Column::Repo.eq(repo.as_str()));
        if let Some(after) = after {
            q = q.filter(legacy_repo_images::Column::Image.gt(after));
        }
        Ok(q.order_by_asc(legacy_repo_images::Column::Image)
            .limit(limit as u64)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    async fn v1_image_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>> {
        self.image_repos(id, legacy_repo_images::Column::Referenced, limit)
            .await
    }

    async fn v1_declaring_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>> {
        self.image_repos(id, legacy_repo_images::Column::Declared, limit)
            .await
    }

    async fn forget_v1_repo(&self, repo: &RepoName) -> MetaResult<()> {
        let _w = self.write_guard().await;
        legacy_repo_images::Entity::delete_many()
            .filter(legacy_repo_images::Column::Repo.eq(repo.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    async fn search_repos(
        &self,
        query: &str,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<RepoMatch>> {
        // `!` escapes the pattern characters, on every backend alike.
        let mut pattern = String::from("%");
        for c in query.chars() {
            if matches!(c, '%' | '_' | '!') {
                pattern.push('!');
            }
            pattern.push(c);
        }
        pattern.push('%');
        let like = || LikeExpr::new(pattern.clone()).escape('!');
        let mut q = repositories::Entity::find()
            .select_only()
            .column(repositories::Column::Name)
            .column(repositories::Column::Comment)
            .filter(
                Condition::any()
                    .add(Expr::col(repositories::Column::Name).like(like()))
                    .add(
                        Expr::expr(Func::lower(Expr::col(repositories::Column::Comment)))
                            .like(like()),
                    ),
            );
        if let Some(after) = after {
            q = q.filter(repositories::Column::Name.gt(after));
        }
        let rows: Vec<(String, Option<String>)> = q
            .order_by_asc(repositories::Column::Name)
            .limit(limit as u64)
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(name, comment)| {
                Ok(RepoMatch {
                    name: name
                        .parse()
                        .map_err(|e| MetaError::Corrupt(format!("repository {name:?}: {e}")))?,
                    comment,
                })
            })
            .collect()
    }
}
