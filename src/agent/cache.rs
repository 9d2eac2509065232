//! The agent's blob cache: verified blobs on disk, bounded in bytes, least
//! recently used evicted first; each with its piece table so the node can
//! serve its pieces to peers.
//!
//! Layout under `<data>/cache/`: `blobs/<alg>-<hex>` (the blob) and
//! `blobs/<alg>-<hex>.table` (its piece table, binary form), written
//! before the blob is renamed into place; `tmp/` holds downloads in
//! progress and is emptied at start. An entry exists only when both files
//! do. Eviction withdraws the provider record (through the caller).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use crate::p2p::buffers::{PieceBuf, open_direct};
use crate::p2p::{Have, PieceSource, PieceTable};
use crate::registry::digest::Digest;

struct Entry {
    table: Arc<PieceTable>,
    /// LRU clock value of the last use.
    used: u64,
}

struct Index {
    entries: HashMap<Digest, Entry>,
    bytes: u64,
    clock: u64,
}

pub struct Cache {
    dir: PathBuf,
    capacity: u64,
    index: Mutex<Index>,
}

fn file_name(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().as_str(), digest.hex())
}

impl Cache {
    /// Opens the cache under `dir`, keeping the blobs already there (most
    /// recently modified first) up to `capacity`.
    pub fn open(dir: &Path, capacity: u64) -> io::Result<(Cache, Vec<Digest>)> {
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&blobs)?;
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(&blobs)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".table") {
                continue;
            }
            let path = e.path();
            let loaded = (|| {
                let table = PieceTable::from_bytes(&std::fs::read(table_path(&path)).ok()?).ok()?;
                let meta = e.metadata().ok()?;
                (file_name(&table.digest) == name && meta.len() == table.size).then_some(())?;
                Some((table, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
            })();
            match loaded {
                Some(t) => found.push(t),
                None => {
                    tracing::warn!(file = %path.display(), "cache: dropping a blob without a valid table");
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(table_path(&path));
                }
            }
        }
        found.sort_by_key(|(_, modified)| *modified);
        let cache = Cache {
            dir: dir.to_path_buf(),
            capacity,
            index: Mutex::new(Index {
                entries: HashMap::new(),
                bytes: 0,
                clock: 0,
            }),
        };
        let mut kept = Vec::new();
        for (table, _) in found {
            let digest = table.digest.clone();
            // Oldest first in; what does not fit is evicted here already.
            for gone in cache.admit(Arc::new(table)) {
                kept.retain(|d| d != &gone);
                cache.remove_files(&gone);
            }
            if cache.contains(&digest) {
                kept.push(digest);
            }
        }
        Ok((cache, kept))
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// A fresh path for a download in progress.
    pub fn temp_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("tmp").join(format!(
            "{}.{}",
            file_name(digest),
            uuid::Uuid::new_v4().simple()
        ))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join(file_name(digest))
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.index.lock().unwrap().entries.contains_key(digest)
    }

    /// (bytes held, blobs held)
    pub fn usage(&self) -> (u64, u64) {
        let i = self.index.lock().unwrap();
        (i.bytes, i.entries.len() as u64)
    }

    /// Opens a cached blob for reading and marks it used. The open file
    /// stays readable even if the blob is evicted meanwhile.
    pub fn open_blob(&self, digest: &Digest) -> Option<(Arc<File>, Arc<PieceTable>)> {
        let table = {
            let mut i = self.index.lock().unwrap();
            i.clock += 1;
            let clock = i.clock;
            let e = i.entries.get_mut(digest)?;
            e.used = clock;
            e.table.clone()
        };
        let path = self.blob_path(digest);
        match File::open(&path) {
            Ok(f) => {
                let _ = f.set_modified(SystemTime::now());
                Some((Arc::new(f), table))
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cache: blob file unreadable; forgetting it");
                self.forget(digest);
                None
            }
        }
    }

    /// Whether a blob of `size` bytes may be cached at all.
    pub fn fits(&self, size: u64) -> bool {
        size <= self.capacity
    }

    /// Moves the complete, verified file at `temp` into the cache. Returns
    /// the digests evicted to make room (the caller withdraws them).
    /// Blocking.
    pub fn insert(&self, temp: &Path, table: Arc<PieceTable>) -> io::Result<Vec<Digest>> {
        let path = self.blob_path(&table.digest);
        let tpath = table_path(&path);
        let staged = temp.with_extension("table");
        std::fs::write(&staged, table.to_bytes())?;
        File::open(&staged)?.sync_all()?;
        std::fs::rename(&staged, &tpath)?;
        std::fs::rename(temp, &path)?;
        File::open(self.dir.join("blobs"))?.sync_all()?;
        let evicted = self.admit(table);
        for d in &evicted {
            self.remove_files(d);
        }
        Ok(evicted)
    }

    /// Adds an entry and evicts the least recently used others until the
    /// total fits; returns the evicted.
    fn admit(&self, table: Arc<PieceTable>) -> Vec<Digest> {
        let mut i = self.index.lock().unwrap();
        i.clock += 1;
        let clock = i.clock;
        let digest = table.digest.clone();
        let size = table.size;
        if let Some(old) = i
            .entries
            .insert(digest.clone(), Entry { table, used: clock })
        {
            i.bytes -= old.table.size;
        }
        i.bytes += size;
        let mut evicted = Vec::new();
        while i.bytes > self.capacity {
            let victim = i
                .entries
                .iter()
                .filter(|(d, _)| **d != digest)
                .min_by_key(|(_, e)| e.used)
                .map(|(d, _)| d.clone());
            let Some(victim) = victim else { break };
            let e = i.entries.remove(&victim).unwrap();
            i.bytes -= e.table.size;
            evicted.push(victim);
        }
        evicted
    }

    fn forget(&self, digest: &Digest) {
        let mut i = self.index.lock().unwrap();
        if let Some(e) = i.entries.remove(digest) {
            i.bytes -= e.table.size;
        }
    }

    fn remove_files(&self, digest: &Digest) {
        let path = self.blob_path(digest);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(table_path(&path));
    }

    fn entry(&self, digest: &Digest) -> Option<Arc<PieceTable>> {
        self.index
            .lock()
            .unwrap()
            .entries
            .get(digest)
            .map(|e| e.table.clone())
    }
}

fn table_path(blob: &Path) -> PathBuf {
    let mut s = blob.as_os_str().to_owned();
    s.push(".table");
    PathBuf::from(s)
}

/// The cache as the node's source of pieces for peers (bytes as they are on
/// disk: peers verify them against the table).
pub struct CacheSource(pub Arc<Cache>);

#[async_trait]
impl PieceSource for CacheSource {
    async fn piece(&self, digest: &Digest, index: u32) -> Option<Bytes> {
        let table = self.0.entry(digest)?;
        if index >= table.piece_count() {
            return None;
        }
        let range = table.piece_range(index);
        let path = self.0.blob_path(digest);
        tokio::task::spawn_blocking(move || {
            let f = open_direct(&path).ok()?;
            PieceBuf::read_at(&f, range.start, (range.end - range.start) as usize).ok()
        })
        .await
        .ok()?
    }

    async fn have(&self, digest: &Digest) -> Have {
        if self.0.contains(digest) {
            Have::All
        } else {
            Have::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    fn put(cache: &Cache, data: &[u8]) -> (Digest, Vec<Digest>) {
        let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, 4096, data));
        let tmp = cache.temp_path(&table.digest);
        std::fs::write(&tmp, data).unwrap();
        let d = table.digest.clone();
        (d, cache.insert(&tmp, table).unwrap())
    }

    #[tokio::test]
    async fn lru_bounded_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, kept) = Cache::open(dir.path(), 10_000).unwrap();
        assert!(kept.is_empty());
        let (a, ev) = put(&cache, &[1u8; 4000]);
        assert!(ev.is_empty());
        let (b, ev) = put(&cache, &[2u8; 4000]);
        assert!(ev.is_empty());
        // a used more recently than b: b goes.
        assert!(cache.open_blob(&a).is_some());
        let (c, ev) = put(&cache, &[3u8; 4000]);
        assert_eq!(ev, vec![b.clone()]);
        assert!(!cache.contains(&b) && cache.contains(&a) && cache.contains(&c));
        assert_eq!(cache.usage(), (8000, 2));
        let src = CacheSource(Arc::new(cache));
        assert_eq!(src.have(&a).await, Have::All);
        assert_eq!(src.have(&b).await, Have::None);
        assert_eq!(&src.piece(&c, 0).await.unwrap()[..], &[3u8; 4000][..]);
        assert!(src.piece(&c, 1).await.is_none());
        drop(src);
        let (cache, kept) = Cache::open(dir.path(), 10_000).unwrap();
        assert_eq!(kept.len(), 2);
        assert!(cache.contains(&a) && cache.contains(&c));
        // A smaller bound at start keeps only what fits.
        drop(cache);
        let (cache, kept) = Cache::open(dir.path(), 5_000).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(cache.usage().1, 1);
        assert!(!cache.fits(5_001));
    }
}
