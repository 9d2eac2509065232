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
    crate::p2p::metrics::render(PREFIX, node, &extra)
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
