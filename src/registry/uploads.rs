//! Upload sessions: creation, chunked appends, the closing digest check and
//! commit, and the streaming pipeline that hashes bytes while they are
//! written.
//!
//! Architecture invariant: no upload holds a whole blob in memory. Bodies
//! are streamed through a bounded channel to a blocking writer that hashes
//! each chunk and hands it to the store; only bodies below `SMALL_BLOB` are
//! gathered, and their size is checked before they are read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, mpsc};

use super::digest::{Algorithm, Digest, Hasher};
use super::name::RepoName;
use super::{Registry, RegistryError, RegistryResult, now};
use crate::storage::{ByteStream, StoreError, UploadState};

/// Bodies of known length up to this size are gathered in memory and
/// written in one step.
pub const SMALL_BLOB: u64 = 1024 * 1024;
/// Chunks in flight between the network and the writer.
const PIPELINE_DEPTH: usize = 4;

/// An upload session id: a UUID, parsed at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadId(String);

impl std::str::FromStr for UploadId {
    type Err = RegistryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s)
            .map(|u| UploadId(u.simple().to_string()))
            .map_err(|_| RegistryError::BlobUploadUnknown)
    }
}

impl std::fmt::Display for UploadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl UploadId {
    fn new() -> UploadId {
        UploadId(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// A request body as the core sees it: a stream and, if known, its length.
pub struct Body {
    pub stream: ByteStream,
    pub len: Option<u64>,
}

/// Inclusive byte range of a chunk (`Content-Range: start-end`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

/// One async mutex per session id in use, so requests on the same session
/// in this process run one after another.
#[derive(Default)]
pub struct SessionLocks {
    map: std::sync::Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

pub struct SessionGuard<'a> {
    locks: &'a SessionLocks,
    id: String,
    lock: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl SessionLocks {
    fn entry(&self, id: &UploadId) -> Arc<AsyncMutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id.0.clone()).or_default().clone()
    }

    async fn lock(&self, id: &UploadId) -> SessionGuard<'_> {
        let lock = self.entry(id);
        let guard = lock.clone().lock_owned().await;
        SessionGuard {
            locks: self,
            id: id.0.clone(),
            lock,
            guard: Some(guard),
        }
    }

    /// The lock if nobody in this process is using the session.
    fn try_lock(&self, id: &UploadId) -> Option<SessionGuard<'_>> {
        let lock = self.entry(id);
        let guard = lock.clone().try_lock_owned().ok();
        // Built even on failure so its drop cleans the map entry up.
        let g = SessionGuard {
            locks: self,
            id: id.0.clone(),
            lock,
            guard,
        };
        g.guard.is_some().then_some(g)
    }
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map and this guard hold it: nobody else is waiting.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.id);
        }
    }
}

/// A client that sends nothing for this long loses its request: it would
/// otherwise hold the session and a writer thread forever.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

fn body_error(e: std::io::Error) -> RegistryError {
    RegistryError::BlobUploadInvalid(format!("reading the request body failed: {e}"))
}

/// Reads a body of known, small length into memory, refusing a body that
/// turns out longer or shorter than announced.
async fn gather(mut body: Body, len: u64) -> RegistryResult<Bytes> {
    let mut buf = BytesMut::with_capacity(len as usize);
    while let Some(chunk) = body.stream.next().await {
        let chunk = chunk.map_err(body_error)?;
        if buf.len() as u64 + chunk.len() as u64 > len {
            return Err(RegistryError::SizeInvalid(format!(
                "body is longer than {len} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() as u64 != len {
        return Err(RegistryError::SizeInvalid(format!(
            "body has {} bytes, expected {len}",
            buf.len()
        )));
    }
    Ok(buf.freeze())
}

impl Registry {
    /// Opens a new upload session hashing with `algorithm`.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
    ) -> RegistryResult<UploadId> {
        let id = UploadId::new();
        let state = UploadState {
            repo: repo.as_str().to_string(),
            offset: 0,
            hash_state: Hasher::new(algorithm).save(),
            started_at: now(),
            updated_at: now(),
        };
        self.store.create_upload(&id.0, &state).await?;
        Ok(id)
    }

    async fn session(&self, repo: &RepoName, id: &UploadId) -> RegistryResult<UploadState> {
        match self.store.upload_state(&id.0).await? {
            Some(s) if s.repo == repo.as_str() => Ok(s),
            _ => Err(RegistryError::BlobUploadUnknown),
        }
    }

    /// Bytes received so far by a session.
    pub async fn upload_offset(&self, repo: &RepoName, id: &UploadId) -> RegistryResult<u64> {
        Ok(self.session(repo, id).await?.offset)
    }

    /// Cancels a session and drops its data.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &UploadId) -> RegistryResult<()> {
        let _g = self.sessions.lock(id).await;
        self.session(repo, id).await?;
        self.store.delete_upload(&id.0).await?;
        Ok(())
    }

    /// Appends a chunk; returns the session's new length.
    pub async fn append_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        range: Option<ChunkRange>,
        body: Body,
    ) -> RegistryResult<u64> {
        let _g = self.sessions.lock(id).await;
        let mut state = self.session(repo, id).await?;
        self.append_locked(id, &mut state, range, body).await?;
        self.save_state(id, &mut state).await?;
        Ok(state.offset)
    }

    async fn save_state(&self, id: &UploadId, state: &mut UploadState) -> RegistryResult<()> {
        state.updated_at = now();
        self.store
            .save_upload_state(&id.0, state)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => RegistryError::BlobUploadUnknown,
                e => e.into(),
            })
    }

    /// Appends a chunk's data and advances `state` in memory; the caller
    /// decides whether the new state is saved. Unsaved, the appended bytes
    /// are cut off by the session's next append.
    async fn append_locked(
        &self,
        id: &UploadId,
        state: &mut UploadState,
        range: Option<ChunkRange>,
        body: Body,
    ) -> RegistryResult<()> {
        let expected = check_range(state.offset, range, body.len)?;
        let hasher = Hasher::restore(&state.hash_state).ok_or_else(|| {
            RegistryError::Internal(format!("upload {id}: unreadable hash state"))
        })?;
        let (hasher, new_len) = self.ingest(id, state.offset, hasher, body.stream).await?;
        if let Some(expected) = expected
            && new_len - state.offset != expected
        {
            return Err(RegistryError::BlobUploadInvalid(format!(
                "chunk has {} bytes but its range announced {expected}",
                new_len - state.offset
            )));
        }
        state.offset = new_len;
        state.hash_state = hasher.save();
        Ok(())
    }

    /// Closes a session: appends the optional last chunk, checks the whole
    /// content against `digest`, commits the blob and links it into `repo`.
    /// If the digest does not match, the session is left as it was before
    /// the request (the last chunk is not kept).
    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        range: Option<ChunkRange>,
        body: Body,
    ) -> RegistryResult<()> {
        let _g = self.sessions.lock(id).await;
        let mut state = self.session(repo, id).await?;
        match body.len {
            // The common monolithic case: POST, then PUT with the whole blob.
            Some(len) if state.offset == 0 && len <= SMALL_BLOB => {
                check_range(0, range, Some(len))?;
                let bytes = gather(body, len).await?;
                self.store_small(repo, digest, bytes).await?;
                self.store.delete_upload(&id.0).await?;
                return Ok(());
            }
            Some(0) => {}
            _ => self.append_locked(id, &mut state, range, body).await?,
        }
        let hasher = Hasher::restore(&state.hash_state).ok_or_else(|| {
            RegistryError::Internal(format!("upload {id}: unreadable hash state"))
        })?;
        let actual = if hasher.algorithm() == digest.algorithm() {
            hasher.finish()
        } else {
            self.rehash(id, state.offset, digest.algorithm()).await?
        };
        if &actual != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "content is {actual}, not {digest}"
            )));
        }
        self.store
            .commit_upload(&id.0, digest, state.offset)
            .await?;
        self.meta.link_blob(repo, digest, state.offset).await?;
        self.committed(digest);
        Ok(())
    }

    /// Single-request upload (`POST ?digest=`): the whole blob in one body.
    pub async fn upload_whole(
        &self,
        repo: &RepoName,
        digest: &Digest,
        body: Body,
    ) -> RegistryResult<()> {
        match body.len {
            Some(len) if len <= SMALL_BLOB => {
                let bytes = gather(body, len).await?;
                self.store_small(repo, digest, bytes).await
            }
            _ => {
                let id = self.start_upload(repo, digest.algorithm()).await?;
                let r = self.finish_upload(repo, &id, digest, None, body).await;
                if r.is_err() {
                    let _ = self.store.delete_upload(&id.0).await;
                }
                r
            }
        }
    }

    /// Stores content the hub produced itself (a converted image, a
    /// synthesized config) whose digest is known only once it is all
    /// written: hashes while writing, commits under the computed digest and
    /// links it into `repo`. Returns the digest and size.
    pub async fn store_generated(
        &self,
        repo: &RepoName,
        algorithm: Algorithm,
        stream: ByteStream,
    ) -> RegistryResult<(Digest, u64)> {
        let id = self.start_upload(repo, algorithm).await?;
        let hasher = Hasher::new(algorithm);
        let result = async {
            let (hasher, len) = self.ingest(&id, 0, hasher, stream).await?;
            let digest = hasher.finish();
            self.store.commit_upload(&id.0, &digest, len).await?;
            self.meta.link_blob(repo, &digest, len).await?;
            self.committed(&digest);
            Ok((digest, len))
        }
        .await;
        if result.is_err() {
            let _ = self.store.delete_upload(&id.0).await;
        }
        result
    }

    async fn store_small(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bytes: Bytes,
    ) -> RegistryResult<()> {
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(RegistryError::DigestInvalid(format!(
                "content is {actual}, not {digest}"
            )));
        }
        let len = bytes.len() as u64;
        self.store.put_small(digest, bytes).await?;
        self.meta.link_blob(repo, digest, len).await?;
        self.committed(digest);
        Ok(())
    }

    /// Streams `body` into the session's data from `offset`, hashing on the
    /// way, and returns the hasher and the data's new length. The writer
    /// runs on a blocking thread; the network side never waits on the disk
    /// except through the bounded channel.
    async fn ingest(
        &self,
        id: &UploadId,
        offset: u64,
        mut hasher: Hasher,
        mut body: ByteStream,
    ) -> RegistryResult<(Hasher, u64)> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
        let store = self.store.clone();
        let sid = id.0.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<(Hasher, u64), StoreError> {
            let mut w = store.append_upload(&sid, offset)?;
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                w.write(&chunk)?;
            }
            Ok((hasher, w.finish()?))
        });
        let mut failure = None;
        loop {
            let chunk = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => {
                    failure = Some(RegistryError::BlobUploadInvalid(format!(
                        "no data for {} s",
                        BODY_IDLE_TIMEOUT.as_secs()
                    )));
                    break;
                }
            };
            match chunk {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    failure = Some(body_error(e));
                    break;
                }
            }
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| RegistryError::Internal(format!("upload writer: {e}")))?;
        if let Some(f) = failure {
            return Err(f);
        }
        match written {
            Ok(r) => Ok(r),
            // The data is gone or shorter than the state says (the machine
            // lost unsynced writes): the session cannot go on.
            Err(StoreError::NotFound) => {
                self.store.delete_upload(&id.0).await?;
                Err(RegistryError::BlobUploadUnknown)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Hashes a session's data again with another algorithm (the client
    /// named a digest of a different algorithm than the session hashed).
    async fn rehash(
        &self,
        id: &UploadId,
        len: u64,
        algorithm: Algorithm,
    ) -> RegistryResult<Digest> {
        let mut data = self.store.read_upload(&id.0, len).await?;
        let mut hasher = Hasher::new(algorithm);
        let mut seen = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Internal(e.to_string()))?;
            seen += chunk.len() as u64;
            hasher.update(&chunk);
        }
        if seen != len {
            return Err(RegistryError::Internal(format!(
                "upload {id}: data is {seen} bytes, expected {len}"
            )));
        }
        Ok(hasher.finish())
    }

    /// Removes sessions idle past the expiry; returns how many. A session
    /// in use, or used since it was listed, is kept.
    pub async fn expire_uploads(&self) -> RegistryResult<usize> {
        let before = now() - self.limits.upload_expiry as i64;
        let mut removed = 0;
        for id in self.store.stale_uploads(before, 10_000).await? {
            let id = UploadId(id);
            let Some(_g) = self.sessions.try_lock(&id) else {
                continue;
            };
            match self.store.upload_state(&id.0).await? {
                Some(s) if s.updated_at > before => continue,
                _ => {}
            }
            self.store.delete_upload(&id.0).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

/// Checks a chunk's `Content-Range` against the session's length (and the
/// body length if known); returns the chunk length it announces.
fn check_range(
    offset: u64,
    range: Option<ChunkRange>,
    len: Option<u64>,
) -> RegistryResult<Option<u64>> {
    let Some(r) = range else { return Ok(None) };
    if r.start != offset {
        return Err(RegistryError::RangeInvalid(format!(
            "chunk starts at {} but the upload has {offset} bytes",
            r.start
        )));
    }
    if r.end < r.start {
        return Err(RegistryError::RangeInvalid(format!(
            "range {}-{} is empty",
            r.start, r.end
        )));
    }
    let announced = r.end - r.start + 1;
    if let Some(len) = len
        && len != announced
    {
        return Err(RegistryError::SizeInvalid(format!(
            "Content-Range announces {announced} bytes but Content-Length is {len}"
        )));
    }
    Ok(Some(announced))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(check_range(0, None, None).unwrap(), None);
        assert_eq!(
            check_range(5, Some(ChunkRange { start: 5, end: 9 }), Some(5)).unwrap(),
            Some(5)
        );
        assert!(matches!(
            check_range(5, Some(ChunkRange { start: 0, end: 9 }), None),
            Err(RegistryError::RangeInvalid(_))
        ));
        assert!(matches!(
            check_range(5, Some(ChunkRange { start: 5, end: 9 }), Some(4)),
            Err(RegistryError::SizeInvalid(_))
        ));
    }

    #[tokio::test]
    async fn generated_content_is_stored_under_its_digest() {
        use crate::meta::sql::SqlMeta;
        use crate::storage::local::LocalStore;
        let dir = tempfile::tempdir().unwrap();
        let meta = SqlMeta::open(
            &format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display()),
            2,
        )
        .await
        .unwrap();
        let store = LocalStore::open(&dir.path().join("blobs")).unwrap();
        let reg = Registry::new(
            std::sync::Arc::new(meta),
            std::sync::Arc::new(store),
            super::super::Limits {
                max_manifest_size: 1 << 20,
                upload_expiry: 3600,
            },
        );
        let repo: RepoName = "a/b".parse().unwrap();
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let (digest, len) = reg
            .store_generated(
                &repo,
                Algorithm::Sha256,
                Box::pin(futures_util::stream::iter(chunks)),
            )
            .await
            .unwrap();
        assert_eq!(digest, Digest::of(Algorithm::Sha256, b"hello world"));
        assert_eq!(len, 11);
        assert_eq!(reg.blob_size(&repo, &digest).await.unwrap(), 11);
    }

    #[test]
    fn upload_ids() {
        let id: UploadId = "67e55044-10b1-426f-9247-bb680e5fe0c8".parse().unwrap();
        assert_eq!(id.to_string(), "67e5504410b1426f9247bb680e5fe0c8");
        assert!("../etc/passwd".parse::<UploadId>().is_err());
    }
}
