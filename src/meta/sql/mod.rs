//! `MetaStore` on SQL databases through sea-orm (SQLite now; the queries are
//! built with sea-query so other backends share them).

mod accounts;
mod entity;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::Mutex;

use self::entity::{blobs, manifest_refs, manifests, repo_blobs, repositories, tags};
use super::{ContentStore, ManifestRecord, MetaError, MetaResult, MissingRefs, Referrer};
use crate::migrations::Migrator;
use crate::registry::digest::Digest;
use crate::registry::name::{RepoName, Tag};

pub struct SqlMeta {
    db: DatabaseConnection,
    /// SQLite allows one writer; serializing write transactions here keeps
    /// them from failing with "database is locked" on lock upgrades.
    write_lock: Option<Mutex<()>>,
}

impl From<DbErr> for MetaError {
    fn from(e: DbErr) -> Self {
        MetaError::Backend(e.to_string())
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn parse_digest(s: &str) -> MetaResult<Digest> {
    s.parse()
        .map_err(|e| MetaError::Corrupt(format!("stored digest {s:?}: {e}")))
}

impl SqlMeta {
    /// Connects to the database at `uri` (`sqlite://`, `mysql://` or
    /// `postgres://`; an SQLite file is created if needed) and applies
    /// pending migrations.
    pub async fn open(uri: &str, max_connections: u32) -> MetaResult<SqlMeta> {
        let sqlite = uri.starts_with("sqlite:");
        if let Some(path) = uri
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| MetaError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let mut opts = ConnectOptions::new(uri.to_string());
        opts.max_connections(max_connections)
            .min_connections(1)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
                // WAL lets readers run beside the writer; FULL makes every
                // commit durable before it is acknowledged.
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    // 1 MiB of page cache per connection keeps memory small;
                    // the hot reads are served by the metadata cache anyway.
                    .pragma("cache_size", "-1024")
                    .foreign_keys(false)
            });
        let db = Database::connect(opts).await?;
        Migrator::up(&db, None).await?;
        Ok(SqlMeta {
            db,
            write_lock: sqlite.then(|| Mutex::new(())),
        })
    }

    /// True if this is an embedded database only this process writes.
    pub fn is_embedded(&self) -> bool {
        self.write_lock.is_some()
    }

    async fn write_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_lock {
            Some(m) => Some(m.lock().await),
            None => None,
        }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }
}

/// `INSERT ... ON CONFLICT DO NOTHING` for the repository row.
async fn ensure_repo(c: &impl ConnectionTrait, repo: &RepoName, at: i64) -> Result<(), DbErr> {
    repositories::Entity::insert(repositories::ActiveModel {
        name: Set(repo.as_str().to_string()),
        namespace: Set(repo.namespace().to_string()),
        is_public: Set(false),
        comment: Set(None),
        created_at: Set(at),
    })
    .on_conflict(
        OnConflict::column(repositories::Column::Name)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

#[async_trait]
impl ContentStore for SqlMeta {
    async fn repo_exists(&self, repo: &RepoName) -> MetaResult<bool> {
        Ok(repositories::Entity::find_by_id(repo.as_str())
            .one(&self.db)
            .await?
            .is_some())
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<Option<u64>> {
        let linked =
            repo_blobs::Entity::find_by_id((repo.as_str().to_string(), digest.to_string()))
                .one(&self.db)
                .await?;
        if linked.is_none() {
            return Ok(None);
        }
        self.blob_size(digest).await
    }

    async fn blob_size(&self, digest: &Digest) -> MetaResult<Option<u64>> {
        Ok(blobs::Entity::find_by_id(digest.as_str())
            .one(&self.db)
            .await?
            .map(|b| b.size as u64))
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> MetaResult<()> {
        let at = now();
        let _w = self.write_guard().await;
        let txn = self.db.begin().await?;
        ensure_repo(&txn, repo, at).await?;
        blobs::Entity::insert(blobs::ActiveModel {
            digest: Set(digest.to_string()),
            size: Set(size as i64),
            created_at: Set(at),
        })
        .on_conflict(
            OnConflict::column(blobs::Column::Digest)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        repo_blobs::Entity::insert(repo_blobs::ActiveModel {
            repo: Set(repo.as_str().to_string()),
            digest: Set(digest.to_string()),
            created_at: Set(at),
        })
        .on_conflict(
            OnConflict::columns([repo_blobs::Column::Repo, repo_blobs::Column::Digest])
                // A fresh link restarts the garbage collector's grace period.
                .update_column(repo_blobs::Column::CreatedAt)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool> {
        let _w = self.write_guard().await;
        let r = repo_blobs::Entity::delete_by_id((repo.as_str().to_string(), digest.to_string()))
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected > 0)
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> MetaResult<MissingRefs> {
        let at = now();
        let repo_s = repo.as_str().to_string();
        let _w = self.write_guard().await;
        let txn = self.db.begin().await?;

        let mut missing = MissingRefs::default();
        if !m.blob_refs.is_empty() {
            let found: HashSet<String> = repo_blobs::Entity::find()
                .select_only()
                .column(repo_blobs::Column::Digest)
                .filter(repo_blobs::Column::Repo.eq(repo_s.clone()))
                .filter(repo_blobs::Column::Digest.is_in(m.blob_refs.iter().map(|d| d.to_string())))
                .into_tuple::<String>()
                .all(&txn)
                .await?
                .into_iter()
                .collect();
            missing.blobs = m
                .blob_refs
                .iter()
                .filter(|d| !found.contains(d.as_str()))
                .cloned()
                .collect();
        }
        if !m.manifest_refs.is_empty() {
            let found: HashSet<String> = manifests::Entity::find()
                .select_only()
                .column(manifests::Column::Digest)
                .filter(manifests::Column::Repo.eq(repo_s.clone()))
                .filter(
                    manifests::Column::Digest.is_in(m.manifest_refs.iter().map(|d| d.to_string())),
                )
                .into_tuple::<String>()
                .all(&txn)
                .await?
                .into_iter()
                .collect();
            missing.manifests = m
                .manifest_refs
                .iter()
                .filter(|d| !found.contains(d.as_str()))
                .cloned()
                .collect();
        }
        if !missing.is_empty() {
            txn.rollback().await?;
            return Ok(missing);
        }

        ensure_repo(&txn, repo, at).await?;
        manifests::Entity::insert(manifests::ActiveModel {
            repo: Set(repo_s.clone()),
            digest: Set(m.digest.to_string()),
            media_type: Set(m.media_type.clone()),
            body: Set(m.body.to_vec()),
            size: Set(m.body.len() as i64),
            subject: Set(m.subject.as_ref().map(|d| d.to_string())),
            artifact_type: Set(m.artifact_type.clone()),
            annotations: Set(m.annotations.clone()),
            created_at: Set(at),
        })
        .on_conflict(
            OnConflict::columns([manifests::Column::Repo, manifests::Column::Digest])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;

        let mut seen = HashSet::new();
        let refs: Vec<manifest_refs::ActiveModel> = m
            .blob_refs
            .iter()
            .map(|d| (d, false))
            .chain(m.manifest_refs.iter().map(|d| (d, true)))
            .filter(|(d, _)| seen.insert(d.as_str()))
            .map(|(d, is_manifest)| manifest_refs::ActiveModel {
                repo: Set(repo_s.clone()),
                manifest: Set(m.digest.to_string()),
                target: Set(d.to_string()),
                is_manifest: Set(is_manifest),
            })
            .collect();
        // Batches stay well under every backend's bound-parameter limit.
        for batch in refs.chunks(500) {
            manifest_refs::Entity::insert_many(batch.to_vec())
                .on_conflict(
                    OnConflict::columns([
                        manifest_refs::Column::Repo,
                        manifest_refs::Column::Manifest,
                        manifest_refs::Column::Target,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }

        if let Some(tag) = tag {
            tags::Entity::insert(tags::ActiveModel {
                repo: Set(repo_s.clone()),
                name: Set(tag.as_str().to_string()),
                digest: Set(m.digest.to_string()),
                updated_at: Set(at),
            })
            .on_conflict(
                OnConflict::columns([tags::Column::Repo, tags::Column::Name])
                    .update_columns([tags::Column::Digest, tags::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(missing)
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> MetaResult<Option<(String, Bytes)>> {
        let row: Option<(String, Vec<u8>)> = manifests::Entity::find()
            .select_only()
            .column(manifests::Column::MediaType)
            .column(manifests::Column::Body)
            .filter(manifests::Column::Repo.eq(repo.as_str()))
            .filter(manifests::Column::Digest.eq(digest.as_str()))
            .into_tuple()
            .one(&self.db)
            .await?;
        Ok(row.map(|(mt, body)| (mt, Bytes::from(body))))
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> MetaResult<Option<(Digest, String, Bytes)>> {
        let q = Query::select()
            .columns([
                (manifests::Entity, manifests::Column::Digest),
                (manifests::Entity, manifests::Column::MediaType),
                (manifests::Entity, manifests::Column::Body),
            ])
            .from(tags::Entity)
            .inner_join(
                manifests::Entity,
                Expr::col((manifests::Entity, manifests::Column::Repo))
                    .equals((tags::Entity, tags::Column::Repo))
                    .and(
                        Expr::col((manifests::Entity, manifests::Column::Digest))
                            .equals((tags::Entity, tags::Column::Digest)),
                    ),
            )
            .and_where(Expr::col((tags::Entity, tags::Column::Repo)).eq(repo.as_str()))
            .and_where(Expr::col((tags::Entity, tags::Column::Name)).eq(tag.as_str()))
            .to_owned();
        let Some(row) = self.db.query_one_raw(self.backend().build(&q)).await? else {
            return Ok(None);
        };
        let digest: String = row.try_get("", "digest")?;
        let media_type: String = row.try_get("", "media_type")?;
        let body: Vec<u8> = row.try_get("", "body")?;
        Ok(Some((
            parse_digest(&digest)?,
            media_type,
            Bytes::from(body),
        )))
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool> {
        let _w = self.write_guard().await;
        let txn = self.db.begin().await?;
        let r = manifests::Entity::delete_by_id((repo.as_str().to_string(), digest.to_string()))
            .exec(&txn)
            .await?;
        if r.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        manifest_refs::Entity::delete_many()
            .filter(manifest_refs::Column::Repo.eq(repo.as_str()))
            .filter(manifest_refs::Column::Manifest.eq(digest.as_str()))
            .exec(&txn)
            .await?;
        tags::Entity::delete_many()
            .filter(tags::Column::Repo.eq(repo.as_str()))
            .filter(tags::Column::Digest.eq(digest.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> MetaResult<bool> {
        let _w = self.write_guard().await;
        let r = tags::Entity::delete_by_id((repo.as_str().to_string(), tag.as_str().to_string()))
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected > 0)
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>> {
        let mut q = tags::Entity::find()
            .select_only()
            .column(tags::Column::Name)
            .filter(tags::Column::Repo.eq(repo.as_str()));
        if let Some(last) = last {
            q = q.filter(tags::Column::Name.gt(last));
        }
        Ok(q.order_by_asc(tags::Column::Name)
            .limit(limit as u64)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    async fn list_repos(&self, last: Option<&str>, limit: u32) -> MetaResult<Vec<String>> {
        let mut q = repositories::Entity::find()
            .select_only()
            .column(repositories::Column::Name);
        if let Some(last) = last {
            q = q.filter(repositories::Column::Name.gt(last));
        }
        Ok(q.order_by_asc(repositories::Column::Name)
            .limit(limit as u64)
            .into_tuple::<String>()
            .all(&self.db)
            .await?)
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: u32,
    ) -> MetaResult<Vec<Referrer>> {
        let mut q = manifests::Entity::find()
            .select_only()
            .column(manifests::Column::Digest)
            .column(manifests::Column::MediaType)
            .column(manifests::Column::Size)
            .column(manifests::Column::ArtifactType)
            .column(manifests::Column::Annotations)
            .filter(manifests::Column::Repo.eq(repo.as_str()))
            .filter(manifests::Column::Subject.eq(subject.as_str()));
        if let Some(t) = artifact_type {
            q = q.filter(manifests::Column::ArtifactType.eq(t));
        }
        if let Some(after) = after {
            q = q.filter(manifests::Column::Digest.gt(after.as_str()));
        }
        let rows: Vec<(String, String, i64, Option<String>, Option<String>)> = q
            .order_by_asc(manifests::Column::Digest)
            .limit(limit as u64)
            .into_tuple()
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|(digest, media_type, size, artifact_type, annotations)| {
                Ok(Referrer {
                    digest: parse_digest(&digest)?,
                    media_type,
                    size: size as u64,
                    artifact_type,
                    annotations,
                })
            })
            .collect()
    }

    async fn gc_candidates(
        &self,
        before: i64,
        after: Option<&Digest>,
        limit: u32,
    ) -> MetaResult<Vec<(Digest, u64)>> {
        let referenced = Query::select()
            .expr(Expr::val(1))
            .from(manifest_refs::Entity)
            .and_where(
                Expr::col((manifest_refs::Entity, manifest_refs::Column::Target))
                    .equals((blobs::Entity, blobs::Column::Digest)),
            )
            .to_owned();
        let recently_linked = Query::select()
            .expr(Expr::val(1))
            .from(repo_blobs::Entity)
            .and_where(
                Expr::col((repo_blobs::Entity, repo_blobs::Column::Digest))
                    .equals((blobs::Entity, blobs::Column::Digest)),
            )
            .and_where(Expr::col((repo_blobs::Entity, repo_blobs::Column::CreatedAt)).gt(before))
            .to_owned();
        let mut q = Query::select()
            .columns([
                (blobs::Entity, blobs::Column::Digest),
                (blobs::Entity, blobs::Column::Size),
            ])
            .from(blobs::Entity)
            .and_where(Expr::col((blobs::Entity, blobs::Column::CreatedAt)).lte(before))
            .and_where(Expr::exists(referenced).not())
            .and_where(Expr::exists(recently_linked).not())
            .order_by((blobs::Entity, blobs::Column::Digest), sea_orm::Order::Asc)
            .limit(limit as u64)
            .to_owned();
        if let Some(after) = after {
            q.and_where(Expr::col((blobs::Entity, blobs::Column::Digest)).gt(after.as_str()));
        }
        let rows = self.db.query_all_raw(self.backend().build(&q)).await?;
        rows.into_iter()
            .map(|row| {
                let digest: String = row.try_get("", "digest")?;
                let size: i64 = row.try_get("", "size")?;
                Ok((parse_digest(&digest)?, size as u64))
            })
            .collect()
    }

    async fn forget_blob(&self, digest: &Digest) -> MetaResult<bool> {
        let _w = self.write_guard().await;
        let txn = self.db.begin().await?;
        let referenced = manifest_refs::Entity::find()
            .filter(manifest_refs::Column::Target.eq(digest.as_str()))
            .one(&txn)
            .await?
            .is_some();
        if referenced {
            txn.rollback().await?;
            return Ok(false);
        }
        repo_blobs::Entity::delete_many()
            .filter(repo_blobs::Column::Digest.eq(digest.as_str()))
            .exec(&txn)
            .await?;
        blobs::Entity::delete_by_id(digest.as_str())
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(true)
    }
}
