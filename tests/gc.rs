//! `dockyard gc`: frees unreferenced blobs, never one a manifest still uses.

mod common;

use std::path::Path;
use std::process::Command;

use reqwest::blocking::Client;
use sha2::{Digest, Sha256};

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn push_blob(c: &Client, s: &common::Server, repo: &str, data: &[u8]) -> String {
    let d = digest(data);
    let r = c
        .post(s.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")))
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "single-POST upload of {d}");
    d
}

fn push_manifest(
    c: &Client,
    s: &common::Server,
    repo: &str,
    tag: &str,
    config: (&str, usize),
    layers: &[(&str, usize)],
) -> String {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|(d, n)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n}))
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers,
    })
    .to_string();
    let r = c
        .put(s.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "manifest push");
    digest(body.as_bytes())
}

fn blob_file(s: &common::Server, d: &str) -> std::path::PathBuf {
    let (alg, hex) = d.split_once(':').unwrap();
    s.data_dir()
        .join("blobs")
        .join(alg)
        .join(&hex[..2])
        .join(hex)
}

fn gc(config: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_dockyard"))
        .arg("gc")
        .args(["--grace", "0", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn gc_frees_only_what_no_manifest_references() {
    let mut s = common::Server::start();
    let c = Client::new();
    let (shared, only_m1, config) = (
        b"shared layer".to_vec(),
        b"layer of m1 only".to_vec(),
        b"{}".to_vec(),
    );
    let shared_d = push_blob(&c, &s, "r1", &shared);
    let only_d = push_blob(&c, &s, "r1", &only_m1);
    let config_d = push_blob(&c, &s, "r1", &config);
    let m1 = push_manifest(
        &c,
        &s,
        "r1",
        "v1",
        (&config_d, 2),
        &[(&shared_d, shared.len()), (&only_d, only_m1.len())],
    );
    for d in [&shared_d, &config_d] {
        let r = c
            .post(s.url(&format!("/v2/r2/blobs/uploads/?mount={d}&from=r1")))
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "mount into r2");
    }
    push_manifest(
        &c,
        &s,
        "r2",
        "v1",
        (&config_d, 2),
        &[(&shared_d, shared.len())],
    );
    // An orphan: a committed blob file whose metadata never made it.
    let orphan = b"orphan".to_vec();
    let orphan_d = digest(&orphan);
    let orphan_path = blob_file(&s, &orphan_d);
    std::fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    std::fs::write(&orphan_path, &orphan).unwrap();

    let r = c
        .delete(s.url(&format!("/v2/r1/manifests/{m1}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);

    s.kill();
    let dry = gc(&s.config, &["--dry-run"]);
    assert!(
        dry.contains("would remove 1 unreferenced blobs and 1 orphaned"),
        "{dry}"
    );
    assert!(blob_file(&s, &only_d).exists(), "a dry run removes nothing");
    let out = gc(&s.config, &[]);
    assert!(
        out.contains("removed 1 unreferenced blobs and 1 orphaned"),
        "{out}"
    );
    // r1's links were its only users of these after m1 went; r2's manifest
    // still needs the shared layer and the config.
    assert!(!blob_file(&s, &only_d).exists(), "unreferenced layer freed");
    assert!(!orphan_path.exists(), "orphan freed");
    assert!(blob_file(&s, &shared_d).exists(), "layer r2 uses is kept");
    assert!(blob_file(&s, &config_d).exists(), "config r2 uses is kept");

    s.restart();
    for d in [&shared_d, &config_d] {
        let r = c.get(s.url(&format!("/v2/r2/blobs/{d}"))).send().unwrap();
        assert_eq!(r.status(), 200, "still served from r2");
    }
    let r = c
        .get(s.url(&format!("/v2/r1/blobs/{only_d}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404, "freed blob is unknown");
    let r = c.get(s.url("/v2/r2/manifests/v1")).send().unwrap();
    assert_eq!(r.status(), 200, "r2's image intact");
}
