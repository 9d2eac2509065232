//! Local-disk blob store.
//!
//! Layout under the root: `blobs/<algorithm>/<first two hex>/<hex>` for
//! committed blobs, `uploads/<session id>` for upload data (created with the
//! first chunk) and `uploads/<session id>.state` for its state, `tmp/` for
//! blobs being written in one step. Commit is write, `fdatasync`, `rename`,
//! `fsync` of the directory: a crash leaves either no blob or the whole one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream;

use super::{
    BlobStore, ByteStream, StoreError, StoreResult, StoredBlob, UploadState, UploadWriter,
};
use crate::registry::digest::Digest;
use crate::zerocopy;

/// Reads below this size are copied into memory; larger ones are mapped
/// and sent with zero copies.
const COPY_READ_MAX: u64 = 128 * 1024;
/// Size of each mapped window handed to the HTTP layer.
const MAP_WINDOW: u64 = 8 * 1024 * 1024;
/// Chunk size for reading upload data back (re-hashing).
const READ_CHUNK: usize = 1024 * 1024;

pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn open(root: &Path) -> io::Result<LocalStore> {
        for dir in ["blobs", "uploads", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        // Leftovers of one-step writes interrupted by a crash are garbage.
        for entry in fs::read_dir(root.join("tmp"))? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(LocalStore {
            root: root.to_path_buf(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn state_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(format!("{id}.state"))
    }
}

/// Writes a session's state under a temporary name and renames it over the
/// old one, so a reader never sees a torn state.
fn write_state(path: &Path, state: &UploadState) -> io::Result<()> {
    let tmp = path.with_extension("state.tmp");
    fs::write(&tmp, serde_json::to_vec(state).map_err(io::Error::other)?)?;
    fs::rename(&tmp, path)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StoreError::from),
        Err(e) => Err(StoreError::Io(io::Error::other(e))),
    }
}

fn not_found_to_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Entry names of a directory in byte order (none if it does not exist).
fn sorted_names(dir: &Path) -> io::Result<Vec<String>> {
    let Some(entries) = not_found_to_none(fs::read_dir(dir))? else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for e in entries {
        if let Ok(name) = e?.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves a fully written, synced file to its blob path, durably.
fn install(src: &Path, dst: &Path) -> io::Result<()> {
    let dir = dst.parent().expect("blob path has a parent");
    if let Err(e) = fs::rename(src, dst) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
        fs::create_dir_all(dir)?;
        fs::rename(src, dst)?;
        if let Some(alg_dir) = dir.parent() {
            sync_dir(alg_dir)?;
        }
    }
    sync_dir(dir)
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn stat(&self, digest: &Digest) -> StoreResult<Option<u64>> {
        let path = self.blob_path(digest);
        // A stat is far cheaper than a blocking-pool hop.
        Ok(not_found_to_none(fs::metadata(path))?.map(|m| m.len()))
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StoreResult<ByteStream> {
        let path = self.blob_path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let len = range.end - range.start;
        if len == 0 {
            return Ok(Box::pin(stream::empty()));
        }
        if len <= COPY_READ_MAX {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, range.start)?;
            return Ok(Box::pin(stream::once(async move { Ok(Bytes::from(buf)) })));
        }
        Ok(Box::pin(zerocopy::file_windows(
            Arc::new(file),
            range,
            MAP_WINDOW,
        )))
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<()> {
        let path = self.blob_path(digest);
        blocking(move || not_found_to_none(fs::remove_file(path)).map(|_| ())).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> StoreResult<Vec<StoredBlob>> {
        let root = self.root.join("blobs");
        let after = after.cloned();
        blocking(move || {
            let mut out = Vec::new();
            for alg in sorted_names(&root)? {
                for prefix in sorted_names(&root.join(&alg))? {
                    let dir = root.join(&alg).join(&prefix);
                    for hex in sorted_names(&dir)? {
                        // Anything that is not a digest is no blob of ours.
                        let Ok(digest) = format!("{alg}:{hex}").parse::<Digest>() else {
                            continue;
                        };
                        if after.as_ref().is_some_and(|a| &digest <= a) {
                            continue;
                        }
                        let Some(meta) = not_found_to_none(fs::metadata(dir.join(&hex)))? else {
                            continue;
                        };
                        let modified = meta
                            .modified()?
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        out.push(StoredBlob {
                            digest,
                            size: meta.len(),
                            modified,
                        });
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_upload(&self, id: &str, state: &UploadState) -> StoreResult<()> {
        Ok(write_state(&self.state_path(id), state)?)
    }

    async fn upload_state(&self, id: &str) -> StoreResult<Option<UploadState>> {
        let Some(raw) = not_found_to_none(fs::read(self.state_path(id)))? else {
            return Ok(None);
        };
        let state = serde_json::from_slice(&raw).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("upload {id} state: {e}"),
            )
        })?;
        Ok(Some(state))
    }

    async fn save_upload_state(&self, id: &str, state: &UploadState) -> StoreResult<()> {
        let path = self.state_path(id);
        if !path.exists() {
            return Err(StoreError::NotFound);
        }
        Ok(write_state(&path, state)?)
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<String>> {
        let dir = self.root.join("uploads");
        blocking(move || {
            let cutoff =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(before.max(0) as u64);
            let mut stale = Vec::new();
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".state")) else {
                    continue;
                };
                let Ok(meta) = entry.metadata() else { continue };
                if meta.modified()? < cutoff {
                    stale.push(id.to_string());
                    if stale.len() >= limit {
                        break;
                    }
                }
            }
            Ok(stale)
        })
        .await
    }

    fn append_upload(&self, id: &str, offset: u64) -> StoreResult<Box<dyn UploadWriter>> {
        let path = self.upload_path(id);
        // The data file is created with the first chunk.
        let mut file = match OpenOptions::new()
            .write(true)
            .create(offset == 0)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let have = file.metadata()?.len();
        if have < offset {
            // Acknowledged data is missing (lost with unsynced writes).
            return Err(StoreError::NotFound);
        }
        if have > offset {
            file.set_len(offset)?;
        }
        file.seek(SeekFrom::Start(offset))?;
        Ok(Box::new(LocalWriter {
            file,
            len: offset,
            flushed_to: offset,
        }))
    }

    async fn read_upload(&self, id: &str, len: u64) -> StoreResult<ByteStream> {
        if len == 0 {
            return Ok(Box::pin(stream::empty()));
        }
        let path = self.upload_path(id);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let chunks = stream::unfold((file.take(len), false), |(mut f, done)| async move {
            if done {
                return None;
            }
            let r = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; READ_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    match f.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return (f, Err(e)),
                    }
                }
                buf.truncate(filled);
                (f, Ok(buf))
            })
            .await;
            match r {
                Ok((_, Ok(buf))) if buf.is_empty() => None,
                Ok((f, Ok(buf))) => Some((Ok(Bytes::from(buf)), (f, false))),
                Ok((f, Err(e))) => Some((Err(e), (f, true))),
                Err(e) => Some((
                    Err(io::Error::other(e)),
                    (File::open("/dev/null").expect("/dev/null").take(0), true),
                )),
            }
        });
        Ok(Box::pin(chunks))
    }

    async fn commit_upload(&self, id: &str, digest: &Digest, len: u64) -> StoreResult<()> {
        let src = self.upload_path(id);
        let state = self.state_path(id);
        let dst = self.blob_path(digest);
        blocking(move || {
            if fs::metadata(&dst).is_ok() {
                // Same digest, same bytes: keep the copy already durable.
                not_found_to_none(fs::remove_file(&src))?;
                return not_found_to_none(fs::remove_file(&state)).map(|_| ());
            }
            if len == 0 {
                // Nothing was ever written: the empty blob.
                File::create(&src)?;
            }
            let file = OpenOptions::new().write(true).open(&src)?;
            let have = file.metadata()?.len();
            if have < len {
                return Err(io::Error::other(format!(
                    "upload data is {have} bytes, expected {len}"
                )));
            }
            if have > len {
                file.set_len(len)?;
            }
            file.sync_data()?;
            drop(file);
            install(&src, &dst)?;
            not_found_to_none(fs::remove_file(&state)).map(|_| ())
        })
        .await
    }

    async fn put_small(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()> {
        let dst = self.blob_path(digest);
        let tmp = self
            .root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        blocking(move || {
            if fs::metadata(&dst).is_ok() {
                return Ok(());
            }
            let mut file = File::create(&tmp)?;
            let written = file.write_all(&bytes).and_then(|_| file.sync_data());
            drop(file);
            if let Err(e) = written.and_then(|_| install(&tmp, &dst)) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            Ok(())
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> StoreResult<()> {
        let data = self.upload_path(id);
        let state = self.state_path(id);
        blocking(move || {
            not_found_to_none(fs::remove_file(state))?;
            not_found_to_none(fs::remove_file(data)).map(|_| ())
        })
        .await
    }
}

/// Dirty data beyond this is handed to the disk while the upload goes on,
/// so the `fdatasync` at commit waits only for the tail.
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

struct LocalWriter {
    file: File,
    len: u64,
    flushed_to: u64,
}

impl UploadWriter for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        if self.len - self.flushed_to >= WRITEBACK_WINDOW {
            start_writeback(&self.file, self.flushed_to, self.len - self.flushed_to);
            self.flushed_to = self.len;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// Starts asynchronous writeback of a file range without waiting for it.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open; the call only schedules I/O. Failure is
    // harmless: the later fdatasync writes whatever is left.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::contract::{self, Subject};

    struct Local {
        store: LocalStore,
        _dir: tempfile::TempDir,
    }

    fn local() -> Local {
        let dir = tempfile::tempdir().unwrap();
        Local {
            store: LocalStore::open(dir.path()).unwrap(),
            _dir: dir,
        }
    }

    /// Files under a directory, recursively.
    fn files(dir: &Path) -> usize {
        fs::read_dir(dir).map_or(0, |entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => files(&e.path()),
                    _ => 1,
                })
                .sum()
        })
    }

    #[async_trait]
    impl Subject for Local {
        fn store(&self) -> &dyn BlobStore {
            &self.store
        }

        async fn pieces(&self) -> usize {
            files(&self.store.root)
        }

        fn chunk(&self) -> Option<u64> {
            None
        }
    }

    #[tokio::test]
    async fn contract() {
        contract::run_all(&local()).await;
    }

    #[tokio::test]
    async fn big_blob_streams() {
        contract::big_blob(&local(), 300 << 20, 64 << 20).await;
    }
}
