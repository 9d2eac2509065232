//! Zero-copy sending of file-backed response bodies.
//!
//! A backend that serves blobs from local files hands out `Bytes` that are
//! read-only memory maps of the file (`map_file`). Each live mapping is
//! registered here with the file and the offset it maps. The server's TCP
//! stream wrapper (`server::conn`) asks `lookup` about every buffer hyper
//! writes: a buffer that lies inside a registered mapping is sent with
//! `sendfile(2)` straight from the page cache, so the bytes are never copied
//! through user space and the mapped pages are never touched (and never count
//! towards the process's resident memory). Any other writer (TLS, a test
//! reading the body in process) just reads the mapping, so the `Bytes` stay
//! correct everywhere.
//!
//! Mapping a file is safe here because only bytes that never change again
//! are mapped: committed blob files are created complete under a temporary
//! name and renamed into place, never truncated or rewritten, and the file
//! of a swarm download (`p2p::FileSink`) is mapped only over pieces already
//! verified and stored, each written once, in a file of its final length;
//! deleting a file unlinks it, which keeps an existing mapping valid.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};

struct Region {
    len: usize,
    file: Arc<File>,
    file_offset: u64,
}

static REGIONS: Mutex<BTreeMap<usize, Region>> = Mutex::new(BTreeMap::new());
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Owner of one mapping; unregisters it when the last `Bytes` slice drops.
struct Mapped {
    map: Mmap,
    start: usize,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
        regions.remove(&self.start);
        LIVE.fetch_sub(1, Ordering::Release);
    }
}

/// Maps `len` bytes of `file` at `offset` (any offset; the mapping starts at
/// the page below it) and returns them as `Bytes`. `len` must be non-zero and
/// the range must lie within the file.
pub fn map_file(file: &Arc<File>, offset: u64, len: usize) -> std::io::Result<Bytes> {
    map(file, offset, len, false)
}

/// The same, with the pages read in and mapped at once (one call instead
/// of a page fault per few pages), for bytes that will be read in user
/// space rather than sent with `sendfile`.
pub fn map_file_populated(file: &Arc<File>, offset: u64, len: usize) -> std::io::Result<Bytes> {
    map(file, offset, len, true)
}

fn map(file: &Arc<File>, offset: u64, len: usize, populate: bool) -> std::io::Result<Bytes> {
    debug_assert!(len > 0);
    let page = page_size() as u64;
    let aligned = offset - offset % page;
    let lead = (offset - aligned) as usize;
    // SAFETY: callers map only bytes that never change again (see the module
    // comment), so they cannot change or shrink underneath the mapping.
    let map = unsafe {
        let mut options = MmapOptions::new();
        options.offset(aligned).len(lead + len);
        if populate {
            options.populate();
        }
        options.map(file.as_ref())?
    };
    let start = map.as_ptr() as usize;
    {
        let mut regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
        regions.insert(
            start,
            Region {
                len: lead + len,
                file: file.clone(),
                file_offset: aligned,
            },
        );
        LIVE.fetch_add(1, Ordering::Release);
    }
    let whole = Bytes::from_owner(Mapped { map, start });
    Ok(whole.slice(lead..))
}

/// If `buf` lies wholly inside a registered mapping, the file holding it and
/// the file offset of its first byte. The file is kept open by the `Arc`.
pub fn lookup(buf: &[u8]) -> Option<(Arc<File>, u64)> {
    if buf.is_empty() || LIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let ptr = buf.as_ptr() as usize;
    let regions = REGIONS.lock().unwrap_or_else(|e| e.into_inner());
    let (&start, region) = regions.range(..=ptr).next_back()?;
    if ptr + buf.len() <= start + region.len {
        Some((
            region.file.clone(),
            region.file_offset + (ptr - start) as u64,
        ))
    } else {
        None
    }
}

/// `range` of `file` as mapped windows (`map_file`) of at most `window`
/// bytes, aligned to multiples of it. The next window is read into the page
/// cache while this one is sent: `sendfile` of pages not yet read waits for
/// the disk on the thread that sends, and a file written directly (as the
/// agent writes its downloads) starts out of the page cache.
pub fn file_windows(
    file: Arc<File>,
    range: std::ops::Range<u64>,
    window: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let end = range.end;
    futures_util::stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let len = (end - pos).min(window - pos % window);
            if pos == range.start {
                prefetch(&file, pos, len);
            }
            prefetch(&file, pos + len, (end - pos - len).min(window));
            let bytes = map_file(&file, pos, len as usize)?;
            Ok(Some((bytes, pos + len)))
        }
    })
}

/// Starts reading `len` bytes of `file` at `offset` into the page cache
/// without waiting for them. Only a hint: errors are ignored.
fn prefetch(file: &File, offset: u64, len: u64) {
    if len == 0 {
        return; // to posix_fadvise, 0 is "to the end of the file"
    }
    // SAFETY: posix_fadvise only reads its arguments.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_WILLNEED,
        );
    }
}

/// `sendfile(2)` of up to `len` bytes of `file` at `offset` into `sock`.
pub fn sendfile(sock: RawFd, file: &File, offset: u64, len: usize) -> std::io::Result<usize> {
    let mut off = offset as libc::off_t;
    // One call moves at most 0x7ffff000 bytes anyway.
    let len = len.min(0x7fff_f000);
    // SAFETY: both descriptors are open for the duration of the call and
    // `off` is a valid pointer to a local.
    let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, len) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    PAGE.store(p, Ordering::Relaxed);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A range comes out whole and in order, in windows that end on
    /// multiples of the window size (or at the range's end).
    #[tokio::test]
    async fn file_windows_cover_a_range() {
        use futures_util::TryStreamExt;
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let chunks: Vec<Bytes> = file_windows(Arc::new(f), 100..30_005, 8192)
            .try_collect()
            .await
            .unwrap();
        let ends: Vec<usize> = chunks
            .iter()
            .scan(100, |pos, c| {
                *pos += c.len();
                Some(*pos)
            })
            .collect();
        assert_eq!(ends, vec![8192, 16_384, 24_576, 30_005]);
        assert!(chunks.concat() == data[100..30_005]);
    }

    #[test]
    fn maps_and_finds_regions() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let f = Arc::new(f);
        let b = map_file(&f, 5000, 10_000).unwrap();
        assert_eq!(&b[..], &data[5000..15_000]);
        let (file, off) = lookup(&b[100..200]).unwrap();
        assert!(Arc::ptr_eq(&file, &f));
        assert_eq!(off, 5100);
        let other = vec![0u8; 16];
        assert!(lookup(&other).is_none());
        drop(b);
        drop(file);
        assert_eq!(Arc::strong_count(&f), 1);
    }
}
