//! The hub's answers to swarm members: `GET /_p2p/info` (who the hub's
//! node is, and the key its tickets are signed with) and
//! `GET /v2/<name>/blobs/<digest>/pieces` (a blob's piece table and a
//! ticket for the requesting peer, authorized like the blob itself).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use libp2p::PeerId;
use serde_json::json;

use super::error::ApiError;
use super::state::AppState;
use super::v2::ApiResult;
use crate::registry::RegistryError;
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;
use crate::storage::StoreError;

/// The requesting peer: the one its ticket will name.
pub const PEER_ID: HeaderName = HeaderName::from_static("dockyard-peer-id");

fn swarm_off() -> RegistryError {
    RegistryError::NotOffered("the peer swarm is off on this hub ([p2p] enabled = false)".into())
}

fn json_response(body: serde_json::Value) -> Response {
    let mut r = body.to_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub async fn info(State(state): State<AppState>) -> Response {
    let Some(swarm) = &state.p2p else {
        return ApiError(swarm_off()).into_response();
    };
    let (id, addrs) = swarm.peer().await;
    json_response(json!({
        "peer": {"id": id.to_base58(), "addrs": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()},
        "issuer": swarm.issuer_name(),
        "ticket_key": swarm.ticket_key(),
        "piece_size": swarm.piece_size(),
    }))
}

/// The caller is already authorized to pull `name`.
pub async fn pieces(
    state: &AppState,
    name: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
) -> ApiResult {
    let swarm = state.p2p.as_ref().ok_or_else(swarm_off)?;
    let requester: PeerId = headers
        .get(&PEER_ID)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            RegistryError::RequestInvalid("a Dockyard-Peer-Id header is required".into())
        })?
        .parse()
        .map_err(|e| RegistryError::RequestInvalid(format!("Dockyard-Peer-Id: {e}")))?;
    // In this repository, or unknown whatever the store holds.
    let size = state.registry.blob_size(name, digest).await?;
    let table = swarm.table(digest).await.map_err(|e| match e {
        StoreError::NotFound => RegistryError::BlobUnknown,
        e => RegistryError::Internal(format!("piece table of {digest}: {e}")),
    })?;
    if table.size != size {
        return Err(RegistryError::Internal(format!(
            "piece table of {digest}: {} bytes, but the blob has {size}",
            table.size
        ))
        .into());
    }
    let ticket = swarm.ticket(&requester, digest);
    let (id, addrs) = swarm.peer().await;
    Ok(json_response(json!({
        "digest": digest.as_str(),
        "size": size,
        "table": &*table,
        "ticket": ticket.as_str(),
        "peer": {"id": id.to_base58(), "addrs": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()},
    })))
}
