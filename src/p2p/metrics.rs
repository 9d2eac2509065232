//! Prometheus text of a swarm node's counters (`Stats`), shared by the
//! hub's and the agent's `/metrics`.

use super::StatsSnapshot;

/// Prometheus text of a node's counters and `extra` ones.
pub fn render(prefix: &str, s: &StatsSnapshot, extra: &[(&str, &str, u64)]) -> String {
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
