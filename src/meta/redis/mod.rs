//! `MetaStore` on Redis (6.2 or later): the same semantics as `sql`, kept
//! in plain Redis data structures under one key prefix.
//!
//! Every change that touches more than one key, or that must check before
//! it writes, is one Lua script (`scripts.rs`), which Redis runs atomically:
//! a script is the transaction of the SQL implementation it mirrors. Reads
//! of one key are plain commands; reads that follow a pointer (repository
//! id, tag to manifest) are small read-only scripts, so they too see one
//! state. Nothing on a request path scans the key space (no `KEYS`, no
//! `SCAN`); listings are `ZRANGEBYLEX`/`ZREVRANGEBYSCORE` with `LIMIT`.
//!
//! # Key layout
//!
//! `P` is the prefix (`[db] prefix`). `{x}` is a name or digest as is;
//! `{esc x}` is the same with `%` and `:` percent-encoded, used for every
//! variable part that is not the last one of its key, so no two keys of
//! different kinds or owners can coincide. Sorted sets marked "lex" have
//! score 0 and are read in byte order with `ZRANGEBYLEX`.
//!
//! Repository content is kept under the repository's *id*, a number drawn
//! from `P:seq:repo` when the repository record is made. Deleting a
//! repository removes its record at once (one script) and leaves the
//! content under the old id to be drained in bounded steps (`drain`), so a
//! repository of any size is deleted without one long script; a new
//! repository of the same name gets a new id and never sees the old
//! content. Until a dead id is drained its references still count, which
//! only makes the garbage collector keep more; `gc_candidates` drains first.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `P:repos` | zset lex | catalog: every repository name |
//! | `P:repo:{name}` | hash | `name`, `id`, `ns` (namespace), `pub` (0/1), `comment`?, `at` (created) |
//! | `P:ns:{namespace}` | zset lex | repository names in a namespace |
//! | `P:seq:repo` | counter | last repository id |
//! | `P:trash` | set | ids of deleted repositories not yet drained |
//! | `P:r:{id}:blobs` | hash | blob digest → time linked (the repository's blob links) |
//! | `P:r:{id}:manifests` | set | manifest digests |
//! | `P:r:{id}:m:{digest}` | hash | `mt`, `body`, `size`, `at`, `subject`?, `atype`?, `ann`? |
//! | `P:r:{id}:mref:{digest}` | set | blobs and manifests the manifest names |
//! | `P:r:{id}:mtags:{digest}` | set | tags pointing at the manifest |
//! | `P:r:{id}:tags` | zset lex | tag names |
//! | `P:r:{id}:tag` | hash | tag → manifest digest |
//! | `P:r:{id}:ref:{subject}` | zset lex | digests of manifests whose subject is `subject` |
//! | `P:r:{id}:reft:{esc subject}:{artifact type}` | zset lex | the same, of one artifact type |
//! | `P:blobs` | zset lex | every known blob digest (walked by `gc_candidates`) |
//! | `P:blob:{digest}` | hash | `size`, `at` (first linked) |
//! | `P:blob_links:{digest}` | hash | repository id → time linked (reverse of `r:{id}:blobs`) |
//! | `P:refs` | hash | digest → number of manifests naming it (absent when 0) |
//! | `P:users` | zset lex | user names |
//! | `P:user:{name}` | hash | `name`, `email`?, `pw`, `realname`?, `comment`?, `role`, `source`, `created`, `updated` |
//! | `P:admins` | set | names of system administrators |
//! | `P:orgs` | zset lex | organisation names |
//! | `P:org:{name}` | hash | `name`, `email`?, `comment`?, `url`?, `location`?, `priv`, `created` |
//! | `P:org_members:{org}` | hash | user → org role |
//! | `P:user_orgs:{user}` | hash | org → org role (reverse) |
//! | `P:teams:{org}` | hash | team → comment (`-` none, `+text`) |
//! | `P:team_members:{esc org}:{team}` | hash | user → team role |
//! | `P:user_teams:{esc org}:{user}` | hash | team → team role (reverse) |
//! | `P:team_repos:{esc org}:{team}` | hash | repository → permit |
//! | `P:repo_permits:{repo}` | hash | `{esc org}:{team}` → permit (reverse, for `team_permits`) |
//! | `P:token:{id}` | hash | `id`, `user`, `name`, `secret`, `scopes` (JSON), `created`, `expires`? |
//! | `P:user_tokens:{user}` | hash | token id → creation sequence number |
//! | `P:seq:token` | counter | token creation sequence |
//! | `P:audit:seq` | counter | last audit event id |
//! | `P:audit:ev` | hash | event id → event (JSON) |
//! | `P:audit:ids` | zset | event ids (score = id) |
//! | `P:audit:at` | zset | event ids by time (score = `at`), for pruning |
//! | `P:audit:actor:{actor}`, `P:audit:repo:{repo}`, `P:audit:action:{action}` | zset | event ids (score = id) |
//!
//! The scripts build keys from the prefix they are given rather than
//! declaring them, which standalone Redis allows; on a cluster all keys
//! would have to share a slot (a prefix such as `{dockyard}`).
//!
//! # Running it
//!
//! Redis is the only copy of the metadata, so the server must keep it:
//! `maxmemory-policy noeviction` (`open` warns otherwise) and AOF
//! persistence (`appendonly yes`; `appendfsync always` for the durability
//! of an SQL commit, `everysec` to lose at most a second on a crash).

// Until `server::open_meta` constructs it, only the tests do.

mod accounts;
mod aci;
mod legacy;
mod scripts;
#[cfg(test)]
mod tests;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use self::scripts::Scripts;
use super::{ContentStore, ManifestRecord, MetaError, MetaResult, MissingRefs, Referrer};
use crate::registry::digest::Digest;
use crate::registry::name::{RepoName, Tag};

/// How many manifests and blob links one `drain` step removes.
const DRAIN_BATCH: u32 = 200;
/// How many blobs one `gc_scan` step examines.
const GC_BATCH: u32 = 1000;

pub struct RedisMeta {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
}

impl From<redis::RedisError> for MetaError {
    fn from(e: redis::RedisError) -> Self {
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

/// Percent-encodes `%` and `:` (as the scripts' `esc`), for a variable key
/// part that is followed by another.
fn esc(s: &str) -> String {
    s.replace('%', "%25").replace(':', "%3A")
}

/// The start of a `ZRANGEBYLEX` range: everything, or after `last`.
fn lex_after(last: Option<&str>) -> String {
    match last {
        Some(l) => format!("({l}"),
        None => "-".to_string(),
    }
}

impl RedisMeta {
    /// Connects to the Redis server at `uri` (`redis://host:port/db`);
    /// every key this store uses starts with `{prefix}:`. The connection
    /// is re-established by itself after a failure.
    pub async fn open(uri: &str, prefix: &str) -> MetaResult<RedisMeta> {
        let client = redis::Client::open(uri)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            // Long enough for a big manifest or a deep cascade under load;
            // a timed-out change may still have been applied.
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        let meta = RedisMeta {
            conn,
            prefix: prefix.to_string(),
            scripts: Scripts::new(),
        };
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut meta.conn.clone())
            .await?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("")
            .trim()
            .to_string();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (6, 2) {
            return Err(MetaError::Backend(format!(
                "Redis {version:?} is too old: 6.2 or later is needed"
            )));
        }
        // Evicted keys would be lost metadata. Best effort: managed servers
        // may refuse CONFIG.
        let policy: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut meta.conn())
            .await;
        if let Ok(v) = policy
            && let Some(policy) = v.get(1)
            && policy != "noeviction"
        {
            tracing::warn!(
                %policy,
                "Redis may evict keys under memory pressure: set maxmemory-policy to noeviction, or metadata can be lost"
            );
        }
        Ok(meta)
    }

    /// `P:<rest>`.
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// An invocation of `script` with the prefix as its first argument.
    fn script<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix);
        inv
    }

    async fn run<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> MetaResult<T> {
        Ok(inv.invoke_async(&mut self.conn()).await?)
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> MetaResult<T> {
        Ok(cmd.query_async(&mut self.conn()).await?)
    }

    /// Removes what is left of a deleted repository, in bounded steps.
    async fn drain(&self, id: &str) -> MetaResult<()> {
        loop {
            let mut inv = self.script(&self.scripts.drain);
            inv.arg(id).arg(DRAIN_BATCH);
            let done: i64 = self.run(&inv).await?;
            if done == 1 {
                return Ok(());
            }
        }
    }

    /// Drains every deleted repository (normally none).
    async fn drain_all(&self) -> MetaResult<()> {
        let ids: Vec<String> = self
            .query(redis::cmd("SMEMBERS").arg(self.key("trash")))
            .await?;
        for id in ids {
            self.drain(&id).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl ContentStore for RedisMeta {
    async fn repo_exists(&self, repo: &RepoName) -> MetaResult<bool> {
        self.query(redis::cmd("EXISTS").arg(self.key(&format!("repo:{repo}"))))
            .await
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<Option<u64>> {
        let mut inv = self.script(&self.scripts.repo_blob);
        inv.arg(repo.as_str()).arg(digest.as_str());
        self.run(&inv).await
    }

    async fn blob_size(&self, digest: &Digest) -> MetaResult<Option<u64>> {
        self.query(
            redis::cmd("HGET")
                .arg(self.key(&format!("blob:{digest}")))
                .arg("size"),
        )
        .await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> MetaResult<()> {
        let mut inv = self.script(&self.scripts.link_blob);
        inv.arg(now())
            .arg(repo.as_str())
            .arg(repo.namespace())
            .arg(digest.as_str())
            .arg(size);
        let _: i64 = self.run(&inv).await?;
        Ok(())
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool> {
        let mut inv = self.script(&self.scripts.unlink_blob);
        inv.arg(repo.as_str()).arg(digest.as_str());
        self.run(&inv).await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> MetaResult<MissingRefs> {
        let mut inv = self.script(&self.scripts.put_manifest);
        inv.arg(now())
            .arg(repo.as_str())
            .arg(repo.namespace())
            .arg(m.digest.as_str())
            .arg(&m.media_type)
            .arg(m.body.as_ref())
            .arg(m.subject.as_ref().map_or("", |d| d.as_str()))
            .arg(if m.artifact_type.is_some() { "1" } else { "0" })
            .arg(m.artifact_type.as_deref().unwrap_or(""))
            .arg(if m.annotations.is_some() { "1" } else { "0" })
            .arg(m.annotations.as_deref().unwrap_or(""))
            .arg(tag.map_or("", |t| t.as_str()))
            .arg(m.blob_refs.len());
        for d in &m.blob_refs {
            inv.arg(d.as_str());
        }
        inv.arg(m.manifest_refs.len());
        for d in &m.manifest_refs {
            inv.arg(d.as_str());
        }
        let (blobs, manifests): (Vec<String>, Vec<String>) = self.run(&inv).await?;
        Ok(MissingRefs {
            blobs: blobs
                .iter()
                .map(|d| parse_digest(d))
                .collect::<MetaResult<_>>()?,
            manifests: manifests
                .iter()
                .map(|d| parse_digest(d))
                .collect::<MetaResult<_>>()?,
        })
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> MetaResult<Option<(String, Bytes)>> {
        let mut inv = self.script(&self.scripts.manifest_by_digest);
        inv.arg(repo.as_str()).arg(digest.as_str());
        let r: Option<(String, Vec<u8>)> = self.run(&inv).await?;
        Ok(r.map(|(mt, body)| (mt, Bytes::from(body))))
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> MetaResult<Option<(Digest, String, Bytes)>> {
        let mut inv = self.script(&self.scripts.manifest_by_tag);
        inv.arg(repo.as_str()).arg(tag.as_str());
        let r: Option<(String, String, Vec<u8>)> = self.run(&inv).await?;
        r.map(|(d, mt, body)| Ok((parse_digest(&d)?, mt, Bytes::from(body))))
            .transpose()
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool> {
        let mut inv = self.script(&self.scripts.delete_manifest);
        inv.arg(repo.as_str()).arg(digest.as_str());
        self.run(&inv).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> MetaResult<bool> {
        let mut inv = self.script(&self.scripts.delete_tag);
        inv.arg(repo.as_str()).arg(tag.as_str());
        self.run(&inv).await
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.script(&self.scripts.list_tags);
        inv.arg(repo.as_str()).arg(lex_after(last)).arg(limit);
        self.run(&inv).await
    }

    async fn list_repos(&self, last: Option<&str>, limit: u32) -> MetaResult<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.query(
            redis::cmd("ZRANGEBYLEX")
                .arg(self.key("repos"))
                .arg(lex_after(last))
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(limit),
        )
        .await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: u32,
    ) -> MetaResult<Vec<Referrer>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut inv = self.script(&self.scripts.referrers);
        inv.arg(repo.as_str())
            .arg(subject.as_str())
            .arg(if artifact_type.is_some() { "1" } else { "0" })
            .arg(artifact_type.unwrap_or(""))
            .arg(lex_after(after.map(|d| d.as_str())))
            .arg(limit);
        type Row = (String, String, u64, Option<String>, Option<String>);
        let rows: Vec<Row> = self.run(&inv).await?;
        rows.into_iter()
            .map(|(digest, media_type, size, artifact_type, annotations)| {
                Ok(Referrer {
                    digest: parse_digest(&digest)?,
                    media_type,
                    size,
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
        self.drain_all().await?;
        let mut out = Vec::new();
        let mut start = lex_after(after.map(|d| d.as_str()));
        while out.len() < limit as usize {
            let mut inv = self.script(&self.scripts.gc_scan);
            inv.arg(before)
                .arg(&start)
                .arg(limit as usize - out.len())
                .arg(GC_BATCH);
            let (found, last, exhausted): (Vec<String>, Option<String>, i64) =
                self.run(&inv).await?;
            for pair in found.chunks_exact(2) {
                let size = pair[1]
                    .parse()
                    .map_err(|_| MetaError::Corrupt(format!("size of blob {}", pair[0])))?;
                out.push((parse_digest(&pair[0])?, size));
            }
            match last {
                Some(last) if exhausted == 0 => start = format!("({last}"),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn forget_blob(&self, digest: &Digest) -> MetaResult<bool> {
        let mut inv = self.script(&self.scripts.forget_blob);
        inv.arg(digest.as_str());
        self.run(&inv).await
    }
}
