//! Blob storage: content-addressed, immutable bytes, and upload sessions
//! (their partial data and state). Backends know nothing of HTTP, metadata,
//! or each other.
//!
//! Upload sessions live here rather than in the metadata store because they
//! are transient and written on every chunk: they survive a restart of the
//! process (and, with a shared backend, can be continued by another node) but
//! are not fsynced, like the chunk data they describe.
//!
//! Architecture invariant: a blob is visible under its digest only after its
//! bytes were verified by the caller and made durable; `commit_upload` and
//! `put_small` are the only ways in.

#[cfg(test)]
pub mod contract;
pub mod local;
#[cfg(feature = "rados")]
pub mod rados;

use std::io;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::registry::digest::Digest;

/// A stream of blob bytes, each chunk bounded in size by the backend.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Synchronous writer for the data of an upload session. The core drives it
/// from a blocking thread, so backends may block freely.
pub trait UploadWriter: Send {
    fn write(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything written so far readable by `read_upload` and returns
    /// the session's total length. Durability comes at `commit_upload`.
    fn finish(self: Box<Self>) -> io::Result<u64>;
}

/// A committed blob as listed by the store.
#[derive(Clone, Debug)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    pub modified: i64,
}

/// What the store keeps about an upload session between requests.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UploadState {
    /// Repository the session belongs to.
    pub repo: String,
    /// Bytes received so far.
    pub offset: u64,
    /// Serialized hasher after `offset` bytes (hex in the stored form).
    #[serde(with = "hex::serde")]
    pub hash_state: Vec<u8>,
    /// Seconds since the epoch.
    pub started_at: i64,
    /// When the session last received data (seconds since the epoch).
    #[serde(default)]
    pub updated_at: i64,
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a committed blob, or `None`.
    async fn stat(&self, digest: &Digest) -> StoreResult<Option<u64>>;

    /// Streams `range` of a committed blob; the range must lie within it.
    async fn read(&self, digest: &Digest, range: Range<u64>) -> StoreResult<ByteStream>;

    /// Removes a committed blob. Deleting a missing blob is not an error.
    async fn delete(&self, digest: &Digest) -> StoreResult<()>;

    /// Committed blobs after `after` in digest order, at most `limit`, each
    /// with its size and modification time (seconds since the epoch).
    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> StoreResult<Vec<StoredBlob>>;

    /// Creates a new upload session with no data.
    async fn create_upload(&self, id: &str, state: &UploadState) -> StoreResult<()>;

    /// The session's state, or `None` if it does not exist.
    async fn upload_state(&self, id: &str) -> StoreResult<Option<UploadState>>;

    /// Replaces the session's state (atomically: readers see old or new).
    async fn save_upload_state(&self, id: &str, state: &UploadState) -> StoreResult<()>;

    /// Ids of sessions not touched since `before` (seconds since the epoch).
    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<String>>;

    /// Opens the session's data for appending at `offset`, which must be its
    /// current length (anything beyond it, left by an interrupted request, is
    /// cut off first).
    fn append_upload(&self, id: &str, offset: u64) -> StoreResult<Box<dyn UploadWriter>>;

    /// Streams the session's data from the start up to `len` bytes (used to
    /// re-hash when the stored hash state is of another algorithm).
    async fn read_upload(&self, id: &str, len: u64) -> StoreResult<ByteStream>;

    /// Atomically and durably turns the session's first `len` bytes into the
    /// blob `digest` (whose hash the caller has verified) and removes the
    /// session, state included. If the blob already exists the data is simply dropped.
    async fn commit_upload(&self, id: &str, digest: &Digest, len: u64) -> StoreResult<()>;

    /// Stores a small blob held in memory in one step (hash already verified).
    async fn put_small(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()>;

    /// Drops a session's data and state. A missing session is not an error.
    async fn delete_upload(&self, id: &str) -> StoreResult<()>;
}
