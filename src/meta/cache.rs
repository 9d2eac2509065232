//! An in-memory read cache in front of a `MetaStore` that this process alone
//! writes (SQLite): tag resolutions, manifests and blob links, so the hot
//! read paths of a pull do not touch the database.
//!
//! Only positive answers are cached. Every write goes to the store first and
//! then invalidates; a read fills the cache only if no write completed while
//! it was reading (a generation counter), so a slow reader can never put a
//! stale answer back. Memory is bounded by `budget` bytes.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ManifestRecord, MetaResult, MetaStore, MissingRefs, Referrer};
use crate::registry::digest::Digest;
use crate::registry::name::{RepoName, Tag};

pub struct CachedMeta<M> {
    inner: M,
    state: Mutex<State>,
    budget: usize,
}

#[derive(Default)]
struct State {
    generation: u64,
    weight: usize,
    repos: HashMap<RepoName, RepoEntry>,
}

#[derive(Default)]
struct RepoEntry {
    tags: HashMap<Tag, Digest>,
    manifests: HashMap<Digest, (String, Bytes)>,
    blobs: HashMap<Digest, u64>,
}

/// Rough per-entry overhead of the maps, on top of the payload.
const ENTRY_OVERHEAD: usize = 160;

impl<M: MetaStore> CachedMeta<M> {
    pub fn new(inner: M, budget: usize) -> Self {
        CachedMeta {
            inner,
            state: Mutex::new(State::default()),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `fill` on the repository's entry if no write happened since
    /// `seen`, evicting everything first if the budget would be exceeded.
    fn fill(&self, seen: u64, repo: &RepoName, weight: usize, fill: impl FnOnce(&mut RepoEntry)) {
        let mut s = self.lock();
        if s.generation != seen {
            return;
        }
        if s.weight + weight > self.budget {
            // Cheap and bounded: start over rather than track recency.
            s.repos.clear();
            s.weight = 0;
            if weight > self.budget {
                return;
            }
        }
        s.weight += weight;
        fill(s.repos.entry(repo.clone()).or_default());
    }

    /// Marks a completed write and lets `drop` forget what it changed.
    fn invalidate(&self, repo: &RepoName, drop: impl FnOnce(&mut RepoEntry)) {
        let mut s = self.lock();
        s.generation += 1;
        if let Some(e) = s.repos.get_mut(repo) {
            drop(e);
        }
    }
}

#[async_trait]
impl<M: MetaStore> MetaStore for CachedMeta<M> {
    async fn repo_exists(&self, repo: &RepoName) -> MetaResult<bool> {
        if self.lock().repos.contains_key(repo) {
            return Ok(true);
        }
        self.inner.repo_exists(repo).await
    }

    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<Option<u64>> {
        let seen = {
            let s = self.lock();
            if let Some(size) = s.repos.get(repo).and_then(|e| e.blobs.get(digest)) {
                return Ok(Some(*size));
            }
            s.generation
        };
        let size = self.inner.repo_blob(repo, digest).await?;
        if let Some(size) = size {
            let w = ENTRY_OVERHEAD + digest.as_str().len();
            self.fill(seen, repo, w, |e| {
                e.blobs.insert(digest.clone(), size);
            });
        }
        Ok(size)
    }

    async fn blob_size(&self, digest: &Digest) -> MetaResult<Option<u64>> {
        self.inner.blob_size(digest).await
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> MetaResult<()> {
        self.inner.link_blob(repo, digest, size).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool> {
        let r = self.inner.unlink_blob(repo, digest).await;
        self.invalidate(repo, |e| {
            e.blobs.remove(digest);
        });
        r
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> MetaResult<MissingRefs> {
        let r = self.inner.put_manifest(repo, manifest, tag).await;
        self.invalidate(repo, |e| {
            if let Some(tag) = tag {
                e.tags.remove(tag);
            }
        });
        r
    }

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> MetaResult<Option<(String, Bytes)>> {
        let seen = {
            let s = self.lock();
            if let Some(m) = s.repos.get(repo).and_then(|e| e.manifests.get(digest)) {
                return Ok(Some(m.clone()));
            }
            s.generation
        };
        let found = self.inner.manifest_by_digest(repo, digest).await?;
        if let Some((mt, body)) = &found {
            let w = ENTRY_OVERHEAD + digest.as_str().len() + mt.len() + body.len();
            self.fill(seen, repo, w, |e| {
                e.manifests
                    .insert(digest.clone(), (mt.clone(), body.clone()));
            });
        }
        Ok(found)
    }

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> MetaResult<Option<(Digest, String, Bytes)>> {
        let seen = {
            let s = self.lock();
            if let Some(e) = s.repos.get(repo)
                && let Some(d) = e.tags.get(tag)
                && let Some((mt, body)) = e.manifests.get(d)
            {
                return Ok(Some((d.clone(), mt.clone(), body.clone())));
            }
            s.generation
        };
        let found = self.inner.manifest_by_tag(repo, tag).await?;
        if let Some((d, mt, body)) = &found {
            let w = 2 * ENTRY_OVERHEAD
                + tag.as_str().len()
                + 2 * d.as_str().len()
                + mt.len()
                + body.len();
            self.fill(seen, repo, w, |e| {
                e.tags.insert(tag.clone(), d.clone());
                e.manifests.insert(d.clone(), (mt.clone(), body.clone()));
            });
        }
        Ok(found)
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool> {
        let r = self.inner.delete_manifest(repo, digest).await;
        self.invalidate(repo, |e| {
            e.manifests.remove(digest);
            e.tags.retain(|_, d| d != digest);
        });
        r
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> MetaResult<bool> {
        let r = self.inner.delete_tag(repo, tag).await;
        self.invalidate(repo, |e| {
            e.tags.remove(tag);
        });
        r
    }

    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>> {
        self.inner.list_tags(repo, last, limit).await
    }

    async fn list_repos(&self, last: Option<&str>, limit: u32) -> MetaResult<Vec<String>> {
        self.inner.list_repos(last, limit).await
    }

    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: u32,
    ) -> MetaResult<Vec<Referrer>> {
        self.inner
            .referrers(repo, subject, artifact_type, after, limit)
            .await
    }

    async fn gc_candidates(
        &self,
        before: i64,
        after: Option<&Digest>,
        limit: u32,
    ) -> MetaResult<Vec<(Digest, u64)>> {
        self.inner.gc_candidates(before, after, limit).await
    }

    async fn forget_blob(&self, digest: &Digest) -> MetaResult<bool> {
        let r = self.inner.forget_blob(digest).await;
        // Links of every repository may have gone.
        let mut s = self.lock();
        s.generation += 1;
        for e in s.repos.values_mut() {
            e.blobs.remove(digest);
        }
        r
    }
}
