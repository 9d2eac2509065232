//! Downloads of blobs into the cache through the swarm, one per digest in
//! this process however many clients ask for it at once. Each download
//! writes verified pieces to a file under the cache's `tmp/` and tells its
//! readers which pieces are there, so clients are streamed verified pieces
//! in order while the download goes on; the last piece is released only
//! once the whole blob hashed to its digest. A complete blob moves into
//! the cache and stays announced; a failed one is dropped and withdrawn.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use libp2p::PeerId;
use tokio::sync::watch;

use super::cache::Cache;
use super::hub::{Hub, HubOrigin, Pieces};
use crate::p2p::{
    Bitfield, Download, Downloader, FileSink, NodeHandle, PieceSink, PieceTable, Ticket,
};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    /// Whole blob verified.
    Done,
    Failed(String),
}

/// One download in progress, as its readers see it.
pub struct Fetch {
    pub table: Arc<PieceTable>,
    /// The download's file (it stays valid after the file is renamed into
    /// the cache or removed).
    file: Arc<FileSink>,
    have: Mutex<Bitfield>,
    status: watch::Sender<(u64, Status)>,
    /// The pieces stored last, still in memory.
    recent: Recent,
}

/// Pieces kept in memory after they are stored, most recent last.
const RECENT_PIECES: usize = 8;

/// The pieces a download stored last, kept in memory after they are
/// written: the local client reads at the download's frontier and peers
/// ask for a piece soon after it is announced, so most reads of a piece
/// are answered from here. The file would answer them from the disk (the
/// direct writes leave the pieces out of the page cache), which through
/// the page cache cost a solo agent a fifth of its CPU for its client
/// alone, and directly still costs a disk read.
#[derive(Default)]
struct Recent {
    pieces: Mutex<VecDeque<(u64, Bytes)>>,
}

impl Recent {
    fn keep(&self, offset: u64, bytes: Bytes) {
        let mut pieces = self.pieces.lock().unwrap();
        if pieces.len() == RECENT_PIECES {
            pieces.pop_front();
        }
        pieces.push_back((offset, bytes));
    }

    /// `len` bytes at `offset` if one kept piece holds them all.
    fn get(&self, offset: u64, len: usize) -> Option<Bytes> {
        let pieces = self.pieces.lock().unwrap();
        pieces.iter().rev().find_map(|(start, bytes)| {
            let from = offset.checked_sub(*start)? as usize;
            (from + len <= bytes.len()).then(|| bytes.slice(from..from + len))
        })
    }
}

impl Fetch {
    pub fn has(&self, index: u32) -> bool {
        self.have.lock().unwrap().get(index)
    }

    /// `len` verified bytes at `offset` (the caller waited until they
    /// are `ready`): from memory if they were stored lately, else read
    /// back from the file.
    pub fn window(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        match self.recent.get(offset, len) {
            Some(bytes) => Ok(bytes),
            None => self.file.read(offset, len),
        }
    }

    /// `window`, with a read from the file done on a blocking thread.
    pub async fn read_window(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        if let Some(bytes) = self.recent.get(offset, len) {
            return Ok(bytes);
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.read(offset, len))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    /// A download of `table` into a new file at `path`, not yet running.
    fn create(table: Arc<PieceTable>, path: &std::path::Path) -> io::Result<Arc<Fetch>> {
        Ok(Arc::new(Fetch {
            file: Arc::new(FileSink::create(path, table.size)?),
            have: Mutex::new(Bitfield::new(table.piece_count())),
            status: watch::channel((0, Status::Running)).0,
            recent: Recent::default(),
            table,
        }))
    }

    /// A download as `Fetcher::start` makes it, with the sink its pieces
    /// go to.
    #[cfg(test)]
    pub fn for_test(
        table: Arc<PieceTable>,
        path: &std::path::Path,
    ) -> (Arc<Fetch>, Arc<dyn PieceSink>) {
        let fetch = Fetch::create(table, path).unwrap();
        let sink = Arc::new(ProgressSink {
            fetch: fetch.clone(),
        });
        (fetch, sink)
    }

    pub fn subscribe(&self) -> watch::Receiver<(u64, Status)> {
        self.status.subscribe()
    }

    fn bump(&self) {
        self.status.send_modify(|(v, _)| *v += 1);
    }

    pub(super) fn finish(&self, status: Status) {
        self.status.send_modify(|(v, s)| {
            *v += 1;
            *s = status;
        });
    }

    /// Waits until piece `index` may be sent to a client: verified, and
    /// for the last piece the whole blob verified too.
    pub async fn ready(&self, index: u32) -> io::Result<()> {
        let last = index + 1 == self.table.piece_count();
        let mut rx = self.subscribe();
        loop {
            let status = rx.borrow_and_update().1.clone();
            match status {
                Status::Failed(e) => return Err(io::Error::other(e)),
                Status::Done => return Ok(()),
                Status::Running if !last && self.has(index) => return Ok(()),
                Status::Running => {}
            }
            if rx.changed().await.is_err() {
                return Err(io::Error::other("download abandoned"));
            }
        }
    }
}

/// The `Fetch`'s file, which tells the `Fetch`'s readers about every
/// stored (verified) piece and keeps it among the recent ones.
struct ProgressSink {
    fetch: Arc<Fetch>,
}

impl PieceSink for ProgressSink {
    fn put(&self, offset: u64, bytes: &Bytes) -> io::Result<()> {
        self.fetch.file.put(offset, bytes)?;
        let table = &self.fetch.table;
        let index = (offset / table.piece_size as u64) as u32;
        if table.piece_range(index) == (offset..offset + bytes.len() as u64) {
            self.fetch.recent.keep(offset, bytes.clone());
            self.fetch.have.lock().unwrap().set(index, true);
            self.fetch.bump();
        }
        Ok(())
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Bytes> {
        self.fetch.window(offset, len)
    }
}

/// What the agent shares with its download tasks.
pub struct Fetcher {
    pub hub: Hub,
    pub node: NodeHandle,
    pub downloader: Arc<Downloader>,
    pub cache: Arc<Cache>,
    running: Mutex<HashMap<Digest, Arc<Fetch>>>,
}

impl Fetcher {
    pub fn new(
        hub: Hub,
        node: NodeHandle,
        downloader: Downloader,
        cache: Arc<Cache>,
    ) -> Arc<Fetcher> {
        Arc::new(Fetcher {
            hub,
            node,
            downloader: Arc::new(downloader),
            cache,
            running: Mutex::default(),
        })
    }

    /// The download of `digest` running in this process, if any.
    pub fn running(&self, digest: &Digest) -> Option<Arc<Fetch>> {
        self.running.lock().unwrap().get(digest).cloned()
    }

    /// Joins the download of `p.digest` or starts it, with the hub's
    /// table and ticket, the client's credentials for the origin.
    pub async fn start(
        self: &Arc<Self>,
        name: &RepoName,
        p: Pieces,
        authorization: Option<&str>,
    ) -> io::Result<Arc<Fetch>> {
        if let Some(f) = self.running(&p.digest) {
            return Ok(f);
        }
        let table = Arc::new(p.table);
        let digest = table.digest.clone();
        let path = self.cache.temp_path(&digest);
        let fetch = Fetch::create(table.clone(), &path)?;
        {
            let mut running = self.running.lock().unwrap();
            if let Some(f) = running.get(&digest) {
                let _ = std::fs::remove_file(&path);
                return Ok(f.clone());
            }
            running.insert(digest.clone(), fetch.clone());
        }
        if let Some(peer) = &p.peer
            && let Ok(id) = peer.id.parse::<PeerId>()
        {
            for a in peer.dial_addrs() {
                let mut bare = a.clone();
                bare.pop();
                self.node.add_address(id, bare).await;
            }
        }
        let sink = Arc::new(ProgressSink {
            fetch: fetch.clone(),
        });
        let origin = HubOrigin::new(
            self.hub.clone(),
            name.clone(),
            digest.clone(),
            authorization.map(String::from),
        );
        let download = Download {
            table,
            ticket: Ticket::new(p.ticket),
            origin,
            sink: sink.clone(),
            peers: Vec::new(),
        };
        let this = self.clone();
        tokio::spawn(async move { this.run(download, sink, path).await });
        Ok(fetch)
    }

    async fn run(self: Arc<Self>, download: Download, sink: Arc<ProgressSink>, path: PathBuf) {
        let fetch = sink.fetch.clone();
        let table = fetch.table.clone();
        let digest = table.digest.clone();
        tracing::info!(%digest, size = table.size, pieces = table.piece_count(), "fetching blob");
        let result = self.downloader.download(download).await;
        match result {
            Ok(done) => {
                let r = &done.report;
                tracing::info!(
                    %digest,
                    from_peers = r.bytes_from_peers,
                    from_origin = r.bytes_from_origin,
                    rejected = r.pieces_rejected,
                    banned = r.peers_banned.len(),
                    peers = r.peers_used,
                    ms = r.elapsed.as_millis() as u64,
                    "blob fetched and verified"
                );
                fetch.finish(Status::Done);
                let cache = self.cache.clone();
                let keep = cache.fits(table.size);
                let moved = tokio::task::spawn_blocking(move || {
                    fetch.file.sync()?;
                    if keep {
                        cache.insert(&path, table).map(Some)
                    } else {
                        std::fs::remove_file(&path).map(|_| None)
                    }
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                match moved {
                    Ok(Some(evicted)) => {
                        for d in evicted {
                            tracing::info!(digest = %d, "cache: evicted");
                            self.node.withdraw(&d).await;
                        }
                    }
                    Ok(None) => {
                        tracing::info!(%digest, "blob larger than the cache: not kept");
                        self.node.withdraw(&digest).await;
                    }
                    Err(e) => {
                        tracing::warn!(%digest, error = %e, "cache: storing the blob failed");
                        self.node.withdraw(&digest).await;
                    }
                }
                // The cache serves it to peers from now on.
                drop(done.seeding);
            }
            Err(e) => {
                tracing::warn!(%digest, error = %e, "blob fetch failed");
                fetch.finish(Status::Failed(e.to_string()));
                let _ = std::fs::remove_file(&path);
            }
        }
        self.running.lock().unwrap().remove(&digest);
    }
}
