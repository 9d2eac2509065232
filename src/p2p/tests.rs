//! The swarm over real libp2p on loopback TCP (and QUIC): fan-out of
//! simultaneous pulls, bad peers, dying peers, tickets, provider records,
//! identity.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

use super::download::{DownloadError, DownloadReport, Downloaded};
use super::node::FetchError;
use super::sink::MemorySink;

use super::node::load_or_create_identity;
use super::protocol::ErrorCode;
use super::ticket::tests::keys;
use super::ticket::unix_now;
use super::*;
use crate::registry::digest::Algorithm;

const MIB: usize = 1 << 20;

fn random_blob(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// A store holding whole blobs; `corrupt` flips a byte of every piece.
#[derive(Default)]
struct MemSource {
    blobs: HashMap<Digest, (Arc<PieceTable>, Bytes)>,
    corrupt: bool,
}

impl MemSource {
    fn with(blob: &Bytes, table: &Arc<PieceTable>) -> MemSource {
        let mut s = MemSource::default();
        s.blobs
            .insert(table.digest.clone(), (table.clone(), blob.clone()));
        s
    }
}

#[async_trait]
impl PieceSource for MemSource {
    async fn piece(&self, digest: &Digest, index: u32) -> Option<Bytes> {
        let (table, blob) = self.blobs.get(digest)?;
        if index >= table.piece_count() {
            return None;
        }
        let r = table.piece_range(index);
        let piece = blob.slice(r.start as usize..r.end as usize);
        if self.corrupt {
            let mut v = piece.to_vec();
            let mid = v.len() / 2;
            v[mid] ^= 0x5a;
            return Some(Bytes::from(v));
        }
        Some(piece)
    }

    async fn have(&self, digest: &Digest) -> Have {
        if self.blobs.contains_key(digest) {
            Have::All
        } else {
            Have::None
        }
    }
}

/// The hub: serves pieces over a link of `rate` bytes per second shared by
/// all its clients, and counts what it sent.
struct TestOrigin {
    blob: Bytes,
    rate: f64,
    next_free: Mutex<Instant>,
    sent: AtomicU64,
}

impl TestOrigin {
    fn new(blob: &Bytes, rate_mib: f64) -> Arc<TestOrigin> {
        Arc::new(TestOrigin {
            blob: blob.clone(),
            rate: rate_mib * MIB as f64,
            next_free: Mutex::new(Instant::now()),
            sent: AtomicU64::new(0),
        })
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Origin for TestOrigin {
    async fn piece(&self, _index: u32, range: Range<u64>) -> anyhow::Result<Bytes> {
        let len = range.end - range.start;
        let done = {
            let mut next = self.next_free.lock().unwrap();
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(len as f64 / self.rate);
            *next
        };
        tokio::time::sleep_until(done).await;
        self.sent.fetch_add(len, Ordering::Relaxed);
        Ok(self.blob.slice(range.start as usize..range.end as usize))
    }
}

fn config(dir: &Path, bootstrap: &[Multiaddr]) -> NodeConfig {
    let mut c = NodeConfig::new(dir);
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.bootstrap = bootstrap.to_vec();
    c.providers_timeout = Duration::from_secs(1);
    c.query_timeout = Duration::from_secs(5);
    c.request_timeout = Duration::from_secs(10);
    c
}

struct Hub {
    _dir: tempfile::TempDir,
    issuer: TicketIssuer,
    verifier: Arc<TicketVerifier>,
}

fn hub() -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let (issuer, verifier) = keys(dir.path());
    Hub {
        _dir: dir,
        issuer,
        verifier: Arc::new(verifier),
    }
}

async fn start(
    hub: &Hub,
    dir: &Path,
    bootstrap: &[Multiaddr],
    source: Arc<dyn PieceSource>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Node {
    let mut c = config(dir, bootstrap);
    tweak(&mut c);
    Node::start(c, hub.verifier.clone(), source).await.unwrap()
}

fn fast_config() -> DownloadConfig {
    DownloadConfig {
        provider_refresh: Duration::from_millis(500),
        have_refresh: Duration::from_millis(150),
        initial_wait: Duration::from_millis(1500),
        ..DownloadConfig::default()
    }
}

/// A leecher's download into a file; returns the report and whether the
/// file holds the blob (the seeding registration is kept by the caller).
async fn leech(
    node: NodeHandle,
    hub_ticket: Ticket,
    table: Arc<PieceTable>,
    origin: Arc<TestOrigin>,
    path: std::path::PathBuf,
    cfg: DownloadConfig,
) -> (Downloaded, bool) {
    let sink = Arc::new(FileSink::create(&path, table.size).unwrap());
    let blob = origin.blob.clone();
    let d = Downloader::new(node, cfg)
        .download(Download {
            table: table.clone(),
            ticket: hub_ticket,
            origin,
            sink,
            peers: Vec::new(),
        })
        .await
        .unwrap();
    // The downloader checked the digest; compare bytes too (cheaper than
    // another SHA-256 in a debug build).
    let intact = std::fs::read(&path).unwrap() == blob;
    (d, intact)
}

/// Runs `leechers` simultaneous downloads of `blob`; returns their
/// reports and what each leecher served to others.
async fn wave(
    hub: &Hub,
    bootstrap: &[Multiaddr],
    leechers: usize,
    table: &Arc<PieceTable>,
    origin: &Arc<TestOrigin>,
) -> Vec<(DownloadReport, u64)> {
    let dirs: Vec<tempfile::TempDir> = (0..leechers)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut nodes = Vec::new();
    let mut boot = bootstrap.to_vec();
    for d in &dirs {
        let n = start(hub, d.path(), &boot, Arc::new(NoPieces), |_| {}).await;
        if boot.is_empty() {
            boot = n.handle().dial_addrs().await;
        }
        nodes.push(n);
    }
    // Let the DHT settle a moment, as nodes of a fleet would be.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tasks = Vec::new();
    for (n, d) in nodes.iter().zip(&dirs) {
        let h = n.handle();
        let ticket = hub.issuer.issue(&h.local_peer_id(), &table.digest);
        tasks.push(tokio::spawn(leech(
            h,
            ticket,
            table.clone(),
            origin.clone(),
            d.path().join("blob"),
            fast_config(),
        )));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    let mut out = Vec::new();
    for ((d, intact), n) in done.iter().zip(&nodes) {
        assert!(intact, "blob arrived intact");
        out.push((d.report.clone(), n.handle().stats().snapshot().bytes_served));
    }
    out
}

fn summary(
    label: &str,
    size: usize,
    origin: &TestOrigin,
    results: &[(DownloadReport, u64)],
    elapsed: Duration,
) -> f64 {
    let ratio = origin.sent() as f64 / size as f64;
    eprintln!(
        "{label}: {} leechers, {} MiB, origin sent {:.2}x the blob, {:.1} s",
        results.len(),
        size / MIB,
        ratio,
        elapsed.as_secs_f64()
    );
    for (i, (r, served)) in results.iter().enumerate() {
        eprintln!(
            "  leecher {i}: {:.1} MiB from peers ({} peers), {:.1} MiB from origin, served {:.1} MiB, {:.1} s",
            r.bytes_from_peers as f64 / MIB as f64,
            r.peers_used,
            r.bytes_from_origin as f64 / MIB as f64,
            *served as f64 / MIB as f64,
            r.elapsed.as_secs_f64()
        );
    }
    ratio
}

/// One seed that uploads little (two pieces at a time) and four leechers
/// starting together: they complete from the seed and from each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_and_four_leechers_fan_out() {
    let hub = hub();
    let size = 64 * MIB;
    let blob = random_blob(size, 1);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let seed_dir = tempfile::tempdir().unwrap();
    let seed = start(
        &hub,
        seed_dir.path(),
        &[],
        Arc::new(MemSource::with(&blob, &table)),
        |c| {
            c.max_uploads = 2;
        },
    )
    .await;
    seed.handle().provide(&table.digest).await.unwrap();
    let origin = TestOrigin::new(&blob, 16.0);
    let t0 = Instant::now();
    let results = wave(&hub, &seed.handle().dial_addrs().await, 4, &table, &origin).await;
    let ratio = summary("seed + 4 leechers", size, &origin, &results, t0.elapsed());
    assert!(ratio <= 1.3, "origin sent {ratio:.2}x the blob");
    let served_by_leechers: u64 = results.iter().map(|(_, s)| s).sum();
    assert!(served_by_leechers > 0, "leechers served each other");
    let seed_served = seed.handle().stats().snapshot().bytes_served;
    eprintln!(
        "  seed served {:.1} MiB, leechers {:.1} MiB",
        seed_served as f64 / MIB as f64,
        served_by_leechers as f64 / MIB as f64
    );
    let from_peers: u64 = results.iter().map(|(r, _)| r.bytes_from_peers).sum();
    assert_eq!(
        from_peers,
        seed_served + served_by_leechers,
        "every byte from peers was served by one"
    );
}

/// Four nodes pull a blob nobody has yet, at the same moment (Spegel's
/// weak spot): the origin sends about one copy, the swarm the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_wave_takes_about_one_copy_from_origin() {
    let hub = hub();
    let size = 64 * MIB;
    let blob = random_blob(size, 2);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let origin = TestOrigin::new(&blob, 32.0);
    let t0 = Instant::now();
    let results = wave(&hub, &[], 4, &table, &origin).await;
    let ratio = summary("cold wave", size, &origin, &results, t0.elapsed());
    assert!(ratio <= 1.3, "origin sent {ratio:.2}x the blob");
    assert!(
        results.iter().map(|(_, s)| s).sum::<u64>() > size as u64,
        "the swarm carried most of it"
    );
}

/// A peer serving corrupted pieces is caught on the first one, banned, and
/// the download completes from the honest seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupting_peer_is_banned_and_download_completes() {
    let hub = hub();
    let size = 8 * MIB + 12345;
    let blob = random_blob(size, 3);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let (d1, d2, d3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let seed = start(
        &hub,
        d1.path(),
        &[],
        Arc::new(MemSource::with(&blob, &table)),
        |_| {},
    )
    .await;
    let boot = seed.handle().dial_addrs().await;
    let mut evil = MemSource::with(&blob, &table);
    evil.corrupt = true;
    let bad = start(&hub, d2.path(), &boot, Arc::new(evil), |_| {}).await;
    seed.handle().provide(&table.digest).await.unwrap();
    bad.handle().provide(&table.digest).await.unwrap();
    let leecher = start(&hub, d3.path(), &boot, Arc::new(NoPieces), |_| {}).await;
    let h = leecher.handle();
    let origin = TestOrigin::new(&blob, 8.0);
    let ticket = hub.issuer.issue(&h.local_peer_id(), &table.digest);
    let (d, intact) = leech(
        h.clone(),
        ticket.clone(),
        table.clone(),
        origin.clone(),
        d3.path().join("blob"),
        fast_config(),
    )
    .await;
    assert!(intact);
    let r = &d.report;
    eprintln!(
        "corrupting peer: {r:?}, origin sent {} bytes",
        origin.sent()
    );
    assert!(r.pieces_rejected >= 1, "bad pieces rejected: {r:?}");
    assert_eq!(r.peers_banned, vec![bad.local_peer_id()]);
    let s = h.stats().snapshot();
    assert_eq!(s.pieces_rejected, r.pieces_rejected as u64);
    assert_eq!(s.peers_banned, 1);
    // Banned for good: no more requests, no connection.
    assert_eq!(
        h.fetch_piece(bad.local_peer_id(), &table.digest, 0, &ticket)
            .await,
        Err(FetchError::Banned)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!h.connected_peers().await.contains(&bad.local_peer_id()));
    assert!(
        !h.providers(&table.digest)
            .await
            .contains(&bad.local_peer_id())
    );
}

/// A leecher that served others dies mid-transfer; the rest complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_does_not_stop_the_others() {
    let hub = hub();
    let size = 32 * MIB;
    let blob = random_blob(size, 4);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let seed_dir = tempfile::tempdir().unwrap();
    let seed = start(
        &hub,
        seed_dir.path(),
        &[],
        Arc::new(MemSource::with(&blob, &table)),
        |c| {
            c.max_uploads = 1;
        },
    )
    .await;
    seed.handle().provide(&table.digest).await.unwrap();
    let boot = seed.handle().dial_addrs().await;
    let origin = TestOrigin::new(&blob, 4.0);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for d in &dirs {
        nodes.push(start(&hub, d.path(), &boot, Arc::new(NoPieces), |_| {}).await);
    }
    let mut tasks = Vec::new();
    for (n, d) in nodes.iter().zip(&dirs) {
        let h = n.handle();
        let ticket = hub.issuer.issue(&h.local_peer_id(), &table.digest);
        tasks.push(tokio::spawn(leech(
            h,
            ticket,
            table.clone(),
            origin.clone(),
            d.path().join("blob"),
            fast_config(),
        )));
    }
    // Wait until the victim holds pieces and has served some of them.
    let victim = nodes.remove(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = victim.handle().stats().snapshot();
        if s.pieces_served >= 2 && s.pieces_from_peers + s.pieces_from_origin >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "victim never served: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let victim_task = tasks.remove(0);
    victim_task.abort();
    let s = victim.handle().stats().snapshot();
    drop(victim);
    eprintln!(
        "killed a leecher holding {} pieces, having served {}",
        s.pieces_from_peers + s.pieces_from_origin,
        s.pieces_served
    );
    for t in tasks {
        let (d, intact) = tokio::time::timeout(Duration::from_secs(40), t)
            .await
            .unwrap()
            .unwrap();
        assert!(intact);
        eprintln!("  survivor: {:?}", d.report);
    }
}

/// Nothing without a valid ticket naming the requester and the digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_only_with_a_valid_ticket() {
    let foreign_hub = hub();
    let hub = hub();
    let blob = random_blob(3 * MIB, 5);
    let other_blob = random_blob(MIB, 6);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let other = Arc::new(PieceTable::of_bytes(
        Algorithm::Sha256,
        MIB as u32,
        &other_blob,
    ));
    let mut source = MemSource::with(&blob, &table);
    source
        .blobs
        .insert(other.digest.clone(), (other.clone(), other_blob.clone()));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let seed = start(&hub, d1.path(), &[], Arc::new(source), |_| {}).await;
    let requester = start(
        &hub,
        d2.path(),
        &seed.handle().dial_addrs().await,
        Arc::new(NoPieces),
        |_| {},
    )
    .await;
    let (s, r) = (seed.local_peer_id(), requester.handle());
    let me = r.local_peer_id();
    let d = &table.digest;

    fn refused<T>(code: ErrorCode) -> Result<T, FetchError> {
        Err(FetchError::Refused(code))
    }
    assert_eq!(
        r.fetch_piece(s, d, 0, &Ticket::none()).await,
        refused(ErrorCode::NoTicket)
    );
    assert_eq!(
        r.fetch_have(s, d, &Ticket::none()).await,
        refused(ErrorCode::NoTicket)
    );
    let expired = hub.issuer.issue_until(&me, d, unix_now() - 60);
    assert_eq!(
        r.fetch_piece(s, d, 0, &expired).await,
        refused(ErrorCode::BadTicket)
    );
    let for_other_blob = hub.issuer.issue(&me, &other.digest);
    assert_eq!(
        r.fetch_piece(s, d, 0, &for_other_blob).await,
        refused(ErrorCode::BadTicket)
    );
    assert_eq!(
        r.fetch_have(s, d, &for_other_blob).await,
        refused(ErrorCode::BadTicket)
    );
    let for_other_peer = hub.issuer.issue(&PeerId::random(), d);
    assert_eq!(
        r.fetch_piece(s, d, 0, &for_other_peer).await,
        refused(ErrorCode::BadTicket)
    );
    let forged = foreign_hub.issuer.issue(&me, d);
    assert_eq!(
        r.fetch_piece(s, d, 0, &forged).await,
        refused(ErrorCode::BadTicket)
    );
    let stats = seed.handle().stats().snapshot();
    assert_eq!((stats.requests_refused, stats.bytes_served), (7, 0));

    // The right ticket opens exactly that blob.
    let ticket = hub.issuer.issue(&me, d);
    assert_eq!(r.fetch_have(s, d, &ticket).await, Ok(Have::All));
    let piece = r.fetch_piece(s, d, 2, &ticket).await.unwrap();
    assert!(table.verify(2, &piece));
    assert_eq!(
        r.fetch_piece(s, d, 3, &ticket).await,
        refused(ErrorCode::NotHave)
    );
    assert_eq!(
        r.fetch_piece(s, &other.digest, 0, &ticket).await,
        refused(ErrorCode::BadTicket)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = seed.handle().stats().snapshot();
    assert_eq!((stats.pieces_served, stats.bytes_served), (1, MIB as u64));
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t0.elapsed()
}

/// Provide → found by another node through the DHT, still found after the
/// record TTL (republished); withdraw → gone once the copies expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_are_found_republished_and_withdrawn() {
    let hub = hub();
    let ttl = Duration::from_secs(3);
    let short = |c: &mut NodeConfig| {
        c.provider_ttl = Duration::from_secs(3);
        c.provider_republish = Duration::from_secs(1);
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(&hub, dirs[0].path(), &[], Arc::new(NoPieces), short).await;
    let boot = a.handle().dial_addrs().await;
    let b = start(&hub, dirs[1].path(), &boot, Arc::new(NoPieces), short).await;
    let c = start(&hub, dirs[2].path(), &boot, Arc::new(NoPieces), short).await;
    let digest = Digest::of(Algorithm::Sha256, b"some layer");
    let (bh, cid) = (b.handle(), c.local_peer_id());
    assert!(bh.providers(&digest).await.is_empty());
    c.handle().provide(&digest).await.unwrap();
    assert!(c.handle().is_providing(&digest).await);
    let found = until("provider found", Duration::from_secs(5), async || {
        bh.providers(&digest).await.contains(&cid)
    })
    .await;
    eprintln!("provider found after {found:?}");
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    assert!(
        bh.providers(&digest).await.contains(&cid),
        "republished past the TTL"
    );
    assert!(
        !c.handle().providers(&digest).await.contains(&cid),
        "never lists itself"
    );
    c.handle().withdraw(&digest).await;
    assert!(!c.handle().is_providing(&digest).await);
    let gone = until("provider withdrawn", Duration::from_secs(10), async || {
        !bh.providers(&digest).await.contains(&cid)
    })
    .await;
    eprintln!("provider gone {gone:?} after withdrawal");
    assert!(!a.handle().providers(&digest).await.contains(&cid));
}

#[tokio::test]
async fn identity_persists_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let hub = hub();
    let dir = tempfile::tempdir().unwrap();
    let first = start(&hub, dir.path(), &[], Arc::new(NoPieces), |_| {})
        .await
        .local_peer_id();
    let path = dir.path().join("p2p/identity.key");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = start(&hub, dir.path(), &[], Arc::new(NoPieces), |_| {})
        .await
        .local_peer_id();
    assert_eq!(first, again);
    assert_eq!(
        load_or_create_identity(dir.path())
            .unwrap()
            .public()
            .to_peer_id(),
        first
    );
    let other = tempfile::tempdir().unwrap();
    assert_ne!(
        load_or_create_identity(other.path())
            .unwrap()
            .public()
            .to_peer_id(),
        first
    );
    // A loosened key is tightened; a damaged one is an error naming the file.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        load_or_create_identity(dir.path())
            .unwrap()
            .public()
            .to_peer_id(),
        first
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::write(&path, b"garbage").unwrap();
    let e = load_or_create_identity(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("identity.key"), "{e}");
}

/// The same piece protocol over QUIC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_over_quic() {
    let hub = hub();
    let blob = random_blob(2 * MIB, 7);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let quic =
        |c: &mut NodeConfig| c.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()];
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let seed = start(
        &hub,
        d1.path(),
        &[],
        Arc::new(MemSource::with(&blob, &table)),
        quic,
    )
    .await;
    let boot = seed.handle().dial_addrs().await;
    assert!(boot[0].to_string().contains("quic-v1"), "{boot:?}");
    let requester = start(&hub, d2.path(), &boot, Arc::new(NoPieces), quic).await;
    let r = requester.handle();
    let ticket = hub.issuer.issue(&r.local_peer_id(), &table.digest);
    let piece = r
        .fetch_piece(seed.local_peer_id(), &table.digest, 1, &ticket)
        .await
        .unwrap();
    assert!(table.verify(1, &piece));
}

/// An origin whose bytes do not match the table.
struct LyingOrigin(AtomicU64);

#[async_trait]
impl Origin for LyingOrigin {
    async fn piece(&self, _index: u32, range: Range<u64>) -> anyhow::Result<Bytes> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Bytes::from(vec![7u8; (range.end - range.start) as usize]))
    }
}

/// Alone with an origin that lies, a download fails after a few attempts
/// without storing a byte, and leaves nothing announced or served; an
/// empty blob needs no piece at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_origin_fails_the_download_and_empty_blob_succeeds() {
    let hub = hub();
    let blob = random_blob(MIB + 1, 8);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let node = start(&hub, d1.path(), &[], Arc::new(NoPieces), |_| {}).await;
    let boot = node.handle().dial_addrs().await;
    let watcher = start(&hub, d2.path(), &boot, Arc::new(NoPieces), |_| {}).await;
    let h = node.handle();
    let ticket = hub.issuer.issue(&h.local_peer_id(), &table.digest);
    let origin = Arc::new(LyingOrigin(AtomicU64::new(0)));
    let sink = Arc::new(MemorySink::new(table.size));
    let cfg = DownloadConfig {
        origin_failures: 3,
        ..fast_config()
    };
    let e = Downloader::new(h.clone(), cfg.clone())
        .download(Download {
            table: table.clone(),
            ticket: ticket.clone(),
            origin: origin.clone(),
            sink: sink.clone(),
            peers: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, DownloadError::Origin { count: 3, .. }), "{e}");
    // One piece in flight until a first is in, and none ever is.
    assert_eq!(origin.0.load(Ordering::Relaxed), 3);
    assert!(sink.to_vec().iter().all(|b| *b == 0), "nothing stored");
    let s = h.stats().snapshot();
    assert_eq!(
        (s.pieces_rejected, s.downloads_failed, s.bytes_from_origin),
        (3, 1, 0)
    );
    // Not served (no partial registered any more) and withdrawn.
    let w = watcher.handle();
    let wt = hub.issuer.issue(&w.local_peer_id(), &table.digest);
    assert_eq!(
        w.fetch_have(h.local_peer_id(), &table.digest, &wt).await,
        Ok(Have::None)
    );
    until("withdrawn", Duration::from_secs(5), async || {
        !h.is_providing(&table.digest).await
    })
    .await;

    let empty = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, b""));
    let d = Downloader::new(h.clone(), cfg)
        .download(Download {
            table: empty.clone(),
            ticket: hub.issuer.issue(&h.local_peer_id(), &empty.digest),
            origin,
            sink: Arc::new(MemorySink::new(0)),
            peers: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(d.report.bytes_from_origin + d.report.bytes_from_peers, 0);
}

/// An origin that notes how many of its requests were in flight when each
/// one began, and how many had finished.
struct CountingOrigin {
    inner: Arc<TestOrigin>,
    inflight: AtomicU64,
    finished: AtomicU64,
    /// (finished, in flight) at the start of each request.
    starts: Mutex<Vec<(u64, u64)>>,
}

#[async_trait]
impl Origin for CountingOrigin {
    async fn piece(&self, index: u32, range: Range<u64>) -> anyhow::Result<Bytes> {
        let before = self.inflight.fetch_add(1, Ordering::SeqCst);
        let finished = self.finished.load(Ordering::SeqCst);
        self.starts.lock().unwrap().push((finished, before));
        let r = self.inner.piece(index, range).await;
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        r
    }
}

/// Alone with the origin, a download asks it for one piece until a first
/// one is in (in a wave, every downloader's first piece, the first it can
/// trade, then comes in half the time), then for two at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_serves_one_piece_until_the_first_is_in() {
    let hub = hub();
    let blob = random_blob(8 * MIB, 9);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let dir = tempfile::tempdir().unwrap();
    let node = start(&hub, dir.path(), &[], Arc::new(NoPieces), |_| {}).await;
    let h = node.handle();
    let origin = Arc::new(CountingOrigin {
        inner: TestOrigin::new(&blob, 64.0),
        inflight: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        starts: Mutex::new(Vec::new()),
    });
    let sink = Arc::new(MemorySink::new(table.size));
    Downloader::new(h.clone(), fast_config())
        .download(Download {
            table: table.clone(),
            ticket: hub.issuer.issue(&h.local_peer_id(), &table.digest),
            origin: origin.clone(),
            sink: sink.clone(),
            peers: Vec::new(),
        })
        .await
        .unwrap();
    assert!(sink.to_vec() == blob);
    let starts = origin.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 8, "{starts:?}");
    assert!(
        starts
            .iter()
            .all(|&(finished, inflight)| finished > 0 || inflight == 0),
        "a second request before the first piece was in: {starts:?}"
    );
    assert!(
        starts.iter().any(|&(_, inflight)| inflight == 1),
        "never two at a time: {starts:?}"
    );
}

/// An origin that takes `delay` per piece and counts its requests.
struct SlowOrigin {
    blob: Bytes,
    delay: Duration,
    asked: AtomicU64,
}

#[async_trait]
impl Origin for SlowOrigin {
    async fn piece(&self, _index: u32, range: Range<u64>) -> anyhow::Result<Bytes> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        Ok(self.blob.slice(range.start as usize..range.end as usize))
    }
}

/// A download with nothing in flight, waiting for the piece a peer is
/// fetching (a one-piece blob such as an image config, in a wave), learns
/// it is in soon after, not at the next regular ask (here 5 s away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_download_learns_of_a_peers_piece_soon() {
    let hub = hub();
    let blob = random_blob(1000, 10);
    let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, MIB as u32, &blob));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = start(&hub, d1.path(), &[], Arc::new(NoPieces), |_| {}).await;
    let boot = first.handle().dial_addrs().await;
    let second = start(&hub, d2.path(), &boot, Arc::new(NoPieces), |_| {}).await;
    let origin = Arc::new(SlowOrigin {
        blob: blob.clone(),
        delay: Duration::from_millis(600),
        asked: AtomicU64::new(0),
    });
    let cfg = DownloadConfig {
        have_refresh: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
        ..fast_config()
    };
    let download = |h: NodeHandle| {
        let (table, origin, cfg) = (table.clone(), origin.clone(), cfg.clone());
        let ticket = hub.issuer.issue(&h.local_peer_id(), &table.digest);
        async move {
            let sink = Arc::new(MemorySink::new(table.size));
            let d = Downloader::new(h, cfg)
                .download(Download {
                    table,
                    ticket,
                    origin,
                    sink: sink.clone(),
                    peers: Vec::new(),
                })
                .await
                .unwrap();
            (d, sink.to_vec())
        }
    };
    // The first keeps serving it while its `Downloaded` lives.
    let a = tokio::spawn(download(first.handle()));
    let (h1, h2) = (first.handle(), second.handle());
    until("the first announces", Duration::from_secs(5), async || {
        h2.providers(&table.digest)
            .await
            .contains(&h1.local_peer_id())
    })
    .await;
    let t0 = Instant::now();
    let (b, b_bytes) = download(second.handle()).await;
    let waited = t0.elapsed();
    let (a, a_bytes) = a.await.unwrap();
    assert!(a_bytes == blob && b_bytes == blob);
    assert_eq!(
        (a.report.bytes_from_origin, b.report.bytes_from_peers),
        (1000, 1000)
    );
    assert_eq!(origin.asked.load(Ordering::SeqCst), 1);
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
}
