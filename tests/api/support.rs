//! Helpers for the black-box API tests: a blocking HTTP client bound to one
//! `dockyard` process, response checks that every v2 answer must pass,
//! digests, deterministic test data and manifest builders.
#![allow(dead_code)]

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Body, Client, RequestBuilder};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256, Sha512};

use crate::common::Server;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub const MIB: u64 = 1024 * 1024;

/// The `code` values the OCI distribution spec v1.1 allows ("The `code`
/// field MUST be one of the following", Error Codes table).
pub const SPEC_ERROR_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// A running registry and a client for it.
pub struct Api {
    pub srv: Server,
    pub http: Client,
}

/// A response, fully read.
pub struct R {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(300))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

impl Api {
    pub fn start() -> Api {
        Api::with(Server::start())
    }

    pub fn start_with(extra: &str) -> Api {
        Api::with(Server::start_with(extra))
    }

    pub fn with(srv: Server) -> Api {
        Api {
            srv,
            http: client(),
        }
    }

    /// Drops pooled connections: the next requests use a new client.
    pub fn new_client(&mut self) {
        self.http = client();
    }

    /// `path` is either a path on the server (`/v2/...`) or an absolute URL.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            self.srv.url(path)
        }
    }

    pub fn req(&self, method: &str, path: &str) -> RequestBuilder {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.http.request(m, self.url(path))
    }

    pub fn get(&self, path: &str) -> R {
        self.send(self.req("GET", path))
    }

    pub fn head(&self, path: &str) -> R {
        self.send(self.req("HEAD", path))
    }

    pub fn delete(&self, path: &str) -> R {
        self.send(self.req("DELETE", path))
    }

    pub fn send(&self, rb: RequestBuilder) -> R {
        let req = rb.build().expect("request");
        let what = format!("{} {}", req.method(), req.url());
        let is_v2 = req.url().path() == "/v2" || req.url().path().starts_with("/v2/");
        let mut resp = self
            .http
            .execute(req)
            .unwrap_or_else(|e| panic!("{what}: request failed: {e:?}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        resp.read_to_end(&mut body)
            .unwrap_or_else(|e| panic!("{what}: reading the body failed: {e}"));
        let r = R {
            what,
            status,
            headers,
            body,
        };
        if is_v2 {
            r.check_v2_invariants();
        }
        r
    }

    // ---- blobs -------------------------------------------------------

    /// Single-request upload (`POST ?digest=`); asserts 201.
    pub fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let r = self.send(
            self.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
                .header("Content-Type", "application/octet-stream")
                .body(data.to_vec()),
        );
        r.expect_status(201, "end-4b: a single POST with ?digest= creates the blob");
        d
    }

    /// `POST` a new upload session; asserts 202 and returns its Location.
    pub fn start_upload(&self, repo: &str) -> String {
        let r = self.send(self.req("POST", &format!("/v2/{repo}/blobs/uploads/")));
        r.expect_status(
            202,
            "end-4a: POST /v2/<name>/blobs/uploads/ opens a session",
        );
        r.location()
    }

    /// POST then PUT with the whole blob; asserts 201.
    pub fn push_blob_post_put(&self, repo: &str, data: &[u8]) -> String {
        let d = sha256(data);
        let loc = self.start_upload(repo);
        let r = self.send(
            self.req("PUT", &with_query(&loc, &format!("digest={d}")))
                .header("Content-Type", "application/octet-stream")
                .body(data.to_vec()),
        );
        r.expect_status(201, "end-6: PUT <location>?digest= closes the session");
        d
    }

    pub fn patch_chunk(&self, loc: &str, start: u64, data: &[u8]) -> R {
        let end = start + data.len() as u64 - 1;
        self.send(
            self.req("PATCH", loc)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{start}-{end}"))
                .body(data.to_vec()),
        )
    }

    pub fn put_upload(&self, loc: &str, digest: &str, body: Option<(u64, &[u8])>) -> R {
        let mut rb = self.req("PUT", &with_query(loc, &format!("digest={digest}")));
        if let Some((start, data)) = body {
            let end = start + data.len() as u64 - 1;
            rb = rb
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{start}-{end}"))
                .body(data.to_vec());
        }
        self.send(rb)
    }

    /// Asserts that `repo` serves exactly `data` under `digest`.
    pub fn expect_blob(&self, repo: &str, digest: &str, data: &[u8], why: &str) {
        let r = self.get(&format!("/v2/{repo}/blobs/{digest}"));
        r.expect_status(200, why);
        assert!(
            r.body == data,
            "{why}: {} returned {} bytes that differ from the {} pushed",
            r.what,
            r.body.len(),
            data.len()
        );
    }

    // ---- manifests ---------------------------------------------------

    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> R {
        self.send(
            self.req("PUT", &format!("/v2/{repo}/manifests/{reference}"))
                .header("Content-Type", media_type)
                .body(body.to_vec()),
        )
    }

    /// PUT, asserting 201; returns the manifest's sha256 digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let r = self.put_manifest(repo, reference, media_type, body);
        r.expect_status(201, "end-7: a valid manifest push answers 201 Created");
        sha256(body)
    }

    /// Pushes a config blob and one layer blob to `repo`; returns their
    /// descriptors with the given media types.
    pub fn push_image_blobs(
        &self,
        repo: &str,
        config_mt: &str,
        layer_mt: &str,
        salt: &str,
    ) -> (Value, Value) {
        let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"salt\":\"{salt}\"}}");
        let layer = format!("layer data for {salt}").repeat(7);
        let cd = self.push_blob(repo, config.as_bytes());
        let ld = self.push_blob(repo, layer.as_bytes());
        (
            desc(config_mt, &cd, config.len()),
            desc(layer_mt, &ld, layer.len()),
        )
    }

    /// An OCI image manifest whose blobs are in `repo`.
    pub fn oci_image(&self, repo: &str, salt: &str) -> Vec<u8> {
        let (c, l) = self.push_image_blobs(repo, OCI_CONFIG, OCI_LAYER, salt);
        to_vec(&oci_manifest(c, vec![l], json!({})))
    }

    /// A Docker schema 2 manifest whose blobs are in `repo`.
    pub fn docker_image(&self, repo: &str, salt: &str) -> Vec<u8> {
        let (c, l) = self.push_image_blobs(repo, DOCKER_CONFIG, DOCKER_LAYER, salt);
        to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": c,
            "layers": [l],
        }))
    }
}

// ---- response checks --------------------------------------------------

impl R {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(600)]).into_owned()
    }

    pub fn describe(&self) -> String {
        let mut hs: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("<binary>")))
            .collect();
        hs.sort();
        format!(
            "{} -> {}\n  headers: {}\n  body: {}",
            self.what,
            self.status,
            hs.join(" | "),
            self.text()
        )
    }

    pub fn expect_status(&self, status: u16, why: &str) {
        assert_eq!(
            self.status,
            status,
            "{why}\n  expected status {status}; got:\n  {}",
            self.describe()
        );
    }

    /// Status and the first error `code` of the spec's JSON error body.
    pub fn expect_error(&self, status: u16, code: &str, why: &str) {
        self.expect_status(status, why);
        let codes = self.error_codes();
        assert!(
            codes.iter().any(|c| c == code),
            "{why}\n  expected error code {code}; got codes {codes:?} in:\n  {}",
            self.describe()
        );
    }

    /// Every `errors[].code` of a JSON error body (empty if none).
    pub fn error_codes(&self) -> Vec<String> {
        let Ok(v) = serde_json::from_slice::<Value>(&self.body) else {
            return Vec::new();
        };
        v["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["code"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: body is not JSON ({e}):\n  {}",
                self.what,
                self.describe()
            )
        })
    }

    pub fn location(&self) -> String {
        self.header("Location")
            .unwrap_or_else(|| {
                panic!(
                    "spec: this response MUST carry a Location header:\n  {}",
                    self.describe()
                )
            })
            .to_string()
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("Content-Length").and_then(|v| v.parse().ok())
    }

    /// What every answer under /v2 must satisfy.
    fn check_v2_invariants(&self) {
        assert_eq!(
            self.header("Docker-Distribution-API-Version"),
            Some("registry/2.0"),
            "Docker registry API v2: every /v2 response, errors included, carries \
             `Docker-Distribution-API-Version: registry/2.0`:\n  {}",
            self.describe()
        );
        // Error bodies that are JSON must have the spec's shape.
        if self.status >= 400
            && let Ok(v) = serde_json::from_slice::<Value>(&self.body)
        {
            let errors = v["errors"].as_array().unwrap_or_else(|| {
                panic!(
                    "spec (Error Codes): a JSON 4xx body MUST be {{\"errors\":[...]}}:\n  {}",
                    self.describe()
                )
            });
            for e in errors {
                let code = e["code"].as_str().unwrap_or_default();
                assert!(
                    !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                    "spec (Error Codes): `code` MUST contain only uppercase letters and underscores:\n  {}",
                    self.describe()
                );
            }
        }
    }
}

// ---- digests, data, descriptors -----------------------------------------

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// Appends `q` to a URL that may already carry a query.
pub fn with_query(loc: &str, q: &str) -> String {
    if loc.contains('?') {
        format!("{loc}&{q}")
    } else {
        format!("{loc}?{q}")
    }
}

pub fn desc(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// An OCI image manifest; `extra`'s fields are merged in.
pub fn oci_manifest(config: Value, layers: Vec<Value>, extra: Value) -> Value {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    if let (Some(m), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

pub fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

/// Deterministic, position-addressable test data: byte `i` of stream
/// `seed` is a function of `(seed, i)` alone, so any range can be
/// regenerated for comparison without keeping the data.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let word = splitmix(seed.wrapping_mul(0x9e37_79b9).wrapping_add(pos / 8)).to_le_bytes();
        let from = (pos % 8) as usize;
        let n = (8 - from).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&word[from..from + n]);
        i += n;
        pos += n as u64;
    }
}

pub fn gen_data(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(seed, offset, &mut v);
    v
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A request body of `len` generated bytes, produced on the fly and hashed
/// as it is read (so nothing holds the whole blob). `hasher()` yields the
/// digest of what was read.
pub struct GenReader {
    seed: u64,
    pos: u64,
    end: u64,
    hasher: Arc<Mutex<Sha256>>,
}

impl GenReader {
    pub fn new(seed: u64, start: u64, len: u64) -> GenReader {
        GenReader {
            seed,
            pos: start,
            end: start + len,
            hasher: Arc::new(Mutex::new(Sha256::new())),
        }
    }

    pub fn with_hasher(mut self, hasher: Arc<Mutex<Sha256>>) -> GenReader {
        self.hasher = hasher;
        self
    }

    pub fn hasher(&self) -> Arc<Mutex<Sha256>> {
        self.hasher.clone()
    }
}

impl Read for GenReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = ((self.end - self.pos) as usize).min(buf.len());
        if n == 0 {
            return Ok(0);
        }
        fill(self.seed, self.pos, &mut buf[..n]);
        self.hasher.lock().unwrap().update(&buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// A streamed body (no Content-Length: chunked transfer encoding).
pub fn streamed(data: Vec<u8>) -> Body {
    Body::new(std::io::Cursor::new(data))
}

pub fn finish(h: &Arc<Mutex<Sha256>>) -> String {
    let h = h.lock().unwrap().clone();
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Files (not directories) under `dir`, recursively.
pub fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// Parses `Link: <url>; rel="next"`, returning the URL.
pub fn next_link(r: &R) -> Option<String> {
    let v = r.header("Link")?;
    let (url, params) = v.split_once(';')?;
    assert!(
        params.replace(' ', "").contains("rel=\"next\""),
        "spec (Listing Tags): the Link header MUST use rel=\"next\" (RFC 5988): {v}"
    );
    let url = url.trim();
    assert!(
        url.starts_with('<') && url.ends_with('>'),
        "RFC 5988: the Link target is enclosed in angle brackets: {v}"
    );
    Some(url[1..url.len() - 1].to_string())
}

/// A raw HTTP/1.1 request whose body is written from another thread while
/// this one reads the answer (as Go's net/http, i.e. docker and
/// containerd, does). Returns the status code and the response head, or
/// what went wrong before a status line arrived.
pub fn raw_request(
    addr: &str,
    head: &str,
    body: Vec<u8>,
    chunked: bool,
) -> Result<(u16, String), String> {
    use std::io::Write;
    use std::net::TcpStream;
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let head = head.to_string();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        w.write_all(head.as_bytes())?;
        if chunked {
            for part in body.chunks(64 * 1024) {
                write!(w, "{:x}\r\n", part.len())?;
                w.write_all(part)?;
                w.write_all(b"\r\n")?;
            }
            w.write_all(b"0\r\n\r\n")?;
        } else {
            w.write_all(&body)?;
        }
        w.flush()
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let result = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&got[..end]).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("no status line in {text:?}"));
            break status.map(|s| (s, text));
        }
        match stream.read(&mut buf) {
            Ok(0) => {
                break Err(format!(
                    "connection closed before a full response head ({} bytes read)",
                    got.len()
                ));
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                break Err(format!(
                    "reading the response failed: {e} ({} bytes read)",
                    got.len()
                ));
            }
        }
    };
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    result
}
