//! The `dockyard` binary: configuration errors fail fast, environment
//! overrides, `--version`, `--help`, `migrate`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn dockyard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dockyard"));
    // Only what a test sets explicitly.
    for (k, _) in std::env::vars() {
        if k.starts_with("DOCKYARD_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs to completion (at most `secs`), killing it if it does not exit.
fn run(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dockyard");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("dockyard did not exit within {secs} s (it should fail fast)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("runtime.toml");
    std::fs::write(
        &path,
        format!(
            "[log]\nlevel = \"warn\"\n[dockyard]\npath = \"{}\"\n{body}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

fn web(config: &Path) -> Command {
    let mut c = dockyard();
    c.args(["web", "--address", "127.0.0.1", "--port", "0", "--config"])
        .arg(config);
    c
}

fn expect_fails_naming(out: &Output, needle: &str, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "{why}: the process must exit with a failure status; stderr: {stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "{why}: it must not start serving; stdout: {stdout}"
    );
    assert!(
        stderr.contains(needle),
        "{why}: the error names {needle:?}; stderr: {stderr}"
    );
}

#[test]
fn bad_configuration_fails_fast_naming_the_key() {
    let cases = [
        ("bogus_key = 1", "bogus_key", "an unknown key in [dockyard]"),
        (
            "max_manifest_size = \"huge\"",
            "max_manifest_size",
            "a string where a number is expected",
        ),
        (
            "upload_expiry = 5",
            "upload_expiry",
            "a value below the minimum",
        ),
        (
            "cachable = \"yes please\"",
            "cachable",
            "a string where a boolean is expected",
        ),
        ("backend = \"s3\"", "backend", "an unsupported backend"),
        (
            "[db]\ndriver = \"oracle\"",
            "driver",
            "an unsupported database driver",
        ),
        (
            "[db]\nmax_connections = 0",
            "max_connections",
            "zero connections",
        ),
        ("[nonsense]\nx = 1", "nonsense", "an unknown section"),
        ("[db]\nurii = \"x\"", "urii", "an unknown key in [db]"),
    ];
    for (extra, key, what) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), extra);
        let out = run(web(&config), 20);
        expect_fails_naming(
            &out,
            key,
            &format!(
                "README: unknown keys and bad values stop the server at start ({what}: {extra:?})"
            ),
        );
    }
    // The file is unparsable TOML.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(&config, "[dockyard\npath = ").unwrap();
    let out = run(web(&config), 20);
    expect_fails_naming(
        &out,
        "broken.toml",
        "a config that is not TOML names the file",
    );
    // An explicitly named file that does not exist.
    let out = run(web(&dir.path().join("absent.toml")), 20);
    expect_fails_naming(
        &out,
        "absent.toml",
        "a missing --config file is an error naming it",
    );
}

#[test]
fn bad_environment_overrides_fail_fast() {
    for (var, value, needle) in [
        (
            "DOCKYARD_DOCKYARD_MAX_MANIFEST_SIZE",
            "lots",
            "DOCKYARD_DOCKYARD_MAX_MANIFEST_SIZE",
        ),
        ("DOCKYARD_NOPE", "1", "DOCKYARD_NOPE"),
        (
            "DOCKYARD_DOCKYARD_CACHABLE",
            "maybe",
            "DOCKYARD_DOCKYARD_CACHABLE",
        ),
        ("DOCKYARD_DOCKYARD_UPLOAD_EXPIRY", "1", "upload_expiry"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "");
        let mut cmd = web(&config);
        cmd.env(var, value);
        let out = run(cmd, 20);
        expect_fails_naming(
            &out,
            needle,
            &format!(
                "README: a bad environment override ({var}={value}) stops the server naming it"
            ),
        );
    }
}

/// A `dockyard web` started by hand (for an environment of its own).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn environment_override_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut cmd = web(&config);
    cmd.env("DOCKYARD_DOCKYARD_MAX_MANIFEST_SIZE", "2048")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Proc(cmd.spawn().expect("spawn"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("dockyard with an environment override starts");
    let http = client();
    let put = |tag: &str, body: &[u8]| -> u16 {
        http.put(format!("{base}/v2/env/manifests/{tag}"))
            .header("Content-Type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .expect("PUT")
            .status()
            .as_u16()
    };
    let push = |data: &[u8]| -> String {
        let d = sha256(data);
        let s = http
            .post(format!("{base}/v2/env/blobs/uploads/?digest={d}"))
            .body(data.to_vec())
            .send()
            .expect("POST")
            .status();
        assert_eq!(s.as_u16(), 201, "blob push");
        d
    };
    let cfg = push(b"{}");
    let layer = push(b"layer");
    let manifest = |size: usize| -> Vec<u8> {
        let mk = |pad: &str| {
            to_vec(&oci_manifest(
                desc(OCI_CONFIG, &cfg, 2),
                vec![desc(OCI_LAYER, &layer, 5)],
                json!({"annotations": {"pad": pad}}),
            ))
        };
        let base = mk("").len();
        let m = mk(&"x".repeat(size - base));
        assert_eq!(m.len(), size);
        m
    };
    assert_eq!(
        put("big", &manifest(3000)),
        413,
        "DOCKYARD_DOCKYARD_MAX_MANIFEST_SIZE=2048 overrides the limit: a 3000-byte manifest gets 413"
    );
    assert_eq!(
        put("small", &manifest(2000)),
        201,
        "a manifest under the overridden limit is accepted"
    );
}

#[test]
fn version_help_and_migrate() {
    let mut c = dockyard();
    c.arg("--version");
    let out = run(c, 20);
    assert!(out.status.success(), "dockyard --version exits 0");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("dockyard") && stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version prints the name and version: {stdout}"
    );

    let mut c = dockyard();
    c.arg("--help");
    let out = run(c, 20);
    assert!(out.status.success(), "dockyard --help exits 0");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for word in ["web", "migrate"] {
        assert!(
            stdout.contains(word),
            "--help lists the `{word}` command: {stdout}"
        );
    }
    let mut c = dockyard();
    c.args(["web", "--help"]);
    let out = run(c, 20);
    assert!(out.status.success(), "dockyard web --help exits 0");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for flag in ["--address", "--port", "--config"] {
        assert!(
            stdout.contains(flag),
            "web --help documents {flag}: {stdout}"
        );
    }

    let mut c = dockyard();
    c.arg("no-such-command");
    let out = run(c, 20);
    assert!(!out.status.success(), "an unknown subcommand is an error");

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    for round in ["first", "second"] {
        let mut c = dockyard();
        c.args(["migrate", "--config"]).arg(&config);
        let out = run(c, 60);
        assert!(
            out.status.success(),
            "dockyard migrate --config X succeeds ({round} run); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        dir.path().join("data").join("dockyard.db").exists(),
        "migrate creates the SQLite database under dockyard.path"
    );
    let mut c = dockyard();
    c.args(["migrate", "--config"])
        .arg(dir.path().join("absent.toml"));
    let out = run(c, 20);
    expect_fails_naming(
        &out,
        "absent.toml",
        "migrate with a missing --config file fails naming it",
    );
}
