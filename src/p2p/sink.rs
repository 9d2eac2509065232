//! Where downloads put verified pieces, and the registry of downloads in
//! progress through which the node serves their verified pieces to other
//! peers before the download finishes (Spegel advertises an image only
//! after a full pull, so a wave of cold pulls all hits the upstream).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use libp2p::PeerId;

use super::buffers::PieceBuf;
use super::piece::{Bitfield, PieceTable};
use super::protocol::Have;
use crate::registry::digest::Digest;

/// Storage for the pieces of one blob being downloaded. Called from
/// blocking threads; calls for different pieces may run concurrently.
pub trait PieceSink: Send + Sync + 'static {
    /// Stores a verified piece that starts at byte `offset` of the blob.
    /// The bytes are shared, not copied: a sink may keep them (to serve
    /// them again without reading them back).
    fn put(&self, offset: u64, bytes: &Bytes) -> io::Result<()>;

    /// Reads back `len` bytes at `offset`, all within stored pieces (to
    /// serve them to peers and clients).
    fn read(&self, offset: u64, len: usize) -> io::Result<Bytes>;
}

/// A file of the blob's size written at piece offsets (sparse until full).
///
/// Whole pages of a piece are written with `O_DIRECT` where the file
/// system takes it and the piece sits page-aligned in memory (received
/// pieces do, in `PieceBuf`s; others are written buffered): a buffered
/// write costs the kernel a page-cache copy,
/// buffer heads and writeback for every page (here 2.2 s of CPU per GiB on
/// ext4 against 0.05 s direct), and every agent of a wave writes the whole
/// blob. Reads are direct too (into reused buffers, `PieceBuf::read_at`):
/// through the page cache every agent would read the whole blob back
/// into it a page at a time. Where the file system refuses `O_DIRECT`,
/// writes are buffered and reads map the page cache; pieces are written
/// once and read only once verified and stored, so mapped bytes never
/// change.
pub struct FileSink {
    file: Arc<File>,
    size: u64,
    /// The same file opened with `O_DIRECT`, if the file system allows it.
    direct: Option<File>,
}

/// Alignment of direct I/O (file offsets, lengths and memory).
const DIRECT_ALIGN: usize = 4096;

/// Turns readahead off for `file` (this open file, not others of the same
/// path), which reads through the page cache only where the file system
/// refuses `O_DIRECT`: a download file fills out of order and its
/// unwritten ranges are holes, which readahead past a verified piece would
/// read and zero into the page cache for nothing.
fn no_readahead(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its arguments; an error leaves
    // readahead as it was.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM);
    }
}

impl FileSink {
    /// Creates (or truncates) `path` with length `size`.
    pub fn create(path: &Path, size: u64) -> io::Result<FileSink> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(size)?;
        no_readahead(&file);
        let file = Arc::new(file);
        let direct = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
                .ok()
        };
        Ok(FileSink { file, size, direct })
    }

    /// Flushes the data to disk (before the caller commits the file).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Writes the whole pages of `bytes` at `offset` directly, if both
    /// are page-aligned (pieces received into `PieceBuf`s are); returns
    /// how many bytes it wrote (0 if it could not: the caller writes them
    /// buffered).
    fn put_direct(&self, offset: u64, bytes: &[u8]) -> usize {
        let Some(direct) = &self.direct else { return 0 };
        let len = bytes.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        if len == 0
            || !(offset as usize).is_multiple_of(DIRECT_ALIGN)
            || !(bytes.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN)
        {
            return 0;
        }
        match direct.write_all_at(&bytes[..len], offset) {
            Ok(()) => len,
            Err(_) => 0,
        }
    }
}

impl PieceSink for FileSink {
    fn put(&self, offset: u64, bytes: &Bytes) -> io::Result<()> {
        let done = self.put_direct(offset, bytes);
        self.file.write_all_at(&bytes[done..], offset + done as u64)
    }

    /// Read directly (as written) where the file system allows it, else
    /// a mapped window of the page cache.
    fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let end = offset.checked_add(len as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if len == 0 {
            return Ok(Bytes::new());
        }
        match &self.direct {
            Some(direct) => PieceBuf::read_at(direct, offset, len),
            None => crate::zerocopy::map_file_populated(&self.file, offset, len),
        }
    }
}

/// A blob assembled in memory (small blobs, tests).
#[cfg_attr(not(test), allow(dead_code))] // the tests use it
pub struct MemorySink {
    data: Mutex<Vec<u8>>,
}

#[cfg_attr(not(test), allow(dead_code))] // the tests use it
impl MemorySink {
    pub fn new(size: u64) -> MemorySink {
        MemorySink {
            data: Mutex::new(vec![0; size as usize]),
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.data.lock().unwrap().clone()
    }
}

impl PieceSink for MemorySink {
    fn put(&self, offset: u64, bytes: &Bytes) -> io::Result<()> {
        let mut d = self.data.lock().unwrap();
        let end = offset as usize + bytes.len();
        if end > d.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "piece beyond the blob",
            ));
        }
        d[offset as usize..end].copy_from_slice(bytes);
        Ok(())
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let d = self.data.lock().unwrap();
        let end = offset as usize + len;
        if end > d.len() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::copy_from_slice(&d[offset as usize..end]))
    }
}

/// Most requesters remembered per download (peers that asked us for the
/// blob with a valid ticket: they are downloading it too).
const INTERESTED_LIMIT: usize = 256;

/// A download in progress as the node sees it.
pub(crate) struct Partial {
    pub table: Arc<PieceTable>,
    pub sink: Arc<dyn PieceSink>,
    state: Mutex<PartialState>,
}

struct PartialState {
    have: Bitfield,
    pending: Bitfield,
    interested: HashSet<PeerId>,
}

impl Partial {
    pub fn has(&self, index: u32) -> bool {
        self.state.lock().unwrap().have.get(index)
    }

    /// What a `have` request about this blob is answered.
    pub fn have_map(&self) -> Have {
        let s = self.state.lock().unwrap();
        if s.have.is_full() {
            Have::All
        } else {
            Have::Partial {
                have: s.have.clone(),
                pending: s.pending.clone(),
            }
        }
    }

    pub fn set_have(&self, index: u32) {
        let mut s = self.state.lock().unwrap();
        s.have.set(index, true);
        s.pending.set(index, false);
    }

    pub fn set_pending(&self, index: u32, pending: bool) {
        self.state.lock().unwrap().pending.set(index, pending);
    }

    pub fn note_interested(&self, peer: PeerId) {
        let mut s = self.state.lock().unwrap();
        if s.interested.len() < INTERESTED_LIMIT {
            s.interested.insert(peer);
        }
    }

    pub fn take_interested(&self) -> Vec<PeerId> {
        self.state.lock().unwrap().interested.drain().collect()
    }

    /// Piece `index` read back from the sink. Not hashed again: it was
    /// verified on its way in and the requester verifies it (as pieces
    /// served from the agent's cache), and a second hash of every piece
    /// served cost as much CPU as the verification on arrival. Blocking.
    pub fn read_piece(&self, index: u32) -> Option<Bytes> {
        if !self.has(index) {
            return None;
        }
        let r = self.table.piece_range(index);
        self.sink.read(r.start, (r.end - r.start) as usize).ok()
    }
}

/// The downloads in progress in this process, by digest.
#[derive(Default)]
pub(crate) struct Partials {
    map: Mutex<HashMap<Digest, Arc<Partial>>>,
}

impl Partials {
    pub fn get(&self, digest: &Digest) -> Option<Arc<Partial>> {
        self.map.lock().unwrap().get(digest).cloned()
    }

    /// Registers a download; `None` if one of the same blob is registered.
    pub fn register(
        self: &Arc<Self>,
        table: Arc<PieceTable>,
        sink: Arc<dyn PieceSink>,
    ) -> Option<(Arc<Partial>, Seeding)> {
        let mut map = self.map.lock().unwrap();
        let digest = table.digest.clone();
        if map.contains_key(&digest) {
            return None;
        }
        let n = table.piece_count();
        let partial = Arc::new(Partial {
            table,
            sink,
            state: Mutex::new(PartialState {
                have: Bitfield::new(n),
                pending: Bitfield::new(n),
                interested: HashSet::new(),
            }),
        });
        map.insert(digest.clone(), partial.clone());
        Some((
            partial,
            Seeding {
                partials: self.clone(),
                digest,
            },
        ))
    }
}

/// Keeps a finished (or running) download's pieces served from its sink;
/// dropping it stops that. Hold it until the blob is in the store whose
/// `PieceSource` then serves it.
pub struct Seeding {
    partials: Arc<Partials>,
    digest: Digest,
}

impl Drop for Seeding {
    fn drop(&mut self) {
        self.partials.map.lock().unwrap().remove(&self.digest);
    }
}

impl std::fmt::Debug for Seeding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seeding({})", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces of every shape (aligned and not, in the file and in memory,
    /// of many pages, shorter than a page, the blob's tail) read back as
    /// written, in any order, whether or not the file system takes direct
    /// writes.
    #[test]
    fn file_sink_stores_every_piece_shape() {
        // A span of many pages.
        const SPAN: usize = 512 << 10;
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * SPAN as u64 + 5000;
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let sink = FileSink::create(&dir.path().join("blob"), size).unwrap();
        let pieces: [(u64, u64); 5] = [
            (SPAN as u64 + 8192, size),
            (0, 100),
            (100, 4203),
            (4203, SPAN as u64),
            (SPAN as u64, SPAN as u64 + 8192),
        ];
        for (i, (a, b)) in pieces.into_iter().enumerate() {
            let piece = &data[a as usize..b as usize];
            // Every other piece from an aligned buffer, as received pieces.
            let bytes = if i % 2 == 0 {
                let mut buf = crate::p2p::buffers::PieceBuf::new(piece.len()).unwrap();
                buf.as_mut_slice().copy_from_slice(piece);
                buf.freeze()
            } else {
                Bytes::copy_from_slice(piece)
            };
            sink.put(a, &bytes).unwrap();
        }
        sink.sync().unwrap();
        assert!(sink.read(0, size as usize).unwrap()[..] == data[..]);
        assert!(std::fs::read(dir.path().join("blob")).unwrap() == data);
    }
}
