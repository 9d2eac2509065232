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

use super::accounts::{
    AccountStore, ApiToken, Change, NamespaceKind, OrgRole, OrgUpdate, Organization, Permit,
    Repository, Team, TeamRole, User, UserUpdate,
};
use super::audit::{AuditEvent, AuditQuery, AuditStore};
use super::{ContentStore, ManifestRecord, MetaResult, MetaStore, MissingRefs, Referrer};
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
impl<M: MetaStore> ContentStore for CachedMeta<M> {
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

#[async_trait]
impl<M: MetaStore> AccountStore for CachedMeta<M> {
    async fn create_user(&self, user: &User) -> MetaResult<Change> {
        self.inner.create_user(user).await
    }

    async fn user(&self, name: &str) -> MetaResult<Option<User>> {
        self.inner.user(name).await
    }

    async fn users(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<User>> {
        self.inner.users(after, limit).await
    }

    async fn update_user(&self, name: &str, update: &UserUpdate, now: i64) -> MetaResult<Change> {
        self.inner.update_user(name, update, now).await
    }

    async fn delete_user(&self, name: &str) -> MetaResult<Change> {
        self.inner.delete_user(name).await
    }

    async fn admin_count(&self) -> MetaResult<u64> {
        self.inner.admin_count().await
    }

    async fn create_org(&self, org: &Organization, creator: &str) -> MetaResult<Change> {
        self.inner.create_org(org, creator).await
    }

    async fn org(&self, name: &str) -> MetaResult<Option<Organization>> {
        self.inner.org(name).await
    }

    async fn orgs(&self, after: Option<&str>, limit: u32) -> MetaResult<Vec<Organization>> {
        self.inner.orgs(after, limit).await
    }

    async fn update_org(&self, name: &str, update: &OrgUpdate) -> MetaResult<Change> {
        self.inner.update_org(name, update).await
    }

    async fn delete_org(&self, name: &str) -> MetaResult<Change> {
        self.inner.delete_org(name).await
    }

    async fn namespace_kind(&self, name: &str) -> MetaResult<Option<NamespaceKind>> {
        self.inner.namespace_kind(name).await
    }

    async fn set_org_member(&self, org: &str, user: &str, role: OrgRole) -> MetaResult<Change> {
        self.inner.set_org_member(org, user, role).await
    }

    async fn remove_org_member(&self, org: &str, user: &str) -> MetaResult<Change> {
        self.inner.remove_org_member(org, user).await
    }

    async fn org_members(&self, org: &str) -> MetaResult<Vec<(String, OrgRole)>> {
        self.inner.org_members(org).await
    }

    async fn org_role(&self, org: &str, user: &str) -> MetaResult<Option<OrgRole>> {
        self.inner.org_role(org, user).await
    }

    async fn user_orgs(&self, user: &str) -> MetaResult<Vec<(String, OrgRole)>> {
        self.inner.user_orgs(user).await
    }

    async fn create_team(&self, team: &Team, creator: Option<&str>) -> MetaResult<Change> {
        self.inner.create_team(team, creator).await
    }

    async fn team(&self, org: &str, name: &str) -> MetaResult<Option<Team>> {
        self.inner.team(org, name).await
    }

    async fn teams(&self, org: &str) -> MetaResult<Vec<Team>> {
        self.inner.teams(org).await
    }

    async fn delete_team(&self, org: &str, name: &str) -> MetaResult<Change> {
        self.inner.delete_team(org, name).await
    }

    async fn set_team_member(
        &self,
        org: &str,
        team: &str,
        user: &str,
        role: TeamRole,
    ) -> MetaResult<Change> {
        self.inner.set_team_member(org, team, user, role).await
    }

    async fn remove_team_member(&self, org: &str, team: &str, user: &str) -> MetaResult<Change> {
        self.inner.remove_team_member(org, team, user).await
    }

    async fn team_members(&self, org: &str, team: &str) -> MetaResult<Vec<(String, TeamRole)>> {
        self.inner.team_members(org, team).await
    }

    async fn team_role(&self, org: &str, team: &str, user: &str) -> MetaResult<Option<TeamRole>> {
        self.inner.team_role(org, team, user).await
    }

    async fn user_teams(&self, org: &str, user: &str) -> MetaResult<Vec<(String, TeamRole)>> {
        self.inner.user_teams(org, user).await
    }

    async fn set_team_repo(
        &self,
        org: &str,
        team: &str,
        repo: &RepoName,
        permit: Permit,
    ) -> MetaResult<Change> {
        self.inner.set_team_repo(org, team, repo, permit).await
    }

    async fn remove_team_repo(&self, org: &str, team: &str, repo: &RepoName) -> MetaResult<Change> {
        self.inner.remove_team_repo(org, team, repo).await
    }

    async fn team_repos(&self, org: &str, team: &str) -> MetaResult<Vec<(String, Permit)>> {
        self.inner.team_repos(org, team).await
    }

    async fn team_permits(&self, user: &str, repo: &RepoName) -> MetaResult<Vec<Permit>> {
        self.inner.team_permits(user, repo).await
    }

    async fn create_repo(&self, repo: &Repository) -> MetaResult<Change> {
        self.inner.create_repo(repo).await
    }

    async fn repo(&self, name: &RepoName) -> MetaResult<Option<Repository>> {
        self.inner.repo(name).await
    }

    async fn repos_in(&self, namespace: &str) -> MetaResult<Vec<Repository>> {
        self.inner.repos_in(namespace).await
    }

    async fn update_repo(
        &self,
        name: &RepoName,
        is_public: Option<bool>,
        comment: Option<&str>,
    ) -> MetaResult<Change> {
        self.inner.update_repo(name, is_public, comment).await
    }

    async fn delete_repo(&self, name: &RepoName) -> MetaResult<Change> {
        let r = self.inner.delete_repo(name).await;
        // Its manifests, tags and links are gone.
        let mut s = self.lock();
        s.generation += 1;
        s.repos.remove(name);
        r
    }

    async fn create_token(&self, token: &ApiToken) -> MetaResult<Change> {
        self.inner.create_token(token).await
    }

    async fn token(&self, id: &str) -> MetaResult<Option<ApiToken>> {
        self.inner.token(id).await
    }

    async fn tokens(&self, user: &str) -> MetaResult<Vec<ApiToken>> {
        self.inner.tokens(user).await
    }

    async fn delete_token(&self, user: &str, id: &str) -> MetaResult<Change> {
        self.inner.delete_token(user, id).await
    }
}

#[async_trait]
impl<M: MetaStore> AuditStore for CachedMeta<M> {
    async fn append_audit(&self, events: &[AuditEvent]) -> MetaResult<()> {
        self.inner.append_audit(events).await
    }

    async fn query_audit(&self, q: &AuditQuery) -> MetaResult<Vec<(i64, AuditEvent)>> {
        self.inner.query_audit(q).await
    }

    async fn prune_audit(&self, before: i64) -> MetaResult<u64> {
        self.inner.prune_audit(before).await
    }
}

#[async_trait]
impl<M: MetaStore> super::aci::AciStore for CachedMeta<M> {
    async fn put_aci_image(&self, image: &super::aci::AciImage) -> MetaResult<()> {
        self.inner.put_aci_image(image).await
    }

    async fn aci_image(
        &self,
        repo: &RepoName,
        version: &str,
        os: &str,
        arch: &str,
    ) -> MetaResult<Option<super::aci::AciImage>> {
        self.inner.aci_image(repo, version, os, arch).await
    }

    async fn put_aci_conversion(
        &self,
        conversion: &super::aci::AciConversion,
    ) -> MetaResult<super::aci::AciConversion> {
        self.inner.put_aci_conversion(conversion).await
    }

    async fn aci_conversion(&self, key: &str) -> MetaResult<Option<super::aci::AciConversion>> {
        self.inner.aci_conversion(key).await
    }

    async fn set_aci_pubkeys(&self, namespace: &str, armored: &str, at: i64) -> MetaResult<()> {
        self.inner.set_aci_pubkeys(namespace, armored, at).await
    }

    async fn aci_pubkeys(&self, namespace: &str) -> MetaResult<Option<String>> {
        self.inner.aci_pubkeys(namespace).await
    }

    async fn delete_aci_pubkeys(&self, namespace: &str) -> MetaResult<bool> {
        self.inner.delete_aci_pubkeys(namespace).await
    }

    async fn aci_blob_in_use(&self, digest: &Digest) -> MetaResult<bool> {
        self.inner.aci_blob_in_use(digest).await
    }
}

#[async_trait]
impl<M: MetaStore> super::legacy::LegacyStore for CachedMeta<M> {
    async fn put_v1_image(
        &self,
        image: &super::legacy::V1Image,
        replace_complete: bool,
    ) -> MetaResult<Change> {
        self.inner.put_v1_image(image, replace_complete).await
    }

    async fn add_v1_images(&self, images: &[super::legacy::V1Image]) -> MetaResult<()> {
        self.inner.add_v1_images(images).await
    }

    async fn v1_image(&self, id: &str) -> MetaResult<Option<super::legacy::V1Image>> {
        self.inner.v1_image(id).await
    }

    async fn set_v1_layer(
        &self,
        id: &str,
        layer: &super::legacy::V1Layer,
        checksum: &str,
    ) -> MetaResult<Change> {
        self.inner.set_v1_layer(id, layer, checksum).await
    }

    async fn complete_v1_image(&self, id: &str, checksum: &str) -> MetaResult<Change> {
        self.inner.complete_v1_image(id, checksum).await
    }

    async fn set_v1_checksum(&self, id: &str, checksum: &str) -> MetaResult<()> {
        self.inner.set_v1_checksum(id, checksum).await
    }

    async fn put_layer_info(
        &self,
        layer: &Digest,
        info: &super::legacy::LayerInfo,
    ) -> MetaResult<()> {
        self.inner.put_layer_info(layer, info).await
    }

    async fn layer_info(&self, layer: &Digest) -> MetaResult<Option<super::legacy::LayerInfo>> {
        self.inner.layer_info(layer).await
    }

    async fn put_v1_conversion(&self, conversion: &super::legacy::Conversion) -> MetaResult<()> {
        self.inner.put_v1_conversion(conversion).await
    }

    async fn v1_image_of_manifest(&self, manifest: &Digest) -> MetaResult<Option<String>> {
        self.inner.v1_image_of_manifest(manifest).await
    }

    async fn manifest_of_v1_image(
        &self,
        image: &str,
    ) -> MetaResult<Option<super::legacy::Conversion>> {
        self.inner.manifest_of_v1_image(image).await
    }

    async fn declare_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()> {
        self.inner.declare_v1_images(repo, ids).await
    }

    async fn reference_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()> {
        self.inner.reference_v1_images(repo, ids).await
    }

    async fn v1_references(&self, repo: &RepoName, id: &str) -> MetaResult<bool> {
        self.inner.v1_references(repo, id).await
    }

    async fn v1_repo_images(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>> {
        self.inner.v1_repo_images(repo, after, limit).await
    }

    async fn v1_image_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>> {
        self.inner.v1_image_repos(id, limit).await
    }

    async fn v1_declaring_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>> {
        self.inner.v1_declaring_repos(id, limit).await
    }

    async fn forget_v1_repo(&self, repo: &RepoName) -> MetaResult<()> {
        self.inner.forget_v1_repo(repo).await
    }

    async fn search_repos(
        &self,
        query: &str,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<super::legacy::RepoMatch>> {
        self.inner.search_repos(query, after, limit).await
    }
}
