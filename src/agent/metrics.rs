//! The agent's counters: its own (bytes served to local clients, cache
//! hits) next to the swarm node's (bytes from peers and from the origin,
//! pieces rejected, peers banned, bytes served to peers), as Prometheus
//! text on `GET /metrics` and in a periodic log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::cache::Cache;
use crate::p2p::{Stats, StatsSnapshot};

#[derive(Default)]
pub struct AgentStats {
    /// Blob bytes sent to local clients (cache hits and streamed downloads).
    pub bytes_to_clients: AtomicU64,
    pub blob_requests: AtomicU64,
    pub cache_hits: AtomicU64,
    /// Blob requests the hub refused (401, 403, 404...).
    pub refused: AtomicU64,
}

impl AgentStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

pub const PREFIX: &str = "dockyard_agent";

/// The Prometheus text of the agent.
pub fn render(agent: &AgentStats, node: &StatsSnapshot, cache: &Cache) -> String {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (bytes, blobs) = cache.usage();
    let extra = [
        (
            "bytes_served_to_clients_total",
            "Blob bytes sent to local clients.",
            g(&agent.bytes_to_clients),
        ),
        (
            "blob_requests_total",
            "Blob GET requests from local clients.",
            g(&agent.blob_requests),
        ),
        (
            "cache_hits_total",
            "Blob GET requests answered from the cache.",
            g(&agent.cache_hits),
        ),
        (
            "blob_requests_refused_total",
            "Blob GET requests the hub did not authorize.",
            g(&agent.refused),
        ),
        ("cache_bytes", "Bytes of cached blobs.", bytes),
        ("cache_blobs", "Cached blobs.", blobs),
        (
            "cache_capacity_bytes",
            "Bound of the cache.",
            cache.capacity(),
        ),
    ];
    render_text(PREFIX, node, &extra)
}

/// Prometheus text of a node's counters and `extra` ones.
fn render_text(prefix: &str, s: &StatsSnapshot, extra: &[(&str, &str, u64)]) -> String {
    use std::fmt::Write as _;
    let node = [
        (
            "bytes_from_peers_total",
            "Blob bytes received from peers (verified).",
            s.bytes_from_peers,
        ),
        (
            "bytes_from_origin_total",
            "Blob bytes received from the hub (verified).",
            s.bytes_from_origin,
        ),
        (
            "pieces_from_peers_total",
            "Pieces received from peers.",
            s.pieces_from_peers,
        ),
        (
            "pieces_from_origin_total",
            "Pieces received from the hub.",
            s.pieces_from_origin,
        ),
        (
            "pieces_rejected_total",
            "Pieces whose bytes did not match the table.",
            s.pieces_rejected,
        ),
        (
            "peers_banned_total",
            "Peers banned for serving bad bytes.",
            s.peers_banned,
        ),
        (
            "bytes_served_to_peers_total",
            "Piece bytes served to peers.",
            s.bytes_served,
        ),
        (
            "pieces_served_to_peers_total",
            "Pieces served to peers.",
            s.pieces_served,
        ),
        (
            "requests_refused_total",
            "Peer requests refused for a missing or invalid ticket.",
            s.requests_refused,
        ),
        (
            "busy_refusals_total",
            "Peer requests answered busy.",
            s.busy_refusals,
        ),
        (
            "downloads_completed_total",
            "Swarm downloads completed.",
            s.downloads_completed,
        ),
        (
            "downloads_failed_total",
            "Swarm downloads failed.",
            s.downloads_failed,
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in node.iter().chain(extra) {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {prefix}_{name} {help}");
        let _ = writeln!(out, "# TYPE {prefix}_{name} {kind}");
        let _ = writeln!(out, "{prefix}_{name} {value}");
    }
    out
}

/// Logs the counters every `every` while they change.
pub fn spawn_logger(agent: Arc<AgentStats>, node: Arc<Stats>, every: Duration) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            tokio::time::sleep(every).await;
            let s = node.snapshot();
            let to_clients = agent.bytes_to_clients.load(Ordering::Relaxed);
            if last == Some((s, to_clients)) {
                continue;
            }
            last = Some((s, to_clients));
            tracing::info!(
                bytes_to_clients = to_clients,
                bytes_from_peers = s.bytes_from_peers,
                bytes_from_origin = s.bytes_from_origin,
                bytes_to_peers = s.bytes_served,
                pieces_rejected = s.pieces_rejected,
                peers_banned = s.peers_banned,
                tickets_refused = s.requests_refused,
                "agent counters"
            );
        }
    });
}
