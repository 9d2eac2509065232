//! Docker Registry v1 (legacy), black-box against a real `dockyard web`:
//! the protocol endpoint by endpoint with their error paths
//! (`v1/protocol.rs`), the bridges v1 → v2 and v2 → v1 (`v1/bridge.rs`),
//! authentication and authorization with token and Basic credentials
//! (`v1/auth.rs`), and the real docker CLI pulling a v1-pushed image and
//! searching (`v1/docker.rs`).
//!
//! Layers are real tar archives (gzip-compressed or not) made here.

mod common;

#[path = "auth/hub.rs"]
mod hub;

#[allow(dead_code)]
#[path = "clients/dockerd.rs"]
mod dockerd;
#[allow(dead_code)]
#[path = "clients/support.rs"]
mod support;

#[path = "v1/auth.rs"]
mod auth;
#[path = "v1/bridge.rs"]
mod bridge;
#[path = "v1/docker.rs"]
mod docker;
#[path = "v1/protocol.rs"]
mod protocol;

use std::io::Write;
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub use hub::Resp;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const GZIP_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const TAR_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A random-looking v1 image id, unique in this process.
pub fn new_id() -> String {
    hex::encode(Sha256::digest(hub::unique().as_bytes()))
}

/// How a request body is sent.
pub enum Payload {
    None,
    /// With `Content-Length`.
    Bytes(Vec<u8>),
    /// With `Transfer-Encoding: chunked`, as docker sends layers.
    Chunked(Vec<u8>),
}

/// A plain HTTP client for `/v1` (and `/v2`) requests.
pub struct V1 {
    pub base: String,
    pub addr: String,
    http: Client,
}

impl V1 {
    pub fn new(base: &str) -> V1 {
        V1 {
            base: base.to_string(),
            addr: base.trim_start_matches("http://").to_string(),
            http: Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Sends a request; `auth` is the whole `Authorization` value.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Payload,
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, format!("{}{path}", self.base));
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb = match body {
            Payload::None => rb,
            Payload::Bytes(b) => rb.body(b),
            Payload::Chunked(b) => rb.body(reqwest::blocking::Body::new(std::io::Cursor::new(b))),
        };
        let what = format!("{method} {path}");
        let r = rb.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        Resp {
            what,
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().map(|b| b.to_vec()).unwrap_or_default(),
        }
    }

    pub fn get(&self, path: &str, auth: Option<&str>) -> Resp {
        self.send("GET", path, auth, &[], Payload::None)
    }

    pub fn put_json(&self, path: &str, auth: Option<&str>, body: &Value) -> Resp {
        self.send(
            "PUT",
            path,
            auth,
            &[("Content-Type", "application/json")],
            Payload::Bytes(body.to_string().into_bytes()),
        )
    }
}

/// Checks a v1 error answer: status, `{"error": ...}` containing `needle`.
#[track_caller]
pub fn expect_error(r: &Resp, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.describe());
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("error body is not JSON: {}", r.describe()));
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {}", r.describe()));
    assert!(
        msg.contains(needle),
        "error {msg:?} should mention {needle:?}"
    );
    assert_eq!(r.header("content-type"), "application/json");
}

/// Checks the plain `""` answer of a v1 write.
#[track_caller]
pub fn expect_done(r: &Resp) {
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.text(), "\"\"", "{}", r.describe());
}

// ---------------------------------------------------------------- images

/// A tar archive of regular files (and the directories above them).
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    fn header(name: &str, size: usize, dir: bool) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let mode: &[u8] = if dir { b"0000755\0" } else { b"0000644\0" };
        h[100..108].copy_from_slice(mode);
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(format!("{:011o}\0", 1_700_000_000u64).as_bytes());
        h[156] = if dir { b'5' } else { b'0' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }
    let mut out = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    for (name, data) in files {
        let parts: Vec<&str> = name.split('/').collect();
        for i in 1..parts.len() {
            let d = format!("{}/", parts[..i].join("/"));
            if !dirs.contains(&d) {
                out.extend_from_slice(&header(&d, 0, true));
                dirs.push(d);
            }
        }
        out.extend_from_slice(&header(name, data.len(), false));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A v1 image as a client pushes it.
#[derive(Clone)]
pub struct Image {
    pub id: String,
    pub json: Vec<u8>,
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The layer as sent (gzip or the tar itself).
    pub blob: Vec<u8>,
    pub gzip: bool,
}

impl Image {
    /// `sha256:` of the JSON, a newline and the layer.
    pub fn checksum(&self) -> String {
        let mut payload = self.json.clone();
        payload.push(b'\n');
        payload.extend_from_slice(&self.blob);
        sha256(&payload)
    }
}

/// A layer to make: its files, whether it is gzip-compressed, the command
/// that "made" it.
pub type LayerSpec<'a> = (&'a [(&'a str, &'a [u8])], bool, &'a str);

/// A chain of v1 images, root first: one per entry (its files, whether
/// its layer is gzip-compressed, the command that "made" it). The top
/// image carries a config.
pub fn chain(layers: &[LayerSpec<'_>]) -> Vec<Image> {
    let mut out: Vec<Image> = Vec::new();
    for (i, (files, gz, cmd)) in layers.iter().enumerate() {
        let id = new_id();
        let mut j = json!({
            "id": id,
            "created": format!("2015-0{}-01T10:00:00.000000000Z", i + 1),
            "container_config": {"Cmd": ["/bin/sh", "-c", cmd]},
            "docker_version": "1.6.2",
            "architecture": "amd64",
            "os": "linux",
            "Size": 0,
        });
        if let Some(p) = out.last() {
            j["parent"] = json!(p.id);
        }
        if i + 1 == layers.len() {
            j["config"] = json!({"Cmd": ["/bin/cat", "/etc/motd"], "Env": ["A=1"]});
            j["author"] = json!("v1 test <v1@example.com>");
        }
        let t = tar(files);
        let blob = if *gz { gzip(&t) } else { t.clone() };
        out.push(Image {
            id,
            json: serde_json::to_vec(&j).unwrap(),
            tar: t,
            blob,
            gzip: *gz,
        });
    }
    out
}

/// A three-image chain with real files, gzip and plain layers.
pub fn sample_chain(tag: &str) -> Vec<Image> {
    let motd = format!("hello from v1 {tag}\n");
    chain(&[
        (
            &[
                ("etc/base.txt", b"base layer\n" as &[u8]),
                ("bin/tool", &[7u8; 3000]),
            ],
            true,
            "#(nop) ADD base",
        ),
        (&[("etc/motd", motd.as_bytes())], false, "echo motd"),
        (
            &[("usr/share/doc/readme", b"read me\n" as &[u8])],
            true,
            "#(nop) ADD doc",
        ),
    ])
}

/// Pushes a chain as an old docker client does: `PUT` the repository
/// (asking for a token), each image's JSON, layer (chunked) and checksum,
/// the tag, and the final image list. `login` is the first request's
/// `Authorization` (Basic), none on a hub without accounts. Returns the
/// session's `Authorization: Token ...` value.
pub fn v1_push(c: &V1, login: Option<&str>, repo: &str, images: &[Image], tag: &str) -> String {
    let list: Vec<Value> = images.iter().map(|i| json!({"id": i.id})).collect();
    let r = c.send(
        "PUT",
        &format!("/v1/repositories/{repo}/"),
        login,
        &[
            ("X-Docker-Token", "true"),
            ("Content-Type", "application/json"),
        ],
        Payload::Bytes(Value::Array(list).to_string().into_bytes()),
    );
    expect_done(&r);
    let token = format!("Token {}", r.header("x-docker-token"));
    assert!(token.starts_with("Token signature="), "{}", r.describe());
    assert_eq!(r.header("x-docker-endpoints"), c.addr, "{}", r.describe());
    let auth = Some(token.as_str());
    for img in images {
        if c.get(&format!("/v1/images/{}/json", img.id), auth).status == 200 {
            continue;
        }
        let r = c.send(
            "PUT",
            &format!("/v1/images/{}/json", img.id),
            auth,
            &[("Content-Type", "application/json")],
            Payload::Bytes(img.json.clone()),
        );
        if r.status == 409 {
            continue;
        }
        expect_done(&r);
        let r = c.send(
            "PUT",
            &format!("/v1/images/{}/layer", img.id),
            auth,
            &[("Content-Type", "application/octet-stream")],
            Payload::Chunked(img.blob.clone()),
        );
        expect_done(&r);
        let r = c.send(
            "PUT",
            &format!("/v1/images/{}/checksum", img.id),
            auth,
            &[
                ("X-Docker-Checksum", "tarsum+sha256:unused"),
                ("X-Docker-Checksum-Payload", &img.checksum()),
            ],
            Payload::None,
        );
        expect_done(&r);
    }
    let top = images.last().unwrap();
    let r = c.put_json(
        &format!("/v1/repositories/{repo}/tags/{tag}"),
        auth,
        &json!(top.id),
    );
    expect_done(&r);
    let list: Vec<Value> = images
        .iter()
        .map(|i| json!({"id": i.id, "checksum": i.checksum()}))
        .collect();
    let r = c.send(
        "PUT",
        &format!("/v1/repositories/{repo}/images"),
        auth,
        &[
            ("X-Docker-Token", "true"),
            ("Content-Type", "application/json"),
        ],
        Payload::Bytes(Value::Array(list).to_string().into_bytes()),
    );
    assert_eq!(r.status, 204, "{}", r.describe());
    token
}

/// Pulls a tag over v2 and checks it is the chain: a schema 2 manifest
/// naming the layers as pushed, a config whose `diff_ids` are the digests
/// of the uncompressed tars. Returns the manifest digest.
pub fn check_v2_image(
    c: &V1,
    auth: Option<&str>,
    repo: &str,
    tag: &str,
    images: &[Image],
) -> String {
    let r = c.send(
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        auth,
        &[("Accept", DOCKER_MANIFEST)],
        Payload::None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.header("content-type"), DOCKER_MANIFEST);
    let digest = r.header("docker-content-digest");
    assert_eq!(digest, sha256(&r.body));
    let m = r.json();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], DOCKER_MANIFEST);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), images.len(), "{m}");
    for (l, img) in layers.iter().zip(images) {
        assert_eq!(l["digest"], sha256(&img.blob), "{m}");
        assert_eq!(l["size"], img.blob.len(), "{m}");
        assert_eq!(
            l["mediaType"],
            if img.gzip { GZIP_LAYER } else { TAR_LAYER },
            "{m}"
        );
        let b = c.get(
            &format!("/v2/{repo}/blobs/{}", l["digest"].as_str().unwrap()),
            auth,
        );
        assert_eq!(b.status, 200, "{}", b.describe());
        assert!(b.body == img.blob, "layer bytes differ");
    }
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    let cfg = c.get(
        &format!(
            "/v2/{repo}/blobs/{}",
            m["config"]["digest"].as_str().unwrap()
        ),
        auth,
    );
    assert_eq!(cfg.status, 200, "{}", cfg.describe());
    assert_eq!(m["config"]["digest"], sha256(&cfg.body));
    assert_eq!(m["config"]["size"], cfg.body.len());
    let config = cfg.json();
    let diff_ids: Vec<String> = images.iter().map(|i| sha256(&i.tar)).collect();
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"], json!(diff_ids), "{config}");
    assert_eq!(config["history"].as_array().unwrap().len(), images.len());
    let top: Value = serde_json::from_slice(&images.last().unwrap().json).unwrap();
    assert_eq!(config["config"], top["config"]);
    assert_eq!(config["created"], top["created"]);
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["docker_version"], "1.6.2");
    for (h, img) in config["history"].as_array().unwrap().iter().zip(images) {
        let j: Value = serde_json::from_slice(&img.json).unwrap();
        let cmd: Vec<&str> = j["container_config"]["Cmd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(h["created_by"], cmd.join(" "));
        assert_eq!(h["created"], j["created"]);
    }
    digest
}

/// A v1 image as a v1 pull reads it: JSON (with its headers checked against
/// the layer) and layer.
pub struct Pulled {
    pub id: String,
    pub json: Value,
    pub raw_json: Vec<u8>,
    pub layer: Vec<u8>,
    pub checksum: String,
}

/// Reads an image's ancestry and every image of it over v1, checking the
/// checksum and size headers against what was read.
pub fn v1_pull(c: &V1, auth: Option<&str>, id: &str) -> Vec<Pulled> {
    let r = c.get(&format!("/v1/images/{id}/ancestry"), auth);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.header("content-type"), "application/json");
    let ancestry: Vec<String> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(ancestry[0], id);
    let mut out = Vec::new();
    for (i, aid) in ancestry.iter().enumerate() {
        let j = c.get(&format!("/v1/images/{aid}/json"), auth);
        assert_eq!(j.status, 200, "{}", j.describe());
        let json: Value = j.json();
        assert_eq!(json["id"], *aid);
        match ancestry.get(i + 1) {
            Some(p) => assert_eq!(json["parent"], *p),
            None => assert!(json.get("parent").is_none_or(Value::is_null), "{json}"),
        }
        let l = c.get(&format!("/v1/images/{aid}/layer"), auth);
        assert_eq!(l.status, 200, "{}", l.describe());
        assert_eq!(l.header("content-type"), "application/octet-stream");
        assert_eq!(j.header("x-docker-size"), l.body.len().to_string());
        let mut payload = j.body.clone();
        payload.push(b'\n');
        payload.extend_from_slice(&l.body);
        let checksum = j.header("x-docker-checksum-payload");
        assert_eq!(checksum, sha256(&payload), "checksum of {aid}");
        out.push(Pulled {
            id: aid.clone(),
            json,
            raw_json: j.body.clone(),
            layer: l.body,
            checksum,
        });
    }
    out
}

/// Decompresses a gzip layer (or returns a plain one).
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut out).unwrap();
        out
    } else {
        data.to_vec()
    }
}
