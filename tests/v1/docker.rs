//! The real docker CLI with a private dockerd: an image pushed with v1
//! (as an old client does) is pulled by today's docker (over v2), files
//! and all; `docker search` (which speaks v1) lists the repositories the
//! caller may pull, on a hub without accounts and on one with them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Server;
use crate::dockerd::Dockerd;
use crate::hub::{Cred, Hub};
use crate::support::{require_tool, run, run_capture};
use crate::*;

/// `docker save` an image and unpack its layers, in order, into a root fs.
fn saved_rootfs(d: &Dockerd, image: &str, dir: &Path) -> std::path::PathBuf {
    let tar = require_tool("tar");
    let archive = dir.join("save.tar");
    let unpacked = dir.join("save");
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&unpacked).unwrap();
    std::fs::create_dir_all(&rootfs).unwrap();
    run(d.docker().args(["save", "-o"]).arg(&archive).arg(image));
    run(Command::new(&tar)
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpacked));
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("manifest.json")).unwrap()).unwrap();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        run(Command::new(&tar)
            .arg("-xf")
            .arg(unpacked.join(layer.as_str().unwrap()))
            .arg("-C")
            .arg(&rootfs));
    }
    rootfs
}

fn search(d: &Dockerd, term: &str) -> Vec<String> {
    let out = run_capture(
        d.docker()
            .args([
                "search",
                "--no-trunc",
                "--limit",
                "100",
                "--format",
                "{{.Name}}|{{.Description}}",
            ])
            .arg(term),
        Duration::from_secs(60),
    );
    assert!(
        out.success(),
        "docker search {term}: {}{}",
        out.stdout,
        out.stderr
    );
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn docker_pulls_a_v1_push_and_searches() {
    let d = Dockerd::start();

    // Without accounts.
    let srv = Server::start();
    let c = V1::new(&srv.base);
    let imgs = sample_chain("docker");
    v1_push(&c, None, "legacy/tool", &imgs, "1.0");
    let image = format!("{}/legacy/tool:1.0", srv.addr);
    let out = run_capture(d.docker().args(["pull", &image]), Duration::from_secs(120));
    assert!(
        out.success(),
        "docker pull: {}{}\n{}",
        out.stdout,
        out.stderr,
        d.log_tail()
    );
    let inspect: Value =
        serde_json::from_str(&run(d.docker().args(["image", "inspect", &image]))).unwrap();
    let diff_ids: Vec<String> = imgs.iter().map(|i| sha256(&i.tar)).collect();
    assert_eq!(inspect[0]["RootFS"]["Layers"], json!(diff_ids));
    assert_eq!(
        inspect[0]["Config"]["Cmd"],
        json!(["/bin/cat", "/etc/motd"])
    );
    assert_eq!(inspect[0]["Author"], "v1 test <v1@example.com>");
    let work = tempfile::tempdir().unwrap();
    let root = saved_rootfs(&d, &image, work.path());
    for (path, want) in [
        ("etc/base.txt", b"base layer\n".to_vec()),
        ("bin/tool", vec![7u8; 3000]),
        ("etc/motd", b"hello from v1 docker\n".to_vec()),
        ("usr/share/doc/readme", b"read me\n".to_vec()),
    ] {
        let got = std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == want, "{path} differs in the pulled image");
    }
    let history = run(d.docker().args([
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        &image,
    ]));
    assert!(history.contains("/bin/sh -c echo motd"), "{history}");

    // Search on a hub without accounts: every repository matching.
    c.put_json(
        "/v1/repositories/legacy/other-tool/tags/x",
        None,
        &json!(imgs[0].id),
    );
    c.put_json(
        "/v1/repositories/unrelated/thing/tags/x",
        None,
        &json!(imgs[0].id),
    );
    assert_eq!(
        search(&d, &format!("{}/tool", srv.addr)),
        ["legacy/other-tool|", "legacy/tool|"]
    );

    // With accounts: only what the caller may pull.
    let hub = Hub::start();
    for u in ["alice", "bob"] {
        hub.signup(u, &format!("{u}-password")).expect(200);
    }
    let alice = Cred::basic("alice", "alice-password");
    let bob = Cred::basic("bob", "bob-password");
    hub.uam(
        "POST",
        "/uam/repository",
        &alice,
        Some(json!({"name": "gadget-private", "ispublic": false, "comment": "alice's", "username": "alice"})),
    )
    .expect(200);
    hub.uam(
        "POST",
        "/uam/repository",
        &bob,
        Some(json!({"name": "gadget", "ispublic": true, "comment": "bob's gadget", "username": "bob"})),
    )
    .expect(200);
    hub.uam(
        "POST",
        "/uam/repository",
        &bob,
        Some(json!({"name": "gadget-secret", "ispublic": false, "username": "bob"})),
    )
    .expect(200);
    let term = format!("{}/gadget", hub.srv.addr);
    assert_eq!(search(&d, &term), ["bob/gadget|bob's gadget"], "anonymous");
    let out = run_capture(
        d.docker().args([
            "login",
            &hub.srv.addr,
            "-u",
            "alice",
            "-p",
            "alice-password",
        ]),
        Duration::from_secs(60),
    );
    assert!(out.success(), "docker login: {}{}", out.stdout, out.stderr);
    assert_eq!(
        search(&d, &term),
        ["alice/gadget-private|alice's", "bob/gadget|bob's gadget"],
        "alice sees her private repository, not bob's"
    );
    run(d.docker().args(["logout", &hub.srv.addr]));
}
