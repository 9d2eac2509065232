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

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use libp2p::PeerId;

use super::{NodeHandle, Ticket, TicketIssuer};
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
        }
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
                match self.fetch_from(digest, peer).await {
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
    pub async fn fetch_from(&self, digest: &Digest, peer: PeerId) -> Result<(), String> {
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
        let r = self.receive(digest, peer, &ticket, &table, &id).await;
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
    ) -> Result<(), String> {
        let mut hasher = Hasher::new(digest.algorithm());
        let mut offset = 0u64;
        for index in 0..table.piece_count() {
            let bytes = self
                .node
                .fetch_piece(peer, digest, index, ticket)
                .await
                .map_err(|e| format!("piece {index}: {e}"))?;
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
        }
        if hasher.finish() != *digest || offset != table.size {
            return Err("the bytes do not hash to the digest".into());
        }
        self.inner
            .commit_upload(id, digest, offset)
            .await
            .map_err(|e| e.to_string())
    }

    /// Has `digest`, just stored here, copied to `replicas - 1` other
    /// nodes; an error if fewer took it.
    async fn replicate(&self, digest: &Digest) -> StoreResult<()> {
        let need = self.replicas.saturating_sub(1);
        if need == 0 {
            return Ok(());
        }
        let ticket = self.ticket(digest);
        let mut done = 0;
        for peer in self.node.connected_peers().await {
            match self.node.replicate(peer, digest, &ticket).await {
                Ok(()) => {
                    done += 1;
                    if done == need {
                        return Ok(());
                    }
                }
                Err(e) => tracing::debug!(%peer, %digest, "p2p tier: no copy there: {e}"),
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
