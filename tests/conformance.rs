//! OCI distribution-spec conformance, ported from the Go suite in
//! github.com/opencontainers/distribution-spec `conformance/` and run against
//! a real `dockyard` process.
//!
//! Specs ported from the ginkgo suite (setup.go, 01_pull_test.go,
//! 02_push_test.go, 03_discovery_test.go, 04_management_test.go; every
//! `Specify` is one labelled step, titled `<Workflow> / <Context> / <spec>`):
//!
//! | workflow           | specs | skipped by the suite's defaults                                  |
//! |--------------------|-------|-------------------------------------------------------------------|
//! | Pull               | 24    | 1 ("Get tag name from environment": only without setup)           |
//! | Push               | 28    | 2 (automatic cross-mount: only with OCI_AUTOMATIC_CROSSMOUNT set) |
//! | Content Discovery  | 16    | 1 ("Populate registry with test tags (no push)")                  |
//! | Content Management | 10    | 0                                                                 |
//! | total              | 78    | 4                                                                 |
//!
//! The four workflows run in the suite's order against one server and one
//! namespace, exactly as `go test` does with OCI_TEST_PULL/PUSH/
//! CONTENT_DISCOVERY/CONTENT_MANAGEMENT=1 and the default
//! OCI_DELETE_MANIFEST_BEFORE_BLOBS (true), no OCI_AUTOMATIC_CROSSMOUNT, and
//! a random `conformance-<uuid>` cross-mount namespace. The state one
//! workflow leaves (deleted manifests, tags, blobs) is part of what the next
//! one checks, so each `conformance_0N_*` test replays the workflows before
//! its own on a fresh server and asserts only its own specs.
//!
//! On the wire the port does what the Go clients do: reggie (resty) sends
//! every request body as `Transfer-Encoding: chunked` and drops the explicit
//! `Content-Length` headers the suite sets; query values are encoded with
//! Go's `url.Values.Encode` (`digest=sha256%3A...`, `from=a%2Fb`).
//!
//! `runner_suite_all_apis_and_data` runs a port of the newer runner
//! (run.go/api.go/testdata.go, see conformance/runner_suite.rs), which is
//! what `go test` executes in current versions of the repository
//! (legacy_test.go maps the OCI_TEST_* variables onto its config): ping,
//! empty repo, the blob push APIs (post-only, post+put, chunked single/multi/
//! out-of-order/PUT-last-chunk, streamed, mount, anonymous mount, mount of a
//! missing blob, range requests, empty and `{}` blobs, bad digests) for both
//! sha256 and sha512, then push/tag-list/head/pull/referrers/delete of 18
//! data sets (image, uncompressed, 4 MB manifest, index, nested and empty
//! index, artifacts, artifact index, subjects incl. a missing one, data
//! field, non-distributable layers, custom fields, no layers, an all-sha512
//! index, a bad-digest manifest) and the manifest error cases: about 860
//! checks, each recorded as `Runner / <path>`.
//!
//! `extra_*` tests (10 specs) cover checks found only in the older
//! per-feature ginkgo files (01_base_api_route, 04_blob_upload_chunked,
//! 06_tags_list, 07_error_codes) and api.go's upload cancel (disabled in
//! the runner's 1.1 defaults).
//!
//! `CONFORMANCE_REGISTRY_URL=http://host:port` points every test at an
//! already running registry instead of a fresh dockyard (to check the port
//! itself against another implementation); `CONFORMANCE_USERNAME` and
//! `CONFORMANCE_PASSWORD` log in to it if it requires authentication.
//!
//! `auth_*` run the same workflows, the runner and the extra checks against
//! a dockyard with authentication on (`[dockyard] standalone = false`), as a
//! plain user who administers the organisations owning the suite's
//! namespaces (`myorg`, `conformance`; the cross-mount namespace is
//! `myorg/conformance-<uuid>`). The client then does what the Go suite's
//! clients do with OCI_USERNAME/OCI_PASSWORD: a request answered 401 with a
//! `Bearer realm=..,service=..,scope=..` challenge is retried with a token
//! fetched from the realm with Basic credentials.

#[macro_use]
#[path = "conformance/support.rs"]
mod support;

#[path = "conformance/runner_suite.rs"]
mod runner_suite;

#[path = "farm/cluster.rs"]
mod cluster;
mod common;

use std::collections::HashMap;

use support::*;

const NAMESPACE: &str = "myorg/myrepo";
const TEST_TAG: &str = "tagtest0";
const EMPTY_LAYER_TAG: &str = "emptylayer";
const NONEXISTENT_MANIFEST: &str = ".INVALID_MANIFEST_NAME";
const ANNOTATION_KEY: &str = "org.opencontainers.conformance.test";
const ARTIFACT_TYPE_A: &str = "application/vnd.nhl.peanut.butter.bagel";
const ARTIFACT_TYPE_B: &str = "application/vnd.nba.strawberry.jam.croissant";
const ARTIFACT_TYPE_INDEX: &str = "application/vnd.food.stand";
/// setup.go: a base64'd tar.gz of a one-line text file.
const LAYER_B64: &str = "H4sIAAAAAAAAA+3OQQrCMBCF4a49xXgBSUnaHMCTRBptQRNpp6i3t0UEV7oqIv7fYgbmzeJpHHSjVy0WZCa1c/MufWVe94N3RWlrZ72x3k/30nhbFWKWLPU0Dhp6keJ8im//PuU/6pZH2WVtYx8b0Sz7LjWSR5VLG6YRBumSzOlGtjkd+qDjMWiX07Befbs7AAAAAAAAAAAAAAAAAPyzO34MnqoAKAAA";

// ---------------------------------------------------------------------------
// fixtures (setup.go `init`)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct TestBlob {
    content: Vec<u8>,
    len: String,
    digest: String,
}

fn test_blob(content: Vec<u8>) -> TestBlob {
    TestBlob {
        len: content.len().to_string(),
        digest: sha256(&content),
        content,
    }
}

/// The conformance package's own `descriptor` (image.go): `newUnspecifiedField`
/// has no omitempty, so it is `null` unless set.
fn go_desc(mt: &str, digest: &str, size: usize, data: Option<&[u8]>, extra: Option<&[u8]>) -> J {
    let mut f = vec![
        ("mediaType", J::s(mt)),
        ("digest", J::s(digest)),
        ("size", J::Int(size as i64)),
    ];
    if let Some(d) = data.filter(|d| !d.is_empty()) {
        f.push(("data", J::s(b64_encode(d))));
    }
    f.push((
        "newUnspecifiedField",
        match extra {
            Some(e) => J::s(b64_encode(e)),
            None => J::Null,
        },
    ));
    J::obj(f)
}

struct Fixtures {
    ns: String,
    cross_ns: String,
    configs: Vec<TestBlob>,
    manifests: Vec<TestBlob>,
    layer: TestBlob,
    empty_layer_manifest: TestBlob,
    blob_a: TestBlob,
    blob_b: TestBlob,
    chunk1: Vec<u8>,
    chunk2: Vec<u8>,
    chunk1_range: String,
    chunk2_range: String,
    empty_json: TestBlob,
    ref_blob_a: TestBlob,
    ref_blob_b: TestBlob,
    refs_a_config: TestBlob,
    refs_b_config: TestBlob,
    refs_a_layer: TestBlob,
    refs_b_layer: TestBlob,
    refs_c_layer: TestBlob,
    refs_index: TestBlob,
    annotation_values: HashMap<String, String>,
    dummy_digest: String,
    invalid_manifest: Vec<u8>,
}

impl Fixtures {
    fn new() -> Fixtures {
        // The suite builds one config/manifest per workflow bit (16 of them);
        // indices 0..=4 are the ones any spec uses.
        let configs: Vec<TestBlob> = (0..5)
            .map(|_| {
                test_blob(
                    J::obj(vec![
                        ("author", J::s(random_string(16))),
                        ("architecture", J::s("amd64")),
                        ("os", J::s("linux")),
                        (
                            "rootfs",
                            J::obj(vec![("type", J::s("layers")), ("diff_ids", J::Arr(vec![]))]),
                        ),
                    ])
                    .indent(),
                )
            })
            .collect();
        let layer = test_blob(b64_decode(LAYER_B64));
        let layer_desc = || {
            go_desc(
                MT_OCI_LAYER_GZ,
                &layer.digest,
                layer.content.len(),
                None,
                None,
            )
        };
        let config_desc = |c: &TestBlob| {
            go_desc(
                MT_OCI_CONFIG,
                &c.digest,
                c.content.len(),
                Some(&c.content),
                Some(b"hello world"),
            )
        };
        let manifests: Vec<TestBlob> = configs
            .iter()
            .map(|c| {
                test_blob(
                    J::obj(vec![
                        ("schemaVersion", J::Int(2)),
                        ("mediaType", J::s(MT_OCI_IMAGE)),
                        ("config", config_desc(c)),
                        ("layers", J::Arr(vec![layer_desc()])),
                    ])
                    .indent(),
                )
            })
            .collect();
        // no mediaType (empty, omitted) and no layers
        let empty_layer_manifest = test_blob(
            J::obj(vec![
                ("schemaVersion", J::Int(2)),
                ("config", config_desc(&configs[1])),
                ("layers", J::Arr(vec![])),
            ])
            .indent(),
        );
        let blob_a = test_blob(random_bytes(42));
        let empty_json = test_blob(b"{}".to_vec());
        let empty_json_desc = || go_desc(MT_OCI_EMPTY, &empty_json.digest, 2, None, None);
        let ref_blob_a = test_blob(b"NHL Peanut Butter on my NHL bagel".to_vec());
        let ref_blob_b = test_blob(b"NBA Strawberry Jam on my NBA croissant".to_vec());
        let subject = |m: &TestBlob| go_desc(MT_OCI_IMAGE, &m.digest, m.content.len(), None, None);
        let annotations = |v: &str| J::obj(vec![(ANNOTATION_KEY, J::s(v))]);
        let mut annotation_values = HashMap::new();
        let mut artifact = |artifact_type: Option<&str>,
                            config: J,
                            layers: Vec<J>,
                            subj: &TestBlob,
                            ann: Option<&str>| {
            let mut f = vec![
                ("schemaVersion", J::Int(2)),
                ("mediaType", J::s(MT_OCI_IMAGE)),
            ];
            if let Some(at) = artifact_type {
                f.push(("artifactType", J::s(at)));
            }
            f.push(("config", config));
            f.push(("layers", J::Arr(layers)));
            f.push(("subject", subject(subj)));
            if let Some(a) = ann {
                f.push(("annotations", annotations(a)));
            }
            let b = test_blob(J::obj(f).indent());
            if let Some(a) = ann {
                annotation_values.insert(b.digest.clone(), a.to_string());
            }
            b
        };
        let m4 = manifests[4].clone();
        let m3 = manifests[3].clone();
        // artifact with Subject ref using config.MediaType = artifactType
        let refs_a_config = artifact(
            None,
            go_desc(
                ARTIFACT_TYPE_A,
                &ref_blob_a.digest,
                ref_blob_a.content.len(),
                None,
                None,
            ),
            vec![empty_json_desc()],
            &m4,
            Some("test config a"),
        );
        let refs_b_config = artifact(
            None,
            go_desc(
                ARTIFACT_TYPE_B,
                &ref_blob_b.digest,
                ref_blob_b.content.len(),
                None,
                None,
            ),
            vec![empty_json_desc()],
            &m4,
            Some("test config b"),
        );
        // artifact with Subject ref using ArtifactType, config.MediaType = emptyJSON
        let refs_a_layer = artifact(
            Some(ARTIFACT_TYPE_A),
            empty_json_desc(),
            vec![go_desc(
                ARTIFACT_TYPE_A,
                &ref_blob_a.digest,
                ref_blob_a.content.len(),
                None,
                None,
            )],
            &m4,
            Some("test layer a"),
        );
        let refs_b_layer = artifact(
            Some(ARTIFACT_TYPE_B),
            empty_json_desc(),
            vec![go_desc(
                ARTIFACT_TYPE_B,
                &ref_blob_b.digest,
                ref_blob_b.content.len(),
                None,
                None,
            )],
            &m4,
            Some("test layer b"),
        );
        // same as B but based on a subject that has not been pushed
        let refs_c_layer = artifact(
            Some(ARTIFACT_TYPE_B),
            empty_json_desc(),
            vec![go_desc(
                ARTIFACT_TYPE_B,
                &ref_blob_b.digest,
                ref_blob_b.content.len(),
                None,
                None,
            )],
            &m3,
            None,
        );
        let refs_index = test_blob(
            J::obj(vec![
                ("schemaVersion", J::Int(2)),
                ("mediaType", J::s(MT_OCI_INDEX)),
                ("artifactType", J::s(ARTIFACT_TYPE_INDEX)),
                (
                    "manifests",
                    J::Arr(vec![
                        go_desc(
                            MT_OCI_IMAGE,
                            &refs_a_config.digest,
                            refs_a_config.content.len(),
                            None,
                            None,
                        ),
                        go_desc(
                            MT_OCI_IMAGE,
                            &refs_a_layer.digest,
                            refs_a_layer.content.len(),
                            None,
                            None,
                        ),
                    ]),
                ),
                ("subject", subject(&m4)),
                ("annotations", annotations("test index")),
            ])
            .indent(),
        );
        annotation_values.insert(refs_index.digest.clone(), "test index".into());
        let mut f = Fixtures {
            ns: NAMESPACE.to_string(),
            cross_ns: format!("conformance-{}", uuid::Uuid::new_v4()),
            configs,
            manifests,
            layer,
            empty_layer_manifest,
            blob_a,
            blob_b: test_blob(vec![]),
            chunk1: vec![],
            chunk2: vec![],
            chunk1_range: String::new(),
            chunk2_range: String::new(),
            empty_json,
            ref_blob_a,
            ref_blob_b,
            refs_a_config,
            refs_b_config,
            refs_a_layer,
            refs_b_layer,
            refs_c_layer,
            refs_index,
            annotation_values,
            dummy_digest: sha256(b"hello world"),
            invalid_manifest: b"blablabla".to_vec(),
        };
        f.setup_chunked_blob(42);
        f
    }

    /// setup.go `setupChunkedBlob`
    fn setup_chunked_blob(&mut self, size: usize) {
        self.blob_b = test_blob(random_bytes(size));
        let cut = size / 2 + 1;
        self.chunk1 = self.blob_b.content[..cut].to_vec();
        self.chunk2 = self.blob_b.content[cut..].to_vec();
        self.chunk1_range = format!("0-{}", self.chunk1.len() - 1);
        self.chunk2_range = format!("{}-{}", self.chunk1.len(), self.blob_b.content.len() - 1);
    }
}

// ---------------------------------------------------------------------------
// the registry under test
// ---------------------------------------------------------------------------

/// A fresh `dockyard` per test; or, to check the port itself against another
/// registry, the one at `$CONFORMANCE_REGISTRY_URL` (then every test uses
/// its own repository names so they can share it, and
/// `$CONFORMANCE_USERNAME`/`$CONFORMANCE_PASSWORD` are the credentials if it
/// requires authentication, as `OCI_USERNAME`/`OCI_PASSWORD` are for the Go
/// suite; `$CONFORMANCE_CROSSMOUNT_NAMESPACE` replaces the random
/// cross-mount namespace, as `OCI_CROSSMOUNT_NAMESPACE` does).
struct Target {
    _server: Option<common::Server>,
    base: String,
    suffix: String,
    /// User name and password for a registry with authentication on.
    login: Option<(String, String)>,
    /// The cross-mount namespace instead of the suite's random
    /// `conformance-<uuid>` (a one-component name, which only a system
    /// administrator may create on a hub with auth).
    cross_ns: Option<String>,
}

impl Target {
    /// A client for this registry, authenticating if it must.
    fn http(&self) -> Http {
        match &self.login {
            Some((u, p)) => Http::with_login(u, p),
            None => Http::new(),
        }
    }
}

fn external_target() -> Option<Target> {
    let url = std::env::var("CONFORMANCE_REGISTRY_URL")
        .ok()
        .filter(|u| !u.is_empty())?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Some(Target {
        _server: None,
        base: url.trim_end_matches('/').to_string(),
        suffix: format!("-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        login: env("CONFORMANCE_USERNAME")
            .map(|u| (u, env("CONFORMANCE_PASSWORD").unwrap_or_default())),
        cross_ns: env("CONFORMANCE_CROSSMOUNT_NAMESPACE"),
    })
}

fn target() -> Target {
    external_target().unwrap_or_else(|| {
        let server = common::Server::start();
        Target {
            base: server.base.clone(),
            _server: Some(server),
            suffix: String::new(),
            login: None,
            cross_ns: None,
        }
    })
}

/// The user the `auth_*` tests run as: not a system administrator, but
/// the administrator (creator) of the organisations that own the suite's
/// namespaces (`myorg/...`, `conformance/...`).
const AUTH_USER: &str = "conformer";
const AUTH_PASSWORD: &str = "conformer-password";

/// A fresh `dockyard` with authentication on (`[dockyard] standalone =
/// false`, token service, development key pair in the test's temp dir),
/// the user `conformer` and its organisations `myorg` and `conformance`;
/// the cross-mount namespace is `myorg/conformance-<uuid>`. With
/// `$CONFORMANCE_REGISTRY_URL` set, that registry as `target()` has it.
fn auth_target() -> Target {
    if let Some(t) = external_target() {
        return t;
    }
    let server = common::Server::start_config(
        "standalone = false\ntrustproxy = true\n\
         [auth_server]\n\
         privateKey = \"$DIR/cert/token.key\"\n\
         admin = \"sysadm\"\n\
         admin_password = \"sysadm-password\"\n\
         [token]\n\
         rootcertbundle = \"$DIR/cert/token.crt\"\n",
    );
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    let send = |rb: reqwest::blocking::RequestBuilder, what: &str| {
        let r = rb.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status();
        let body = r.text().unwrap_or_default();
        assert!(status.is_success(), "{what}: {status} {body}");
    };
    send(
        http.post(server.url("/uam/user/signup")).body(format!(
            "{{\"name\":\"{AUTH_USER}\",\"password\":\"{AUTH_PASSWORD}\"}}"
        )),
        "sign-up",
    );
    for org in ["myorg", "conformance"] {
        send(
            http.post(server.url("/uam/organization"))
                .basic_auth(AUTH_USER, Some(AUTH_PASSWORD))
                .body(format!("{{\"name\":\"{org}\",\"memberprivilege\":3}}")),
            "organisation",
        );
    }
    // Auth is really on: an anonymous request is challenged.
    let r = http.get(server.url("/v2/")).send().expect("GET /v2/");
    assert_eq!(
        r.status(),
        401,
        "the auth target must require authentication"
    );
    assert!(
        r.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer realm=")),
        "the auth target must send a Bearer challenge"
    );
    Target {
        base: server.base.clone(),
        _server: Some(server),
        suffix: String::new(),
        login: Some((AUTH_USER.into(), AUTH_PASSWORD.into())),
        cross_ns: Some(format!("myorg/conformance-{}", uuid::Uuid::new_v4())),
    }
}

// ---------------------------------------------------------------------------
// reggie-style client
// ---------------------------------------------------------------------------

struct G {
    http: Http,
    base: String,
}

struct GReq<'a> {
    g: &'a G,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    params: Values,
    body: Option<Vec<u8>>,
}

impl G {
    fn new(t: &Target) -> G {
        G {
            http: t.http(),
            base: t.base.trim_end_matches('/').to_string(),
        }
    }
    /// `client.NewRequest(method, path)`: the path (with any query it
    /// carries) is appended to the root URL.
    fn req(&self, method: &'static str, path: impl Into<String>) -> GReq<'_> {
        GReq {
            g: self,
            method,
            path: path.into(),
            headers: vec![],
            params: Values::default(),
            body: None,
        }
    }
}

impl GReq<'_> {
    fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    /// resty `SetQueryParam`
    fn query(mut self, k: &str, v: &str) -> Self {
        self.params.set(k, v);
        self
    }
    fn body(mut self, b: &[u8]) -> Self {
        self.body = Some(b.to_vec());
        self
    }
    fn url(&self) -> String {
        let mut url = format!("{}/{}", self.g.base, self.path.trim_start_matches('/'));
        let enc = self.params.encode();
        if !enc.is_empty() {
            match url.split_once('?') {
                Some((_, q)) if !q.is_empty() => url = format!("{url}&{enc}"),
                Some((p, _)) => url = format!("{p}?{enc}"),
                None => url = format!("{url}?{enc}"),
            }
        }
        url
    }
    fn send(self) -> Result<Resp, String> {
        let url = self.url();
        let body = match self.body {
            Some(b) => ReqBody::Chunked(b),
            None => ReqBody::None,
        };
        let resp = self.g.http.send(self.method, &url, &self.headers, body)?;
        // resty reads every body; a failure there is an error from client.Do
        match &resp.body_err {
            Some(e) => Err(format!("{e}: {}", resp.describe())),
            None => Ok(resp),
        }
    }
}

fn skip(msg: &str) -> SpecResult {
    Err(SpecErr::Skip(msg.to_string()))
}

/// `POST /v2/<name>/blobs/uploads/` then `PUT <location>?digest=` with the
/// blob; the POST's status is not checked, the PUT must be 2xx.
fn populate_blob(g: &G, ns: &str, b: &TestBlob) -> SpecResult {
    let resp = g.req("POST", format!("/v2/{ns}/blobs/uploads/")).send()?;
    let resp = g
        .req("PUT", resp.relative_location())
        .query("digest", &b.digest)
        .header("Content-Type", MT_OCTET)
        .header("Content-Length", &b.len)
        .body(&b.content)
        .send()?;
    expect_2xx_or(&resp, &[])?;
    Ok(())
}

fn put_manifest(
    g: &G,
    ns: &str,
    reference: &str,
    mt: &str,
    content: &[u8],
) -> Result<Resp, String> {
    g.req("PUT", format!("/v2/{ns}/manifests/{reference}"))
        .header("Content-Type", mt)
        .body(content)
        .send()
}

fn delete(g: &G, ns: &str, kind: &str, reference: &str) -> Result<Resp, String> {
    g.req("DELETE", format!("/v2/{ns}/{kind}/{reference}"))
        .send()
}

fn get_tag_list(r: &Resp) -> Vec<String> {
    parse_tag_list(&r.body).map(|t| t.1).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// 01_pull_test.go
// ---------------------------------------------------------------------------

fn workflow_pull(r: &mut Runner, g: &G, f: &Fixtures) {
    let ns = f.ns.as_str();
    let mut tag = String::new();

    r.spec(
        "Pull / Setup / Populate registry with test blob [configs[0]]",
        || populate_blob(g, ns, &f.configs[0]),
    );
    r.spec(
        "Pull / Setup / Populate registry with test blob [configs[1]]",
        || populate_blob(g, ns, &f.configs[1]),
    );
    r.spec("Pull / Setup / Populate registry with test layer", || {
        populate_blob(g, ns, &f.layer)
    });
    r.spec(
        "Pull / Setup / Populate registry with test manifest [manifests[0] as tag tagtest0]",
        || {
            tag = TEST_TAG.to_string();
            let resp = put_manifest(g, ns, &tag, MT_OCI_IMAGE, &f.manifests[0].content)?;
            expect_2xx_or(&resp, &[])?;
            Ok(())
        },
    );
    r.spec(
        "Pull / Setup / Populate registry with test manifest [manifests[1] by digest]",
        || {
            let resp = put_manifest(
                g,
                ns,
                &f.manifests[1].digest,
                MT_OCI_IMAGE,
                &f.manifests[1].content,
            )?;
            expect_2xx_or(&resp, &[])?;
            Ok(())
        },
    );
    r.spec("Pull / Setup / Get tag name from environment", || {
        skip("RunOnlyIfNot(runPullSetup): only when OCI_TAG_NAME/OCI_MANIFEST_DIGEST/OCI_BLOB_DIGEST are set")
    });

    // Pull blobs
    r.spec(
        "Pull / Pull blobs / HEAD request to nonexistent blob should result in 404 response",
        || {
            let resp = g
                .req("HEAD", format!("/v2/{ns}/blobs/{}", f.dummy_digest))
                .send()?;
            expect_status(&resp, &[404])?;
            Ok(())
        },
    );
    r.spec(
        "Pull / Pull blobs / HEAD request to existing blob should yield 200",
        || {
            let resp = g
                .req("HEAD", format!("/v2/{ns}/blobs/{}", f.configs[0].digest))
                .send()?;
            expect_status(&resp, &[200])?;
            let h = resp.header("Docker-Content-Digest");
            ensure!(
                h.is_empty() || h == f.configs[0].digest,
                "Docker-Content-Digest {h:?} != {}: {}",
                f.configs[0].digest,
                resp.describe()
            );
            Ok(())
        },
    );
    r.spec(
        "Pull / Pull blobs / GET nonexistent blob should result in 404 response",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/blobs/{}", f.dummy_digest))
                .send()?;
            expect_status(&resp, &[404])?;
            Ok(())
        },
    );
    r.spec(
        "Pull / Pull blobs / GET request to existing blob URL should yield 200",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/blobs/{}", f.configs[0].digest))
                .send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );

    // Pull manifests
    r.spec(
        "Pull / Pull manifests / HEAD request to nonexistent manifest should return 404",
        || {
            let resp = g
                .req("HEAD", format!("/v2/{ns}/manifests/{NONEXISTENT_MANIFEST}"))
                .send()?;
            expect_status(&resp, &[404])?;
            Ok(())
        },
    );
    for (i, title) in [
        (
            0,
            "Pull / Pull manifests / HEAD request to manifest[0] path (digest) should yield 200 response",
        ),
        (
            1,
            "Pull / Pull manifests / HEAD request to manifest[1] path (digest) should yield 200 response",
        ),
    ] {
        r.spec(title, || {
            let resp = g
                .req(
                    "HEAD",
                    format!("/v2/{ns}/manifests/{}", f.manifests[i].digest),
                )
                .header("Accept", MT_OCI_IMAGE)
                .send()?;
            expect_status(&resp, &[200])?;
            let h = resp.header("Docker-Content-Digest");
            ensure!(
                h.is_empty() || h == f.manifests[i].digest,
                "Docker-Content-Digest {h:?} != {}: {}",
                f.manifests[i].digest,
                resp.describe()
            );
            Ok(())
        });
    }
    r.spec(
        "Pull / Pull manifests / HEAD request to manifest path (tag) should yield 200 response",
        || {
            ensure!(!tag.is_empty(), "tag is empty (setup did not run)");
            let resp = g
                .req("HEAD", format!("/v2/{ns}/manifests/{tag}"))
                .header("Accept", MT_OCI_IMAGE)
                .send()?;
            expect_status(&resp, &[200])?;
            let h = resp.header("Docker-Content-Digest");
            ensure!(
                h.is_empty() || h == f.manifests[0].digest,
                "Docker-Content-Digest {h:?} != {}: {}",
                f.manifests[0].digest,
                resp.describe()
            );
            Ok(())
        },
    );
    r.spec(
        "Pull / Pull manifests / GET nonexistent manifest should return 404",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/manifests/{NONEXISTENT_MANIFEST}"))
                .send()?;
            expect_status(&resp, &[404])?;
            Ok(())
        },
    );
    for (i, title) in [
        (
            0,
            "Pull / Pull manifests / GET request to manifest[0] path (digest) should yield 200 response",
        ),
        (
            1,
            "Pull / Pull manifests / GET request to manifest[1] path (digest) should yield 200 response",
        ),
    ] {
        r.spec(title, || {
            let resp = g
                .req(
                    "GET",
                    format!("/v2/{ns}/manifests/{}", f.manifests[i].digest),
                )
                .header("Accept", MT_OCI_IMAGE)
                .send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        });
    }
    r.spec(
        "Pull / Pull manifests / GET request to manifest path (tag) should yield 200 response",
        || {
            ensure!(!tag.is_empty(), "tag is empty (setup did not run)");
            let resp = g
                .req("GET", format!("/v2/{ns}/manifests/{tag}"))
                .header("Accept", MT_OCI_IMAGE)
                .send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );

    // Error codes
    r.spec(
        "Pull / Error codes / 400 response body should contain OCI-conforming JSON message",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/manifests/sha256:totallywrong"))
                .header("Content-Type", MT_OCI_IMAGE)
                .body(&f.invalid_manifest)
                .send()?;
            expect_status(&resp, &[400, 404])?;
            if resp.status == 400 {
                let codes = oci_error_codes(&resp)?;
                ensure!(
                    ERROR_CODES.contains(&codes[0].as_str()),
                    "error code {:?} is not an OCI error code: {}",
                    codes[0],
                    resp.describe()
                );
            }
            Ok(())
        },
    );

    // Teardown (deleteManifestBeforeBlobs = true)
    for (i, title) in [
        (0, "Pull / Teardown / Delete manifest[0] created in setup"),
        (1, "Pull / Teardown / Delete manifest[1] created in setup"),
    ] {
        r.spec(title, || {
            let resp = delete(g, ns, "manifests", &f.manifests[i].digest)?;
            expect_2xx_or(&resp, &[405])?;
            Ok(())
        });
    }
    for (d, title) in [
        (
            &f.configs[0].digest,
            "Pull / Teardown / Delete config[0] blob created in setup",
        ),
        (
            &f.configs[1].digest,
            "Pull / Teardown / Delete config[1] blob created in setup",
        ),
        (
            &f.layer.digest,
            "Pull / Teardown / Delete layer blob created in setup",
        ),
    ] {
        r.spec(title, || {
            let resp = delete(g, ns, "blobs", d)?;
            expect_2xx_or(&resp, &[404, 405])?;
            Ok(())
        });
    }
}

// ---------------------------------------------------------------------------
// 02_push_test.go
// ---------------------------------------------------------------------------

fn workflow_push(r: &mut Runner, g: &G, f: &mut Fixtures) {
    let ns = f.ns.clone();
    let ns = ns.as_str();
    let cross = f.cross_ns.clone();
    let mut last: Option<Resp> = None;
    let mut prev: Option<Resp> = None;
    let mut empty_layer_ref = String::new();
    let uploads = format!("/v2/{ns}/blobs/uploads/");

    // Blob Upload Streamed
    r.spec(
        "Push / Blob Upload Streamed / PATCH request with blob in body should yield 202 response",
        || {
            let resp = g.req("POST", &uploads).send()?;
            ensure!(
                !resp.header("Location").is_empty(),
                "POST returned no Location: {}",
                resp.describe()
            );
            let resp = g
                .req("PATCH", resp.relative_location())
                .header("Content-Type", MT_OCTET)
                .body(&f.blob_a.content)
                .send()?;
            expect_status(&resp, &[202])?;
            last = Some(resp);
            Ok(())
        },
    );
    r.spec("Push / Blob Upload Streamed / PUT request to session URL with digest should yield 201 response", || {
        let lr = last.as_ref().ok_or("lastResponse is nil (previous spec failed)")?;
        let resp = g
            .req("PUT", lr.relative_location())
            .query("digest", &f.blob_a.digest)
            .header("Content-Type", MT_OCTET)
            .header("Content-Length", &f.blob_a.len)
            .send()?;
        expect_status(&resp, &[201])?;
        ensure!(!resp.header("Location").is_empty(), "no Location header: {}", resp.describe());
        Ok(())
    });

    // Blob Upload Monolithic
    r.spec(
        "Push / Blob Upload Monolithic / GET nonexistent blob should result in 404 response",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/blobs/{}", f.dummy_digest))
                .send()?;
            expect_status(&resp, &[404])?;
            Ok(())
        },
    );
    r.spec("Push / Blob Upload Monolithic / POST request with digest and blob should yield a 201 or 202", || {
        let resp = g
            .req("POST", &uploads)
            .header("Content-Length", &f.configs[1].len)
            .header("Content-Type", MT_OCTET)
            .query("digest", &f.configs[1].digest)
            .body(&f.configs[1].content)
            .send()?;
        ensure!(!resp.header("Location").is_empty(), "no Location header: {}", resp.describe());
        expect_status(&resp, &[201, 202])?;
        last = Some(resp);
        Ok(())
    });
    r.spec(
        "Push / Blob Upload Monolithic / GET request to blob URL from prior request should yield 200 or 404 based on response code",
        || {
            let lr = last.as_ref().ok_or("lastResponse is nil")?;
            let resp = g.req("GET", format!("/v2/{ns}/blobs/{}", f.configs[1].digest)).send()?;
            if lr.status == 202 {
                expect_status(&resp, &[404]).map_err(|e| format!("the POST answered 202 (no blob stored), so {e}"))?;
            } else {
                expect_status(&resp, &[200])?;
            }
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Monolithic / POST request should yield a session ID",
        || {
            let resp = g.req("POST", &uploads).send()?;
            expect_status(&resp, &[202])?;
            last = Some(resp);
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Monolithic / PUT upload of a blob should yield a 201 Response",
        || {
            let lr = last.as_ref().ok_or("lastResponse is nil")?;
            let resp = g
                .req("PUT", lr.relative_location())
                .header("Content-Length", &f.configs[1].len)
                .header("Content-Type", MT_OCTET)
                .query("digest", &f.configs[1].digest)
                .body(&f.configs[1].content)
                .send()?;
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location header: {}",
                resp.describe()
            );
            expect_status(&resp, &[201])?;
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Monolithic / GET request to existing blob should yield 200 response",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/blobs/{}", f.configs[1].digest))
                .send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Monolithic / PUT upload of a layer blob should yield a 201 Response",
        || {
            let resp = g.req("POST", &uploads).send()?;
            let resp = g
                .req("PUT", resp.relative_location())
                .header("Content-Length", &f.layer.len)
                .header("Content-Type", MT_OCTET)
                .query("digest", &f.layer.digest)
                .body(&f.layer.content)
                .send()?;
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location header: {}",
                resp.describe()
            );
            expect_status(&resp, &[201])?;
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Monolithic / GET request to existing layer should yield 200 response",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/blobs/{}", f.layer.digest))
                .send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );

    // Blob Upload Chunked
    r.spec(
        "Push / Blob Upload Chunked / Out-of-order blob upload should return 416",
        || {
            let resp = g
                .req("POST", &uploads)
                .header("Content-Length", "0")
                .send()?;
            ensure!(
                !resp.header("Location").is_empty(),
                "POST returned no Location: {}",
                resp.describe()
            );
            // rebuild chunked blob if min size is above our chunk size
            let min = resp.header("OCI-Chunk-Min-Length");
            if !min.is_empty() {
                let m: usize = min
                    .parse()
                    .map_err(|e| format!("OCI-Chunk-Min-Length {min:?} is not an int: {e}"))?;
                if m > f.chunk1.len() {
                    f.setup_chunked_blob(m * 2 - 2);
                }
            }
            let resp = g
                .req("PATCH", resp.relative_location())
                .header("Content-Type", MT_OCTET)
                .header("Content-Length", &f.chunk2.len().to_string())
                .header("Content-Range", &f.chunk2_range)
                .body(&f.chunk2)
                .send()?;
            expect_status(&resp, &[416])?;
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Chunked / PATCH request with first chunk should return 202",
        || {
            let resp = g
                .req("POST", &uploads)
                .header("Content-Length", "0")
                .send()?;
            ensure!(
                !resp.header("Location").is_empty(),
                "POST returned no Location: {}",
                resp.describe()
            );
            let loc = resp.relative_location();
            prev = Some(resp);
            let resp = g
                .req("PATCH", loc)
                .header("Content-Type", MT_OCTET)
                .header("Content-Length", &f.chunk1.len().to_string())
                .header("Content-Range", &f.chunk1_range)
                .body(&f.chunk1)
                .send()?;
            expect_status(&resp, &[202])?;
            ensure!(
                resp.header("Range") == f.chunk1_range,
                "Range header {:?}, expected {:?}: {}",
                resp.header("Range"),
                f.chunk1_range,
                resp.describe()
            );
            last = Some(resp);
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Chunked / Retry previous blob chunk should return 416",
        || {
            let pr = prev.as_ref().ok_or("prevResponse is nil")?;
            let resp = g
                .req("PATCH", pr.relative_location())
                .header("Content-Type", MT_OCTET)
                .header("Content-Length", &f.chunk1.len().to_string())
                .header("Content-Range", &f.chunk1_range)
                .body(&f.chunk1)
                .send()?;
            expect_status(&resp, &[416])?;
            Ok(())
        },
    );
    r.spec("Push / Blob Upload Chunked / Get on stale blob upload should return 204 with a range and location", || {
        let pr = prev.as_ref().ok_or("prevResponse is nil")?;
        let resp = g.req("GET", pr.relative_location()).send()?;
        expect_status(&resp, &[204])?;
        ensure!(!resp.header("Location").is_empty(), "no Location header: {}", resp.describe());
        ensure!(
            resp.header("Range") == f.chunk1_range,
            "Range header {:?}, expected {:?}: {}",
            resp.header("Range"),
            f.chunk1_range,
            resp.describe()
        );
        last = Some(resp);
        Ok(())
    });
    r.spec(
        "Push / Blob Upload Chunked / PATCH request with second chunk should return 202",
        || {
            let lr = last.as_ref().ok_or("lastResponse is nil")?;
            let resp = g
                .req("PATCH", lr.relative_location())
                .header("Content-Length", &f.chunk2.len().to_string())
                .header("Content-Range", &f.chunk2_range)
                .header("Content-Type", MT_OCTET)
                .body(&f.chunk2)
                .send()?;
            expect_status(&resp, &[202])?;
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location header: {}",
                resp.describe()
            );
            last = Some(resp);
            Ok(())
        },
    );
    r.spec(
        "Push / Blob Upload Chunked / PUT request with digest should return 201",
        || {
            let lr = last.as_ref().ok_or("lastResponse is nil")?;
            let resp = g
                .req("PUT", lr.relative_location())
                .header("Content-Length", "0")
                .header("Content-Type", MT_OCTET)
                .query("digest", &f.blob_b.digest)
                .send()?;
            expect_status(&resp, &[201])?;
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location header: {}",
                resp.describe()
            );
            Ok(())
        },
    );

    // Cross-Repository Blob Mount
    let cross_uploads = format!("/v2/{cross}/blobs/uploads/");
    r.spec(
        "Push / Cross-Repository Blob Mount / Cross-mounting of a blob without the from argument should yield session id",
        || {
            let resp = g.req("POST", &cross_uploads).query("mount", &f.dummy_digest).send()?;
            expect_status(&resp, &[202])?;
            ensure!(!resp.header("Location").is_empty(), "no Location header: {}", resp.describe());
            Ok(())
        },
    );
    r.spec(
        "Push / Cross-Repository Blob Mount / POST request to mount another repository's blob should return 201 or 202",
        || {
            let resp = g
                .req("POST", &cross_uploads)
                .query("mount", &f.blob_a.digest)
                .query("from", ns)
                .send()?;
            expect_status(&resp, &[201, 202])?;
            last = Some(resp);
            Ok(())
        },
    );
    r.spec(
        "Push / Cross-Repository Blob Mount / GET request to test digest within cross-mount namespace should return 200",
        || {
            let lr = last.as_ref().ok_or("lastResponse is nil")?;
            if lr.status != 201 {
                return skip("RunOnlyIf(lastResponse.StatusCode() == 201)");
            }
            let want = format!("/v2/{cross}/blobs/{}", f.blob_a.digest);
            ensure!(
                lr.relative_location() == want,
                "mount Location path {:?}, expected {want:?}: {}",
                lr.relative_location(),
                lr.describe()
            );
            let resp = g.req("GET", lr.relative_location()).send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );
    r.spec("Push / Cross-Repository Blob Mount / Cross-mounting of nonexistent blob should yield session id", || {
        let lr = last.as_ref().ok_or("lastResponse is nil")?;
        if lr.status != 202 {
            return skip("RunOnlyIf(lastResponse.StatusCode() == 202)");
        }
        let want = format!("/v2/{cross}/blobs/uploads/");
        ensure!(
            lr.relative_location().starts_with(&want),
            "Location {:?} does not start with {want:?}: {}",
            lr.relative_location(),
            lr.describe()
        );
        Ok(())
    });
    r.spec(
        "Push / Cross-Repository Blob Mount / Cross-mounting without from, and automatic content discovery enabled should return a 201",
        || skip("RunOnlyIf(runAutomaticCrossmountTest): OCI_AUTOMATIC_CROSSMOUNT is not set"),
    );
    r.spec(
        "Push / Cross-Repository Blob Mount / Cross-mounting without from, and automatic content discovery disabled should return a 202",
        || skip("RunOnlyIf(runAutomaticCrossmountTest): OCI_AUTOMATIC_CROSSMOUNT is not set"),
    );

    // Manifest Upload
    r.spec(
        "Push / Manifest Upload / GET nonexistent manifest should return 404",
        || {
            let resp = g
                .req("GET", format!("/v2/{ns}/manifests/{NONEXISTENT_MANIFEST}"))
                .send()?;
            expect_status(&resp, &[404])?;
            Ok(())
        },
    );
    r.spec(
        "Push / Manifest Upload / PUT should accept a manifest upload",
        || {
            for i in 0..4 {
                let resp = put_manifest(
                    g,
                    ns,
                    &format!("test{i}"),
                    MT_OCI_IMAGE,
                    &f.manifests[1].content,
                )?;
                ensure!(
                    !resp.header("Location").is_empty(),
                    "tag test{i}: no Location header: {}",
                    resp.describe()
                );
                expect_status(&resp, &[201]).map_err(|e| format!("tag test{i}: {e}"))?;
            }
            Ok(())
        },
    );
    r.spec(
        "Push / Manifest Upload / Registry should accept a manifest upload with no layers",
        || {
            let resp = put_manifest(
                g,
                ns,
                EMPTY_LAYER_TAG,
                MT_OCI_IMAGE,
                &f.empty_layer_manifest.content,
            )?;
            if resp.status == 201 {
                empty_layer_ref = resp.header("Location");
                ensure!(
                    !empty_layer_ref.is_empty(),
                    "no Location header: {}",
                    resp.describe()
                );
            } else {
                eprintln!(
                    "WARNING: image manifest with no layers is not supported: {}",
                    resp.describe()
                );
            }
            Ok(())
        },
    );
    r.spec(
        "Push / Manifest Upload / GET request to manifest URL (digest) should yield 200 response",
        || {
            let resp = g
                .req(
                    "GET",
                    format!("/v2/{ns}/manifests/{}", f.manifests[1].digest),
                )
                .header("Accept", MT_OCI_IMAGE)
                .send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );

    // Teardown (deleteManifestBeforeBlobs = true)
    r.spec("Push / Teardown / Delete manifest created in tests", || {
        let resp = delete(g, ns, "manifests", &f.manifests[1].digest)?;
        expect_2xx_or(&resp, &[405])?;
        if !empty_layer_ref.is_empty() {
            let resp = delete(g, ns, "manifests", &f.empty_layer_manifest.digest)?;
            expect_2xx_or(&resp, &[405])?;
        }
        Ok(())
    });
    r.spec(
        "Push / Teardown / Delete config blob created in tests",
        || {
            let resp = delete(g, ns, "blobs", &f.configs[1].digest)?;
            expect_2xx_or(&resp, &[404, 405])?;
            Ok(())
        },
    );
    r.spec(
        "Push / Teardown / Delete layer blob created in setup",
        || {
            let resp = delete(g, ns, "blobs", &f.layer.digest)?;
            expect_2xx_or(&resp, &[404, 405])?;
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// 03_discovery_test.go
// ---------------------------------------------------------------------------

fn check_annotations(f: &Fixtures, list: &[RDesc]) -> Result<(), String> {
    for d in list {
        ensure!(
            d.annotations.len() == 1,
            "referrer {} has {} annotations, expected exactly 1 ({:?})",
            d.digest,
            d.annotations.len(),
            d.annotations
        );
        let want = f
            .annotation_values
            .get(&d.digest)
            .cloned()
            .unwrap_or_default();
        let got = d
            .annotations
            .get(ANNOTATION_KEY)
            .cloned()
            .unwrap_or_default();
        ensure!(
            got == want,
            "referrer {} annotation {ANNOTATION_KEY} = {got:?}, expected {want:?}",
            d.digest
        );
    }
    Ok(())
}

fn workflow_discovery(r: &mut Runner, g: &G, f: &Fixtures) {
    let ns = f.ns.as_str();
    let mut num_tags: usize = 4;
    let mut tag_list: Vec<String> = vec![];

    r.spec(
        "Content Discovery / Setup / Populate registry with test blob",
        || populate_blob(g, ns, &f.configs[2]),
    );
    r.spec(
        "Content Discovery / Setup / Populate registry with test layer",
        || populate_blob(g, ns, &f.layer),
    );
    r.spec(
        "Content Discovery / Setup / Populate registry with test tags",
        || {
            for i in 0..num_tags {
                let t = format!("test{i}");
                tag_list.push(t.clone());
                let resp = put_manifest(g, ns, &t, MT_OCI_IMAGE, &f.manifests[2].content)?;
                expect_2xx_or(&resp, &[]).map_err(|e| format!("tag {t}: {e}"))?;
            }
            if let Ok(resp) = g.req("GET", format!("/v2/{ns}/tags/list")).send() {
                tag_list = get_tag_list(&resp);
            }
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Setup / Populate registry with test tags (no push)",
        || skip("RunOnlyIfNot(runContentDiscoverySetup): only when OCI_TAG_LIST is set"),
    );
    r.spec("Content Discovery / Setup / References setup", || {
        ensure!(
            f.empty_json.digest
                == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "empty JSON digest"
        );
        let step = |what: &str, res: SpecResult| -> SpecResult {
            res.map_err(|e| match e {
                SpecErr::Fail(m) => SpecErr::Fail(format!("{what}: {m}")),
                s => s,
            })
        };
        let put_ref = |what: &str, b: &TestBlob, mt: &str, subject: &str| -> SpecResult {
            let resp = put_manifest(g, ns, &b.digest, mt, &b.content)?;
            expect_2xx_or(&resp, &[]).map_err(|e| format!("{what}: {e}"))?;
            ensure!(
                resp.header("OCI-Subject") == subject,
                "{what}: OCI-Subject header {:?}, expected {subject:?}: {}",
                resp.header("OCI-Subject"),
                resp.describe()
            );
            Ok(())
        };
        let m4 = &f.manifests[4].digest;
        step(
            "Populate registry with empty JSON blob",
            populate_blob(g, ns, &f.empty_json),
        )?;
        step(
            "Populate registry with reference blob before the image manifest is pushed",
            populate_blob(g, ns, &f.ref_blob_a),
        )?;
        put_ref(
            "test references manifest A (config.MediaType = artifactType)",
            &f.refs_a_config,
            MT_OCI_IMAGE,
            m4,
        )?;
        put_ref(
            "test references manifest A (ArtifactType, config.MediaType = emptyJSON)",
            &f.refs_a_layer,
            MT_OCI_IMAGE,
            m4,
        )?;
        put_ref("test index manifest", &f.refs_index, MT_OCI_INDEX, m4)?;
        step(
            "Populate registry with test blob (configs[4])",
            populate_blob(g, ns, &f.configs[4]),
        )?;
        step(
            "Populate registry with test layer",
            populate_blob(g, ns, &f.layer),
        )?;
        let resp = put_manifest(g, ns, TEST_TAG, MT_OCI_IMAGE, &f.manifests[4].content)?;
        expect_2xx_or(&resp, &[]).map_err(|e| {
            format!("Populate registry with test manifest (manifests[4] as tagtest0): {e}")
        })?;
        step(
            "Populate registry with reference blob after the image manifest is pushed",
            populate_blob(g, ns, &f.ref_blob_b),
        )?;
        put_ref(
            "test references manifest B (config.MediaType = artifactType)",
            &f.refs_b_config,
            MT_OCI_IMAGE,
            m4,
        )?;
        put_ref(
            "test references manifest B (ArtifactType, config.MediaType = emptyJSON)",
            &f.refs_b_layer,
            MT_OCI_IMAGE,
            m4,
        )?;
        put_ref(
            "test references manifest C to a non-existent subject (manifests[3])",
            &f.refs_c_layer,
            MT_OCI_IMAGE,
            &f.manifests[3].digest,
        )?;
        Ok(())
    });

    // listing tags
    r.spec(
        "Content Discovery / Test content discovery endpoints (listing tags) / GET request to list tags should yield 200 response",
        || {
            let resp = g.req("GET", format!("/v2/{ns}/tags/list")).send()?;
            expect_status(&resp, &[200])?;
            tag_list = get_tag_list(&resp);
            num_tags = tag_list.len();
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Test content discovery endpoints (listing tags) / GET number of tags should be limitable by `n` query parameter",
        || {
            let n = num_tags / 2;
            let resp = g
                .req("GET", format!("/v2/{ns}/tags/list"))
                .query("n", &n.to_string())
                .send()?;
            expect_status(&resp, &[200])?;
            tag_list = get_tag_list(&resp);
            ensure!(
                tag_list.len() == n,
                "n={n} returned {} tags {tag_list:?}: {}",
                tag_list.len(),
                resp.describe()
            );
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Test content discovery endpoints (listing tags) / GET start of tag is set by `last` query parameter",
        || {
            let n = num_tags / 2;
            let resp = g
                .req("GET", format!("/v2/{ns}/tags/list"))
                .query("n", &n.to_string())
                .send()?;
            tag_list = get_tag_list(&resp);
            ensure!(
                n >= 1 && tag_list.len() >= n,
                "index out of range: tagList[{}] of {tag_list:?} (n={n}): {}",
                n as i64 - 1,
                resp.describe()
            );
            let last = tag_list[n - 1].clone();
            let resp = g
                .req("GET", format!("/v2/{ns}/tags/list"))
                .query("n", &n.to_string())
                .query("last", &last)
                .send()?;
            expect_status(&resp, &[200])?;
            ensure!(tag_list.len() <= n, "{} tags > n={n}", tag_list.len());
            ensure!(tag_list.contains(&last), "tag list does not contain {last:?}");
            Ok(())
        },
    );

    // listing references
    let referrers = |d: &str, artifact_type: Option<&str>| -> Result<(Resp, Vec<RDesc>), String> {
        let mut req = g.req("GET", format!("/v2/{ns}/referrers/{d}"));
        if let Some(at) = artifact_type {
            req = req.query("artifactType", at);
        }
        let resp = req.send()?;
        expect_status(&resp, &[200])?;
        ensure!(
            resp.header("Content-Type") == MT_OCI_INDEX,
            "Content-Type {:?}, expected {MT_OCI_INDEX:?}: {}",
            resp.header("Content-Type"),
            resp.describe()
        );
        let (_, _, list) =
            parse_index(&resp.body).map_err(|e| format!("{e}: {}", resp.describe()))?;
        Ok((resp, list))
    };
    r.spec(
        "Content Discovery / Test content discovery endpoints (listing references) / GET request to nonexistent blob should result in empty 200 response",
        || {
            let (resp, list) = referrers(&f.dummy_digest, None)?;
            ensure!(list.is_empty(), "expected no referrers: {}", resp.describe());
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Test content discovery endpoints (listing references) / GET request to existing blob should yield 200",
        || {
            let (resp, list) = referrers(&f.manifests[4].digest, None)?;
            ensure!(
                list.len() == 5,
                "expected 5 referrers (A config, A layer, index, B config, B layer), got {}: {}",
                list.len(),
                resp.describe()
            );
            ensure!(list[0].digest != list[1].digest, "first two referrers are the same digest");
            check_annotations(f, &list).map_err(|e| format!("{e}: {}", resp.describe()))?;
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Test content discovery endpoints (listing references) / GET request to existing blob with filter should yield 200",
        || {
            let (resp, list) = referrers(&f.manifests[4].digest, Some(ARTIFACT_TYPE_A))?;
            let applied = resp.header("OCI-Filters-Applied");
            if !applied.is_empty() {
                ensure!(
                    list.len() == 2,
                    "filtered by artifactType expected 2 referrers, got {}: {}",
                    list.len(),
                    resp.describe()
                );
                ensure!(
                    applied == "artifactType",
                    "OCI-Filters-Applied {applied:?}, expected \"artifactType\": {}",
                    resp.describe()
                );
            } else {
                ensure!(
                    list.len() == 5,
                    "unfiltered (no OCI-Filters-Applied) expected 5 referrers, got {}: {}",
                    list.len(),
                    resp.describe()
                );
                eprintln!("WARNING: filtering by artifact-type is not implemented");
            }
            check_annotations(f, &list).map_err(|e| format!("{e}: {}", resp.describe()))?;
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Test content discovery endpoints (listing references) / GET request to missing manifest should yield 200",
        || {
            let (resp, list) = referrers(&f.manifests[3].digest, None)?;
            ensure!(list.len() == 1, "expected 1 referrer, got {}: {}", list.len(), resp.describe());
            ensure!(
                list[0].digest == f.refs_c_layer.digest,
                "referrer {} != {}: {}",
                list[0].digest,
                f.refs_c_layer.digest,
                resp.describe()
            );
            Ok(())
        },
    );

    // Teardown (deleteManifestBeforeBlobs = true)
    r.spec(
        "Content Discovery / Teardown / Delete created manifest & associated tags",
        || {
            let refs = [
                f.refs_index.digest.as_str(),
                f.manifests[2].digest.as_str(),
                f.manifests[4].digest.as_str(),
                f.refs_a_config.digest.as_str(),
                f.refs_a_layer.digest.as_str(),
                TEST_TAG,
                f.refs_b_config.digest.as_str(),
                f.refs_b_layer.digest.as_str(),
                f.refs_c_layer.digest.as_str(),
            ];
            for reference in refs {
                let resp = delete(g, ns, "manifests", reference)?;
                expect_2xx_or(&resp, &[405, 404])
                    .map_err(|e| format!("DELETE manifest {reference}: {e}"))?;
            }
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Teardown / Delete config blob created in tests",
        || {
            let resp = delete(g, ns, "blobs", &f.configs[2].digest)?;
            expect_2xx_or(&resp, &[405])?;
            Ok(())
        },
    );
    r.spec(
        "Content Discovery / Teardown / Delete layer blob created in setup",
        || {
            let resp = delete(g, ns, "blobs", &f.layer.digest)?;
            expect_2xx_or(&resp, &[405])?;
            Ok(())
        },
    );
    r.spec("Content Discovery / Teardown / References teardown", || {
        let del = |kind: &str, reference: &str| -> SpecResult {
            let resp = delete(g, ns, kind, reference)?;
            expect_2xx_or(&resp, &[405, 404])
                .map_err(|e| format!("DELETE {kind} {reference}: {e}"))?;
            Ok(())
        };
        del("manifests", &f.refs_index.digest)?;
        del("manifests", &f.refs_a_config.digest)?;
        del("manifests", &f.refs_a_layer.digest)?;
        del("manifests", &f.manifests[4].digest)?;
        del("manifests", &f.refs_b_config.digest)?;
        del("manifests", &f.refs_b_layer.digest)?;
        del("blobs", &f.configs[4].digest)?;
        del("blobs", &f.ref_blob_a.digest)?;
        del("blobs", &f.ref_blob_b.digest)?;
        del("blobs", &f.empty_json.digest)?;
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// 04_management_test.go
// ---------------------------------------------------------------------------

fn workflow_management(r: &mut Runner, g: &G, f: &Fixtures) {
    let ns = f.ns.as_str();
    let mut tag_to_delete = String::new();
    let mut num_tags: usize = 0;
    let mut blob_delete_allowed = true;

    r.spec(
        "Content Management / Setup / Populate registry with test config blob",
        || populate_blob(g, ns, &f.configs[3]),
    );
    r.spec(
        "Content Management / Setup / Populate registry with test layer",
        || populate_blob(g, ns, &f.layer),
    );
    r.spec(
        "Content Management / Setup / Populate registry with test tag",
        || {
            tag_to_delete = TEST_TAG.to_string();
            let resp = put_manifest(g, ns, &tag_to_delete, MT_OCI_IMAGE, &f.manifests[3].content)?;
            expect_2xx_or(&resp, &[])?;
            Ok(())
        },
    );
    r.spec(
        "Content Management / Setup / Check how many tags there are before anything gets deleted",
        || {
            let resp = g.req("GET", format!("/v2/{ns}/tags/list")).send()?;
            expect_status(&resp, &[200])?;
            let (_, tags) =
                parse_tag_list(&resp.body).map_err(|e| format!("{e}: {}", resp.describe()))?;
            num_tags = tags.len();
            Ok(())
        },
    );

    r.spec(
        "Content Management / Manifest delete / DELETE request to manifest tag should return 202, unless tag deletion is disallowed (400/405)",
        || {
            let resp = delete(g, ns, "manifests", &tag_to_delete)?;
            expect_status(&resp, &[400, 202, 405])?;
            if resp.status == 400 {
                let codes = oci_error_codes(&resp)?;
                ensure!(
                    codes[0] == "UNSUPPORTED",
                    "400 error code {:?}, expected UNSUPPORTED: {}",
                    codes[0],
                    resp.describe()
                );
            }
            Ok(())
        },
    );
    r.spec(
        "Content Management / Manifest delete / DELETE request to manifest (digest) should yield 202 response unless already deleted",
        || {
            let resp = delete(g, ns, "manifests", &f.manifests[3].digest)?;
            expect_status(&resp, &[202, 404])?;
            Ok(())
        },
    );
    r.spec(
        "Content Management / Manifest delete / GET request to deleted manifest URL should yield 404 response, unless delete is disallowed",
        || {
            let resp = g.req("GET", format!("/v2/{ns}/manifests/{}", f.manifests[3].digest)).send()?;
            expect_status(&resp, &[404, 200])?;
            Ok(())
        },
    );
    r.spec("Content Management / Manifest delete / GET request to tags list should reflect manifest deletion", || {
        let resp = g.req("GET", format!("/v2/{ns}/tags/list")).send()?;
        expect_status(&resp, &[200])?;
        let (_, tags) = parse_tag_list(&resp.body).map_err(|e| format!("{e}: {}", resp.describe()))?;
        ensure!(
            tags.len() < num_tags,
            "{} tags after deleting {tag_to_delete:?}, expected fewer than {num_tags}: {}",
            tags.len(),
            resp.describe()
        );
        Ok(())
    });

    r.spec(
        "Content Management / Blob delete / DELETE request to blob URL should yield 202 response",
        || {
            let resp = delete(g, ns, "blobs", &f.configs[3].digest)?;
            expect_status(&resp, &[202, 404, 405]).map_err(|e| format!("config blob: {e}"))?;
            let resp = delete(g, ns, "blobs", &f.layer.digest)?;
            expect_status(&resp, &[202, 404, 405]).map_err(|e| format!("layer blob: {e}"))?;
            if resp.status == 405 {
                blob_delete_allowed = false;
            }
            Ok(())
        },
    );
    r.spec("Content Management / Blob delete / GET request to deleted blob URL should yield 404 response", || {
        if !blob_delete_allowed {
            return skip("RunOnlyIf(blobDeleteAllowed)");
        }
        let resp = g.req("GET", format!("/v2/{ns}/blobs/{}", f.configs[3].digest)).send()?;
        expect_status(&resp, &[404])?;
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// driving the suite
// ---------------------------------------------------------------------------

type Workflow = fn(&mut Runner, &G, &mut Fixtures);

/// Runs the workflows up to and including `upto` (1 = Pull .. 4 = Content
/// Management) in the suite's order on a fresh server, printing only the
/// outcomes under `focus`.
fn run_ginkgo(upto: usize, focus: &str) -> Runner {
    run_ginkgo_on(&target(), upto, focus)
}

fn run_ginkgo_on(t: &Target, upto: usize, focus: &str) -> Runner {
    let g = G::new(t);
    let mut f = Fixtures::new();
    f.ns.push_str(&t.suffix);
    if let Some(cross) = &t.cross_ns {
        f.cross_ns = cross.clone();
    }
    let mut r = Runner::new();
    r.verbose = false;
    let steps: [(&str, Workflow); 4] = [
        ("Pull /", |r, g, f| workflow_pull(r, g, f)),
        ("Push /", workflow_push),
        ("Content Discovery /", |r, g, f| workflow_discovery(r, g, f)),
        ("Content Management /", |r, g, f| {
            workflow_management(r, g, f)
        }),
    ];
    // An empty focus: every workflow's failures and skips.
    r.show_pass = !focus.is_empty();
    for (prefix, step) in steps.iter().take(upto) {
        r.verbose = focus.is_empty() || *prefix == focus;
        step(&mut r, &g, &mut f);
    }
    r
}

#[test]
fn conformance_01_pull() {
    run_ginkgo(1, "Pull /").finish("Pull /");
}

#[test]
fn conformance_02_push() {
    run_ginkgo(2, "Push /").finish("Push /");
}

#[test]
fn conformance_03_content_discovery() {
    run_ginkgo(3, "Content Discovery /").finish("Content Discovery /");
}

#[test]
fn conformance_04_content_management() {
    run_ginkgo(4, "Content Management /").finish("Content Management /");
}

/// The newer runner (run.go), with sha512 and referrers data.
#[test]
fn runner_suite_all_apis_and_data() {
    run_runner_suite(&target());
}

fn run_runner_suite(t: &Target) {
    let http = t.http();
    let mut r = Runner::new();
    r.show_pass = false;
    {
        let mut s = runner_suite::Suite::new(&http, &t.base, &mut r);
        s.repo.push_str(&t.suffix);
        s.repo2.push_str(&t.suffix);
        s.run_all();
    }
    r.finish("Runner /");
}

// ---------------------------------------------------------------------------
// extra checks from the older per-feature files (not in the ginkgo workflows)
// ---------------------------------------------------------------------------

/// 01_base_api_route_test.go
#[test]
fn extra_base_api_route_returns_200() {
    extra_base_api_route_returns_200_on(&target());
}

fn extra_base_api_route_returns_200_on(t: &Target) {
    let g = G::new(t);
    let mut r = Runner::new();
    r.spec(
        "Extra / Base API Route / GET request to base API route must return 200 response",
        || {
            let resp = g.req("GET", "/v2/").send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );
    r.finish("Extra /");
}

/// 07_error_codes_test.go: a manifest PUT to a malformed digest reference.
#[test]
fn extra_error_codes_manifest_put_invalid_digest() {
    extra_error_codes_manifest_put_invalid_digest_on(&target());
}

fn extra_error_codes_manifest_put_invalid_digest_on(t: &Target) {
    let g = G::new(t);
    let mut r = Runner::new();
    r.spec(
        "Extra / Error codes / 400 response body should contain OCI-conforming JSON message [PUT]",
        || {
            let resp = put_manifest(
                &g,
                &format!("{NAMESPACE}{}", t.suffix),
                "sha256:totallywrong",
                MT_OCI_IMAGE,
                b"blablabla",
            )?;
            expect_status(&resp, &[400])?;
            let codes = oci_error_codes(&resp)?;
            ensure!(
                ERROR_CODES.contains(&codes[0].as_str()),
                "error code {:?} is not an OCI error code: {}",
                codes[0],
                resp.describe()
            );
            Ok(())
        },
    );
    r.finish("Extra /");
}

/// 04_blob_upload_chunked_test.go: the last chunk carried by the closing PUT.
#[test]
fn extra_chunked_upload_final_chunk_in_put() {
    extra_chunked_upload_final_chunk_in_put_on(&target());
}

fn extra_chunked_upload_final_chunk_in_put_on(t: &Target) {
    let g = G::new(t);
    let f = Fixtures::new();
    let ns = &format!("{NAMESPACE}{}", t.suffix);
    let mut r = Runner::new();
    let mut last: Option<Resp> = None;
    r.spec(
        "Extra / Blob Upload Chunked / PATCH request with first chunk should return 202",
        || {
            let resp = g
                .req("POST", format!("/v2/{ns}/blobs/uploads/"))
                .header("Content-Length", "0")
                .send()?;
            ensure!(
                !resp.header("Location").is_empty(),
                "POST returned no Location: {}",
                resp.describe()
            );
            let resp = g
                .req("PATCH", resp.relative_location())
                .header("Content-Type", MT_OCTET)
                .header("Content-Range", &f.chunk1_range)
                .body(&f.chunk1)
                .send()?;
            expect_status(&resp, &[202])?;
            last = Some(resp);
            Ok(())
        },
    );
    r.spec(
        "Extra / Blob Upload Chunked / PUT request with final chunk should return 201",
        || {
            let lr = last.as_ref().ok_or("lastResponse is nil")?;
            let resp = g
                .req("PUT", lr.relative_location())
                .header("Content-Range", &f.chunk2_range)
                .header("Content-Type", MT_OCTET)
                .query("digest", &f.blob_b.digest)
                .body(&f.chunk2)
                .send()?;
            ensure!(
                !resp.header("Location").is_empty(),
                "no Location header: {}",
                resp.describe()
            );
            expect_status(&resp, &[201])?;
            let got = g
                .req("GET", format!("/v2/{ns}/blobs/{}", f.blob_b.digest))
                .send()?;
            expect_status(&got, &[200])?;
            ensure!(
                got.body == f.blob_b.content,
                "blob content differs after chunked upload: {}",
                got.describe()
            );
            Ok(())
        },
    );
    r.finish("Extra /");
}

/// 06_tags_list_test.go: `n`/`last` pagination returns the following tags.
#[test]
fn extra_tags_list_pagination() {
    extra_tags_list_pagination_on(&target());
}

fn extra_tags_list_pagination_on(t: &Target) {
    let g = G::new(t);
    let f = Fixtures::new();
    let ns = &format!("{NAMESPACE}{}", t.suffix);
    let mut r = Runner::new();
    r.spec(
        "Extra / Tags List / setup (config, layer, tags test0..test3)",
        || {
            populate_blob(&g, ns, &f.configs[0])?;
            populate_blob(&g, ns, &f.layer)?;
            for i in 0..4 {
                let resp = put_manifest(
                    &g,
                    ns,
                    &format!("test{i}"),
                    MT_OCI_IMAGE,
                    &f.manifests[0].content,
                )?;
                expect_status(&resp, &[201])?;
            }
            Ok(())
        },
    );
    let mut list_body: Option<Resp> = None;
    let mut num_tags = 0;
    r.spec(
        "Extra / Tags List / GET request to list tags should yield 200 response",
        || {
            let resp = g.req("GET", format!("/v2/{ns}/tags/list")).send()?;
            expect_status(&resp, &[200])?;
            let (_, tags) =
                parse_tag_list(&resp.body).map_err(|e| format!("{e}: {}", resp.describe()))?;
            num_tags = tags.len();
            list_body = Some(resp);
            Ok(())
        },
    );
    r.spec(
        "Extra / Tags List / GET request to manifest URL (tag) should yield 200 response",
        || {
            let lb = list_body.as_ref().ok_or("no tag list")?;
            let (_, tags) = parse_tag_list(&lb.body)?;
            ensure!(!tags.is_empty(), "tag list is empty: {}", lb.describe());
            let resp = g
                .req("GET", format!("/v2/{ns}/manifests/{}", tags[0]))
                .header("Accept", MT_OCI_IMAGE)
                .send()?;
            expect_status(&resp, &[200])?;
            Ok(())
        },
    );
    let mut last_list: Vec<String> = vec![];
    r.spec(
        "Extra / Tags List / GET number of tags should be limitable by `n` query parameter",
        || {
            let n = num_tags / 2;
            let resp = g
                .req("GET", format!("/v2/{ns}/tags/list"))
                .query("n", &n.to_string())
                .send()?;
            expect_status(&resp, &[200])?;
            let (_, tags) =
                parse_tag_list(&resp.body).map_err(|e| format!("{e}: {}", resp.describe()))?;
            ensure!(tags.len() == n, "n={n} gave {tags:?}: {}", resp.describe());
            last_list = tags;
            Ok(())
        },
    );
    r.spec(
        "Extra / Tags List / GET start of tag is set by `last` query parameter",
        || {
            let n = num_tags / 2;
            ensure!(
                n >= 1 && last_list.len() >= n,
                "previous list too short: {last_list:?}"
            );
            let last = &last_list[n - 1];
            let resp = g
                .req("GET", format!("/v2/{ns}/tags/list"))
                .query("n", &n.to_string())
                .query("last", last)
                .send()?;
            expect_status(&resp, &[200])?;
            let (_, tags) =
                parse_tag_list(&resp.body).map_err(|e| format!("{e}: {}", resp.describe()))?;
            ensure!(
                tags.contains(&"test3".to_string()),
                "after last={last:?} n={n}: {tags:?} lacks test3: {}",
                resp.describe()
            );
            Ok(())
        },
    );
    r.finish("Extra /");
}

/// api.go `BlobPostCancel` (disabled in the runner's 1.1 defaults):
/// DELETE on an upload session returns 204.
#[test]
fn extra_blob_upload_cancel() {
    extra_blob_upload_cancel_on(&target());
}

fn extra_blob_upload_cancel_on(t: &Target) {
    let http = t.http();
    let api = runner_suite::Api {
        http: &http,
        reg: t.base.clone(),
    };
    let mut r = Runner::new();
    r.spec(
        "Extra / Blob upload cancel / DELETE of an upload session returns 204",
        || {
            api.blob_post_cancel(&format!("conformance/repo1{}", t.suffix))
                .map_err(|e| SpecErr::Fail(format!("{e:?}")))
        },
    );
    r.finish("Extra /");
}

// ---------------------------------------------------------------------------
// the same suite against a hub with authentication on
// ---------------------------------------------------------------------------

/// All four ginkgo workflows, in order, as `conformer` through the token
/// flow (every request is challenged and retried with a bearer token from
/// `/uam/auth`, as the Go suite does with OCI_USERNAME/OCI_PASSWORD).
#[test]
fn auth_conformance_all_workflows() {
    let t = auth_target();
    let r = run_ginkgo_on(&t, 4, "");
    for prefix in [
        "Pull /",
        "Push /",
        "Content Discovery /",
        "Content Management /",
    ] {
        r.finish(prefix);
    }
}

/// The newer runner with auth on.
#[test]
fn auth_runner_suite_all_apis_and_data() {
    run_runner_suite(&auth_target());
}

/// The extra checks with auth on.
#[test]
fn auth_extra_checks() {
    let t = auth_target();
    extra_base_api_route_returns_200_on(&t);
    extra_error_codes_manifest_put_invalid_digest_on(&t);
    extra_chunked_upload_final_chunk_in_put_on(&t);
    extra_tags_list_pagination_on(&t);
    extra_blob_upload_cancel_on(&t);
}

// ---------------------------------------------------------------------------
// every workflow on every metadata backend
// ---------------------------------------------------------------------------

/// Starts a shared test service with `packaging/services/<script>` (the
/// same instances and ports as the unit tests) and returns its URL.
fn service(script: &str, ports: &[&str]) -> String {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("target/test-services");
    std::fs::create_dir_all(&dir).expect("target/test-services");
    let out = std::process::Command::new(root.join("packaging/services").join(script))
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

/// A fresh database on a SQL server (named after a random id) for one run.
fn fresh_sql_database(url: &str) -> String {
    let name = format!(
        "dockyard_conf_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use sea_orm::{ConnectionTrait, Database};
        let db = Database::connect(url)
            .await
            .expect("connect to the test database");
        db.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a database");
    });
    format!("{base}/{name}")
}

/// Every workflow (ginkgo port and the newer runner) against a hub whose
/// metadata lives in `db` (a `[db]` section).
fn conformance_on_backend(db: &str) {
    let server = common::Server::start_config(&format!("{db}\n"));
    let t = Target {
        base: server.base.clone(),
        _server: Some(server),
        suffix: String::new(),
        login: None,
        cross_ns: None,
    };
    run_ginkgo_on(&t, 4, "").finish("all workflows");
    run_runner_suite(&t);
}

#[test]
fn backend_mariadb_conformance() {
    let url = fresh_sql_database(&service("mariadb.sh", &["23306"]));
    conformance_on_backend(&format!("[db]\ndriver = \"mysql\"\nuri = \"{url}\""));
}

#[test]
fn backend_postgres_conformance() {
    let url = fresh_sql_database(&service("postgres.sh", &["25432"]));
    conformance_on_backend(&format!("[db]\ndriver = \"postgres\"\nuri = \"{url}\""));
}

#[test]
fn backend_redis_conformance() {
    let url = service("redis.sh", &["26379"]);
    let prefix = format!("conf{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    conformance_on_backend(&format!(
        "[db]\ndriver = \"redis\"\nuri = \"{url}\"\nprefix = \"{prefix}\""
    ));
}

// ---------------------------------------------------------------------------
// every workflow against a farm: two nodes behind nginx on MariaDB and RADOS
// ---------------------------------------------------------------------------

#[test]
fn farm_conformance() {
    let farm = cluster::Farm::start(2);
    let t = Target {
        base: farm.base.clone(),
        _server: None,
        suffix: String::new(),
        login: None,
        cross_ns: None,
    };
    run_ginkgo_on(&t, 4, "").finish("all workflows");
    run_runner_suite(&t);
}
