//! Agents in process against a fake hub that speaks the hub's contract
//! (`/_p2p/info`, `/pieces` with tickets, ranged blob GETs, bearer
//! challenges) and runs a real swarm node as the bootstrap peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::*;
use crate::p2p::{NoPieces, PieceTable, TicketIssuer};
use crate::registry::digest::Algorithm;

const REPO: &str = "team/app";
const GOOD: &str = "Bearer good";

struct FakeHub {
    blob: Bytes,
    table: PieceTable,
    issuer: TicketIssuer,
    cert: String,
    peer: serde_json::Value,
    served: AtomicU64,
}

fn challenge() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"http://hub/uam/auth\",service=\"dockyard\"",
        )],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
        .into_response()
}

fn authorized(h: &HeaderMap) -> bool {
    h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(GOOD)
}

async fn fake_hub(State(hub): State<Arc<FakeHub>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let h = req.headers();
    let d = hub.table.digest.to_string();
    if path == "/_p2p/info" {
        return axum::Json(serde_json::json!({
            "peer": hub.peer, "issuer": "hub", "ticket_key": hub.cert,
            "piece_size": hub.table.piece_size,
        }))
        .into_response();
    }
    if !authorized(h) {
        return challenge();
    }
    if path == format!("/v2/{REPO}/blobs/{d}/pieces") {
        let peer: libp2p::PeerId = h["dockyard-peer-id"].to_str().unwrap().parse().unwrap();
        return axum::Json(serde_json::json!({
            "digest": d, "size": hub.table.size, "table": hub.table,
            "ticket": hub.issuer.issue(&peer, &hub.table.digest).as_str(),
            "peer": hub.peer,
        }))
        .into_response();
    }
    if path == format!("/v2/{REPO}/blobs/{d}") {
        let size = hub.blob.len() as u64;
        let range = h
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .map(|v| blobs::parse_range(Some(v), size).unwrap().unwrap());
        let (status, r) = match range {
            Some(r) => (StatusCode::PARTIAL_CONTENT, r),
            None => (StatusCode::OK, 0..size),
        };
        if req.method() == axum::http::Method::GET {
            hub.served.fetch_add(r.end - r.start, Ordering::Relaxed);
        }
        let body = hub.blob.slice(r.start as usize..r.end as usize);
        return (status, [("docker-content-digest", d)], body).into_response();
    }
    if path == "/v2/" {
        return "{}".into_response();
    }
    StatusCode::NOT_FOUND.into_response()
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
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    crate::auth::token::ensure_dev_keys(&key, &cert).unwrap();
    let issuer = TicketIssuer::load(&key, "hub", Duration::from_secs(300)).unwrap();
    let verifier = TicketVerifier::load(&cert, "hub").unwrap();

    // The hub's node: the swarm's bootstrap peer (holds no pieces).
    let mut nc = NodeConfig::new(dir.path().join("hub"));
    nc.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let hub_node = Node::start(nc, Arc::new(verifier), Arc::new(NoPieces))
        .await
        .unwrap();
    let h = hub_node.handle();
    let addrs: Vec<String> = h
        .listen_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .collect();

    let blob = random_blob((5 << 20) + 123);
    let table = PieceTable::of_bytes(Algorithm::Sha256, 256 << 10, &blob);
    let digest = table.digest.clone();
    let hub = Arc::new(FakeHub {
        blob: blob.clone(),
        table,
        issuer,
        cert: std::fs::read_to_string(&cert).unwrap(),
        peer: serde_json::json!({"id": h.local_peer_id().to_base58(), "addrs": addrs}),
        served: AtomicU64::new(0),
    });
    let hub_url = serve_on(
        axum::Router::new()
            .fallback(fake_hub)
            .with_state(hub.clone()),
    )
    .await;

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
    let (s, _, _) = get(&format!("{u1}/v2/"), Some(GOOD), None).await;
    assert_eq!(s, 200);

    // The first agent takes the blob from the hub, streamed.
    let (s, hd, body) = get(&format!("{u1}{blob_path}"), Some(GOOD), None).await;
    assert_eq!(s, 200);
    assert_eq!(hd["docker-content-digest"], digest.as_str());
    assert!(body == blob);
    assert_eq!(hub.served.load(Ordering::Relaxed), blob.len() as u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a1.fetcher.cache.usage().1 == 0 {
        assert!(tokio::time::Instant::now() < deadline, "cached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The second takes it from the first (a range first: served once
    // its pieces are in, the rest of the download continues).
    let (s, hd, body) = get(
        &format!("{u2}{blob_path}"),
        Some(GOOD),
        Some("bytes=1000-299999"),
    )
    .await;
    assert_eq!(s, 206);
    assert_eq!(
        hd["content-range"],
        format!("bytes 1000-299999/{}", blob.len()).as_str()
    );
    assert!(body == blob.slice(1000..300000));
    let (s, _, body) = get(&format!("{u2}{blob_path}"), Some(GOOD), None).await;
    assert_eq!(s, 200);
    assert!(body == blob);
    let s2 = a2.fetcher.node.stats().snapshot();
    assert_eq!(s2.bytes_from_origin, 0, "nothing more from the hub");
    assert_eq!(s2.bytes_from_peers, blob.len() as u64);
    assert_eq!(hub.served.load(Ordering::Relaxed), blob.len() as u64);

    // Cached: a range from the cache, and still no blob without credentials.
    let (s, _, body) = get(&format!("{u1}{blob_path}"), Some(GOOD), Some("bytes=-10")).await;
    assert_eq!(s, 206);
    assert!(body == blob.slice(blob.len() - 10..));
    assert_eq!(a1.stats.cache_hits.load(Ordering::Relaxed), 1);
    let (s, _, _) = get(&format!("{u1}{blob_path}"), Some("Bearer bad"), None).await;
    assert_eq!(s, 401);
    let (s, _, _) = get(
        &format!("{u1}{blob_path}"),
        Some(GOOD),
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
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    crate::auth::token::ensure_dev_keys(&key, &cert).unwrap();
    let issuer = TicketIssuer::load(&key, "hub", Duration::from_secs(300)).unwrap();
    let blob = random_blob(300 << 10);
    let table = PieceTable::of_bytes(Algorithm::Sha256, 64 << 10, &blob);
    let digest = table.digest.clone();
    let hub = Arc::new(FakeHub {
        blob: blob.clone(),
        table,
        issuer,
        cert: std::fs::read_to_string(&cert).unwrap(),
        peer: serde_json::json!({"id": libp2p::PeerId::random().to_base58(), "addrs": []}),
        served: AtomicU64::new(0),
    });
    let hub_url = serve_on(
        axum::Router::new()
            .fallback(fake_hub)
            .with_state(hub.clone()),
    )
    .await;
    // A cache smaller than the blob: streamed, not kept, not announced.
    let (_n, a, u) = agent(&hub_url, &dir.path().join("a"), 100 << 10).await;
    let (s, _, body) = get(&format!("{u}/v2/{REPO}/blobs/{digest}"), Some(GOOD), None).await;
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
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    crate::auth::token::ensure_dev_keys(&key, &cert).unwrap();
    let issuer = TicketIssuer::load(&key, "hub", Duration::from_secs(300)).unwrap();
    let verifier = TicketVerifier::load(&cert, "hub").unwrap();
    let mut nc = NodeConfig::new(dir.path().join("hub"));
    nc.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let hub_node = Node::start(nc, Arc::new(verifier), Arc::new(NoPieces))
        .await
        .unwrap();
    let h = hub_node.handle();
    let addrs: Vec<String> = h
        .listen_addrs()
        .await
        .iter()
        .map(|a| a.to_string())
        .collect();
    let blob = random_blob(16 << 20);
    let table = PieceTable::of_bytes(Algorithm::Sha256, 256 << 10, &blob);
    let digest = table.digest.clone();
    let hub = Arc::new(FakeHub {
        blob: blob.clone(),
        table,
        issuer,
        cert: std::fs::read_to_string(&cert).unwrap(),
        peer: serde_json::json!({"id": h.local_peer_id().to_base58(), "addrs": addrs}),
        served: AtomicU64::new(0),
    });
    let hub_url = serve_on(
        axum::Router::new()
            .fallback(fake_hub)
            .with_state(hub.clone()),
    )
    .await;
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
            tokio::spawn(async move { get(&url, Some(GOOD), None).await })
        })
        .collect();
    for p in pulls {
        let (s, _, body) = p.await.unwrap();
        assert_eq!(s, 200);
        assert!(body == blob);
    }
    let served = hub.served.load(Ordering::Relaxed) as f64 / blob.len() as f64;
    eprintln!("a wave of 4: the hub served {served:.2} copies");
    assert!(served <= 1.25, "the hub served {served:.2} copies");
}
