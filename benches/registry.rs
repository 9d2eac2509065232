//! Dockyard vs. the reference registry (distribution 2.8.2, `/usr/bin/docker-registry`).
//!
//! Starts both servers on loopback with data directories on the same disk,
//! runs the same workload against each in one run, and prints a table of
//! Dockyard/reference ratios against the targets. See `benches/README.md`.
//!
//! Run: `cargo bench --bench registry` (`BENCH_QUICK=1` for a reduced run,
//! `BENCH_SUBJECT=reference` to measure the reference against itself,
//! `BENCH_SUBJECT=rados` to measure Dockyard on Ceph RADOS against Dockyard
//! on local disk: the one-node Ceph of `packaging/services/ceph.sh`).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use futures_util::stream;
use reqwest::Url;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;
const REFERENCE_BIN: &str = "/usr/bin/docker-registry";
const WRK_BIN: &str = "/usr/bin/wrk";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const REPO: &str = "bench/app";
/// Chunk size of streamed request bodies.
const CHUNK: usize = 1 << 20;
/// Random bytes that streamed bodies are cut from (never the whole blob).
const POOL: usize = 16 << 20;
const SMALL_BLOB: usize = 4096;
/// Upper bound on any one request, so a wedged server cannot hang the bench.
const BIG_TIMEOUT: Duration = Duration::from_secs(900);
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Absolute limit on Dockyard's peak RSS after the huge push.
const HUGE_RSS_LIMIT_MIB: f64 = 64.0;

struct Config {
    quick: bool,
    small_pushes: usize,
    warmup_pushes: usize,
    wrk_secs: u64,
    big: u64,
    huge: u64,
    parallel: usize,
    rounds: usize,
    subject_is_reference: bool,
    /// Dockyard on RADOS against Dockyard on local disk.
    rados: bool,
    tmp_root: PathBuf,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let subject_is_reference = std::env::var("BENCH_SUBJECT").is_ok_and(|v| v == "reference");
        let rados = std::env::var("BENCH_SUBJECT").is_ok_and(|v| v == "rados");
        let tmp_root = std::env::var_os("BENCH_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                // /var/tmp is disk-backed on Debian; /tmp may be tmpfs.
                let var_tmp = PathBuf::from("/var/tmp");
                if var_tmp.is_dir() && !is_tmpfs(&var_tmp) {
                    var_tmp
                } else {
                    std::env::temp_dir()
                }
            });
        Config {
            quick,
            small_pushes: 300,
            warmup_pushes: 20,
            wrk_secs: if quick { 2 } else { 10 },
            big: if quick { 64 * MIB } else { 512 * MIB },
            huge: if quick { 256 * MIB } else { 2048 * MIB },
            parallel: 4,
            rounds: if quick { 1 } else { 3 },
            subject_is_reference,
            rados,
            tmp_root,
        }
    }
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

fn is_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    unsafe {
        let mut s: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut s) == 0 && s.f_type as i64 == TMPFS_MAGIC
    }
}

/// `(device, fstype)` of the mount holding `path`, from /proc/mounts.
fn mount_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        if path.starts_with(f[1]) && best.as_ref().is_none_or(|(l, _)| f[1].len() > *l) {
            best = Some((f[1].len(), format!("{} on {} ({})", f[0], f[1], f[2])));
        }
    }
    best.map(|b| b.1).unwrap_or_else(|| "?".into())
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn print_environment(cfg: &Config) {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = read("/proc/meminfo")
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .map_or(0, |v| v.parse::<u64>().unwrap_or(0) / 1024);
    println!("== environment");
    println!(
        "nproc {}, cpu {cpu}, mem {mem} MiB, kernel {}, loadavg {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        read("/proc/sys/kernel/osrelease").trim(),
        read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("reference: {}", first_line(REFERENCE_BIN, &["--version"]));
    println!("wrk: {}", first_line(WRK_BIN, &["-v"]));
    println!(
        "data dirs under {} ({})",
        cfg.tmp_root.display(),
        mount_of(&cfg.tmp_root)
    );
    if is_tmpfs(&cfg.tmp_root) {
        println!(
            "WARNING: {} is tmpfs; set BENCH_TMPDIR to a directory on a real disk",
            cfg.tmp_root.display()
        );
    }
    println!(
        "mode: {}{}; {} round(s), alternating servers; {} small pushes, wrk {} s, big blob {} MiB, huge blob {} MiB, {} parallel pulls",
        if cfg.quick { "QUICK" } else { "full" },
        if cfg.subject_is_reference {
            ", subject = a second reference instance (harness check)"
        } else {
            ""
        },
        cfg.rounds,
        cfg.small_pushes,
        cfg.wrk_secs,
        cfg.big / MIB,
        cfg.huge / MIB,
        cfg.parallel,
    );
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// A server process on a private temp dir. Dropping it kills the process
/// and then removes the directory (also on panic, by unwinding).
struct Server {
    label: &'static str,
    child: Child,
    base: Url,
    log: PathBuf,
    // Dropped after `Drop::drop` has killed the child.
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    fn alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "{} exited ({status}); log tail:\n{}",
                self.label,
                self.log_tail(20)
            )),
        }
    }

    fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `VmHWM` / `VmRSS` etc. in KiB from /proc/<pid>/status.
    fn status_kib(&self, key: &str) -> Result<u64> {
        proc_status_kib(self.pid(), key)
    }
}

fn proc_status_kib(pid: u32, key: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no {key} in /proc/{pid}/status"))
}

/// User + system CPU seconds the process has used so far.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / hz.max(1) as f64)
}

fn cpu_delta(pid: Option<u32>, before: Option<f64>) -> Option<f64> {
    Some(cpu_secs(pid?)? - before?)
}

fn spawn_child(cmd: &mut Command, log: &Path, stdout: Stdio) -> Result<Child> {
    let log_file = std::fs::File::create(log)?;
    // SAFETY: prctl is async-signal-safe. If the bench dies without unwinding
    // (SIGKILL), the server gets SIGKILL too instead of lingering.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))
}

fn server_dir(cfg: &Config, label: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("dockyard-bench-{label}-"))
        .tempdir_in(&cfg.tmp_root)
        .context("create temp dir")
}

/// The `[dockyard] backend` and `[rados]` keys of a Dockyard on the shared
/// one-node Ceph (started if need be), in a namespace of its own.
fn rados_config() -> Result<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let services = root.join("target/test-services");
    std::fs::create_dir_all(&services)?;
    let out = Command::new(root.join("packaging/services/ceph.sh"))
        .arg("start")
        .arg(&services)
        .arg("26789")
        .output()
        .context("packaging/services/ceph.sh")?;
    if !out.status.success() {
        bail!(
            "ceph.sh start failed (packaging/install-test-deps.sh installs Ceph): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let conf = String::from_utf8(out.stdout)?.trim().to_string();
    Ok(format!(
        "backend = \"rados\"\n[rados]\nconf = \"{conf}\"\npool = \"registry\"\nnamespace = \"bench-{}\"\n",
        seed()
    ))
}

fn start_dockyard(cfg: &Config, label: &'static str, extra: &str) -> Result<Server> {
    let dir = server_dir(cfg, label)?;
    let config = dir.path().join("runtime.toml");
    std::fs::write(
        &config,
        format!(
            "runmode = \"prod\"\n[log]\nlevel = \"warn\"\n[dockyard]\npath = \"{}\"\n{extra}",
            dir.path().join("data").display()
        ),
    )?;
    let log = dir.path().join("server.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockyard"));
    cmd.args(["web", "--address", "127.0.0.1", "--port", "0", "--config"])
        .arg(&config);
    let mut child = spawn_child(&mut cmd, &log, Stdio::piped())?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    // Keeps draining stdout after the address line so the server never blocks on it.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some(url) = line.trim().strip_prefix("listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let mut server = Server {
        label,
        child,
        base: Url::parse("http://127.0.0.1/")?,
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(url) => break url,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => server.alive()?,
            Err(_) => {
                server.alive()?;
                bail!(
                    "dockyard did not print `listening on` within 60 s; log tail:\n{}",
                    server.log_tail(20)
                );
            }
        }
    };
    server.base = Url::parse(&url).with_context(|| format!("bad listen URL {url:?}"))?;
    wait_ready(&mut server)?;
    Ok(server)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_reference(cfg: &Config, label: &'static str) -> Result<Server> {
    let mut last = anyhow!("not started");
    for _ in 0..3 {
        match try_start_reference(cfg, label) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn try_start_reference(cfg: &Config, label: &'static str) -> Result<Server> {
    let dir = server_dir(cfg, "reference")?;
    let port = free_port()?;
    let config = dir.path().join("config.yml");
    // Like /etc/docker/registry/config.yml, minus auth and the health check,
    // with logging at the level Dockyard runs at and no access log.
    std::fs::write(
        &config,
        format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  cache:\n    blobdescriptor: inmemory\n  \
             filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {secret:016x}\n  \
             headers:\n    X-Content-Type-Options: [nosniff]\n",
            dir.path().join("data").display(),
            // Only signs upload state between POST and PUT; set to silence a warning.
            secret = SplitMix(seed()).next(),
        ),
    )?;
    let log = dir.path().join("server.log");
    let mut cmd = Command::new(REFERENCE_BIN);
    cmd.arg("serve").arg(&config);
    let child = spawn_child(&mut cmd, &log, Stdio::null())?;
    let mut server = Server {
        label,
        child,
        base: Url::parse(&format!("http://127.0.0.1:{port}/"))?,
        log,
        _dir: dir,
    };
    wait_ready(&mut server)?;
    Ok(server)
}

/// Waits until `GET /v2/` answers 200.
fn wait_ready(server: &mut Server) -> Result<()> {
    let addr: SocketAddr = format!(
        "{}:{}",
        server.base.host_str().unwrap_or("127.0.0.1"),
        server.base.port_or_known_default().unwrap_or(80)
    )
    .parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        server.alive()?;
        match raw_get_status(addr, "/v2/") {
            Ok(200) => return Ok(()),
            Ok(code) => last = format!("GET /v2/ answered {code}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!(
        "{} not ready after 30 s: {last}; log tail:\n{}",
        server.label,
        server.log_tail(20)
    )
}

fn raw_get_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {line:?}"))
}

// ---------------------------------------------------------------------------
// Content
// ---------------------------------------------------------------------------

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() as u64 ^ ((std::process::id() as u64) << 32)
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A large blob, produced on demand as `CHUNK`-sized slices of a random pool
/// (pseudo-randomly chosen offsets), so it is never held in memory whole.
#[derive(Clone)]
struct BigBlob {
    pool: Bytes,
    size: u64,
    salt: u64,
    digest: String,
}

impl BigBlob {
    fn new(pool: Bytes, size: u64, salt: u64) -> BigBlob {
        let mut b = BigBlob {
            pool,
            size,
            salt,
            digest: String::new(),
        };
        let mut h = Sha256::new();
        for c in b.chunks() {
            h.update(&c);
        }
        b.digest = format!("sha256:{}", hex::encode(h.finalize()));
        b
    }

    fn chunks(&self) -> impl Iterator<Item = Bytes> + Send + 'static {
        let pool = self.pool.clone();
        let size = self.size;
        let mut rng = SplitMix(self.salt);
        let slots = (pool.len() - CHUNK) / 4096;
        (0..size.div_ceil(CHUNK as u64)).map(move |i| {
            let len = (size - i * CHUNK as u64).min(CHUNK as u64) as usize;
            let off = (rng.next() as usize % slots) * 4096;
            pool.slice(off..off + len)
        })
    }

    fn body(&self) -> reqwest::Body {
        reqwest::Body::wrap_stream(stream::iter(self.chunks().map(Ok::<Bytes, std::io::Error>)))
    }
}

struct SmallBlob {
    data: Bytes,
    digest: String,
}

fn small_blobs(rng: &mut SplitMix, n: usize, size: usize) -> Vec<SmallBlob> {
    (0..n)
        .map(|_| {
            let mut v = vec![0u8; size];
            rng.fill(&mut v);
            SmallBlob {
                digest: sha256_digest(&v),
                data: Bytes::from(v),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Client operations
// ---------------------------------------------------------------------------

fn client(timeout: Duration) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .http1_only()
        .pool_max_idle_per_host(16)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn multi_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `POST /v2/<repo>/blobs/uploads/`; returns the absolute upload URL.
async fn start_upload(c: &reqwest::Client, base: &Url, repo: &str) -> Result<Url> {
    let post = base.join(&format!("v2/{repo}/blobs/uploads/"))?;
    let r = c.post(post).send().await?;
    let status = r.status();
    let loc = r
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.bytes().await?;
    ensure!(
        status.as_u16() == 202,
        "POST upload: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let loc = loc.ok_or_else(|| anyhow!("POST upload: no Location"))?;
    Ok(base.join(&loc)?)
}

fn with_digest(mut url: Url, digest: &str) -> Url {
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// Monolithic push: POST then one PUT with the whole body.
async fn push_blob(c: &reqwest::Client, base: &Url, repo: &str, blob: &SmallBlob) -> Result<()> {
    let url = with_digest(start_upload(c, base, repo).await?, &blob.digest);
    let r = c
        .put(url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(blob.data.clone())
        .send()
        .await?;
    let status = r.status();
    let body = r.bytes().await?;
    ensure!(
        status.as_u16() == 201,
        "PUT upload: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

async fn push_big(c: &reqwest::Client, base: &Url, repo: &str, blob: &BigBlob) -> Result<()> {
    let url = with_digest(start_upload(c, base, repo).await?, &blob.digest);
    let r = c
        .put(url)
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, blob.size)
        .body(blob.body())
        .send()
        .await?;
    let status = r.status();
    let body = r.bytes().await?;
    ensure!(
        status.as_u16() == 201,
        "PUT upload: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// GETs `url`, discarding the body; returns the byte count after checking it.
async fn pull(c: &reqwest::Client, url: &str, expect: u64) -> Result<u64> {
    let mut r = c.get(url).send().await?;
    ensure!(r.status().as_u16() == 200, "GET blob: {}", r.status());
    let mut n = 0u64;
    while let Some(chunk) = r.chunk().await? {
        n += chunk.len() as u64;
    }
    ensure!(n == expect, "GET blob: got {n} bytes, expected {expect}");
    Ok(n)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

struct SmallPushes {
    rate: f64,
    per_push: Duration,
    /// Server CPU time per push, if the server's pid is known.
    cpu_per_push: Option<Duration>,
}

fn measure_small_pushes(
    base: &Url,
    pid: Option<u32>,
    warm: &[SmallBlob],
    blobs: &[SmallBlob],
) -> Result<SmallPushes> {
    current_thread_rt().block_on(async {
        // One client, requests strictly in sequence: one keep-alive connection.
        let c = client(SMALL_TIMEOUT)?;
        for b in warm {
            push_blob(&c, base, REPO, b).await.context("warm-up push")?;
        }
        let cpu = pid.and_then(cpu_secs);
        let t = Instant::now();
        for b in blobs {
            push_blob(&c, base, REPO, b).await?;
        }
        let d = t.elapsed();
        let n = blobs.len() as u32;
        Ok(SmallPushes {
            rate: blobs.len() as f64 / d.as_secs_f64(),
            per_push: d / n,
            cpu_per_push: cpu_delta(pid, cpu).map(|c| Duration::from_secs_f64(c) / n),
        })
    })
}

/// Pushes a config and a layer blob and an OCI manifest tagged `latest`;
/// checks it reads back by tag. Returns the manifest URL.
fn push_manifest(server: &Server, config_blob: &SmallBlob, layer: &SmallBlob) -> Result<String> {
    let base = &server.base;
    current_thread_rt().block_on(async {
        let c = client(SMALL_TIMEOUT)?;
        push_blob(&c, base, REPO, config_blob).await?;
        push_blob(&c, base, REPO, layer).await?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_blob.digest, "size": config_blob.data.len()},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.data.len()}],
        });
        let manifest = serde_json::to_vec(&manifest)?;
        let url = server.url(&format!("/v2/{REPO}/manifests/latest"));
        let r = c.put(&url).header(CONTENT_TYPE, OCI_MANIFEST).body(manifest.clone()).send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        ensure!(status.as_u16() == 201, "PUT manifest: {status}: {}", String::from_utf8_lossy(&body));
        let r = c.get(&url).header(ACCEPT, OCI_MANIFEST).send().await?;
        ensure!(r.status().as_u16() == 200, "GET manifest: {}", r.status());
        let ct = r.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let got = r.bytes().await?;
        ensure!(got[..] == manifest[..], "GET manifest: body differs from what was pushed");
        ensure!(ct == OCI_MANIFEST, "GET manifest: Content-Type {ct:?}");
        Ok(url)
    })
}

fn check_small_get(url: &str, expect: &SmallBlob) -> Result<()> {
    current_thread_rt().block_on(async {
        let c = client(SMALL_TIMEOUT)?;
        let r = c.get(url).send().await?;
        ensure!(r.status().as_u16() == 200, "GET blob: {}", r.status());
        let got = r.bytes().await?;
        ensure!(
            got == expect.data,
            "GET blob: body differs from what was pushed"
        );
        Ok(())
    })
}

struct WrkResult {
    rps: f64,
    /// Latency average and p99, socket errors if any.
    detail: String,
}

fn run_wrk(url: &str, secs: u64, headers: &[&str], pid: Option<u32>) -> Result<WrkResult> {
    let mut cmd = Command::new(WRK_BIN);
    cmd.args([
        "-t2",
        "-c64",
        &format!("-d{secs}s"),
        "--timeout",
        "5s",
        "--latency",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let cpu = pid.and_then(cpu_secs);
    let out = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .context("run wrk")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output:\n{text}"))?;
    if let Some(n) = field("Non-2xx or 3xx responses:") {
        bail!("wrk: {n} non-2xx/3xx responses ({rps:.0} req/s)");
    }
    let latency = field("Latency").unwrap_or_default();
    let avg = latency.split_whitespace().next().unwrap_or("?").to_string();
    let p99 = field("99%").unwrap_or_default();
    let mut detail = format!("avg {avg}, p99 {p99}");
    let requests: Option<f64> = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in ")?.0.parse().ok());
    if let (Some(c), Some(n)) = (cpu_delta(pid, cpu), requests) {
        let _ = write!(detail, ", server CPU {:.1} µs/req", c * 1e6 / n);
    }
    if let Some(e) = field("Socket errors:") {
        let _ = write!(detail, "; socket errors: {e}");
    }
    Ok(WrkResult { rps, detail })
}

/// Samples `VmRSS` every 20 ms until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut v = Vec::new();
            while !s.load(Ordering::Relaxed) {
                if let Ok(kib) = proc_status_kib(pid, "VmRSS") {
                    v.push(kib);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            v
        });
        RssSampler { stop, handle }
    }

    fn finish(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

struct RssTrace {
    before: u64,
    samples: Vec<u64>,
    after: u64,
}

impl RssTrace {
    fn max(&self) -> u64 {
        self.samples
            .iter()
            .copied()
            .chain([self.before, self.after])
            .max()
            .unwrap_or(0)
    }

    fn describe(&self) -> String {
        let n = self.samples.len();
        let picks: Vec<String> = (0..10.min(n))
            .map(|i| format!("{:.1}", self.samples[i * n / 10.min(n)] as f64 / 1024.0))
            .collect();
        format!(
            "VmRSS MiB: before {:.1}, max {:.1}, after {:.1}; {} samples, every ~{}th: [{}]",
            self.before as f64 / 1024.0,
            self.max() as f64 / 1024.0,
            self.after as f64 / 1024.0,
            n,
            (n / 10).max(1),
            picks.join(" ")
        )
    }
}

struct BigPush {
    rate: f64,
    rss: RssTrace,
    /// Server CPU seconds used by the push.
    cpu: Option<f64>,
}

fn measure_big_push(server: &Server, blob: &BigBlob) -> Result<BigPush> {
    let before = server.status_kib("VmRSS")?;
    let cpu = cpu_secs(server.pid());
    let sampler = RssSampler::start(server.pid());
    let r = current_thread_rt().block_on(async {
        let c = client(BIG_TIMEOUT)?;
        let t = Instant::now();
        push_big(&c, &server.base, REPO, blob).await?;
        Ok::<_, anyhow::Error>(t.elapsed())
    });
    let samples = sampler.finish();
    let d = r?;
    let cpu = cpu_delta(Some(server.pid()), cpu);
    let after = server.status_kib("VmRSS")?;
    // Check the pushed blob is there with the right size.
    current_thread_rt().block_on(async {
        let c = client(SMALL_TIMEOUT)?;
        let r = c
            .head(server.url(&format!("/v2/{REPO}/blobs/{}", blob.digest)))
            .send()
            .await?;
        ensure!(
            r.status().as_u16() == 200,
            "HEAD pushed blob: {}",
            r.status()
        );
        let len = r
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        ensure!(
            len == Some(blob.size),
            "HEAD pushed blob: Content-Length {len:?}, expected {}",
            blob.size
        );
        Ok(())
    })?;
    Ok(BigPush {
        rate: mb_per_s(blob.size, d),
        rss: RssTrace {
            before,
            samples,
            after,
        },
        cpu,
    })
}

fn measure_pull(url: &str, size: u64) -> Result<f64> {
    current_thread_rt().block_on(async {
        let c = client(BIG_TIMEOUT)?;
        let t = Instant::now();
        let n = pull(&c, url, size).await?;
        Ok(mb_per_s(n, t.elapsed()))
    })
}

fn measure_parallel_pull(url: &str, size: u64, n: usize) -> Result<f64> {
    multi_thread_rt().block_on(async {
        let c = client(BIG_TIMEOUT)?;
        let t = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let c = c.clone();
                let url = url.to_string();
                tokio::spawn(async move { pull(&c, &url, size).await })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await??;
        }
        Ok(mb_per_s(total, t.elapsed()))
    })
}

fn curl_pull(url: &str, size: u64) -> Result<f64> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download} %{speed_download}",
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .context("run curl")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    ensure!(f.len() == 3 && f[0] == "200", "curl: {text}");
    ensure!(
        f[1].parse::<u64>().ok() == Some(size),
        "curl: got {} bytes, expected {size}",
        f[1]
    );
    Ok(f[2].parse::<f64>()? / 1e6)
}

// ---------------------------------------------------------------------------
// Client ceiling: the same client code against an in-process sink that does
// nothing, to show the client is not what limits the numbers.
// ---------------------------------------------------------------------------

struct Sink {
    base: Url,
    accepts: Arc<AtomicUsize>,
}

fn start_sink(pool: Bytes) -> Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let base = Url::parse(&format!("http://{}/", listener.local_addr()?))?;
    let accepts = Arc::new(AtomicUsize::new(0));
    let a = accepts.clone();
    // The accept thread lives until the bench exits; it only ever serves loopback.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            a.fetch_add(1, Ordering::Relaxed);
            let pool = pool.clone();
            std::thread::spawn(move || {
                let _ = sink_conn(conn, &pool);
            });
        }
    });
    Ok(Sink { base, accepts })
}

fn sink_conn(conn: TcpStream, pool: &[u8]) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::with_capacity(256 * 1024, conn);
    loop {
        let mut request = String::new();
        if r.read_line(&mut request)? == 0 {
            return Ok(());
        }
        let mut len = 0u64;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        while len > 0 {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf.len().min(len as usize);
            r.consume(n);
            len -= n as u64;
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        match method {
            "POST" => w.write_all(
                b"HTTP/1.1 202 Accepted\r\nLocation: /upload/1\r\nContent-Length: 0\r\n\r\n",
            )?,
            "GET" => {
                let mut n: u64 = path.trim_start_matches("/blob/").parse().unwrap_or(0);
                write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n")?;
                let mut off = 0;
                while n > 0 {
                    let k = (n as usize).min(CHUNK);
                    let start = off % (pool.len() - CHUNK);
                    w.write_all(&pool[start..start + k])?;
                    off += 4096 * 7;
                    n -= k as u64;
                }
            }
            _ => w.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")?,
        }
    }
}

fn client_ceilings(
    cfg: &Config,
    pool: &Bytes,
    warm: &[SmallBlob],
    blobs: &[SmallBlob],
    big: &BigBlob,
) -> String {
    let sink = match start_sink(pool.clone()) {
        Ok(s) => s,
        Err(e) => return format!("sink failed: {e:#}"),
    };
    let small = measure_small_pushes(&sink.base, None, warm, blobs);
    let conns = sink.accepts.load(Ordering::Relaxed);
    let push = current_thread_rt().block_on(async {
        let c = client(BIG_TIMEOUT)?;
        let t = Instant::now();
        push_big(&c, &sink.base, "sink", big).await?;
        Ok::<_, anyhow::Error>(mb_per_s(big.size, t.elapsed()))
    });
    let url = format!("{}blob/{}", sink.base, cfg.big);
    let pull1 = measure_pull(&url, cfg.big);
    let pulln = measure_parallel_pull(&url, cfg.big, cfg.parallel);
    let curl = curl_pull(&url, cfg.big);
    let f = |r: &Result<f64>| match r {
        Ok(v) => format!("{v:.0}"),
        Err(e) => format!("ERR {e:#}"),
    };
    format!(
        "small pushes {}/s (over {conns} connection(s)), big push {} MB/s, pull {} MB/s, \
         {}x parallel pull {} MB/s, curl pull {} MB/s",
        small
            .as_ref()
            .map_or_else(|e| format!("ERR {e:#}"), |p| format!("{:.0}", p.rate)),
        f(&push),
        f(&pull1),
        cfg.parallel,
        f(&pulln),
        f(&curl),
    )
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// One metric's per-round values on one side.
#[derive(Default)]
struct Series {
    vals: Vec<f64>,
    err: Option<String>,
}

impl Series {
    fn record(&mut self, r: &Result<f64>) {
        match r {
            Ok(v) => self.vals.push(*v),
            Err(e) => {
                self.err.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    /// The median of the rounds; an error if any round failed.
    fn median(&self) -> Option<Result<f64>> {
        if let Some(e) = &self.err {
            return Some(Err(anyhow!("{e}")));
        }
        let mut v = self.vals.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(Ok(if !n.is_multiple_of(2) {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }))
    }
}

#[derive(Default)]
struct Results {
    small_push: Series,
    small_push_us: Series,
    manifest_get: Series,
    blob_get: Series,
    big_push: Series,
    big_push_rss: Vec<RssTrace>,
    big_pull: Series,
    big_pull_curl: Series,
    parallel_pull: Series,
    peak_rss: Series,
    huge_push: Series,
    huge_push_rss: Option<RssTrace>,
    huge_peak_rss: Series,
    notes: Vec<String>,
}

struct SideData {
    /// Per round: warm-up pushes, then the measured pushes.
    warm: Vec<Vec<SmallBlob>>,
    small: Vec<Vec<SmallBlob>>,
    manifest_blobs: Vec<SmallBlob>,
    manifest_url: Option<String>,
    blob_url: Option<String>,
    big_url: Option<String>,
}

struct Side {
    label: &'static str,
    server: Result<Server>,
    res: Results,
}

impl Side {
    /// Runs `f` if the server is up and still alive; records errors as notes.
    fn run<T>(&mut self, what: &str, f: impl FnOnce(&Server) -> Result<T>) -> Result<T> {
        let server = match &mut self.server {
            Ok(s) => s,
            Err(e) => return Err(anyhow!("not running: {e:#}")),
        };
        let r = server.alive().and_then(|()| f(server));
        if let Err(e) = &r {
            let exited = server
                .alive()
                .err()
                .map(|e| format!(" ({e:#})"))
                .unwrap_or_default();
            self.res.notes.push(format!("{what}: {e:#}{exited}"));
        }
        r
    }
}

/// Which side goes first alternates between rounds.
fn order(round: usize) -> [usize; 2] {
    if round.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

fn show_cpu(cpu: Option<f64>) -> String {
    cpu.map_or("?".into(), |c| format!("{c:.2} s"))
}

fn show(r: &Result<f64>, prec: usize) -> String {
    match r {
        Ok(v) => format!("{v:.prec$}"),
        Err(_) => "ERR".into(),
    }
}

fn main() {
    let cfg = Config::from_env();
    print_environment(&cfg);
    let t_all = Instant::now();

    let mut rng = SplitMix(seed());
    let mut pool = vec![0u8; POOL];
    rng.fill(&mut pool);
    let pool = Bytes::from(pool);
    let t = Instant::now();
    // A distinct big blob per round (a server may skip work for a blob it has).
    let bigs: Vec<BigBlob> = (0..cfg.rounds)
        .map(|_| BigBlob::new(pool.clone(), cfg.big, rng.next()))
        .collect();
    let huge = BigBlob::new(pool.clone(), cfg.huge, rng.next());
    println!(
        "computed the big blobs' digests in {:.1} s (their content is regenerated on the fly for each push)",
        t.elapsed().as_secs_f64()
    );

    println!(
        "\n== client ceiling (the same client code against an in-process sink that does no work)"
    );
    let warm_sink = small_blobs(&mut rng, cfg.warmup_pushes, SMALL_BLOB);
    let sink_blobs = small_blobs(&mut rng, cfg.small_pushes, SMALL_BLOB);
    println!(
        "{}",
        client_ceilings(&cfg, &pool, &warm_sink, &sink_blobs, &bigs[0])
    );

    println!("\n== starting servers");
    let mut sides = if cfg.rados {
        [
            Side {
                label: "rados",
                server: rados_config().and_then(|extra| start_dockyard(&cfg, "rados", &extra)),
                res: Results::default(),
            },
            Side {
                label: "local",
                server: start_dockyard(&cfg, "local", ""),
                res: Results::default(),
            },
        ]
    } else {
        [
            Side {
                label: "dockyard",
                server: if cfg.subject_is_reference {
                    start_reference(&cfg, "reference#2")
                } else {
                    start_dockyard(&cfg, "dockyard", "")
                },
                res: Results::default(),
            },
            Side {
                label: "reference",
                server: start_reference(&cfg, "reference"),
                res: Results::default(),
            },
        ]
    };
    for s in &sides {
        match &s.server {
            Ok(srv) => println!(
                "{:<10} {} pid {} at {}, VmRSS after start {:.1} MiB",
                s.label,
                srv.label,
                srv.pid(),
                srv.base,
                srv.status_kib("VmRSS").unwrap_or(0) as f64 / 1024.0
            ),
            Err(e) => println!("{:<10} FAILED TO START: {e:#}", s.label),
        }
    }

    // Each side gets its own distinct small blobs; the workloads are identical.
    let mut data: Vec<SideData> = (0..2)
        .map(|_| SideData {
            warm: (0..cfg.rounds)
                .map(|_| small_blobs(&mut rng, cfg.warmup_pushes, SMALL_BLOB))
                .collect(),
            small: (0..cfg.rounds)
                .map(|_| small_blobs(&mut rng, cfg.small_pushes, SMALL_BLOB))
                .collect(),
            manifest_blobs: small_blobs(&mut rng, 2, SMALL_BLOB),
            manifest_url: None,
            blob_url: None,
            big_url: None,
        })
        .collect();
    let rounds = cfg.rounds;

    println!(
        "\n== {} small 4 KiB pushes (POST + PUT, one keep-alive connection, after {} warm-up pushes), pushes/s",
        cfg.small_pushes, cfg.warmup_pushes
    );
    for round in 0..rounds {
        let mut line = format!("round {}/{rounds}:", round + 1);
        for i in order(round) {
            let (side, d) = (&mut sides[i], &data[i]);
            let r = side.run("small pushes", |s| {
                measure_small_pushes(&s.base, Some(s.pid()), &d.warm[round], &d.small[round])
            });
            let rate = r.as_ref().map(|p| p.rate).map_err(|e| anyhow!("{e:#}"));
            side.res.small_push.record(&rate);
            let mut us = String::new();
            if let Ok(p) = &r {
                side.res
                    .small_push_us
                    .record(&Ok(p.per_push.as_secs_f64() * 1e6));
                let _ = write!(us, " ({:.0} µs/push", p.per_push.as_secs_f64() * 1e6);
                if let Some(c) = p.cpu_per_push {
                    let _ = write!(us, ", server CPU {:.0} µs/push", c.as_secs_f64() * 1e6);
                }
                us.push(')');
            }
            let _ = write!(line, "  {} {}{us}", side.label, show(&rate, 0));
        }
        println!("{line}");
    }
    for (side, d) in sides.iter_mut().zip(&mut data) {
        d.manifest_url = side
            .run("manifest push", |s| {
                push_manifest(s, &d.manifest_blobs[0], &d.manifest_blobs[1])
            })
            .ok();
        d.blob_url = side
            .run("small blob GET check", |s| {
                let b = &d.small[0][0];
                let url = s.url(&format!("/v2/{REPO}/blobs/{}", b.digest));
                check_small_get(&url, b).map(|_| url)
            })
            .ok();
    }

    let accept = format!("Accept: {OCI_MANIFEST}");
    for (what, get_url, headers) in [
        (
            "manifest GET by tag (OCI manifest)",
            0,
            vec![accept.as_str()],
        ),
        ("4 KiB blob GET", 1, vec![]),
    ] {
        println!("\n== {what}, wrk -t2 -c64 -d{}s, req/s", cfg.wrk_secs);
        for round in 0..rounds {
            let mut line = format!("round {}/{rounds}:", round + 1);
            for i in order(round) {
                let (side, d) = (&mut sides[i], &data[i]);
                let url = if get_url == 0 {
                    &d.manifest_url
                } else {
                    &d.blob_url
                };
                let r = match url {
                    Some(url) => side.run(what, |s| {
                        if round == 0 {
                            // Warm-up, so both servers start from warm caches.
                            run_wrk(url, 1, &headers, None)?;
                        }
                        run_wrk(url, cfg.wrk_secs, &headers, Some(s.pid()))
                    }),
                    None => Err(anyhow!("no URL: setup failed")),
                };
                let rps = r.as_ref().map(|w| w.rps).map_err(|e| anyhow!("{e:#}"));
                let res = &mut side.res;
                if get_url == 0 {
                    &mut res.manifest_get
                } else {
                    &mut res.blob_get
                }
                .record(&rps);
                let detail = r
                    .as_ref()
                    .map_or(String::new(), |w| format!(" ({})", w.detail));
                let _ = write!(line, "  {} {}{detail}", side.label, show(&rps, 0));
            }
            println!("{line}");
        }
    }

    println!(
        "\n== {} MiB push (POST + one streamed PUT), MB/s, with the server's VmRSS sampled every 20 ms",
        cfg.big / MIB
    );
    for (round, blob) in bigs.iter().enumerate() {
        for i in order(round) {
            let side = &mut sides[i];
            let pushed = side.run("big push", |s| measure_big_push(s, blob));
            match pushed {
                Ok(p) => {
                    println!(
                        "round {}/{rounds}: {:<10} {:.0} MB/s, server CPU {}; {}",
                        round + 1,
                        side.label,
                        p.rate,
                        show_cpu(p.cpu),
                        p.rss.describe()
                    );
                    side.res.big_push.record(&Ok(p.rate));
                    side.res.big_push_rss.push(p.rss);
                    if let Ok(s) = &side.server {
                        data[i].big_url.get_or_insert_with(|| {
                            s.url(&format!("/v2/{REPO}/blobs/{}", blob.digest))
                        });
                    }
                }
                Err(e) => {
                    println!("round {}/{rounds}: {:<10} ERR", round + 1, side.label);
                    side.res.big_push.record(&Err(e));
                }
            }
        }
    }

    println!(
        "\n== {} MiB pull (GET, body discarded, length checked), MB/s: one pull; curl; {} parallel pulls (aggregate)",
        cfg.big / MIB,
        cfg.parallel
    );
    for round in 0..rounds {
        let mut line = format!("round {}/{rounds}:", round + 1);
        for i in order(round) {
            let (side, d) = (&mut sides[i], &data[i]);
            let Some(url) = &d.big_url else {
                let e = Err(anyhow!("no big blob pushed"));
                side.res.big_pull.record(&e);
                side.res.big_pull_curl.record(&e);
                side.res.parallel_pull.record(&e);
                continue;
            };
            let mut one_cpu = None;
            let one = side.run("big pull", |s| {
                let cpu = cpu_secs(s.pid());
                let r = measure_pull(url, cfg.big);
                one_cpu = cpu_delta(Some(s.pid()), cpu);
                r
            });
            let curl = side.run("big pull (curl)", |_| curl_pull(url, cfg.big));
            let par = side.run("parallel pull", |_| {
                measure_parallel_pull(url, cfg.big, cfg.parallel)
            });
            side.res.big_pull.record(&one);
            side.res.big_pull_curl.record(&curl);
            side.res.parallel_pull.record(&par);
            let _ = write!(
                line,
                "  {} {} (server CPU {}), curl {}, {}x {}",
                side.label,
                show(&one, 0),
                show_cpu(one_cpu),
                show(&curl, 0),
                cfg.parallel,
                show(&par, 0)
            );
        }
        println!("{line}");
    }

    println!("\n== peak RSS so far (VmHWM), MiB");
    for side in sides.iter_mut() {
        let r = side.run("peak RSS", |s| Ok(s.status_kib("VmHWM")? as f64 / 1024.0));
        side.res.peak_rss.record(&r);
        println!("{:<10} {}", side.label, show(&r, 1));
    }

    println!("\n== {} MiB push, then VmHWM", cfg.huge / MIB);
    for side in sides.iter_mut() {
        let pushed = side.run("huge push", |s| measure_big_push(s, &huge));
        match pushed {
            Ok(p) => {
                println!(
                    "{:<10} {:.0} MB/s, server CPU {}; {}",
                    side.label,
                    p.rate,
                    show_cpu(p.cpu),
                    p.rss.describe()
                );
                side.res.huge_push.record(&Ok(p.rate));
                side.res.huge_push_rss = Some(p.rss);
            }
            Err(e) => side.res.huge_push.record(&Err(e)),
        }
        let r = side.run("peak RSS after huge push", |s| {
            Ok(s.status_kib("VmHWM")? as f64 / 1024.0)
        });
        side.res.huge_peak_rss.record(&r);
        println!("{:<10} VmHWM {} MiB", side.label, show(&r, 1));
    }

    println!();
    for side in sides.iter_mut() {
        for n in &side.res.notes {
            println!("ERROR {}: {n}", side.label);
        }
        if let Ok(s) = &side.server {
            let tail = s.log_tail(10);
            if !tail.trim().is_empty() {
                println!("{} server log (last lines):\n{tail}", side.label);
            }
        }
        // Stops the server and removes its data directory.
        side.server = Err(anyhow!("stopped"));
    }

    let tally = print_table(&cfg, &sides);
    println!("\ntotal bench time {:.0} s", t_all.elapsed().as_secs_f64());
    if tally.errors > 0 {
        eprintln!("{} measurement(s) failed", tally.errors);
        std::process::exit(1);
    }
}

fn fmt_opt(r: &Option<Result<f64>>, prec: usize) -> String {
    match r {
        Some(Ok(v)) => format!("{v:.prec$}"),
        Some(Err(_)) => "ERR".into(),
        None => "-".into(),
    }
}

enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// Absolute bound on the Dockyard value.
    Below(f64),
    Info,
}

struct Tally {
    errors: usize,
}

fn print_table(cfg: &Config, sides: &[Side; 2]) -> Tally {
    let (d, r) = (&sides[0].res, &sides[1].res);
    let big = cfg.big / MIB;
    let huge = cfg.huge / MIB;
    let rows: Vec<(String, &Series, &Series, Target, usize)> = vec![
        (
            "small 4 KiB push (pushes/s)".into(),
            &d.small_push,
            &r.small_push,
            Target::AtLeast(3.0),
            0,
        ),
        (
            "manifest GET (req/s)".into(),
            &d.manifest_get,
            &r.manifest_get,
            Target::AtLeast(5.0),
            0,
        ),
        (
            "small blob GET (req/s)".into(),
            &d.blob_get,
            &r.blob_get,
            Target::AtLeast(5.0),
            0,
        ),
        (
            format!("{big} MiB push (MB/s)"),
            &d.big_push,
            &r.big_push,
            Target::AtLeast(1.5),
            0,
        ),
        (
            format!("{big} MiB pull (MB/s)"),
            &d.big_pull,
            &r.big_pull,
            Target::AtLeast(1.0),
            0,
        ),
        (
            format!("{big} MiB pull, curl (MB/s)"),
            &d.big_pull_curl,
            &r.big_pull_curl,
            Target::Info,
            0,
        ),
        (
            format!("{}x parallel pull (MB/s)", cfg.parallel),
            &d.parallel_pull,
            &r.parallel_pull,
            Target::Info,
            0,
        ),
        (
            "peak RSS, VmHWM (MiB)".into(),
            &d.peak_rss,
            &r.peak_rss,
            Target::AtMost(0.25),
            1,
        ),
        (
            format!("{huge} MiB push (MB/s)"),
            &d.huge_push,
            &r.huge_push,
            Target::Info,
            0,
        ),
        (
            format!("VmHWM after {huge} MiB push (MiB)"),
            &d.huge_peak_rss,
            &r.huge_peak_rss,
            Target::Below(HUGE_RSS_LIMIT_MIB),
            1,
        ),
    ];
    let mut tally = Tally { errors: 0 };
    let (mut passed, mut targets) = (0, 0);
    let (left, right) = if cfg.rados {
        ("rados", "local")
    } else {
        ("dockyard", "reference")
    };
    println!(
        "\n== results: median of {} round(s); ratio = {left} / {right}, measured in the same run",
        cfg.rounds
    );
    if cfg.subject_is_reference {
        println!("(harness check: the `dockyard` column is a second reference instance)");
    }
    if cfg.rados {
        println!(
            "(Dockyard on the one-node Ceph of packaging/services/ceph.sh, a memstore OSD on \
             this machine, against Dockyard on local disk; the targets are the reference's, \
             shown for information)"
        );
    }
    println!(
        "{:<34} {:>10} {:>10} {:>7} {:>9}  result",
        "metric", left, right, "ratio", "target"
    );
    for (name, ds, rs, target, prec) in rows {
        let target = if cfg.rados { Target::Info } else { target };
        let (dv, rv) = (ds.median(), rs.median());
        tally.errors += [&dv, &rv]
            .iter()
            .filter(|v| matches!(v, Some(Err(_))))
            .count();
        let val = |v: &Option<Result<f64>>| match v {
            Some(Ok(x)) => Some(*x),
            _ => None,
        };
        let (dx, rx) = (val(&dv), val(&rv));
        let ratio = match (dx, rx) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (tgt, ok) = match target {
            Target::AtLeast(t) => (format!(">= {t}x"), ratio.map(|x| x >= t)),
            Target::AtMost(t) => (format!("<= {t}x"), ratio.map(|x| x <= t)),
            Target::Below(t) => (format!("< {t} MiB"), dx.map(|x| x < t)),
            Target::Info => ("-".into(), None),
        };
        let result = match (&target, ok) {
            (Target::Info, _) => "",
            (_, Some(true)) => "PASS",
            (_, Some(false)) => "FAIL",
            (_, None) => "n/a",
        };
        if !matches!(target, Target::Info) {
            targets += 1;
            passed += usize::from(ok == Some(true));
        }
        println!(
            "{:<34} {:>10} {:>10} {:>7} {:>9}  {result}",
            name,
            fmt_opt(&dv, prec),
            fmt_opt(&rv, prec),
            ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            tgt
        );
    }
    println!("{passed}/{targets} targets passed");
    if let (Some(Ok(a)), Some(Ok(b))) = (d.small_push_us.median(), r.small_push_us.median()) {
        println!("time per small push (POST+PUT): {left} {a:.0} µs, {right} {b:.0} µs");
    }
    for (label, res) in [(left, d), (right, r)] {
        let max = res.big_push_rss.iter().map(RssTrace::max).max();
        let before = res.big_push_rss.first().map(|t| t.before);
        if let (Some(before), Some(max)) = (before, max) {
            println!(
                "{label}: VmRSS before the first {big} MiB push {:.1} MiB, max during any {big} MiB push {:.1} MiB",
                before as f64 / 1024.0,
                max as f64 / 1024.0
            );
        }
        if let Some(t) = &res.huge_push_rss {
            println!(
                "{label}: VmRSS during the {huge} MiB push {:.1} -> max {:.1} MiB",
                t.before as f64 / 1024.0,
                t.max() as f64 / 1024.0
            );
        }
    }
    tally
}
