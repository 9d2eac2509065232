//! LDAP sign-in, black-box: a real `dockyard web` with
//! `[auth_server] authn = "authn_ldap"` against the private test OpenLDAP
//! (`packaging/services/openldap.sh`, StartTLS verified with its CA, the
//! seed of `packaging/services/openldap-seed.ldif`): accounts created at
//! first login from the directory, exact account names, directory groups
//! (nested too) mapped onto teams at each login and what that lets users
//! pull, the local administrator's database password, the Docker token
//! flow, a directory that is down, login throttling, and sign-up not
//! taking a directory user's name.
//!
//! The directory is shared with the unit tests of `src/auth/ldap.rs`
//! (same script, same `target/test-services`, same ports) and is only read
//! here. Failed logins are sent from their own client address
//! (`X-Real-IP`, believed from loopback) so the per-address throttle of one
//! check does not block the next.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use common::Server;

const ADMIN: &str = "sysadm";
const ADMIN_PASSWORD: &str = "sysadm-database-pw";
const SERVICE: &str = "dockyard";
const PEOPLE: &str = "ou=people,dc=dockyard,dc=test";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Starts the test directory (idempotent: shared by every test and the
/// unit tests) on its fixed ports. Panics with the script's output if it
/// cannot: this test must not pass without a directory.
fn directory() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/test-services");
    std::fs::create_dir_all(&dir).expect("create target/test-services");
    let out = Command::new(root.join("packaging/services/openldap.sh"))
        .arg("start")
        .arg(&dir)
        .args(["30389", "30636"])
        .output()
        .expect("run packaging/services/openldap.sh");
    assert!(
        out.status.success(),
        "openldap.sh start failed (install the test dependencies with \
         packaging/install-test-deps.sh):\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ca = dir.join("openldap/tls/ca.crt");
    assert!(ca.exists(), "no CA at {}", ca.display());
    ca
}

/// A 127.0.0.1 port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A client address of its own for each call (`X-Real-IP`).
fn fresh_ip() -> String {
    static N: AtomicU32 = AtomicU32::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("10.77.{}.{}", n / 250, n % 250 + 1)
}

#[derive(Clone, Debug)]
enum Cred {
    Anon,
    Basic(String, String),
    Bearer(String),
}

fn basic(user: &str, password: &str) -> Cred {
    Cred::Basic(user.into(), password.into())
}

fn admin() -> Cred {
    basic(ADMIN, ADMIN_PASSWORD)
}

struct Resp {
    what: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, k: &str) -> String {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    fn describe(&self) -> String {
        format!(
            "[{}] -> {} (www-authenticate: {:?}, retry-after: {:?}) {}",
            self.what,
            self.status,
            self.header("www-authenticate"),
            self.header("retry-after"),
            String::from_utf8_lossy(&self.body[..self.body.len().min(600)])
        )
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.describe()))
    }
    #[track_caller]
    fn expect(&self, status: u16) -> &Resp {
        assert_eq!(self.status, status, "{}", self.describe());
        self
    }
}

/// A hub with authentication on, its passwords checked by the directory
/// at `ldap_addr`, and the team mappings of the brief.
struct Hub {
    srv: Server,
    http: Client,
    _keys: tempfile::TempDir,
}

impl Hub {
    fn start(ldap_addr: &str) -> Hub {
        let ca = directory();
        let keys = tempfile::Builder::new()
            .prefix("dockyard-ldap-keys-")
            .tempdir()
            .unwrap();
        let k = keys.path().display();
        let toml = format!(
            r#"standalone = false
trustproxy = true
[auth_server]
authn = "authn_ldap"
privateKey = "{k}/token.key"
admin = "{ADMIN}"
admin_password = "{ADMIN_PASSWORD}"
[token]
rootcertbundle = "{k}/token.crt"
[authn_ldap]
addr = "{ldap_addr}"
starttls = true
certfile = "{ca}"
basedn = "{PEOPLE}"
binddn = "cn=readonly,dc=dockyard,dc=test"
bindpassword = "readonly"
filter = "(&(objectClass=inetOrgPerson)(uid=${{account}}))"
groupbasedn = "ou=groups,dc=dockyard,dc=test"
groupfilter = "(&(objectClass=groupOfNames)(member=${{dn}}))"
[[authn_ldap.teams]]
group = "cn=platform,ou=groups,dc=dockyard,dc=test"
org = "acme"
team = "platform"
[[authn_ldap.teams]]
group = "cn=ops,ou=groups,dc=dockyard,dc=test"
org = "acme"
team = "ops"
"#,
            ca = ca.display()
        );
        // `start_with` appends its text after `[dockyard]`, so further
        // sections may follow the first line.
        let srv = Server::start_with(&toml);
        let http = Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Hub {
            srv,
            http,
            _keys: keys,
        }
    }

    /// A request from `ip` (`X-Real-IP`; `None`: loopback itself).
    fn send_from(
        &self,
        ip: Option<&str>,
        method: &str,
        path: &str,
        cred: &Cred,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            self.srv.url(path)
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, &url);
        let who = match cred {
            Cred::Anon => "anonymous".to_string(),
            Cred::Basic(u, p) => {
                rb = rb.basic_auth(u, Some(p));
                format!("Basic {u:?}")
            }
            Cred::Bearer(t) => {
                rb = rb.bearer_auth(t);
                "Bearer".to_string()
            }
        };
        if let Some(ip) = ip {
            rb = rb.header("X-Real-IP", ip);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb = rb.body(body.unwrap_or_default());
        let what = format!("{method} {path} as {who}");
        let r = rb.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        Resp {
            what,
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.bytes().map(|b| b.to_vec()).unwrap_or_default(),
        }
    }

    fn send(&self, method: &str, path: &str, cred: &Cred) -> Resp {
        self.send_from(None, method, path, cred, &[], None)
    }

    fn uam(&self, method: &str, path: &str, cred: &Cred, body: Value) -> Resp {
        let mut r = self.send_from(
            None,
            method,
            path,
            cred,
            &[("Content-Type", "application/json")],
            Some(body.to_string().into_bytes()),
        );
        r.what = format!("{} {body}", r.what);
        r
    }

    /// `GET /uam/user/signin`, from an address of its own.
    fn signin(&self, user: &str, password: &str) -> Resp {
        self.send_from(
            Some(&fresh_ip()),
            "GET",
            "/uam/user/signin",
            &basic(user, password),
            &[],
            None,
        )
    }

    /// An account as the administrator sees it (`None`: 404).
    fn account(&self, user: &str) -> Option<Value> {
        let r = self.send("GET", &format!("/uam/user/{user}"), &admin());
        if r.status == 404 {
            return None;
        }
        Some(r.expect(200).json())
    }

    /// `GET /uam/auth` for one scope, from an address of its own.
    fn token_resp(&self, cred: &Cred, scope: &str) -> Resp {
        self.send_from(
            Some(&fresh_ip()),
            "GET",
            &format!("/uam/auth?service={SERVICE}&scope={scope}"),
            cred,
            &[],
            None,
        )
    }

    /// A token for `scope` and the actions it grants on `repo`.
    fn token(&self, cred: &Cred, scope: &str, repo: &str) -> (String, BTreeSet<String>) {
        let r = self.token_resp(cred, scope);
        r.expect(200);
        let token = r.json()["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {}", r.describe()))
            .to_string();
        let granted = granted(&token, repo);
        (token, granted)
    }

    /// What a pull token asked for by `user` grants on `repo`.
    fn pull_grant(&self, user: &str, password: &str, repo: &str) -> BTreeSet<String> {
        self.token(
            &basic(user, password),
            &format!("repository:{repo}:pull"),
            repo,
        )
        .1
    }

    /// Org `acme` (members get nothing from membership alone), teams
    /// `platform` and `ops`, private `acme/app` pullable by `platform`.
    fn acme(&self) {
        let a = admin();
        self.uam(
            "POST",
            "/uam/organization",
            &a,
            json!({"name": "acme", "memberprivilege": 4}),
        )
        .expect(200);
        for team in ["platform", "ops"] {
            self.uam(
                "POST",
                "/uam/team",
                &a,
                json!({"teamname": team, "orgname": "acme"}),
            )
            .expect(200);
        }
        self.uam(
            "POST",
            "/uam/repository",
            &a,
            json!({"name": "app", "ispublic": false, "orgname": "acme"}),
        )
        .expect(200);
        self.uam(
            "POST",
            "/uam/team/addrepository",
            &a,
            json!({"orgname": "acme", "reponame": "app", "teamname": "platform", "permit": 3}),
        )
        .expect(200);
    }

    /// Members of team `acme/<team>` (as the administrator).
    fn team_members(&self, team: &str) -> BTreeSet<String> {
        let r = self.send("GET", &format!("/uam/team/acme/{team}/listuser"), &admin());
        names(r.expect(200).json(), "username")
    }

    fn org_members(&self) -> BTreeSet<String> {
        let r = self.send("GET", "/uam/organization/acme/listuser", &admin());
        names(r.expect(200).json(), "username")
    }
}

/// The `key` of each element of a `/uam` listing (none listed twice).
fn names(v: Value, key: &str) -> BTreeSet<String> {
    let list: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|m| m[key].as_str().unwrap().to_string())
        .collect();
    let set: BTreeSet<String> = list.iter().cloned().collect();
    assert_eq!(set.len(), list.len(), "listed twice: {v}");
    set
}

/// The role code of `user` in a `/uam` member listing.
fn role_of(v: &Value, user: &str) -> Option<u64> {
    v.as_array()?
        .iter()
        .find(|m| m["username"] == user)
        .and_then(|m| m["role"].as_u64())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The actions a JWT's (unverified) payload grants on `repository:<repo>`.
fn granted(token: &str, repo: &str) -> BTreeSet<String> {
    let payload = token.split('.').nth(1).expect("a JWT");
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url payload"),
    )
    .expect("JSON payload");
    payload["access"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "repository" && a["name"] == repo)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `key="value"` of a `WWW-Authenticate: Bearer ...` challenge.
fn challenge_param(header: &str, key: &str) -> Option<String> {
    let rest = header.strip_prefix("Bearer ")?;
    rest.split("\",").find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim().trim_start_matches(',') == key)
            .then(|| v.trim_matches('"').trim_end_matches('"').to_string())
    })
}

#[test]
fn first_login_creates_the_account_and_names_are_exact() {
    let hub = Hub::start("127.0.0.1:30389");

    // Refused logins create nothing.
    hub.signin("alice", "wrong-password").expect(401);
    hub.signin("alice", "").expect(401);
    hub.signin("alice", "bobpw").expect(401);
    hub.signin("mallory", "alicepw").expect(401);
    assert_eq!(hub.account("alice"), None, "refused logins create nothing");
    assert_eq!(hub.account("mallory"), None);

    let r = hub.signin("alice", "alicepw");
    r.expect(200);
    let v = r.json();
    assert_eq!(v["name"], "alice", "{v}");
    assert_eq!(v["source"], "ldap", "{v}");
    assert_eq!(v["email"], "alice@dockyard.test", "{v}");
    assert_eq!(v["realname"], "Alice Liddell", "{v}");
    assert_eq!(v["role"], 2, "an ordinary member: {v}");
    let stored = hub.account("alice").expect("created at first login");
    assert_eq!(stored["source"], "ldap", "{stored}");
    assert_eq!(stored["email"], "alice@dockyard.test", "{stored}");
    assert_eq!(stored["realname"], "Alice Liddell", "{stored}");

    // Still the directory's password, not a remembered one.
    hub.signin("alice", "alicepw").expect(200);
    hub.signin("alice", "wrong-password").expect(401);
    hub.signin("alice", "").expect(401);
    hub.signin("alice", "alicepw ").expect(401);

    // The directory matches uid case-insensitively; hub names are exact,
    // so these are not alice (and no account appears for them).
    for name in ["ALICE", "Alice", "alice ", " alice", "al*", "alice)(uid=*"] {
        let r = hub.signin(name, "alicepw");
        assert_eq!(r.status, 401, "{name:?}: {}", r.describe());
    }
    for name in ["ALICE", "Alice"] {
        let r = hub.send("GET", &format!("/uam/user/{name}"), &admin());
        assert_ne!(r.status, 200, "{}", r.describe());
    }

    // Other directory users get their own accounts.
    let v = hub.signin("bob", "bobpw").json();
    assert_eq!(
        (
            v["name"].as_str(),
            v["source"].as_str(),
            v["email"].as_str()
        ),
        (Some("bob"), Some("ldap"), Some("bob@dockyard.test")),
        "{v}"
    );
    let users = names(hub.send("GET", "/uam/user/list", &admin()).json(), "name");
    assert_eq!(users, set(&[ADMIN, "alice", "bob"]));
}

#[test]
fn directory_groups_map_onto_teams_at_login() {
    let hub = Hub::start("127.0.0.1:30389");
    hub.acme();
    let repo = "acme/app";
    let pull = set(&["pull"]);
    let nothing = BTreeSet::new();

    // alice: platform through the nested group devs.
    hub.signin("alice", "alicepw").expect(200);
    assert!(
        hub.team_members("platform").contains("alice"),
        "alice is in cn=devs, a member of cn=platform: {:?}",
        hub.team_members("platform")
    );
    assert!(!hub.team_members("ops").contains("alice"));
    assert!(hub.org_members().contains("alice"));
    // As a plain member (6 team member, 4 organisation member).
    let team = hub.send("GET", "/uam/team/acme/platform/listuser", &admin());
    assert_eq!(
        role_of(&team.json(), "alice"),
        Some(6),
        "{}",
        team.describe()
    );
    let org = hub.send("GET", "/uam/organization/acme/listuser", &admin());
    assert_eq!(role_of(&org.json(), "alice"), Some(4), "{}", org.describe());
    assert_eq!(hub.pull_grant("alice", "alicepw", repo), pull);
    // The team's permit is pull only.
    let (_, g) = hub.token(
        &basic("alice", "alicepw"),
        "repository:acme/app:pull,push",
        repo,
    );
    assert_eq!(g, pull);

    // bob: ops, which has no permit on acme/app.
    hub.signin("bob", "bobpw").expect(200);
    assert!(hub.team_members("ops").contains("bob"));
    assert!(!hub.team_members("platform").contains("bob"));
    assert!(hub.org_members().contains("bob"));
    assert_eq!(hub.pull_grant("bob", "bobpw", repo), nothing);

    // carol: a direct member of platform; her first login is a token
    // request.
    assert_eq!(hub.pull_grant("carol", "carolpw", repo), pull);
    assert!(hub.team_members("platform").contains("carol"));

    // dave: no group, no team, no organisation.
    assert_eq!(hub.pull_grant("dave", "davepw", repo), nothing);
    assert!(hub.account("dave").is_some(), "dave has an account");
    assert!(!hub.org_members().contains("dave"));
    assert!(!hub.team_members("platform").contains("dave"));
    assert!(!hub.team_members("ops").contains("dave"));

    let members = hub.team_members("platform");
    assert!(
        members.is_superset(&set(&["alice", "carol"])) && !members.contains("bob"),
        "{members:?}"
    );

    // The directory decides a mapped team: bob added by hand is taken out
    // at his next login (he is not in cn=platform).
    hub.uam(
        "POST",
        "/uam/team/adduser",
        &admin(),
        json!({"teamname": "platform", "orgname": "acme", "username": "bob", "role": 6}),
    )
    .expect(200);
    assert!(hub.team_members("platform").contains("bob"));
    let may_pull = |user: &str| {
        let r = hub.send("GET", &format!("/uam/permission/{user}/acme/app"), &admin());
        r.expect(200).json()["pull"] == true
    };
    assert!(may_pull("bob"), "bob added to platform by hand");
    hub.signin("bob", "bobpw").expect(200);
    assert!(
        !hub.team_members("platform").contains("bob"),
        "bob stays in a mapped team without its group: {:?}",
        hub.team_members("platform")
    );
    assert!(!may_pull("bob"));
    assert_eq!(hub.pull_grant("bob", "bobpw", repo), nothing);
    // Logging in again (the directory asked again: the change above
    // dropped remembered logins) keeps alice, once.
    hub.signin("alice", "alicepw").expect(200);
    assert!(hub.team_members("platform").contains("alice"));
    assert_eq!(hub.pull_grant("alice", "alicepw", repo), pull);
}

#[test]
fn local_administrator_keeps_its_database_password() {
    let hub = Hub::start("127.0.0.1:30389");
    let v = hub.signin(ADMIN, ADMIN_PASSWORD).json();
    assert_eq!(v["source"], "db", "{v}");
    assert_eq!(v["role"], 1, "{v}");
    hub.signin(ADMIN, "not-the-password").expect(401);
    hub.signin(ADMIN, "").expect(401);
    // Administrators still administer, alongside directory users.
    hub.signin("alice", "alicepw").expect(200);
    hub.send("GET", "/uam/user/list", &admin()).expect(200);
    // A directory user is no administrator.
    hub.send("GET", "/uam/user/list", &basic("alice", "alicepw"))
        .expect(403);
}

#[test]
fn docker_token_flow_with_a_directory_user() {
    let hub = Hub::start("127.0.0.1:30389");
    hub.acme();
    let repo = "acme/app";

    // The administrator pushes an image (Basic on the registry).
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"a layer for the ldap test".to_vec();
    for blob in [config.to_vec(), layer.clone()] {
        hub.send_from(
            None,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(&blob)),
            &admin(),
            &[("Content-Type", "application/octet-stream")],
            Some(blob.clone()),
        )
        .expect(201);
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    hub.send_from(
        None,
        "PUT",
        &format!("/v2/{repo}/manifests/v1"),
        &admin(),
        &[("Content-Type", OCI_MANIFEST)],
        Some(manifest.clone()),
    )
    .expect(201);

    // docker: /v2/ without credentials -> challenge.
    let r = hub.send("GET", "/v2/", &Cred::Anon);
    r.expect(401);
    let ch = r.header("www-authenticate");
    let realm = challenge_param(&ch, "realm").unwrap_or_else(|| panic!("no realm: {ch:?}"));
    assert_eq!(
        challenge_param(&ch, "service").as_deref(),
        Some(SERVICE),
        "{ch:?}"
    );
    assert!(realm.ends_with("/uam/auth"), "{realm}");
    // The private repository: refused without a token.
    let r = hub.send("GET", &format!("/v2/{repo}/manifests/v1"), &Cred::Anon);
    r.expect(401);
    let scope = challenge_param(&r.header("www-authenticate"), "scope");
    assert_eq!(
        scope.as_deref(),
        Some("repository:acme/app:pull"),
        "{}",
        r.describe()
    );

    // docker login / pull as alice, her first login ever.
    let alice = basic("alice", "alicepw");
    let login = hub.send_from(
        None,
        "GET",
        &format!("{realm}?service={SERVICE}&account=alice"),
        &alice,
        &[],
        None,
    );
    login.expect(200);
    let (token, g) = hub.token(&alice, &format!("repository:{repo}:pull"), repo);
    assert_eq!(g, set(&["pull"]));
    let bearer = Cred::Bearer(token);
    let r = hub.send_from(
        None,
        "GET",
        &format!("/v2/{repo}/manifests/v1"),
        &bearer,
        &[("Accept", OCI_MANIFEST)],
        None,
    );
    r.expect(200);
    assert_eq!(r.body, manifest);
    assert_eq!(r.header("docker-content-digest"), sha256(&manifest));
    let r = hub.send(
        "GET",
        &format!("/v2/{repo}/blobs/{}", sha256(&layer)),
        &bearer,
    );
    r.expect(200);
    assert_eq!(r.body, layer);
    // A pull token does not push.
    let r = hub.send_from(
        None,
        "PUT",
        &format!("/v2/{repo}/manifests/v2"),
        &bearer,
        &[("Content-Type", OCI_MANIFEST)],
        Some(manifest.clone()),
    );
    assert!(
        matches!(r.status, 401 | 403),
        "push with a pull token: {}",
        r.describe()
    );
    // Basic with directory credentials on the registry works as well.
    let r = hub.send_from(
        None,
        "GET",
        &format!("/v2/{repo}/manifests/v1"),
        &alice,
        &[("Accept", OCI_MANIFEST)],
        None,
    );
    r.expect(200);

    // Wrong directory password: no token at all.
    let r = hub.token_resp(&basic("alice", "nope"), &format!("repository:{repo}:pull"));
    r.expect(401);
    // bob's token grants nothing and does not pull.
    let (token, g) = hub.token(
        &basic("bob", "bobpw"),
        &format!("repository:{repo}:pull"),
        repo,
    );
    assert!(g.is_empty(), "{g:?}");
    let r = hub.send(
        "GET",
        &format!("/v2/{repo}/manifests/v1"),
        &Cred::Bearer(token),
    );
    assert!(
        matches!(r.status, 401 | 403),
        "bob pulls acme/app: {}",
        r.describe()
    );
}

#[test]
fn directory_down_is_an_error_and_the_local_admin_still_works() {
    let hub = Hub::start(&format!("127.0.0.1:{}", closed_port()));
    let ip = fresh_ip();
    // More attempts than the throttle lets fail: an outage is no guessing.
    for i in 0..8 {
        let t = Instant::now();
        let r = hub.send_from(
            Some(&ip),
            "GET",
            "/uam/user/signin",
            &basic("alice", "alicepw"),
            &[],
            None,
        );
        assert!(
            r.status >= 500,
            "attempt {i}: a directory that is down is a server error, not a wrong \
             password or a throttled client: {}",
            r.describe()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }
    let r = hub.token_resp(&basic("alice", "alicepw"), "repository:acme/app:pull");
    assert!(r.status >= 500, "token service: {}", r.describe());
    assert!(r.json().get("token").is_none(), "{}", r.describe());
    let r = hub.send("GET", "/v2/", &basic("alice", "alicepw"));
    assert!(r.status >= 500, "registry with Basic: {}", r.describe());
    assert_eq!(hub.account("alice"), None);

    // The process is alive, and the local administrator logs in.
    let v = hub.signin(ADMIN, ADMIN_PASSWORD).json();
    assert_eq!(v["name"], ADMIN);
    hub.send("GET", "/v2/", &admin()).expect(200);
    hub.send("GET", "/v2/", &Cred::Anon).expect(401);
}

#[test]
fn directory_logins_are_throttled() {
    let hub = Hub::start("127.0.0.1:30389");
    let attempt = |user: &str, password: &str, ip: &str| {
        hub.send_from(
            Some(ip),
            "GET",
            "/uam/user/signin",
            &basic(user, password),
            &[],
            None,
        )
    };
    let throttled = |r: &Resp| r.status == 429 && r.header("retry-after").parse::<u64>().is_ok();
    let mut fails: Vec<String> = Vec::new();

    // "429 after 5 failures, even with the right password."
    let guesser = fresh_ip();
    for i in 1..=5 {
        let r = attempt("carol", "not-carols-password", &guesser);
        if r.status != 401 {
            fails.push(format!(
                "failure {i} should be a plain 401: {}",
                r.describe()
            ));
        }
    }
    let r = attempt("carol", "carolpw", &guesser);
    if !throttled(&r) {
        fails.push(format!(
            "after 5 wrong directory passwords the next login, with the right \
             password, must be 429 with Retry-After: {}",
            r.describe()
        ));
    }

    // Whatever the count, a blocked directory account is refused
    // everywhere without asking the directory.
    let (guesser, elsewhere) = (fresh_ip(), fresh_ip());
    let mut n = 0;
    while n < 10 && attempt("dave", "not-daves-password", &guesser).status == 401 {
        n += 1;
    }
    if n != 5 {
        fails.push(format!(
            "dave was blocked after {n} wrong directory passwords, not 5"
        ));
    }
    for (what, r) in [
        ("right password", attempt("dave", "davepw", &guesser)),
        ("from elsewhere", attempt("dave", "davepw", &elsewhere)),
        (
            "at the token service",
            hub.send_from(
                Some(&elsewhere),
                "GET",
                &format!("/uam/auth?service={SERVICE}"),
                &basic("dave", "davepw"),
                &[],
                None,
            ),
        ),
        (
            "another account from the guessing address",
            attempt("bob", "bobpw", &guesser),
        ),
    ] {
        if !throttled(&r) {
            fails.push(format!("blocked, {what}: {}", r.describe()));
        }
    }
    // Another directory user from elsewhere is not blocked.
    let r = attempt("bob", "bobpw", &elsewhere);
    if r.status != 200 {
        fails.push(format!("bob from elsewhere: {}", r.describe()));
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

/// With accounts from the directory, anonymous sign-up must not take the
/// name of a directory user who has not logged in yet (locking them out
/// and handing their namespace to someone else).
#[test]
fn signup_cannot_take_a_directory_users_name() {
    let hub = Hub::start("127.0.0.1:30389");
    let r = hub.uam(
        "POST",
        "/uam/user/signup",
        &Cred::Anon,
        json!({"name": "dave", "password": "squatter-password"}),
    );
    let squatter = hub.signin("dave", "squatter-password");
    let dave = hub.signin("dave", "davepw");
    assert!(
        squatter.status != 200 && dave.status == 200,
        "sign-up of a directory user's name with authn_ldap:\n{}\n{}\n{}",
        r.describe(),
        squatter.describe(),
        dave.describe()
    );
    assert_eq!(dave.json()["source"], "ldap", "{}", dave.describe());
}
