//! The peer swarm: hub nodes and host agents exchange blob pieces with each
//! other so a wave of pulls of one image is served mostly by the pullers
//! themselves, not by the hub's storage.
//!
//! - `buffers`: reused page-aligned buffers that pieces are received and
//!   read back into.
//! - `chain`: SHA-2 states at piece boundaries, which check each piece on
//!   its own and, with the last, the blob's digest.
//! - `piece`: piece tables (fixed-size pieces and the `chain` state at each
//!   boundary), which a download checks every piece against, made by the
//!   hub once per stored blob (when it is stored, or at the first request
//!   for a blob older than the swarm).
//! - `ticket`: hub-signed, short-lived capabilities "peer P may fetch blob
//!   D", checked by every peer before it serves anything.
//! - `protocol`: the `/dockyard/piece/1` wire format (pieces, which pieces a
//!   node has, piece tables, replication requests).
//! - `node`: one libp2p swarm per process (TCP and QUIC, noise, yamux,
//!   identify, ping, Kademlia provider records keyed by digest, the piece
//!   protocol), driven on its own task and used through a cloneable
//!   `NodeHandle`.
//! - `sink`: where a download writes verified pieces (`PieceSink`), and the
//!   registry through which the node serves pieces of downloads still in
//!   progress.
//! - `download`: the `Downloader`: parallel, rarest-first piece fetching
//!   from providers with per-piece verification, banning of peers that
//!   serve bad bytes, and origin fallback; the last piece's check is the
//!   whole-digest check.
//! - `hub`: the hub's membership: its node over the blob store, piece
//!   tables of stored blobs, tickets.
//! - `noise`: the swarm's secure channel on TCP: libp2p's noise handshake,
//!   AES-256-GCM messages decrypted in place (libp2p's own noise is
//!   offered second, for nodes without it).
//! - `transport`: the TCP connections' muxer: yamux with frames of four
//!   whole noise messages (about 256 KiB).
//! - `tier`: the swarm storage tier of hub nodes on their own disks.
//! - `metrics`: the Prometheus text of a node's counters.
//!
//! Architecture invariant: no byte reaches a `PieceSink` before it hashed
//! from the table's state at its piece's start to the state at its end
//! (the last piece to the digest), so a download succeeds only if the
//! whole blob hashes to its digest. No piece, and no answer about which pieces a node has, goes
//! to a peer without a valid ticket naming that peer and that digest.
//!
//! Architecture invariant: memory is bounded by the in-flight pieces
//! (concurrency × piece size), never by the blob size.

pub mod buffers;
pub mod chain;
pub mod download;
pub mod hub;
pub mod metrics;
pub mod node;
pub mod noise;
pub mod piece;
pub mod protocol;
pub mod sink;
pub mod ticket;
pub mod tier;
pub mod transport;

#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

pub use download::{Download, DownloadConfig, Downloader};
pub use node::{Node, NodeConfig, NodeHandle};
pub use piece::{Bitfield, PieceTable};
pub use protocol::Have;
pub use sink::{FileSink, PieceSink};
pub use ticket::{Ticket, TicketIssuer, TicketVerifier};

use crate::registry::digest::Digest;

/// What a node serves to peers from complete blobs it holds (the hub's
/// blob store, an agent's cache). Pieces of downloads in progress are
/// served by the node itself from their sinks, verified pieces only.
#[async_trait]
pub trait PieceSource: Send + Sync + 'static {
    /// Piece `index` of blob `digest` (its piece size is the one of the
    /// blob's piece table), or `None` if it is not held.
    async fn piece(&self, digest: &Digest, index: u32) -> Option<Bytes>;

    /// Which pieces of `digest` are held: `Have::All` for a stored blob,
    /// `Have::None` otherwise.
    async fn have(&self, digest: &Digest) -> Have;

    /// The piece table of a held blob (hub nodes answer; others hold
    /// their tables only for their own downloads).
    async fn table(&self, _digest: &Digest) -> Option<PieceTable> {
        None
    }

    /// Has `digest` copied from `from` onto this node: starts the copy
    /// if it does not run yet and says where it stands (hub nodes with the
    /// swarm storage tier; others refuse).
    async fn replicate(&self, _digest: &Digest, _from: libp2p::PeerId) -> Replication {
        Replication::Refused
    }
}

/// Where the copy of a blob onto a node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    Stored,
    /// Running; this many bytes are stored so far.
    Receiving(u64),
    /// Not taken, or failed.
    Refused,
}

/// A source that holds nothing (a node that only downloads).
pub struct NoPieces;

#[async_trait]
impl PieceSource for NoPieces {
    async fn piece(&self, _: &Digest, _: u32) -> Option<Bytes> {
        None
    }

    async fn have(&self, _: &Digest) -> Have {
        Have::None
    }
}

/// Where a download gets pieces no peer can give: later the hub over HTTP
/// (a ranged blob GET). Its bytes are verified like a peer's.
#[async_trait]
pub trait Origin: Send + Sync + 'static {
    /// Piece `index`, the bytes `range` of the blob.
    async fn piece(&self, index: u32, range: Range<u64>) -> anyhow::Result<Bytes>;
}

/// Counters of one node and the downloads run through it, for the metrics
/// endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_from_peers: AtomicU64,
    pub bytes_from_origin: AtomicU64,
    pub pieces_from_peers: AtomicU64,
    pub pieces_from_origin: AtomicU64,
    /// Pieces whose bytes did not match the table (from peers or origin).
    pub pieces_rejected: AtomicU64,
    pub peers_banned: AtomicU64,
    pub bytes_served: AtomicU64,
    pub pieces_served: AtomicU64,
    /// Requests refused for a missing or invalid ticket.
    pub requests_refused: AtomicU64,
    /// Piece requests answered `busy`.
    pub busy_refusals: AtomicU64,
    pub downloads_completed: AtomicU64,
    pub downloads_failed: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    pub bytes_from_peers: u64,
    pub bytes_from_origin: u64,
    pub pieces_from_peers: u64,
    pub pieces_from_origin: u64,
    pub pieces_rejected: u64,
    pub peers_banned: u64,
    pub bytes_served: u64,
    pub pieces_served: u64,
    pub requests_refused: u64,
    pub busy_refusals: u64,
    pub downloads_completed: u64,
    pub downloads_failed: u64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            bytes_from_peers: g(&self.bytes_from_peers),
            bytes_from_origin: g(&self.bytes_from_origin),
            pieces_from_peers: g(&self.pieces_from_peers),
            pieces_from_origin: g(&self.pieces_from_origin),
            pieces_rejected: g(&self.pieces_rejected),
            peers_banned: g(&self.peers_banned),
            bytes_served: g(&self.bytes_served),
            pieces_served: g(&self.pieces_served),
            requests_refused: g(&self.requests_refused),
            busy_refusals: g(&self.busy_refusals),
            downloads_completed: g(&self.downloads_completed),
            downloads_failed: g(&self.downloads_failed),
        }
    }
}
