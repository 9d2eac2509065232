//! The `BlobStore` contract: backend-independent checks every blob store
//! must pass, run on the local store (`local.rs` tests) and on RADOS
//! (`rados/tests.rs`). Where the trait documentation leaves room, the
//! checks decide, as the local store behaves:
//!
//! - `append_upload` at an offset beyond the session's data, or on a session
//!   that does not exist (at a non-zero offset), is `NotFound`; data beyond
//!   the offset left by an unsaved append is cut off (it never shows in
//!   `read_upload` or in the committed blob).
//! - `commit_upload` of fewer bytes than were written commits that prefix;
//!   of more is an error and commits nothing. When the blob exists, the
//!   session is dropped and the blob kept.
//! - `save_upload_state` of a missing session is `NotFound`;
//!   `delete_upload` and `delete` of missing things succeed.
//! - `stale_uploads` goes by when a session was last saved (or created).
//! - `list_blobs` is in digest order; `after` is exclusive.
//!
//! Each check makes its own random content, so checks may share a store;
//! `pieces` is compared by difference only.

use std::future::Future;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use super::{BlobStore, StoreError, UploadState};
use crate::registry::digest::{Algorithm, Digest, Hasher};

/// A store under test.
#[async_trait]
pub trait Subject: Send + Sync {
    fn store(&self) -> &dyn BlobStore;
    /// How many pieces (files, objects) the store keeps, indexes excluded:
    /// what a delete must give back.
    async fn pieces(&self) -> usize;
    /// The unit the store splits blobs into, if it does: ranges are checked
    /// across its boundaries.
    fn chunk(&self) -> Option<u64>;
}

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
pub type CheckFn = for<'a> fn(&'a dyn Subject) -> CheckFuture<'a>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name, in the order [`run_all`] runs them.
        pub const CHECKS: &[(&str, CheckFn)] = &[
            $((stringify!($name), |s| Box::pin($name(s))),)*
        ];
    };
}

checks!(
    upload_roundtrip,
    append_cuts_off_beyond_offset,
    append_needs_acknowledged_data,
    state_replace,
    commit_visibility,
    commit_prefix_and_short_data,
    double_commit,
    put_small,
    empty_blobs,
    range_reads,
    delete_removes_every_piece,
    upload_delete,
    stale_uploads,
    list_blobs,
);

/// Runs every check (or those `DYTEST_CONTRACT_ONLY` selects) one after the
/// other and panics listing those that failed.
pub async fn run_all(subject: &dyn Subject) {
    let only = std::env::var("DYTEST_CONTRACT_ONLY").ok();
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let t = Instant::now();
        match AssertUnwindSafe(check(subject)).catch_unwind().await {
            Ok(()) => eprintln!("blob contract {name}: ok ({} ms)", t.elapsed().as_millis()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("blob contract {name}: FAILED: {msg}");
                failed.push(format!("{name}: {msg}"));
            }
        }
    }
    eprintln!("blob contract: {} ms in all", started.elapsed().as_millis());
    assert!(
        failed.is_empty(),
        "{} blob contract check(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------- helpers

pub fn uid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `n` pseudo-random bytes from `seed` (xorshift), distinct per seed.
pub fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    bytes(rand_seed(), n)
}

fn rand_seed() -> u64 {
    u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}

pub fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

pub fn state(offset: u64) -> UploadState {
    let now = chrono::Utc::now().timestamp();
    UploadState {
        repo: "contract/test".into(),
        offset,
        hash_state: Hasher::new(Algorithm::Sha256).save(),
        started_at: now,
        updated_at: now,
    }
}

/// A new session with no data; its id.
pub async fn session(store: &dyn BlobStore) -> String {
    let id = uid();
    store.create_upload(&id, &state(0)).await.unwrap();
    id
}

/// Appends `data` at `offset` in writes of `piece` bytes; the new length.
pub fn append(store: &dyn BlobStore, id: &str, offset: u64, data: &[u8], piece: usize) -> u64 {
    let mut w = store.append_upload(id, offset).expect("append_upload");
    for p in data.chunks(piece.max(1)) {
        w.write(p).expect("write");
    }
    w.finish().expect("finish")
}

/// Appends and saves the state, as a PATCH does.
pub async fn patch(store: &dyn BlobStore, id: &str, offset: u64, data: &[u8]) -> u64 {
    let len = append(store, id, offset, data, 64 * 1024 + 7);
    store.save_upload_state(id, &state(len)).await.unwrap();
    len
}

pub async fn collect(mut s: super::ByteStream) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

pub async fn read(store: &dyn BlobStore, d: &Digest, range: Range<u64>) -> Vec<u8> {
    let s = store.read(d, range.clone()).await.expect("read");
    collect(s)
        .await
        .unwrap_or_else(|e| panic!("reading {d} {range:?}: {e}"))
}

/// Uploads `data` in one session (two PATCHes) and commits it.
pub async fn upload(store: &dyn BlobStore, data: &[u8]) -> Digest {
    let id = session(store).await;
    let half = data.len() / 2;
    let n = patch(store, &id, 0, &data[..half]).await;
    let n = patch(store, &id, n, &data[half..]).await;
    let d = sha256(data);
    store.commit_upload(&id, &d, n).await.unwrap();
    d
}

/// Blob sizes that cross the store's chunk boundaries a few times.
fn sizes(s: &dyn Subject) -> (usize, usize) {
    match s.chunk() {
        Some(c) => ((2 * c + c / 3) as usize, c as usize),
        None => (300 * 1024 + 5, 64 * 1024),
    }
}

// ----------------------------------------------------------------- checks

async fn upload_roundtrip(s: &dyn Subject) {
    let store = s.store();
    let (size, _) = sizes(s);
    let data = random_bytes(size);
    let id = uid();
    let st = state(0);
    store.create_upload(&id, &st).await.unwrap();
    assert_eq!(store.upload_state(&id).await.unwrap(), Some(st));
    let n = patch(store, &id, 0, &data[..1000]).await;
    assert_eq!(n, 1000);
    let n = patch(store, &id, n, &data[1000..]).await;
    assert_eq!(n, size as u64);
    assert_eq!(store.upload_state(&id).await.unwrap().unwrap().offset, n);
    let back = collect(store.read_upload(&id, n).await.unwrap())
        .await
        .unwrap();
    assert!(back == data, "read_upload differs");
    let part = collect(store.read_upload(&id, 777).await.unwrap())
        .await
        .unwrap();
    assert_eq!(part, data[..777]);
    let d = sha256(&data);
    assert_eq!(store.stat(&d).await.unwrap(), None);
    store.commit_upload(&id, &d, n).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(n));
    assert!(read(store, &d, 0..n).await == data, "blob differs");
    assert_eq!(
        store.upload_state(&id).await.unwrap(),
        None,
        "session outlived its commit"
    );
    assert!(matches!(
        store.read_upload(&id, 1).await,
        Err(StoreError::NotFound)
    ));
    store.delete(&d).await.unwrap();
}

async fn append_cuts_off_beyond_offset(s: &dyn Subject) {
    let store = s.store();
    let (size, chunk) = sizes(s);
    let data = random_bytes(size);
    let id = session(store).await;
    // A request that wrote everything but never saved its state...
    assert_eq!(append(store, &id, 0, &data, 100_000), size as u64);
    // ...then one that goes on from an earlier point, mid-chunk.
    let at = chunk as u64 + 10;
    patch(store, &id, 0, &data[..at as usize]).await;
    let tail = random_bytes(50);
    let n = patch(store, &id, at, &tail).await;
    assert_eq!(n, at + 50);
    let mut want = data[..at as usize].to_vec();
    want.extend_from_slice(&tail);
    let back = collect(store.read_upload(&id, n).await.unwrap())
        .await
        .unwrap();
    assert!(back == want, "read_upload shows data beyond the offset");
    // Data of a request that never finished is cut off by the commit.
    let mut w = store.append_upload(&id, n).unwrap();
    w.write(&random_bytes(3 * chunk)).unwrap();
    drop(w);
    let d = sha256(&want);
    store.commit_upload(&id, &d, n).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(n));
    assert!(
        read(store, &d, 0..n).await == want,
        "blob has the wrong bytes"
    );
    store.delete(&d).await.unwrap();
}

async fn append_needs_acknowledged_data(s: &dyn Subject) {
    let store = s.store();
    let id = session(store).await;
    patch(store, &id, 0, &random_bytes(10)).await;
    assert!(matches!(
        store.append_upload(&id, 20),
        Err(StoreError::NotFound)
    ));
    let (_, chunk) = sizes(s);
    assert!(matches!(
        store.append_upload(&id, chunk as u64 + 1),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.append_upload(&uid(), 5),
        Err(StoreError::NotFound)
    ));
    store.delete_upload(&id).await.unwrap();
}

async fn state_replace(s: &dyn Subject) {
    let store = s.store();
    let id = session(store).await;
    let mut st = state(0);
    st.repo = "other/repo".into();
    st.hash_state = vec![1, 2, 3];
    st.updated_at += 5;
    store.save_upload_state(&id, &st).await.unwrap();
    assert_eq!(store.upload_state(&id).await.unwrap(), Some(st.clone()));
    st.offset = 0;
    st.hash_state = vec![9; 300];
    store.save_upload_state(&id, &st).await.unwrap();
    assert_eq!(store.upload_state(&id).await.unwrap(), Some(st.clone()));
    assert!(matches!(
        store.save_upload_state(&uid(), &st).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.upload_state(&uid()).await.unwrap(), None);
    store.delete_upload(&id).await.unwrap();
    assert_eq!(store.upload_state(&id).await.unwrap(), None);
    assert!(matches!(
        store.save_upload_state(&id, &st).await,
        Err(StoreError::NotFound)
    ));
}

async fn commit_visibility(s: &dyn Subject) {
    let store = s.store();
    let (size, _) = sizes(s);
    let data = random_bytes(size);
    let d = sha256(&data);
    let id = session(store).await;
    let n = patch(store, &id, 0, &data).await;
    // Written and saved, but not committed: nothing to see.
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(matches!(
        store.read(&d, 0..1).await,
        Err(StoreError::NotFound)
    ));
    assert!(!listed(store, &d).await);
    store.commit_upload(&id, &d, n).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(n));
    assert!(listed(store, &d).await);
    store.delete(&d).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(!listed(store, &d).await);
}

async fn listed(store: &dyn BlobStore, d: &Digest) -> bool {
    let all = store.list_blobs(None, usize::MAX).await.unwrap();
    all.iter().any(|b| &b.digest == d)
}

async fn commit_prefix_and_short_data(s: &dyn Subject) {
    let store = s.store();
    let (size, _) = sizes(s);
    let data = random_bytes(size);
    let id = session(store).await;
    let n = patch(store, &id, 0, &data).await;
    // More than was written: refused, nothing visible, session intact.
    let wrong = sha256(b"not this");
    assert!(store.commit_upload(&id, &wrong, n + 1).await.is_err());
    assert_eq!(store.stat(&wrong).await.unwrap(), None);
    assert_eq!(store.upload_state(&id).await.unwrap().unwrap().offset, n);
    // Fewer: that prefix.
    let cut = (size / 2 + 3) as u64;
    let d = sha256(&data[..cut as usize]);
    store.commit_upload(&id, &d, cut).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(cut));
    assert!(
        read(store, &d, 0..cut).await == data[..cut as usize],
        "prefix differs"
    );
    // A session that does not exist cannot be committed.
    let other = sha256(&random_bytes(10));
    assert!(store.commit_upload(&uid(), &other, 10).await.is_err());
    assert_eq!(store.stat(&other).await.unwrap(), None);
    store.delete(&d).await.unwrap();
}

async fn double_commit(s: &dyn Subject) {
    let store = s.store();
    let (size, _) = sizes(s);
    let data = random_bytes(size);
    let base = s.pieces().await;
    let d = upload(store, &data).await;
    let one = s.pieces().await;
    assert!(one > base);
    // The same content again: the session goes, the blob stays as it was.
    let d2 = upload(store, &data).await;
    assert_eq!(d, d2);
    assert_eq!(s.pieces().await, one, "a second copy was kept");
    assert!(read(store, &d, 0..size as u64).await == data);
    // put_small of an existing digest changes nothing either.
    store
        .put_small(&d, Bytes::copy_from_slice(&data))
        .await
        .unwrap();
    assert_eq!(s.pieces().await, one);
    store.delete(&d).await.unwrap();
    assert_eq!(s.pieces().await, base);
}

async fn put_small(s: &dyn Subject) {
    let store = s.store();
    let data = random_bytes(70_000);
    let d = sha256(&data);
    store
        .put_small(&d, Bytes::copy_from_slice(&data))
        .await
        .unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(70_000));
    assert!(read(store, &d, 0..70_000).await == data);
    assert_eq!(read(store, &d, 69_990..70_000).await, data[69_990..]);
    assert!(listed(store, &d).await);
    store
        .put_small(&d, Bytes::copy_from_slice(&data))
        .await
        .unwrap();
    store.delete(&d).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), None);
    assert!(!listed(store, &d).await);
}

async fn empty_blobs(s: &dyn Subject) {
    let store = s.store();
    let d = sha256(b"");
    // Through a session that never got data...
    let id = session(store).await;
    store.commit_upload(&id, &d, 0).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(0));
    assert!(read(store, &d, 0..0).await.is_empty());
    store.delete(&d).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), None);
    // ...and in one step.
    store.put_small(&d, Bytes::new()).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), Some(0));
    store.delete(&d).await.unwrap();
}

async fn range_reads(s: &dyn Subject) {
    let store = s.store();
    let (size, chunk) = sizes(s);
    let data = random_bytes(size);
    let d = upload(store, &data).await;
    let c = chunk as u64;
    let n = size as u64;
    for r in [
        0..1,
        0..n,
        1..n,
        n - 1..n,
        n..n,
        7..7,
        c - 1..c + 1,
        c..c + 1,
        c - 10..2 * c + 10,
        c + 5..2 * c,
        2 * c..n,
        3..c - 3,
    ] {
        let got = read(store, &d, r.clone()).await;
        assert!(
            got == data[r.start as usize..r.end as usize],
            "range {r:?} of {n} (chunk {c}) differs"
        );
    }
    assert!(matches!(
        store.read(&sha256(b"missing"), 0..1).await,
        Err(StoreError::NotFound)
    ));
    store.delete(&d).await.unwrap();
}

async fn delete_removes_every_piece(s: &dyn Subject) {
    let store = s.store();
    let (size, _) = sizes(s);
    let base = s.pieces().await;
    let big = random_bytes(size);
    let small = random_bytes(100);
    let d1 = upload(store, &big).await;
    let d2 = sha256(&small);
    store.put_small(&d2, Bytes::from(small)).await.unwrap();
    assert!(s.pieces().await > base);
    store.delete(&d1).await.unwrap();
    store.delete(&d2).await.unwrap();
    assert_eq!(s.pieces().await, base, "pieces left behind");
    assert_eq!(store.stat(&d1).await.unwrap(), None);
    assert!(matches!(
        store.read(&d1, 0..1).await,
        Err(StoreError::NotFound)
    ));
    // Deleting what is not there is fine.
    store.delete(&d1).await.unwrap();
}

async fn upload_delete(s: &dyn Subject) {
    let store = s.store();
    let (size, _) = sizes(s);
    let base = s.pieces().await;
    let id = session(store).await;
    let n = patch(store, &id, 0, &random_bytes(size)).await;
    // And data beyond the saved offset.
    append(store, &id, n, &random_bytes(size), 4096);
    assert!(s.pieces().await > base);
    store.delete_upload(&id).await.unwrap();
    assert_eq!(store.upload_state(&id).await.unwrap(), None);
    assert_eq!(s.pieces().await, base, "session pieces left behind");
    store.delete_upload(&id).await.unwrap();
    store.delete_upload(&uid()).await.unwrap();
}

async fn stale_uploads(s: &dyn Subject) {
    let store = s.store();
    let id = session(store).await;
    patch(store, &id, 0, b"abc").await;
    let now = chrono::Utc::now().timestamp();
    let stale = store.stale_uploads(now + 5, 1_000_000).await.unwrap();
    assert!(stale.contains(&id), "{id} not stale 5 s from now");
    let stale = store.stale_uploads(now - 3600, 1_000_000).await.unwrap();
    assert!(!stale.contains(&id), "{id} stale an hour ago");
    // The limit holds.
    let other = session(store).await;
    assert_eq!(store.stale_uploads(now + 5, 1).await.unwrap().len(), 1);
    store.delete_upload(&id).await.unwrap();
    store.delete_upload(&other).await.unwrap();
    let stale = store.stale_uploads(now + 5, 1_000_000).await.unwrap();
    assert!(
        !stale.contains(&id) && !stale.contains(&other),
        "deleted sessions listed"
    );
}

async fn list_blobs(s: &dyn Subject) {
    let store = s.store();
    let mut mine = Vec::new();
    for i in 0..7 {
        let data = random_bytes(10 + i);
        let d = sha256(&data);
        store.put_small(&d, Bytes::from(data)).await.unwrap();
        mine.push((d, 10 + i as u64));
    }
    let (size, _) = sizes(s);
    let data = random_bytes(size);
    mine.push((upload(store, &data).await, size as u64));
    mine.sort();
    // Page through everything in small pages.
    let now = chrono::Utc::now().timestamp();
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_blobs(after.as_ref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.digest.clone());
        all.extend(page);
    }
    assert!(
        all.windows(2).all(|w| w[0].digest < w[1].digest),
        "not in digest order"
    );
    let found: Vec<_> = all
        .iter()
        .filter(|b| mine.iter().any(|(d, _)| d == &b.digest))
        .collect();
    assert_eq!(found.len(), mine.len(), "not every blob listed");
    for (b, (d, size)) in found.iter().zip(&mine) {
        assert_eq!(&b.digest, d);
        assert_eq!(b.size, *size, "size of {d}");
        assert!(
            (b.modified - now).abs() < 120,
            "modified {} vs now {now}",
            b.modified
        );
    }
    // `after` is exclusive, even for a digest that is not stored.
    let page = store.list_blobs(Some(&mine[2].0), 1).await.unwrap();
    assert!(page[0].digest > mine[2].0);
    for (d, _) in &mine {
        store.delete(d).await.unwrap();
    }
    let rest = store.list_blobs(None, 1_000_000).await.unwrap();
    assert!(
        !rest
            .iter()
            .any(|b| mine.iter().any(|(d, _)| d == &b.digest))
    );
}

/// Streams a blob of `size` bytes in and out without holding it, and checks
/// that the memory the process has allocated stays within `budget` bytes of
/// where it started, and its anonymous resident memory within `budget` plus
/// [`ALLOCATOR_SLACK`]. Returns the write and read throughput in MiB/s.
///
/// The content is a random 1 MiB block repeated, each copy starting with its
/// number, so nothing needs hashing (unoptimised test builds hash at a few
/// tens of MB/s); the digest is made up, which the store does not check.
pub async fn big_blob(s: &dyn Subject, size: u64, budget: u64) -> (f64, f64) {
    const BLOCK: usize = 1024 * 1024;
    let store = s.store();
    let block = random_bytes(BLOCK);
    let expected = |pos: u64| -> u8 {
        let (i, off) = (pos / BLOCK as u64, (pos % BLOCK as u64) as usize);
        if off < 8 {
            i.to_le_bytes()[off]
        } else {
            block[off]
        }
    };
    let base_rss = rss_anon();
    let base_heap = heap_in_use();
    let mut peak = base_rss;
    let mut heap_peak = base_heap;
    let id = session(store).await;
    let t = Instant::now();
    let mut w = store.append_upload(&id, 0).unwrap();
    let mut piece = block.clone();
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        let n = (size - written).min(BLOCK as u64) as usize;
        piece[..8].copy_from_slice(&i.to_le_bytes());
        w.write(&piece[..n]).unwrap();
        written += n as u64;
        i += 1;
        if i.is_multiple_of(16) {
            peak = peak.max(rss_anon());
            heap_peak = heap_peak.max(heap_in_use());
        }
    }
    assert_eq!(w.finish().unwrap(), size);
    let d = sha256(format!("big blob {}", uid()).as_bytes());
    store.commit_upload(&id, &d, size).await.unwrap();
    let write_rate = size as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    let write_peak = peak;
    let t = Instant::now();
    let mut stream = store.read(&d, 0..size).await.unwrap();
    let mut pos = 0u64;
    let mut k = 0u64;
    while let Some(b) = stream.next().await {
        let b = b.unwrap();
        // Compare block by block: mostly one memcmp per block.
        let mut at = 0usize;
        while at < b.len() {
            let p = pos + at as u64;
            let off = (p % BLOCK as u64) as usize;
            let (n, same) = if off < 8 {
                let n = (8 - off).min(b.len() - at);
                (n, (0..n).all(|j| b[at + j] == expected(p + j as u64)))
            } else {
                let n = (BLOCK - off).min(b.len() - at);
                (n, b[at..at + n] == block[off..off + n])
            };
            assert!(same, "byte {p}.. of the big blob differs");
            at += n;
        }
        pos += b.len() as u64;
        k += 1;
        if k.is_multiple_of(16) {
            peak = peak.max(rss_anon());
            heap_peak = heap_peak.max(heap_in_use());
        }
    }
    let read_rate = size as f64 / t.elapsed().as_secs_f64() / 1048576.0;
    assert_eq!(pos, size);
    store.delete(&d).await.unwrap();
    let grew = peak.saturating_sub(base_rss);
    let heap_grew = heap_peak.saturating_sub(base_heap);
    eprintln!(
        "big blob: {} MiB, write {write_rate:.0} MiB/s, read {read_rate:.0} MiB/s; \
         allocated memory grew by at most {} MiB, anonymous RSS by {} MiB ({} MiB while writing)",
        size >> 20,
        heap_grew >> 20,
        grew >> 20,
        write_peak.saturating_sub(base_rss) >> 20
    );
    assert!(
        heap_grew <= budget,
        "allocated memory grew by {} MiB for a {} MiB blob",
        heap_grew >> 20,
        size >> 20
    );
    assert!(
        grew <= budget + ALLOCATOR_SLACK,
        "anonymous memory grew by {} MiB for a {} MiB blob",
        grew >> 20,
        size >> 20
    );
    (write_rate, read_rate)
}

/// Freed memory glibc's allocator may keep resident (freed 4 MiB pieces
/// linger in its per-thread arenas: measured up to ~110 MiB when reading a
/// blob of any size, with 11-15 MiB actually allocated).
pub const ALLOCATOR_SLACK: u64 = 128 << 20;

/// Bytes the process has allocated through malloc (all arenas and mmapped
/// blocks): what it holds, unlike RSS, which includes freed memory the
/// allocator keeps.
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let mi = unsafe { libc::mallinfo2() };
    (mi.uordblks + mi.hblkhd) as u64
}

/// The process's anonymous resident memory (heap, not mapped files).
pub fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
