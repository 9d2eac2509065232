//! The peer swarm across processes on loopback: a hub (`dockyard web` with
//! `[p2p]` on, accounts on) and host agents (`dockyard agent`), each on an
//! address of its own in 127.0.0.0/8, started by the test.
//!
//! - the real `docker` CLI (private dockerd) logs in and pulls one image
//!   through two different agents; the second gets its layers from the
//!   first;
//! - a peer killed in the middle of a wave of pulls does not stop the
//!   others;
//! - a peer serving corrupted bytes (its cached blob damaged on disk) is
//!   detected and banned, and the pull still yields the right digest;
//! - a requester without a ticket gets nothing from a peer, and one whose
//!   client has no credentials for a private image gets no ticket, hence
//!   no pieces; the agent answers such a client 401 even from its cache.
//!
//! Every image is private (pushed into the admin's namespace).

mod common;

#[allow(dead_code)]
#[path = "clients/dockerd.rs"]
mod dockerd;
#[allow(dead_code)]
#[path = "clients/support.rs"]
mod support;
#[path = "p2p/swarm.rs"]
mod swarm;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use swarm::*;

const MIB: usize = 1 << 20;
/// Small pieces, so small blobs have many of them.
const PIECE: u32 = 256 << 10;

fn hub() -> Hub {
    Hub::start(HubOptions {
        auth: true,
        p2p: true,
        piece_size: Some(PIECE),
        host: None,
    })
}

fn agents(hub: &Hub, first: u8, n: u8) -> Vec<Agent> {
    (first..first + n)
        .map(|i| Agent::start(hub, i, "1G"))
        .collect()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = support::run_capture(cmd, Duration::from_secs(120));
    assert!(
        out.success(),
        "{} failed:\n{}{}",
        support::describe(cmd),
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn blob_url(agent: &Agent, repo: &str, digest: &str) -> String {
    agent.url(&format!("/v2/{repo}/blobs/{digest}"))
}

#[test]
fn docker_pulls_one_image_through_two_agents() {
    let hub = hub();
    let agents = agents(&hub, 1, 4);
    let repo = "admin/swarm-app";
    let p = Pusher::new(&hub, repo);
    let layers = vec![
        layer("big.bin", pseudo_random(1, 3 * MIB)),
        layer("etc/small.txt", b"hello from the swarm\n".to_vec()),
    ];
    let img = push_image(&p, "v1", &layers);

    let docker = dockerd::Dockerd::start();
    let (a, b) = (&agents[0], &agents[1]);
    let mut pulled = Vec::new();
    for agent in [a, b] {
        // The token dance goes through the agent: docker is sent the
        // hub's challenge and fetches its token from the hub's realm.
        let mut login = docker.docker();
        login
            .args(["login", "-u", ADMIN, "--password-stdin", &agent.addr])
            .stdin(std::process::Stdio::piped());
        let mut child = login
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ADMIN_PASSWORD.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker login via agent {}: {}{}",
            agent.index,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let image = format!("{}/{repo}:v1", agent.addr);
        run_ok(docker.docker().args(["pull", &image]));
        let inspect: Value =
            serde_json::from_str(&run_ok(docker.docker().args(["image", "inspect", &image])))
                .unwrap();
        assert_eq!(inspect[0]["Id"], img.config_digest.as_str());
        let diff_ids: Vec<&str> = inspect[0]["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            diff_ids,
            layers
                .iter()
                .map(|l| l.diff_id.as_str())
                .collect::<Vec<_>>()
        );
        let digests = inspect[0]["RepoDigests"].to_string();
        assert!(
            digests.contains(&img.manifest_digest),
            "repo digests {digests}"
        );
        // The files as docker unpacked them.
        let cid = run_ok(docker.docker().args(["create", &image]))
            .trim()
            .to_string();
        for l in &layers {
            let tar = docker
                .docker()
                .args(["cp", &format!("{cid}:/{}", l.path), "-"])
                .output()
                .unwrap();
            assert!(tar.status.success(), "docker cp {}", l.path);
            let mut archive = tar::Archive::new(&tar.stdout[..]);
            let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut got).unwrap();
            assert!(
                got == l.content,
                "content of /{} via agent {}",
                l.path,
                agent.index
            );
        }
        run_ok(docker.docker().args(["rm", &cid]));
        // Drop the image so the next pull fetches its layers again.
        run_ok(docker.docker().args(["rmi", &image]));
        pulled.push(agent.metrics());
    }
    let m = b.metrics();
    let from_peers = m["dockyard_agent_bytes_from_peers_total"];
    let from_origin = m["dockyard_agent_bytes_from_origin_total"];
    assert!(
        from_peers >= 3.0 * MIB as f64,
        "the second agent took its big layer from peers ({from_peers} from peers, {from_origin} from the hub)\n{}",
        b.log_tail()
    );
    assert!(a.metric("bytes_served_to_peers_total") >= 3.0 * MIB as f64);
    assert!(a.metric("bytes_served_to_clients_total") >= 3.0 * MIB as f64);
    assert!(b.metric("bytes_served_to_clients_total") >= 3.0 * MIB as f64);
    // Pushes through an agent are refused with a clear message.
    let r = http()
        .post(a.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.text().unwrap().contains("UNSUPPORTED"));
}

#[test]
fn killed_peer_does_not_stop_the_others() {
    let hub = hub();
    let mut agents = agents(&hub, 21, 4);
    let repo = "admin/kill";
    let p = Pusher::new(&hub, repo);
    let data = pseudo_random(7, 48 * MIB);
    let digest = p.blob(&data);
    let token = hub.token(&format!("repository:{repo}:pull"));

    // Everyone pulls at once; the first agent dies once it is under way.
    let pulls: Vec<_> = agents
        .iter()
        .map(|a| {
            let url = blob_url(a, repo, &digest);
            let token = token.clone();
            std::thread::spawn(move || {
                std::panic::catch_unwind(|| fetch_digest(&url, token.as_deref())).ok()
            })
        })
        .collect();
    let victim = &mut agents[0];
    let started = Instant::now();
    let mut got_at_kill = 0.0;
    wait_until(Duration::from_secs(60), "the victim to get pieces", || {
        let m = victim.metrics();
        got_at_kill = m["dockyard_agent_bytes_from_peers_total"]
            + m["dockyard_agent_bytes_from_origin_total"];
        got_at_kill > 0.0
    });
    victim.kill();
    assert!(
        got_at_kill < data.len() as f64,
        "the victim was killed mid-transfer ({got_at_kill} bytes in)"
    );
    let mut results = pulls.into_iter().map(|t| t.join().unwrap());
    let _victim_result = results.next();
    for (r, a) in results.zip(&agents[1..]) {
        let (status, got, len) =
            r.unwrap_or_else(|| panic!("pull via agent {} failed\n{}", a.index, a.log_tail()));
        assert_eq!(status, 200);
        assert_eq!(len, data.len() as u64);
        assert_eq!(got, digest, "agent {}", a.index);
        assert_eq!(a.metric("downloads_completed_total"), 1.0);
    }
    eprintln!(
        "wave of 4 with one killed at {got_at_kill} bytes: {:?}",
        started.elapsed()
    );
}

/// Flips a byte in every piece of a file.
fn corrupt(path: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let len = f.metadata().unwrap().len();
    let mut off = PIECE as u64 / 2;
    while off < len {
        let mut b = [0u8];
        f.read_exact_at(&mut b, off).unwrap();
        b[0] ^= 0x5a;
        f.write_all_at(&b, off).unwrap();
        off += PIECE as u64;
    }
}

#[test]
fn corrupt_peer_is_banned_and_the_pull_succeeds() {
    let hub = hub();
    let agents = agents(&hub, 41, 2);
    let (bad, good) = (&agents[0], &agents[1]);
    let repo = "admin/corrupt";
    let p = Pusher::new(&hub, repo);
    let data = pseudo_random(9, 8 * MIB);
    let digest = p.blob(&data);
    let token = hub.token(&format!("repository:{repo}:pull"));

    let (status, got, _) = fetch_digest(&blob_url(bad, repo, &digest), token.as_deref());
    assert_eq!((status, got.as_str()), (200, digest.as_str()));
    wait_until(Duration::from_secs(10), "the blob in the cache", || {
        bad.cached_file(&digest).exists()
    });
    corrupt(&bad.cached_file(&digest));

    let (status, got, len) = fetch_digest(&blob_url(good, repo, &digest), token.as_deref());
    assert_eq!(status, 200);
    assert_eq!(len, data.len() as u64);
    assert_eq!(got, digest, "the pull yields the right bytes");
    let m = good.metrics();
    assert!(
        m["dockyard_agent_pieces_rejected_total"] >= 1.0,
        "bad pieces were rejected: {m:?}\n{}",
        good.log_tail()
    );
    assert_eq!(m["dockyard_agent_peers_banned_total"], 1.0);
    assert!(bad.metric("bytes_served_to_peers_total") > 0.0);
    // The good agent's copy is intact and served from its cache.
    let (_, again, _) = fetch_digest(&blob_url(good, repo, &digest), token.as_deref());
    assert_eq!(again, digest);
    assert_eq!(good.metric("cache_hits_total"), 1.0);
}

fn probe(peer: &str, digest: &str, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_dockyard"))
        .args(["p2p-probe", "--peer", peer, "--digest", digest])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "probe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn no_ticket_no_pieces_and_private_blobs_stay_private() {
    let hub = hub();
    let agents = agents(&hub, 61, 1);
    let a = &agents[0];
    let repo = "admin/private";
    let p = Pusher::new(&hub, repo);
    let data = pseudo_random(11, MIB);
    let digest = p.blob(&data);
    let token = hub.token(&format!("repository:{repo}:pull"));
    let (status, got, _) = fetch_digest(&blob_url(a, repo, &digest), token.as_deref());
    assert_eq!((status, got.as_str()), (200, digest.as_str()));
    wait_until(Duration::from_secs(10), "the blob in the cache", || {
        a.cached_file(&digest).exists()
    });
    let peer = a.p2p_addr();

    // No ticket at all: neither pieces nor which pieces it has.
    let v = probe(&peer, &digest, &[]);
    assert_eq!(v["ticket"], "none");
    assert!(v["have"].as_str().unwrap().starts_with("refused"), "{v}");
    assert!(v["piece"].as_str().unwrap().starts_with("refused"), "{v}");
    // A forged ticket.
    let v = probe(
        &peer,
        &digest,
        &["--ticket", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA"],
    );
    assert!(v["piece"].as_str().unwrap().starts_with("refused"), "{v}");
    // A client without credentials gets no ticket from the hub.
    let v = probe(&peer, &digest, &["--hub", &hub.base, "--name", repo]);
    assert_eq!(v["ticket"], "hub refused: 401", "{v}");
    assert!(v["piece"].as_str().unwrap().starts_with("refused"), "{v}");
    // With credentials, the probe gets a ticket and a verified piece.
    let auth = format!("Bearer {}", token.clone().unwrap());
    let v = probe(
        &peer,
        &digest,
        &["--hub", &hub.base, "--name", repo, "--authorization", &auth],
    );
    assert_eq!(v["ticket"], "hub", "{v}");
    assert_eq!(v["have"], "all", "{v}");
    assert_eq!(v["piece"]["verified"], true, "{v}");
    // That ticket names that probe's PeerId: useless to another requester.
    let stolen = v["ticket_value"].as_str().unwrap().to_string();
    let v = probe(&peer, &digest, &["--ticket", &stolen]);
    assert_eq!(v["ticket"], "given");
    assert!(v["have"].as_str().unwrap().starts_with("refused"), "{v}");
    assert!(v["piece"].as_str().unwrap().starts_with("refused"), "{v}");
    assert!(a.metric("requests_refused_total") >= 8.0);

    // The agent answers a client without credentials as the hub would,
    // though the blob is in its cache.
    let r = http().get(blob_url(a, repo, &digest)).send().unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert!(
        challenge.contains(&hub.addr),
        "the hub's realm: {challenge}"
    );
    // The manifest too.
    let r = http()
        .get(a.url(&format!("/v2/{repo}/manifests/latest")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(a.metric("blob_requests_refused_total") >= 1.0);
}
