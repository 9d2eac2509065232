//! Shared helpers for the real-client tests: the registry under test (a real
//! `dockyard web`, or the reference `docker-registry` for comparison),
//! running external tools with a time limit, and checking what a registry
//! serves over plain HTTP.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common;

pub const INSTALL_HINT: &str =
    "run `sh packaging/install-test-deps.sh` as root to install the test prerequisites";

/// Accept header listing every manifest type a client would accept.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

// ---------------------------------------------------------------------------
// The registry under test
// ---------------------------------------------------------------------------

/// The registry a test talks to. Normally a fresh `dockyard web`
/// (`common::Server`); with `DYTEST_CLIENTS_REGISTRY=reference` the
/// reference implementation (`/usr/bin/docker-registry`) instead, to check
/// that a failure is the server's and not the test's.
pub struct Registry {
    kind: Kind,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

enum Kind {
    Dockyard(common::Server),
    Reference(Reference),
}

impl Registry {
    pub fn start() -> Registry {
        match std::env::var("DYTEST_CLIENTS_REGISTRY").as_deref() {
            Err(_) | Ok("") | Ok("dockyard") => {
                let server = common::Server::start();
                let addr = server.addr.clone();
                let base = server.base.clone();
                Registry {
                    kind: Kind::Dockyard(server),
                    addr,
                    base,
                }
            }
            Ok("reference") => {
                let reference = Reference::start();
                let addr = reference.addr.clone();
                Registry {
                    base: format!("http://{addr}"),
                    kind: Kind::Reference(reference),
                    addr,
                }
            }
            Ok(other) => {
                panic!("DYTEST_CLIENTS_REGISTRY={other}: expected `dockyard` or `reference`")
            }
        }
    }

    /// Kills the registry (no clean shutdown) and starts it again on the
    /// same port and data.
    pub fn restart(&mut self) {
        match &mut self.kind {
            Kind::Dockyard(server) => {
                server.restart();
                assert_eq!(server.addr, self.addr, "restart must keep the address");
            }
            Kind::Reference(reference) => reference.restart(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn is_reference(&self) -> bool {
        matches!(self.kind, Kind::Reference(_))
    }
}

/// `/usr/bin/docker-registry serve CONFIG` with filesystem storage in a
/// temp dir, deletes enabled and a fixed upload-state secret (so uploads
/// survive a restart).
struct Reference {
    child: Option<Child>,
    bin: PathBuf,
    addr: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Reference {
    fn start() -> Reference {
        let bin = require_tool("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("dockyard-ref-")
            .tempdir()
            .expect("temp dir");
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n  secret: dockyard-clients-test-secret\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write config");
        let mut r = Reference {
            child: None,
            bin,
            addr,
            config,
            _dir: dir,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// External tools
// ---------------------------------------------------------------------------

/// The path of `tool` on PATH (or `tool` itself when absolute); panics with
/// the install hint when it is missing, so that CI never skips silently.
pub fn require_tool(tool: &str) -> PathBuf {
    let candidate = Path::new(tool);
    if candidate.is_absolute() {
        if is_executable(candidate) {
            return candidate.to_path_buf();
        }
    } else if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(tool);
            if is_executable(&p) {
                return p;
            }
        }
        for dir in ["/usr/sbin", "/sbin", "/usr/local/sbin"] {
            let p = Path::new(dir).join(tool);
            if is_executable(&p) {
                return p;
            }
        }
    }
    panic!("required tool `{tool}` is not installed: {INSTALL_HINT}");
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A command with the proxy variables removed: everything these tests send
/// goes to loopback.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost");
    cmd
}

pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Runs `cmd` to completion (killing it after `limit`), capturing both
/// streams.
pub fn run_capture(cmd: &mut Command, limit: Duration) -> Output {
    let shown = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e} ({INSTALL_HINT})"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
            let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
            panic!(
                "`{shown}` did not finish within {limit:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `cmd`, panics with its output unless it succeeds; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    run_output(cmd).stdout
}

/// Runs `cmd`, panics with its output unless it succeeds.
pub fn run_output(cmd: &mut Command) -> Output {
    let shown = describe(cmd);
    let out = run_capture(cmd, Duration::from_secs(180));
    if !out.success() {
        panic!(
            "`{shown}` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
            out.status, out.stdout, out.stderr
        );
    }
    out
}

/// Runs `cmd` and panics if it succeeds; returns stdout + stderr.
pub fn run_expect_failure(cmd: &mut Command) -> String {
    let shown = describe(cmd);
    let out = run_capture(cmd, Duration::from_secs(180));
    if out.success() {
        panic!(
            "`{shown}` succeeded but should have failed\n--- stdout\n{}\n--- stderr\n{}",
            out.stdout, out.stderr
        );
    }
    format!("{}{}", out.stdout, out.stderr)
}

pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

// ---------------------------------------------------------------------------
// Data and digests
// ---------------------------------------------------------------------------

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// `len` incompressible bytes, the same for the same seed.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A test-unique suffix for tags and names (tests in one binary share the
/// dockerd and may run at the same time).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// Plain HTTP checks against the registry
// ---------------------------------------------------------------------------

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

pub struct Manifest {
    pub media_type: String,
    pub digest: String,
    pub body: Vec<u8>,
    pub json: serde_json::Value,
}

/// GET `/v2/REPO/manifests/REFERENCE`, checking status 200 and that the
/// body hashes to `Docker-Content-Digest` (and to REFERENCE if it is a
/// digest).
pub fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> Manifest {
    let url = reg.url(&format!("/v2/{repo}/manifests/{reference}"));
    let resp = http()
        .get(&url)
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().expect("manifest body").to_vec();
    assert_eq!(status, 200, "GET {url}: {}", String::from_utf8_lossy(&body));
    let digest = sha256_digest(&body);
    let header_digest = headers
        .get("Docker-Content-Digest")
        .unwrap_or_else(|| panic!("GET {url}: no Docker-Content-Digest header"))
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        header_digest, digest,
        "GET {url}: Docker-Content-Digest does not match the body"
    );
    if reference.starts_with("sha256:") {
        assert_eq!(
            reference, digest,
            "GET {url}: body does not hash to the requested digest"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
    let content_type = headers
        .get("Content-Type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    if let Some(mt) = json.get("mediaType").and_then(|v| v.as_str()) {
        assert_eq!(
            content_type, mt,
            "GET {url}: Content-Type differs from the manifest's mediaType"
        );
    }
    Manifest {
        media_type: content_type,
        digest,
        body,
        json,
    }
}

/// GET a blob and check its size and digest; returns its bytes.
pub fn get_blob(reg: &Registry, repo: &str, digest: &str, size: Option<u64>) -> Vec<u8> {
    let url = reg.url(&format!("/v2/{repo}/blobs/{digest}"));
    let resp = http()
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp.bytes().expect("blob body").to_vec();
    assert_eq!(
        status,
        200,
        "GET {url}: {}",
        String::from_utf8_lossy(&body[..body.len().min(500)])
    );
    if let Some(size) = size {
        assert_eq!(body.len() as u64, size, "GET {url}: wrong length");
    }
    assert_eq!(
        sha256_digest(&body),
        digest,
        "GET {url}: content does not match its digest"
    );
    body
}

/// Walks the image (or index) at REPO:REFERENCE over HTTP and checks every
/// manifest, config and layer it references. Returns the top digest.
pub fn verify_image(reg: &Registry, repo: &str, reference: &str) -> String {
    let m = get_manifest(reg, repo, reference);
    verify_manifest_content(reg, repo, &m);
    m.digest
}

fn verify_manifest_content(reg: &Registry, repo: &str, m: &Manifest) {
    match m.media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let children = m.json["manifests"].as_array().expect("manifests");
            assert!(!children.is_empty(), "empty index");
            for child in children {
                let d = child["digest"].as_str().unwrap();
                let cm = get_manifest(reg, repo, d);
                assert_eq!(
                    cm.body.len() as u64,
                    child["size"].as_u64().unwrap(),
                    "child manifest size"
                );
                assert_eq!(
                    cm.media_type,
                    child["mediaType"].as_str().unwrap(),
                    "child manifest type"
                );
                verify_manifest_content(reg, repo, &cm);
            }
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let config = &m.json["config"];
            get_blob(
                reg,
                repo,
                config["digest"].as_str().unwrap(),
                config["size"].as_u64(),
            );
            for layer in m.json["layers"].as_array().expect("layers") {
                get_blob(
                    reg,
                    repo,
                    layer["digest"].as_str().unwrap(),
                    layer["size"].as_u64(),
                );
            }
        }
        other => panic!("unexpected manifest type {other:?}"),
    }
}

/// The status code of GET `/v2/REPO/manifests/REFERENCE`.
pub fn manifest_status(reg: &Registry, repo: &str, reference: &str) -> u16 {
    let url = reg.url(&format!("/v2/{repo}/manifests/{reference}"));
    http()
        .get(&url)
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}
