//! `MetaStore` on SQL databases through sea-orm: SQLite, MySQL/MariaDB and
//! PostgreSQL, with queries built by sea-query so every backend shares them.
//!
//! Concurrency. SQLite has one writer: write transactions are serialized
//! in-process (`write_guard`). On MySQL and PostgreSQL transactions run at
//! READ COMMITTED (set per connection on MySQL, whose default is REPEATABLE
//! READ) and concurrent writers are kept correct by the database:
//!
//! - every write to a repository's content first locks its `repositories`
//!   row (inserting it if needed), so content writes to one repository, and
//!   `delete_repo`, take turns;
//! - checks that guard an insert (a blob linked, an organisation or team
//!   existing, a user being a member) read with `FOR SHARE`, so the rows
//!   checked cannot be deleted before the transaction ends;
//! - uniqueness is a key, not a check: when two transactions insert the same
//!   key, the loser fails with a unique violation, and `write_txn!` runs it
//!   again, when its check sees the winner's row and refuses (`Exists`).
//!   Deadlocks and serialization failures are retried the same way.
//!
//! On SQLite the lock clauses are left out (sea-query writes none) and the
//! statements are those of the single-writer design.

/// Runs `$body`, an expression of type `Result<Result<T, E>, DbErr>` using
/// the transaction `$t`, in a write transaction; commits if it gives
/// `Ok(Ok(_))`, rolls back otherwise. When the transaction loses a race with
/// another (see [`is_conflict`]), it is run again, up to `ATTEMPTS` times.
/// Evaluates to `MetaResult<Result<T, E>>`.
macro_rules! write_txn {
    ($meta:expr, |$t:ident| $body:expr) => {{
        let meta: &$crate::meta::sql::SqlMeta = $meta;
        let mut attempt = 1;
        loop {
            let guard = meta.write_guard().await;
            let $t = meta.db.begin().await?;
            let r = $crate::meta::sql::txn_body(async { $body }).await;
            let r = match r {
                Ok(Ok(v)) => $t.commit().await.map(|()| Ok(v)),
                Ok(Err(e)) => $t.rollback().await.map(|()| Err(e)),
                Err(e) => {
                    $t.rollback().await.ok();
                    Err(e)
                }
            };
            drop(guard);
            match r {
                Err(e)
                    if attempt < $crate::meta::sql::ATTEMPTS
                        && $crate::meta::sql::is_conflict(&e) =>
                {
                    $crate::meta::sql::backoff(attempt).await;
                    attempt += 1;
                }
                r => break r.map_err($crate::meta::MetaError::from),
            }
        }
    }};
}

mod accounts;
mod aci;
mod entity;
mod legacy;

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, RuntimeErr, SqlErr,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use tokio::sync::Mutex;

use self::entity::{blobs, manifest_refs, manifests, repo_blobs, repositories, tags};
use super::{ContentStore, ManifestRecord, MetaError, MetaResult, MissingRefs, Referrer};
use crate::migrations::Migrator;
use crate::registry::digest::Digest;
use crate::registry::name::{RepoName, Tag};

/// How many times a write transaction runs before a conflict is an error.
const ATTEMPTS: u32 = 10;

/// True if `e` means the transaction lost a race with a concurrent one, so
/// that running it again will see the winner's work: a key another
/// transaction inserted meanwhile, a deadlock (MySQL 1213 is SQLSTATE
/// 40001, PostgreSQL's is 40P01) or a serialization failure (40001).
fn is_conflict(e: &DbErr) -> bool {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = e.sql_err() {
        return true;
    }
    if let DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) = e
        && let sea_orm::sqlx::Error::Database(d) = &**e
    {
        return matches!(d.code().as_deref(), Some("40001" | "40P01"));
    }
    false
}

/// A short, jittered pause before running a transaction again.
async fn backoff(attempt: u32) {
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 2000)
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_micros(
        u64::from(attempt) * 1000 + u64::from(jitter),
    ))
    .await;
}

/// Pins down the type of a `write_txn!` body.
fn txn_body<T, F: Future<Output = Result<T, DbErr>>>(f: F) -> F {
    f
}

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
            })
            .map_sqlx_mysql_pool_opts(|o| {
                // PostgreSQL's default; REPEATABLE READ's gap locks would
                // make concurrent inserts deadlock.
                o.after_connect(|conn, _| {
                    Box::pin(async move {
                        use sea_orm::sqlx::Executor;
                        conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                            .await?;
                        Ok(())
                    })
                })
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

/// `ON CONFLICT DO NOTHING` on `cols`, the primary key (MySQL has no such
/// clause: `ON DUPLICATE KEY UPDATE` of the first key column to itself).
fn do_nothing<C: sea_orm::sea_query::IntoIden + Copy>(cols: &[C]) -> OnConflict {
    OnConflict::columns(cols.iter().copied())
        .do_nothing_on(cols.iter().copied().take(1))
        .to_owned()
}

/// Creates the repository row if needed and, on server backends, locks it
/// until the transaction ends: every content write to a repository goes
/// through here first, so they and `delete_repo` take turns.
async fn ensure_repo(c: &impl ConnectionTrait, repo: &RepoName, at: i64) -> Result<(), DbErr> {
    let name = repositories::Column::Name;
    let on_conflict = match c.get_database_backend() {
        // One writer at a time anyway.
        DbBackend::Sqlite => OnConflict::column(name).do_nothing().to_owned(),
        // The row is locked even though the update never applies.
        DbBackend::Postgres => OnConflict::column(name)
            .update_column(name)
            .action_and_where(Expr::cust("FALSE"))
            .to_owned(),
        // `name = name` locks the row.
        _ => do_nothing(&[name]),
    };
    repositories::Entity::insert(repositories::ActiveModel {
        name: Set(repo.as_str().to_string()),
        namespace: Set(repo.namespace().to_string()),
        is_public: Set(false),
        comment: Set(None),
        created_at: Set(at),
    })
    .on_conflict(on_conflict)
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
        let r = write_txn!(self, |txn| {
            ensure_repo(&txn, repo, at).await?;
            blobs::Entity::insert(blobs::ActiveModel {
                digest: Set(digest.to_string()),
                size: Set(size as i64),
                created_at: Set(at),
            })
            .on_conflict(do_nothing(&[blobs::Column::Digest]))
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
            Ok(Ok::<(), Infallible>(()))
        });
        r.map(|Ok(())| ())
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
        let r = write_txn!(self, |txn| {
            // First, so that pushes to one repository take turns (see the
            // module comment); rolled back with the rest if refused.
            ensure_repo(&txn, repo, at).await?;

            // The references found are locked (`FOR SHARE`) until commit,
            // so they cannot go away before the manifest is stored.
            let mut missing = MissingRefs::default();
            if !m.blob_refs.is_empty() {
                let found: HashSet<String> = repo_blobs::Entity::find()
                    .select_only()
                    .column(repo_blobs::Column::Digest)
                    .filter(repo_blobs::Column::Repo.eq(repo_s.clone()))
                    .filter(
                        repo_blobs::Column::Digest.is_in(m.blob_refs.iter().map(|d| d.to_string())),
                    )
                    .lock_shared()
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
                        manifests::Column::Digest
                            .is_in(m.manifest_refs.iter().map(|d| d.to_string())),
                    )
                    .lock_shared()
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
                return Ok(Err(missing));
            }

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
            .on_conflict(do_nothing(&[
                manifests::Column::Repo,
                manifests::Column::Digest,
            ]))
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
                    .on_conflict(do_nothing(&[
                        manifest_refs::Column::Repo,
                        manifest_refs::Column::Manifest,
                        manifest_refs::Column::Target,
                    ]))
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
            Ok(Ok(()))
        });
        r.map(|r| r.err().unwrap_or_default())
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
        let r = write_txn!(self, |txn| {
            let r =
                manifests::Entity::delete_by_id((repo.as_str().to_string(), digest.to_string()))
                    .exec(&txn)
                    .await?;
            if r.rows_affected == 0 {
                return Ok(Err(()));
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
            Ok(Ok(()))
        });
        r.map(|r| r.is_ok())
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
        let r = write_txn!(self, |txn| {
            let referenced = manifest_refs::Entity::find()
                .filter(manifest_refs::Column::Target.eq(digest.as_str()))
                .one(&txn)
                .await?
                .is_some();
            if referenced {
                return Ok(Err(()));
            }
            repo_blobs::Entity::delete_many()
                .filter(repo_blobs::Column::Digest.eq(digest.as_str()))
                .exec(&txn)
                .await?;
            blobs::Entity::delete_by_id(digest.as_str())
                .exec(&txn)
                .await?;
            Ok(Ok(()))
        });
        r.map(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database};
    use sea_orm_migration::MigratorTrait;

    use super::SqlMeta;
    use crate::meta::accounts::{AccountStore, NamespaceKind, Refusal};
    use crate::meta::contract::databases::{FreshDb, Server};
    use crate::migrations::Migrator;

    /// A database made before the `namespaces` table: its users and
    /// organisations keep their names.
    async fn upgrade_keeps_names(uri: &str) {
        let db = Database::connect(uri).await.expect("connect");
        Migrator::up(&db, Some(2))
            .await
            .expect("first two migrations");
        for sql in [
            "INSERT INTO users (name, email, password_hash, realname, comment, role, source, \
             created_at, updated_at) VALUES ('olduser', NULL, '', NULL, NULL, 2, 'db', 1, 1)",
            "INSERT INTO organizations (name, email, comment, url, location, member_privilege, \
             created_at) VALUES ('oldorg', NULL, NULL, NULL, NULL, 3, 1)",
        ] {
            db.execute_unprepared(sql).await.expect(sql);
        }
        db.close().await.ok();

        let store = SqlMeta::open(uri, 2).await.expect("open and migrate");
        assert_eq!(
            store.namespace_kind("olduser").await.unwrap(),
            Some(NamespaceKind::User)
        );
        assert_eq!(
            store.namespace_kind("oldorg").await.unwrap(),
            Some(NamespaceKind::Organization)
        );
        let mut u = store.user("olduser").await.unwrap().expect("user kept");
        u.name = "oldorg".into();
        assert!(matches!(
            store.create_user(&u).await.unwrap(),
            Err(Refusal::Exists(_))
        ));
        u.name = "olduser".into();
        assert!(matches!(
            store.create_user(&u).await.unwrap(),
            Err(Refusal::Exists(_))
        ));
        assert_eq!(store.delete_user("olduser").await.unwrap(), Ok(()));
        assert_eq!(store.namespace_kind("olduser").await.unwrap(), None);
    }

    #[tokio::test]
    async fn upgrade_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
        upgrade_keeps_names(&uri).await;
    }

    #[tokio::test]
    async fn upgrade_mariadb() {
        let db = FreshDb::create(Server::MariaDb).await;
        upgrade_keeps_names(&db.url).await;
        db.drop().await;
    }

    #[tokio::test]
    async fn upgrade_postgres() {
        let db = FreshDb::create(Server::Postgres).await;
        upgrade_keeps_names(&db.url).await;
        db.drop().await;
    }
}
