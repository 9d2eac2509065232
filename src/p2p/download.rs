//! The downloader: one blob from the swarm, verified piece by piece.
//!
//! Peers come from the DHT (re-queried while the download runs), from
//! hints, and from requesters of the same blob (a peer that asks us with a
//! valid ticket is downloading it too). Each peer is asked which pieces it
//! has and which it is fetching; pieces are fetched rarest first (at random
//! among the lowest few equals), at most `concurrency` in flight and `per_peer` per peer.
//! A piece whose bytes do not match the table gets its peer banned and is
//! fetched elsewhere.
//!
//! The origin (the hub) is asked only for pieces no known peer has or is
//! fetching, for pieces peers failed to deliver repeatedly, or when the
//! swarm stalls. Among the nodes downloading the same blob at once, each
//! missing piece has one owner by rendezvous hashing of (peer, piece), and
//! only its owner takes it from the origin; a downloader that makes no
//! progress for `owner_idle` loses its share to the others. So a wave of
//! simultaneous cold pulls takes about one copy from the origin and the
//! rest from each other.
//!
//! The node announces itself as a provider when the download starts (so
//! simultaneous downloaders find each other and see which pieces each is
//! fetching before any arrives), and every verified piece is served to
//! others at once (the node reads it back from the sink). The whole digest
//! needs no second pass: each piece is checked against the chain of SHA-2
//! states in the table, the last against the digest itself (`chain`), so
//! pieces that all pass are the blob.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use libp2p::PeerId;
use libp2p::futures::future::BoxFuture;
use libp2p::futures::stream::FuturesUnordered;
use libp2p::futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::node::{FetchError, NodeHandle};
use super::piece::{Bitfield, PieceTable};
use super::protocol::{ErrorCode, Have};
use super::sink::{Partial, PieceSink, Seeding};
use super::ticket::Ticket;
use super::{Origin, Stats};
use crate::registry::digest::Digest;

#[derive(Clone, Debug)]
pub struct DownloadConfig {
    /// Pieces in flight in total (peers and origin).
    pub concurrency: usize,
    /// Pieces in flight from one peer.
    pub per_peer: usize,
    /// Pieces in flight from the origin (one until a first piece is in).
    pub origin_concurrency: usize,
    /// Bound of one piece fetch from a peer.
    pub piece_timeout: Duration,
    /// Bound of one piece fetch from the origin.
    pub origin_timeout: Duration,
    /// How often the DHT is asked for providers again.
    pub provider_refresh: Duration,
    /// How often a peer with part of the blob is asked what it has.
    pub have_refresh: Duration,
    /// How long to wait for the first providers and their answers before
    /// the origin may be used.
    pub initial_wait: Duration,
    /// Without a verified piece for this long, the origin may serve pieces
    /// peers have (they are busy, slow or gone).
    pub stall_timeout: Duration,
    /// After this many failed attempts from peers, a piece may come from
    /// the origin.
    pub peer_attempts: u32,
    /// Consecutive origin failures that end the download.
    pub origin_failures: u32,
    /// A downloader whose piece count has not grown for this long owns no
    /// origin pieces any more (it is stuck or gone): others take them.
    pub owner_idle: Duration,
    /// Most peers one download keeps track of.
    pub max_peers: usize,
    /// How long a peer that answered `busy` is left alone.
    pub busy_backoff: Duration,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            concurrency: 8,
            per_peer: 4,
            origin_concurrency: 2,
            piece_timeout: Duration::from_secs(20),
            origin_timeout: Duration::from_secs(60),
            provider_refresh: Duration::from_secs(2),
            have_refresh: Duration::from_millis(300),
            initial_wait: Duration::from_secs(1),
            stall_timeout: Duration::from_secs(3),
            peer_attempts: 3,
            origin_failures: 5,
            owner_idle: Duration::from_secs(3),
            max_peers: 32,
            busy_backoff: Duration::from_millis(100),
        }
    }
}

/// What to download.
pub struct Download {
    /// From the hub, which verified the pull.
    pub table: Arc<PieceTable>,
    /// From the hub, for this node and this digest.
    pub ticket: Ticket,
    pub origin: Arc<dyn Origin>,
    pub sink: Arc<dyn PieceSink>,
    /// Peers known to have the blob besides those the DHT names (e.g.
    /// named by the hub).
    pub peers: Vec<PeerId>,
}

/// How a download went.
#[derive(Clone, Debug, Default)]
pub struct DownloadReport {
    pub bytes_from_peers: u64,
    pub bytes_from_origin: u64,
    pub pieces_from_peers: u32,
    pub pieces_from_origin: u32,
    pub pieces_rejected: u32,
    pub peers_banned: Vec<PeerId>,
    /// Distinct peers that delivered at least one piece.
    pub peers_used: usize,
    pub elapsed: Duration,
}

/// A finished download: the report, and the registration that keeps its
/// pieces served until the caller has the blob in its store.
#[derive(Debug)]
pub struct Downloaded {
    pub report: DownloadReport,
    pub seeding: Seeding,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("a download of {0} is already running in this process")]
    InProgress(Digest),
    #[error("origin failed {count} times in a row, last: {last}")]
    Origin { count: u32, last: String },
    #[error("piece sink: {0}")]
    Sink(#[from] io::Error),
}

pub struct Downloader {
    node: NodeHandle,
    config: DownloadConfig,
}

impl Downloader {
    pub fn new(node: NodeHandle, config: DownloadConfig) -> Downloader {
        Downloader { node, config }
    }

    /// Fetches the blob of `d.table` into `d.sink`. On failure (or if
    /// the future is dropped) the node stops serving the blob's pieces and
    /// withdraws its announcement; on success it keeps announcing it (the
    /// caller withdraws when it deletes the blob).
    pub async fn download(&self, d: Download) -> Result<Downloaded, DownloadError> {
        let stats = self.node.stats().clone();
        let digest = d.table.digest.clone();
        let (partial, seeding) = self
            .node
            .shared
            .partials
            .register(d.table.clone(), d.sink.clone())
            .ok_or_else(|| DownloadError::InProgress(digest.clone()))?;
        let mut unannounce = Unannounce(Some((self.node.clone(), digest)));
        let mut run = Run::new(self, d, partial);
        match run.run().await {
            Ok(report) => {
                Stats::add(&stats.downloads_completed, 1);
                unannounce.0 = None;
                Ok(Downloaded { report, seeding })
            }
            Err(e) => {
                Stats::add(&stats.downloads_failed, 1);
                Err(e)
            }
        }
    }
}

/// Withdraws the announcement of a download that did not complete, also
/// when its future is dropped.
struct Unannounce(Option<(NodeHandle, Digest)>);

impl Drop for Unannounce {
    fn drop(&mut self) {
        if let Some((node, digest)) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move { node.withdraw(&digest).await });
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PieceState {
    Missing,
    InFlight,
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    Peer(PeerId),
    Origin,
}

enum Outcome {
    /// Verified and stored: its length.
    Stored(usize),
    /// Bytes that do not match the table.
    Bad,
    Failed(FetchError),
    OriginFailed(String),
    Sink(io::Error),
}

struct PeerInfo {
    /// `None` until the peer answered a `have` request.
    have: Option<Have>,
    inflight: usize,
    failures: u32,
    retry_at: Instant,
    have_inflight: bool,
    last_have: Option<Instant>,
    delivered: bool,
    /// Rendezvous hashing key.
    key: u64,
    /// Pieces it had at the last answer, and when that number last grew.
    have_count: u32,
    last_growth: Instant,
}

impl PeerInfo {
    fn new(peer: &PeerId, now: Instant) -> PeerInfo {
        PeerInfo {
            key: peer_key(peer),
            have_count: 0,
            last_growth: now,
            have: None,
            inflight: 0,
            failures: 0,
            retry_at: now,
            have_inflight: false,
            last_have: None,
            delivered: false,
        }
    }

    fn has(&self, i: u32) -> bool {
        self.have.as_ref().is_some_and(|h| h.has(i))
    }
}

fn peer_key(peer: &PeerId) -> u64 {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(peer.to_bytes());
    u64::from_le_bytes(h[..8].try_into().unwrap())
}

/// Rendezvous score of a peer for a piece (splitmix64 of both).
fn score(key: u64, index: u32) -> u64 {
    let mut z = key ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small xorshift generator for the random choices (no need for a
/// cryptographic one: it only spreads load).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

type FetchFuture = BoxFuture<'static, (u32, Source, Outcome)>;
type HaveFuture = BoxFuture<'static, (PeerId, Result<Have, FetchError>)>;

struct Run {
    node: NodeHandle,
    config: DownloadConfig,
    table: Arc<PieceTable>,
    ticket: Ticket,
    origin: Arc<dyn Origin>,
    sink: Arc<dyn PieceSink>,
    partial: Arc<Partial>,
    stats: Arc<Stats>,
    me: PeerId,
    my_key: u64,

    state: Vec<PieceState>,
    /// Since when a missing piece is seen that nobody has or fetches.
    attempts: Vec<u32>,
    done: u32,
    peers: HashMap<PeerId, PeerInfo>,
    /// Peers that served bad bytes (banned) or that keep failing: not
    /// taken back from the DHT.
    excluded: HashMap<PeerId, Option<Instant>>,
    inflight: usize,
    origin_inflight: usize,
    origin_failures: u32,
    origin_retry_at: Instant,
    last_progress: Instant,
    origin_allowed_at: Instant,
    report: DownloadReport,
    rng: Rng,
}

impl Run {
    fn new(dl: &Downloader, d: Download, partial: Arc<Partial>) -> Run {
        let now = Instant::now();
        let n = d.table.piece_count() as usize;
        let me = dl.node.local_peer_id();
        let seed = {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let b = me.to_bytes();
            t.as_nanos() as u64 ^ u64::from_le_bytes(b[b.len() - 8..].try_into().unwrap())
        };
        let mut run = Run {
            node: dl.node.clone(),
            config: dl.config.clone(),
            table: d.table,
            ticket: d.ticket,
            origin: d.origin,
            sink: d.sink,
            partial,
            stats: dl.node.stats().clone(),
            me,
            my_key: peer_key(&me),
            state: vec![PieceState::Missing; n],
            attempts: vec![0; n],
            done: 0,
            peers: HashMap::new(),
            excluded: HashMap::new(),
            inflight: 0,
            origin_inflight: 0,
            origin_failures: 0,
            origin_retry_at: now,
            last_progress: now,
            origin_allowed_at: now + dl.config.initial_wait,
            report: DownloadReport::default(),
            rng: Rng::new(seed),
        };
        for p in d.peers {
            run.add_peer(p, now);
        }
        run
    }

    fn add_peer(&mut self, peer: PeerId, now: Instant) {
        if peer == self.me
            || self.peers.contains_key(&peer)
            || self.peers.len() >= self.config.max_peers
        {
            return;
        }
        match self.excluded.get(&peer) {
            Some(None) => return,
            Some(Some(until)) if *until > now => return,
            _ => {}
        }
        self.excluded.remove(&peer);
        self.peers.insert(peer, PeerInfo::new(&peer, now));
    }

    async fn run(&mut self) -> Result<DownloadReport, DownloadError> {
        let start = Instant::now();
        let n = self.table.piece_count();

        let mut fetches: FuturesUnordered<FetchFuture> = FuturesUnordered::new();
        let mut haves: FuturesUnordered<HaveFuture> = FuturesUnordered::new();
        let mut lookups: FuturesUnordered<BoxFuture<'static, Vec<PeerId>>> =
            FuturesUnordered::new();
        let mut next_lookup = start;
        let mut first_lookup_done = false;
        if n > 0 {
            self.announce();
        }

        while self.done < n {
            let now = Instant::now();
            if lookups.is_empty() && now >= next_lookup {
                let (node, digest) = (self.node.clone(), self.table.digest.clone());
                lookups.push(async move { node.providers(&digest).await }.boxed());
                next_lookup = now + self.config.provider_refresh;
            }
            for p in self.partial.take_interested() {
                self.add_peer(p, now);
            }
            self.ask_haves(&mut haves, now);
            // The origin waits for the first answers of the swarm (or the
            // initial wait), so a blob peers have is not pulled from it.
            if first_lookup_done
                && !self
                    .peers
                    .values()
                    .any(|p| p.have.is_none() && p.retry_at <= now)
            {
                self.origin_allowed_at = self.origin_allowed_at.min(now);
            }
            self.schedule(&mut fetches, now);

            tokio::select! {
                Some((index, source, outcome)) = fetches.next() => {
                    self.on_fetched(index, source, outcome)?;
                }
                Some((peer, r)) = haves.next() => self.on_have(peer, r),
                Some(found) = lookups.next() => {
                    first_lookup_done = true;
                    let now = Instant::now();
                    for p in found {
                        self.add_peer(p, now);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        self.report.peers_used = self.peers.values().filter(|p| p.delivered).count();
        self.report.elapsed = start.elapsed();
        Ok(self.report.clone())
    }

    /// Announces the blob in the background: from now on, peers see which
    /// pieces we have and which we are fetching.
    fn announce(&mut self) {
        let (node, digest) = (self.node.clone(), self.table.digest.clone());
        tokio::spawn(async move {
            if let Err(e) = node.provide(&digest).await {
                tracing::warn!(%digest, "p2p: cannot announce: {e}");
            }
        });
    }

    fn ask_haves(&mut self, haves: &mut FuturesUnordered<HaveFuture>, now: Instant) {
        let refresh = if self.inflight == 0 {
            self.config.have_refresh.min(IDLE_HAVE_REFRESH)
        } else {
            self.config.have_refresh
        };
        for (peer, info) in self.peers.iter_mut() {
            let due = match (&info.have, info.last_have) {
                (Some(Have::All), _) => false,
                (_, None) => true,
                (_, Some(t)) => now >= t + refresh,
            };
            if !due || info.have_inflight || info.retry_at > now {
                continue;
            }
            info.have_inflight = true;
            let (node, peer, digest, ticket) = (
                self.node.clone(),
                *peer,
                self.table.digest.clone(),
                self.ticket.clone(),
            );
            let timeout = self.config.piece_timeout;
            haves.push(
                async move {
                    let r = match tokio::time::timeout(
                        timeout,
                        node.fetch_have(peer, &digest, &ticket),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(FetchError::Timeout),
                    };
                    (peer, r)
                }
                .boxed(),
            );
        }
    }

    fn on_have(&mut self, peer: PeerId, r: Result<Have, FetchError>) {
        let now = Instant::now();
        let Some(info) = self.peers.get_mut(&peer) else {
            return;
        };
        info.have_inflight = false;
        info.last_have = Some(now);
        match r {
            Ok(Have::None) => {
                // A stale provider record: it holds nothing of the blob.
                self.peers.remove(&peer);
                self.excluded
                    .insert(peer, Some(now + Duration::from_secs(30)));
            }
            Ok(h) => {
                let count = match &h {
                    Have::None => 0,
                    Have::All => u32::MAX,
                    Have::Partial { have, .. } => have.count(),
                };
                if info.have.is_none() || count > info.have_count {
                    info.last_growth = now;
                }
                info.have_count = count;
                info.have = Some(h);
                info.failures = 0;
            }
            Err(e) => self.peer_failed(peer, e, now),
        }
    }

    /// A peer request failed for a reason other than bad bytes.
    fn peer_failed(&mut self, peer: PeerId, e: FetchError, now: Instant) {
        let Some(info) = self.peers.get_mut(&peer) else {
            return;
        };
        match e {
            FetchError::Refused(ErrorCode::Busy) => {
                info.retry_at = now + self.config.busy_backoff;
            }
            FetchError::Refused(ErrorCode::NotHave) => {
                // Its map is stale: ask again before choosing it.
                info.have = None;
                info.last_have = None;
            }
            FetchError::Refused(code) => {
                // It will not serve us (our ticket is refused there).
                tracing::debug!(%peer, "p2p download: peer refuses: {code}");
                self.peers.remove(&peer);
                self.excluded
                    .insert(peer, Some(now + Duration::from_secs(30)));
            }
            FetchError::Banned | FetchError::Stopped => {
                self.peers.remove(&peer);
                self.excluded.insert(peer, None);
            }
            FetchError::Timeout | FetchError::Network(_) | FetchError::Protocol => {
                info.failures += 1;
                if info.failures >= 3 {
                    tracing::debug!(%peer, "p2p download: dropping unreachable peer: {e}");
                    self.peers.remove(&peer);
                    self.excluded
                        .insert(peer, Some(now + Duration::from_secs(30)));
                } else {
                    info.retry_at = now + Duration::from_millis(250 << info.failures);
                }
            }
        }
    }

    fn on_fetched(
        &mut self,
        index: u32,
        source: Source,
        outcome: Outcome,
    ) -> Result<(), DownloadError> {
        let now = Instant::now();
        let i = index as usize;
        self.inflight -= 1;
        match source {
            Source::Peer(p) => {
                if let Some(info) = self.peers.get_mut(&p) {
                    info.inflight -= 1;
                }
            }
            Source::Origin => self.origin_inflight -= 1,
        }
        match outcome {
            Outcome::Stored(len) => {
                self.state[i] = PieceState::Done;
                self.done += 1;
                self.last_progress = now;
                self.partial.set_have(index);
                match source {
                    Source::Peer(p) => {
                        self.report.bytes_from_peers += len as u64;
                        self.report.pieces_from_peers += 1;
                        Stats::add(&self.stats.bytes_from_peers, len as u64);
                        Stats::add(&self.stats.pieces_from_peers, 1);
                        if let Some(info) = self.peers.get_mut(&p) {
                            info.failures = 0;
                            info.delivered = true;
                        }
                    }
                    Source::Origin => {
                        self.origin_failures = 0;
                        self.report.bytes_from_origin += len as u64;
                        self.report.pieces_from_origin += 1;
                        Stats::add(&self.stats.bytes_from_origin, len as u64);
                        Stats::add(&self.stats.pieces_from_origin, 1);
                    }
                }
                return Ok(());
            }
            Outcome::Sink(e) => return Err(DownloadError::Sink(e)),
            _ => {}
        }
        // The piece is missing again.
        self.state[i] = PieceState::Missing;
        self.partial.set_pending(index, false);
        match (source, outcome) {
            (Source::Peer(p), Outcome::Bad) => {
                tracing::warn!(peer = %p, index, digest = %self.table.digest, "p2p download: bad piece from peer");
                self.attempts[i] += 1;
                self.report.pieces_rejected += 1;
                Stats::add(&self.stats.pieces_rejected, 1);
                self.peers.remove(&p);
                // Other pieces in flight from it may turn out bad too: ban once.
                if self.excluded.insert(p, None) != Some(None) {
                    self.report.peers_banned.push(p);
                    let node = self.node.clone();
                    tokio::spawn(async move {
                        node.ban(p).await;
                    });
                }
            }
            (Source::Peer(p), Outcome::Failed(e)) => {
                if !matches!(e, FetchError::Refused(ErrorCode::Busy)) {
                    self.attempts[i] += 1;
                }
                self.peer_failed(p, e, now);
            }
            (Source::Origin, outcome) => {
                let why = match outcome {
                    Outcome::Bad => {
                        self.report.pieces_rejected += 1;
                        Stats::add(&self.stats.pieces_rejected, 1);
                        "bytes do not match the piece table".to_string()
                    }
                    Outcome::OriginFailed(e) => e,
                    Outcome::Failed(e) => e.to_string(),
                    _ => String::new(),
                };
                self.origin_failures += 1;
                tracing::warn!(index, digest = %self.table.digest, "p2p download: origin failed: {why}");
                if self.origin_failures >= self.config.origin_failures {
                    return Err(DownloadError::Origin {
                        count: self.origin_failures,
                        last: why,
                    });
                }
                self.origin_retry_at =
                    now + Duration::from_millis(200 << self.origin_failures.min(6));
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts fetches until the concurrency is used or nothing is worth
    /// starting.
    fn schedule(&mut self, fetches: &mut FuturesUnordered<FetchFuture>, now: Instant) {
        if self.inflight >= self.config.concurrency {
            return;
        }
        let n = self.state.len();
        // How many live peers hold each missing piece, and whether any is
        // fetching it.
        let mut avail = vec![0u32; n];
        let mut pending = Bitfield::new(n as u32);
        for info in self.peers.values() {
            let Some(h) = &info.have else { continue };
            for (i, a) in avail.iter_mut().enumerate() {
                if self.state[i] == PieceState::Missing {
                    if h.has(i as u32) {
                        *a += 1;
                    } else if h.pending(i as u32) {
                        pending.set(i as u32, true);
                    }
                }
            }
        }
        while self.inflight < self.config.concurrency {
            if let Some((index, peer)) = self.pick_from_peers(&avail, now) {
                self.start_peer_fetch(fetches, index, peer);
                continue;
            }
            if let Some(index) = self.pick_for_origin(&avail, &pending, now) {
                self.start_origin_fetch(fetches, index);
                continue;
            }
            break;
        }
    }

    /// The rarest missing piece some ready peer has (one of the
    /// `PICK_SPREAD` lowest among equals, at random), and the least loaded
    /// ready peer that has it.
    fn pick_from_peers(&mut self, avail: &[u32], now: Instant) -> Option<(u32, PeerId)> {
        let per_peer = self.config.per_peer;
        let ready: Vec<(PeerId, &PeerInfo)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.have.is_some() && p.inflight < per_peer && p.retry_at <= now)
            .map(|(id, p)| (*id, p))
            .collect();
        if ready.is_empty() {
            return None;
        }
        // The first `PICK_SPREAD` of the rarest, lowest index first.
        let mut rarest = u32::MAX;
        let mut first: Vec<u32> = Vec::with_capacity(PICK_SPREAD);
        for (i, &a) in avail.iter().enumerate() {
            if self.state[i] != PieceState::Missing || a == 0 || a > rarest {
                continue;
            }
            if !ready.iter().any(|(_, p)| p.has(i as u32)) {
                continue;
            }
            if a < rarest {
                rarest = a;
                first.clear();
            }
            if first.len() < PICK_SPREAD {
                first.push(i as u32);
            }
        }
        if first.is_empty() {
            return None;
        }
        let index = first[self.rng.below(first.len() as u64) as usize];
        let holders: Vec<(PeerId, usize)> = ready
            .iter()
            .filter(|(_, p)| p.has(index))
            .map(|(id, p)| (*id, p.inflight))
            .collect();
        let least = holders.iter().map(|(_, l)| *l).min()?;
        let least: Vec<PeerId> = holders
            .into_iter()
            .filter(|(_, l)| *l == least)
            .map(|(id, _)| id)
            .collect();
        let peer = least[self.rng.below(least.len() as u64) as usize];
        Some((index, peer))
    }

    /// A missing piece for the origin: one no peer has or is fetching (or
    /// that peers failed to deliver); when the swarm stalls, any.
    fn pick_for_origin(&mut self, avail: &[u32], pending: &Bitfield, now: Instant) -> Option<u32> {
        // Until a first piece is in, one at a time: a wave's downloaders
        // all start on the origin's link at once, and each one's first
        // piece, the first it can trade, arrives in half the time.
        let limit = if self.done == 0 {
            1
        } else {
            self.config.origin_concurrency
        };
        if self.origin_inflight >= limit
            || now < self.origin_allowed_at
            || now < self.origin_retry_at
        {
            return None;
        }
        let stalled = now.duration_since(self.last_progress) >= self.config.stall_timeout;
        // Other downloaders of the blob that make progress: they share the
        // origin's work.
        let idle = self.config.owner_idle;
        let others: Vec<u64> = self
            .peers
            .values()
            .filter(|p| {
                matches!(p.have, Some(Have::Partial { .. }))
                    && now.duration_since(p.last_growth) < idle
            })
            .map(|p| p.key)
            .collect();
        let mut first: Vec<u32> = Vec::with_capacity(PICK_SPREAD);
        for (i, &a) in avail.iter().enumerate() {
            if self.state[i] != PieceState::Missing {
                continue;
            }
            let eligible = stalled
                || self.attempts[i] >= self.config.peer_attempts
                || (a == 0 && !pending.get(i as u32) && {
                    let mine = score(self.my_key, i as u32);
                    others.iter().all(|k| score(*k, i as u32) < mine)
                });
            if eligible {
                // Among the lowest few, like pieces from peers.
                first.push(i as u32);
                if first.len() == PICK_SPREAD {
                    break;
                }
            }
        }
        let chosen =
            (!first.is_empty()).then(|| first[self.rng.below(first.len() as u64) as usize]);
        if chosen.is_some() && stalled {
            // One origin piece per stall period, not a stampede.
            self.last_progress = now;
        }
        chosen
    }

    fn start_peer_fetch(
        &mut self,
        fetches: &mut FuturesUnordered<FetchFuture>,
        index: u32,
        peer: PeerId,
    ) {
        self.mark_in_flight(index);
        if let Some(info) = self.peers.get_mut(&peer) {
            info.inflight += 1;
        }
        let (node, digest, ticket, table, sink) = (
            self.node.clone(),
            self.table.digest.clone(),
            self.ticket.clone(),
            self.table.clone(),
            self.sink.clone(),
        );
        let timeout = self.config.piece_timeout;
        fetches.push(
            async move {
                let fetched =
                    tokio::time::timeout(timeout, node.fetch_piece(peer, &digest, index, &ticket))
                        .await;
                let outcome = match fetched {
                    Err(_) => Outcome::Failed(FetchError::Timeout),
                    Ok(Err(e)) => Outcome::Failed(e),
                    Ok(Ok(bytes)) => verify_and_store(table, sink, index, bytes).await,
                };
                (index, Source::Peer(peer), outcome)
            }
            .boxed(),
        );
    }

    fn start_origin_fetch(&mut self, fetches: &mut FuturesUnordered<FetchFuture>, index: u32) {
        self.mark_in_flight(index);
        self.origin_inflight += 1;
        let (origin, table, sink) = (self.origin.clone(), self.table.clone(), self.sink.clone());
        let timeout = self.config.origin_timeout;
        fetches.push(
            async move {
                let range = table.piece_range(index);
                let outcome = match tokio::time::timeout(timeout, origin.piece(index, range)).await
                {
                    Err(_) => Outcome::OriginFailed("timed out".into()),
                    Ok(Err(e)) => Outcome::OriginFailed(format!("{e:#}")),
                    Ok(Ok(bytes)) => verify_and_store(table, sink, index, bytes).await,
                };
                (index, Source::Origin, outcome)
            }
            .boxed(),
        );
    }

    fn mark_in_flight(&mut self, index: u32) {
        self.state[index as usize] = PieceState::InFlight;
        self.inflight += 1;
        self.partial.set_pending(index, true);
    }
}

/// Checks a piece against the table and stores it, on a blocking thread.
async fn verify_and_store(
    table: Arc<PieceTable>,
    sink: Arc<dyn PieceSink>,
    index: u32,
    bytes: Bytes,
) -> Outcome {
    let r = tokio::task::spawn_blocking(move || {
        if !table.verify(index, &bytes) {
            return Outcome::Bad;
        }
        match sink.put(table.piece_range(index).start, &bytes) {
            Ok(()) => Outcome::Stored(bytes.len()),
            Err(e) => Outcome::Sink(e),
        }
    })
    .await;
    r.unwrap_or_else(|e| Outcome::Sink(io::Error::other(e)))
}

/// Equally rare pieces are picked at random among the lowest this many:
/// the blob fills roughly in order (clients streaming it move along during
/// the download) while simultaneous downloaders still take different
/// pieces from a common source and so have something to trade (all taking
/// the lowest one starves the swarm).
const PICK_SPREAD: usize = 4;

/// How often peers are asked what they have while nothing is in flight:
/// the download then waits for pieces peers are fetching, and learns they
/// are in this much later at most. A blob of one piece, such as an image
/// config, is fetched by one of a wave's downloaders while the others
/// wait for it; at `have_refresh` (300 ms) they started on the image's
/// layers that much later than the first.
const IDLE_HAVE_REFRESH: Duration = Duration::from_millis(40);
