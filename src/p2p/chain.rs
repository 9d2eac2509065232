//! SHA-2 chaining values at piece boundaries, which let a downloader check
//! each piece on its own and the whole digest at once, hashing every byte
//! once.
//!
//! SHA-256 (and SHA-512) absorb a message block by block into an 8-word
//! state; the digest is the state after the last, padded block. When
//! every piece but the last is a whole number of blocks, the state at each
//! piece boundary is well defined. A piece table lists those states; the
//! downloader hashes piece `i` from the state at its start and compares
//! the result with the state at its end, and hashes the last piece, padded,
//! to the digest itself. Pieces that all pass hash, end to end, to the
//! blob's digest: the table's states need no trust, since every link from
//! the standard initial state to the digest is computed by the checker.

use sha2::block_api::{compress256, compress512};

use crate::registry::digest::Algorithm;

/// A SHA-2 state between blocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Sha256([u32; 8]),
    Sha512([u64; 8]),
}

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Block length of `algorithm`: piece sizes must be multiples of it.
pub fn block_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Sha256 => 64,
        Algorithm::Sha512 => 128,
    }
}

/// Length of a state in its byte form.
pub fn state_len(algorithm: Algorithm) -> usize {
    match algorithm {
        Algorithm::Sha256 => 32,
        Algorithm::Sha512 => 64,
    }
}

impl State {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The standard initial state.
    pub fn initial(algorithm: Algorithm) -> State {
        match algorithm {
            Algorithm::Sha256 => State::Sha256(SHA256_IV),
            Algorithm::Sha512 => State::Sha512(SHA512_IV),
        }
    }

    /// Absorbs whole blocks; `bytes.len()` must be a multiple of the block
    /// length (anything after the last whole block is ignored).
    pub fn absorb(&mut self, bytes: &[u8]) {
        match self {
            State::Sha256(s) => compress256(s, bytes.as_chunks::<64>().0),
            State::Sha512(s) => compress512(s, bytes.as_chunks::<128>().0),
        }
    }

    /// The digest of a message of `total` bytes whose whole blocks before
    /// `tail` this state has absorbed: absorbs `tail`, pads, and returns
    /// the digest bytes.
    pub fn finish(mut self, tail: &[u8], total: u64) -> Vec<u8> {
        let block = block_len(self.algorithm());
        let whole = tail.len() / block * block;
        self.absorb(&tail[..whole]);
        // The rest, 0x80, zeros, then the length in bits (big-endian, in
        // the last 8 bytes; SHA-512's 128-bit length has zero high bytes
        // for any blob we hold).
        let mut last = [0u8; 256];
        let rest = &tail[whole..];
        last[..rest.len()].copy_from_slice(rest);
        last[rest.len()] = 0x80;
        let len_field = if block == 64 { 8 } else { 16 };
        let padded = if rest.len() + 1 + len_field <= block {
            block
        } else {
            2 * block
        };
        last[padded - 8..padded].copy_from_slice(&(total.wrapping_mul(8)).to_be_bytes());
        self.absorb(&last[..padded]);
        self.to_bytes()
    }

    /// Big-endian words, as SHA-2 outputs them.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            State::Sha256(s) => s.iter().flat_map(|w| w.to_be_bytes()).collect(),
            State::Sha512(s) => s.iter().flat_map(|w| w.to_be_bytes()).collect(),
        }
    }

    /// From [`to_bytes`](Self::to_bytes); `None` if the length is not
    /// `state_len(algorithm)`.
    pub fn from_bytes(algorithm: Algorithm, b: &[u8]) -> Option<State> {
        if b.len() != state_len(algorithm) {
            return None;
        }
        Some(match algorithm {
            Algorithm::Sha256 => {
                let mut s = [0u32; 8];
                for (w, c) in s.iter_mut().zip(b.chunks_exact(4)) {
                    *w = u32::from_be_bytes(c.try_into().unwrap());
                }
                State::Sha256(s)
            }
            Algorithm::Sha512 => {
                let mut s = [0u64; 8];
                for (w, c) in s.iter_mut().zip(b.chunks_exact(8)) {
                    *w = u64::from_be_bytes(c.try_into().unwrap());
                }
                State::Sha512(s)
            }
        })
    }
}

/// Feeds a message in any chunking and keeps the state at every multiple
/// of `every` bytes (a multiple of the block length), so the hub gets a
/// blob's boundary states and its digest from one pass.
pub struct ChainHasher {
    state: State,
    block: usize,
    buf: [u8; 128],
    buffered: usize,
    total: u64,
    every: u64,
    boundaries: Vec<State>,
}

impl ChainHasher {
    pub fn new(algorithm: Algorithm, every: u32) -> ChainHasher {
        let block = block_len(algorithm);
        assert!(
            every as usize >= block && (every as usize).is_multiple_of(block),
            "{every} is not a multiple of the {block}-byte block"
        );
        ChainHasher {
            state: State::initial(algorithm),
            block,
            buf: [0; 128],
            buffered: 0,
            total: 0,
            every: every as u64,
            boundaries: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // Never absorb across a boundary, so the state there is seen.
            let to_boundary = (self.every - self.total % self.every) as usize;
            let take = to_boundary.min(bytes.len());
            let (now, later) = bytes.split_at(take);
            self.absorb(now);
            self.total += take as u64;
            bytes = later;
            if self.total.is_multiple_of(self.every) {
                debug_assert_eq!(self.buffered, 0);
                self.boundaries.push(self.state);
            }
        }
    }

    fn absorb(&mut self, mut bytes: &[u8]) {
        if self.buffered > 0 {
            let take = (self.block - self.buffered).min(bytes.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&bytes[..take]);
            self.buffered += take;
            bytes = &bytes[take..];
            if self.buffered < self.block {
                return;
            }
            let full = self.buf;
            self.state.absorb(&full[..self.block]);
            self.buffered = 0;
        }
        let whole = bytes.len() / self.block * self.block;
        self.state.absorb(&bytes[..whole]);
        let rest = &bytes[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    /// The boundary states strictly inside the message (none at its end)
    /// and the digest bytes.
    pub fn finish(self) -> (Vec<State>, u64, Vec<u8>) {
        let mut boundaries = self.boundaries;
        if self.total > 0 && self.total.is_multiple_of(self.every) {
            boundaries.pop();
        }
        let digest = self.state.finish(&self.buf[..self.buffered], self.total);
        (boundaries, self.total, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Digest;

    fn data(n: usize) -> Vec<u8> {
        crate::storage::contract::bytes(n as u64, n)
    }

    #[test]
    fn finish_matches_sha2_at_every_tail_length() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for n in (0..300).chain([1000, 4096, 4097]) {
                let bytes = data(n);
                let got = State::initial(alg).finish(&bytes, n as u64);
                assert_eq!(
                    hex::encode(got),
                    Digest::of(alg, &bytes).hex(),
                    "{alg:?} {n}"
                );
            }
        }
    }

    #[test]
    fn boundaries_chain_to_the_digest_in_any_chunking() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for n in [0, 1, 4096, 4096 * 3, 4096 * 3 + 5, 10_000] {
                let bytes = data(n);
                let mut h = ChainHasher::new(alg, 4096);
                for c in bytes.chunks(333) {
                    h.update(c);
                }
                let (bounds, total, digest) = h.finish();
                assert_eq!(total, n as u64);
                assert_eq!(bounds.len(), n.div_ceil(4096).saturating_sub(1));
                assert_eq!(hex::encode(&digest), Digest::of(alg, &bytes).hex());
                // Each boundary is the state after the pieces before it.
                for (i, b) in bounds.iter().enumerate() {
                    let mut s = State::initial(alg);
                    s.absorb(&bytes[..(i + 1) * 4096]);
                    assert_eq!(*b, s);
                    assert_eq!(State::from_bytes(alg, &b.to_bytes()), Some(*b));
                }
            }
        }
        assert_eq!(State::from_bytes(Algorithm::Sha256, &[0; 31]), None);
    }
}
