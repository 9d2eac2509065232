//! Helpers for the auth tests: a `dockyard web` with authentication on
//! (`[dockyard] standalone = false`, its token-signing key pair generated
//! into the test's temp dir, a configured first administrator), a blocking
//! HTTP client speaking Basic, Bearer or nothing, the `/uam` calls the
//! tests need to build accounts, the token service, JWT decoding, and
//! registry operations (blob push, manifest push/pull/delete).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::common::Server;

pub const ADMIN: &str = "sysadm";
pub const ADMIN_PASSWORD: &str = "sysadm-secret-1";
pub const SERVICE: &str = "dockyard";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// The configuration of an auth-enabled hub beyond the defaults.
#[derive(Default, Clone)]
pub struct HubConfig {
    /// Extra lines for `[auth_server]`.
    pub auth_server: Vec<String>,
    /// Extra lines for `[token]`.
    pub token: Vec<String>,
    /// Where the key pair lives (default: the server's own temp dir).
    pub key_dir: Option<PathBuf>,
}

/// A running hub with authentication on.
pub struct Hub {
    pub srv: Server,
    pub http: Client,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// What a request carries in `Authorization`.
#[derive(Clone, Debug)]
pub enum Cred {
    Anon,
    Basic(String, String),
    Bearer(String),
}

impl Cred {
    pub fn basic(user: &str, password: &str) -> Cred {
        Cred::Basic(user.to_string(), password.to_string())
    }
    pub fn admin() -> Cred {
        Cred::basic(ADMIN, ADMIN_PASSWORD)
    }
    fn describe(&self) -> String {
        match self {
            Cred::Anon => "no credentials".into(),
            Cred::Basic(u, _) => format!("Basic {u}"),
            Cred::Bearer(_) => "Bearer token".into(),
        }
    }
}

/// A response, fully read, with the request it answers.
#[derive(Clone)]
pub struct Resp {
    pub what: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, k: &str) -> String {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e})", self.describe()))
    }
    /// The first `errors[].code` of a registry or `/uam` error body.
    pub fn error_code(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
    pub fn describe(&self) -> String {
        let mut body = self.text();
        if body.len() > 600 {
            let cut = (0..=500).rev().find(|i| body.is_char_boundary(*i)).unwrap();
            body = format!("{}... ({} bytes)", &body[..cut], self.body.len());
        }
        let mut hs = Vec::new();
        for k in [
            "www-authenticate",
            "retry-after",
            "content-type",
            "location",
        ] {
            let v = self.header(k);
            if !v.is_empty() {
                hs.push(format!("{k}: {v}"));
            }
        }
        format!(
            "[{}] -> {} {{{}}} {}",
            self.what,
            self.status,
            hs.join("; "),
            body
        )
    }
    /// Panics unless the status is `code`.
    #[track_caller]
    pub fn expect(&self, code: u16) -> &Resp {
        assert_eq!(self.status, code, "{}", self.describe());
        self
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A process-unique suffix.
pub fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

/// Base64url (no padding) as JWTs use it.
pub fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

pub fn b64url_decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {s}"))
}

/// The (unverified) header and payload of a JWT.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let header = serde_json::from_slice(&b64url_decode(parts[0])).expect("JWT header JSON");
    let payload = serde_json::from_slice(&b64url_decode(parts[1])).expect("JWT payload JSON");
    (header, payload)
}

/// The actions a token's payload grants on `repository:<repo>`.
pub fn granted(payload: &Value, repo: &str) -> BTreeSet<String> {
    payload["access"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["type"] == "repository" && a["name"] == repo)
        .flat_map(|a| a["actions"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",...` challenge.
pub fn challenge_params(header: &str) -> Vec<(String, String)> {
    let rest = header
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {header:?}"));
    let mut out = Vec::new();
    let mut s = rest;
    while let Some(eq) = s.find('=') {
        let key = s[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &s[eq + 1..];
        let Some(after) = after.strip_prefix('"') else {
            panic!("unquoted challenge value in {header:?}");
        };
        let end = after
            .find('"')
            .unwrap_or_else(|| panic!("unterminated value in {header:?}"));
        out.push((key, after[..end].to_string()));
        s = &after[end + 1..];
    }
    out
}

pub fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Polls `f` until it returns `Some` or `limit` passes.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Hub {
    /// A hub with authentication on and the defaults of `HubConfig`.
    pub fn start() -> Hub {
        Hub::start_with(HubConfig::default())
    }

    pub fn start_with(cfg: HubConfig) -> Hub {
        let (key, cert) = match &cfg.key_dir {
            Some(d) => (
                d.join("token.key").display().to_string(),
                d.join("token.crt").display().to_string(),
            ),
            None => ("$DIR/cert/token.key".into(), "$DIR/cert/token.crt".into()),
        };
        let toml = format!(
            "standalone = false\ntrustproxy = true\n\
             [auth_server]\n\
             privateKey = \"{key}\"\n\
             admin = \"{ADMIN}\"\n\
             admin_password = \"{ADMIN_PASSWORD}\"\n\
             {}\n\
             [token]\n\
             rootcertbundle = \"{cert}\"\n\
             {}\n",
            cfg.auth_server.join("\n"),
            cfg.token.join("\n"),
        );
        let srv = Server::start_config(&toml);
        let dir = srv.dir().display().to_string();
        let key = PathBuf::from(key.replace("$DIR", &dir));
        let cert = PathBuf::from(cert.replace("$DIR", &dir));
        assert!(
            key.exists() && cert.exists(),
            "the server must generate its key pair at {} and {}",
            key.display(),
            cert.display()
        );
        Hub {
            base: srv.base.clone(),
            srv,
            http: client(),
            key,
            cert,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; `headers` are extra headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        cred: &Cred,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            self.url(path)
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rb = self.http.request(m, &url);
        match cred {
            Cred::Anon => {}
            Cred::Basic(u, p) => rb = rb.basic_auth(u, Some(p)),
            Cred::Bearer(t) => rb = rb.bearer_auth(t),
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        } else if matches!(method, "POST" | "PUT" | "PATCH") {
            rb = rb.body(Vec::new());
        }
        let what = format!("{method} {path} ({})", cred.describe());
        let r = rb.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().map(|b| b.to_vec()).unwrap_or_default();
        Resp {
            what,
            status,
            headers,
            body,
        }
    }

    // -------------------------------------------------------------------
    // /uam
    // -------------------------------------------------------------------

    /// A `/uam` call with an optional JSON body.
    pub fn uam(&self, method: &str, path: &str, cred: &Cred, body: Option<Value>) -> Resp {
        let body = body.map(|b| b.to_string().into_bytes());
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let mut r = self.send(method, path, cred, headers, body.clone());
        if let Some(b) = body {
            r.what = format!("{} {}", r.what, String::from_utf8_lossy(&b));
        }
        r
    }

    /// A request from another client address (the hub believes
    /// `X-Real-IP` from loopback): deliberate login failures come from
    /// their own addresses so they do not throttle the test's other calls.
    pub fn send_from(&self, addr: &str, method: &str, path: &str, cred: &Cred) -> Resp {
        self.send(method, path, cred, &[("X-Real-IP", addr)], None)
    }

    pub fn signup(&self, name: &str, password: &str) -> Resp {
        self.uam(
            "POST",
            "/uam/user/signup",
            &Cred::Anon,
            Some(
                json!({"name": name, "email": format!("{name}@example.com"), "password": password}),
            ),
        )
    }

    pub fn create_org(&self, by: &Cred, name: &str, memberprivilege: u8) -> Resp {
        self.uam(
            "POST",
            "/uam/organization",
            by,
            Some(json!({"name": name, "memberprivilege": memberprivilege})),
        )
    }

    pub fn org_add_user(&self, by: &Cred, org: &str, user: &str, role: u8) -> Resp {
        self.uam(
            "POST",
            "/uam/organization/adduser",
            by,
            Some(json!({"username": user, "role": role, "orgname": org})),
        )
    }

    pub fn create_team(&self, by: &Cred, org: &str, team: &str) -> Resp {
        self.uam(
            "POST",
            "/uam/team",
            by,
            Some(json!({"teamname": team, "orgname": org})),
        )
    }

    pub fn team_add_user(&self, by: &Cred, org: &str, team: &str, user: &str, role: u8) -> Resp {
        self.uam(
            "POST",
            "/uam/team/adduser",
            by,
            Some(json!({"teamname": team, "orgname": org, "username": user, "role": role})),
        )
    }

    pub fn team_add_repo(&self, by: &Cred, org: &str, team: &str, repo: &str, permit: u8) -> Resp {
        self.uam(
            "POST",
            "/uam/team/addrepository",
            by,
            Some(json!({"orgname": org, "reponame": repo, "teamname": team, "permit": permit})),
        )
    }

    /// `POST /uam/repository` for `ns/name`, `ns` being a user or an org.
    pub fn create_repo(&self, by: &Cred, ns: &str, is_org: bool, name: &str, public: bool) -> Resp {
        let owner = if is_org { "orgname" } else { "username" };
        self.uam(
            "POST",
            "/uam/repository",
            by,
            Some(json!({"name": name, "ispublic": public, owner: ns})),
        )
    }

    // -------------------------------------------------------------------
    // token service
    // -------------------------------------------------------------------

    /// `GET /uam/auth?service=dockyard&scope=...` (Basic or anonymous).
    pub fn token_resp(&self, cred: &Cred, scopes: &[&str]) -> Resp {
        let mut q = format!("/uam/auth?service={SERVICE}");
        for s in scopes {
            q.push_str("&scope=");
            q.push_str(&form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>());
        }
        self.send("GET", &q, cred, &[], None)
    }

    /// A token and its payload; panics unless the service answers 200.
    pub fn token(&self, cred: &Cred, scopes: &[&str]) -> (String, Value) {
        let r = self.token_resp(cred, scopes);
        r.expect(200);
        let v = r.json();
        let token = v["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {}", r.describe()))
            .to_string();
        let (_, payload) = jwt_parts(&token);
        (token, payload)
    }

    /// A bearer credential for `repository:<repo>:<actions>`.
    pub fn bearer(&self, cred: &Cred, repo: &str, actions: &str) -> Cred {
        Cred::Bearer(
            self.token(cred, &[&format!("repository:{repo}:{actions}")])
                .0,
        )
    }

    // -------------------------------------------------------------------
    // registry
    // -------------------------------------------------------------------

    /// Single-request blob upload: `POST /v2/<repo>/blobs/uploads/?digest=`.
    pub fn push_blob(&self, cred: &Cred, repo: &str, data: &[u8]) -> Resp {
        let d = sha256(data);
        self.send(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            cred,
            &[("Content-Type", "application/octet-stream")],
            Some(data.to_vec()),
        )
    }

    pub fn head_blob(&self, cred: &Cred, repo: &str, digest: &str) -> Resp {
        self.send(
            "HEAD",
            &format!("/v2/{repo}/blobs/{digest}"),
            cred,
            &[],
            None,
        )
    }

    pub fn put_manifest(&self, cred: &Cred, repo: &str, reference: &str, body: &[u8]) -> Resp {
        self.send(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            cred,
            &[("Content-Type", OCI_MANIFEST)],
            Some(body.to_vec()),
        )
    }

    pub fn get_manifest(&self, cred: &Cred, repo: &str, reference: &str) -> Resp {
        self.send(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            cred,
            &[("Accept", ACCEPT)],
            None,
        )
    }

    pub fn delete_manifest(&self, cred: &Cred, repo: &str, digest: &str) -> Resp {
        self.send(
            "DELETE",
            &format!("/v2/{repo}/manifests/{digest}"),
            cred,
            &[],
            None,
        )
    }

    /// Pushes a one-layer image (config, layer, manifest) to `repo:tag`;
    /// returns the manifest's digest.
    pub fn push_image(&self, cred: &Cred, repo: &str, tag: &str) -> String {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"repo\":\"{repo}\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}"
        );
        let layer = format!("layer of {repo} {}", unique()).into_bytes();
        self.push_blob(cred, repo, config.as_bytes()).expect(201);
        self.push_blob(cred, repo, &layer).expect(201);
        let m = image_manifest(config.as_bytes(), &layer, None);
        self.put_manifest(cred, repo, tag, &m).expect(201);
        sha256(&m)
    }

    /// Pushes another manifest (same blobs as `base_tag`, a unique
    /// annotation) by digest; returns its digest.
    pub fn push_variant(&self, cred: &Cred, repo: &str, base_tag: &str) -> String {
        let base = self.get_manifest(cred, repo, base_tag);
        base.expect(200);
        let mut m = base.json();
        m["annotations"] = json!({"variant": unique()});
        let body = serde_json::to_vec(&m).unwrap();
        let d = sha256(&body);
        self.put_manifest(cred, repo, &d, &body).expect(201);
        d
    }

    /// `GET /v2/_catalog` with `cred`; the repository names.
    pub fn catalog(&self, cred: &Cred) -> Resp {
        self.send("GET", "/v2/_catalog?n=1000", cred, &[], None)
    }

    /// The audit events matching `query` (as the given caller).
    pub fn audit(&self, cred: &Cred, query: &str) -> Vec<Value> {
        let r = self.uam("GET", &format!("/uam/audit?{query}"), cred, None);
        r.expect(200);
        r.json()["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events array: {}", r.describe()))
            .clone()
    }
}

/// An OCI image manifest for a config and one layer.
pub fn image_manifest(config: &[u8], layer: &[u8], annotation: Option<&str>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": config.len()},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": layer.len()}],
    });
    if let Some(a) = annotation {
        m["annotations"] = json!({"note": a});
    }
    serde_json::to_vec(&m).unwrap()
}

/// `true` for a refusal of a registry request: 401 with a Bearer
/// challenge, or 403 `DENIED`.
pub fn is_refusal(r: &Resp) -> bool {
    match r.status {
        401 => r.header("www-authenticate").starts_with("Bearer "),
        403 => r.error_code() == "DENIED",
        _ => false,
    }
}

/// Collects failed expectations so one run reports all of them.
#[derive(Default)]
pub struct Checks(pub Vec<String>);

impl Checks {
    /// Records a failure unless `r.status` is one of `want`.
    pub fn status(&mut self, what: &str, r: &Resp, want: &[u16]) -> bool {
        if want.contains(&r.status) {
            true
        } else {
            self.0.push(format!(
                "{what}: expected status {want:?}: {}",
                r.describe()
            ));
            false
        }
    }

    pub fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) -> bool {
        if !ok {
            self.0.push(format!("{what}: {detail}"));
        }
        ok
    }

    /// Panics with every recorded failure.
    #[track_caller]
    pub fn finish(self, title: &str) {
        assert!(
            self.0.is_empty(),
            "{title}: {} failures:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The keys of a JSON object.
pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}
