//! The hub's side of the swarm: its node (serving pieces of stored blobs
//! to peers holding a ticket), the piece tables of stored blobs, and the
//! tickets it signs for pulls it has authorized.
//!
//! A blob's table is made when the blob is committed (in the background,
//! one blob at a time) or, for blobs stored before the swarm was on, the
//! first time a peer asks for it: one streamed pass over the stored blob,
//! one pass per blob however many ask at once, kept beside the data path,
//! so each table is computed once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use libp2p::{Multiaddr, PeerId};

use super::tier::SwarmTier;
use super::{
    Have, Node, NodeConfig, NodeHandle, PieceSource, PieceTable, Replication, Stats, Ticket,
    TicketIssuer, TicketVerifier,
};
use crate::config::Config;
use crate::registry::digest::Digest;
use crate::storage::{BlobStore, StoreError};

/// Tables kept in memory; beyond, read again from disk.
const MEMORY_TABLES: usize = 4096;

/// The hub's swarm membership.
pub struct HubSwarm {
    node: Node,
    issuer: Arc<TicketIssuer>,
    issuer_name: String,
    /// The PEM bundle peers verify tickets with.
    ticket_key: String,
    tables: Arc<Tables>,
}

impl HubSwarm {
    /// Starts the node of `[p2p]` over `store`.
    pub async fn start(config: &Config, store: Arc<dyn BlobStore>) -> anyhow::Result<HubSwarm> {
        let p = &config.p2p;
        let key = &config.auth_server.private_key;
        let bundle = &config.token.rootcertbundle;
        // A standalone hub has no token service that would have made them.
        crate::auth::token::ensure_dev_keys(key, bundle).context("auth_server.privateKey")?;
        let issuer_name = config.auth_server.issuer.clone();
        let lifetime = Duration::from_secs(p.ticket_lifetime);
        let issuer = Arc::new(
            TicketIssuer::load(key, &issuer_name, lifetime)
                .context("auth_server.privateKey (p2p tickets)")?,
        );
        let ticket_key = std::fs::read_to_string(bundle)
            .with_context(|| format!("token.rootcertbundle: reading {}", bundle.display()))?;
        let verifier = TicketVerifier::from_pem(&ticket_key, &issuer_name)
            .map_err(|e| anyhow::anyhow!("token.rootcertbundle: {e}"))?;
        let tables = Arc::new(Tables {
            dir: config.dockyard.path.join("p2p").join("tables"),
            piece_size: p.piece_size,
            store,
            memory: Mutex::default(),
            making: Mutex::default(),
            node: OnceLock::new(),
            tier: OnceLock::new(),
            background: tokio::sync::Mutex::new(()),
        });
        std::fs::create_dir_all(&tables.dir)
            .with_context(|| format!("creating {}", tables.dir.display()))?;
        let mut node_config = NodeConfig::new(&config.dockyard.path);
        node_config.listen = p.listen_addrs()?;
        node_config.bootstrap = p.bootstrap_addrs()?;
        node_config.mdns = p.mdns;
        let node = Node::start(node_config, Arc::new(verifier), tables.clone())
            .await
            .context("p2p: starting the swarm node")?;
        let h = node.handle();
        let _ = tables.node.set(h.clone());
        tracing::info!(peer = %h.local_peer_id(), addrs = ?h.listen_addrs().await, "p2p node up");
        Ok(HubSwarm {
            node,
            issuer,
            issuer_name,
            ticket_key,
            tables,
        })
    }

    /// The swarm storage tier over `inner` (this node's own store, the
    /// one the node serves pieces from); peers' replicate requests go to it.
    pub fn tier(&self, replicas: usize) -> Arc<SwarmTier> {
        self.install_tier(self.new_tier(replicas))
    }

    /// A tier that answers replicate requests within `d` (tests).
    #[cfg(test)]
    pub fn tier_answering_within(&self, replicas: usize, d: Duration) -> Arc<SwarmTier> {
        self.install_tier(self.new_tier(replicas).answering_within(d))
    }

    fn new_tier(&self, replicas: usize) -> SwarmTier {
        SwarmTier::new(
            self.tables.store.clone(),
            self.node.handle(),
            self.issuer.clone(),
            replicas,
        )
    }

    /// Makes `tier` the one that answers peers' replicate requests.
    fn install_tier(&self, tier: SwarmTier) -> Arc<SwarmTier> {
        let tier = Arc::new(tier);
        let _ = self.tables.tier.set(Arc::downgrade(&tier));
        tier
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.node.handle().stats().clone()
    }

    pub fn piece_size(&self) -> u32 {
        self.tables.piece_size
    }

    pub fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    pub fn ticket_key(&self) -> &str {
        &self.ticket_key
    }

    /// Who we are in the swarm, and where peers reach us.
    pub async fn peer(&self) -> (PeerId, Vec<Multiaddr>) {
        let h = self.node.handle();
        (h.local_peer_id(), h.dial_addrs().await)
    }

    /// A ticket for `requester` to fetch `digest` from peers.
    pub fn ticket(&self, requester: &PeerId, digest: &Digest) -> Ticket {
        self.issuer.issue(requester, digest)
    }

    /// The piece table of the stored blob `digest`, made if need be.
    ///
    /// The hub does not announce the blob as a provider: it is every
    /// download's origin already (ranged GETs, one downloader per piece
    /// among simultaneous ones), and as a provider too it would be asked
    /// for pieces by every agent at once, multiplying its storage's egress
    /// instead of letting the agents serve each other. Its node is the
    /// swarm's rendezvous and serves pieces to whoever asks it directly
    /// with a ticket.
    pub async fn table(&self, digest: &Digest) -> Result<Arc<PieceTable>, StoreError> {
        self.tables.get_or_make(digest).await
    }

    /// Makes the table of a blob just committed, in the background, so
    /// the first pull through the swarm does not wait for it. One at a
    /// time: a burst of pushes queues here instead of hashing in parallel
    /// with the uploads still coming in.
    pub fn blob_committed(&self, digest: &Digest) {
        let (tables, digest) = (self.tables.clone(), digest.clone());
        tokio::spawn(async move {
            let _turn = tables.background.lock().await;
            if let Err(e) = tables.get_or_make(&digest).await {
                tracing::warn!(%digest, error = %e, "p2p: making the piece table of a new blob");
            }
        });
    }
}

/// Piece tables of stored blobs: in memory, on disk, made when a blob is
/// stored or on demand.
struct Tables {
    dir: PathBuf,
    piece_size: u32,
    store: Arc<dyn BlobStore>,
    memory: Mutex<HashMap<Digest, Arc<PieceTable>>>,
    /// One maker per digest; the others wait for it.
    making: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    /// Set once the node runs: to withdraw blobs found deleted.
    node: OnceLock<NodeHandle>,
    /// The storage tier, if on: it answers replicate requests.
    tier: OnceLock<Weak<SwarmTier>>,
    /// Held by the background maker of new blobs' tables.
    background: tokio::sync::Mutex<()>,
}

impl Tables {
    fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}", digest.algorithm().as_str(), digest.hex()))
    }

    fn cached(&self, digest: &Digest) -> Option<Arc<PieceTable>> {
        self.memory.lock().unwrap().get(digest).cloned()
    }

    fn remember(&self, table: Arc<PieceTable>) {
        let mut m = self.memory.lock().unwrap();
        if m.len() >= MEMORY_TABLES {
            m.clear();
        }
        m.insert(table.digest.clone(), table);
    }

    /// A blob deleted (gc) since its table was made: the table goes, and
    /// so does any provider record of it.
    fn forget(&self, digest: &Digest) {
        self.memory.lock().unwrap().remove(digest);
        let _ = std::fs::remove_file(self.path(digest));
        if let Some(h) = self.node.get() {
            let (h, digest) = (h.clone(), digest.clone());
            tokio::spawn(async move { h.withdraw(&digest).await });
        }
    }

    async fn read_saved(&self, digest: &Digest) -> Option<Arc<PieceTable>> {
        let bytes = tokio::fs::read(self.path(digest)).await.ok()?;
        match PieceTable::from_bytes(&bytes) {
            Ok(t) if t.digest == *digest && t.piece_size == self.piece_size => Some(Arc::new(t)),
            // Another piece size configured since, or damaged: make it anew.
            _ => None,
        }
    }

    async fn get_or_make(&self, digest: &Digest) -> Result<Arc<PieceTable>, StoreError> {
        if let Some(t) = self.cached(digest) {
            return Ok(t);
        }
        let gate = self
            .making
            .lock()
            .unwrap()
            .entry(digest.clone())
            .or_default()
            .clone();
        let made = async {
            let _turn = gate.lock().await;
            if let Some(t) = self.cached(digest) {
                return Ok(t);
            }
            if let Some(t) = self.read_saved(digest).await {
                self.remember(t.clone());
                return Ok(t);
            }
            let size = self.store.stat(digest).await?.ok_or(StoreError::NotFound)?;
            let stream = self.store.read(digest, 0..size).await?;
            let table = PieceTable::compute_stream(digest, self.piece_size, stream)
                .await
                .map_err(StoreError::Io)?;
            self.save(&table).await;
            let table = Arc::new(table);
            self.remember(table.clone());
            Ok(table)
        }
        .await;
        let mut making = self.making.lock().unwrap();
        if Arc::strong_count(&gate) <= 2 {
            making.remove(digest);
        }
        made
    }

    /// Writes the table beside the data (temporary file, then rename); a
    /// table that cannot be saved is simply made again next time.
    async fn save(&self, table: &PieceTable) {
        let path = self.path(&table.digest);
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let bytes = table.to_bytes();
        let r = async {
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = r {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::warn!(digest = %table.digest, "p2p: cannot save the piece table: {e}");
        }
    }
}

#[async_trait]
impl PieceSource for Tables {
    async fn piece(&self, digest: &Digest, index: u32) -> Option<Bytes> {
        let table = match self.cached(digest) {
            Some(t) => t,
            None => self.read_saved(digest).await?,
        };
        if index >= table.piece_count() {
            return None;
        }
        let range = table.piece_range(index);
        let mut stream = match self.store.read(digest, range.clone()).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => {
                self.forget(digest);
                return None;
            }
            Err(e) => {
                tracing::warn!(%digest, index, "p2p: reading a piece: {e}");
                return None;
            }
        };
        let mut buf = BytesMut::with_capacity((range.end - range.start) as usize);
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk.ok()?);
        }
        (buf.len() as u64 == range.end - range.start).then(|| buf.freeze())
    }

    async fn table(&self, digest: &Digest) -> Option<PieceTable> {
        match self.store.stat(digest).await {
            Ok(Some(_)) => self.get_or_make(digest).await.ok().map(|t| (*t).clone()),
            _ => None,
        }
    }

    async fn replicate(&self, digest: &Digest, from: PeerId) -> Replication {
        match self.tier.get().and_then(Weak::upgrade) {
            Some(tier) => tier.replica(digest, from).await,
            None => Replication::Refused,
        }
    }

    async fn have(&self, digest: &Digest) -> Have {
        let known = self.cached(digest).is_some() || self.path(digest).is_file();
        match self.store.stat(digest).await {
            Ok(Some(_)) if known => Have::All,
            Ok(None) => {
                if known {
                    self.forget(digest);
                }
                Have::None
            }
            _ => Have::None,
        }
    }
}
