//! A swarm on loopback for the tests and the benchmark: one hub (`dockyard
//! web` with `[p2p]` on) and host agents (`dockyard agent`), each agent on
//! an address of its own in 127.0.0.0/8, all started by the caller and
//! killed when dropped (and with the caller's process: PR_SET_PDEATHSIG).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

pub const ADMIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "swarm-admin-pw-1";

pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn pdeathsig(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Spawns `cmd`, waits for its `listening on http://ADDR` line.
fn spawn_listening(mut cmd: Command, what: &str, log: &Path) -> (Child, String) {
    let log_file = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::piped()).stderr(log_file);
    pdeathsig(&mut cmd);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(url) = line.strip_prefix("listening on http://") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not start listening within 30 s:\n{}",
                tail(log, 40)
            );
        }
    }
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub struct HubOptions {
    /// Accounts on (`standalone = false`, admin account, token service).
    pub auth: bool,
    /// `[p2p]` on.
    pub p2p: bool,
    /// Piece size of the hub's piece tables (None: the hub's default).
    pub piece_size: Option<u32>,
    /// A network namespace of its own (None: 127.0.0.1 here).
    pub host: Option<Host>,
}

/// A host of its own for a hub or an agent: a network namespace `ns`
/// (under /run/netns) where the process listens on `ip`.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ip: String,
}

/// `program` as a command, run in `host`'s network namespace if any.
fn command_on(host: Option<&Host>, program: &str) -> Command {
    match host {
        Some(h) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &h.ns, program]);
            c
        }
        None => Command::new(program),
    }
}

pub struct Hub {
    child: Option<Child>,
    pub addr: String,
    pub base: String,
    pub dir: tempfile::TempDir,
    pub auth: bool,
}

impl Hub {
    pub fn start(opts: HubOptions) -> Hub {
        let dir = tempfile::Builder::new()
            .prefix("dockyard-swarm-hub-")
            .tempdir()
            .unwrap();
        let d = dir.path().display().to_string();
        let mut toml = format!(
            "runmode = \"prod\"\n[log]\nlevel = \"warn\"\n[dockyard]\npath = \"{d}/data\"\n"
        );
        if opts.auth {
            toml.push_str(&format!(
                "standalone = false\n[auth_server]\nprivateKey = \"{d}/cert/token.key\"\n\
                 admin = \"{ADMIN}\"\nadmin_password = \"{ADMIN_PASSWORD}\"\n\
                 [token]\nrootcertbundle = \"{d}/cert/token.crt\"\n"
            ));
        } else {
            toml.push_str(&format!(
                "standalone = true\n[auth_server]\nprivateKey = \"{d}/cert/token.key\"\n\
                 [token]\nrootcertbundle = \"{d}/cert/token.crt\"\n"
            ));
        }
        let (listen_ip, p2p_ip) = match &opts.host {
            Some(h) => (h.ip.as_str(), h.ip.as_str()),
            None => ("127.0.0.1", "127.0.0.2"),
        };
        if opts.p2p {
            toml.push_str(&format!(
                "[p2p]\nenabled = true\nlisten = \"/ip4/{p2p_ip}/tcp/0\"\n"
            ));
            if let Some(p) = opts.piece_size {
                toml.push_str(&format!("piece_size = {p}\n"));
            }
        }
        let config = dir.path().join("runtime.toml");
        std::fs::write(&config, toml).unwrap();
        let mut cmd = command_on(opts.host.as_ref(), env!("CARGO_BIN_EXE_dockyard"));
        cmd.args(["web", "--address", listen_ip, "--port", "0", "--config"])
            .arg(&config);
        let (child, addr) = spawn_listening(cmd, "hub", &dir.path().join("hub.log"));
        Hub {
            child: Some(child),
            base: format!("http://{addr}"),
            addr,
            dir,
            auth: opts.auth,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("hub.log"), 40)
    }

    /// CPU seconds (user + system) the hub process has used.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.as_ref().unwrap().id())
    }

    /// A bearer token of the admin for `scope` (or None without accounts).
    pub fn token(&self, scope: &str) -> Option<String> {
        if !self.auth {
            return None;
        }
        let r = http()
            .get(self.url(&format!(
                "/uam/auth?service=dockyard&scope={}",
                scope.replace(':', "%3A").replace(',', "%2C").replace('/', "%2F")
            )))
            .basic_auth(ADMIN, Some(ADMIN_PASSWORD))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "token service");
        let v: serde_json::Value = r.json().unwrap();
        Some(v["token"].as_str().unwrap().to_string())
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        metrics(&self.url("/metrics"))
    }

    /// Blob bytes the hub's storage served: over HTTP and to peers.
    pub fn storage_bytes_served(&self) -> f64 {
        let m = self.metrics();
        m.iter()
            .filter(|(k, _)| {
                k.as_str() == "dockyard_blob_bytes_served_total"
                    || k.as_str() == "dockyard_p2p_bytes_served_to_peers_total"
            })
            .map(|(_, v)| v)
            .sum()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// A Prometheus text endpoint as name → value (labels kept in the name).
pub fn metrics(url: &str) -> HashMap<String, f64> {
    let text = http().get(url).send().unwrap().text().unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

pub struct Agent {
    child: Option<Child>,
    pub index: u8,
    /// `127.0.0.N:PORT`
    pub addr: String,
    pub dir: tempfile::TempDir,
}

impl Agent {
    /// Agent number `index` (1..) of the swarm of `hub`, on 127.0.0.(10+index).
    pub fn start(hub: &Hub, index: u8, cache_size: &str) -> Agent {
        Agent::start_on(hub, index, cache_size, None)
    }

    /// The same on `host` if given.
    pub fn start_on(hub: &Hub, index: u8, cache_size: &str, host: Option<&Host>) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("dockyard-swarm-agent-")
            .tempdir()
            .unwrap();
        let ip = match host {
            Some(h) => h.ip.clone(),
            None => format!("127.0.0.{}", 10 + index),
        };
        let mut cmd = command_on(host, env!("CARGO_BIN_EXE_dockyard"));
        cmd.arg("agent")
            .args(["--hub", &hub.base])
            .args(["--listen", &format!("{ip}:0")])
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--cache-size", cache_size])
            .args(["--p2p-listen", &format!("/ip4/{ip}/tcp/0")])
            .args(["--log", "info,libp2p=warn"]);
        let (child, addr) = spawn_listening(
            cmd,
            &format!("agent {index}"),
            &dir.path().join("agent.log"),
        );
        Agent {
            child: Some(child),
            index,
            addr,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn metrics(&self) -> HashMap<String, f64> {
        metrics(&self.url("/metrics"))
    }

    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .get(&format!("dockyard_agent_{name}"))
            .copied()
            .unwrap_or_else(|| panic!("agent {} has no metric {name}", self.index))
    }

    /// `/ip4/.../tcp/.../p2p/<id>` of the agent's node.
    pub fn p2p_addr(&self) -> String {
        let v: serde_json::Value = http()
            .get(self.url("/_p2p/info"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = v["peer"]["id"].as_str().unwrap();
        let addr = v["peer"]["addrs"][0].as_str().unwrap();
        format!("{addr}/p2p/{id}")
    }

    /// The cached file of `digest`, if any.
    pub fn cached_file(&self, digest: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/cache/blobs")
            .join(digest.replace(':', "-"))
    }

    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("agent.log"), 40)
    }

    /// CPU seconds (user + system) the agent process has used.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.pid())
    }

    /// Peak resident set (VmHWM) in KiB, while running.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Pushes blobs and manifests to a hub over HTTP.
pub struct Pusher<'a> {
    pub hub: &'a Hub,
    pub repo: String,
    token: Option<String>,
}

impl<'a> Pusher<'a> {
    pub fn new(hub: &'a Hub, repo: &str) -> Pusher<'a> {
        Pusher {
            hub,
            repo: repo.to_string(),
            token: hub.token(&format!("repository:{repo}:pull,push")),
        }
    }

    fn auth(&self, r: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Pushes `body` (of `len` bytes, digest `digest`) in one PUT.
    pub fn blob_from(&self, digest: &str, body: reqwest::blocking::Body) {
        let h = http();
        let r = self
            .auth(h.post(self.hub.url(&format!("/v2/{}/blobs/uploads/", self.repo))))
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "start upload: {:?}", r.text());
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with('/') {
            self.hub.url(&loc)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .auth(h.put(format!("{loc}{sep}digest={digest}")))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "finish upload: {:?}", r.text());
    }

    pub fn blob(&self, data: &[u8]) -> String {
        let d = sha256_digest(data);
        self.blob_from(&d, reqwest::blocking::Body::from(data.to_vec()));
        d
    }

    pub fn manifest(&self, tag: &str, media_type: &str, body: &[u8]) -> String {
        let r = self
            .auth(http().put(self.hub.url(&format!("/v2/{}/manifests/{tag}", self.repo))))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 201, "manifest push: {:?}", r.text());
        sha256_digest(body)
    }
}

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A layer: a gzip'd tar with one file.
pub struct Layer {
    pub gz: Vec<u8>,
    pub diff_id: String,
    pub path: String,
    pub content: Vec<u8>,
}

pub fn layer(path: &str, content: Vec<u8>) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    tar.append_data(&mut h, path, &content[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    Layer {
        gz: gz.finish().unwrap(),
        diff_id,
        path: path.to_string(),
        content,
    }
}

pub struct Image {
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

/// Pushes a Docker schema 2 image of `layers` as `repo:tag`.
pub fn push_image(p: &Pusher<'_>, tag: &str, layers: &[Layer]) -> Image {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/nothing"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    })
    .to_string();
    let config_digest = p.blob(config.as_bytes());
    let mut layer_digests = Vec::new();
    for l in layers {
        layer_digests.push(p.blob(&l.gz));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest},
        "layers": layers.iter().zip(&layer_digests).map(|(l, d)| serde_json::json!({
            "mediaType": DOCKER_LAYER, "size": l.gz.len(), "digest": d
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = p.manifest(tag, DOCKER_MANIFEST, manifest.as_bytes());
    Image {
        manifest_digest,
        config_digest,
        layer_digests,
    }
}

/// GETs `url` (with an optional bearer token) and returns (status, sha256
/// digest of the body, bytes).
pub fn fetch_digest(url: &str, token: Option<&str>) -> (u16, String, u64) {
    let mut r = http().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let mut resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) => panic!("reading {url}: {e} after {n} bytes"),
        }
    }
    (status, format!("sha256:{}", hex::encode(h.finalize())), n)
}

/// Waits until `cond` holds (polling), or panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// User plus system CPU seconds of process `pid` (all its threads), from
/// `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15, i.e. 11 and 12 here.
    (ticks(11) + ticks(12)) as f64 / clock_ticks_per_sec()
}

/// The unit of the CPU times in `/proc`.
pub fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}
