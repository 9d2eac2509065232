//! Piece tables: a blob cut into fixed-size pieces, with the SHA-2 state
//! at each piece boundary (`chain`), so a node verifies every piece the
//! moment it arrives from an untrusted peer (Kraken checks pieces only with
//! CRC32, which a malicious peer forges at will) and, with the last piece,
//! the blob's digest itself, hashing each byte once.
//!
//! The hub computes the table once per committed blob (streaming, one
//! block of state) and hands it to pullers over authenticated HTTP, which
//! makes each piece check as good as the hub. The whole blob needs no
//! trust in the table at all: a piece passes only if it hashes from the
//! state at its start to the state at its end, the first starting from the
//! standard initial state and the last ending in the digest, so pieces
//! that all pass are the blob (a forged table lets forged pieces before
//! the last through, never the last).

use std::fmt;
use std::io;
use std::ops::Range;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::chain::{self, ChainHasher, State};
use crate::registry::digest::{Algorithm, Digest};

/// Default piece size for production tables (4 MiB, as Kraken).
pub const DEFAULT_PIECE_SIZE: u32 = 4 << 20;
/// Smallest piece size a table may have.
pub const MIN_PIECE_SIZE: u32 = 4 << 10;
/// Largest piece size a table may have; also the largest piece the wire
/// protocol accepts.
pub const MAX_PIECE_SIZE: u32 = 16 << 20;
/// Piece sizes are multiples of this (SHA-512's block; SHA-256's divides
/// it), so every piece but the last ends on a block boundary.
pub const PIECE_SIZE_UNIT: u32 = 128;
/// Most pieces a table may have (a 64 TiB blob at 4 MiB pieces); bounds
/// what a decoder allocates.
pub const MAX_PIECES: u64 = 1 << 24;

const MAGIC: &[u8; 4] = b"DYPT";
const VERSION: u8 = 2;
/// Piece hash byte of the binary form: the SHA-2 chain of the digest's
/// own algorithm.
const HASH_SHA2_CHAIN: u8 = 2;
/// `pieceHash` of the JSON form.
const HASH_NAME: &str = "sha2-chain";

/// A blob's pieces and the hash state at each boundary between them.
#[derive(Clone, PartialEq, Eq)]
pub struct PieceTable {
    pub digest: Digest,
    pub size: u64,
    pub piece_size: u32,
    /// `chain[i]`: the state after pieces `0..=i`, for every piece but the
    /// last.
    chain: Vec<State>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("piece table: bad magic or version")]
    Magic,
    #[error("piece table: unknown piece hash algorithm")]
    HashAlgorithm,
    #[error(
        "piece table: piece size {0} not a multiple of {PIECE_SIZE_UNIT} within {MIN_PIECE_SIZE}..={MAX_PIECE_SIZE}"
    )]
    PieceSize(u32),
    #[error("piece table: too many pieces")]
    TooLarge,
    #[error("piece table: bad digest")]
    Digest,
    #[error("piece table: {expected} boundary states expected, {found} found")]
    Count { expected: u64, found: u64 },
    #[error("piece table: bad boundary state")]
    Hash,
    #[error("piece table: truncated or trailing bytes")]
    Length,
}

/// Whether `piece_size` is one a table may have.
pub fn valid_piece_size(piece_size: u32) -> bool {
    (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece_size)
        && piece_size.is_multiple_of(PIECE_SIZE_UNIT)
}

/// The number of pieces, checked.
fn check_shape(size: u64, piece_size: u32) -> Result<u64, TableError> {
    if !valid_piece_size(piece_size) {
        return Err(TableError::PieceSize(piece_size));
    }
    let count = size.div_ceil(piece_size as u64);
    if count > MAX_PIECES {
        return Err(TableError::TooLarge);
    }
    Ok(count)
}

impl PieceTable {
    /// Number of pieces (0 for an empty blob).
    pub fn piece_count(&self) -> u32 {
        self.size.div_ceil(self.piece_size as u64) as u32
    }

    /// Byte range of piece `index` in the blob.
    pub fn piece_range(&self, index: u32) -> Range<u64> {
        let start = index as u64 * self.piece_size as u64;
        start..(start + self.piece_size as u64).min(self.size)
    }

    /// Length of piece `index` (the last one may be short).
    pub fn piece_len(&self, index: u32) -> usize {
        let r = self.piece_range(index);
        (r.end - r.start) as usize
    }

    /// Whether `bytes` are exactly piece `index`: they hash from the state
    /// at the piece's start to the state at its end (for the last piece,
    /// to the blob's digest).
    pub fn verify(&self, index: u32, bytes: &[u8]) -> bool {
        let n = self.piece_count();
        if index >= n || bytes.len() != self.piece_len(index) {
            return false;
        }
        let i = index as usize;
        let mut state = match i {
            0 => State::initial(self.digest.algorithm()),
            _ => self.chain[i - 1],
        };
        if index + 1 < n {
            state.absorb(bytes);
            state == self.chain[i]
        } else {
            hex::encode(state.finish(bytes, self.size)) == self.digest.hex()
        }
    }

    /// The table of bytes already in memory (small blobs, tests).
    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    pub fn of_bytes(algorithm: Algorithm, piece_size: u32, bytes: &[u8]) -> PieceTable {
        let mut b = PieceTableBuilder::new(algorithm, piece_size);
        b.update(bytes);
        b.finish()
    }

    /// Computes the table of a blob read from `reader`, which must yield
    /// exactly the blob whose digest is `digest`; an `InvalidData` error if
    /// it does not. Memory: one read buffer and the states.
    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    pub async fn compute<R: AsyncRead + Unpin>(
        digest: &Digest,
        piece_size: u32,
        mut reader: R,
    ) -> io::Result<PieceTable> {
        check_shape(0, piece_size).map_err(invalid)?;
        let mut builder = PieceTableBuilder::new(digest.algorithm(), piece_size);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            builder.update(&buf[..n]);
        }
        check_digest(builder.finish(), digest)
    }

    /// Like [`compute`](Self::compute) over a stream of chunks (a
    /// `storage::ByteStream`). Large chunks are hashed on a blocking thread.
    pub async fn compute_stream<S>(
        digest: &Digest,
        piece_size: u32,
        mut stream: S,
    ) -> io::Result<PieceTable>
    where
        S: Stream<Item = io::Result<Bytes>> + Unpin,
    {
        check_shape(0, piece_size).map_err(invalid)?;
        let mut builder = PieceTableBuilder::new(digest.algorithm(), piece_size);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if chunk.len() >= 256 << 10 {
                builder = tokio::task::spawn_blocking(move || {
                    builder.update(&chunk);
                    builder
                })
                .await
                .map_err(io::Error::other)?;
            } else {
                builder.update(&chunk);
            }
        }
        check_digest(builder.finish(), digest)
    }

    /// Compact binary form: `"DYPT"`, version 2, piece hash 2 (SHA-2
    /// chain), piece size (u32 BE), blob size (u64 BE), digest length (u8)
    /// and digest text, then the boundary states (32 bytes each for
    /// SHA-256, 64 for SHA-512) in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let d = self.digest.as_str().as_bytes();
        let width = chain::state_len(self.digest.algorithm());
        let mut out = Vec::with_capacity(19 + d.len() + width * self.chain.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(HASH_SHA2_CHAIN);
        out.extend_from_slice(&self.piece_size.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.push(d.len() as u8);
        out.extend_from_slice(d);
        for s in &self.chain {
            out.extend_from_slice(&s.to_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<PieceTable, TableError> {
        if b.len() < 19 || &b[..4] != MAGIC || b[4] != VERSION {
            return Err(TableError::Magic);
        }
        if b[5] != HASH_SHA2_CHAIN {
            return Err(TableError::HashAlgorithm);
        }
        let piece_size = u32::from_be_bytes(b[6..10].try_into().unwrap());
        let size = u64::from_be_bytes(b[10..18].try_into().unwrap());
        let count = check_shape(size, piece_size)?;
        let dlen = b[18] as usize;
        let rest = &b[19..];
        if rest.len() < dlen {
            return Err(TableError::Length);
        }
        let digest = std::str::from_utf8(&rest[..dlen])
            .ok()
            .and_then(|s| s.parse::<Digest>().ok())
            .ok_or(TableError::Digest)?;
        let rest = &rest[dlen..];
        let width = chain::state_len(digest.algorithm());
        let expected = count.saturating_sub(1);
        if rest.len() as u64 != expected * width as u64 {
            return Err(TableError::Count {
                expected,
                found: (rest.len() / width) as u64,
            });
        }
        let chain = rest
            .chunks_exact(width)
            .map(|c| State::from_bytes(digest.algorithm(), c).ok_or(TableError::Hash))
            .collect::<Result<_, _>>()?;
        Ok(PieceTable {
            digest,
            size,
            piece_size,
            chain,
        })
    }
}

fn invalid(e: TableError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

fn check_digest(table: PieceTable, expected: &Digest) -> io::Result<PieceTable> {
    if table.digest != *expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "blob hashes to {}, not to {expected}",
                table.digest.as_str()
            ),
        ));
    }
    Ok(table)
}

impl fmt::Debug for PieceTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PieceTable")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("piece_size", &self.piece_size)
            .field("pieces", &self.piece_count())
            .finish()
    }
}

/// The JSON form for HTTP: `{"digest":"sha256:…","size":N,"pieceSize":N,
/// "pieceHash":"sha2-chain","chain":["hex",…]}`, `chain` holding the state
/// after each piece but the last, as big-endian words in hex.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TableJson {
    digest: Digest,
    size: u64,
    piece_size: u32,
    piece_hash: String,
    chain: Vec<String>,
}

impl serde::Serialize for PieceTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TableJson {
            digest: self.digest.clone(),
            size: self.size,
            piece_size: self.piece_size,
            piece_hash: HASH_NAME.into(),
            chain: self
                .chain
                .iter()
                .map(|s| hex::encode(s.to_bytes()))
                .collect(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for PieceTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let j = TableJson::deserialize(d)?;
        if j.piece_hash != HASH_NAME {
            return Err(D::Error::custom(TableError::HashAlgorithm));
        }
        let count = check_shape(j.size, j.piece_size).map_err(D::Error::custom)?;
        let expected = count.saturating_sub(1);
        if j.chain.len() as u64 != expected {
            return Err(D::Error::custom(TableError::Count {
                expected,
                found: j.chain.len() as u64,
            }));
        }
        let algorithm = j.digest.algorithm();
        let chain = j
            .chain
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| State::from_bytes(algorithm, &b))
                    .ok_or(D::Error::custom(TableError::Hash))
            })
            .collect::<Result<_, _>>()?;
        Ok(PieceTable {
            digest: j.digest,
            size: j.size,
            piece_size: j.piece_size,
            chain,
        })
    }
}

/// Builds a table from bytes fed in any chunking, e.g. by the hub as it
/// reads a blob: one pass of the blob's own hash, never a piece held.
pub struct PieceTableBuilder {
    algorithm: Algorithm,
    hasher: ChainHasher,
    piece_size: u32,
}

impl PieceTableBuilder {
    /// `piece_size` must be valid (`valid_piece_size`).
    pub fn new(algorithm: Algorithm, piece_size: u32) -> PieceTableBuilder {
        assert!(
            valid_piece_size(piece_size),
            "piece size {piece_size} out of range"
        );
        PieceTableBuilder {
            algorithm,
            hasher: ChainHasher::new(algorithm, piece_size),
            piece_size,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    pub fn finish(self) -> PieceTable {
        let (chain, size, digest) = self.hasher.finish();
        PieceTable {
            digest: Digest::from_raw(self.algorithm, &digest),
            size,
            piece_size: self.piece_size,
            chain,
        }
    }
}

/// A set of piece indexes as a bitmap, most significant bit first (piece 0
/// is bit 7 of byte 0), as BitTorrent's bitfield.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    len: u32,
    bits: Vec<u8>,
}

impl Bitfield {
    pub fn new(len: u32) -> Bitfield {
        Bitfield {
            len,
            bits: vec![0; (len as usize).div_ceil(8)],
        }
    }

    /// From the wire form; `None` if the byte count does not match `len`
    /// or bits beyond `len` are set.
    pub fn from_bytes(len: u32, bits: Vec<u8>) -> Option<Bitfield> {
        if bits.len() != (len as usize).div_ceil(8) {
            return None;
        }
        if !len.is_multiple_of(8) {
            let last = *bits.last()?;
            if last & (0xff >> (len % 8)) != 0 {
                return None;
            }
        }
        Some(Bitfield { len, bits })
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bits[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    pub fn set(&mut self, i: u32, value: bool) {
        if i >= self.len {
            return;
        }
        let mask = 0x80 >> (i % 8);
        let byte = &mut self.bits[(i / 8) as usize];
        if value {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }

    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    pub fn is_full(&self) -> bool {
        self.count() == self.len
    }
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    #[tokio::test]
    async fn computes_streams_and_verifies() {
        let bytes = data(100_000);
        let digest = Digest::of(Algorithm::Sha256, &bytes);
        let t = PieceTable::compute(&digest, 16 << 10, &bytes[..])
            .await
            .unwrap();
        assert_eq!(t.piece_count(), 7);
        assert_eq!(t.piece_len(6), 100_000 - 6 * 16384);
        assert_eq!(t.piece_range(1), 16384..32768);
        assert_eq!(t, PieceTable::of_bytes(Algorithm::Sha256, 16 << 10, &bytes));
        for i in 0..7 {
            let r = t.piece_range(i);
            assert!(t.verify(i, &bytes[r.start as usize..r.end as usize]));
        }
        let mut bad = bytes[..16384].to_vec();
        bad[100] ^= 1;
        assert!(!t.verify(0, &bad));
        assert!(!t.verify(0, &bytes[..16383]), "short");
        assert!(!t.verify(7, b""), "out of range");

        // Uneven chunking gives the same table.
        let chunks: Vec<io::Result<Bytes>> = bytes
            .chunks(777)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let s = PieceTable::compute_stream(&digest, 16 << 10, futures_util::stream::iter(chunks))
            .await
            .unwrap();
        assert_eq!(s, t);

        // Wrong digest.
        let other = Digest::of(Algorithm::Sha256, b"x");
        let e = PieceTable::compute(&other, 16 << 10, &bytes[..])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        // Empty blob; exact multiple.
        let e = PieceTable::of_bytes(Algorithm::Sha256, 16 << 10, b"");
        assert_eq!(e.piece_count(), 0);
        let m = PieceTable::of_bytes(Algorithm::Sha512, 16 << 10, &bytes[..32768]);
        assert_eq!(m.piece_count(), 2);
        assert_eq!(m.piece_len(1), 16384);
        assert!(m.verify(0, &bytes[..16384]) && m.verify(1, &bytes[16384..32768]));
        assert!(
            !m.verify(1, &bytes[..16384]),
            "the right length, not the piece"
        );
    }

    #[test]
    fn a_forged_chain_passes_no_piece_but_its_own_and_never_the_last() {
        // A table whose boundary states a forger chose for other bytes:
        // the forged pieces pass up to the state, but the chain must end in
        // the digest, which the forged bytes do not hash to.
        let real = data(40_000);
        let mut fake = real.clone();
        fake[5] ^= 1;
        let t = PieceTable::of_bytes(Algorithm::Sha256, 16 << 10, &real);
        let mut forged = PieceTable::of_bytes(Algorithm::Sha256, 16 << 10, &fake);
        forged.digest = t.digest.clone();
        assert!(forged.verify(0, &fake[..16384]));
        assert!(!forged.verify(0, &real[..16384]));
        assert!(forged.verify(1, &fake[16384..32768]));
        assert!(
            !forged.verify(2, &fake[32768..]),
            "ends elsewhere than the digest"
        );
        assert!(
            !forged.verify(2, &real[32768..]),
            "starts from the forged state"
        );
        assert!(t.verify(2, &real[32768..]));
    }

    #[test]
    fn binary_and_json_round_trip_and_reject_garbage() {
        let bytes = data(50_000);
        let t = PieceTable::of_bytes(Algorithm::Sha256, 16 << 10, &bytes);
        let b = t.to_bytes();
        assert_eq!(b.len(), 19 + 71 + 3 * 32);
        assert_eq!(PieceTable::from_bytes(&b).unwrap(), t);
        let j = serde_json::to_string(&t).unwrap();
        assert!(j.contains("\"pieceSize\":16384"), "{j}");
        assert_eq!(serde_json::from_str::<PieceTable>(&j).unwrap(), t);

        assert_eq!(
            PieceTable::from_bytes(&b[..b.len() - 1]),
            Err(TableError::Count {
                expected: 3,
                found: 2
            })
        );
        let mut v = b.clone();
        v[4] = 1;
        assert_eq!(PieceTable::from_bytes(&v), Err(TableError::Magic));
        let mut v = b.clone();
        v[5] = 1;
        assert_eq!(PieceTable::from_bytes(&v), Err(TableError::HashAlgorithm));
        let mut v = b.clone();
        v[6..10].copy_from_slice(&(16385u32).to_be_bytes());
        assert_eq!(
            PieceTable::from_bytes(&v),
            Err(TableError::PieceSize(16385))
        );
        let mut v = b.clone();
        v[6..10].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(PieceTable::from_bytes(&v), Err(TableError::PieceSize(1)));
        let mut v = b.clone();
        v[10..18].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(PieceTable::from_bytes(&v), Err(TableError::TooLarge));
        let mut v = b.clone();
        v[20] = b'X';
        assert_eq!(PieceTable::from_bytes(&v), Err(TableError::Digest));
        let mut v: serde_json::Value = serde_json::from_str(&j).unwrap();
        v["chain"].as_array_mut().unwrap().pop();
        assert!(serde_json::from_value::<PieceTable>(v).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&j).unwrap();
        v["chain"][0] = "00".into();
        assert!(serde_json::from_value::<PieceTable>(v).is_err());
        let mut v: serde_json::Value = serde_json::from_str(&j).unwrap();
        v["pieceHash"] = "blake3".into();
        assert!(serde_json::from_value::<PieceTable>(v).is_err());
    }

    #[test]
    fn bitfield() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes().len(), 2);
        b.set(0, true);
        b.set(9, true);
        b.set(10, true);
        assert!(b.get(0) && b.get(9) && !b.get(1) && !b.get(10));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count(), 2);
        assert_eq!(Bitfield::from_bytes(10, vec![0x80, 0x40]).unwrap(), b);
        assert!(Bitfield::from_bytes(10, vec![0x80, 0x20]).is_none());
        assert!(Bitfield::from_bytes(10, vec![0x80]).is_none());
        b.set(0, false);
        assert!(!b.get(0));
    }
}
