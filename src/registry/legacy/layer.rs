//! Hashing a layer in one pass: its blob digest, its v1 checksum
//! (`sha256(json + "\n" + layer)`) and, for gzip or plain tar layers, its
//! diff id (the SHA-256 of the uncompressed tar, via a streaming gzip
//! decoder). Runs on a blocking thread; the network side feeds it through
//! a bounded channel.

use std::io::Write;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::{LegacyError, LegacyResult};
use crate::registry::digest::{Algorithm, Digest, Hasher};
use crate::storage::{ByteStream, StoreError, UploadWriter};

pub const GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const TAR_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Chunks in flight between the network and the hashing thread.
const PIPELINE_DEPTH: usize = 4;
/// A client that sends nothing for this long loses its request.
const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How a layer is compressed, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b, 0x08]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::None => "uncompressed",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// Hashes what the gzip decoder writes.
struct DiffWriter(Sha256);

impl Write for DiffWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Diff {
    /// Waiting for enough bytes to tell the compression.
    Sniffing(Vec<u8>),
    Gzip(Box<flate2::write::MultiGzDecoder<DiffWriter>>),
    /// Uncompressed: the diff id is the blob digest.
    Plain,
    /// Compressed otherwise, or the gzip stream was broken.
    Unknown(Compression),
}

/// What hashing a layer found.
pub struct LayerHashes {
    pub digest: Digest,
    pub size: u64,
    /// `sha256:<hex>` of the JSON, a newline and the layer.
    pub checksum: Option<String>,
    /// The diff id and the v2 media type, for gzip and plain tar layers.
    pub diff: Option<(Digest, &'static str)>,
    pub compression: Compression,
}

pub struct LayerHasher {
    blob: Hasher,
    checksum: Option<Sha256>,
    diff: Diff,
    size: u64,
}

/// Bytes enough to recognise every compression `sniff` knows.
const SNIFF_LEN: usize = 6;

impl LayerHasher {
    /// A hasher computing the v1 checksum over `json` too, if given.
    pub fn new(json: Option<&[u8]>) -> LayerHasher {
        let checksum = json.map(|j| {
            let mut h = Sha256::new();
            h.update(j);
            h.update(b"\n");
            h
        });
        LayerHasher {
            blob: Hasher::new(Algorithm::Sha256),
            checksum,
            diff: Diff::Sniffing(Vec::with_capacity(SNIFF_LEN)),
            size: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.blob.update(chunk);
        if let Some(c) = &mut self.checksum {
            c.update(chunk);
        }
        self.size += chunk.len() as u64;
        self.feed(chunk);
    }

    fn feed(&mut self, chunk: &[u8]) {
        if let Diff::Sniffing(head) = &mut self.diff {
            let take = (SNIFF_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
            if head.len() < SNIFF_LEN {
                return;
            }
            let head = std::mem::take(head);
            self.decide(&head);
            // The rest of the chunk goes where the head went.
            return self.feed(&chunk[take..]);
        }
        match &mut self.diff {
            Diff::Gzip(d) => {
                if d.write_all(chunk).is_err() {
                    self.diff = Diff::Unknown(Compression::Gzip);
                }
            }
            Diff::Sniffing(_) | Diff::Plain | Diff::Unknown(_) => {}
        }
    }

    fn decide(&mut self, head: &[u8]) {
        self.diff = match Compression::sniff(head) {
            Compression::Gzip => {
                let mut d = Box::new(flate2::write::MultiGzDecoder::new(
                    DiffWriter(Sha256::new()),
                ));
                if d.write_all(head).is_ok() {
                    Diff::Gzip(d)
                } else {
                    Diff::Unknown(Compression::Gzip)
                }
            }
            Compression::None => Diff::Plain,
            other => Diff::Unknown(other),
        };
    }

    pub fn finish(mut self) -> LayerHashes {
        if let Diff::Sniffing(head) = &mut self.diff {
            // A layer shorter than the sniffed head.
            let head = std::mem::take(head);
            self.decide(&head);
        }
        let digest = self.blob.finish();
        let (diff, compression) = match self.diff {
            Diff::Gzip(d) => match d.finish() {
                Ok(w) => (
                    Some((hex_digest(w.0.finalize().as_slice()), GZIP_LAYER)),
                    Compression::Gzip,
                ),
                Err(_) => (None, Compression::Gzip),
            },
            Diff::Plain => (Some((digest.clone(), TAR_LAYER)), Compression::None),
            Diff::Unknown(c) => (None, c),
            Diff::Sniffing(_) => (None, Compression::None),
        };
        LayerHashes {
            digest,
            size: self.size,
            checksum: self
                .checksum
                .map(|c| format!("sha256:{}", hex::encode(c.finalize()))),
            diff,
            compression,
        }
    }
}

fn hex_digest(raw: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(raw))
        .parse()
        .expect("a SHA-256 in hex is a digest")
}

fn body_error(e: std::io::Error) -> LegacyError {
    LegacyError::Invalid(format!("reading the request body failed: {e}"))
}

/// Streams `body` through `hasher` on a blocking thread, writing every
/// chunk to `writer` too if given; returns the hashes. Nothing is held
/// beyond the chunks in flight.
pub async fn pump(
    mut body: ByteStream,
    mut hasher: LayerHasher,
    writer: Option<Box<dyn UploadWriter>>,
) -> LegacyResult<(LayerHashes, u64)> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(PIPELINE_DEPTH);
    let worker = tokio::task::spawn_blocking(move || -> Result<(LayerHashes, u64), StoreError> {
        let mut writer = writer;
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            if let Some(w) = writer.as_mut() {
                w.write(&chunk)?;
            }
        }
        let written = match writer {
            Some(w) => w.finish()?,
            None => 0,
        };
        Ok((hasher.finish(), written))
    });
    let mut failure = None;
    loop {
        let chunk = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                failure = Some(LegacyError::Invalid(format!(
                    "no data for {} s",
                    BODY_IDLE_TIMEOUT.as_secs()
                )));
                break;
            }
        };
        match chunk {
            Ok(c) if c.is_empty() => {}
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break; // the worker failed; its error is reported below
                }
            }
            Err(e) => {
                failure = Some(body_error(e));
                break;
            }
        }
    }
    drop(tx);
    let done = worker
        .await
        .map_err(|e| LegacyError::Internal(format!("layer hashing: {e}")))?;
    if let Some(f) = failure {
        return Err(f);
    }
    done.map_err(LegacyError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn hash_in_chunks(data: &[u8], json: Option<&[u8]>, chunk: usize) -> LayerHashes {
        let mut h = LayerHasher::new(json);
        for c in data.chunks(chunk.max(1)) {
            h.update(c);
        }
        h.finish()
    }

    #[test]
    fn gzip_layers_get_the_digest_of_their_tar() {
        let tar: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let gz = gzip(&tar);
        for chunk in [1, 2, 5, 6, 7, 4096, gz.len()] {
            let h = hash_in_chunks(&gz, Some(b"{\"id\":\"x\"}"), chunk);
            assert_eq!(
                h.digest,
                Digest::of(Algorithm::Sha256, &gz),
                "chunk {chunk}"
            );
            let (diff, mt) = h.diff.expect("diff id");
            assert_eq!(diff, Digest::of(Algorithm::Sha256, &tar), "chunk {chunk}");
            assert_eq!(mt, GZIP_LAYER);
            let mut payload = b"{\"id\":\"x\"}\n".to_vec();
            payload.extend_from_slice(&gz);
            assert_eq!(
                h.checksum.unwrap(),
                Digest::of(Algorithm::Sha256, &payload).to_string()
            );
            assert_eq!(h.size, gz.len() as u64);
        }
    }

    #[test]
    fn plain_short_and_other_layers() {
        let tar = vec![0u8; 1024];
        let h = hash_in_chunks(&tar, None, 3);
        assert_eq!(h.diff.unwrap().0, Digest::of(Algorithm::Sha256, &tar));
        assert!(h.checksum.is_none());
        let h = hash_in_chunks(b"ab", None, 1);
        assert_eq!(h.compression, Compression::None);
        let h = hash_in_chunks(b"BZh91AY&SY", None, 4);
        assert_eq!(h.compression, Compression::Bzip2);
        assert!(h.diff.is_none());
        let mut broken = gzip(b"hello world, hello world");
        broken.truncate(12);
        let h = hash_in_chunks(&broken, None, 5);
        assert_eq!(h.compression, Compression::Gzip);
        assert!(h.diff.is_none(), "a truncated gzip stream has no diff id");
    }
}
