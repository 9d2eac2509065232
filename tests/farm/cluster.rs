//! A hub farm on loopback: `dockyard web` nodes sharing one MariaDB
//! database and one Ceph pool namespace (both fresh per farm), behind a
//! private nginx configured like `packaging/nginx/dockyard.conf` (plain
//! HTTP, streaming both ways, failing over idempotent requests).
#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Server;

/// Rados object size of the farm: small, so test blobs span many chunks.
pub const CHUNK: u64 = 256 << 10;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Starts a shared test service with `packaging/services/<script>` (the
/// same instances and ports as the other tests); returns what it prints.
pub fn service(script: &str, ports: &[&str]) -> String {
    let dir = root().join("target/test-services");
    std::fs::create_dir_all(&dir).expect("target/test-services");
    let out = Command::new(root().join("packaging/services").join(script))
        .arg("start")
        .arg(&dir)
        .args(ports)
        .output()
        .expect("run the service script");
    assert!(
        out.status.success(),
        "{script} failed (run packaging/install-test-deps.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A fresh database on the shared MariaDB.
pub fn fresh_database() -> String {
    let url = service("mariadb.sh", &["23306"]);
    let name = format!("dockyard_farm_{}", short_id());
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sea_orm::{ConnectionTrait, Database};
        let db = Database::connect(&url).await.expect("connect to MariaDB");
        db.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a database");
    });
    format!("{base}/{name}")
}

pub struct Nginx {
    child: Child,
    pub addr: String,
    dir: PathBuf,
}

impl Nginx {
    /// nginx on a free loopback port in front of `upstreams`.
    pub fn start(dir: &Path, upstreams: &[String]) -> Nginx {
        let dir = dir.join("nginx");
        for d in ["logs", "tmp"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = upstreams
            .iter()
            .map(|u| format!("        server {u} max_fails=1 fail_timeout=10s;\n"))
            .collect();
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/logs/error.log warn;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
                 access_log {d}/logs/access.log;\n\
                 client_body_temp_path {d}/tmp/body;\n\
                 proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n\
                 uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\n\
                 upstream dockyard {{\n{servers}        keepalive 16;\n    }}\n\
                 server {{\n\
                     listen 127.0.0.1:{port};\n\
                     client_max_body_size 0;\n\
                     proxy_request_buffering off;\n\
                     proxy_buffering off;\n\
                     chunked_transfer_encoding on;\n\
                     location / {{\n\
                         proxy_pass http://dockyard;\n\
                         proxy_http_version 1.1;\n\
                         proxy_set_header Connection \"\";\n\
                         proxy_set_header Host $http_host;\n\
                         proxy_set_header X-Real-IP $remote_addr;\n\
                         proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
                         proxy_next_upstream error timeout http_502 http_503;\n\
                         proxy_next_upstream_tries 3;\n\
                         add_header X-Upstream $upstream_addr always;\n\
                     }}\n\
                 }}\n\
             }}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let mut cmd = Command::new("/usr/sbin/nginx");
        cmd.arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("nginx (packaging/install-test-deps.sh)");
        let addr = format!("127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < until, "nginx did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, addr, dir }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // The master takes its workers down on SIGTERM.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub struct Farm {
    pub nodes: Vec<Server>,
    pub nginx: Nginx,
    /// `http://` + nginx's address.
    pub base: String,
    pub ceph_conf: String,
    pub namespace: String,
    dir: tempfile::TempDir,
}

impl Farm {
    /// `n` nodes (standalone: no accounts) behind nginx.
    pub fn start(n: usize) -> Farm {
        let db = fresh_database();
        let ceph_conf = service("ceph.sh", &["26789"]);
        let namespace = format!("farm-{}", short_id());
        let config = format!(
            "backend = \"rados\"\ntrustproxy = true\n\
             [db]\ndriver = \"mysql\"\nuri = \"{db}\"\n\
             [rados]\nconf = \"{ceph_conf}\"\npool = \"registry\"\nuser = \"admin\"\n\
             namespace = \"{namespace}\"\nchunksize = {CHUNK}\n"
        );
        let nodes: Vec<Server> = (0..n).map(|_| Server::start_config(&config)).collect();
        let dir = tempfile::Builder::new()
            .prefix("dockyard-farm-")
            .tempdir()
            .unwrap();
        let upstreams: Vec<String> = nodes.iter().map(|s| s.addr.clone()).collect();
        let nginx = Nginx::start(dir.path(), &upstreams);
        Farm {
            base: format!("http://{}", nginx.addr),
            nodes,
            nginx,
            ceph_conf,
            namespace,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Object names in the farm's namespace of the pool, sorted.
    pub fn objects(&self) -> Vec<String> {
        let out = Command::new("rados")
            .args([
                "-c",
                &self.ceph_conf,
                "-p",
                "registry",
                "-N",
                &self.namespace,
                "ls",
            ])
            .output()
            .expect("rados CLI (ceph-common)");
        assert!(
            out.status.success(),
            "rados ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}
