//! Ceph RADOS blob store (cargo feature `rados`): blobs and upload sessions
//! as objects in one pool (and optionally one RADOS namespace), so every hub
//! node sharing the pool sees the same blobs and can continue an upload
//! another node started.
//!
//! # Object layout
//!
//! | object | content | xattrs / omap |
//! | --- | --- | --- |
//! | `blob.<alg>.<hex>` | the blob's bytes if it is *inline*, else empty | `dy.blob`: `{"size":N}` (inline) or `{"size":N,"chunk":C,"gen":G}` |
//! | `chunk.<G>.<n>` | bytes `n*C ..` of generation `G` (at most `C`) | |
//! | `upload.<id>` | `{"wgen":W,"state":UploadState}` | `dy.session` `{"chunk":C,"commit":digest?}`, lock `dy.owner`/`dy.until`, `dy.wgen` |
//! | `index.uploads` | | omap: session id → start time |
//! | `index.blobs.<alg>.<xx>` | | omap: hex → size, for blobs whose hex starts with `xx` |
//!
//! The blob's *head* `blob.<alg>.<hex>` is the commit point: a blob exists
//! exactly when its head does. A chunked blob's pieces are the data objects
//! of the upload session that produced it: session `id` writes
//! `chunk.<id>.0`, `chunk.<id>.1`, ... and the head names generation
//! `G = id`, so commit moves no bytes (RADOS has no rename). Blobs stored in
//! one step (`put_small`, up to one chunk and 4 MiB) are inline in the head.
//!
//! # Commit (`commit_upload`)
//!
//! Under the session lock (below): check the data covers `len` (the last
//! chunk's size), cut the last chunk to size and remove chunks beyond it;
//! write the *commit marker* (`commit` in `dy.session`) naming the digest;
//! add the blob to its index shard; create the head with an exclusive create
//! (one atomic operation carrying the header); remove the session's state and
//! index entry. Nothing is visible before the head exists, and the head is
//! created whole or not at all.
//!
//! - Two nodes committing one digest at once: one exclusive create wins; the
//!   other gets `EEXIST`, and since the head names the winner's generation,
//!   drops its own chunks. Both calls succeed, one copy remains.
//! - Chunks of generation `G` belong to a blob exactly when a session
//!   `upload.G` carries a commit marker for digest `D` and head `D` names
//!   `G`; dropping a session (`delete_upload`, expiry, a losing commit)
//!   removes its chunks only otherwise. So a crash after the head was created
//!   but before the state was removed leaves a finished blob and a session
//!   that expires without touching the blob's chunks, and a session whose
//!   head exists refuses further appends.
//! - A crash before the head exists leaves an ordinary session: the client
//!   may retry, or the session expires and its chunks go with it.
//! - Deleting a chunked blob first turns its generation back into a stale
//!   session (state with the commit marker, index entry dated 0), then
//!   removes the head, then the chunks and that session. A crash anywhere
//!   leaves either the whole blob or a stale session the janitor
//!   (`stale_uploads` → `delete_upload`) finishes. A blob committed again
//!   meanwhile under the same digest has another generation and is kept.
//!
//! Writes are durable when RADOS acknowledges them (on every replica), so
//! there is no separate sync step.
//!
//! # Upload sessions across nodes
//!
//! Requests on one session in one process are serialised by the core; across
//! nodes the store serialises them itself with a lock in the state object's
//! xattrs (`dy.owner`: the holding store instance or `-`, `dy.until`: expiry
//! in epoch seconds, taken and renewed with compare-and-set write operations,
//! valid for [`LOCK_SECS`], stolen once expired, so a crashed node blocks a
//! session for at most that long). A writer holds it from `append_upload`
//! until `finish` (renewing it while data flows); `commit_upload` and
//! `delete_upload` hold it to the end. Each writer stamps the session with a
//! fresh write generation (`dy.wgen`); the saved state records the
//! generation its offset and hash describe, and each process remembers the
//! generation it last read or wrote per session. `save_upload_state` and
//! `commit_upload` compare-and-set against it, so a state or a hash computed
//! before another node rewrote the data is refused instead of committing
//! bytes that do not match the digest. (Clocks of nodes should agree to
//! well within [`LOCK_SECS`].)
//!
//! # Listing
//!
//! `list_blobs` walks the index shards in digest order (omap keys are
//! sorted) and keeps the entries whose head exists (an entry is written
//! before the head and removed after it). `stale_uploads` walks
//! `index.uploads` and keeps sessions whose state object was last modified
//! before the cut-off, or whose state is gone. Neither lists the pool.
//!
//! # Connection
//!
//! One connection (`Rados`) and one I/O context per store, opened once per
//! process. The store owns both; when its last user is gone the I/O
//! context is destroyed and then the connection shut down, by their
//! `Drop`s (`disconnect_from_ceph` and `destroy_rados_ioctx` are never
//! called: `Drop` would free the handles again). librados calls
//! block, so every one runs on a blocking thread; librados is thread-safe
//! and the I/O context is shared. Reads stream pieces of at most 4 MiB, at
//! most two ahead of the consumer; writes go out in pieces of at most 4 MiB.
//!
//! The `ceph` crate's safe API has no compound operations, omap or
//! exclusive create, so those calls go through [`ffi`], declared from
//! librados.h of Ceph 16.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use ceph::ceph::{IoCtx, Rados};
use ceph::error::RadosError;
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};

use super::{
    BlobStore, ByteStream, StoreError, StoreResult, StoredBlob, UploadState, UploadWriter,
};
use crate::config::RadosConfig;
use crate::registry::digest::{Algorithm, Digest};

/// Largest piece read or written in one librados call.
const PIECE: u64 = 4 * 1024 * 1024;
/// Pieces read ahead of the consumer.
const READ_AHEAD: usize = 2;
/// Largest blob kept inline in its head object.
const INLINE_MAX: u64 = 4 * 1024 * 1024;
/// How long a session lock is valid without renewal.
pub const LOCK_SECS: i64 = 300;
/// A writer renews its lock when it is older than this.
const LOCK_RENEW: Duration = Duration::from_secs(60);
/// How long a request waits for another node's lock on a session.
const LOCK_WAIT: Duration = Duration::from_secs(10);
/// State objects are small; this bounds their read.
const STATE_MAX: usize = 64 * 1024;
/// Omap entries fetched per round trip.
const OMAP_PAGE: u64 = 1000;
/// Piece buffers kept for reuse, and the smallest piece that uses one.
const POOL_MAX: usize = 8;
const POOLED_MIN: usize = 64 * 1024;
/// Sessions whose write generation this process remembers.
const EXPECT_MAX: usize = 100_000;

const UPLOAD_INDEX: &str = "index.uploads";
const X_BLOB: &str = "dy.blob";
const X_SESSION: &str = "dy.session";
const X_OWNER: &str = "dy.owner";
const X_UNTIL: &str = "dy.until";
const X_WGEN: &str = "dy.wgen";
const X_LOW: &str = "dy.low";
/// `dy.owner` of an unlocked session.
const FREE: &str = "-";

fn head_name(d: &Digest) -> String {
    format!("blob.{}.{}", d.algorithm().as_str(), d.hex())
}

fn chunk_name(generation: &str, n: u64) -> String {
    format!("chunk.{generation}.{n}")
}

fn state_name(id: &str) -> String {
    format!("upload.{id}")
}

fn index_name(alg: Algorithm, shard: &str) -> String {
    format!("index.blobs.{}.{shard}", alg.as_str())
}

fn blob_index(d: &Digest) -> String {
    index_name(d.algorithm(), &d.hex()[..2])
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// What a head says about its blob.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Header {
    size: u64,
    /// Chunk size and generation of a chunked blob; absent: inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk: Option<u64>,
    #[serde(default, rename = "gen", skip_serializing_if = "Option::is_none")]
    generation: Option<String>,
}

/// `dy.session` of a state object.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SessionMeta {
    chunk: u64,
    /// Set when a commit of this session to that digest has begun.
    #[serde(default)]
    commit: Option<String>,
}

/// The content of a state object.
#[derive(Serialize, Deserialize)]
struct StoredState {
    /// Write generation of the data `state` describes.
    wgen: String,
    state: UploadState,
}

/// A session's xattrs.
struct Session {
    meta: SessionMeta,
    owner: Vec<u8>,
    until: Vec<u8>,
    wgen: String,
    /// Lowest offset a writer started at since the state was last saved.
    low: Option<u64>,
}

impl Session {
    fn parse(id: &str, mut attrs: HashMap<String, Vec<u8>>) -> io::Result<Session> {
        let meta = attrs
            .get(X_SESSION)
            .ok_or_else(|| invalid_data(format!("upload {id}: no {X_SESSION}")))?;
        let meta: SessionMeta = serde_json::from_slice(meta)
            .map_err(|e| invalid_data(format!("upload {id}: {X_SESSION}: {e}")))?;
        Ok(Session {
            meta,
            owner: attrs.remove(X_OWNER).unwrap_or_else(|| FREE.into()),
            until: attrs.remove(X_UNTIL).unwrap_or_else(|| b"0".to_vec()),
            wgen: attrs
                .remove(X_WGEN)
                .map(|w| String::from_utf8_lossy(&w).into_owned())
                .unwrap_or_default(),
            low: attrs
                .remove(X_LOW)
                .and_then(|l| std::str::from_utf8(&l).ok()?.parse().ok()),
        })
    }

    fn lock_expired(&self, now: i64) -> bool {
        std::str::from_utf8(&self.until)
            .ok()
            .and_then(|u| u.parse::<i64>().ok())
            .is_none_or(|u| u < now)
    }
}

fn is_errno(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

fn is_not_found(e: &io::Error) -> bool {
    is_errno(e, libc::ENOENT)
}

fn rados_err(e: RadosError) -> io::Error {
    match e {
        RadosError::ApiError(errno) => io::Error::from_raw_os_error(errno as i32),
        RadosError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn rc(code: libc::c_int) -> io::Result<libc::c_int> {
    if code < 0 {
        Err(io::Error::from_raw_os_error(-code))
    } else {
        Ok(code)
    }
}

/// Declarations from librados.h (Ceph 16) for what the `ceph` crate's safe
/// API lacks. The crate links librados.
mod ffi {
    use libc::{c_char, c_int, c_uchar, c_void, size_t, time_t};

    pub type Ioctx = *mut c_void;
    pub type WriteOp = *mut c_void;
    pub type ReadOp = *mut c_void;
    pub type OmapIter = *mut c_void;
    pub type XattrsIter = *mut c_void;

    pub const CREATE_EXCLUSIVE: c_int = 1;
    pub const CREATE_IDEMPOTENT: c_int = 0;
    pub const CMPXATTR_OP_EQ: u8 = 1;

    #[link(name = "rados")]
    unsafe extern "C" {
        pub fn rados_read(
            io: Ioctx,
            oid: *const c_char,
            buf: *mut c_char,
            len: size_t,
            off: u64,
        ) -> c_int;
        pub fn rados_getxattrs(io: Ioctx, oid: *const c_char, iter: *mut XattrsIter) -> c_int;
        pub fn rados_getxattrs_next(
            iter: XattrsIter,
            name: *mut *const c_char,
            val: *mut *const c_char,
            len: *mut size_t,
        ) -> c_int;
        pub fn rados_getxattrs_end(iter: XattrsIter);

        pub fn rados_create_write_op() -> WriteOp;
        pub fn rados_release_write_op(op: WriteOp);
        pub fn rados_write_op_assert_exists(op: WriteOp);
        pub fn rados_write_op_cmpxattr(
            op: WriteOp,
            name: *const c_char,
            comparison_operator: u8,
            value: *const c_char,
            value_len: size_t,
        );
        pub fn rados_write_op_setxattr(
            op: WriteOp,
            name: *const c_char,
            value: *const c_char,
            value_len: size_t,
        );
        pub fn rados_write_op_create(op: WriteOp, exclusive: c_int, category: *const c_char);
        pub fn rados_write_op_write(op: WriteOp, buffer: *const c_char, len: size_t, offset: u64);
        pub fn rados_write_op_write_full(op: WriteOp, buffer: *const c_char, len: size_t);
        pub fn rados_write_op_remove(op: WriteOp);
        pub fn rados_write_op_truncate(op: WriteOp, offset: u64);
        pub fn rados_write_op_omap_set(
            op: WriteOp,
            keys: *const *const c_char,
            vals: *const *const c_char,
            lens: *const size_t,
            num: size_t,
        );
        pub fn rados_write_op_omap_rm_keys(op: WriteOp, keys: *const *const c_char, num: size_t);
        pub fn rados_write_op_operate(
            op: WriteOp,
            io: Ioctx,
            oid: *const c_char,
            mtime: *mut time_t,
            flags: c_int,
        ) -> c_int;

        pub fn rados_create_read_op() -> ReadOp;
        pub fn rados_release_read_op(op: ReadOp);
        pub fn rados_read_op_omap_get_vals2(
            op: ReadOp,
            start_after: *const c_char,
            filter_prefix: *const c_char,
            max_return: u64,
            iter: *mut OmapIter,
            pmore: *mut c_uchar,
            prval: *mut c_int,
        );
        pub fn rados_read_op_operate(
            op: ReadOp,
            io: Ioctx,
            oid: *const c_char,
            flags: c_int,
        ) -> c_int;
        pub fn rados_omap_get_next2(
            iter: OmapIter,
            key: *mut *mut c_char,
            val: *mut *mut c_char,
            key_len: *mut size_t,
            val_len: *mut size_t,
        ) -> c_int;
        pub fn rados_omap_get_end(iter: OmapIter);
    }
}

/// A compound write operation on one object: every step or none.
struct WriteOp {
    op: ffi::WriteOp,
}

impl WriteOp {
    fn new() -> WriteOp {
        // SAFETY: allocates an empty operation; released in Drop.
        WriteOp {
            op: unsafe { ffi::rados_create_write_op() },
        }
    }

    // librados copies names and buffers into the operation when a step is
    // added, so arguments need not outlive the call.

    fn assert_exists(self) -> Self {
        // SAFETY: valid operation.
        unsafe { ffi::rados_write_op_assert_exists(self.op) };
        self
    }

    fn create(self, exclusive: bool) -> Self {
        let mode = if exclusive {
            ffi::CREATE_EXCLUSIVE
        } else {
            ffi::CREATE_IDEMPOTENT
        };
        // SAFETY: valid operation; the category is unused and may be null.
        unsafe { ffi::rados_write_op_create(self.op, mode, std::ptr::null()) };
        self
    }

    /// Fails the whole operation with `ECANCELED` unless xattr `name` equals
    /// `value`.
    fn cmpxattr_eq(self, name: &str, value: &[u8]) -> Self {
        let name = CString::new(name).expect("xattr names have no NUL");
        // SAFETY: valid operation, NUL-terminated name, buffer of value_len.
        unsafe {
            ffi::rados_write_op_cmpxattr(
                self.op,
                name.as_ptr(),
                ffi::CMPXATTR_OP_EQ,
                value.as_ptr().cast(),
                value.len(),
            )
        };
        self
    }

    fn setxattr(self, name: &str, value: &[u8]) -> Self {
        let name = CString::new(name).expect("xattr names have no NUL");
        // SAFETY: as above.
        unsafe {
            ffi::rados_write_op_setxattr(self.op, name.as_ptr(), value.as_ptr().cast(), value.len())
        };
        self
    }

    fn write_full(self, data: &[u8]) -> Self {
        // SAFETY: valid operation, buffer of len bytes.
        unsafe { ffi::rados_write_op_write_full(self.op, data.as_ptr().cast(), data.len()) };
        self
    }

    fn write(self, data: &[u8], offset: u64) -> Self {
        // SAFETY: as above.
        unsafe { ffi::rados_write_op_write(self.op, data.as_ptr().cast(), data.len(), offset) };
        self
    }

    fn truncate(self, offset: u64) -> Self {
        // SAFETY: valid operation.
        unsafe { ffi::rados_write_op_truncate(self.op, offset) };
        self
    }

    fn remove(self) -> Self {
        // SAFETY: valid operation.
        unsafe { ffi::rados_write_op_remove(self.op) };
        self
    }

    fn omap_set(self, key: &str, value: &[u8]) -> Self {
        let key = CString::new(key).expect("omap keys have no NUL");
        let keys = [key.as_ptr()];
        let vals = [value.as_ptr().cast::<libc::c_char>()];
        let lens = [value.len()];
        // SAFETY: arrays of one valid entry each.
        unsafe {
            ffi::rados_write_op_omap_set(self.op, keys.as_ptr(), vals.as_ptr(), lens.as_ptr(), 1)
        };
        self
    }

    fn omap_rm(self, key: &str) -> Self {
        let key = CString::new(key).expect("omap keys have no NUL");
        let keys = [key.as_ptr()];
        // SAFETY: an array of one NUL-terminated key.
        unsafe { ffi::rados_write_op_omap_rm_keys(self.op, keys.as_ptr(), 1) };
        self
    }

    fn run(self, io: &IoCtx, oid: &str) -> io::Result<()> {
        let oid = cstr(oid)?;
        // SAFETY: valid operation and I/O context; a null mtime means now.
        rc(unsafe {
            ffi::rados_write_op_operate(self.op, *io.inner(), oid.as_ptr(), std::ptr::null_mut(), 0)
        })
        .map(|_| ())
    }
}

impl Drop for WriteOp {
    fn drop(&mut self) {
        // SAFETY: created by rados_create_write_op, released once.
        unsafe { ffi::rados_release_write_op(self.op) };
    }
}

/// A piece buffer handed out as `Bytes`; goes back to the store's pool.
struct Pooled {
    buf: Vec<u8>,
    objs: Arc<Objects>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.objs.give_buf(std::mem::take(&mut self.buf));
    }
}

/// Omap entries of one round trip, and whether more follow.
type OmapPage = (Vec<(String, Vec<u8>)>, bool);

/// The pool as this process sees it: every call blocks.
struct Objects {
    io: IoCtx,
    /// Lock owner name of this store instance (one per node).
    owner: String,
    lock_wait: Duration,
    /// Write generation this process last read or wrote, per session.
    expected: Mutex<HashMap<String, String>>,
    /// Piece buffers kept for reuse.
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Declared after `io`, so the I/O context is destroyed first.
    _connection: Connection,
}

/// The cluster connection, shut down when the store's last user is gone.
struct Connection {
    _rados: Rados,
}

// SAFETY: librados handles may be used from any thread; the `ceph` crate's
// `Rados` is `Sync` but not `Send` only because it wraps a raw pointer, and
// it is used here only to be dropped (shut down) once, after the I/O context.
unsafe impl Send for Connection {}

impl Objects {
    fn stat(&self, oid: &str) -> io::Result<Option<(u64, i64)>> {
        match self.io.rados_object_stat(oid).map_err(rados_err) {
            Ok((size, mtime)) => {
                let secs = mtime
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                Ok(Some((size, secs)))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes an object; `false` if there was none.
    fn remove(&self, oid: &str) -> io::Result<bool> {
        match self.io.rados_object_remove(oid).map_err(rados_err) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Up to `len` bytes from `off` (fewer only at the object's end).
    fn read(&self, oid: &str, off: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(len);
        self.read_into(oid, off, len, &mut buf)?;
        Ok(buf)
    }

    /// Replaces `buf`'s content with up to `len` bytes from `off`.
    fn read_into(&self, oid: &str, off: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
        let name = cstr(oid)?;
        buf.clear();
        buf.reserve_exact(len);
        // SAFETY: the spare capacity holds `len` bytes; librados writes at
        // most that many and returns how many it wrote.
        let n = rc(unsafe {
            ffi::rados_read(
                *self.io.inner(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                len,
                off,
            )
        })? as usize;
        // SAFETY: librados initialised the first n <= len bytes. It returns
        // everything asked for up to the object's end in one read.
        unsafe { buf.set_len(n.min(len)) };
        Ok(())
    }

    /// A piece buffer: a kept one if there is, so streaming does not churn
    /// the allocator (glibc keeps freed blocks of this size per thread
    /// arena, which looks like growth).
    fn take_buf(&self, len: usize) -> Vec<u8> {
        if !(POOLED_MIN..=PIECE as usize).contains(&len) {
            return Vec::with_capacity(len);
        }
        let mut free = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        free.pop()
            .unwrap_or_else(|| Vec::with_capacity(PIECE as usize))
    }

    fn give_buf(&self, mut buf: Vec<u8>) {
        if buf.capacity() != PIECE as usize {
            return;
        }
        buf.clear();
        let mut free = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < POOL_MAX {
            free.push(buf);
        }
    }

    fn read_exact(self: &Arc<Self>, oid: &str, off: u64, len: usize) -> io::Result<Bytes> {
        let mut buf = self.take_buf(len);
        let read = self.read_into(oid, off, len, &mut buf);
        let buf = Pooled {
            buf,
            objs: self.clone(),
        };
        match read {
            Err(e) if is_not_found(&e) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{oid} is missing"),
                ));
            }
            r => r?,
        };
        if buf.buf.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{oid} ends at {} bytes, expected {}",
                    off + buf.buf.len() as u64,
                    off + len as u64
                ),
            ));
        }
        Ok(Bytes::from_owner(buf))
    }

    /// Every xattr of an object, or `None` if it does not exist.
    fn xattrs(&self, oid: &str) -> io::Result<Option<HashMap<String, Vec<u8>>>> {
        let name = cstr(oid)?;
        let mut iter: ffi::XattrsIter = std::ptr::null_mut();
        // SAFETY: valid context and name; iter is set on success.
        match rc(unsafe { ffi::rados_getxattrs(*self.io.inner(), name.as_ptr(), &mut iter) }) {
            Err(e) if is_not_found(&e) => return Ok(None),
            r => r?,
        };
        let mut out = HashMap::new();
        loop {
            let mut k: *const libc::c_char = std::ptr::null();
            let mut v: *const libc::c_char = std::ptr::null();
            let mut len: libc::size_t = 0;
            // SAFETY: valid iterator; pointers stay valid until the next call.
            let r = unsafe { ffi::rados_getxattrs_next(iter, &mut k, &mut v, &mut len) };
            if r < 0 || k.is_null() {
                // SAFETY: ends the iterator exactly once.
                unsafe { ffi::rados_getxattrs_end(iter) };
                rc(r)?;
                return Ok(Some(out));
            }
            // SAFETY: k is NUL-terminated; v holds len bytes (or is null if 0).
            let key = unsafe { std::ffi::CStr::from_ptr(k) }
                .to_string_lossy()
                .into_owned();
            let val = if len == 0 || v.is_null() {
                Vec::new()
            } else {
                unsafe { std::slice::from_raw_parts(v.cast::<u8>(), len) }.to_vec()
            };
            out.insert(key, val);
        }
    }

    /// Up to `max` omap entries after `after`, and whether there are more.
    fn omap_page(&self, oid: &str, after: &str, max: u64) -> io::Result<OmapPage> {
        let name = cstr(oid)?;
        let after = cstr(after)?;
        let prefix = cstr("")?;
        let mut iter: ffi::OmapIter = std::ptr::null_mut();
        let mut more: libc::c_uchar = 0;
        let mut prval: libc::c_int = 0;
        // SAFETY: the out-pointers live on this stack frame, which outlives the
        // synchronous operate; the iterator is ended below whatever happens.
        let code = unsafe {
            let op = ffi::rados_create_read_op();
            ffi::rados_read_op_omap_get_vals2(
                op,
                after.as_ptr(),
                prefix.as_ptr(),
                max,
                &mut iter,
                &mut more,
                &mut prval,
            );
            let code = ffi::rados_read_op_operate(op, *self.io.inner(), name.as_ptr(), 0);
            ffi::rados_release_read_op(op);
            code
        };
        let mut out = Vec::new();
        let result = rc(code).and_then(|_| rc(prval));
        if result.is_ok() {
            loop {
                let mut k: *mut libc::c_char = std::ptr::null_mut();
                let mut v: *mut libc::c_char = std::ptr::null_mut();
                let (mut klen, mut vlen): (libc::size_t, libc::size_t) = (0, 0);
                // SAFETY: valid iterator; the entries stay valid until its end.
                let r = unsafe {
                    ffi::rados_omap_get_next2(iter, &mut k, &mut v, &mut klen, &mut vlen)
                };
                if r < 0 || k.is_null() {
                    break;
                }
                // SAFETY: klen and vlen bytes at k and v.
                let key = unsafe { std::slice::from_raw_parts(k.cast::<u8>(), klen) };
                let val = if vlen == 0 || v.is_null() {
                    Vec::new()
                } else {
                    unsafe { std::slice::from_raw_parts(v.cast::<u8>(), vlen) }.to_vec()
                };
                out.push((String::from_utf8_lossy(key).into_owned(), val));
            }
        }
        if !iter.is_null() {
            // SAFETY: ends the iterator exactly once.
            unsafe { ffi::rados_omap_get_end(iter) };
        }
        match result {
            Ok(_) => Ok((out, more != 0)),
            Err(e) if is_not_found(&e) => Ok((Vec::new(), false)),
            Err(e) => Err(e),
        }
    }

    fn omap_set(&self, oid: &str, key: &str, value: &[u8]) -> io::Result<()> {
        WriteOp::new().omap_set(key, value).run(&self.io, oid)
    }

    fn omap_rm(&self, oid: &str, key: &str) -> io::Result<()> {
        match WriteOp::new()
            .assert_exists()
            .omap_rm(key)
            .run(&self.io, oid)
        {
            Err(e) if is_not_found(&e) => Ok(()),
            r => r,
        }
    }

    // ---------------------------------------------------------- blobs

    fn header(&self, d: &Digest) -> io::Result<Option<Header>> {
        let Some(attrs) = self.xattrs(&head_name(d))? else {
            return Ok(None);
        };
        let raw = attrs
            .get(X_BLOB)
            .ok_or_else(|| invalid_data(format!("{}: no {X_BLOB}", head_name(d))))?;
        serde_json::from_slice(raw)
            .map(Some)
            .map_err(|e| invalid_data(format!("{}: {X_BLOB}: {e}", head_name(d))))
    }

    /// Creates a head unless one exists; `false` if one did.
    fn create_head(&self, d: &Digest, header: &Header, inline: &[u8]) -> io::Result<bool> {
        let hdr = serde_json::to_vec(header).map_err(io::Error::other)?;
        self.omap_set(&blob_index(d), d.hex(), header.size.to_string().as_bytes())?;
        let mut op = WriteOp::new().create(true);
        if !inline.is_empty() {
            op = op.write_full(inline);
        }
        match op.setxattr(X_BLOB, &hdr).run(&self.io, &head_name(d)) {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn delete_blob(&self, d: &Digest) -> io::Result<()> {
        let head = head_name(d);
        match self.header(d)? {
            None => {}
            Some(Header {
                size,
                chunk: Some(chunk),
                generation: Some(generation),
            }) => {
                self.trash(d, size, chunk, &generation)?;
                self.remove(&head)?;
                self.remove_chunks(&generation, 0, size.div_ceil(chunk))?;
                self.remove(&state_name(&generation))?;
                self.omap_rm(UPLOAD_INDEX, &generation)?;
            }
            Some(_) => {
                self.remove(&head)?;
            }
        }
        // Unless the digest was committed again meanwhile.
        if self.stat(&head)?.is_none() {
            self.omap_rm(&blob_index(d), d.hex())?;
        }
        Ok(())
    }

    /// Makes a blob's chunks findable by the janitor should a delete stop
    /// half-way: a stale session for its generation, owned by the blob while
    /// its head exists.
    fn trash(&self, d: &Digest, size: u64, chunk: u64, generation: &str) -> io::Result<()> {
        let state = UploadState {
            repo: String::new(),
            offset: size,
            hash_state: Vec::new(),
            started_at: 0,
            updated_at: 0,
        };
        self.new_session(generation, &state, chunk, Some(d), FREE)
    }

    /// Writes a session's index entry (dated `state.started_at`), then its
    /// state object, unlocked, with write generation `wgen`.
    fn new_session(
        &self,
        id: &str,
        state: &UploadState,
        chunk: u64,
        commit: Option<&Digest>,
        wgen: &str,
    ) -> io::Result<()> {
        let stored = StoredState {
            wgen: wgen.to_string(),
            state: state.clone(),
        };
        let meta = SessionMeta {
            chunk,
            commit: commit.map(|d| d.to_string()),
        };
        self.omap_set(UPLOAD_INDEX, id, state.started_at.to_string().as_bytes())?;
        WriteOp::new()
            .create(false)
            .write_full(&serde_json::to_vec(&stored).map_err(io::Error::other)?)
            .setxattr(
                X_SESSION,
                &serde_json::to_vec(&meta).map_err(io::Error::other)?,
            )
            .setxattr(X_OWNER, FREE.as_bytes())
            .setxattr(X_UNTIL, b"0")
            .setxattr(X_WGEN, wgen.as_bytes())
            .setxattr(X_LOW, FREE.as_bytes())
            .run(&self.io, &state_name(id))?;
        self.expect(id, wgen);
        Ok(())
    }

    // ------------------------------------------------------- sessions

    /// Removes chunks `from..` of a generation, the highest first, so an
    /// interrupted removal leaves a contiguous prefix. `hint`: where the
    /// chunks are known to end at least.
    fn remove_chunks(&self, generation: &str, from: u64, hint: u64) -> io::Result<()> {
        let mut top = hint.max(from);
        while self.stat(&chunk_name(generation, top))?.is_some() {
            top += 1;
        }
        for n in (from..top).rev() {
            self.remove(&chunk_name(generation, n))?;
        }
        Ok(())
    }

    fn expect(&self, id: &str, wgen: &str) {
        let mut map = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= EXPECT_MAX && !map.contains_key(id) {
            map.clear();
        }
        map.insert(id.to_string(), wgen.to_string());
    }

    fn expected(&self, id: &str) -> Option<String> {
        let map = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).cloned()
    }

    fn forget(&self, id: &str) {
        let mut map = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }

    fn session(&self, id: &str) -> io::Result<Option<Session>> {
        match self.xattrs(&state_name(id))? {
            Some(attrs) => Session::parse(id, attrs).map(Some),
            None => Ok(None),
        }
    }

    /// Takes the session's lock for this store, waiting for another node's
    /// (stealing it once expired). For a writer (`write`: its new write
    /// generation and start offset) also stamps the session with it.
    /// `None`: no such session.
    fn lock(&self, id: &str, write: Option<(&str, u64)>) -> io::Result<Option<Session>> {
        let deadline = Instant::now() + self.lock_wait;
        let state = state_name(id);
        let mut pause = Duration::from_millis(5);
        loop {
            let Some(s) = self.session(id)? else {
                return Ok(None);
            };
            let now = unix_now();
            if s.owner == FREE.as_bytes() || s.owner == self.owner.as_bytes() || s.lock_expired(now)
            {
                let mut op = WriteOp::new()
                    .cmpxattr_eq(X_OWNER, &s.owner)
                    .cmpxattr_eq(X_UNTIL, &s.until)
                    .setxattr(X_OWNER, self.owner.as_bytes())
                    .setxattr(X_UNTIL, (now + LOCK_SECS).to_string().as_bytes());
                if let Some((wgen, offset)) = write {
                    let low = s.low.map_or(offset, |l| l.min(offset));
                    op = op
                        .setxattr(X_WGEN, wgen.as_bytes())
                        .setxattr(X_LOW, low.to_string().as_bytes());
                }
                match op.run(&self.io, &state) {
                    Ok(()) => return Ok(Some(s)),
                    Err(e) if is_errno(&e, libc::ECANCELED) => continue,
                    Err(e) if is_not_found(&e) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "upload session {id} is in use by {}",
                        String::from_utf8_lossy(&s.owner)
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Extends this store's lock; fails if it lost it.
    fn renew(&self, id: &str) -> io::Result<()> {
        let until = (unix_now() + LOCK_SECS).to_string();
        match WriteOp::new()
            .cmpxattr_eq(X_OWNER, self.owner.as_bytes())
            .setxattr(X_UNTIL, until.as_bytes())
            .run(&self.io, &state_name(id))
        {
            Err(e) if is_errno(&e, libc::ECANCELED) => Err(lost_lock(id)),
            r => r,
        }
    }

    fn unlock(&self, id: &str) {
        let _ = WriteOp::new()
            .cmpxattr_eq(X_OWNER, self.owner.as_bytes())
            .setxattr(X_OWNER, FREE.as_bytes())
            .run(&self.io, &state_name(id));
    }

    /// Whether the session's chunks belong to a committed blob.
    fn owned_by_blob(&self, s: &Session, id: &str) -> io::Result<bool> {
        let Some(commit) = &s.meta.commit else {
            return Ok(false);
        };
        let d: Digest = commit
            .parse()
            .map_err(|_| invalid_data(format!("upload {id}: bad commit marker {commit}")))?;
        Ok(self.header(&d)?.and_then(|h| h.generation).as_deref() == Some(id))
    }

    /// Whether the saved state is the one of write generation `wgen` and no
    /// writer since touched the data below `len` (a request that failed
    /// half-way leaves data beyond the saved offset, cut off at commit).
    fn untouched_below(&self, id: &str, wgen: &str, s: &Session, len: u64) -> bool {
        s.low.is_none_or(|low| low >= len)
            && self
                .read(&state_name(id), 0, STATE_MAX)
                .ok()
                .and_then(|raw| serde_json::from_slice::<StoredState>(&raw).ok())
                .is_some_and(|st| st.wgen == wgen)
    }

    /// The saved offset, for a hint of where the chunks end.
    fn saved_offset(&self, id: &str) -> u64 {
        self.read(&state_name(id), 0, STATE_MAX)
            .ok()
            .and_then(|raw| serde_json::from_slice::<StoredState>(&raw).ok())
            .map_or(0, |s| s.state.offset)
    }

    /// Removes a session: its chunks (unless a blob owns them), its state
    /// and its index entry.
    fn drop_session(&self, id: &str) -> io::Result<()> {
        self.forget(id);
        let Some(s) = self.lock(id, None)? else {
            return self.omap_rm(UPLOAD_INDEX, id);
        };
        let r = (|| {
            if !self.owned_by_blob(&s, id)? {
                let chunk = s.meta.chunk;
                self.remove_chunks(id, 0, self.saved_offset(id).div_ceil(chunk))?;
            }
            self.finish_session(id)
        })();
        if r.is_err() {
            self.unlock(id);
        }
        r
    }

    /// Removes a session's state (held under this store's lock) and index entry.
    fn finish_session(&self, id: &str) -> io::Result<()> {
        self.forget(id);
        match WriteOp::new()
            .cmpxattr_eq(X_OWNER, self.owner.as_bytes())
            .remove()
            .run(&self.io, &state_name(id))
        {
            Err(e) if is_errno(&e, libc::ECANCELED) => return Err(lost_lock(id)),
            Err(e) if is_not_found(&e) => {}
            r => r?,
        }
        self.omap_rm(UPLOAD_INDEX, id)
    }

    fn commit(&self, id: &str, d: &Digest, len: u64) -> StoreResult<()> {
        if self.header(d)?.is_some() {
            // Same digest, same bytes: keep the copy already committed.
            return Ok(self.drop_session(id)?);
        }
        let expected = self.expected(id);
        let Some(s) = self.lock(id, None)? else {
            return Err(StoreError::NotFound);
        };
        let r = self.commit_locked(id, d, len, &s, expected);
        if r.is_err() {
            self.unlock(id);
        }
        r
    }

    fn commit_locked(
        &self,
        id: &str,
        d: &Digest,
        len: u64,
        s: &Session,
        expected: Option<String>,
    ) -> StoreResult<()> {
        if let Some(w) = expected
            && w != s.wgen
            && !self.untouched_below(id, &w, s, len)
        {
            return Err(changed_elsewhere(id).into());
        }
        if self.owned_by_blob(s, id)? {
            return Err(StoreError::NotFound);
        }
        let chunk = s.meta.chunk;
        let count = len.div_ceil(chunk);
        if count > 0 {
            let last = chunk_name(id, count - 1);
            let need = len - (count - 1) * chunk;
            match self.stat(&last)? {
                Some((have, _)) if have >= need => {
                    if have > need {
                        self.io.rados_object_trunc(&last, need).map_err(rados_err)?;
                    }
                }
                have => {
                    let have = (count - 1) * chunk + have.map_or(0, |h| h.0);
                    return Err(io::Error::other(format!(
                        "upload data is {have} bytes or less, expected {len}"
                    ))
                    .into());
                }
            }
        }
        self.remove_chunks(id, count, count)?;
        let meta = SessionMeta {
            chunk,
            commit: Some(d.to_string()),
        };
        match WriteOp::new()
            .cmpxattr_eq(X_OWNER, self.owner.as_bytes())
            .setxattr(
                X_SESSION,
                &serde_json::to_vec(&meta).map_err(io::Error::other)?,
            )
            .run(&self.io, &state_name(id))
        {
            Err(e) if is_errno(&e, libc::ECANCELED) => return Err(lost_lock(id).into()),
            r => r?,
        }
        let header = if len == 0 {
            Header {
                size: 0,
                chunk: None,
                generation: None,
            }
        } else {
            Header {
                size: len,
                chunk: Some(chunk),
                generation: Some(id.to_string()),
            }
        };
        if self.create_head(d, &header, &[])? {
            Ok(self.finish_session(id)?)
        } else {
            // Another node committed the digest first: ours are spare chunks.
            Ok(self.drop_session(id)?)
        }
    }
}

fn lost_lock(id: &str) -> io::Error {
    io::Error::other(format!(
        "upload session {id}: lock taken over by another node"
    ))
}

fn changed_elsewhere(id: &str) -> io::Error {
    io::Error::other(format!(
        "upload session {id} was written by another request meanwhile"
    ))
}

/// A blob in RADOS; see the module documentation.
pub struct RadosStore {
    objs: Arc<Objects>,
    chunk: u64,
}

impl RadosStore {
    /// Connects to the cluster (blocking, possibly for as long as the
    /// configuration's `client mount timeout`: call it from a blocking
    /// thread). The connection lives until the process ends.
    pub fn open(cfg: &RadosConfig) -> io::Result<RadosStore> {
        let conf = cfg
            .conf
            .to_str()
            .ok_or_else(|| io::Error::other("rados.conf: path is not UTF-8"))?;
        let user = cfg.user.strip_prefix("client.").unwrap_or(&cfg.user);
        let rados = ceph::ceph::connect_to_ceph(user, conf).map_err(|e| {
            io::Error::other(format!(
                "rados.conf: connecting as client.{user} with {conf}: {}",
                rados_err(e)
            ))
        })?;
        let io = rados.get_rados_ioctx(&cfg.pool).map_err(|e| {
            io::Error::other(format!(
                "rados.pool: opening pool {}: {}",
                cfg.pool,
                rados_err(e)
            ))
        })?;
        io.rados_set_namespace(&cfg.namespace).map_err(rados_err)?;
        let objs = Objects {
            io,
            owner: format!("{}-{}", hostname(), new_token()),
            lock_wait: LOCK_WAIT,
            expected: Mutex::new(HashMap::new()),
            buffers: Mutex::new(Vec::new()),
            _connection: Connection { _rados: rados },
        };
        // Fail now, not at the first request, if the pool is not usable.
        objs.stat(UPLOAD_INDEX)
            .map_err(|e| io::Error::other(format!("rados.pool: reading pool {}: {e}", cfg.pool)))?;
        Ok(RadosStore {
            objs: Arc::new(objs),
            chunk: cfg.chunksize,
        })
    }

    fn stream(
        &self,
        name: impl Fn(u64) -> String + Send + 'static,
        chunk: u64,
        range: Range<u64>,
    ) -> ByteStream {
        let objs = self.objs.clone();
        let pieces = Pieces {
            pos: range.start,
            end: range.end,
            chunk,
        };
        let reads = stream::iter(pieces).map(move |(n, off, len)| {
            let objs = objs.clone();
            let oid = name(n);
            async move {
                match tokio::task::spawn_blocking(move || objs.read_exact(&oid, off, len)).await {
                    Ok(r) => r,
                    Err(e) => Err(io::Error::other(e)),
                }
            }
        });
        Box::pin(reads.buffered(READ_AHEAD))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

/// `(chunk number, offset in it, length)` of the pieces covering a range.
struct Pieces {
    pos: u64,
    end: u64,
    chunk: u64,
}

impl Iterator for Pieces {
    type Item = (u64, u64, usize);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let n = self.pos / self.chunk;
        let off = self.pos % self.chunk;
        let len = (self.chunk - off).min(PIECE).min(self.end - self.pos);
        self.pos += len;
        Some((n, off, len as usize))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Io(io::Error::other(e))),
    }
}

#[async_trait]
impl BlobStore for RadosStore {
    async fn stat(&self, digest: &Digest) -> StoreResult<Option<u64>> {
        let (objs, d) = (self.objs.clone(), digest.clone());
        blocking(move || Ok(objs.header(&d)?.map(|h| h.size))).await
    }

    async fn read(&self, digest: &Digest, range: Range<u64>) -> StoreResult<ByteStream> {
        let (objs, d) = (self.objs.clone(), digest.clone());
        let header = blocking(move || objs.header(&d)?.ok_or(StoreError::NotFound)).await?;
        if range.start > range.end || range.end > header.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {range:?} of a {} byte blob", header.size),
            )
            .into());
        }
        Ok(match (header.chunk, header.generation) {
            (Some(chunk), Some(generation)) => {
                self.stream(move |n| chunk_name(&generation, n), chunk, range)
            }
            _ => {
                let head = head_name(digest);
                self.stream(move |_| head.clone(), u64::MAX, range)
            }
        })
    }

    async fn delete(&self, digest: &Digest) -> StoreResult<()> {
        let (objs, d) = (self.objs.clone(), digest.clone());
        blocking(move || Ok(objs.delete_blob(&d)?)).await
    }

    async fn list_blobs(
        &self,
        after: Option<&Digest>,
        limit: usize,
    ) -> StoreResult<Vec<StoredBlob>> {
        let objs = self.objs.clone();
        let after = after.cloned();
        blocking(move || {
            let mut out = Vec::new();
            for alg in [Algorithm::Sha256, Algorithm::Sha512] {
                for shard in 0..=255u8 {
                    let shard = format!("{shard:02x}");
                    let mut from = String::new();
                    if let Some(a) = &after {
                        match (alg.as_str(), shard.as_str())
                            .cmp(&(a.algorithm().as_str(), &a.hex()[..2]))
                        {
                            std::cmp::Ordering::Less => continue,
                            std::cmp::Ordering::Equal => from = a.hex().to_string(),
                            std::cmp::Ordering::Greater => {}
                        }
                    }
                    let index = index_name(alg, &shard);
                    loop {
                        let (page, more) = objs.omap_page(&index, &from, OMAP_PAGE)?;
                        for (hex, size) in &page {
                            let Ok(digest) = format!("{}:{hex}", alg.as_str()).parse::<Digest>()
                            else {
                                continue;
                            };
                            // An entry is written before its head and removed after it.
                            let Some((_, modified)) = objs.stat(&head_name(&digest))? else {
                                continue;
                            };
                            let size = std::str::from_utf8(size)
                                .ok()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            out.push(StoredBlob {
                                digest,
                                size,
                                modified,
                            });
                            if out.len() >= limit {
                                return Ok(out);
                            }
                        }
                        match page.last() {
                            Some((last, _)) if more => from = last.clone(),
                            _ => break,
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_upload(&self, id: &str, state: &UploadState) -> StoreResult<()> {
        let (objs, id, chunk) = (self.objs.clone(), id.to_string(), self.chunk);
        let state = state.clone();
        blocking(move || Ok(objs.new_session(&id, &state, chunk, None, &new_token())?)).await
    }

    async fn upload_state(&self, id: &str) -> StoreResult<Option<UploadState>> {
        let (objs, id) = (self.objs.clone(), id.to_string());
        blocking(move || {
            let raw = match objs.read(&state_name(&id), 0, STATE_MAX) {
                Ok(raw) => raw,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let stored: StoredState = serde_json::from_slice(&raw)
                .map_err(|e| invalid_data(format!("upload {id} state: {e}")))?;
            objs.expect(&id, &stored.wgen);
            Ok(Some(stored.state))
        })
        .await
    }

    async fn save_upload_state(&self, id: &str, state: &UploadState) -> StoreResult<()> {
        let (objs, id, state) = (self.objs.clone(), id.to_string(), state.clone());
        blocking(move || {
            let wgen = match objs.expected(&id) {
                Some(w) => w,
                None => objs.session(&id)?.ok_or(StoreError::NotFound)?.wgen,
            };
            let stored = serde_json::to_vec(&StoredState {
                wgen: wgen.clone(),
                state,
            })
            .map_err(io::Error::other)?;
            match WriteOp::new()
                .assert_exists()
                .cmpxattr_eq(X_WGEN, wgen.as_bytes())
                .write_full(&stored)
                .setxattr(X_LOW, FREE.as_bytes())
                .run(&objs.io, &state_name(&id))
            {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Err(StoreError::NotFound),
                Err(e) if is_errno(&e, libc::ECANCELED) => Err(changed_elsewhere(&id).into()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn stale_uploads(&self, before: i64, limit: usize) -> StoreResult<Vec<String>> {
        let objs = self.objs.clone();
        blocking(move || {
            let mut stale = Vec::new();
            let mut from = String::new();
            loop {
                let (page, more) = objs.omap_page(UPLOAD_INDEX, &from, OMAP_PAGE)?;
                for (id, started) in &page {
                    let old = match objs.stat(&state_name(id))? {
                        // Dated 0: the remains of a blob being deleted.
                        Some(_) if started == b"0" => true,
                        Some((_, modified)) => modified < before,
                        // An entry is written before its state and removed
                        // after it: without one, it is garbage once old.
                        None => std::str::from_utf8(started)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                            .is_none_or(|s| s < before),
                    };
                    if old {
                        stale.push(id.clone());
                        if stale.len() >= limit {
                            return Ok(stale);
                        }
                    }
                }
                match page.last() {
                    Some((last, _)) if more => from = last.clone(),
                    _ => return Ok(stale),
                }
            }
        })
        .await
    }

    fn append_upload(&self, id: &str, offset: u64) -> StoreResult<Box<dyn UploadWriter>> {
        let objs = &self.objs;
        let wgen = new_token();
        let Some(s) = objs.lock(id, Some((&wgen, offset)))? else {
            return Err(StoreError::NotFound);
        };
        let chunk = s.meta.chunk;
        let check = (|| -> StoreResult<()> {
            if objs.owned_by_blob(&s, id)? {
                // Committed already: the chunks are a blob's now.
                return Err(StoreError::NotFound);
            }
            if offset > 0 {
                let n = (offset - 1) / chunk;
                let need = offset - n * chunk;
                match objs.stat(&chunk_name(id, n))? {
                    Some((have, _)) if have >= need => {}
                    // Acknowledged data is missing.
                    _ => return Err(StoreError::NotFound),
                }
            }
            Ok(())
        })();
        if let Err(e) = check {
            objs.unlock(id);
            return Err(e);
        }
        objs.expect(id, &wgen);
        Ok(Box::new(RadosWriter {
            objs: objs.clone(),
            id: id.to_string(),
            chunk,
            buf: Vec::new(),
            buf_start: offset,
            len: offset,
            renewed: Instant::now(),
            locked: true,
        }))
    }

    async fn read_upload(&self, id: &str, len: u64) -> StoreResult<ByteStream> {
        let (objs, sid) = (self.objs.clone(), id.to_string());
        let s = blocking(move || objs.session(&sid)?.ok_or(StoreError::NotFound)).await?;
        let id = id.to_string();
        Ok(self.stream(move |n| chunk_name(&id, n), s.meta.chunk, 0..len))
    }

    async fn commit_upload(&self, id: &str, digest: &Digest, len: u64) -> StoreResult<()> {
        let (objs, id, d) = (self.objs.clone(), id.to_string(), digest.clone());
        blocking(move || objs.commit(&id, &d, len)).await
    }

    async fn put_small(&self, digest: &Digest, bytes: Bytes) -> StoreResult<()> {
        let (objs, d, chunk) = (self.objs.clone(), digest.clone(), self.chunk);
        blocking(move || {
            if objs.header(&d)?.is_some() {
                return Ok(());
            }
            let size = bytes.len() as u64;
            if size <= INLINE_MAX.min(chunk) {
                let header = Header {
                    size,
                    chunk: None,
                    generation: None,
                };
                objs.create_head(&d, &header, &bytes)?;
                return Ok(());
            }
            // Too big for one object: the way of an upload.
            let id = new_token();
            let now = unix_now();
            let state = UploadState {
                repo: String::new(),
                offset: 0,
                hash_state: Vec::new(),
                started_at: now,
                updated_at: now,
            };
            objs.new_session(&id, &state, chunk, None, &new_token())?;
            let mut w = RadosWriter {
                objs: objs.clone(),
                id: id.clone(),
                chunk,
                buf: Vec::new(),
                buf_start: 0,
                len: 0,
                renewed: Instant::now(),
                locked: false,
            };
            let written = w.write(&bytes).and_then(|_| w.flush());
            drop(w);
            match written {
                Ok(()) => objs.commit(&id, &d, size),
                Err(e) => {
                    let _ = objs.drop_session(&id);
                    Err(e.into())
                }
            }
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> StoreResult<()> {
        let (objs, id) = (self.objs.clone(), id.to_string());
        blocking(move || Ok(objs.drop_session(&id)?)).await
    }
}

/// Writes a session's data in pieces of at most [`PIECE`] bytes, each within
/// one chunk, holding the session's lock.
struct RadosWriter {
    objs: Arc<Objects>,
    id: String,
    chunk: u64,
    buf: Vec<u8>,
    /// Session offset of `buf[0]`.
    buf_start: u64,
    /// Session length including `buf`.
    len: u64,
    renewed: Instant,
    locked: bool,
}

impl RadosWriter {
    /// Where the piece starting at `buf_start` must end.
    fn piece_end(&self) -> u64 {
        let chunk_end = (self.buf_start / self.chunk + 1) * self.chunk;
        chunk_end.min(self.buf_start + PIECE)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.locked && self.renewed.elapsed() >= LOCK_RENEW {
            self.objs.renew(&self.id)?;
            self.renewed = Instant::now();
        }
        let n = self.buf_start / self.chunk;
        let within = self.buf_start % self.chunk;
        let oid = chunk_name(&self.id, n);
        let op = if within == 0 {
            // Replaces whatever an interrupted request left in this chunk.
            WriteOp::new().write_full(&self.buf)
        } else {
            // Cuts off what lies beyond the offset, in the same step.
            WriteOp::new()
                .assert_exists()
                .truncate(within)
                .write(&self.buf, within)
        };
        op.run(&self.objs.io, &oid)?;
        self.buf_start += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

impl UploadWriter for RadosWriter {
    fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let end = self.piece_end();
            if self.buf.capacity() == 0 {
                self.buf = self.objs.take_buf(PIECE.min(self.chunk) as usize);
            }
            let room = (end - self.len) as usize;
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            self.len += take as u64;
            data = &data[take..];
            if self.len == end {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> io::Result<u64> {
        self.flush()?;
        if self.locked {
            self.locked = false;
            self.objs.unlock(&self.id);
        }
        Ok(self.len)
    }
}

impl Drop for RadosWriter {
    fn drop(&mut self) {
        if self.locked {
            self.objs.unlock(&self.id);
        }
        self.objs.give_buf(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests;
