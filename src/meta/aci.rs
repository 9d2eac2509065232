//! appc ACI metadata: images pushed with acpush (keyed by repository and
//! the labels `version`, `os`, `arch`), the cache of Docker/OCI images
//! converted to ACIs, and the armored OpenPGP public keys of a namespace.
//! The bytes (ACIs, signatures) are blobs linked into the repository; these
//! records only name them.
//!
//! A record counts only while its repository still links its blobs: the
//! registry checks the link before serving, so a deleted repository's
//! records never come back with a new repository of the same name, and
//! `aci_blob_in_use` ignores them, so the garbage collector frees their
//! bytes.

use async_trait::async_trait;
use bytes::Bytes;

use super::MetaResult;
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

/// An ACI stored under (repository, version, os, arch).
#[derive(Clone, Debug, PartialEq)]
pub struct AciImage {
    pub repo: RepoName,
    /// The `version` it is found under: its `version` label, or `latest`
    /// for the alias of the most recently pushed one.
    pub version: String,
    pub os: String,
    pub arch: String,
    /// The ACI file as uploaded (possibly compressed), a blob in `repo`.
    pub aci: Digest,
    pub size: u64,
    /// `sha512-<hex>` of the uncompressed tar.
    pub image_id: String,
    /// The armored detached signature, a blob in `repo`.
    pub signature: Option<Digest>,
    /// The image manifest as found in the ACI.
    pub manifest: Bytes,
    pub created_at: i64,
}

/// A Docker/OCI image converted to an ACI, under a key that fixes every
/// input of the conversion (see `registry::aci::convert`).
#[derive(Clone, Debug, PartialEq)]
pub struct AciConversion {
    /// Lowercase hex, at most 64 characters.
    pub key: String,
    pub repo: RepoName,
    /// The converted image manifest's digest.
    pub source: Digest,
    /// The ACI produced (gzip-compressed), a blob in `repo`.
    pub aci: Digest,
    pub size: u64,
    pub image_id: String,
    pub manifest: Bytes,
    pub created_at: i64,
}

#[async_trait]
pub trait AciStore: Send + Sync + 'static {
    /// Stores an image, replacing what was under its key.
    async fn put_aci_image(&self, image: &AciImage) -> MetaResult<()>;

    async fn aci_image(
        &self,
        repo: &RepoName,
        version: &str,
        os: &str,
        arch: &str,
    ) -> MetaResult<Option<AciImage>>;

    /// Stores a conversion unless one exists under its key; returns the
    /// stored one (the first writer's when conversions race).
    async fn put_aci_conversion(&self, conversion: &AciConversion) -> MetaResult<AciConversion>;

    async fn aci_conversion(&self, key: &str) -> MetaResult<Option<AciConversion>>;

    /// Replaces the armored public keys of a namespace.
    async fn set_aci_pubkeys(&self, namespace: &str, armored: &str, at: i64) -> MetaResult<()>;

    async fn aci_pubkeys(&self, namespace: &str) -> MetaResult<Option<String>>;

    /// False if the namespace had none.
    async fn delete_aci_pubkeys(&self, namespace: &str) -> MetaResult<bool>;

    /// True if an image or conversion names the blob (as ACI or signature)
    /// and its repository still links it: the garbage collector keeps it.
    async fn aci_blob_in_use(&self, digest: &Digest) -> MetaResult<bool>;
}
