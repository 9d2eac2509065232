//! Metadata: repository content (which blobs each repository links,
//! manifests, tags, referrers), accounts and permissions, and the audit log.
//! Backends know nothing of HTTP or of blob storage.
//!
//! Every backend behaves the same, as `contract.rs` checks: names, tags and
//! digests compare case-sensitively and list in byte order; a refused
//! change changes nothing; racing creations end in one success and
//! `Exists` for the rest.
//!
//! Architecture invariant: a manifest is stored only together with the
//! references it makes, in one transaction that also checks they exist; so
//! a stored manifest never names a blob or child manifest the repository
//! lacked at that moment.

pub mod accounts;
pub mod aci;
pub mod audit;
pub mod cache;
#[cfg(test)]
pub mod contract;
pub mod legacy;
pub mod redis;
pub mod sql;

use async_trait::async_trait;
use bytes::Bytes;

use crate::registry::digest::Digest;
use crate::registry::name::{RepoName, Tag};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata backend: {0}")]
    Backend(String),
    #[error("metadata is corrupt: {0}")]
    Corrupt(String),
}

pub type MetaResult<T> = Result<T, MetaError>;

/// A manifest as stored, with what the registry derived from it.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
    /// `subject` descriptor digest, for the referrers API.
    pub subject: Option<Digest>,
    /// `artifactType`, or the config media type of an image manifest.
    pub artifact_type: Option<String>,
    /// `annotations` as a JSON object text, if any.
    pub annotations: Option<String>,
    /// Blobs the manifest needs (config and layers).
    pub blob_refs: Vec<Digest>,
    /// Manifests an index or manifest list names.
    pub manifest_refs: Vec<Digest>,
}

/// A descriptor of a manifest that refers to a subject.
#[derive(Clone, Debug, PartialEq)]
pub struct Referrer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// What `put_manifest` found missing, if anything.
#[derive(Debug, Default, PartialEq)]
pub struct MissingRefs {
    pub blobs: Vec<Digest>,
    pub manifests: Vec<Digest>,
}

impl MissingRefs {
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty() && self.manifests.is_empty()
    }
}

/// Repository content.
#[async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// True if the repository exists (pushed to, or created through `/uam`).
    async fn repo_exists(&self, repo: &RepoName) -> MetaResult<bool>;

    /// Size of a blob linked into `repo`.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<Option<u64>>;

    /// Size of a blob the hub knows: from its first link until
    /// `forget_blob`, even while no repository links it.
    async fn blob_size(&self, digest: &Digest) -> MetaResult<Option<u64>>;

    /// Links a committed blob into `repo`, creating the repository if needed.
    async fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> MetaResult<()>;

    /// Removes a blob's link from `repo`; false if it was not linked.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool>;

    /// Stores a manifest (idempotently) and points `tag` at it, after
    /// checking that every reference is present in `repo`. Nothing changes
    /// if something is missing.
    async fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &ManifestRecord,
        tag: Option<&Tag>,
    ) -> MetaResult<MissingRefs>;

    async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> MetaResult<Option<(String, Bytes)>>;

    async fn manifest_by_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> MetaResult<Option<(Digest, String, Bytes)>>;

    /// Deletes a manifest and every tag pointing at it; false if absent.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> MetaResult<bool>;

    /// Deletes one tag; false if absent.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> MetaResult<bool>;

    /// Tags in lexical order after `last`, at most `limit`.
    async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>>;

    /// Repository names in lexical order after `last`, at most `limit`.
    async fn list_repos(&self, last: Option<&str>, limit: u32) -> MetaResult<Vec<String>>;

    /// Manifests in `repo` whose subject is `subject` (and whose artifact
    /// type is `artifact_type`, if given), in digest order after `after`,
    /// at most `limit`.
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        after: Option<&Digest>,
        limit: u32,
    ) -> MetaResult<Vec<Referrer>>;

    /// Garbage-collection candidates after `after`, in digest order: blobs
    /// no manifest references, known since `before` or earlier and not
    /// linked into any repository after it.
    async fn gc_candidates(
        &self,
        before: i64,
        after: Option<&Digest>,
        limit: u32,
    ) -> MetaResult<Vec<(Digest, u64)>>;

    /// Forgets a blob (its links included) if no manifest references it;
    /// false if one does.
    async fn forget_blob(&self, digest: &Digest) -> MetaResult<bool>;
}

/// Everything the hub keeps besides blob bytes: one backend implements all.
pub trait MetaStore:
    ContentStore + accounts::AccountStore + audit::AuditStore + aci::AciStore + legacy::LegacyStore
{
}

impl<
    T: ContentStore + accounts::AccountStore + audit::AuditStore + aci::AciStore + legacy::LegacyStore,
> MetaStore for T
{
}
