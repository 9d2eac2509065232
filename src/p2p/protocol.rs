//! The piece transfer protocol `/dockyard/piece/1`: one request and one
//! response per libp2p stream (request-response over noise and yamux).
//!
//! Request (big-endian integers):
//!
//! ```text
//! kind u8 (1 = piece, 2 = have, 3 = table, 4 = replicate) | digest_len u8 | digest (ASCII)
//!   | index u32 (piece only) | ticket_len u16 | ticket (compact JWT, ASCII)
//! ```
//!
//! Response: a status byte, then
//!
//! ```text
//! 0 piece:    len u32 | len bytes          (len <= the largest piece size)
//! 16 have:    0 none | 1 all | 2 partial, nbits u32, have bitmap, pending bitmap
//! 17 table:   len u32 | the piece table's binary form (len <= 16 MiB)
//! 18 replicated: nothing
//! 19 replicating: received u64          (bytes of the blob stored so far)
//! 1 no-ticket, 2 bad-ticket, 3 not-have, 4 busy, 5 bad-request: nothing
//! ```
//!
//! `have` answers which pieces the peer holds (verified) and which it is
//! fetching right now, so downloaders can pick the rarest pieces and leave
//! pieces another peer is already fetching from the origin to that peer.
//! `table` asks a hub node for a blob's piece table, `replicate` asks a hub
//! node to fetch a blob from the requester (the swarm storage tier of hub
//! nodes): it starts the copy in the background and answers `replicating`
//! with the bytes stored so far, or `replicated` once it holds the blob. The
//! requester asks again until then, so a big blob over a slow link is
//! bounded by its progress, not by one request's timeout.

use std::io;

use bytes::Bytes;
use libp2p::StreamProtocol;
use libp2p::futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::piece::{Bitfield, MAX_PIECE_SIZE, MAX_PIECES};
use super::ticket::Ticket;
use crate::registry::digest::Digest;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dockyard/piece/1");

/// Largest ticket accepted on the wire.
const MAX_TICKET: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Piece {
        digest: Digest,
        index: u32,
        ticket: Ticket,
    },
    Have {
        digest: Digest,
        ticket: Ticket,
    },
    Table {
        digest: Digest,
        ticket: Ticket,
    },
    Replicate {
        digest: Digest,
        ticket: Ticket,
    },
}

impl Request {
    pub fn digest(&self) -> &Digest {
        match self {
            Request::Piece { digest, .. }
            | Request::Have { digest, .. }
            | Request::Table { digest, .. }
            | Request::Replicate { digest, .. } => digest,
        }
    }

    pub fn ticket(&self) -> &Ticket {
        match self {
            Request::Piece { ticket, .. }
            | Request::Have { ticket, .. }
            | Request::Table { ticket, .. }
            | Request::Replicate { ticket, .. } => ticket,
        }
    }
}

/// Which pieces of a blob a peer can serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Have {
    None,
    /// The whole blob (a store that holds it).
    All,
    /// A download in progress: verified pieces, and pieces being fetched.
    Partial {
        have: Bitfield,
        pending: Bitfield,
    },
}

impl Have {
    pub fn has(&self, index: u32) -> bool {
        match self {
            Have::None => false,
            Have::All => true,
            Have::Partial { have, .. } => have.get(index),
        }
    }

    pub fn pending(&self, index: u32) -> bool {
        match self {
            Have::Partial { pending, .. } => pending.get(index),
            _ => false,
        }
    }
}

/// Why a peer refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorCode {
    #[error("no ticket")]
    NoTicket = 1,
    #[error("bad ticket")]
    BadTicket = 2,
    #[error("piece not held")]
    NotHave = 3,
    #[error("busy")]
    Busy = 4,
    #[error("bad request")]
    BadRequest = 5,
}

impl ErrorCode {
    fn from_u8(b: u8) -> Option<ErrorCode> {
        Some(match b {
            1 => ErrorCode::NoTicket,
            2 => ErrorCode::BadTicket,
            3 => ErrorCode::NotHave,
            4 => ErrorCode::Busy,
            5 => ErrorCode::BadRequest,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Piece(Bytes),
    Have(Have),
    /// A piece table's binary form.
    Table(Bytes),
    Replicated,
    /// The copy runs; this many bytes are stored so far.
    Replicating(u64),
    Error(ErrorCode),
}

const STATUS_PIECE: u8 = 0;
const STATUS_HAVE: u8 = 16;
const STATUS_TABLE: u8 = 17;
const STATUS_REPLICATED: u8 = 18;
const STATUS_REPLICATING: u8 = 19;
/// Largest piece table on the wire (a 64 GiB blob in 16 KiB pieces).
const MAX_TABLE: u32 = 16 << 20;

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// The codec; `max_piece` bounds what a response may carry.
#[derive(Clone, Debug)]
pub struct PieceCodec {
    pub max_piece: u32,
}

impl Default for PieceCodec {
    fn default() -> Self {
        PieceCodec {
            max_piece: MAX_PIECE_SIZE,
        }
    }
}

async fn read_u8<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<u8> {
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await?;
    Ok(b[0])
}

async fn read_u16<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<u16> {
    let mut b = [0u8; 2];
    io.read_exact(&mut b).await?;
    Ok(u16::from_be_bytes(b))
}

async fn read_u32<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<u32> {
    let mut b = [0u8; 4];
    io.read_exact(&mut b).await?;
    Ok(u32::from_be_bytes(b))
}

async fn read_vec<T: AsyncRead + Unpin>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; len];
    io.read_exact(&mut v).await?;
    Ok(v)
}

pub fn encode_request(req: &Request) -> Vec<u8> {
    let (kind, digest, index, ticket) = match req {
        Request::Piece {
            digest,
            index,
            ticket,
        } => (1u8, digest, Some(*index), ticket),
        Request::Have { digest, ticket } => (2u8, digest, None, ticket),
        Request::Table { digest, ticket } => (3u8, digest, None, ticket),
        Request::Replicate { digest, ticket } => (4u8, digest, None, ticket),
    };
    let d = digest.as_str().as_bytes();
    let t = ticket.as_str().as_bytes();
    let mut out = Vec::with_capacity(8 + d.len() + t.len());
    out.push(kind);
    out.push(d.len() as u8);
    out.extend_from_slice(d);
    if let Some(i) = index {
        out.extend_from_slice(&i.to_be_bytes());
    }
    out.extend_from_slice(&(t.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(t);
    out
}

pub async fn read_request<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Request> {
    let kind = read_u8(io).await?;
    if !(1..=4).contains(&kind) {
        return Err(bad("unknown request kind"));
    }
    let dlen = read_u8(io).await? as usize;
    let digest = String::from_utf8(read_vec(io, dlen).await?)
        .ok()
        .and_then(|s| s.parse::<Digest>().ok())
        .ok_or_else(|| bad("bad digest"))?;
    let index = if kind == 1 {
        Some(read_u32(io).await?)
    } else {
        None
    };
    let tlen = read_u16(io).await? as usize;
    if tlen > MAX_TICKET {
        return Err(bad("ticket too long"));
    }
    let ticket = Ticket::new(
        String::from_utf8(read_vec(io, tlen).await?).map_err(|_| bad("ticket not UTF-8"))?,
    );
    Ok(match (kind, index) {
        (_, Some(index)) => Request::Piece {
            digest,
            index,
            ticket,
        },
        (3, None) => Request::Table { digest, ticket },
        (4, None) => Request::Replicate { digest, ticket },
        (_, None) => Request::Have { digest, ticket },
    })
}

pub async fn write_response<T: AsyncWrite + Unpin>(io: &mut T, res: &Response) -> io::Result<()> {
    match res {
        Response::Piece(bytes) => {
            let mut head = [0u8; 5];
            head[0] = STATUS_PIECE;
            head[1..].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
            io.write_all(&head).await?;
            io.write_all(bytes).await?;
        }
        Response::Have(h) => {
            let mut out = vec![STATUS_HAVE];
            match h {
                Have::None => out.push(0),
                Have::All => out.push(1),
                Have::Partial { have, pending } => {
                    out.push(2);
                    out.extend_from_slice(&have.len().to_be_bytes());
                    out.extend_from_slice(have.as_bytes());
                    out.extend_from_slice(pending.as_bytes());
                }
            }
            io.write_all(&out).await?;
        }
        Response::Table(bytes) => {
            let mut head = [0u8; 5];
            head[0] = STATUS_TABLE;
            head[1..].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
            io.write_all(&head).await?;
            io.write_all(bytes).await?;
        }
        Response::Replicated => io.write_all(&[STATUS_REPLICATED]).await?,
        Response::Replicating(received) => {
            let mut out = [0u8; 9];
            out[0] = STATUS_REPLICATING;
            out[1..].copy_from_slice(&received.to_be_bytes());
            io.write_all(&out).await?;
        }
        Response::Error(code) => io.write_all(&[*code as u8]).await?,
    }
    Ok(())
}

pub async fn read_response<T: AsyncRead + Unpin>(
    io: &mut T,
    max_piece: u32,
) -> io::Result<Response> {
    let status = read_u8(io).await?;
    match status {
        STATUS_PIECE => {
            let len = read_u32(io).await?;
            if len > max_piece {
                return Err(bad("piece too large"));
            }
            // Into a reused buffer: no zeroing, no fresh pages.
            let mut buf = super::buffers::PieceBuf::new(len as usize)?;
            io.read_exact(buf.as_mut_slice()).await?;
            Ok(Response::Piece(buf.freeze()))
        }
        STATUS_TABLE => {
            let len = read_u32(io).await?;
            if len > MAX_TABLE {
                return Err(bad("table too large"));
            }
            Ok(Response::Table(Bytes::from(
                read_vec(io, len as usize).await?,
            )))
        }
        STATUS_REPLICATED => Ok(Response::Replicated),
        STATUS_REPLICATING => {
            let mut b = [0u8; 8];
            io.read_exact(&mut b).await?;
            Ok(Response::Replicating(u64::from_be_bytes(b)))
        }
        STATUS_HAVE => match read_u8(io).await? {
            0 => Ok(Response::Have(Have::None)),
            1 => Ok(Response::Have(Have::All)),
            2 => {
                let n = read_u32(io).await?;
                if n as u64 > MAX_PIECES {
                    return Err(bad("bitmap too large"));
                }
                let bytes = (n as usize).div_ceil(8);
                let have = Bitfield::from_bytes(n, read_vec(io, bytes).await?);
                let pending = Bitfield::from_bytes(n, read_vec(io, bytes).await?);
                match (have, pending) {
                    (Some(have), Some(pending)) => {
                        Ok(Response::Have(Have::Partial { have, pending }))
                    }
                    _ => Err(bad("bad bitmap")),
                }
            }
            _ => Err(bad("bad have kind")),
        },
        other => ErrorCode::from_u8(other)
            .map(Response::Error)
            .ok_or_else(|| bad("unknown status")),
    }
}

impl libp2p::request_response::Codec for PieceCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_request(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_response(io, self.max_piece).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&encode_request(&req)).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_response(io, &res).await?;
        io.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        libp2p::futures::executor::block_on(f)
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let d = Digest::of(Algorithm::Sha256, b"x");
        for req in [
            Request::Piece {
                digest: d.clone(),
                index: 7,
                ticket: Ticket::new("a.b.c"),
            },
            Request::Have {
                digest: d.clone(),
                ticket: Ticket::none(),
            },
            Request::Table {
                digest: d.clone(),
                ticket: Ticket::new("t"),
            },
            Request::Replicate {
                digest: d.clone(),
                ticket: Ticket::new("r"),
            },
        ] {
            let bytes = encode_request(&req);
            assert_eq!(block_on(read_request(&mut &bytes[..])).unwrap(), req);
            // Truncated requests fail.
            assert!(block_on(read_request(&mut &bytes[..bytes.len() - 1])).is_err());
        }
        let mut have = Bitfield::new(11);
        have.set(3, true);
        let mut pending = Bitfield::new(11);
        pending.set(10, true);
        for res in [
            Response::Piece(Bytes::from_static(b"hello")),
            Response::Have(Have::None),
            Response::Have(Have::All),
            Response::Have(Have::Partial { have, pending }),
            Response::Table(Bytes::from_static(b"DYPT...")),
            Response::Replicated,
            Response::Replicating(0),
            Response::Replicating(5 << 30),
            Response::Error(ErrorCode::NoTicket),
            Response::Error(ErrorCode::BadTicket),
            Response::Error(ErrorCode::NotHave),
            Response::Error(ErrorCode::Busy),
            Response::Error(ErrorCode::BadRequest),
        ] {
            let mut out = Vec::new();
            block_on(write_response(&mut out, &res)).unwrap();
            assert_eq!(
                block_on(read_response(&mut &out[..], 1 << 20)).unwrap(),
                res
            );
        }
        // A piece over the bound is refused before it is read.
        let mut out = Vec::new();
        block_on(write_response(
            &mut out,
            &Response::Piece(Bytes::from(vec![0u8; 100])),
        ))
        .unwrap();
        assert!(block_on(read_response(&mut &out[..], 99)).is_err());
        assert!(block_on(read_response(&mut &[9u8][..], 99)).is_err());
        assert!(block_on(read_request(&mut &[3u8, 0][..])).is_err());
        assert!(block_on(read_request(&mut &[5u8, 0][..])).is_err());
    }
}
