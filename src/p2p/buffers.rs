//! Reused, page-aligned buffers for pieces on their way in.
//!
//! A download reads every piece it receives, from a peer or the origin,
//! into one of these, hashes it, writes it to its sink and drops it. A
//! fresh allocation per piece cost a zeroing pass and then, in the kernel,
//! a page fault and a zeroed page per 4 KiB and an unmapping when freed
//! (5% of an agent's CPU in a wave); a reused buffer costs none of that.
//! Page alignment lets a `FileSink` write a piece with `O_DIRECT` straight
//! from the buffer instead of copying it into an aligned one first.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use memmap2::MmapMut;

use crate::zerocopy::page_size;

/// Bytes of free buffers kept for reuse; beyond it a freed buffer is
/// unmapped. About as many pieces as a download has in flight.
const POOL_BYTES: usize = 32 << 20;

static POOL: Mutex<Vec<MmapMut>> = Mutex::new(Vec::new());

/// Free buffers are unmapped once no buffer was taken for this long, so
/// an idle agent holds none.
const IDLE: Duration = Duration::from_secs(5);

/// When a buffer was last taken, in milliseconds (`epoch_ms`).
static LAST_TAKEN: AtomicU64 = AtomicU64::new(0);

fn epoch_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Whether memory was handed back since a buffer was last taken.
static TRIMMED: AtomicBool = AtomicBool::new(true);

/// Unmaps the free buffers, and hands the allocator's free memory back to
/// the kernel, once no buffer was taken for a while (called by the node
/// every tick): the process keeps freed memory while pieces move (see
/// `main`), not after.
pub fn trim_idle() {
    if epoch_ms().saturating_sub(LAST_TAKEN.load(Ordering::Relaxed)) < IDLE.as_millis() as u64 {
        return;
    }
    if TRIMMED.swap(true, Ordering::Relaxed) {
        return;
    }
    let freed = {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *pool)
    };
    drop(freed);
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A buffer of exactly `len` bytes to fill (its contents are whatever a
/// previous piece left: callers overwrite all of it).
pub struct PieceBuf {
    /// Always `Some` until dropped.
    map: Option<MmapMut>,
    len: usize,
}

impl PieceBuf {
    /// A buffer of `len` bytes, from the pool if one of the same page
    /// count is free.
    pub fn new(len: usize) -> io::Result<PieceBuf> {
        let cap = len.max(1).next_multiple_of(page_size());
        LAST_TAKEN.store(epoch_ms(), Ordering::Relaxed);
        TRIMMED.store(false, Ordering::Relaxed);
        let reused = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            pool.iter()
                .position(|m| m.len() == cap)
                .map(|i| pool.swap_remove(i))
        };
        let map = match reused {
            Some(m) => m,
            None => MmapMut::map_anon(cap)?,
        };
        Ok(PieceBuf {
            map: Some(map),
            len,
        })
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.map.as_mut().expect("PieceBuf used after drop")[..len]
    }

    /// The filled buffer as `Bytes`; it goes back to the pool when the
    /// last slice of it drops.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(Filled(self))
    }

    /// `len` bytes of `file` at `offset`, read in whole pages into a
    /// reused buffer, so `file` may be opened with `O_DIRECT`. Pieces an
    /// agent stored were written around the page cache; read back through
    /// it, every 4 KiB cost a page allocation and a synchronous read (a
    /// tenth of an agent's CPU in a wave), read directly they cost a DMA.
    pub fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
        let page = page_size() as u64;
        let start = offset - offset % page;
        let lead = (offset - start) as usize;
        let mut buf = PieceBuf::new((lead + len).next_multiple_of(page as usize))?;
        let dst = buf.as_mut_slice();
        let mut filled = 0;
        // Whole pages to the end of the buffer, which may pass the end of
        // the file: the read stops there, after the bytes wanted.
        while filled < lead + len {
            match file.read_at(&mut dst[filled..], start + filled as u64) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(buf.freeze().slice(lead..lead + len))
    }
}

/// `path` opened for reading with `O_DIRECT` if its file system takes
/// it, else normally.
pub fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .or_else(|_| File::open(path))
}

impl Drop for PieceBuf {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        let unpooled = {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            let held: usize = pool.iter().map(|m| m.len()).sum();
            if held + map.len() <= POOL_BYTES {
                pool.push(map);
                None
            } else {
                Some(map)
            }
        };
        // Unmapped outside the lock.
        drop(unpooled);
    }
}

struct Filled(PieceBuf);

impl AsRef<[u8]> for Filled {
    fn as_ref(&self) -> &[u8] {
        let b = &self.0;
        &b.map.as_ref().expect("PieceBuf used after drop")[..b.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_exact_and_reused() {
        let page = page_size();
        let mut a = PieceBuf::new(37 * page + 5).unwrap();
        a.as_mut_slice().fill(7);
        let a = a.freeze();
        assert_eq!(a.len(), 37 * page + 5);
        assert!(a.iter().all(|&b| b == 7));
        assert_eq!(a.as_ptr() as usize % page, 0);
        let ptr = a.as_ptr();
        let tail = a.slice(page..);
        drop(a);
        // Still held by the slice: not reused yet.
        assert_eq!(tail.len(), 36 * page + 5);
        drop(tail);
        // Other tests take buffers concurrently; one of ours comes back
        // unless a test of the same size took it.
        let mut again = PieceBuf::new(37 * page + 100).unwrap();
        let reused = again.as_mut_slice().as_ptr() == ptr;
        assert_eq!(again.as_mut_slice().len(), 37 * page + 100);
        assert!(reused, "a freed buffer of the same page count is reused");
    }

    /// Any range, aligned or not, to the end of the file or not, directly
    /// (where the file system allows it) or not.
    #[test]
    fn read_at_reads_any_range() {
        let page = page_size();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..5 * page + 77).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        for file in [open_direct(&path).unwrap(), File::open(&path).unwrap()] {
            for (a, b) in [
                (0, data.len()),
                (0, page),
                (page, 3 * page),
                (100, 2 * page + 1),
                (4 * page + 3, data.len()),
                (data.len() - 1, data.len()),
            ] {
                let got = PieceBuf::read_at(&file, a as u64, b - a).unwrap();
                assert!(got[..] == data[a..b], "{a}..{b}");
            }
            let past = PieceBuf::read_at(&file, (data.len() - 10) as u64, 11);
            assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
