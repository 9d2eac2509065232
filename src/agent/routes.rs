//! The agent's HTTP surface: a read-only registry under `/v2/` (blob GETs
//! through the swarm and the cache, every other read forwarded to the hub,
//! writes refused), `/metrics`, and `/_p2p/info` (this node's identity).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::{Agent, blobs, metrics, proxy};
use crate::api::v2::route::{self, Route};

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/_p2p/info", get(info))
        .fallback(dispatch)
        .with_state(agent)
}

async fn metrics_text(State(agent): State<Arc<Agent>>) -> Response {
    let node = agent.fetcher.node.stats().snapshot();
    (
        [("content-type", "text/plain; version=0.0.4")],
        metrics::render(&agent.stats, &node, &agent.fetcher.cache),
    )
        .into_response()
}

async fn info(State(agent): State<Arc<Agent>>) -> Response {
    let node = &agent.fetcher.node;
    let addrs: Vec<String> = node
        .listen_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .collect();
    Json(serde_json::json!({
        "peer": {"id": node.local_peer_id().to_base58(), "addrs": addrs},
        "hub": agent.fetcher.hub.endpoint.url(""),
    }))
    .into_response()
}

async fn dispatch(State(agent): State<Arc<Agent>>, req: Request) -> Response {
    // The body is never read (reads only); the parts are Sync.
    let (req, _) = req.into_parts();
    let path = req.uri.path().to_string();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            forward(&agent, &req).await
        } else {
            proxy::error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found")
        };
    };
    let method = req.method.clone();
    if method != Method::GET && method != Method::HEAD {
        return proxy::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            &format!(
                "this is a read-only Dockyard agent: push to the hub at {} instead",
                agent.fetcher.hub.endpoint.url("")
            ),
        );
    }
    if method == Method::GET
        && let Some(Ok(Route::Blob(name, digest))) = route::parse(rest)
    {
        return blobs::get(&agent, name, digest, &req.headers).await;
    }
    forward(&agent, &req).await
}

async fn forward(agent: &Agent, req: &Parts) -> Response {
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    proxy::forward(&agent.fetcher.hub, &req.method, pq, &req.headers).await
}
