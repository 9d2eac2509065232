//! appc ACIs, black-box against a real `dockyard web`: discovery pages and
//! Debian's `actool discover`; the acpush protocol (a client written here
//! from `appc/acpush`'s `lib/lib.go`, as no acpush package exists) with an
//! ACI made by `actool build` and signed by `gpg`; what is served checked
//! by `actool validate` and `gpg --verify`; refused pushes; Docker/OCI
//! images served as ACIs (flattened layers, whiteouts, links, the config
//! mapped, the cache across requests and restarts, concurrent first
//! requests); and the authorization of it all with accounts on.
//!
//! Needs `actool` (Debian `appc-spec`) and `gpg` (`gnupg`):
//! `packaging/install-test-deps.sh`.

mod common;

#[path = "auth/hub.rs"]
mod hub;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use hub::{Cred, Hub, client, sha256};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha512};

use crate::common::Server;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

// ---------------------------------------------------------------- tools

fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run packaging/install-test-deps.sh");
}

/// Runs a command; panics with its output unless it exits 0.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn actool() -> Command {
    Command::new(tool("actool"))
}

/// `actool validate` on bytes served by the hub.
fn actool_validate(dir: &Path, name: &str, aci: &[u8]) {
    let path = dir.join(name);
    std::fs::write(&path, aci).unwrap();
    run(actool().arg("--debug").arg("validate").arg(&path));
}

/// `actool discover --json --insecure --port P NAME`.
fn discover(port: &str, name: &str) -> Result<Value, String> {
    let out = actool()
        .args(["discover", "--json", "--insecure", "--port", port, name])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    // Failed walk attempts are printed before the JSON.
    let json = &stdout[stdout.find('{').ok_or(stdout.clone())?..];
    serde_json::from_str(json).map_err(|e| format!("{e}: {stdout}"))
}

fn port_of(srv: &Server) -> String {
    srv.addr.rsplit(':').next().unwrap().to_string()
}

/// A throwaway OpenPGP key in its own GNUPGHOME.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(
            home.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Gpg { home }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(tool("gpg"));
        c.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty", "--quiet"]);
        c
    }

    fn generate(&self) {
        let params = self.home.path().join("params");
        std::fs::write(
            &params,
            "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n\
             Name-Real: Dockyard Test\nName-Email: test@example.test\nExpire-Date: 0\n%commit\n",
        )
        .unwrap();
        run(self.cmd().arg("--gen-key").arg(&params));
    }

    fn export(&self) -> String {
        run(self.cmd().args(["--armor", "--export"]))
    }

    fn sign(&self, file: &Path) -> Vec<u8> {
        let sig = file.with_extension("aci.asc");
        run(self
            .cmd()
            .args(["--armor", "--detach-sign", "--output"])
            .arg(&sig)
            .arg(file));
        std::fs::read(sig).unwrap()
    }

    fn import(&self, keys: &[u8]) {
        let f = self.home.path().join("import.asc");
        std::fs::write(&f, keys).unwrap();
        run(self.cmd().arg("--import").arg(&f));
    }

    /// True if `sig` verifies `data` with the imported keys.
    fn verify(&self, sig: &[u8], data: &[u8]) -> bool {
        let s = self.home.path().join("v.asc");
        let d = self.home.path().join("v.data");
        std::fs::write(&s, sig).unwrap();
        std::fs::write(&d, data).unwrap();
        self.cmd()
            .arg("--verify")
            .arg(&s)
            .arg(&d)
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

// ---------------------------------------------------------------- ACIs

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

fn image_id_of(aci: &[u8]) -> String {
    let tar = if aci.starts_with(&[0x1f, 0x8b]) {
        gunzip(aci)
    } else {
        aci.to_vec()
    };
    format!("sha512-{}", hex::encode(Sha512::digest(&tar)))
}

/// One entry of an ACI as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    data: Vec<u8>,
    link: String,
}

fn entries(aci: &[u8]) -> (Vec<String>, BTreeMap<String, Entry>) {
    let tar = if aci.starts_with(&[0x1f, 0x8b]) {
        gunzip(aci)
    } else {
        aci.to_vec()
    };
    let mut ar = tar::Archive::new(&tar[..]);
    let mut order = Vec::new();
    let mut map = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let path = path.trim_end_matches('/').to_string();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 's',
            tar::EntryType::Link => 'h',
            tar::EntryType::Fifo => 'p',
            other => panic!("unexpected entry type {other:?} at {path}"),
        };
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.display().to_string())
            .unwrap_or_default();
        order.push(path.clone());
        assert!(
            map.insert(
                path.clone(),
                Entry {
                    kind,
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    data,
                    link,
                },
            )
            .is_none(),
            "{path} appears twice"
        );
    }
    (order, map)
}

/// Builds an ACI with `actool build` from a manifest and files.
fn build_aci(dir: &Path, file: &str, manifest: &Value, files: &[(&str, &[u8])]) -> PathBuf {
    let layout = dir.join(format!("{file}.layout"));
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(layout.join("rootfs")).unwrap();
    std::fs::write(
        layout.join("manifest"),
        serde_json::to_vec_pretty(manifest).unwrap(),
    )
    .unwrap();
    for (path, data) in files {
        let p = layout.join("rootfs").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let out = dir.join(file);
    let _ = std::fs::remove_file(&out);
    run(actool()
        .arg("build")
        .arg("--owner-root")
        .arg(&layout)
        .arg(&out));
    out
}

fn app_manifest(name: &str, version: &str) -> Value {
    json!({
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": name,
        "labels": [
            {"name": "version", "value": version},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"}
        ],
        "app": {"exec": ["/bin/hello"], "user": "0", "group": "0"}
    })
}

/// The image manifest inside an ACI.
fn manifest_of(aci: &[u8]) -> Value {
    let (_, e) = entries(aci);
    serde_json::from_slice(&e.get("manifest").expect("a manifest").data).unwrap()
}

// ---------------------------------------------------------------- acpush

/// `aci.ManifestFromImage`: reads the archive only as far as its
/// manifest (so a client can push an ACI damaged after it).
fn manifest_from_image(aci: &[u8]) -> Result<Value, String> {
    let r: Box<dyn Read> = if aci.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(aci))
    } else {
        Box::new(aci)
    };
    let mut ar = tar::Archive::new(r);
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        if e.path().map_err(|e| e.to_string())?.as_os_str() == "manifest" {
            let mut m = Vec::new();
            e.read_to_end(&mut m).map_err(|e| e.to_string())?;
            return serde_json::from_slice(&m).map_err(|e| e.to_string());
        }
    }
    Err("no manifest in the image".into())
}

/// The `meta` tags of an HTML page: (name, content), entities decoded.
fn meta_tags(html: &str) -> Vec<(String, String)> {
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    };
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<meta ") {
        rest = &rest[i + 6..];
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[..end];
        let attr = |key: &str| {
            let k = format!("{key}=\"");
            tag.find(&k).map(|s| {
                let v = &tag[s + k.len()..];
                unescape(&v[..v.find('"').unwrap_or(v.len())])
            })
        };
        if let (Some(n), Some(c)) = (attr("name"), attr("content")) {
            out.push((n, c));
        }
    }
    out
}

/// What a push client says about itself: name, labels, credentials.
struct Push<'a> {
    host: &'a str,
    port: &'a str,
    uri: &'a str,
    cred: Cred,
}

/// `acpush`'s `Uploader.Upload` (appc/acpush `lib/lib.go`), over plain
/// HTTP with the port given (acpush itself cannot name a port: AC names
/// have none). Returns the server's reason when the push is refused.
fn acpush(p: &Push<'_>, aci: &[u8], asc: &[u8]) -> Result<(), String> {
    acpush_damaged(p, aci, aci, asc)
}

/// As `acpush`, with the manifest read from `intact` while `aci` is what
/// goes over the wire (damaged in transit: `actool build` writes the
/// manifest last, so a damaged file would stop the client itself).
fn acpush_damaged(p: &Push<'_>, intact: &[u8], aci: &[u8], asc: &[u8]) -> Result<(), String> {
    let http = client();
    let send = |method: &str, url: &str, body: Vec<u8>| -> Result<(u16, Vec<u8>), String> {
        let mut rb = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        match &p.cred {
            Cred::Basic(u, pw) => rb = rb.basic_auth(u, Some(pw)),
            Cred::Bearer(t) => rb = rb.bearer_auth(t),
            Cred::Anon => {}
        }
        let r = rb.body(body).send().map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let body = r.bytes().map_err(|e| e.to_string())?.to_vec();
        // performRequest: 200 and 400 carry a body, anything else fails.
        match status {
            200 | 400 => Ok((status, body)),
            s => Err(format!("bad HTTP status code: {s}")),
        }
    };
    // aci.ManifestFromImage, then the app string (`name:version,k=v`).
    let manifest = manifest_from_image(intact)?;
    let (name, mut labels) = {
        let (head, rest) = p.uri.split_once(',').unwrap_or((p.uri, ""));
        let (name, version) = head.split_once(':').unwrap_or((head, ""));
        let mut labels: BTreeMap<String, String> = rest
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        if !version.is_empty() {
            labels.insert("version".into(), version.into());
        }
        (name.to_string(), labels)
    };
    let label_of = |n: &str| {
        manifest["labels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == n)
            .map(|l| l["value"].as_str().unwrap().to_string())
    };
    for l in ["arch", "os"] {
        if !labels.contains_key(l) {
            let v = label_of(l).ok_or(format!("manifest is missing label: {l:?}"))?;
            labels.insert(l.into(), v);
        }
    }
    labels.entry("ext".into()).or_insert_with(|| "aci".into());
    let manblob = serde_json::to_vec(&manifest).unwrap();

    // getInitiationURL: DiscoverEndpoints walks the name up; the first
    // page with any matching tag ends the walk.
    let mut vars = labels.clone();
    vars.entry("version".into())
        .or_insert_with(|| "latest".into());
    let render = |tpl: &str| {
        let mut s = tpl.replace("{name}", &name);
        for (k, v) in &vars {
            s = s.replace(&format!("{{{k}}}"), v);
        }
        s
    };
    let parts: Vec<&str> = name.split('/').collect();
    let mut push_urls = Vec::new();
    for end in (1..=parts.len()).rev() {
        let prefix = parts[..end].join("/");
        let (host, path) = prefix.split_once('/').unwrap_or((&prefix, ""));
        let url = format!("http://{host}:{}/{path}?ac-discovery=1", p.port);
        let Ok((200, body)) = send("GET", &url, Vec::new()) else {
            continue;
        };
        let mut found = false;
        for (kind, content) in meta_tags(&String::from_utf8_lossy(&body)) {
            let Some((pre, uri)) = content.split_once(' ') else {
                continue;
            };
            if !kind.starts_with("ac-") || !name.starts_with(pre) {
                continue;
            }
            found = true;
            if kind == "ac-push-discovery" {
                push_urls.push(render(uri.trim()));
            }
        }
        if found {
            break;
        }
    }
    let init = push_urls.first().ok_or("no endpoints discovered")?.clone();
    assert!(
        init.starts_with(&format!("http://{}:{}/", p.host, p.port)),
        "push endpoint {init} is not the hub"
    );

    let (_, deets) = send("POST", &init, Vec::new())?;
    let deets: Value = serde_json::from_slice(&deets).map_err(|e| e.to_string())?;
    let url = |k: &str| deets[k].as_str().unwrap_or("").to_string();
    for (label, part_url, body) in [
        ("manifest", url("upload_manifest_url"), manblob),
        ("signature", url("upload_signature_url"), asc.to_vec()),
        ("ACI", url("upload_aci_url"), aci.to_vec()),
    ] {
        if let Err(err) = send("PUT", &part_url, body) {
            let reason = format!("error uploading {label}: {err}");
            let msg = json!({"success": false, "reason": reason});
            send("POST", &url("completed_url"), msg.to_string().into_bytes())?;
            return Err(reason);
        }
    }
    let (_, reply) = send(
        "POST",
        &url("completed_url"),
        json!({"success": true}).to_string().into_bytes(),
    )?;
    let reply: Value = serde_json::from_slice(&reply).map_err(|e| e.to_string())?;
    if reply["success"] == true {
        Ok(())
    } else {
        Err(reply["server_reason"].as_str().unwrap_or("").to_string())
    }
}

// ---------------------------------------------------------------- Docker images

fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    owner: (u64, u64),
    data: &[u8],
    link: Option<&str>,
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    match link {
        Some(l) => b.append_link(&mut h, path, l).unwrap(),
        None => b.append_data(&mut h, path, data).unwrap(),
    }
}

use tar::EntryType as T;

/// Layer 1 (gzip): files, a directory to be made opaque, a file and a
/// directory to be whited out, a hard link whose target goes away later.
fn layer1() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, "etc/", T::Directory, 0o755, (0, 0), b"", None);
    tar_entry(
        &mut b,
        "etc/hostname",
        T::Regular,
        0o644,
        (0, 0),
        b"one\n",
        None,
    );
    tar_entry(
        &mut b,
        "a.txt",
        T::Regular,
        0o644,
        (0, 0),
        b"delete me",
        None,
    );
    tar_entry(&mut b, "d/", T::Directory, 0o750, (0, 0), b"", None);
    tar_entry(&mut b, "d/x", T::Regular, 0o644, (0, 0), b"x", None);
    tar_entry(&mut b, "d/y", T::Regular, 0o644, (0, 0), b"y", None);
    tar_entry(&mut b, "bin/", T::Directory, 0o755, (0, 0), b"", None);
    tar_entry(
        &mut b,
        "bin/tool",
        T::Regular,
        0o755,
        (1000, 1000),
        b"#!/bin/sh\necho tool\n",
        None,
    );
    tar_entry(
        &mut b,
        "bin/tool-link",
        T::Link,
        0o755,
        (1000, 1000),
        b"",
        Some("bin/tool"),
    );
    tar_entry(
        &mut b,
        "bin/sh-link",
        T::Symlink,
        0o777,
        (0, 0),
        b"",
        Some("/bin/tool"),
    );
    tar_entry(&mut b, "keep/", T::Directory, 0o755, (0, 0), b"", None);
    tar_entry(
        &mut b,
        "keep/orig",
        T::Regular,
        0o600,
        (7, 8),
        b"original",
        None,
    );
    tar_entry(
        &mut b,
        "keep/alias",
        T::Link,
        0o600,
        (7, 8),
        b"",
        Some("keep/orig"),
    );
    tar_entry(&mut b, "gone/", T::Directory, 0o755, (0, 0), b"", None);
    tar_entry(&mut b, "gone/f", T::Regular, 0o644, (0, 0), b"f", None);
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// Layer 2 (plain tar): whiteouts, an opaque directory, changes.
fn layer2() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, ".wh.a.txt", T::Regular, 0o644, (0, 0), b"", None);
    tar_entry(&mut b, "d/", T::Directory, 0o750, (0, 0), b"", None);
    tar_entry(
        &mut b,
        "d/.wh..wh..opq",
        T::Regular,
        0o644,
        (0, 0),
        b"",
        None,
    );
    tar_entry(&mut b, "d/z", T::Regular, 0o644, (0, 0), b"z", None);
    tar_entry(
        &mut b,
        "etc/hostname",
        T::Regular,
        0o600,
        (0, 0),
        b"two\n",
        None,
    );
    tar_entry(
        &mut b,
        "keep/.wh.orig",
        T::Regular,
        0o644,
        (0, 0),
        b"",
        None,
    );
    tar_entry(&mut b, ".wh.gone", T::Regular, 0o644, (0, 0), b"", None);
    tar_entry(
        &mut b,
        "new/file",
        T::Regular,
        0o640,
        (33, 33),
        b"new",
        None,
    );
    tar_entry(&mut b, "run/pipe", T::Fifo, 0o600, (0, 0), b"", None);
    b.into_inner().unwrap()
}

fn docker_config(arch: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "created": "2024-05-06T07:08:09Z",
        "config": {
            "User": "1000:1000",
            "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
            "Entrypoint": ["/bin/tool"],
            "Cmd": ["--serve", "8080"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

/// Pushes the two-layer Docker image to `repo:tag`; returns the manifest
/// digest.
fn push_docker_image(hub: &Hub, cred: &Cred, repo: &str, tag: &str, arch: &str) -> String {
    let config = docker_config(arch);
    let (l1, l2) = (layer1(), layer2());
    for blob in [&config, &l1, &l2] {
        hub.push_blob(cred, repo, blob).expect(201);
    }
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [
            {"mediaType": DOCKER_LAYER, "digest": sha256(&l1), "size": l1.len()},
            {"mediaType": OCI_LAYER, "digest": sha256(&l2), "size": l2.len()},
        ],
    }))
    .unwrap();
    hub.send(
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        cred,
        &[("Content-Type", DOCKER_MANIFEST)],
        Some(m.clone()),
    )
    .expect(201);
    sha256(&m)
}

/// What applying the layers gives, below `rootfs/`.
fn expected_rootfs() -> BTreeMap<String, Entry> {
    let e = |kind, mode, uid, gid, data: &[u8], link: &str| Entry {
        kind,
        mode,
        uid,
        gid,
        data: data.to_vec(),
        link: link.to_string(),
    };
    let mut m = BTreeMap::new();
    for (p, en) in [
        ("etc", e('d', 0o755, 0, 0, b"", "")),
        ("etc/hostname", e('f', 0o600, 0, 0, b"two\n", "")),
        ("d", e('d', 0o750, 0, 0, b"", "")),
        ("d/z", e('f', 0o644, 0, 0, b"z", "")),
        ("bin", e('d', 0o755, 0, 0, b"", "")),
        (
            "bin/tool",
            e('f', 0o755, 1000, 1000, b"#!/bin/sh\necho tool\n", ""),
        ),
        (
            "bin/tool-link",
            e('h', 0o755, 1000, 1000, b"", "rootfs/bin/tool"),
        ),
        ("bin/sh-link", e('s', 0o777, 0, 0, b"", "/bin/tool")),
        ("keep", e('d', 0o755, 0, 0, b"", "")),
        // Its target was deleted above: the link carries the content.
        ("keep/alias", e('f', 0o600, 7, 8, b"original", "")),
        ("new/file", e('f', 0o640, 33, 33, b"new", "")),
        ("run/pipe", e('p', 0o600, 0, 0, b"", "")),
    ] {
        m.insert(format!("rootfs/{p}"), en);
    }
    m
}

fn blob_files(dir: &Path) -> usize {
    fn walk(p: &Path, n: &mut usize) {
        if let Ok(rd) = std::fs::read_dir(p) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, n);
                } else {
                    *n += 1;
                }
            }
        }
    }
    let mut n = 0;
    walk(&dir.join("blobs"), &mut n);
    n
}

fn standalone(extra: &str) -> Hub {
    let srv = Server::start_config(extra);
    Hub {
        base: srv.base.clone(),
        srv,
        http: client(),
        key: PathBuf::new(),
        cert: PathBuf::new(),
    }
}

fn get(hub: &Hub, url: &str, cred: &Cred) -> hub::Resp {
    hub.send("GET", url, cred, &[], None)
}

// ---------------------------------------------------------------- tests

#[test]
fn discovery_pages_and_actool_discover() {
    let hub = standalone("domains = \"127.0.0.1, hub.example.test\"");
    let port = port_of(&hub.srv);
    push_docker_image(&hub, &Cred::Anon, "acme/conv", "v1", "amd64");

    // The root page: templates and the push endpoint for every domain.
    let root = get(&hub, "/?ac-discovery=1", &Cred::Anon);
    root.expect(200);
    assert!(root.header("content-type").starts_with("text/html"));
    let tags = meta_tags(&root.text());
    let base = &hub.base;
    for d in ["127.0.0.1", "hub.example.test"] {
        assert!(
            tags.contains(&(
                "ac-discovery".into(),
                format!("{d} {base}/_aci/images/{{name}}/{{version}}/{{os}}/{{arch}}.{{ext}}")
            )),
            "{tags:?}"
        );
        assert!(
            tags.contains(&(
                "ac-push-discovery".into(),
                format!(
                    "{d} {base}/_aci/push/{{name}}?version={{version}}&os={{os}}&arch={{arch}}"
                )
            )),
            "{tags:?}"
        );
    }
    // Escaped as HTML: the raw page has &amp; in the push template.
    assert!(root.text().contains("&amp;os={os}"));

    // A repository's page adds its namespace's keys.
    let page = get(&hub, "/acme/conv?ac-discovery=1", &Cred::Anon);
    page.expect(200);
    let tags = meta_tags(&page.text());
    assert!(
        tags.contains(&(
            "ac-discovery-pubkeys".into(),
            format!("127.0.0.1/acme/conv {base}/_aci/pubkeys/acme")
        )),
        "{tags:?}"
    );
    get(&hub, "/acme/none?ac-discovery=1", &Cred::Anon).expect(404);
    get(&hub, "/acme/conv", &Cred::Anon).expect(404);
    get(&hub, "/acme/conv?ac-discovery=0", &Cred::Anon).expect(404);

    // actool resolves names to the hub's URLs.
    let d = discover(&port, "127.0.0.1/acme/conv:v1").expect("discover");
    let img = format!("{base}/_aci/images/127.0.0.1/acme/conv/v1/linux/amd64");
    assert_eq!(d["ACIEndpoints"][0]["ACI"], format!("{img}.aci"), "{d}");
    assert_eq!(d["ACIEndpoints"][0]["ASC"], format!("{img}.aci.asc"), "{d}");
    assert_eq!(
        d["PublicKeys"],
        json!([format!("{base}/_aci/pubkeys/acme")])
    );
    // Without a version, discovery asks for latest.
    let d = discover(&port, "127.0.0.1/acme/conv").expect("discover");
    assert_eq!(
        d["ACIEndpoints"][0]["ACI"],
        format!("{base}/_aci/images/127.0.0.1/acme/conv/latest/linux/amd64.aci")
    );
    // The URL it gave serves the (converted) ACI.
    let aci = get(&hub, &format!("{img}.aci"), &Cred::Anon);
    aci.expect(200);
    assert_eq!(manifest_of(&aci.body)["name"], "127.0.0.1/acme/conv");
    // Another configured domain names the same repository.
    let other = get(
        &hub,
        "/_aci/images/hub.example.test/acme/conv/v1/linux/amd64.aci",
        &Cred::Anon,
    );
    other.expect(200);
    assert_eq!(
        manifest_of(&other.body)["name"],
        "hub.example.test/acme/conv"
    );
    // A domain the hub does not answer for names nothing.
    get(
        &hub,
        "/_aci/images/other.test/acme/conv/v1/linux/amd64.aci",
        &Cred::Anon,
    )
    .expect(404);
    // A name of nothing gives no keys: actool finds the root page only.
    assert!(discover(&port, "127.0.0.1/acme/none").is_err());
}

#[test]
fn acpush_fetch_verify_and_refusals() {
    let hub = standalone("domains = \"127.0.0.1\"");
    let port = port_of(&hub.srv);
    let base = hub.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let gpg = Gpg::new();
    gpg.generate();
    let pubkey = gpg.export();
    hub.send(
        "PUT",
        "/uam/aci/pubkeys/acme",
        &Cred::Anon,
        &[],
        Some(pubkey.clone().into_bytes()),
    )
    .expect(200);
    hub.send(
        "PUT",
        "/uam/aci/pubkeys/acme",
        &Cred::Anon,
        &[],
        Some(b"not a key".to_vec()),
    )
    .expect(400);

    let name = "127.0.0.1/acme/app";
    let file = build_aci(
        dir.path(),
        "app-1.0.0.aci",
        &app_manifest(name, "1.0.0"),
        &[
            ("bin/hello", b"#!/bin/sh\necho hello\n"),
            ("etc/motd", b"hi\n"),
        ],
    );
    let aci = std::fs::read(&file).unwrap();
    assert!(aci.starts_with(&[0x1f, 0x8b]), "actool build gzips");
    let asc = gpg.sign(&file);
    let push = |uri: &str, aci: &[u8], asc: &[u8]| {
        acpush(
            &Push {
                host: "127.0.0.1",
                port: &port,
                uri,
                cred: Cred::Anon,
            },
            aci,
            asc,
        )
    };
    push("127.0.0.1/acme/app:1.0.0", &aci, &asc).expect("acpush");

    // Fetched back as discovery says: the same bytes, signature, keys.
    let d = discover(&port, "127.0.0.1/acme/app:1.0.0").expect("discover");
    let aci_url = d["ACIEndpoints"][0]["ACI"].as_str().unwrap().to_string();
    let asc_url = d["ACIEndpoints"][0]["ASC"].as_str().unwrap().to_string();
    assert_eq!(
        aci_url,
        format!("{base}/_aci/images/{name}/1.0.0/linux/amd64.aci")
    );
    let got = get(&hub, &aci_url, &Cred::Anon);
    got.expect(200);
    assert_eq!(got.body, aci, "the ACI comes back as pushed");
    assert_eq!(got.header("x-aci-image-id"), image_id_of(&aci));
    assert_eq!(got.header("x-aci-image-id").len(), "sha512-".len() + 128);
    actool_validate(dir.path(), "served.aci", &got.body);
    let sig = get(&hub, &asc_url, &Cred::Anon);
    sig.expect(200);
    assert_eq!(sig.body, asc);
    let keys_url = d["PublicKeys"][0].as_str().unwrap();
    let keys = get(&hub, keys_url, &Cred::Anon);
    keys.expect(200);
    assert_eq!(keys.text(), pubkey);
    let verifier = Gpg::new();
    verifier.import(&keys.body);
    assert!(
        verifier.verify(&sig.body, &got.body),
        "the served signature verifies"
    );
    let mut tampered = got.body.clone();
    let n = tampered.len();
    tampered[n - 20] ^= 1;
    assert!(!verifier.verify(&sig.body, &tampered), "gpg really checks");
    // `latest` follows the push.
    let latest = get(
        &hub,
        &format!("{base}/_aci/images/{name}/latest/linux/amd64.aci"),
        &Cred::Anon,
    );
    latest.expect(200);
    assert_eq!(latest.body, aci);
    // Other labels name nothing.
    get(
        &hub,
        &format!("{base}/_aci/images/{name}/1.0.0/linux/aarch64.aci"),
        &Cred::Anon,
    )
    .expect(404);
    get(
        &hub,
        &format!("{base}/_aci/images/{name}/9.9/linux/amd64.aci.asc"),
        &Cred::Anon,
    )
    .expect(404);

    // A push without a version takes the manifest's; uncompressed works.
    let file2 = build_aci(
        dir.path(),
        "app-2.0.0.aci",
        &app_manifest(name, "2.0.0"),
        &[("bin/hello", b"#!/bin/sh\necho two\n")],
    );
    let plain = gunzip(&std::fs::read(&file2).unwrap());
    push("127.0.0.1/acme/app", &plain, &gpg.sign(&file2)).expect("acpush without version");
    let two = get(
        &hub,
        &format!("{base}/_aci/images/{name}/2.0.0/linux/amd64.aci"),
        &Cred::Anon,
    );
    two.expect(200);
    assert_eq!(two.body, plain);
    assert_eq!(two.header("x-aci-image-id"), image_id_of(&plain));
    actool_validate(dir.path(), "two.aci", &two.body);
    let latest = get(
        &hub,
        &format!("{base}/_aci/images/{name}/latest/linux/amd64.aci"),
        &Cred::Anon,
    );
    assert_eq!(latest.body, plain);

    // Refused: a manifest naming another image, labels that do not match
    // the push, a corrupt or truncated ACI. Nothing changes.
    let other = build_aci(
        dir.path(),
        "other.aci",
        &app_manifest("127.0.0.1/acme/other", "1.0.0"),
        &[],
    );
    let err = push(
        "127.0.0.1/acme/app:1.0.0",
        &std::fs::read(&other).unwrap(),
        &asc,
    )
    .unwrap_err();
    assert!(err.contains("127.0.0.1/acme/other"), "{err}");
    // Big enough (and incompressible) that damage lies after the manifest.
    let noise: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let v3 = build_aci(
        dir.path(),
        "v3.aci",
        &app_manifest(name, "3.0.0"),
        &[("data", &noise)],
    );
    let v3 = std::fs::read(&v3).unwrap();
    let err = push("127.0.0.1/acme/app:1.0.0", &v3, &asc).unwrap_err();
    assert!(err.contains("version"), "{err}");
    let err = push("127.0.0.1/acme/app:3.0.0,arch=aarch64", &v3, &asc).unwrap_err();
    assert!(err.contains("arch"), "{err}");
    let damaged = |aci: &[u8]| {
        acpush_damaged(
            &Push {
                host: "127.0.0.1",
                port: &port,
                uri: "127.0.0.1/acme/app:3.0.0",
                cred: Cred::Anon,
            },
            &v3,
            aci,
            &asc,
        )
    };
    let err = damaged(&v3[..v3.len() - 100]).unwrap_err();
    assert!(err.contains("invalid"), "truncated: {err}");
    let mut corrupt = v3.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0xff;
    let err = damaged(&corrupt).unwrap_err();
    assert!(err.contains("invalid"), "corrupt: {err}");
    // Uncompressed and cut at an entry boundary: only the missing end
    // marker tells.
    let plain3 = gunzip(&v3);
    let err = damaged(&plain3[..plain3.len() - 1024]).unwrap_err();
    assert!(err.contains("truncated"), "cut tar: {err}");
    let err = push("127.0.0.1/acme/app:3.0.0", &v3, b"not a signature").unwrap_err();
    assert!(err.contains("armor"), "{err}");
    get(
        &hub,
        &format!("{base}/_aci/images/{name}/3.0.0/linux/amd64.aci"),
        &Cred::Anon,
    )
    .expect(404);
    let still = get(
        &hub,
        &format!("{base}/_aci/images/{name}/1.0.0/linux/amd64.aci"),
        &Cred::Anon,
    );
    assert_eq!(still.body, aci);
    let latest = get(
        &hub,
        &format!("{base}/_aci/images/{name}/latest/linux/amd64.aci"),
        &Cred::Anon,
    );
    assert_eq!(latest.body, plain);
    // And then the same push, intact, goes through.
    push("127.0.0.1/acme/app:3.0.0", &v3, &asc).expect("intact push");
    // A completion the client reports as failed stores nothing.
    let init = hub.send(
        "POST",
        "/_aci/push/127.0.0.1/acme/app?version=4.0.0&os=linux&arch=amd64",
        &Cred::Anon,
        &[],
        None,
    );
    init.expect(200);
    let complete = init.json()["completed_url"].as_str().unwrap().to_string();
    let r = hub.send(
        "POST",
        &complete,
        &Cred::Anon,
        &[],
        Some(br#"{"success":false,"reason":"user gave up"}"#.to_vec()),
    );
    r.expect(400);
    assert_eq!(r.json()["success"], false);
    assert!(
        r.json()["reason"]
            .as_str()
            .unwrap()
            .contains("user gave up")
    );
    // Keys administration.
    hub.send("GET", "/uam/aci/pubkeys/acme", &Cred::Anon, &[], None)
        .expect(200);
    hub.send("DELETE", "/uam/aci/pubkeys/acme", &Cred::Anon, &[], None)
        .expect(204);
    get(&hub, keys_url, &Cred::Anon).expect(404);
}

#[test]
fn docker_images_as_acis() {
    let mut hub = standalone("domains = \"127.0.0.1\"");
    let base = hub.base.clone();
    let dir = tempfile::tempdir().unwrap();
    let digest = push_docker_image(&hub, &Cred::Anon, "team/web", "1.5", "amd64");
    let url = format!("{base}/_aci/images/127.0.0.1/team/web/1.5/linux/amd64.aci");
    let blobs_before = blob_files(&hub.srv.data_dir());

    // Concurrent first requests: one conversion, the same bytes for all.
    let bodies: Vec<hub::Resp> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| get(&hub, &url, &Cred::Anon)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for b in &bodies {
        b.expect(200);
        assert_eq!(b.body, bodies[0].body);
        assert_eq!(
            b.header("x-aci-image-id"),
            bodies[0].header("x-aci-image-id")
        );
    }
    assert_eq!(
        blob_files(&hub.srv.data_dir()),
        blobs_before + 1,
        "converted once, stored once"
    );
    let aci = bodies[0].body.clone();
    assert_eq!(bodies[0].header("x-aci-image-id"), image_id_of(&aci));
    actool_validate(dir.path(), "web.aci", &aci);

    // The rootfs is what applying the layers gives.
    let (order, found) = entries(&aci);
    assert_eq!(order[0], "manifest");
    assert_eq!(order[1], "rootfs");
    let rootfs: BTreeMap<String, Entry> = found
        .iter()
        .filter(|(p, _)| p.starts_with("rootfs/"))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect();
    assert_eq!(rootfs, expected_rootfs());
    // Hard links come after their targets.
    let pos = |p: &str| order.iter().position(|x| x == p).unwrap();
    assert!(pos("rootfs/bin/tool") < pos("rootfs/bin/tool-link"));

    // The manifest maps the config.
    let m = manifest_of(&aci);
    assert_eq!(m["acKind"], "ImageManifest");
    assert_eq!(m["name"], "127.0.0.1/team/web");
    assert_eq!(
        m["labels"],
        json!([
            {"name": "version", "value": "1.5"},
            {"name": "os", "value": "linux"},
            {"name": "arch", "value": "amd64"}
        ])
    );
    let app = &m["app"];
    assert_eq!(app["exec"], json!(["/bin/tool", "--serve", "8080"]));
    assert_eq!(app["user"], "1000");
    assert_eq!(app["group"], "1000");
    assert_eq!(app["workingDirectory"], "/srv");
    assert_eq!(
        app["environment"],
        json!([{"name": "PATH", "value": "/usr/bin:/bin"}, {"name": "GREETING", "value": "hello world"}])
    );
    assert_eq!(
        app["ports"],
        json!([
            {"name": "udp-53", "protocol": "udp", "port": 53, "count": 1, "socketActivated": false},
            {"name": "tcp-8080", "protocol": "tcp", "port": 8080, "count": 1, "socketActivated": false}
        ])
    );
    let ann: BTreeMap<String, String> = m["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().into(),
                a["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(ann["appc.io/docker/manifesthash"], digest);
    assert_eq!(ann["created"], "2024-05-06T07:08:09Z");

    // Converted images have no signature.
    get(&hub, &format!("{}.asc", url), &Cred::Anon).expect(404);
    // Other platforms and tags name nothing.
    get(&hub, &url.replace("amd64.aci", "aarch64.aci"), &Cred::Anon).expect(404);
    get(&hub, &url.replace("/1.5/", "/9.9/"), &Cred::Anon).expect(404);

    // Served from the cache: again, and after a restart.
    let again = get(&hub, &url, &Cred::Anon);
    assert_eq!(again.body, aci);
    assert_eq!(blob_files(&hub.srv.data_dir()), blobs_before + 1);
    hub.srv.restart();
    hub.base = hub.srv.base.clone();
    let after = get(&hub, &url, &Cred::Anon);
    after.expect(200);
    assert_eq!(after.body, aci);
    assert_eq!(after.header("x-aci-image-id"), image_id_of(&aci));
    assert_eq!(blob_files(&hub.srv.data_dir()), blobs_before + 1);

    // A multi-platform index: each platform its own ACI.
    let amd = push_docker_image(&hub, &Cred::Anon, "team/multi", "amd", "amd64");
    let arm = push_docker_image(&hub, &Cred::Anon, "team/multi", "arm", "arm64");
    let size = |d: &str| {
        get(&hub, &format!("/v2/team/multi/manifests/{d}"), &Cred::Anon)
            .body
            .len()
    };
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": amd, "size": size(&amd),
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": DOCKER_MANIFEST, "digest": arm, "size": size(&arm),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ],
    }))
    .unwrap();
    hub.send(
        "PUT",
        "/v2/team/multi/manifests/2.0",
        &Cred::Anon,
        &[("Content-Type", OCI_INDEX)],
        Some(index),
    )
    .expect(201);
    let a64 = get(
        &hub,
        "/_aci/images/127.0.0.1/team/multi/2.0/linux/aarch64.aci",
        &Cred::Anon,
    );
    a64.expect(200);
    let m = manifest_of(&a64.body);
    assert_eq!(m["labels"][2]["value"], "aarch64");
    let ann = m["annotations"].as_array().unwrap();
    assert!(
        ann.iter()
            .any(|a| a["name"] == "appc.io/docker/manifesthash" && a["value"] == arm.as_str())
    );
    actool_validate(dir.path(), "arm.aci", &a64.body);
    let x86 = get(
        &hub,
        "/_aci/images/127.0.0.1/team/multi/2.0/linux/amd64.aci",
        &Cred::Anon,
    );
    x86.expect(200);
    assert_ne!(x86.body, a64.body);

    // An OCI image manifest too, with an unsupported (zstd) layer refused.
    let config = docker_config("amd64");
    let zstd = vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
    hub.push_blob(&Cred::Anon, "team/zstd", &config).expect(201);
    hub.push_blob(&Cred::Anon, "team/zstd", &zstd).expect(201);
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": sha256(&zstd), "size": zstd.len()}],
    }))
    .unwrap();
    hub.put_manifest(&Cred::Anon, "team/zstd", "1", &m)
        .expect(201);
    let r = get(
        &hub,
        "/_aci/images/127.0.0.1/team/zstd/1/linux/amd64.aci",
        &Cred::Anon,
    );
    r.expect(422);
    assert!(r.text().contains("zstd"), "{}", r.text());
}

#[test]
fn private_images_need_permission() {
    let hub = Hub::start();
    let port = port_of(&hub.srv);
    let base = hub.base.clone();
    for u in ["alice", "bob"] {
        hub.signup(u, &format!("{u}-password-1")).expect(200);
    }
    let alice = Cred::basic("alice", "alice-password-1");
    let bob = Cred::basic("bob", "bob-password-1");
    push_docker_image(&hub, &alice, "alice/private", "1", "amd64");
    let url = "/_aci/images/127.0.0.1/alice/private/1/linux/amd64.aci";

    // Not discoverable or fetchable by outsiders: as if it did not exist.
    for cred in [&Cred::Anon, &bob] {
        let page = get(&hub, "/alice/private?ac-discovery=1", cred);
        page.expect(404);
        let none = get(&hub, "/alice/none?ac-discovery=1", cred);
        assert_eq!(
            (page.status, page.body.clone()),
            (none.status, none.body.clone())
        );
        let hidden = get(&hub, url, cred);
        let absent = get(&hub, &url.replace("private", "absent"), cred);
        assert_eq!(hidden.status, absent.status);
        assert_eq!(hidden.text(), absent.text().replace("absent", "private"));
        assert!(
            hidden.status == 401 || hidden.status == 404,
            "{}",
            hidden.describe()
        );
    }
    assert_eq!(get(&hub, url, &Cred::Anon).status, 401);
    // actool has no credentials: it finds no page of the image and no keys.
    assert!(discover(&port, "127.0.0.1/alice/private").is_err());
    // The owner sees it.
    get(&hub, "/alice/private?ac-discovery=1", &alice).expect(200);
    let aci = get(&hub, url, &alice);
    aci.expect(200);
    assert_eq!(manifest_of(&aci.body)["name"], "127.0.0.1/alice/private");

    // Pushing needs push permission.
    let dir = tempfile::tempdir().unwrap();
    let gpg = Gpg::new();
    gpg.generate();
    let file = build_aci(
        dir.path(),
        "a.aci",
        &app_manifest("127.0.0.1/alice/app", "1.0"),
        &[("x", b"x")],
    );
    let aci = std::fs::read(&file).unwrap();
    let asc = gpg.sign(&file);
    let push = |cred: Cred| {
        acpush(
            &Push {
                host: "127.0.0.1",
                port: &port,
                uri: "127.0.0.1/alice/app:1.0",
                cred,
            },
            &aci,
            &asc,
        )
    };
    let err = push(Cred::Anon).unwrap_err();
    assert!(err.contains("401"), "{err}");
    let err = push(bob.clone()).unwrap_err();
    assert!(err.contains("404") || err.contains("403"), "{err}");
    push(alice.clone()).expect("the owner pushes");
    let got = get(
        &hub,
        &format!("{base}/_aci/images/127.0.0.1/alice/app/1.0/linux/amd64.aci"),
        &alice,
    );
    got.expect(200);
    assert_eq!(got.body, aci);
    get(
        &hub,
        "/_aci/images/127.0.0.1/alice/app/1.0/linux/amd64.aci",
        &bob,
    )
    .expect(404);

    // Keys: the namespace's owners only.
    let key = gpg.export().into_bytes();
    hub.send(
        "PUT",
        "/uam/aci/pubkeys/alice",
        &bob,
        &[],
        Some(key.clone()),
    )
    .expect(403);
    hub.send(
        "PUT",
        "/uam/aci/pubkeys/alice",
        &Cred::Anon,
        &[],
        Some(key.clone()),
    )
    .expect(401);
    hub.send(
        "PUT",
        "/uam/aci/pubkeys/alice",
        &alice,
        &[],
        Some(key.clone()),
    )
    .expect(200);
    hub.send(
        "PUT",
        "/uam/aci/pubkeys/alice",
        &Cred::admin(),
        &[],
        Some(key.clone()),
    )
    .expect(200);
    assert_eq!(get(&hub, "/_aci/pubkeys/alice", &Cred::Anon).body, key);

    // Pulls and pushes are in the audit log.
    let pulls = hub.audit(&Cred::admin(), "repo=alice/private&action=pull");
    assert!(pulls.iter().any(|e| e["user"] == "alice"), "{pulls:?}");
    let pushes = hub.audit(&Cred::admin(), "repo=alice/app&action=push");
    assert!(
        pushes
            .iter()
            .any(|e| e["user"] == "alice" && e["target"] == "aci:1.0/linux/amd64"),
        "{pushes:?}"
    );
}

#[test]
fn garbage_collection_keeps_what_acis_name() {
    let mut hub = standalone("domains = \"127.0.0.1\"");
    let port = port_of(&hub.srv);
    let dir = tempfile::tempdir().unwrap();
    let gpg = Gpg::new();
    gpg.generate();
    let name = "127.0.0.1/acme/gc";
    let push = |file: &Path| {
        let aci = std::fs::read(file).unwrap();
        let asc = gpg.sign(file);
        acpush(
            &Push {
                host: "127.0.0.1",
                port: &port,
                uri: "127.0.0.1/acme/gc:1.0",
                cred: Cred::Anon,
            },
            &aci,
            &asc,
        )
        .expect("acpush");
        (aci, asc)
    };
    let old = build_aci(
        dir.path(),
        "old.aci",
        &app_manifest(name, "1.0"),
        &[("f", b"old")],
    );
    push(&old);
    // Pushed again under the same labels: the first ACI is named no more.
    let new = build_aci(
        dir.path(),
        "new.aci",
        &app_manifest(name, "1.0"),
        &[("f", b"new")],
    );
    let (aci, asc) = push(&new);
    push_docker_image(&hub, &Cred::Anon, "acme/img", "1", "amd64");
    let conv_url = "/_aci/images/127.0.0.1/acme/img/1/linux/amd64.aci";
    let converted = get(&hub, conv_url, &Cred::Anon);
    converted.expect(200);
    let before = blob_files(&hub.srv.data_dir());

    std::thread::sleep(std::time::Duration::from_millis(1100));
    hub.srv.kill();
    let out = Command::new(env!("CARGO_BIN_EXE_dockyard"))
        .args(["gc", "--grace", "0", "--config"])
        .arg(&hub.srv.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    hub.srv.restart();
    hub.base = hub.srv.base.clone();

    // The old ACI and its signature went; nothing any record names did.
    assert_eq!(blob_files(&hub.srv.data_dir()), before - 2);
    let url = format!("/_aci/images/{name}/1.0/linux/amd64.aci");
    assert_eq!(get(&hub, &url, &Cred::Anon).body, aci);
    assert_eq!(get(&hub, &format!("{url}.asc"), &Cred::Anon).body, asc);
    let latest = url.replace("/1.0/", "/latest/");
    assert_eq!(get(&hub, &latest, &Cred::Anon).body, aci);
    let again = get(&hub, conv_url, &Cred::Anon);
    again.expect(200);
    assert_eq!(again.body, converted.body);
    assert_eq!(
        blob_files(&hub.srv.data_dir()),
        before - 2,
        "no new conversion"
    );
}

/// One image pushed over v2 and fetched three ways: over v2 (the manifest
/// and blobs as pushed), over v1 (a chain whose layers are the v2 blobs)
/// and as an ACI (the layers applied, valid for `actool`).
#[test]
fn one_v2_push_fetched_by_v2_v1_and_as_aci() {
    let hub = standalone("domains = \"127.0.0.1\"");
    let dir = tempfile::tempdir().unwrap();
    let digest = push_docker_image(&hub, &Cred::Anon, "every/format", "3.1", "amd64");
    let (l1, l2) = (layer1(), layer2());

    // v2: the manifest by tag and digest, every blob as pushed.
    let m = hub.send(
        "GET",
        "/v2/every/format/manifests/3.1",
        &Cred::Anon,
        &[("Accept", DOCKER_MANIFEST)],
        None,
    );
    m.expect(200);
    assert_eq!(m.header("docker-content-digest"), digest);
    assert_eq!(sha256(&m.body), digest);
    let manifest = m.json();
    let config = get(
        &hub,
        &format!(
            "/v2/every/format/blobs/{}",
            manifest["config"]["digest"].as_str().unwrap()
        ),
        &Cred::Anon,
    );
    config.expect(200);
    assert_eq!(config.body, docker_config("amd64"));
    for (layer, blob) in manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip([&l1, &l2])
    {
        let r = get(
            &hub,
            &format!(
                "/v2/every/format/blobs/{}",
                layer["digest"].as_str().unwrap()
            ),
            &Cred::Anon,
        );
        r.expect(200);
        assert!(r.body == *blob);
    }

    // v1: tag → image id → ancestry (top first) → JSON and layer of each.
    let tags = get(&hub, "/v1/repositories/every/format/tags", &Cred::Anon);
    tags.expect(200);
    let top = tags.json()["3.1"].as_str().unwrap().to_string();
    let ancestry = get(&hub, &format!("/v1/images/{top}/ancestry"), &Cred::Anon);
    ancestry.expect(200);
    let ids: Vec<String> = serde_json::from_slice(&ancestry.body).unwrap();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], top);
    for (i, (id, blob)) in ids.iter().zip([&l2, &l1]).enumerate() {
        let j = get(&hub, &format!("/v1/images/{id}/json"), &Cred::Anon);
        j.expect(200);
        let j = j.json();
        assert_eq!(j["id"], id.as_str());
        match ids.get(i + 1) {
            Some(parent) => assert_eq!(j["parent"], parent.as_str()),
            None => assert!(j.get("parent").is_none(), "{j}"),
        }
        let layer = get(&hub, &format!("/v1/images/{id}/layer"), &Cred::Anon);
        layer.expect(200);
        assert!(layer.body == *blob, "layer of {id}");
    }
    let top_json = get(&hub, &format!("/v1/images/{top}/json"), &Cred::Anon).json();
    assert_eq!(top_json["config"]["Entrypoint"], json!(["/bin/tool"]));
    assert_eq!(top_json["config"]["WorkingDir"], "/srv");

    // ACI: the layers applied, the config mapped, valid for actool.
    let aci = get(
        &hub,
        "/_aci/images/127.0.0.1/every/format/3.1/linux/amd64.aci",
        &Cred::Anon,
    );
    aci.expect(200);
    actool_validate(dir.path(), "every.aci", &aci.body);
    let (_, found) = entries(&aci.body);
    let rootfs: BTreeMap<String, Entry> = found
        .into_iter()
        .filter(|(p, _)| p.starts_with("rootfs/"))
        .collect();
    assert_eq!(rootfs, expected_rootfs());
    let am = manifest_of(&aci.body);
    assert_eq!(am["name"], "127.0.0.1/every/format");
    assert_eq!(am["app"]["exec"], json!(["/bin/tool", "--serve", "8080"]));
    assert!(
        am["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "appc.io/docker/manifesthash" && a["value"] == digest.as_str())
    );
}
