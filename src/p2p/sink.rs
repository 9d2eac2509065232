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

use super::piece::{Bitfield, PieceTable};
use super::protocol::Have;
use crate::registry::digest::Digest;

/// Storage for the pieces of one blob being downloaded. Called from
/// blocking threads; calls for different pieces may run concurrently.
pub trait PieceSink: Send + Sync + 'static {
    /// Stores a verified piece that starts at byte `offset` of the blob.
    fn put(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;

    /// Reads back `len` bytes at `offset`, all within stored pieces (to
    /// serve them to peers, and to hash the whole blob).
    fn read(&self, offset: u64, len: usize) -> io::Result<Bytes>;
}

/// A file of the blob's size written at piece offsets (sparse until full).
pub struct FileSink {
    file: File,
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
        Ok(FileSink { file })
    }

    /// Flushes the data to disk (before the caller commits the file).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl PieceSink for FileSink {
    fn put(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
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
    fn put(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
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

    /// Piece `index` read back from the sink and checked against the
    /// table once more, so a damaged sink never gets this node banned.
    /// Blocking.
    pub fn read_piece(&self, index: u32) -> Option<Bytes> {
        if !self.has(index) {
            return None;
        }
        let r = self.table.piece_range(index);
        let bytes = self.sink.read(r.start, (r.end - r.start) as usize).ok()?;
        self.table.verify(index, &bytes).then_some(bytes)
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
