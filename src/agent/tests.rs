//! Agents in process against a real hub in process (`server::app_state`
//! over SQLite and the local store, accounts on, `[p2p]` on; its swarm
//! node is the bootstrap peer), talking HTTP and libp2p on loopback.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;

use super::*;
use crate::api::state::AppState;
use crate::registry::digest::{Algorithm, Digest};

const REPO: &str = "admin/app";
const ADMIN_PASSWORD: &str = "agent-tests-admin-1";

/// The admin's Basic credentials, which the hub accepts on `/v2`.
fn good() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
    format!("Basic {b64}")
}

struct Hub {
    url: String,
    state: AppState,
}

impl Hub {
    /// Blob bytes the hub served over HTTP.
    fn served(&self) -> u64 {
        self.state
            .counters
            .blob_bytes_served
            .load(Ordering::Relaxed)
    }
}

/// A hub with accounts and the swarm on, pieces of `piece_size`, holding
/// `blob` in `REPO` (pushed over HTTP as the admin).
async fn hub(dir: &std::path::Path, piece_size: u32, blob: &Bytes) -> (Hub, Digest) {
    let d = dir.display();
    let toml = format!(
        "[log]\nlevel = \"warn\"\n[dockyard]\npath = \"{d}/data\"\nstandalone = false\n\
         [auth_server]\nprivateKey = \"{d}/cert/token.key\"\nadmin = \"admin\"\n\
         admin_password = \"{ADMIN_PASSWORD}\"\n\
         [token]\nrootcertbundle = \"{d}/cert/token.crt\"\n\
         [p2p]\nenabled = true\nlisten = \"/ip4/127.0.0.1/tcp/0\"\npiece_size = {piece_size}\n"
    );
    let path = dir.join("runtime.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, toml).unwrap();
    let config = crate::config::Config::load(&path, true).unwrap();
    let state = crate::server::app_state(&config).await.unwrap();
    let url = serve_on(crate::api::router(state.clone())).await;
    let digest = Digest::of(Algorithm::Sha256, blob);
    let r = reqwest::Client::new()
        .post(format!("{url}/v2/{REPO}/blobs/uploads/?digest={digest}"))
        .header("authorization", good())
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "push to the hub");
    (Hub { url, state }, digest)
}

async fn serve_on(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

fn random_blob(len: usize) -> Bytes {
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

async fn agent(hub: &str, dir: &std::path::Path, cache: u64) -> (Node, Arc<Agent>, String) {
    let (node, agent) = start(
        hub,
        dir,
        cache,
        vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        Vec::new(),
    )
    .await
    .unwrap();
    let url = serve_on(routes::router(agent.clone())).await;
    (node, agent, url)
}

async fn get(url: &str, auth: Option<&str>, range: Option<&str>) -> (u16, HeaderMap, Bytes) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(a) = auth {
        r = r.header("authorization", a);
    }
    if let Some(v) = range {
        r = r.header("range", v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_share_blobs_and_keep_them_private() {
    let dir = tempfile::tempdir().unwrap();
    let blob = random_blob((5 << 20) + 123);
    let (hub, digest) = hub(&dir.path().join("hub"), 256 << 10, &blob).await;
    let hub_url = hub.url.clone();

    let (_n1, a1, u1) = agent(&hub_url, &dir.path().join("a1"), 1 << 30).await;
    let (_n2, a2, u2) = agent(&hub_url, &dir.path().join("a2"), 1 << 30).await;
    let blob_path = format!("/v2/{REPO}/blobs/{digest}");

    // Without credentials: the hub's challenge, passed back.
    let (s, hd, _) = get(&format!("{u1}{blob_path}"), None, None).await;
    assert_eq!(s, 401);
    assert!(
        hd["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=")
    );
    let (s, hd, _) = get(&format!("{u1}/v2/"), None, None).await;
    assert_eq!(s, 401);
    assert!(hd.contains_key("www-authenticate"));
    let (s, _, _) = get(&format!("{u1}/v2/"), Some(&good()), None).await;
    assert_eq!(s, 200);

    // The first agent takes the blob from the hub, streamed.
    let (s, hd, body) = get(&format!("{u1}{blob_path}"), Some(&good()), None).await;
    assert_eq!(s, 200);
    assert_eq!(hd["docker-content-digest"], digest.as_str());
    assert!(body == blob);
    assert_eq!(hub.served(), blob.len() as u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a1.fetcher.cache.usage().1 == 0 {
        assert!(tokio::time::Instant::now() < deadline, "cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The second takes it from the first (a range first: served once
    // its pieces are in, the rest of the download continues).
    let (s, hd, body) = get(
        &format!("{u2}{blob_path}"),
        Some(&good()),
        Some("bytes=1000-299999"),
    )
    .await;
    assert_eq!(s, 206);
    assert_eq!(
        hd["content-range"],
        format!("bytes 1000-299999/{}", blob.len()).as_str()
    );
    assert!(body == blob.slice(1000..300000));
    let (s, _, body) = get(&format!("{u2}{blob_path}"), Some(&good()), None).await;
    assert_eq!(s, 200);
    assert!(body == blob);
    let s2 = a2.fetcher.node.stats().snapshot();
    assert_eq!(s2.bytes_from_origin, 0, "nothing more from the hub");
    assert_eq!(s2.bytes_from_peers, blob.len() as u64);
    assert_eq!(hub.served(), blob.len() as u64);

    // Cached: a range from the cache, and still no blob without credentials.
    let (s, _, body) = get(
        &format!("{u1}{blob_path}"),
        Some(&good()),
        Some("bytes=-10"),
    )
    .await;
    assert_eq!(s, 206);
    assert!(body == blob.slice(blob.len() - 10..));
    assert_eq!(a1.stats.cache_hits.load(Ordering::Relaxed), 1);
    let (s, _, _) = get(&format!("{u1}{blob_path}"), Some("Bearer bad"), None).await;
    assert_eq!(s, 401);
    let (s, _, _) = get(
        &format!("{u1}{blob_path}"),
        Some(&good()),
        Some("bytes=99999999-"),
    )
    .await;
    assert_eq!(s, 416);

    // Writes are refused.
    let r = reqwest::Client::new()
        .post(format!("{u1}/v2/{REPO}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.text().await.unwrap().contains("UNSUPPORTED"));

    let (_, _, m) = get(&format!("{u2}/metrics"), None, None).await;
    let m = String::from_utf8(m.to_vec()).unwrap();
    assert!(
        m.contains(&format!(
            "dockyard_agent_bytes_from_peers_total {}",
            blob.len()
        )),
        "{m}"
    );
    assert!(m.contains("dockyard_agent_bytes_served_to_clients_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eviction_withdraws_and_small_cache_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let blob = random_blob(300 << 10);
    let (hub, digest) = hub(&dir.path().join("hub"), 64 << 10, &blob).await;
    let hub_url = hub.url.clone();
    // A cache smaller than the blob: streamed, not kept, not announced.
    let (_n, a, u) = agent(&hub_url, &dir.path().join("a"), 100 << 10).await;
    let (s, _, body) = get(
        &format!("{u}/v2/{REPO}/blobs/{digest}"),
        Some(&good()),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(body == blob);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.fetcher.running(&digest).is_some() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.fetcher.cache.usage(), (0, 0));
    assert!(!a.fetcher.node.is_providing(&digest).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wave_of_cold_pulls_costs_the_hub_about_one_copy() {
    let dir = tempfile::tempdir().unwrap();
    let blob = random_blob(16 << 20);
    let (hub, digest) = hub(&dir.path().join("hub"), 256 << 10, &blob).await;
    let hub_url = hub.url.clone();
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(agent(&hub_url, &dir.path().join(format!("a{i}")), 1 << 30).await);
    }
    // Let them find each other through the hub's node.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pulls: Vec<_> = agents
        .iter()
        .map(|(_, _, u)| {
            let url = format!("{u}/v2/{REPO}/blobs/{digest}");
            tokio::spawn(async move { get(&url, Some(&good()), None).await })
        })
        .collect();
    for p in pulls {
        let (s, _, body) = p.await.unwrap();
        assert_eq!(s, 200);
        assert!(body == blob);
    }
    let served = hub.served() as f64 / blob.len() as f64;
    eprintln!("a wave of 4: the hub served {served:.2} copies");
    assert!(served <= 1.25, "the hub served {served:.2} copies");
}
