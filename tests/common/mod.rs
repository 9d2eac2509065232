//! Starts a real `dockyard web` process on a private data directory for a
//! black-box test, and stops it when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub config: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    /// A server on the shipped defaults (SQLite, local disk) in a fresh
    /// data directory.
    pub fn start() -> Server {
        Server::start_with("")
    }

    /// As `start`, with extra TOML appended to the config's `[dockyard]`
    /// section (e.g. `"upload_expiry = 60"`).
    pub fn start_with(dockyard_extra: &str) -> Server {
        Server::start_config(dockyard_extra)
    }

    /// As `start`, with arbitrary TOML appended to the config: keys before
    /// the first section header go to `[dockyard]`, then any further
    /// sections (`[auth_server]`, `[token]`, ...). Every `$DIR` in it is
    /// replaced by the server's private temp directory (the data directory
    /// is `$DIR/data`), e.g. for `privateKey = "$DIR/token.key"`.
    pub fn start_config(extra: &str) -> Server {
        Server::start_top_config("", extra)
    }

    /// As `start_config`, with `top` (top-level keys such as `listenmode`)
    /// placed before every section; `$DIR` is replaced there too.
    pub fn start_top_config(top: &str, extra: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("dockyard-test-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("runtime.toml");
        std::fs::write(
            &config,
            format!(
                "runmode = \"dev\"\n{}\n[log]\nlevel = \"warn\"\n[dockyard]\npath = \"{}\"\n{}\n",
                top.replace("$DIR", &dir.path().display().to_string()),
                dir.path().join("data").display(),
                extra.replace("$DIR", &dir.path().display().to_string())
            ),
        )
        .expect("write config");
        let mut server = Server {
            child: None,
            addr: String::new(),
            base: String::new(),
            config,
            dir,
        };
        server.spawn(0);
        server
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self, port: u16) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dockyard"))
            .args([
                "web",
                "--address",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--config",
            ])
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dockyard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("dockyard did not start listening within 30 s");
            }
        };
        self.base = url.clone();
        self.addr = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        self.child = Some(child);
    }

    /// Kills the process (SIGKILL, no clean shutdown) and starts it again on
    /// the same port and data.
    pub fn restart(&mut self) {
        let port: u16 = self.addr.rsplit(':').next().unwrap().parse().unwrap();
        self.kill();
        self.spawn(port);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
