//! Reading, deleting and mounting blobs.

use std::ops::Range;

use super::digest::Digest;
use super::name::RepoName;
use super::{Registry, RegistryError, RegistryResult};
use crate::storage::{ByteStream, StoreError};

impl Registry {
    /// Size of a blob the repository links.
    pub async fn blob_size(&self, repo: &RepoName, digest: &Digest) -> RegistryResult<u64> {
        self.meta
            .repo_blob(repo, digest)
            .await?
            .ok_or(RegistryError::BlobUnknown)
    }

    /// Streams part of a blob whose size `blob_size` gave.
    pub async fn read_blob(
        &self,
        digest: &Digest,
        range: Range<u64>,
    ) -> RegistryResult<ByteStream> {
        match self.store.read(digest, range).await {
            Ok(s) => Ok(s),
            // Linked in metadata but gone from storage: unknown, not a 500.
            Err(StoreError::NotFound) => {
                tracing::error!(%digest, "blob is linked but missing from storage");
                Err(RegistryError::BlobUnknown)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the blob from the repository. Its bytes stay while anything
    /// else may still reference them.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> RegistryResult<()> {
        if self.meta.unlink_blob(repo, digest).await? {
            Ok(())
        } else {
            Err(RegistryError::BlobUnknown)
        }
    }

    /// Links a blob already in the hub into `repo`: from `from` if given,
    /// else from wherever the hub has it. `None` if it cannot be mounted.
    pub async fn mount_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        from: Option<&RepoName>,
    ) -> RegistryResult<Option<u64>> {
        let size = match from {
            Some(from) => self.meta.repo_blob(from, digest).await?,
            None => self.meta.blob_size(digest).await?,
        };
        let Some(size) = size else { return Ok(None) };
        // Metadata alone is not proof: the bytes must be there to share.
        if self.store.stat(digest).await?.is_none() {
            return Ok(None);
        }
        self.meta.link_blob(repo, digest, size).await?;
        Ok(Some(size))
    }
}
