//! What the agent asks the hub: its swarm identity and ticket key
//! (`/_p2p/info`), a blob's piece table and a ticket for this agent
//! (`/v2/<name>/blobs/<digest>/pieces`, authorized like the blob GET with
//! the client's credentials), blob ranges as the swarm's origin, and any
//! read request proxied as it is.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;

use super::http::{self, Endpoint, Response};
use crate::p2p::buffers::PieceBuf;
use crate::p2p::{Origin, PieceTable};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

/// Bound of the JSON answers read from the hub.
const MAX_JSON: usize = 16 << 20;

#[derive(Clone, Debug, Deserialize)]
pub struct PeerInfo {
    pub id: String,
    #[serde(default)]
    pub addrs: Vec<String>,
}

impl PeerInfo {
    /// The addresses as dialable multiaddrs ending in `/p2p/<id>`.
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        let Ok(id) = self.id.parse::<PeerId>() else {
            return Vec::new();
        };
        self.addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a,
                _ => a.with(Protocol::P2p(id)),
            })
            .collect()
    }
}

/// `GET /_p2p/info`.
#[derive(Clone, Debug, Deserialize)]
pub struct HubInfo {
    pub peer: PeerInfo,
    pub issuer: String,
    pub ticket_key: String,
    pub piece_size: u32,
}

/// `GET /v2/<name>/blobs/<digest>/pieces`.
#[derive(Debug, Deserialize)]
pub struct Pieces {
    pub digest: Digest,
    pub size: u64,
    pub table: PieceTable,
    pub ticket: String,
    pub peer: Option<PeerInfo>,
}

#[derive(Clone)]
pub struct Hub {
    pub endpoint: Endpoint,
}

/// The answer to an authorized question: the hub's yes, or its no to pass
/// back to the client as it is (401 with its challenge, 403, 404, ...).
pub enum Answer<T> {
    Yes(T),
    No(Response),
}

fn auth_headers(authorization: Option<&str>) -> Vec<(&'static str, &str)> {
    authorization
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default()
}

impl Hub {
    pub fn new(url: &str) -> anyhow::Result<Hub> {
        Ok(Hub {
            endpoint: Endpoint::parse(url)?,
        })
    }

    pub async fn info(&self) -> anyhow::Result<HubInfo> {
        let r = http::request(&self.endpoint, "GET", "/_p2p/info", &[]).await?;
        match r.status {
            200 => Ok(serde_json::from_slice(&r.bytes(MAX_JSON).await?)?),
            404 => anyhow::bail!(
                "the hub at {} has the peer swarm off ([p2p] enabled = false)",
                self.endpoint.url("")
            ),
            s => anyhow::bail!("{}: status {s}", self.endpoint.url("/_p2p/info")),
        }
    }

    /// The piece table of `digest` and a ticket for `me`, if the client
    /// (`authorization`) may pull it from `name`.
    pub async fn pieces(
        &self,
        name: &RepoName,
        digest: &Digest,
        authorization: Option<&str>,
        me: &PeerId,
    ) -> anyhow::Result<Answer<Pieces>> {
        let path = format!("/v2/{name}/blobs/{digest}/pieces");
        let peer = me.to_base58();
        let mut headers = auth_headers(authorization);
        headers.push(("Dockyard-Peer-Id", &peer));
        headers.push(("Accept", "application/json"));
        let r = http::request(&self.endpoint, "GET", &path, &headers).await?;
        if r.status != 200 {
            return Ok(Answer::No(r));
        }
        let p: Pieces = serde_json::from_slice(&r.bytes(MAX_JSON).await?)?;
        if p.digest != *digest || p.table.digest != *digest || p.table.size != p.size {
            anyhow::bail!("the hub answered the pieces of another blob for {digest}");
        }
        Ok(Answer::Yes(p))
    }

    /// Whether the client may pull `digest` from `name` (a blob HEAD with
    /// its credentials): asked before a cached blob is served.
    pub async fn may_pull(
        &self,
        name: &RepoName,
        digest: &Digest,
        authorization: Option<&str>,
    ) -> anyhow::Result<Answer<()>> {
        let path = format!("/v2/{name}/blobs/{digest}");
        let r = http::request(&self.endpoint, "HEAD", &path, &auth_headers(authorization)).await?;
        Ok(if r.status == 200 {
            Answer::Yes(())
        } else {
            Answer::No(r)
        })
    }

    /// A request forwarded as it is (manifests, tags, `/v2/`).
    pub async fn forward(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Response> {
        http::request(&self.endpoint, method, path_and_query, headers).await
    }
}

/// The hub as the origin of one swarm download: ranged blob GETs with the
/// credentials of the client whose pull started it.
pub struct HubOrigin {
    pub hub: Hub,
    pub name: RepoName,
    pub digest: Digest,
    pub authorization: Option<String>,
}

impl HubOrigin {
    pub fn new(
        hub: Hub,
        name: RepoName,
        digest: Digest,
        authorization: Option<String>,
    ) -> Arc<HubOrigin> {
        Arc::new(HubOrigin {
            hub,
            name,
            digest,
            authorization,
        })
    }
}

#[async_trait]
impl Origin for HubOrigin {
    async fn piece(&self, _index: u32, range: Range<u64>) -> anyhow::Result<Bytes> {
        let len = range.end - range.start;
        let path = format!("/v2/{}/blobs/{}", self.name, self.digest);
        let value = format!("bytes={}-{}", range.start, range.end - 1);
        let mut headers = auth_headers(self.authorization.as_deref());
        headers.push(("Range", &value));
        let r = http::request(&self.hub.endpoint, "GET", &path, &headers).await?;
        match r.status {
            206 => {}
            200 if range.start == 0 && r.content_length() == Some(len) => {}
            s => anyhow::bail!("hub answered {s} to a range of {}", self.digest),
        }
        if r.content_length() == Some(len) {
            let mut buf = PieceBuf::new(len as usize)?;
            r.body_into(buf.as_mut_slice()).await?;
            return Ok(buf.freeze());
        }
        let bytes = r.bytes(len as usize).await?;
        if bytes.len() as u64 != len {
            anyhow::bail!("hub sent {} bytes for a range of {len}", bytes.len());
        }
        Ok(bytes)
    }
}
