//! The real docker CLI with a private dockerd against a hub with auth on:
//! `docker login` with right and wrong credentials, a push to one's own
//! namespace, a push into someone else's namespace that the CLI reports
//! as `denied`, pulls after `docker logout` (private refused, public
//! allowed), and `docker login` with an API token as the password.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::dockerd::Dockerd;
use crate::hub::*;
use crate::support::{require_tool, run, run_capture};

/// Runs a docker command; returns (success, stdout + stderr).
fn docker(d: &Dockerd, args: &[&str]) -> (bool, String) {
    let out = run_capture(d.docker().args(args), Duration::from_secs(180));
    (out.success(), format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn docker_cli_login_push_pull_with_auth() {
    let hub = Hub::start();
    let d = Dockerd::start();
    let addr = hub.srv.addr.clone();
    for u in ["alice", "bob"] {
        hub.signup(u, &format!("{u}-password")).expect(200);
    }
    let alice = Cred::basic("alice", "alice-password");
    let bob = Cred::basic("bob", "bob-password");

    // A one-layer image made offline.
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), format!("hello {}\n", unique())).unwrap();
    let tar = work.path().join("rootfs.tar");
    run(Command::new(require_tool("tar"))
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let local = format!("dockyard-auth-test:{}", unique());
    run(d.docker().arg("import").arg(&tar).arg(&local));

    // Login.
    let (ok, out) = docker(&d, &["login", &addr, "-u", "alice", "-p", "wrong-password"]);
    assert!(!ok, "docker login with a wrong password must fail:\n{out}");
    let (ok, out) = docker(
        &d,
        &["login", &addr, "-u", "nobody", "-p", "nobody-password"],
    );
    assert!(!ok, "docker login of an unknown user must fail:\n{out}");
    let (ok, out) = docker(&d, &["login", &addr, "-u", "alice", "-p", "alice-password"]);
    assert!(
        ok && out.contains("Login Succeeded"),
        "docker login:\n{out}"
    );

    // Push to her own namespace: the repository is created, private.
    let own = format!("{addr}/alice/app:v1");
    run(d.docker().args(["tag", &local, &own]));
    let (ok, out) = docker(&d, &["push", &own]);
    assert!(ok, "docker push to the own namespace:\n{out}");
    let m = hub.get_manifest(&alice, "alice/app", "v1");
    m.expect(200);
    assert!(
        out.contains(&m.header("docker-content-digest")),
        "pushed digest:\n{out}"
    );
    let show = hub.uam("GET", "/uam/repository/alice/app", &alice, None);
    show.expect(200);
    assert_eq!(show.json()["ispublic"], false, "{}", show.describe());

    // Into bob's namespace: denied, nothing created.
    let foreign = format!("{addr}/bob/app:v1");
    run(d.docker().args(["tag", &local, &foreign]));
    let started = std::time::Instant::now();
    let (ok, out) = docker(&d, &["push", &foreign]);
    let took = started.elapsed();
    assert!(
        !ok,
        "docker push into someone else's namespace must fail:\n{out}"
    );
    assert!(out.contains("denied"), "the CLI must say `denied`:\n{out}");
    // A refusal is final: the client must not take it for a transient
    // error and retry (docker retries unless the error is one it knows
    // not to retry, e.g. DENIED with a detail or an insufficient_scope
    // challenge).
    let final_refusal = !out.contains("Retrying in") && took < Duration::from_secs(20);
    let r = hub.get_manifest(&bob, "bob/app", "v1");
    assert_eq!(
        r.status,
        404,
        "nothing may be pushed to bob/app: {}",
        r.describe()
    );
    let r = hub.uam("GET", "/uam/repository/bob/app", &Cred::admin(), None);
    assert_eq!(
        r.status,
        404,
        "bob/app must not be created: {}",
        r.describe()
    );

    // A public repository next to the private one.
    let public = format!("{addr}/alice/pub:v1");
    run(d.docker().args(["tag", &local, &public]));
    let (ok, out) = docker(&d, &["push", &public]);
    assert!(ok, "{out}");
    hub.uam(
        "PUT",
        "/uam/repository/update",
        &alice,
        Some(json!({"name": "pub", "ispublic": true, "username": "alice"})),
    )
    .expect(200);

    // Logged out: the private image cannot be pulled, the public one can.
    let (ok, out) = docker(&d, &["logout", &addr]);
    assert!(ok, "{out}");
    run(d
        .docker()
        .args(["image", "rm", "-f", &own, &public, &foreign, &local]));
    let (ok, out) = docker(&d, &["pull", &own]);
    assert!(
        !ok,
        "pulling a private image after logout must fail:\n{out}"
    );
    let (ok, out) = docker(&d, &["pull", &public]);
    assert!(ok, "pulling a public image anonymously:\n{out}");
    run(d.docker().args(["image", "rm", "-f", &public]));

    // An API token as the password: pulls, within its scope only.
    let r = hub.uam(
        "POST",
        "/uam/user/token",
        &alice,
        Some(json!({"name": "ci", "scopes": ["repository:alice/*:pull"]})),
    );
    r.expect(200);
    let token = r.json()["token"].as_str().unwrap().to_string();
    let (ok, out) = docker(&d, &["login", &addr, "-u", "alice", "-p", &token]);
    assert!(
        ok && out.contains("Login Succeeded"),
        "docker login with an API token:\n{out}"
    );
    let (ok, out) = docker(&d, &["pull", &own]);
    assert!(ok, "pull with an API token:\n{out}");
    let again = format!("{addr}/alice/app:v2");
    run(d.docker().args(["tag", &own, &again]));
    let (ok, out) = docker(&d, &["push", &again]);
    assert!(!ok, "a pull-only API token must not push:\n{out}");
    assert_eq!(hub.get_manifest(&alice, "alice/app", "v2").status, 404);
    let (ok, out) = docker(&d, &["logout", &addr]);
    assert!(ok, "{out}");
    assert!(
        final_refusal,
        "the denied push was retried by docker for {took:?} before it failed; the POST \
         /v2/bob/app/blobs/uploads/ answer (403 with errors[0] = {{code DENIED, the code's \
         default message, detail null}}) decodes in docker to a bare ErrorCode, which \
         docker's retryOnError does not recognise as final"
    );
}
