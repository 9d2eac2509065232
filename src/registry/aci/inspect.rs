//! Reading an ACI as it streams in: the compression is recognised by its
//! magic bytes (gzip, bzip2 or none; xz is refused), the uncompressed tar
//! is hashed (SHA-512: the image ID) and walked entry by entry, checking
//! the layout `actool validate` checks (a `manifest` file, a `rootfs`
//! directory, nothing else outside `rootfs`, no entry twice) and keeping
//! only the manifest. Also the byte plumbing between async streams and the
//! blocking readers and writers the tar and compression crates want.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest as _, Sha512};
use tokio::sync::mpsc;

use crate::storage::ByteStream;

/// Largest image manifest accepted.
pub const MAX_MANIFEST: u64 = 1024 * 1024;

/// What reading an ACI found.
#[derive(Clone, Debug)]
pub struct Inspected {
    /// `sha512-<hex>` of the uncompressed tar.
    pub image_id: String,
    /// The `manifest` file.
    pub manifest: Bytes,
}

/// A compression an archive may come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Opens `r` decompressed, whatever of gzip, bzip2 or nothing it is in.
pub fn decompressed<'a, R: Read + Send + 'a>(mut r: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    let mut head = Vec::with_capacity(6);
    while head.len() < 6 {
        let mut b = [0u8; 6];
        let n = r.read(&mut b[..6 - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&b[..n]);
    }
    let kind = Compression::sniff(&head);
    let whole = io::Cursor::new(head).chain(r);
    Ok(match kind {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Compression::Xz => {
            return Err(io::Error::other(
                "xz-compressed archives are not supported: use gzip, bzip2 or none",
            ));
        }
        Compression::Zstd => {
            return Err(io::Error::other(
                "zstd-compressed archives are not supported: use gzip, bzip2 or none",
            ));
        }
    })
}

/// Hashes what is read through it, and counts the zero bytes it ended
/// with so far.
pub struct HashReader<R> {
    pub inner: R,
    pub hasher: Sha512,
    pub trailing_zeros: u64,
}

impl<R> HashReader<R> {
    pub fn new(inner: R) -> HashReader<R> {
        HashReader {
            inner,
            hasher: Sha512::new(),
            trailing_zeros: 0,
        }
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        self.hasher.update(data);
        match data.iter().rposition(|&b| b != 0) {
            Some(i) => self.trailing_zeros = (n - i - 1) as u64,
            None => self.trailing_zeros += n as u64,
        }
        Ok(n)
    }
}

/// Hashes what is written through it.
pub struct HashWriter<W> {
    pub inner: W,
    pub hasher: Sha512,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn image_id(hasher: Sha512) -> String {
    format!("sha512-{}", hex::encode(hasher.finalize()))
}

/// Bytes arriving on a channel, read from a blocking thread.
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    chunk: Bytes,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> ChannelReader {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(c) => self.chunk = c,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// An async byte stream read from a blocking thread.
pub struct StreamReader {
    handle: tokio::runtime::Handle,
    stream: ByteStream,
    chunk: Bytes,
}

impl StreamReader {
    /// `handle` must be of the runtime the stream belongs to; reads must
    /// happen outside it (`spawn_blocking`).
    pub fn new(handle: tokio::runtime::Handle, stream: ByteStream) -> StreamReader {
        StreamReader {
            handle,
            stream,
            chunk: Bytes::new(),
        }
    }
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(c) => self.chunk = c?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Writes into a channel of chunks (an async stream's source), from a
/// blocking thread. Chunks are about `CHUNK` bytes.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(buf);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// A tar path as a clean relative path (`./a/b/` is `a/b`); `None` for
/// the archive root and for paths that climb out (`..`).
pub fn clean_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads a whole ACI from `r` (compressed or not) and checks its layout.
pub fn inspect(r: impl Read + Send) -> io::Result<Inspected> {
    let dec = decompressed(r)?;
    let mut ar = tar::Archive::new(HashReader::new(dec));
    let mut manifest = None;
    let mut rootfs = false;
    let mut seen = HashSet::new();
    for entry in ar.entries()? {
        let mut entry = entry.map_err(|e| invalid(format!("the tar archive is broken: {e}")))?;
        let raw = entry.path_bytes();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let Some(path) = clean_path(&raw) else {
            if raw.split('/').any(|c| c == "..") {
                return Err(invalid(format!("entry {raw:?} climbs out of the image")));
            }
            continue;
        };
        match path.as_str() {
            "manifest" => {
                if manifest.is_some() {
                    return Err(invalid("the archive has two manifests"));
                }
                if entry.size() > MAX_MANIFEST {
                    return Err(invalid(format!(
                        "the manifest is larger than {MAX_MANIFEST} bytes"
                    )));
                }
                let mut m = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut m)?;
                manifest = Some(Bytes::from(m));
            }
            "rootfs" => {
                if !entry.header().entry_type().is_dir() {
                    return Err(invalid("rootfs is not a directory"));
                }
                rootfs = true;
            }
            p => {
                if !p.starts_with("rootfs/") {
                    return Err(invalid(format!("unexpected file {p:?} outside rootfs")));
                }
                if !seen.insert(path) {
                    return Err(invalid(format!("entry {raw:?} appears twice")));
                }
            }
        }
    }
    // Hash everything the tar reader left (padding after the end marker).
    let mut rest = ar.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| invalid(format!("the archive is broken after its end: {e}")))?;
    // A tar ends with two zero blocks: without them it was cut short at
    // an entry boundary.
    if rest.trailing_zeros < 1024 {
        return Err(invalid(
            "the tar archive has no end marker: it is truncated",
        ));
    }
    let manifest = manifest.ok_or_else(|| invalid("the archive has no manifest"))?;
    if !rootfs {
        return Err(invalid("the archive has no rootfs directory"));
    }
    Ok(Inspected {
        image_id: image_id(rest.hasher),
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aci(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data, dir) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            if *dir {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reads_plain_gzip_and_bzip2() {
        let tar = aci(&[
            ("manifest", b"{}", false),
            ("rootfs", b"", true),
            ("rootfs/a", b"hello", false),
        ]);
        let want = format!("sha512-{}", hex::encode(Sha512::digest(&tar)));
        let plain = inspect(&tar[..]).unwrap();
        assert_eq!(plain.image_id, want);
        assert_eq!(&plain.manifest[..], b"{}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        assert_eq!(inspect(&gz.finish().unwrap()[..]).unwrap().image_id, want);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        assert_eq!(inspect(&bz.finish().unwrap()[..]).unwrap().image_id, want);
    }

    #[test]
    fn refuses_bad_layouts() {
        let no_rootfs = aci(&[("manifest", b"{}", false)]);
        assert!(inspect(&no_rootfs[..]).is_err());
        let stray = aci(&[
            ("manifest", b"{}", false),
            ("rootfs", b"", true),
            ("etc/x", b"", false),
        ]);
        assert!(inspect(&stray[..]).is_err());
        let twice = aci(&[
            ("manifest", b"{}", false),
            ("rootfs", b"", true),
            ("rootfs/a", b"1", false),
            ("./rootfs/a", b"2", false),
        ]);
        assert!(inspect(&twice[..]).is_err());
        let good = aci(&[("manifest", b"{}", false), ("rootfs", b"", true)]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&good).unwrap();
        let gz = gz.finish().unwrap();
        assert!(inspect(&gz[..gz.len() - 10]).is_err(), "truncated gzip");
        assert!(inspect(&good[..700]).is_err(), "truncated tar");
        assert!(inspect(&good[..1536]).is_err(), "cut at an entry boundary");
    }
}
