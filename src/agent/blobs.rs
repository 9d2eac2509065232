//! Blob GETs from local clients. Every request is authorized by the hub
//! with the client's credentials, cached or not (a blob in the cache is
//! no reason to hand it to a client the hub would refuse). Cached blobs
//! are sent from their file (memory-mapped windows, which the server
//! sends with `sendfile`); others are fetched through the swarm and
//! streamed as their pieces are verified, in order (from memory while
//! the download still holds them).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::Agent;
use super::fetch::Fetch;
use super::hub::Answer;
use super::metrics::AgentStats;
use super::proxy;
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

/// Largest window mapped at once when sending a cached blob.
const WINDOW: u64 = 8 << 20;

/// A single byte range of a `Range: bytes=...` header within `size`:
/// `Ok(None)` for no (or an ignorable) header, `Err(())` if unsatisfiable.
pub fn parse_range(value: Option<&str>, size: u64) -> Result<Option<Range<u64>>, ()> {
    let Some(v) = value else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multiple ranges: answer the whole blob.
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        size.saturating_sub(n)..size
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size
        } else {
            let last: u64 = b.parse().map_err(|_| ())?;
            if last < start {
                return Err(());
            }
            (last + 1).min(size)
        };
        start..end
    };
    if range.start >= size {
        return Err(());
    }
    Ok(Some(range))
}

fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

pub async fn get(
    agent: &Arc<Agent>,
    name: RepoName,
    digest: Digest,
    headers: &HeaderMap,
) -> Response {
    AgentStats::add(&agent.stats.blob_requests, 1);
    let auth = authorization(headers);
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());

    // Cached, or being fetched here: the hub only says yes or no.
    if agent.fetcher.cache.contains(&digest) || agent.fetcher.running(&digest).is_some() {
        match agent
            .fetcher
            .hub
            .may_pull(&name, &digest, auth.as_deref())
            .await
        {
            Ok(Answer::Yes(())) => {}
            Ok(Answer::No(r)) => {
                AgentStats::add(&agent.stats.refused, 1);
                return proxy::refusal(&r);
            }
            Err(e) => return proxy::hub_unreachable(&e),
        }
        if let Some((file, table)) = agent.fetcher.cache.open_blob(&digest) {
            AgentStats::add(&agent.stats.cache_hits, 1);
            let Ok(range) = parse_range(range_header, table.size) else {
                return unsatisfiable(table.size);
            };
            let whole = 0..table.size;
            let body = cached_stream(file, range.clone().unwrap_or(whole), agent.stats.clone());
            return respond(&digest, table.size, range, body);
        }
        if let Some(fetch) = agent.fetcher.running(&digest) {
            return stream_fetch(agent, &digest, fetch, range_header);
        }
        // It just left the cache or failed: ask for the pieces below.
    }

    let pieces = match agent
        .fetcher
        .hub
        .pieces(
            &name,
            &digest,
            auth.as_deref(),
            &agent.fetcher.node.local_peer_id(),
        )
        .await
    {
        Ok(Answer::Yes(p)) => p,
        Ok(Answer::No(r)) => {
            AgentStats::add(&agent.stats.refused, 1);
            return proxy::pass_back(r, false);
        }
        Err(e) => return proxy::hub_unreachable(&e),
    };
    if let Some((file, table)) = agent.fetcher.cache.open_blob(&digest) {
        // Landed in the cache meanwhile.
        let Ok(range) = parse_range(range_header, table.size) else {
            return unsatisfiable(table.size);
        };
        let body = cached_stream(
            file,
            range.clone().unwrap_or(0..table.size),
            agent.stats.clone(),
        );
        return respond(&digest, table.size, range, body);
    }
    match agent.fetcher.start(&name, pieces, auth.as_deref()).await {
        Ok(fetch) => stream_fetch(agent, &digest, fetch, range_header),
        Err(e) => {
            tracing::warn!(%digest, error = %e, "cannot start a blob fetch");
            proxy::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN",
                &format!("agent cannot store the blob: {e}"),
            )
        }
    }
}

fn stream_fetch(
    agent: &Arc<Agent>,
    digest: &Digest,
    fetch: Arc<Fetch>,
    range_header: Option<&str>,
) -> Response {
    let size = fetch.table.size;
    let Ok(range) = parse_range(range_header, size) else {
        return unsatisfiable(size);
    };
    let body = fetch_stream(fetch, range.clone().unwrap_or(0..size), agent.stats.clone());
    respond(digest, size, range, body)
}

fn unsatisfiable(size: u64) -> Response {
    let mut r = proxy::error(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "BLOB_UNKNOWN",
        "requested range not satisfiable",
    );
    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
        r.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    r
}

fn respond(
    digest: &Digest,
    size: u64,
    range: Option<Range<u64>>,
    body: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
) -> Response {
    let (status, len) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.end - r.start),
        None => (StatusCode::OK, size),
    };
    let mut resp = (status, Body::from_stream(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(digest.as_str()) {
        h.insert("docker-content-digest", v.clone());
        h.insert(
            header::ETAG,
            HeaderValue::from_str(&format!("\"{digest}\"")).unwrap_or(v),
        );
    }
    if let Some(r) = range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{size}", r.start, r.end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// `range` of a cached blob in mapped windows.
fn cached_stream(
    file: Arc<File>,
    range: Range<u64>,
    stats: Arc<AgentStats>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    crate::zerocopy::file_windows(file, range, WINDOW)
        .inspect_ok(move |b| AgentStats::add(&stats.bytes_to_clients, b.len() as u64))
}

/// `range` of a blob being downloaded: each piece once it is verified.
/// The next window is waited for (and read back from the file, if the
/// download no longer holds it) while this one is being sent, so a client
/// that lags the download is not kept waiting on the disk read by read.
fn fetch_stream(
    fetch: Arc<Fetch>,
    range: Range<u64>,
    stats: Arc<AgentStats>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let piece_size = fetch.table.piece_size as u64;
    // Windows end at piece boundaries: a piece is sent once it is there.
    let end_of = move |pos: u64| {
        ((pos / piece_size + 1) * piece_size)
            .min(pos + WINDOW)
            .min(range.end)
    };
    let starts = std::iter::successors(Some(range.start).filter(|&p| p < range.end), move |&p| {
        Some(end_of(p)).filter(|&n| n < range.end)
    });
    let windows = starts.map(move |p| p..end_of(p));
    futures_util::stream::iter(windows)
        .map(move |w| {
            let (fetch, stats) = (fetch.clone(), stats.clone());
            async move {
                fetch.ready((w.start / piece_size) as u32).await?;
                let bytes = fetch
                    .read_window(w.start, (w.end - w.start) as usize)
                    .await?;
                AgentStats::add(&stats.bytes_to_clients, bytes.len() as u64);
                Ok(bytes)
            }
        })
        .buffered(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::PieceTable;
    use crate::registry::digest::Algorithm;

    /// A client reading a range of a download gets every byte in order, a
    /// piece at a time, whether the pieces come from memory or (stored
    /// before the download's last few, or before the read began) from
    /// the file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_download_streams_its_range_from_memory_and_from_the_file() {
        const PIECE: usize = 64 << 10;
        let dir = tempfile::tempdir().unwrap();
        let blob: Vec<u8> = (0..20 * PIECE + 123).map(|i| (i * 7 % 251) as u8).collect();
        let table = Arc::new(PieceTable::of_bytes(Algorithm::Sha256, PIECE as u32, &blob));
        let (fetch, sink) = Fetch::for_test(table.clone(), &dir.path().join("blob"));
        let put = |i: u32| {
            let r = table.piece_range(i);
            let bytes = Bytes::copy_from_slice(&blob[r.start as usize..r.end as usize]);
            sink.put(r.start, &bytes).unwrap();
        };
        // More pieces than the download keeps in memory, before the read.
        for i in 0..12 {
            put(i);
        }
        let range = 100..(19 * PIECE + 5) as u64;
        let stream = fetch_stream(fetch.clone(), range.clone(), Arc::default());
        let reader = tokio::spawn(stream.collect::<Vec<_>>());
        for i in 12..table.piece_count() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            put(i);
        }
        fetch.finish(crate::agent::fetch::Status::Done);
        let chunks = reader.await.unwrap();
        let mut got = Vec::new();
        let mut pos = range.start;
        for c in chunks {
            let c = c.unwrap();
            pos += c.len() as u64;
            assert!(
                pos == range.end || pos.is_multiple_of(PIECE as u64),
                "chunk ends at {pos}"
            );
            got.extend_from_slice(&c);
        }
        assert_eq!(pos, range.end);
        assert!(got == blob[range.start as usize..range.end as usize]);
        let empty = fetch_stream(fetch, 7..7, Arc::default());
        assert!(empty.collect::<Vec<_>>().await.is_empty());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Ok(Some(0..5)));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some(5..10)));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some(7..10)));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some(8..10)));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
    }
}
