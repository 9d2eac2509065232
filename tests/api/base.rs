//! The version check, routing (unknown paths, wrong methods) and
//! repository names.

use serde_json::json;

use crate::support::*;

#[test]
fn version_check_with_and_without_slash() {
    let api = Api::start();
    for path in ["/v2/", "/v2"] {
        let r = api.get(path);
        r.expect_status(
            200,
            "end-1: GET /v2/ answers 200 OK when the registry implements the spec",
        );
        let r = api.head(path);
        r.expect_status(200, "end-1: HEAD of the version check answers like GET");
    }
}

#[test]
fn unknown_paths_are_404() {
    let api = Api::start();
    api.push_blob("known", b"x");
    for path in [
        "/v2/nothing",
        "/v2/known/unknown",
        "/v2/known/tags",
        "/v2/known/tags/lists",
        "/v2/known/tags/list/extra",
        "/v2/known/blobs",
        "/v2/known/manifests",
        "/v2/_catalog/extra",
        "/v2/known/referrers",
    ] {
        let r = api.get(path);
        r.expect_status(
            404,
            &format!("a path that is no v2 endpoint ({path}) is 404 Not Found"),
        );
    }
    let r = api.get("/v3/");
    r.expect_status(404, "paths outside /v2 are not served");
}

#[test]
fn wrong_methods_are_405_unsupported() {
    let api = Api::start();
    let d = api.push_blob("repo", b"abc");
    let loc = api.start_upload("repo");
    let cases: Vec<(&str, String)> = vec![
        ("POST", "/v2/".into()),
        ("DELETE", "/v2/".into()),
        ("PUT", "/v2/".into()),
        ("POST", "/v2/repo/manifests/latest".into()),
        ("PATCH", "/v2/repo/manifests/latest".into()),
        ("PUT", format!("/v2/repo/blobs/{d}")),
        ("POST", format!("/v2/repo/blobs/{d}")),
        ("PATCH", format!("/v2/repo/blobs/{d}")),
        ("GET", "/v2/repo/blobs/uploads/".into()),
        ("PUT", "/v2/repo/blobs/uploads/".into()),
        ("DELETE", "/v2/repo/blobs/uploads/".into()),
        ("POST", loc.clone()),
        ("DELETE", "/v2/repo/tags/list".into()),
        ("PUT", "/v2/repo/tags/list".into()),
        ("POST", "/v2/_catalog".into()),
        ("DELETE", "/v2/_catalog".into()),
        ("DELETE", format!("/v2/repo/referrers/{d}")),
        ("PUT", format!("/v2/repo/referrers/{d}")),
    ];
    let mut wrong = Vec::new();
    for (m, path) in cases {
        let r = api.send(api.req(m, &path));
        if r.status != 405 || !r.error_codes().iter().any(|c| c == "UNSUPPORTED") {
            wrong.push(format!(
                "{m} {path} -> {} {:?} {:?}",
                r.status,
                r.error_codes(),
                r.text()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "Docker API v2 (UNSUPPORTED: \"the operation was unsupported due to a missing implementation\", \
         405 Method Not Allowed): a method an endpoint does not support is 405 with code UNSUPPORTED; \
         these answered otherwise:\n  {}",
        wrong.join("\n  ")
    );
}

/// Pushes a blob, a manifest with a tag, and reads them back under `repo`.
fn round_trip(api: &Api, repo: &str) {
    let why = format!("repository {repo:?} (a valid <name>) works like any other");
    let data = format!("blob of {repo}");
    let d = api.push_blob(repo, data.as_bytes());
    api.expect_blob(repo, &d, data.as_bytes(), &why);
    let loc = api.start_upload(repo);
    assert!(
        loc.contains(&format!("/v2/{repo}/blobs/uploads/")),
        "{why}: the session Location names the repository: {loc}"
    );
    let d2 = sha256(b"second");
    api.put_upload(&loc, &d2, Some((0, b"second")))
        .expect_status(201, &why);
    let m = api.oci_image(repo, repo);
    let md = api.push_manifest(repo, "v1", OCI_MANIFEST, &m);
    let r = api.get(&format!("/v2/{repo}/manifests/v1"));
    r.expect_status(200, &why);
    assert_eq!(r.body, m, "{why}: the manifest comes back byte for byte");
    api.get(&format!("/v2/{repo}/manifests/{md}"))
        .expect_status(200, &why);
    let r = api.get(&format!("/v2/{repo}/tags/list"));
    r.expect_status(200, &why);
    assert_eq!(
        r.json(),
        json!({"name": repo, "tags": ["v1"]}),
        "{why}: tags/list"
    );
    let r = api.get(&format!("/v2/{repo}/referrers/{md}"));
    r.expect_status(200, &why);
    api.delete(&format!("/v2/{repo}/manifests/{md}"))
        .expect_status(202, &why);
}

#[test]
fn names_with_many_components_and_reserved_words() {
    let api = Api::start();
    let long = format!("{}/{}", "a".repeat(127), "b".repeat(127));
    assert_eq!(long.len(), 255);
    let names = [
        "a/b/c/d",
        "blobs",
        "manifests",
        "tags",
        "uploads",
        "referrers",
        "x/blobs/y",
        "x/manifests/y",
        "x/tags/y",
        "blobs/uploads",
        "manifests/manifests",
        "tags/list",
        "a.b_c__d---e/f-g",
        long.as_str(),
    ];
    for name in names {
        round_trip(&api, name);
    }
    let r = api.get("/v2/_catalog");
    r.expect_status(200, "_catalog lists the repositories");
    let listed: Vec<String> = serde_json::from_value(r.json()["repositories"].clone()).unwrap();
    for name in names {
        assert!(
            listed.iter().any(|l| l == name),
            "_catalog lists every repository that has content, {name:?} included: {listed:?}"
        );
    }
}

#[test]
fn invalid_names_are_name_invalid() {
    let api = Api::start();
    let d = sha256(b"x");
    let too_long = "a".repeat(256);
    let bad = [
        "Upper",
        "a/Upper",
        "a..b",
        "-lead",
        "a/-lead",
        "trail-",
        "a.-b",
        "a___b",
        "a//b",
        "a/",
        too_long.as_str(),
    ];
    for name in bad {
        let why = format!(
            "spec (Pulling manifests): <name> MUST match \
             [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/...)* and (Docker API) be under 256 chars; \
             {name:?} is invalid -> 400 NAME_INVALID"
        );
        for (m, path) in [
            ("GET", format!("/v2/{name}/tags/list")),
            ("GET", format!("/v2/{name}/blobs/{d}")),
            ("HEAD", format!("/v2/{name}/blobs/{d}")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("PUT", format!("/v2/{name}/manifests/latest")),
        ] {
            let r = api.send(api.req(m, &path).body(b"{}".to_vec()));
            if m == "HEAD" {
                r.expect_status(400, &why);
            } else {
                r.expect_error(400, "NAME_INVALID", &why);
            }
        }
    }
}

#[test]
fn error_codes_are_from_the_spec_table() {
    let api = Api::start();
    let d = api.push_blob("codes", &gen_data(5, 0, 100));
    let m = api.oci_image("codes", "c");
    let loc = api.start_upload("codes");
    api.patch_chunk(&loc, 0, b"0123")
        .expect_status(202, "chunk");
    type Case<'a> = (&'a str, String, Vec<(&'a str, String)>, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("GET", "/v2/codes/tags/list?n=abc".into(), vec![], vec![]),
        ("GET", "/v2/_catalog?n=-1".into(), vec![], vec![]),
        (
            "PUT",
            "/v2/codes/manifests/-bad-tag".into(),
            vec![("Content-Type", OCI_MANIFEST.into())],
            m.clone(),
        ),
        (
            "GET",
            format!("/v2/codes/blobs/{d}"),
            vec![("Range", "bytes=500-".into())],
            vec![],
        ),
        (
            "PATCH",
            loc.clone(),
            vec![("Content-Range", "10-13".into())],
            b"abcd".to_vec(),
        ),
        (
            "PATCH",
            loc.clone(),
            vec![("Content-Range", "4-9".into())],
            b"abcd".to_vec(),
        ),
        (
            "PATCH",
            loc.clone(),
            vec![("Content-Range", "garbage".into())],
            b"abcd".to_vec(),
        ),
        ("POST", "/v2/codes/manifests/latest".into(), vec![], vec![]),
        ("GET", "/v2/codes/manifests/nope".into(), vec![], vec![]),
        ("GET", "/v2/NOPE/tags/list".into(), vec![], vec![]),
        ("GET", "/v2/codes/blobs/sha256:zz".into(), vec![], vec![]),
    ];
    let mut offenders = Vec::new();
    for (m, path, headers, body) in cases {
        let mut rb = api.req(m, &path).body(body);
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        let r = api.send(rb);
        assert!(r.status >= 400, "{m} {path} is an error: {}", r.describe());
        for code in r.error_codes() {
            if !SPEC_ERROR_CODES.contains(&code.as_str()) {
                offenders.push(format!("{m} {path} -> {} {code}", r.status));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "OCI distribution spec v1.1 (Error Codes): \"The `code` field MUST be one of\" {SPEC_ERROR_CODES:?}; \
         these responses use others:\n  {}",
        offenders.join("\n  ")
    );
}
