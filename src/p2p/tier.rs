//! The swarm storage tier of hub nodes (`[p2p] tier = true`): a `BlobStore`
//! over the node's own store that fetches a blob it lacks from the peer
//! hub nodes it is connected to, and, with `[p2p] replicas` above 1, has
//! each blob it stores copied to that many nodes in all before reporting
//! it stored, so a push is acknowledged only once it is on `replicas`
//! nodes.
//!
//! Hub nodes share the token key, so each signs its own tickets. A fetched
//! blob is checked piece by piece against the table the peer sent and as a
//! whole against its digest before it is committed to the node's store.
//!
//! Replication is asked of `replicas - 1` peers at once; each runs its copy
//! in the background and is asked again until it holds the blob, so a copy
//! is bounded by its progress (`STALL` without a new byte), not by the
//! size of the blob.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use libp2p::PeerId;
use libp2p::futures::stream::{self, FuturesUnordered};
use libp2p::futures::{FutureExt, StreamExt};

use super::node::FetchError;
use super::protocol::ErrorCode;
use super::{NodeHandle, Replication, Ticket, TicketIssuer};
use crate::registry::digest::{Digest, Hasher};
use crate::storage::{
    BlobStore, ByteStream, StoreError, StoreResult, StoredBlob, UploadState, UploadWriter,
};

pub struct SwarmTier {
    inner: Arc<dyn BlobStore>,
    node: NodeHandle,
    issuer: Arc<TicketIssuer>,
    replicas: usize,
    /// One fetch per digest at a time; the others wait for it.
    fetching: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Copies peers asked of this node, running or finished (an outcome
    /// is kept until the asker hears of it, or for `OUTCOME_KEPT`).
    copies: Mutex<HashMap<Digest, Arc<Incoming>>>,
    /// How long a replicate request waits for its copy before answering
    /// how far it got (`ANSWER_WITHIN`; shorter in tests).
    answer_within: Duration,
}

/// Pieces requested from a peer at once while fetching a blob.
const PIPELINE: usize = 4;
/// A copy onto a peer that stores no new byte for this long has failed.
const STALL: Duration = Duration::from_secs(30);
/// How often a peer is asked how its copy goes.
const POLL: Duration = Duration::from_millis(100);
/// How long a replicate request waits for the copy before answering how
/// far it got (a small blob is stored within one request).
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// How long the outcome of a copy nobody asks about again is kept.
const OUTCOME_KEPT: Duration = Duration::from_secs(60);
/// Attempts at a piece the peer answers `busy` (serving others), and the
/// wait between them.
const BUSY_ATTEMPTS: u32 = 50;
const BUSY_BACKOFF: Duration = Duration::from_millis(100);

/// A copy of a blob onto this node that a peer asked for.
struct Incoming {
    received: AtomicU64,
    /// Set when it ended: `None` stored, or why it failed; and when.
    outcome: Mutex<Option<(Option<String>, Instant)>>,
    ended: tokio::sync::watch::Sender<bool>,
}

impl Incoming {
    fn stale(&self) -> bool {
        matches!(&*self.outcome.lock().unwrap(), Some((_, at)) if at.elapsed() > OUTCOME_KEPT)
    }
}

fn io_err(message: String) -> StoreError {
    StoreError::Io(std::io::Error::other(message))
}

impl SwarmTier {
    pub fn new(
        inner: Arc<dyn BlobStore>,
        node: NodeHandle,
        issuer: Arc<TicketIssuer>,
        replicas: usize,
    ) -> SwarmTier {
        SwarmTier {
            inner,
            node,
            issuer,
            replicas,
            fetching: Mutex::default(),
            copies: Mutex::default(),
            answer_within: ANSWER_WITHIN,
        }
    }

    /// The same, answering replicate requests within `d`.
    #[cfg(test)]
    pub fn answering_within(mut self, d: Duration) -> SwarmTier {
        self.answer_within = d;
        self
    }

    fn ticket(&self, digest: &Digest) -> Ticket {
        self.issuer.issue(&self.node.local_peer_id(), digest)
    }

    /// Fetches `digest` from a connected peer that holds it; true once it
    /// is in the node's store.
    async fn fetch(&self, digest: &Digest) -> StoreResult<bool> {
        let gate = self
            .fetching
            .lock()
            .unwrap()
            .entry(digest.clone())
            .or_default()
            .clone();
        let fetched = async {
            let _turn = gate.lock().await;
            if self.inner.stat(digest).await?.is_some() {
                return Ok(true);
            }
            for peer in self.node.connected_peers().await {
                match self.fetch_from(digest, peer, None).await {
                    Ok(()) => return Ok(true),
                    Err(e) => tracing::debug!(%peer, %digest, "p2p tier: not from this peer: {e}"),
                }
            }
            Ok(false)
        }
        .await;
        let mut fetching = self.fetching.lock().unwrap();
        if Arc::strong_count(&gate) <= 2 {
            fetching.remove(digest);
        }
        fetched
    }

    /// Fetches `digest` from `peer` into the node's store: the peer's
    /// table, every piece checked against it and appended to an upload
    /// session, the whole checked against the digest, then committed.
    /// `progress` counts the bytes appended.
    pub async fn fetch_from(
        &self,
        digest: &Digest,
        peer: PeerId,
        progress: Option<&AtomicU64>,
    ) -> Result<(), String> {
        if matches!(self.inner.stat(digest).await, Ok(Some(_))) {
            return Ok(());
        }
        let ticket = self.ticket(digest);
        let table = self
            .node
            .fetch_table(peer, digest, &ticket)
            .await
            .map_err(|e| format!("table: {e}"))?;
        let id = format!("p2p-{}", uuid::Uuid::new_v4().simple());
        let now = crate::p2p::ticket::unix_now() as i64;
        let state = UploadState {
            repo: String::new(),
            offset: 0,
            hash_state: Hasher::new(digest.algorithm()).save(),
            started_at: now,
            updated_at: now,
        };
        self.inner
            .create_upload(&id, &state)
            .await
            .map_err(|e| e.to_string())?;
        let r = self
            .receive(digest, peer, &ticket, &table, &id, progress)
            .await;
        if r.is_err() {
            let _ = self.inner.delete_upload(&id).await;
        }
        r
    }

    async fn receive(
        &self,
        digest: &Digest,
        peer: PeerId,
        ticket: &Ticket,
        table: &super::PieceTable,
        id: &str,
        progress: Option<&AtomicU64>,
    ) -> Result<(), String> {
        let mut hasher = Hasher::new(digest.algorithm());
        let mut offset = 0u64;
        // A few pieces in flight (a round trip each), appended in order.
        let mut pieces = stream::iter(0..table.piece_count())
            .map(|index| {
                self.fetch_piece(peer, digest, index, ticket)
                    .map(move |r| (index, r))
            })
            .buffered(PIPELINE);
        while let Some((index, bytes)) = pieces.next().await {
            let bytes = bytes.map_err(|e| format!("piece {index}: {e}"))?;
            if !table.verify(index, &bytes) {
                return Err(format!("piece {index} does not match its table"));
            }
            hasher.update(&bytes);
            let mut w = self
                .inner
                .append_upload(id, offset)
                .map_err(|e| e.to_string())?;
            let len = bytes.len() as u64;
            tokio::task::spawn_blocking(move || {
                w.write(&bytes)?;
                w.finish()
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            offset += len;
            if let Some(p) = progress {
                p.store(offset, Ordering::Relaxed);
            }
        }
        if hasher.finish() != *digest || offset != table.size {
            return Err("the bytes do not hash to the digest".into());
        }
        self.inner
            .commit_upload(id, digest, offset)
            .await
            .map_err(|e| e.to_string())
    }

    /// One piece from `peer`, waiting out its `busy` answers for a while.
    async fn fetch_piece(
        &self,
        peer: PeerId,
        digest: &Digest,
        index: u32,
        ticket: &Ticket,
    ) -> Result<Bytes, FetchError> {
        let mut attempts = 0;
        loop {
            match self.node.fetch_piece(peer, digest, index, ticket).await {
                Err(FetchError::Refused(ErrorCode::Busy)) if attempts < BUSY_ATTEMPTS => {
                    attempts += 1;
                    tokio::time::sleep(BUSY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    /// A peer asks this node to copy `digest` from it: starts the copy if
    /// none runs, waits for it up to `ANSWER_WITHIN`, and says where it
    /// stands.
    pub async fn replica(self: &Arc<Self>, digest: &Digest, from: PeerId) -> Replication {
        let existing = self.copies.lock().unwrap().get(digest).cloned();
        let copy = match existing {
            Some(c) if !c.stale() => c,
            _ => {
                match self.inner.stat(digest).await {
                    Ok(Some(_)) => return Replication::Stored,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(%digest, "p2p tier: replicating: {e}");
                        return Replication::Refused;
                    }
                }
                self.start_copy(digest, from)
            }
        };
        let mut ended = copy.ended.subscribe();
        let _ = tokio::time::timeout(self.answer_within, ended.wait_for(|e| *e)).await;
        let outcome = copy.outcome.lock().unwrap().clone();
        let Some((failure, _)) = outcome else {
            return Replication::Receiving(copy.received.load(Ordering::Relaxed));
        };
        // Heard of: forget it (a later request sees the store, or retries).
        {
            let mut copies = self.copies.lock().unwrap();
            if copies.get(digest).is_some_and(|c| Arc::ptr_eq(c, &copy)) {
                copies.remove(digest);
            }
        }
        match failure {
            None => Replication::Stored,
            Some(why) => {
                tracing::warn!(%digest, %from, "p2p tier: replicating: {why}");
                Replication::Refused
            }
        }
    }

    /// The copy of `digest` from `from`, started now unless another
    /// request started one meanwhile.
    fn start_copy(self: &Arc<Self>, digest: &Digest, from: PeerId) -> Arc<Incoming> {
        let copy = {
            let mut copies = self.copies.lock().unwrap();
            copies.retain(|_, c| !c.stale());
            if let Some(c) = copies.get(digest) {
                return c.clone();
            }
            let c = Arc::new(Incoming {
                received: AtomicU64::new(0),
                outcome: Mutex::new(None),
                ended: tokio::sync::watch::Sender::new(false),
            });
            copies.insert(digest.clone(), c.clone());
            c
        };
        let (this, digest, c) = (self.clone(), digest.clone(), copy.clone());
        tokio::spawn(async move {
            let r = this.fetch_from(&digest, from, Some(&c.received)).await;
            *c.outcome.lock().unwrap() = Some((r.err(), Instant::now()));
            c.ended.send_replace(true);
        });
        copy
    }

    /// Has `peer` copy `digest` from this node; returns once it holds it,
    /// an error if it refuses, fails, or stores nothing new for `STALL`.
    async fn copy_to(&self, peer: PeerId, digest: &Digest, ticket: &Ticket) -> Result<(), String> {
        let mut seen = 0;
        let mut moved = Instant::now();
        loop {
            match self.node.replicate(peer, digest, ticket).await {
                Ok(Replication::Stored) => return Ok(()),
                Ok(Replication::Receiving(n)) => {
                    if n > seen {
                        (seen, moved) = (n, Instant::now());
                    } else if moved.elapsed() > STALL {
                        return Err(format!("no progress for {}s at {n} bytes", STALL.as_secs()));
                    }
                }
                Ok(Replication::Refused) => return Err("refused".into()),
                Err(e) => return Err(e.to_string()),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Has `digest`, just stored here, copied to `replicas - 1` other
    /// nodes, that many at once (the next peer when one fails); an error
    /// if fewer took it.
    async fn replicate(&self, digest: &Digest) -> StoreResult<()> {
        let need = self.replicas.saturating_sub(1);
        if need == 0 {
            return Ok(());
        }
        let ticket = self.ticket(digest);
        let mut peers = self.node.connected_peers().await.into_iter();
        let mut running = FuturesUnordered::new();
        let mut done = 0;
        loop {
            while done + running.len() < need
                && let Some(peer) = peers.next()
            {
                let ticket = &ticket;
                running.push(async move { (peer, self.copy_to(peer, digest, ticket).await) });
            }
            let Some((peer, result)) = running.next().await else {
                break;
            };
            match result {
                Ok(()) => {
                    done += 1;
                    if done == need {
                        return Ok(());
                    }
                }
                Err(e) => tracing::warn!(%peer, %digest, "p2p tier: no copy there: {e}"),
            }
        }
        Err(io_err(format!(
            "{digest} is stored on this node and {done} other(s); [p2p] replicas = {} \
             needs {need} other(s)",
            self.replicas
        )))
    }
}

#[async_trait]
impl BlobStore for SwarmTier {
    async fn stat(&self, digest: &Digest) -> StoreResult<Option<u64>> {
        if let Some(size) = self.inner.stat(digest).await? {
            return Ok(Some(size));
        }
        if self.fetch(digest).await? {
            self.inner.stat(digest).await
        } else {
            Ok(None)
        }
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StoreResult<ByteStream> {
        match self.inner.read(digest, range.clone()).await {
            Err(StoreError::NotFound) if self.fetch(digest).await? => {
                self.inner.read(digest, range).await
            }
            other => other,
        }
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<()> {
        self.inner.delete(digest).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> StoreResult<Vec<StoredBlob>> {
        self.inner.list_blobs(after, limit).await
    }

    async fn create_upload(&self, id: &str, state: &UploadState) -> StoreResult<()> {
        self.inner.create_upload(id, state).await
    }

    async fn upload_state(&self, id: &str) -> StoreResult<Option<UploadState>> {
        self.inner.upload_state(id).await
    }

    async fn save_upload_state(&self, id: &str, state: &UploadState) -> StoreResult<()> {
        self.inner.save_upload_state(id, state).await
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<String>> {
        self.inner.stale_uploads(before, limit).await
    }

    fn append_upload(&self, id: &str, offset: u64) -> StoreResult<Box<dyn UploadWriter>> {
        self.inner.append_upload(id, offset)
    }

    async fn read_upload(&self, id: &str, len: u64) -> StoreResult<ByteStream> {
        self.inner.read_upload(id, len).await
    }

    async fn commit_upload(&self, id: &str, digest: &Digest, len: u64) -> StoreResult<()> {
        self.inner.commit_upload(id, digest, len).await?;
        self.replicate(digest).await
    }

    async fn put_small(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()> {
        self.inner.put_small(digest, bytes).await?;
        self.replicate(digest).await
    }

    async fn delete_upload(&self, id: &str) -> StoreResult<()> {
        self.inner.delete_upload(id).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::p2p::hub::HubSwarm;
    use crate::storage::contract;
    use crate::storage::local::LocalStore;

    /// A hub node with the tier on, its store at `dir`, tickets signed
    /// with the key under `keys` (shared, so nodes trust each other's).
    async fn hub(
        dir: &Path,
        keys: &Path,
        bootstrap: Option<&str>,
    ) -> (HubSwarm, Arc<dyn BlobStore>) {
        std::fs::create_dir_all(dir).unwrap();
        let text = format!(
            "[dockyard]\npath = \"{d}\"\n\
             [auth_server]\nprivateKey = \"{k}/token.key\"\n\
             [token]\nrootcertbundle = \"{k}/token.crt\"\n\
             [p2p]\nenabled = true\ntier = true\nreplicas = 2\n\
             listen = \"/ip4/127.0.0.1/tcp/0\"\npiece_size = 65536\n{b}",
            d = dir.display(),
            k = keys.display(),
            b = bootstrap
                .map(|b| format!("bootstrap = \"{b}\"\n"))
                .unwrap_or_default(),
        );
        let path = dir.join("runtime.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path, true).unwrap();
        let store: Arc<dyn BlobStore> = Arc::new(LocalStore::open(dir).unwrap());
        let swarm = HubSwarm::start(&config, store.clone()).await.unwrap();
        (swarm, store)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_outliving_the_answer_window_is_asked_again_until_stored() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let (a, a_store) = hub(&tmp.path().join("a"), &keys, None).await;
        let a_tier = a.tier(2);
        let (a_id, a_addrs) = a.peer().await;
        let boot = format!("{}/p2p/{a_id}", a_addrs[0]);
        let (b, b_store) = hub(&tmp.path().join("b"), &keys, Some(&boot)).await;
        // B answers at once, long before any copy of a few MiB is done.
        let b_tier = b.tier_answering_within(2, Duration::from_millis(1));

        // On A alone (its own store): B, asked for a copy, says how far it
        // got, and is asked again until it holds the blob.
        let data = contract::random_bytes(6 << 20);
        let d = contract::upload(a_store.as_ref(), &data).await;
        let first = b_tier.replica(&d, a_id).await;
        assert!(matches!(first, Replication::Receiving(_)), "{first:?}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut receiving = 1;
        loop {
            match b_tier.replica(&d, a_id).await {
                Replication::Stored => break,
                Replication::Receiving(_) => receiving += 1,
                Replication::Refused => panic!("refused after {receiving} answers"),
            }
            assert!(Instant::now() < deadline, "not stored in time");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let size = data.len() as u64;
        assert_eq!(contract::read(b_store.as_ref(), &d, 0..size).await, data);
        // Asked once more: stored, no second copy.
        assert_eq!(b_tier.replica(&d, a_id).await, Replication::Stored);

        // A push through A's tier (replicas = 2) is acknowledged only once
        // B holds it, though B answers every request before its copy ends.
        let data = contract::random_bytes(5 << 20);
        let d = loop {
            // B joins A's swarm in the background; until then A has no one
            // to copy to and the commit fails.
            let id = contract::session(a_tier.as_ref()).await;
            let n = contract::patch(a_tier.as_ref(), &id, 0, &data).await;
            let d = contract::sha256(&data);
            match a_tier.commit_upload(&id, &d, n).await {
                Ok(()) => break d,
                Err(e) => {
                    assert!(Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let size = data.len() as u64;
        assert_eq!(b_store.stat(&d).await.unwrap(), Some(size));
        assert_eq!(contract::read(b_store.as_ref(), &d, 0..size).await, data);
    }
}
