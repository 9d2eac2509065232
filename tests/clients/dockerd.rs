//! A private Docker daemon for the tests: its own data root, exec root,
//! socket and pid file in a short temp dir under /tmp, no iptables, no
//! bridge, the vfs storage driver (works everywhere, no overlay mounts).
//!
//! It is stopped when the value is dropped (also on panic): SIGTERM, which
//! makes dockerd stop its containerd and unmount its data root, then
//! SIGKILL if needed, then any leftover containerd and mounts. If the test
//! process dies without unwinding, PR_SET_PDEATHSIG kills dockerd (and
//! dockerd's containerd has the same setting), so no daemon is left behind.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{INSTALL_HINT, command, require_tool, run_capture};

/// Prefix of the daemons' directories under /tmp.
const DIR_PREFIX: &str = "dockyard-dk-";

pub struct Dockerd {
    child: Option<Child>,
    docker: PathBuf,
    sock: PathBuf,
    config_dir: PathBuf,
    exec_root: PathBuf,
    log: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("the docker test runs a private dockerd and needs root");
        }
        let dockerd = require_tool("dockerd");
        let docker = require_tool("docker");
        // Required at run time by dockerd itself.
        require_tool("containerd");
        require_tool("runc");
        // The socket path must stay well under 108 bytes: use /tmp, not
        // $TMPDIR, and short names.
        remove_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in("/tmp")
            .expect("temp dir");
        let root = dir.path();
        std::fs::write(root.join("owner"), std::process::id().to_string()).unwrap();
        let sock = root.join("d.sock");
        let config_dir = root.join("cfg");
        let exec_root = root.join("x");
        let log = root.join("dockerd.log");
        std::fs::create_dir_all(&config_dir).unwrap();
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = command(&dockerd);
        cmd.args([
            "--storage-driver",
            "vfs",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ])
        .arg("--data-root")
        .arg(root.join("data"))
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("--pidfile")
        .arg(root.join("d.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
        // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dockerd: {e} ({INSTALL_HINT})"));
        let mut d = Dockerd {
            child: Some(child),
            docker,
            sock,
            config_dir,
            exec_root,
            log,
            dir: Some(dir),
        };
        d.wait_ready();
        d
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "dockerd exited during start-up ({status}):\n{}",
                    self.log_tail()
                );
            }
            let out = run_capture(self.docker().arg("version"), Duration::from_secs(20));
            if out.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "dockerd did not answer `docker version` within 60 s:\n{}{}\n{}",
                    out.stdout,
                    out.stderr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A `docker` client command talking to this daemon, with a private
    /// client config directory.
    pub fn docker(&self) -> Command {
        let mut cmd = command(&self.docker);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config_dir)
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CLI_HINTS", "false")
            // `docker manifest` on a 20.10 client.
            .env("DOCKER_CLI_EXPERIMENTAL", "enabled")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("--- dockerd log (last lines)\n{}", lines[from..].join("\n"))
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        // A containerd that outlived dockerd (it should not).
        let pidfile = self.exec_root.join("containerd").join("containerd.pid");
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let exec_root = self.exec_root.to_string_lossy().into_owned();
            if String::from_utf8_lossy(&cmdline).contains(&exec_root) {
                // SAFETY: kill(2) on the containerd started for this daemon
                // (its command line names our exec root).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        // Mounts dockerd left under our directory (after a SIGKILL it does
        // not unmount its data root).
        if let Some(dir) = &self.dir {
            unmount_below(dir.path());
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if dir.close().is_err() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

/// Directories of daemons whose test process died without cleaning up
/// (SIGKILL): their dockerd died with it, but its data-root mount and files
/// stay. Removes those whose owner process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(DIR_PREFIX) {
            continue;
        }
        let path = entry.path();
        let owner = std::fs::read_to_string(path.join("owner"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let Some(owner) = owner else { continue };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        unmount_below(&path);
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let c = std::ffi::CString::new(p).unwrap();
        // SAFETY: umount2 with a valid C string.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
}

fn unescape_mount(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
