//! The host agent (`dockyard agent`): a read-only registry on each
//! container host for the local dockerd/containerd/podman. Manifests, tags
//! and every other read go to the hub with the client's credentials; blobs
//! come from the peer swarm first and the hub last, verified piece by
//! piece, streamed to the client as pieces are verified, cached on disk
//! (bounded, LRU) and announced to the swarm.
//!
//! - `http`: the small HTTP/1.1 client the agent talks to the hub with.
//! - `hub`: the hub's answers: `/_p2p/info`, piece tables and tickets,
//!   authorization checks, blob ranges as the swarm's `Origin`.
//! - `cache`: verified blobs on disk, LRU-bounded; the node's
//!   `PieceSource`.
//! - `fetch`: one swarm download per digest, with readers streamed its
//!   verified pieces.
//! - `blobs`: blob GETs (authorize, then cache or fetch, ranges).
//! - `proxy`: everything else forwarded to the hub, answers passed back.
//! - `routes`, `serve`: the HTTP surface and listener.
//! - `metrics`: counters on `/metrics` and in the log.
//! - `probe`: `dockyard p2p-probe`, a one-shot swarm requester for tests.
//!
//! Architecture invariant: the agent sends a local client a blob's bytes
//! only after the hub authorized that client's pull of it (cached or not),
//! only bytes that matched the hub's piece table, and the last piece of a
//! download only after the whole blob matched its digest.
//!
//! Architecture invariant: the agent serves pieces to peers only with a
//! ticket the hub signed (the node's `TicketVerifier` holds the hub's
//! ticket key from `/_p2p/info`).

mod blobs;
mod cache;
mod fetch;
mod http;
mod hub;
mod metrics;
pub mod probe;
mod proxy;
mod routes;
mod serve;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use libp2p::Multiaddr;

use crate::cli::AgentArgs;
use crate::p2p::{DownloadConfig, Downloader, Node, NodeConfig, TicketVerifier};
use cache::{Cache, CacheSource};
use fetch::Fetcher;
use hub::Hub;
use metrics::AgentStats;

/// What the handlers reach.
pub struct Agent {
    pub fetcher: Arc<Fetcher>,
    pub stats: Arc<AgentStats>,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("--data: creating {}", args.data.display()))?;
    let _lock = lock(&args.data)?;

    let (node, agent) = start(
        &args.hub,
        &args.data,
        args.cache_size,
        parse_addrs(&args.p2p_listen, "--p2p-listen")?,
        parse_addrs(&args.bootstrap, "--bootstrap")?,
    )
    .await?;
    let handle = node.handle();
    metrics::spawn_logger(
        agent.stats.clone(),
        handle.stats().clone(),
        Duration::from_secs(30),
    );

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let p2p: Vec<String> = handle
        .dial_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .collect();
    tracing::info!(%local, hub = %args.hub, peer = %handle.local_peer_id(), p2p = ?p2p, "dockyard agent is serving");
    // Tests and scripts wait for this exact line.
    println!("listening on http://{local}");

    serve::serve(listener, routes::router(agent)).await;
    drop(node);
    Ok(())
}

fn parse_addrs(list: &[String], flag: &str) -> anyhow::Result<Vec<Multiaddr>> {
    list.iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .with_context(|| format!("{flag} {a}: not a multiaddr"))
        })
        .collect()
}

/// Joins the hub's swarm and opens the cache: the node (dropping it
/// leaves the swarm) and what the handlers use.
async fn start(
    hub_url: &str,
    data: &Path,
    cache_size: u64,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
) -> anyhow::Result<(Node, Arc<Agent>)> {
    let hub = Hub::new(hub_url)?;
    let info = hub
        .info()
        .await
        .with_context(|| format!("asking the hub {hub_url} for its swarm"))?;
    tracing::info!(hub_peer = %info.peer.id, piece_size = info.piece_size, "joining the hub's swarm");
    let verifier = TicketVerifier::from_pem(&info.ticket_key, &info.issuer)
        .map_err(|e| anyhow::anyhow!("the hub's ticket key: {e}"))?;

    let (cache, cached) = Cache::open(&data.join("cache"), cache_size)
        .with_context(|| format!("opening the cache under {}", data.display()))?;
    let cache = Arc::new(cache);

    let mut config = NodeConfig::new(data);
    config.listen = listen;
    config.bootstrap = info.peer.dial_addrs();
    config.bootstrap.extend(bootstrap);
    let node = Node::start(
        config,
        Arc::new(verifier),
        Arc::new(CacheSource(cache.clone())),
    )
    .await?;
    let handle = node.handle();
    for d in cached {
        let h = handle.clone();
        tokio::spawn(async move {
            if let Err(e) = h.provide(&d).await {
                tracing::warn!(digest = %d, error = %e, "announcing a cached blob");
            }
        });
    }
    let downloader = Downloader::new(handle.clone(), DownloadConfig::default());
    let agent = Arc::new(Agent {
        fetcher: Fetcher::new(hub, handle, downloader, cache),
        stats: Arc::new(AgentStats::default()),
    });
    Ok((node, agent))
}

/// One agent per data directory (`flock` on `<data>/.lock`).
fn lock(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join(".lock");
    let file = File::create(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on an open descriptor has no memory-safety preconditions.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("--data: {} is in use by another agent", dir.display());
    }
    Ok(file)
}
