//! Piece tables: a blob cut into fixed-size pieces, each with its BLAKE3
//! hash, so a node can verify every piece the moment it arrives from an
//! untrusted peer (Kraken checks pieces only with CRC32, which a malicious
//! peer forges at will).
//!
//! The hub computes the table once per committed blob (streaming, one piece
//! of state) and hands it to pullers over authenticated HTTP; the table is
//! the root of trust of a swarm download, together with the blob's own
//! digest that is checked once more at the end.

use std::fmt;
use std::io;
use std::ops::Range;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::registry::digest::{Algorithm, Digest, Hasher};

/// Default piece size for production tables (4 MiB, as Kraken).
pub const DEFAULT_PIECE_SIZE: u32 = 4 << 20;
/// Smallest piece size a table may have.
pub const MIN_PIECE_SIZE: u32 = 4 << 10;
/// Largest piece size a table may have; also the largest piece the wire
/// protocol accepts.
pub const MAX_PIECE_SIZE: u32 = 16 << 20;
/// Most pieces a table may have (a 64 TiB blob at 4 MiB pieces); bounds
/// what a decoder allocates.
pub const MAX_PIECES: u64 = 1 << 24;

const MAGIC: &[u8; 4] = b"DYPT";
const VERSION: u8 = 1;
/// Piece hash algorithm byte of the binary form: BLAKE3-256.
const HASH_BLAKE3: u8 = 1;

/// A blob's pieces and their BLAKE3 hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct PieceTable {
    pub digest: Digest,
    pub size: u64,
    pub piece_size: u32,
    pub hashes: Vec<[u8; 32]>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("piece table: bad magic or version")]
    Magic,
    #[error("piece table: unknown piece hash algorithm")]
    HashAlgorithm,
    #[error("piece table: piece size {0} outside {MIN_PIECE_SIZE}..={MAX_PIECE_SIZE}")]
    PieceSize(u32),
    #[error("piece table: too many pieces")]
    TooLarge,
    #[error("piece table: bad digest")]
    Digest,
    #[error("piece table: {expected} pieces expected, {found} found")]
    Count { expected: u64, found: u64 },
    #[error("piece table: bad piece hash")]
    Hash,
    #[error("piece table: truncated or trailing bytes")]
    Length,
}

fn check_shape(size: u64, piece_size: u32) -> Result<u64, TableError> {
    if !(MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece_size) {
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
        self.hashes.len() as u32
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

    /// Whether `bytes` are exactly piece `index`.
    pub fn verify(&self, index: u32, bytes: &[u8]) -> bool {
        (index as usize) < self.hashes.len()
            && bytes.len() == self.piece_len(index)
            && blake3::hash(bytes).as_bytes() == &self.hashes[index as usize]
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
    /// it does not. Memory: one read buffer and the hashes.
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

    /// Compact binary form: `"DYPT"`, version 1, hash algorithm 1 (BLAKE3),
    /// piece size (u32 BE), blob size (u64 BE), digest length (u8) and
    /// digest text, then the 32-byte hashes in piece order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let d = self.digest.as_str().as_bytes();
        let mut out = Vec::with_capacity(19 + d.len() + 32 * self.hashes.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(HASH_BLAKE3);
        out.extend_from_slice(&self.piece_size.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.push(d.len() as u8);
        out.extend_from_slice(d);
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<PieceTable, TableError> {
        if b.len() < 19 || &b[..4] != MAGIC || b[4] != VERSION {
            return Err(TableError::Magic);
        }
        if b[5] != HASH_BLAKE3 {
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
        if rest.len() as u64 != count * 32 {
            return Err(TableError::Count {
                expected: count,
                found: rest.len() as u64 / 32,
            });
        }
        let hashes = rest
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect();
        Ok(PieceTable {
            digest,
            size,
            piece_size,
            hashes,
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
            .field("pieces", &self.hashes.len())
            .finish()
    }
}

/// The JSON form for HTTP:
/// `{"digest":"sha256:…","size":N,"pieceSize":N,"pieceHash":"blake3","pieces":["hex",…]}`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TableJson {
    digest: Digest,
    size: u64,
    piece_size: u32,
    piece_hash: String,
    pieces: Vec<String>,
}

impl serde::Serialize for PieceTable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TableJson {
            digest: self.digest.clone(),
            size: self.size,
            piece_size: self.piece_size,
            piece_hash: "blake3".into(),
            pieces: self.hashes.iter().map(hex::encode).collect(),
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for PieceTable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let j = TableJson::deserialize(d)?;
        if j.piece_hash != "blake3" {
            return Err(D::Error::custom(TableError::HashAlgorithm));
        }
        let count = check_shape(j.size, j.piece_size).map_err(D::Error::custom)?;
        if j.pieces.len() as u64 != count {
            return Err(D::Error::custom(TableError::Count {
                expected: count,
                found: j.pieces.len() as u64,
            }));
        }
        let mut hashes = Vec::with_capacity(j.pieces.len());
        for p in &j.pieces {
            let mut h = [0u8; 32];
            hex::decode_to_slice(p, &mut h).map_err(|_| D::Error::custom(TableError::Hash))?;
            hashes.push(h);
        }
        Ok(PieceTable {
            digest: j.digest,
            size: j.size,
            piece_size: j.piece_size,
            hashes,
        })
    }
}

/// Builds a table from bytes fed in any chunking, e.g. by the hub's upload
/// pipeline as it writes a blob, so the table costs no second read. Holds
/// one BLAKE3 state and the blob hasher, never a piece.
pub struct PieceTableBuilder {
    blob: Hasher,
    piece: blake3::Hasher,
    piece_size: u32,
    in_piece: u32,
    size: u64,
    hashes: Vec<[u8; 32]>,
}

impl PieceTableBuilder {
    /// `piece_size` must lie within `MIN_PIECE_SIZE..=MAX_PIECE_SIZE`.
    pub fn new(algorithm: Algorithm, piece_size: u32) -> PieceTableBuilder {
        assert!(
            (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece_size),
            "piece size {piece_size} out of range"
        );
        PieceTableBuilder {
            blob: Hasher::new(algorithm),
            piece: blake3::Hasher::new(),
            piece_size,
            in_piece: 0,
            size: 0,
            hashes: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.blob.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((self.piece_size - self.in_piece) as usize).min(bytes.len());
            self.piece.update(&bytes[..take]);
            self.in_piece += take as u32;
            bytes = &bytes[take..];
            if self.in_piece == self.piece_size {
                self.hashes.push(*self.piece.finalize().as_bytes());
                self.piece.reset();
                self.in_piece = 0;
            }
        }
    }

    pub fn finish(mut self) -> PieceTable {
        if self.in_piece > 0 {
            self.hashes.push(*self.piece.finalize().as_bytes());
        }
        PieceTable {
            digest: self.blob.finish(),
            size: self.size,
            piece_size: self.piece_size,
            hashes: self.hashes,
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
    }

    #[test]
    fn binary_and_json_round_trip_and_reject_garbage() {
        let bytes = data(50_000);
        let t = PieceTable::of_bytes(Algorithm::Sha256, 16 << 10, &bytes);
        let b = t.to_bytes();
        assert_eq!(b.len(), 19 + 71 + 4 * 32);
        assert_eq!(PieceTable::from_bytes(&b).unwrap(), t);
        let j = serde_json::to_string(&t).unwrap();
        assert!(j.contains("\"pieceSize\":16384"), "{j}");
        assert_eq!(serde_json::from_str::<PieceTable>(&j).unwrap(), t);

        assert_eq!(
            PieceTable::from_bytes(&b[..b.len() - 1]),
            Err(TableError::Count {
                expected: 4,
                found: 3
            })
        );
        let mut v = b.clone();
        v[4] = 2;
        assert_eq!(PieceTable::from_bytes(&v), Err(TableError::Magic));
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
        v["pieces"].as_array_mut().unwrap().pop();
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
