//! v2 images read with v1: OCI and Docker schema 2 manifests with gzip and
//! plain layers become v1 chains (tags → id → ancestry → JSON → layer,
//! checksums consistent), the same ids every time, after a restart and on
//! another hub; what v1 cannot read (zstd layers) is refused clearly; a
//! synthesized image tagged with v1 is the original v2 image again.

use serde_json::{Value, json};

use crate::common::Server;
use crate::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

fn push_blob(c: &V1, repo: &str, data: &[u8]) {
    let r = c.send(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(data)),
        None,
        &[("Content-Type", "application/octet-stream")],
        Payload::Bytes(data.to_vec()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
}

fn put_manifest(c: &V1, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> String {
    let r = c.send(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        None,
        &[("Content-Type", media_type)],
        Payload::Bytes(body.to_vec()),
    );
    assert_eq!(r.status, 201, "{}", r.describe());
    sha256(body)
}

/// A v2 image: its layers as stored (with their media types), its config.
struct V2Image {
    layers: Vec<(Vec<u8>, &'static str)>,
    config: Vec<u8>,
    manifest: Vec<u8>,
    media_type: &'static str,
}

fn v2_image(
    oci: bool,
    layers: Vec<(Vec<u8>, &'static str)>,
    tars: &[Vec<u8>],
    seed: &str,
) -> V2Image {
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-05-01T00:00:00Z",
        "author": format!("bridge {seed}"),
        "config": {"Cmd": ["/bin/sh"], "Env": [format!("SEED={seed}")]},
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| sha256(t)).collect::<Vec<_>>()},
        "history": (0..layers.len()).flat_map(|i| vec![
            json!({"created": format!("2024-05-0{}T00:00:00Z", i + 1), "created_by": format!("RUN step {i}")}),
            json!({"created": "2024-05-09T00:00:00Z", "created_by": "ENV x=1", "empty_layer": true}),
        ]).collect::<Vec<_>>(),
    });
    let config = serde_json::to_vec(&config).unwrap();
    let (mt, cmt) = if oci {
        (OCI_MANIFEST, OCI_CONFIG)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": cmt, "digest": sha256(&config), "size": config.len()},
        "layers": layers.iter().map(|(b, lmt)| json!({"mediaType": lmt, "digest": sha256(b), "size": b.len()})).collect::<Vec<_>>(),
    });
    V2Image {
        layers,
        config,
        manifest: serde_json::to_vec(&manifest).unwrap(),
        media_type: mt,
    }
}

fn push_v2(c: &V1, repo: &str, tag: &str, img: &V2Image) -> String {
    for (b, _) in &img.layers {
        push_blob(c, repo, b);
    }
    push_blob(c, repo, &img.config);
    put_manifest(c, repo, tag, img.media_type, &img.manifest)
}

fn tags(c: &V1, repo: &str) -> Value {
    let r = c.get(&format!("/v1/repositories/{repo}/tags"), None);
    assert_eq!(r.status, 200, "{}", r.describe());
    r.json()
}

/// The images every test hub gets, and what their tags are.
struct Fixture {
    oci: V2Image,
    docker: V2Image,
    oci_tars: Vec<Vec<u8>>,
}

fn fixture() -> Fixture {
    let t0 = tar(&[("etc/one", b"one\n" as &[u8])]);
    let t1 = tar(&[("etc/two", b"two\n" as &[u8]), ("var/x", &[1u8; 700])]);
    let t2 = tar(&[("etc/three", b"three\n" as &[u8])]);
    let oci = v2_image(
        true,
        vec![
            (gzip(&t0), "application/vnd.oci.image.layer.v1.tar+gzip"),
            (t1.clone(), "application/vnd.oci.image.layer.v1.tar"),
        ],
        &[t0.clone(), t1.clone()],
        "oci",
    );
    let docker = v2_image(
        false,
        vec![
            (gzip(&t0), GZIP_LAYER),
            (gzip(&t2), GZIP_LAYER),
            (t1.clone(), TAR_LAYER),
        ],
        &[t0.clone(), t2, t1.clone()],
        "docker",
    );
    Fixture {
        oci,
        docker,
        oci_tars: vec![t0, t1],
    }
}

/// Pushes the fixture over v2 to `repo`; returns the OCI and Docker
/// manifest digests.
fn push_fixture(c: &V1, repo: &str, f: &Fixture) -> (String, String) {
    let oci = push_v2(c, repo, "oci", &f.oci);
    let docker = push_v2(c, repo, "docker", &f.docker);
    // zstd: stored, but not for v1.
    let zl = b"\x28\xb5\x2f\xfd not really zstd".to_vec();
    let z = v2_image(
        true,
        vec![(zl, "application/vnd.oci.image.layer.v1.tar+zstd")],
        &[b"x".to_vec()],
        "z",
    );
    push_v2(c, repo, "zstd", &z);
    // An index whose linux/amd64 image is the OCI one.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": oci, "size": f.oci.manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    });
    put_manifest(
        c,
        repo,
        "multi",
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    (oci, docker)
}

fn check_chain(c: &V1, id: &str, img: &V2Image, seed: &str) -> Vec<Pulled> {
    let pulled = v1_pull(c, None, id);
    assert_eq!(pulled.len(), img.layers.len());
    // Top first.
    for (p, (blob, _)) in pulled.iter().zip(img.layers.iter().rev()) {
        assert!(p.layer == *blob, "layer of {} differs", p.id);
        assert_eq!(p.json["Size"], blob.len());
        assert_eq!(p.json["architecture"], "amd64");
        assert_eq!(p.json["os"], "linux");
    }
    let top = &pulled[0].json;
    assert_eq!(top["config"]["Env"][0], format!("SEED={seed}"));
    assert_eq!(top["author"], format!("bridge {seed}"));
    assert_eq!(top["created"], "2024-05-01T00:00:00Z");
    let root = &pulled[pulled.len() - 1].json;
    assert_eq!(root["container_config"]["Cmd"], json!(["RUN step 0"]));
    assert_eq!(root["created"], "2024-05-01T00:00:00Z");
    assert!(
        root.get("config").is_none(),
        "only the top image has the config"
    );
    pulled
}

#[test]
fn v2_images_read_with_v1_deterministically() {
    let f = fixture();
    let mut srv = Server::start();
    let c = V1::new(&srv.base);
    let repo = "bridge/app";
    let (oci_digest, _) = push_fixture(&c, repo, &f);

    let t = tags(&c, repo);
    let obj = t.as_object().unwrap();
    assert!(
        obj.get("zstd").is_none(),
        "a zstd image is not listed for v1: {t}"
    );
    let mut names: Vec<&String> = obj.keys().collect();
    names.sort();
    assert_eq!(names, ["docker", "multi", "oci"]);
    let oci_id = t["oci"].as_str().unwrap().to_string();
    let docker_id = t["docker"].as_str().unwrap().to_string();
    assert_eq!(
        t["multi"], t["oci"],
        "an index is read as its linux/amd64 image"
    );
    expect_error(
        &c.get(&format!("/v1/repositories/{repo}/tags/zstd"), None),
        400,
        "zstd",
    );
    let r = c.get(&format!("/v1/repositories/{repo}/tags/docker"), None);
    assert_eq!(r.json(), json!(docker_id));

    let oci_chain = check_chain(&c, &oci_id, &f.oci, "oci");
    let docker_chain = check_chain(&c, &docker_id, &f.docker, "docker");
    // Both images start with the same layer and the same history entry:
    // the same base image.
    assert_eq!(
        oci_chain.last().unwrap().id,
        docker_chain.last().unwrap().id
    );
    assert_ne!(oci_chain[0].id, docker_chain[0].id);

    // The repository's image list names every image, with checksums.
    let r = c.get(&format!("/v1/repositories/{repo}/images"), None);
    assert_eq!(r.status, 200, "{}", r.describe());
    let listed: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    for p in oci_chain.iter().chain(&docker_chain) {
        let e = listed
            .iter()
            .find(|e| e["id"] == p.id)
            .unwrap_or_else(|| panic!("{} not listed: {listed:?}", p.id));
        assert_eq!(e["checksum"], p.checksum);
    }

    // The same ids and bytes again, and after a restart.
    assert_eq!(tags(&c, repo), t);
    srv.restart();
    assert_eq!(tags(&c, repo), t);
    let again = v1_pull(&c, None, &oci_id);
    for (a, b) in again.iter().zip(&oci_chain) {
        assert_eq!(a.id, b.id);
        assert!(a.raw_json == b.raw_json);
        assert_eq!(a.checksum, b.checksum);
    }

    // Another hub, the same pushes: the same v1 images.
    let other = Server::start();
    let c2 = V1::new(&other.base);
    push_fixture(&c2, "elsewhere/app", &f);
    assert_eq!(tags(&c2, "elsewhere/app"), t);
    let there = v1_pull(&c2, None, &docker_id);
    for (a, b) in there.iter().zip(&docker_chain) {
        assert!(a.raw_json == b.raw_json);
        assert_eq!(a.checksum, b.checksum);
    }

    // The synthesized top image, tagged with v1 elsewhere, is the
    // original manifest again.
    expect_done(&c.put_json("/v1/repositories/copy/app/tags/back", None, &json!(oci_id)));
    let r = c.send(
        "GET",
        "/v2/copy/app/manifests/back",
        None,
        &[("Accept", &format!("{OCI_MANIFEST}, {DOCKER_MANIFEST}"))],
        Payload::None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.header("docker-content-digest"), oci_digest);
    assert!(r.body == f.oci.manifest);
    assert_eq!(r.header("content-type"), OCI_MANIFEST);
    // A middle image has no v2 manifest: converting it computes the
    // diff ids from the layers themselves.
    let base_id = oci_chain.last().unwrap().id.clone();
    expect_done(&c.put_json("/v1/repositories/copy/app/tags/base", None, &json!(base_id)));
    let base = Image {
        id: base_id,
        json: oci_chain.last().unwrap().raw_json.clone(),
        tar: f.oci_tars[0].clone(),
        blob: f.oci.layers[0].0.clone(),
        gzip: true,
    };
    let r = c.send(
        "GET",
        "/v2/copy/app/manifests/base",
        None,
        &[("Accept", DOCKER_MANIFEST)],
        Payload::None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    let m = r.json();
    let cfg = c.get(
        &format!(
            "/v2/copy/app/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(cfg.json()["rootfs"]["diff_ids"], json!([sha256(&base.tar)]));
    assert_eq!(m["layers"][0]["digest"], sha256(&base.blob));
}
