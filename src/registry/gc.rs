//! Garbage collection: frees the bytes of blobs no manifest references.
//!
//! Architecture invariant: deleting a manifest never deletes a blob another
//! manifest still references. Bytes are only freed here, for blobs that no
//! manifest in any repository references (re-checked in the same metadata
//! transaction that forgets the blob) and that nobody linked during the
//! grace period, so blobs of a push still under way are kept. It runs while
//! no server uses the data (`dockyard gc` takes the data directory lock).

use super::{Registry, RegistryResult, now};

#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    /// Blob files no metadata knew (left by a crash between commit and link).
    pub orphans_removed: u64,
    pub uploads_expired: u64,
}

const PAGE: u32 = 1000;

impl Registry {
    pub async fn collect_garbage(
        &self,
        grace_secs: u64,
        dry_run: bool,
    ) -> RegistryResult<GcReport> {
        let before = now() - grace_secs as i64;
        let mut report = GcReport::default();
        let mut after = None;
        loop {
            let page = self
                .meta
                .gc_candidates(before, after.as_ref(), PAGE)
                .await?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (digest, size) in &page {
                // ACIs and their signatures are named by ACI records.
                if self.meta.aci_blob_in_use(digest).await? {
                    continue;
                }
                if dry_run || self.meta.forget_blob(digest).await? {
                    if !dry_run {
                        self.store.delete(digest).await?;
                    }
                    report.blobs_removed += 1;
                    report.bytes_freed += size;
                }
            }
        }
        let mut after = None;
        loop {
            let page = self.store.list_blobs(after.as_ref(), PAGE as usize).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.digest.clone());
            for blob in &page {
                if blob.modified <= before && self.meta.blob_size(&blob.digest).await?.is_none() {
                    if !dry_run {
                        self.store.delete(&blob.digest).await?;
                    }
                    report.orphans_removed += 1;
                    report.bytes_freed += blob.size;
                }
            }
        }
        if !dry_run {
            report.uploads_expired = self.expire_uploads().await? as u64;
        }
        Ok(report)
    }
}
