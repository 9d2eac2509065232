//! The hub's answers to swarm members, black-box against a real `dockyard
//! web` with `[p2p]` on: the piece table and ticket of
//! `GET /v2/<name>/blobs/<digest>/pieces` (checked against the blob's
//! bytes, the ticket's claims against the requester and digest signed by
//! the key `/_p2p/info` publishes), its refusals in the spec's error
//! format, `/metrics`, and a hub with the swarm off. The swarm itself
//! (agents, docker pulls, bans, tickets refused, private blobs) is
//! `tests/p2p.rs`. Last, the swarm storage tier: hub nodes on their own
//! disks sharing one MariaDB database fetch blobs they lack from each
//! other and copy each push to `replicas` nodes before acknowledging it.

#[path = "farm/cluster.rs"]
mod cluster;
mod common;

use common::Server;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::blocking::Client;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

const PIECE: usize = 64 << 10;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn push_blob(c: &Client, srv: &Server, repo: &str, data: &[u8]) -> String {
    let d = sha256(data);
    let r = c
        .post(srv.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .header("Content-Type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    d
}

fn error_code(r: reqwest::blocking::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    let v: Value = r.json().unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_string()
}

fn metric(c: &Client, srv: &Server, name: &str) -> f64 {
    let text = c.get(srv.url("/metrics")).send().unwrap().text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

fn p2p_hub() -> Server {
    Server::start_config(&format!(
        "[auth_server]\nprivateKey = \"$DIR/cert/token.key\"\n\
         [token]\nrootcertbundle = \"$DIR/cert/token.crt\"\n\
         [p2p]\nenabled = true\nlisten = \"/ip4/127.0.0.1/tcp/0\"\npiece_size = {PIECE}\n"
    ))
}

#[test]
fn pieces_tables_tickets_and_refusals() {
    let mut srv = p2p_hub();
    let c = Client::new();
    // Three and a half pieces of varied bytes.
    let blob: Vec<u8> = (0..PIECE * 7 / 2).map(|i| (i * 31 % 251) as u8).collect();
    let digest = push_blob(&c, &srv, "swarm/app", &blob);
    // Its table is made once it is stored, before anyone asks.
    let table_file = srv
        .data_dir()
        .join("p2p/tables")
        .join(digest.replace(':', "-"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !table_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no table at {}",
            table_file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let info: Value = c.get(srv.url("/_p2p/info")).send().unwrap().json().unwrap();
    assert_eq!(info["piece_size"], PIECE);
    let hub_id = info["peer"]["id"].as_str().unwrap().to_string();
    let addr = info["peer"]["addrs"][0].as_str().unwrap();
    assert!(addr.starts_with("/ip4/127.0.0.1/tcp/"), "{info}");
    let key = info["ticket_key"].as_str().unwrap();
    assert!(key.contains("BEGIN"), "{key}");

    let me = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_base58();
    let path = format!("/v2/swarm/app/blobs/{digest}/pieces");
    let pieces_url = srv.url(&path);
    let r = c
        .get(&pieces_url)
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let p: Value = r.json().unwrap();
    assert_eq!(p["digest"], digest.as_str());
    assert_eq!(p["size"], blob.len());
    assert_eq!(p["peer"]["id"], hub_id.as_str());
    let t = &p["table"];
    assert_eq!(t["digest"], digest.as_str());
    assert_eq!(t["pieceSize"], PIECE);
    assert_eq!(t["pieceHash"], "sha2-chain");
    let chain: Vec<&str> = t["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    // The SHA-256 state after each piece but the last, from the raw
    // compression function.
    let mut state: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let pieces = blob.len().div_ceil(PIECE);
    let expected: Vec<String> = blob
        .chunks(PIECE)
        .take(pieces - 1)
        .map(|piece| {
            sha2::block_api::compress256(&mut state, piece.as_chunks::<64>().0);
            state.iter().map(|w| format!("{w:08x}")).collect()
        })
        .collect();
    assert!(expected.len() >= 2);
    assert_eq!(chain, expected);

    // The ticket: signed by the published key, for me and this digest.
    let ticket = p["ticket"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(ticket).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        ticket,
        &DecodingKey::from_ec_pem(key.as_bytes()).unwrap(),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], me.as_str());
    assert_eq!(claims["dig"], digest.as_str());
    assert_eq!(claims["iss"], info["issuer"]);
    let life = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(life, 300);

    // The same table again (made once, kept), and after a restart.
    let again: Value = c
        .get(&pieces_url)
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again["table"], p["table"]);
    srv.restart();
    let restarted: Value = c
        .get(&pieces_url)
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(restarted["table"], p["table"]);
    assert_eq!(
        restarted["peer"]["id"],
        hub_id.as_str(),
        "the identity persists"
    );
    let tables = std::fs::read_dir(srv.data_dir().join("p2p/tables"))
        .unwrap()
        .count();
    assert_eq!(tables, 1);

    // Refusals, in the spec's error format, and nothing made for them.
    let r = c.get(&pieces_url).send().unwrap();
    assert_eq!(error_code(r, 400), "UNSUPPORTED");
    let r = c
        .get(&pieces_url)
        .header("Dockyard-Peer-Id", "not-a-peer")
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "UNSUPPORTED");
    let r = c
        .get(srv.url(&format!("/v2/other/repo/blobs/{digest}/pieces")))
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 404), "BLOB_UNKNOWN");
    let unknown = sha256(b"never pushed");
    let r = c
        .get(srv.url(&format!("/v2/swarm/app/blobs/{unknown}/pieces")))
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 404), "BLOB_UNKNOWN");
    let r = c
        .get(srv.url("/v2/swarm/app/blobs/sha256:nothex/pieces"))
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 400), "DIGEST_INVALID");
    let r = c
        .post(&pieces_url)
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 405), "UNSUPPORTED");
    let tables = std::fs::read_dir(srv.data_dir().join("p2p/tables"))
        .unwrap()
        .count();
    assert_eq!(tables, 1);

    // /metrics counts blob bytes served to HTTP clients.
    let before = metric(&c, &srv, "dockyard_blob_bytes_served_total");
    let r = c
        .get(srv.url(&format!("/v2/swarm/app/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().len(), blob.len());
    let r = c
        .get(srv.url(&format!("/v2/swarm/app/blobs/{digest}")))
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    let after = metric(&c, &srv, "dockyard_blob_bytes_served_total");
    assert_eq!(after - before, (blob.len() + 10) as f64);
    assert_eq!(metric(&c, &srv, "dockyard_p2p_peers_banned_total"), 0.0);
}

#[test]
fn swarm_off_answers_unsupported() {
    let srv = Server::start();
    let c = Client::new();
    let digest = push_blob(&c, &srv, "plain/app", b"some bytes");
    let r = c.get(srv.url("/_p2p/info")).send().unwrap();
    assert_eq!(error_code(r, 404), "UNSUPPORTED");
    let me = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_base58();
    let r = c
        .get(srv.url(&format!("/v2/plain/app/blobs/{digest}/pieces")))
        .header("Dockyard-Peer-Id", &me)
        .send()
        .unwrap();
    assert_eq!(error_code(r, 404), "UNSUPPORTED");
    // /metrics is always there; the swarm's counters only with the swarm.
    let text = c.get(srv.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        text.contains("dockyard_blob_bytes_served_total 0"),
        "{text}"
    );
    assert!(!text.contains("dockyard_p2p_"), "{text}");
}

/// Where the local store keeps `digest` under a node's data directory.
fn blob_file(srv: &Server, digest: &str) -> std::path::PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    srv.data_dir()
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

/// `node` answers GET of the blob `digest` of `repo` with `data`.
fn assert_serves(c: &Client, node: &Server, repo: &str, digest: &str, data: &[u8]) {
    let r = c
        .get(node.url(&format!("/v2/{repo}/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().unwrap()[..] == data[..]);
}

fn holders(nodes: &[&Server], digest: &str) -> Vec<bool> {
    nodes
        .iter()
        .map(|n| blob_file(n, digest).is_file())
        .collect()
}

/// The node's swarm address, `/ip4/.../tcp/.../p2p/<id>`.
fn swarm_addr(c: &Client, srv: &Server) -> String {
    let info: Value = c.get(srv.url("/_p2p/info")).send().unwrap().json().unwrap();
    info["peer"]["addrs"][0].as_str().unwrap().to_string()
}

/// Three hub nodes with the swarm storage tier on one fresh MariaDB
/// database, sharing the token key (tickets of one are good at the
/// others), each bootstrapped from the ones before it.
fn tier_nodes(replicas: usize) -> (Vec<Server>, tempfile::TempDir) {
    let c = Client::new();
    let db = cluster::fresh_database();
    let keys = tempfile::tempdir().unwrap();
    let k = keys.path().display();
    let config = |bootstrap: &str| {
        format!(
            "[db]\ndriver = \"mysql\"\nuri = \"{db}\"\n\
             [auth_server]\nprivateKey = \"{k}/token.key\"\n\
             [token]\nrootcertbundle = \"{k}/token.crt\"\n\
             [p2p]\nenabled = true\nlisten = \"/ip4/127.0.0.1/tcp/0\"\npiece_size = {PIECE}\n\
             tier = true\nreplicas = {replicas}\nbootstrap = \"{bootstrap}\"\n"
        )
    };
    let a = Server::start_config(&config(""));
    let a_addr = swarm_addr(&c, &a);
    let b = Server::start_config(&config(&a_addr));
    let b_addr = swarm_addr(&c, &b);
    let n3 = Server::start_config(&config(&format!("{a_addr},{b_addr}")));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    (vec![a, b, n3], keys)
}

#[test]
fn tier_fetches_missing_blobs_and_replicates_pushes() {
    let c = Client::new();
    let (mut nodes, _keys) = tier_nodes(2);
    let mut n3 = nodes.pop().unwrap();
    let (b, a) = (nodes.pop().unwrap(), nodes.pop().unwrap());

    // A push is acknowledged once two nodes hold it.
    let x: Vec<u8> = (0..PIECE * 5 + 77).map(|i| (i * 7 % 253) as u8).collect();
    let dx = push_blob(&c, &a, "tier/app", &x);
    let held = holders(&[&a, &b, &n3], &dx);
    assert_eq!(held.iter().filter(|h| **h).count(), 2, "{held:?}");
    assert!(held[0], "the node pushed to keeps its copy");
    // The node without it fetches it from a peer when asked.
    let lacking = if held[1] { &n3 } else { &b };
    assert_serves(&c, lacking, "tier/app", &dx, &x);
    assert_eq!(holders(&[&a, &b, &n3], &dx), [true, true, true]);

    // A push to the third node, which then dies: the others still serve
    // it, whichever of them got the replica.
    let y: Vec<u8> = (0..PIECE * 3).map(|i| (i * 13 % 241) as u8).collect();
    let dy = push_blob(&c, &n3, "tier/other", &y);
    assert_eq!(
        holders(&[&a, &b, &n3], &dy).iter().filter(|h| **h).count(),
        2
    );
    n3.kill();
    for node in [&a, &b] {
        assert_serves(&c, node, "tier/other", &dy, &y);
    }
    assert_eq!(holders(&[&a, &b], &dy), [true, true]);
    // A blob no node holds is unknown, not an error.
    let r = c
        .get(a.url(&format!("/v2/tier/app/blobs/{}", sha256(b"nowhere"))))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// `replicas = 3` on three nodes: every push is held by all of them when
/// acknowledged (the copies to the two others run side by side).
#[test]
fn tier_holds_each_push_on_three_replicas() {
    let c = Client::new();
    let (nodes, _keys) = tier_nodes(3);
    let all: Vec<&Server> = nodes.iter().collect();
    // Acknowledged once every node holds it, whichever node took the push.
    for (i, node) in all.iter().enumerate() {
        let x: Vec<u8> = (0..PIECE * 9 + i)
            .map(|j| ((j * 11 + i) % 251) as u8)
            .collect();
        let d = push_blob(&c, node, "tier/three", &x);
        assert_eq!(holders(&all, &d), [true, true, true], "pushed to node {i}");
        for other in &all {
            assert_serves(&c, other, "tier/three", &d, &x);
        }
    }
}
