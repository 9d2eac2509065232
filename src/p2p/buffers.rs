//! Reused, page-aligned buffers for pieces on their way in.
//!
//! A download reads every piece it receives, from a peer or the origin,
//! into one of these, hashes it, writes it to its sink and drops it. A
//! fresh allocation per piece cost a zeroing pass and then, in the kernel,
//! a page fault and a zeroed page per 4 KiB and an unmapping when freed
//! (5% of an agent's CPU in a wave); a reused buffer costs none of that.
//! Page alignment lets a `FileSink` write a piece with `O_DIRECT` straight
//! from the buffer instead of copying it into an aligned one first.

use std::io;
use std::sync::Mutex;

use bytes::Bytes;
use memmap2::MmapMut;

use crate::zerocopy::page_size;

/// Bytes of free buffers kept for reuse; beyond it a freed buffer is
/// unmapped. About as many pieces as a download has in flight.
const POOL_BYTES: usize = 32 << 20;

static POOL: Mutex<Vec<MmapMut>> = Mutex::new(Vec::new());

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
}

impl Drop for PieceBuf {
    fn drop(&mut self) {
        let Some(map) = self.map.take() else { return };
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = pool.iter().map(|m| m.len()).sum();
        if held + map.len() <= POOL_BYTES {
            pool.push(map);
        }
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
}
