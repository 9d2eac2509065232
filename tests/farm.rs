//! Several hub nodes, one hub: `dockyard web` processes on their own
//! loopback ports sharing one MariaDB database and one Ceph pool, behind
//! nginx (`farm/cluster.rs`). The real docker CLI pushes through nginx and
//! pulls from another node; a chunked upload hops between nodes; a node
//! killed mid-pull is survived by the retry through nginx; concurrent
//! pushes of one blob to two nodes leave one copy. The OCI conformance
//! workflows against two nodes behind nginx are in `tests/conformance.rs`
//! (`farm_conformance`).

mod common;

#[path = "farm/cluster.rs"]
mod cluster;
#[path = "clients/dockerd.rs"]
#[allow(dead_code)]
mod dockerd;
#[path = "clients/support.rs"]
#[allow(dead_code)]
mod support;

use std::io::Read as _;
use std::process::Command;
use std::time::Duration;

use cluster::{CHUNK, Farm};
use reqwest::blocking::Client;
use support::{pseudo_random, require_tool, run, run_capture, sha256_digest, unique};

const MIB: usize = 1 << 20;

fn http() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

/// A chunked upload of `data` to `repo`: POST on `bases[0]`, then each
/// chunk's PATCH on the next base in turn, the closing PUT on the one
/// after. Returns the final status.
fn chunked_upload(c: &Client, bases: &[&str], repo: &str, data: &[u8], chunk: usize) -> u16 {
    let r = c
        .post(format!("{}/v2/{repo}/blobs/uploads/", bases[0]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut location = r.headers()["location"].to_str().unwrap().to_string();
    let mut turn = 1;
    for (i, part) in data.chunks(chunk).enumerate() {
        let start = i * chunk;
        let base = bases[turn % bases.len()];
        turn += 1;
        let r = c
            .patch(format!("{base}{location}"))
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                format!("{start}-{}", start + part.len() - 1),
            )
            .body(part.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "PATCH {i} on {base}");
        assert_eq!(
            r.headers()["range"].to_str().unwrap(),
            format!("0-{}", start + part.len() - 1)
        );
        location = r.headers()["location"].to_str().unwrap().to_string();
    }
    let base = bases[turn % bases.len()];
    let sep = if location.contains('?') { '&' } else { '?' };
    c.put(format!(
        "{base}{location}{sep}digest={}",
        sha256_digest(data)
    ))
    .send()
    .unwrap()
    .status()
    .as_u16()
}

fn get_blob(c: &Client, base: &str, repo: &str, digest: &str) -> Vec<u8> {
    let r = c
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "GET {digest} on {base}");
    r.bytes().unwrap().to_vec()
}

/// The farm's objects of blob `digest`: its head and its chunks' count.
fn copies(farm: &Farm, digest: &str) -> (usize, usize, usize) {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let objects = farm.objects();
    let heads = objects
        .iter()
        .filter(|o| **o == format!("blob.sha256.{hex}"))
        .count();
    let chunks = objects.iter().filter(|o| o.starts_with("chunk.")).count();
    let uploads = objects.iter().filter(|o| o.starts_with("upload.")).count();
    (heads, chunks, uploads)
}

#[test]
fn docker_push_through_nginx_pull_from_another_node() {
    let farm = Farm::start(3);
    let docker = dockerd::Dockerd::start();
    let work = tempfile::tempdir().unwrap();
    let random = pseudo_random(7, 3 * MIB);
    let root = work.path().join("rootfs");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("data/random.bin"), &random).unwrap();
    std::fs::write(root.join("etc/farm"), b"one hub, three nodes\n").unwrap();
    let tar = work.path().join("rootfs.tar");
    run(Command::new(require_tool("tar"))
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let local = unique("farm-test/app:");
    run(docker.docker().arg("import").arg(&tar).arg(&local));

    let pushed = format!("{}/farm/app:1", farm.nginx.addr);
    run(docker.docker().args(["tag", &local, &pushed]));
    let out = run_capture(
        docker.docker().args(["push", &pushed]),
        Duration::from_secs(300),
    );
    assert!(
        out.success(),
        "docker push via nginx: {}{}\n{}",
        out.stdout,
        out.stderr,
        farm.nginx.error_log()
    );
    run(docker.docker().args(["rmi", &local, &pushed]));

    // Pulled from each node directly: the same image, files and all.
    for node in &farm.nodes[1..] {
        let image = format!("{}/farm/app:1", node.addr);
        let out = run_capture(
            docker.docker().args(["pull", &image]),
            Duration::from_secs(300),
        );
        assert!(
            out.success(),
            "docker pull from {}: {}{}",
            node.addr,
            out.stdout,
            out.stderr
        );
        let cid = run(docker.docker().args(["create", &image, "/none"]))
            .trim()
            .to_string();
        let got = docker
            .docker()
            .args(["cp", &format!("{cid}:/data/random.bin"), "-"])
            .output()
            .unwrap();
        assert!(got.status.success());
        let mut archive = tar::Archive::new(&got.stdout[..]);
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        assert!(bytes == random, "the file pulled from {}", node.addr);
        run(docker.docker().args(["rm", &cid]));
        run(docker.docker().args(["rmi", &image]));
    }
}

#[test]
fn chunked_upload_hopping_between_nodes() {
    let farm = Farm::start(3);
    let c = http();
    let data = pseudo_random(11, 5 * MIB + 12345);
    let bases: Vec<&str> = farm.nodes.iter().map(|n| n.base.as_str()).collect();
    // Chunks that do not line up with the store's objects.
    let status = chunked_upload(&c, &bases, "farm/hop", &data, 700_001);
    assert_eq!(status, 201);
    let digest = sha256_digest(&data);
    for base in bases.iter().copied().chain([farm.base.as_str()]) {
        assert!(get_blob(&c, base, "farm/hop", &digest) == data);
    }
    let (heads, chunks, uploads) = copies(&farm, &digest);
    assert_eq!(heads, 1);
    assert_eq!(chunks, data.len().div_ceil(CHUNK as usize));
    assert_eq!(uploads, 0);

    // Through nginx (whichever node each request reaches), with a ranged
    // read served by another node.
    let small = pseudo_random(12, 2 * MIB);
    let nginx = [farm.base.as_str()];
    assert_eq!(chunked_upload(&c, &nginx, "farm/hop", &small, 300_000), 201);
    let r = c
        .get(format!(
            "{}/v2/farm/hop/blobs/{}",
            bases[2],
            sha256_digest(&small)
        ))
        .header("Range", "bytes=1000000-1999999")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(r.bytes().unwrap()[..] == small[1_000_000..2_000_000]);
}

#[test]
fn node_killed_mid_pull_then_retry_through_nginx() {
    let mut farm = Farm::start(2);
    let c = http();
    let data = pseudo_random(21, 48 * MIB);
    let digest = sha256_digest(&data);
    assert_eq!(
        chunked_upload(&c, &[&farm.base], "farm/big", &data, 8 * MIB),
        201
    );

    let mut r = c
        .get(farm.url(&format!("/v2/farm/big/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let upstream = r.headers()["x-upstream"].to_str().unwrap().to_string();
    let mut got = vec![0u8; 4 * MIB];
    r.read_exact(&mut got).unwrap();
    let victim = farm
        .nodes
        .iter()
        .position(|n| n.addr == upstream)
        .unwrap_or_else(|| panic!("{upstream} is no node"));
    farm.nodes[victim].kill();
    // The rest of this response breaks off (or was already in flight).
    let mut rest = Vec::new();
    let broke = r.read_to_end(&mut rest).is_err() || got.len() + rest.len() < data.len();
    got.extend_from_slice(&rest);
    got.truncate(got.len().min(data.len()));
    assert!(
        broke || got == data,
        "a killed node's response did not break"
    );
    // The client resumes where it stopped; nginx skips the dead node.
    let r = c
        .get(farm.url(&format!("/v2/farm/big/blobs/{digest}")))
        .header("Range", format!("bytes={}-", got.len()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 206, "{}", farm.nginx.error_log());
    assert_ne!(r.headers()["x-upstream"].to_str().unwrap(), upstream);
    got.extend_from_slice(&r.bytes().unwrap());
    assert_eq!(sha256_digest(&got), digest);
    // And whole again, twice (both go to the live node).
    for _ in 0..2 {
        assert!(get_blob(&c, &farm.base, "farm/big", &digest) == data);
    }
}

#[test]
fn concurrent_pushes_of_one_blob_leave_one_copy() {
    let farm = Farm::start(2);
    let c = http();
    for round in 0..3u64 {
        let data = pseudo_random(100 + round, 3 * MIB + 1000 * round as usize);
        let digest = sha256_digest(&data);
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = farm
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| {
                    let (c, data) = (&c, &data);
                    s.spawn(move || {
                        let repo = format!("farm/same{i}");
                        chunked_upload(c, &[&node.base], &repo, data, MIB)
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(statuses, [201, 201], "round {round}");
        let (heads, chunks, uploads) = copies(&farm, &digest);
        assert_eq!(heads, 1, "round {round}: one head");
        assert_eq!(uploads, 0, "round {round}: no session left");
        let per_blob = data.len().div_ceil(CHUNK as usize);
        let expected: usize = (0..=round)
            .map(|r| (3 * MIB + 1000 * r as usize).div_ceil(CHUNK as usize))
            .sum();
        assert_eq!(
            chunks, expected,
            "round {round}: {per_blob} chunks for this blob, no more"
        );
        for node in &farm.nodes {
            for i in 0..2 {
                assert!(get_blob(&c, &node.base, &format!("farm/same{i}"), &digest) == data);
            }
        }
    }
}
