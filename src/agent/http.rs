//! A small HTTP/1.1 client for the agent's requests to the hub (the
//! package builds hyper without its client): one connection per request
//! (`Connection: close`), responses framed by `Content-Length`, chunked
//! encoding or the end of the connection, bodies streamed.

use std::io;
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bound of the status line and headers of a response.
const MAX_HEAD: usize = 64 << 10;
/// Bound of connecting and of reading the response head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of each body read.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Size of the body chunks handed out.
const CHUNK: usize = 256 << 10;

/// `http://host:port` of the hub, split once.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub authority: String,
    /// The `Host` header value.
    pub host: String,
    /// Path prefix of the hub (empty, or `/prefix` without a trailing `/`).
    pub prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("--hub {url}: only http:// hubs are supported"))?;
        let (host, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if host.is_empty() {
            anyhow::bail!("--hub {url}: no host");
        }
        let authority = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        Ok(Endpoint {
            authority,
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.host, self.prefix)
    }
}

/// A response whose body has not been read yet.
pub struct Response {
    pub status: u16,
    /// In arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    body: Body,
}

enum Framing {
    Length(u64),
    Chunked,
    Close,
}

struct Body {
    io: BufReader<TcpStream>,
    framing: Framing,
    /// Bytes of the current chunk (chunked) or of the body (length) left.
    left: u64,
    done: bool,
}

impl Response {
    #[cfg(test)]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body's length when the hub announced it.
    pub fn content_length(&self) -> Option<u64> {
        match self.body.framing {
            Framing::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The whole body, at most `limit` bytes (else an error).
    pub async fn bytes(mut self, limit: usize) -> io::Result<Bytes> {
        let expected = self.content_length().unwrap_or(0).min(limit as u64) as usize;
        let mut out = BytesMut::with_capacity(expected);
        // Read straight into `out`: a piece is copied once, from the socket.
        while self.body.next_into(&mut out).await? > 0 {
            if out.len() > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("response body over {limit} bytes"),
                ));
            }
        }
        Ok(out.freeze())
    }

    /// The whole body into `out`, which it must fill exactly: a body of
    /// that announced length (as the hub sends ranges), read straight
    /// from the socket.
    pub async fn body_into(mut self, out: &mut [u8]) -> io::Result<()> {
        if self.content_length() != Some(out.len() as u64) {
            return Err(bad(format!(
                "expected a body of {} bytes, announced {:?}",
                out.len(),
                self.content_length()
            )));
        }
        let mut filled = 0;
        while filled < out.len() {
            match timed(self.body.io.read(&mut out[filled..])).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => filled += n,
            }
        }
        Ok(())
    }

    /// The body as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::try_unfold(self.body, |mut body| async move {
            Ok(body.next_chunk().await?.map(|c| (c, body)))
        })
    }
}

impl Body {
    async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::new();
        Ok((self.next_into(&mut buf).await? > 0).then(|| buf.freeze()))
    }

    /// Appends the next chunk of the body to `out`: its length, 0 at the
    /// end.
    async fn next_into(&mut self, out: &mut BytesMut) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        match self.framing {
            Framing::Length(_) => {
                if self.left == 0 {
                    self.done = true;
                    return Ok(0);
                }
                let want = self.left.min(CHUNK as u64) as usize;
                let got = self.read_some(out, want).await?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.left -= got as u64;
                Ok(got)
            }
            Framing::Close => {
                let got = self.read_some(out, CHUNK).await?;
                if got == 0 {
                    self.done = true;
                }
                Ok(got)
            }
            Framing::Chunked => {
                if self.left == 0 {
                    let line = self.line().await?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16)
                        .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        while !self.line().await?.is_empty() {}
                        self.done = true;
                        return Ok(0);
                    }
                    self.left = size;
                }
                let want = self.left.min(CHUNK as u64) as usize;
                let got = self.read_some(out, want).await?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.left -= got as u64;
                if self.left == 0 && !self.line().await?.is_empty() {
                    return Err(bad("chunk not followed by CRLF".into()));
                }
                Ok(got)
            }
        }
    }

    /// Appends up to `want` bytes to `out` (no zeroing first): what is
    /// available, at least one byte; 0 means EOF.
    async fn read_some(&mut self, out: &mut BytesMut, want: usize) -> io::Result<usize> {
        out.reserve(want);
        let mut filled = 0;
        while filled < want {
            let n = timed(self.io.read_buf(&mut (&mut *out).limit(want - filled))).await?;
            if n == 0 {
                break;
            }
            filled += n;
            if self.io.buffer().is_empty() && filled >= want.min(16 << 10) {
                break;
            }
        }
        Ok(filled)
    }

    async fn line(&mut self) -> io::Result<String> {
        read_line(&mut self.io).await
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

async fn timed<T>(f: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(READ_TIMEOUT, f)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "hub read timed out"))?
}

async fn read_line(io: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut line = Vec::new();
    let n = timed(
        (&mut *io)
            .take(MAX_HEAD as u64)
            .read_until(b'\n', &mut line),
    )
    .await?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| bad("header line is not UTF-8".into()))
}

/// Sends `method path` with `headers` (and no body) to `endpoint`; returns
/// once the response head arrived.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    tokio::time::timeout(HEAD_TIMEOUT, request_inner(endpoint, method, path, headers))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "hub did not answer in time"))?
}

async fn request_inner(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    let stream = TcpStream::connect(&endpoint.authority).await?;
    let _ = stream.set_nodelay(true);
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: dockyard-agent\r\n",
        endpoint.prefix, endpoint.host
    );
    for (name, value) in headers {
        if value.contains(['\r', '\n']) {
            return Err(bad(format!("header {name} has a line break")));
        }
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut io = BufReader::with_capacity(64 << 10, stream);
    io.get_mut().write_all(head.as_bytes()).await?;

    let status_line = read_line(&mut io).await?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1 response: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    let mut total = status_line.len();
    loop {
        let line = read_line(&mut io).await?;
        if line.is_empty() {
            break;
        }
        total += line.len();
        if total > MAX_HEAD {
            return Err(bad("response head too large".into()));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(h, _)| h == n)
            .map(|(_, v)| v.as_str())
    };
    let no_body = method == "HEAD" || status == 204 || status == 304 || status < 200;
    let framing = if no_body {
        Framing::Length(0)
    } else if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        Framing::Chunked
    } else if let Some(len) = find("content-length") {
        Framing::Length(
            len.parse()
                .map_err(|_| bad(format!("bad content-length {len:?}")))?,
        )
    } else {
        Framing::Close
    };
    let left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    Ok(Response {
        status,
        headers,
        body: Body {
            io,
            framing,
            left,
            done: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;
    use tokio::net::TcpListener;

    async fn serve_once(reply: &'static [u8]) -> Endpoint {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            s.write_all(reply).await.unwrap();
        });
        Endpoint::parse(&format!("http://{addr}")).unwrap()
    }

    #[tokio::test]
    async fn framings() {
        let e = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello").await;
        let r = request(&e, "GET", "/", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.content_length(), Some(5));
        assert_eq!(&r.bytes(100).await.unwrap()[..], b"hello");

        let e = serve_once(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let r = request(&e, "GET", "/", &[("Authorization", "x")])
            .await
            .unwrap();
        assert_eq!(r.status, 401);
        let v: Vec<Bytes> = r.into_stream().try_collect().await.unwrap();
        assert_eq!(v.concat(), b"abcde");

        let e = serve_once(b"HTTP/1.0 200 OK\r\n\r\nuntil close").await;
        let r = request(&e, "GET", "/", &[]).await.unwrap();
        assert_eq!(&r.bytes(100).await.unwrap()[..], b"until close");

        let e = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort").await;
        let r = request(&e, "GET", "/", &[]).await.unwrap();
        assert!(r.bytes(100).await.is_err());
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://hub:5000/").unwrap();
        assert_eq!(e.authority, "hub:5000");
        assert_eq!(e.url("/v2/"), "http://hub:5000/v2/");
        let e = Endpoint::parse("http://hub.example/reg").unwrap();
        assert_eq!(e.authority, "hub.example:80");
        assert_eq!(e.prefix, "/reg");
        assert!(Endpoint::parse("https://hub").is_err());
    }
}
