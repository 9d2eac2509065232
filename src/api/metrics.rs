//! `GET /metrics`: the hub's counters in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::state::AppState;

/// Counters of the HTTP front-ends.
#[derive(Default)]
pub struct Counters {
    /// Bytes of v2 blob bodies answered to clients (the blob store's
    /// egress to HTTP clients).
    pub blob_bytes_served: AtomicU64,
    pub blob_gets: AtomicU64,
}

impl Counters {
    pub fn blob_served(&self, bytes: u64) {
        self.blob_bytes_served.fetch_add(bytes, Ordering::Relaxed);
        self.blob_gets.fetch_add(1, Ordering::Relaxed);
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let c = &state.counters;
    let mut out = String::new();
    for (name, help, value) in [
        (
            "dockyard_blob_bytes_served_total",
            "Bytes of blob bodies served to HTTP clients.",
            c.blob_bytes_served.load(Ordering::Relaxed),
        ),
        (
            "dockyard_blob_gets_total",
            "Blob GET requests answered with a body.",
            c.blob_gets.load(Ordering::Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    }
    if let Some(swarm) = &state.p2p {
        out.push_str(&crate::p2p::metrics::render(
            "dockyard_p2p",
            &swarm.stats().snapshot(),
            &[],
        ));
    }
    let mut r = out.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Logs the counters every `every` while they change.
pub fn spawn_logger(state: AppState, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            tokio::time::sleep(every).await;
            let served = state.counters.blob_bytes_served.load(Ordering::Relaxed);
            let p2p = state.p2p.as_ref().map(|s| s.stats().snapshot());
            if last == Some((served, p2p)) {
                continue;
            }
            last = Some((served, p2p));
            let s = p2p.unwrap_or_default();
            tracing::info!(
                blob_bytes_to_clients = served,
                bytes_to_peers = s.bytes_served,
                pieces_to_peers = s.pieces_served,
                bytes_from_peers = s.bytes_from_peers,
                pieces_rejected = s.pieces_rejected,
                peers_banned = s.peers_banned,
                tickets_refused = s.requests_refused,
                "hub counters"
            );
        }
    });
}
