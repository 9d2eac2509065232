//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use serde_json::{Value, json};

use crate::support::*;

fn platform_entry(media_type: &str, body: &[u8], arch: &str) -> Value {
    json!({
        "mediaType": media_type,
        "digest": sha256(body),
        "size": body.len(),
        "platform": {"architecture": arch, "os": "linux"},
    })
}

/// Checks GET and HEAD of `reference` return `body` as `media_type`.
fn expect_manifest(
    api: &Api,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
    why: &str,
) {
    let p = format!("/v2/{repo}/manifests/{reference}");
    let r = api.send(api.req("GET", &p).header("Accept", media_type));
    r.expect_status(
        200,
        &format!("{why}: end-3: GET of an existing manifest MUST answer 200"),
    );
    assert!(
        r.body == body,
        "{why}: spec: the registry MUST store the manifest in the exact byte representation provided"
    );
    assert_eq!(
        r.header("Content-Type"),
        Some(media_type),
        "{why}: spec (Pulling manifests): Content-Type SHOULD match what was pushed"
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(sha256(body).as_str()),
        "{why}: Docker-Content-Digest is the manifest's digest"
    );
    let r = api.send(api.req("HEAD", &p).header("Accept", media_type));
    r.expect_status(
        200,
        &format!("{why}: end-3: HEAD of an existing manifest MUST answer 200"),
    );
    assert!(r.body.is_empty(), "HEAD has no body");
    assert_eq!(
        r.content_length(),
        Some(body.len() as u64),
        "{why}: HEAD Content-Length is the manifest size"
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(sha256(body).as_str()),
        "{why}: HEAD digest"
    );
    assert_eq!(
        r.header("Content-Type"),
        Some(media_type),
        "{why}: HEAD Content-Type"
    );
}

fn expect_push(
    api: &Api,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
    why: &str,
) -> String {
    let r = api.put_manifest(repo, reference, media_type, body);
    r.expect_status(
        201,
        &format!("{why}: end-7: a valid manifest push MUST answer 201 Created"),
    );
    let d = sha256(body);
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "{why}: spec (Pushing Manifests): Docker-Content-Digest is the uploaded manifest's digest"
    );
    let loc = r.location();
    let got = api.send(api.req("GET", &loc).header("Accept", media_type));
    got.expect_status(
        200,
        &format!("{why}: spec: the 201 Location is a pullable manifest URL ({loc})"),
    );
    assert!(
        got.body == body,
        "{why}: the Location serves the pushed manifest"
    );
    d
}

#[test]
fn push_and_pull_every_manifest_kind() {
    let api = Api::start();
    let repo = "kinds";
    let amd = api.docker_image(repo, "amd64");
    let arm = api.docker_image(repo, "arm64");
    let oci_a = api.oci_image(repo, "oci-a");
    let oci_b = api.oci_image(repo, "oci-b");

    let d_amd = expect_push(
        &api,
        repo,
        "docker-amd64",
        DOCKER_MANIFEST,
        &amd,
        "Docker schema 2 by tag",
    );
    let d_arm = expect_push(
        &api,
        repo,
        &sha256(&arm),
        DOCKER_MANIFEST,
        &arm,
        "Docker schema 2 by digest",
    );
    assert_eq!(d_arm, sha256(&arm));
    let list = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            platform_entry(DOCKER_MANIFEST, &arm, "arm64"),
            platform_entry(DOCKER_MANIFEST, &amd, "amd64"),
        ],
    }));
    let d_list = expect_push(
        &api,
        repo,
        "list",
        DOCKER_LIST,
        &list,
        "Docker manifest list by tag",
    );
    let d_oci = expect_push(
        &api,
        repo,
        "oci",
        OCI_MANIFEST,
        &oci_a,
        "OCI manifest by tag",
    );
    expect_push(
        &api,
        repo,
        &sha256(&oci_b),
        OCI_MANIFEST,
        &oci_b,
        "OCI manifest by digest",
    );
    let index = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            platform_entry(OCI_MANIFEST, &oci_a, "amd64"),
            platform_entry(OCI_MANIFEST, &oci_b, "arm64"),
        ],
        "annotations": {"org.example": "index"},
    }));
    let d_index = expect_push(&api, repo, "index", OCI_INDEX, &index, "OCI index by tag");

    for (reference, mt, body, why) in [
        (
            "docker-amd64",
            DOCKER_MANIFEST,
            &amd,
            "Docker schema 2 by tag",
        ),
        (
            d_amd.as_str(),
            DOCKER_MANIFEST,
            &amd,
            "Docker schema 2 by digest",
        ),
        (
            d_arm.as_str(),
            DOCKER_MANIFEST,
            &arm,
            "Docker schema 2 pushed by digest",
        ),
        ("list", DOCKER_LIST, &list, "Docker manifest list by tag"),
        (
            d_list.as_str(),
            DOCKER_LIST,
            &list,
            "Docker manifest list by digest",
        ),
        ("oci", OCI_MANIFEST, &oci_a, "OCI manifest by tag"),
        (
            d_oci.as_str(),
            OCI_MANIFEST,
            &oci_a,
            "OCI manifest by digest",
        ),
        ("index", OCI_INDEX, &index, "OCI index by tag"),
        (d_index.as_str(), OCI_INDEX, &index, "OCI index by digest"),
    ] {
        expect_manifest(&api, repo, reference, mt, body, why);
    }

    // Pushing the same manifest again (idempotent) and under a second tag.
    expect_push(
        &api,
        repo,
        "oci",
        OCI_MANIFEST,
        &oci_a,
        "re-push of the same manifest",
    );
    expect_push(
        &api,
        repo,
        "oci-again",
        OCI_MANIFEST,
        &oci_a,
        "the same manifest under another tag",
    );
    let r = api.get(&format!("/v2/{repo}/tags/list"));
    let tags = r.json()["tags"].clone();
    assert_eq!(
        tags,
        json!(["docker-amd64", "index", "list", "oci", "oci-again"]),
        "tags/list holds each tag once, in lexical order"
    );

    // Content-Type parameters are ignored on push (spec: SHOULD ignore).
    let oci_c = api.oci_image(repo, "oci-c");
    expect_push(
        &api,
        repo,
        "with-params",
        &format!("{OCI_MANIFEST}; charset=utf-8"),
        &oci_c,
        "spec: the registry SHOULD ignore parameters on the Content-Type header",
    );

    // Without Content-Type the manifest's own mediaType tells its kind.
    let oci_e = api.oci_image(repo, "oci-e");
    let r = api.send(
        api.req("PUT", &format!("/v2/{repo}/manifests/no-ct"))
            .body(oci_e.clone()),
    );
    r.expect_status(
        201,
        "a manifest pushed without Content-Type but with a mediaType field is accepted",
    );
    expect_manifest(
        &api,
        repo,
        "no-ct",
        OCI_MANIFEST,
        &oci_e,
        "served with the type its mediaType names",
    );

    // A manifest pushed by a sha512 digest is addressed by it.
    let oci_d = api.oci_image(repo, "oci-d");
    let d512 = sha512(&oci_d);
    let r = api.put_manifest(repo, &d512, OCI_MANIFEST, &oci_d);
    r.expect_status(201, "end-7: a manifest pushed by its sha512 digest");
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d512.as_str()),
        "spec: Docker-Content-Digest MUST be equal to the client provided digest"
    );
    let r = api.get(&format!("/v2/{repo}/manifests/{d512}"));
    r.expect_status(
        200,
        "GET by the sha512 digest the manifest was pushed under",
    );
    assert!(r.body == oci_d, "the sha512-addressed manifest");
}

#[test]
fn manifest_push_errors() {
    let api = Api::start();
    let repo = "errs";
    let good = api.oci_image(repo, "good");

    // The reference digest does not match the body.
    let other = sha256(b"some other manifest");
    let r = api.put_manifest(repo, &other, OCI_MANIFEST, &good);
    r.expect_error(
        400,
        "DIGEST_INVALID",
        "end-7: PUT by a digest that does not match the body is 400 DIGEST_INVALID",
    );
    api.get(&format!("/v2/{repo}/manifests/{other}"))
        .expect_status(404, "nothing is stored under the mismatched digest");
    api.get(&format!("/v2/{repo}/manifests/{}", sha256(&good)))
        .expect_status(404, "nor under the body's own digest");

    // A layer the repository does not have.
    let (c, l) = api.push_image_blobs(repo, OCI_CONFIG, OCI_LAYER, "x");
    let missing = desc(OCI_LAYER, &sha256(b"missing layer"), 13);
    let m = to_vec(&oci_manifest(
        c.clone(),
        vec![l.clone(), missing],
        json!({}),
    ));
    let why = "spec (Push): a manifest rejected for a missing blob MUST result in MANIFEST_BLOB_UNKNOWN \
               (Docker API: Missing Layer(s) is 400)";
    api.put_manifest(repo, "missing-layer", OCI_MANIFEST, &m)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN", why);
    api.get(&format!("/v2/{repo}/manifests/missing-layer"))
        .expect_status(404, "a refused manifest leaves no tag behind");
    // A missing config.
    let m = to_vec(&oci_manifest(
        desc(OCI_CONFIG, &sha256(b"no config"), 9),
        vec![l.clone()],
        json!({}),
    ));
    api.put_manifest(repo, "missing-config", OCI_MANIFEST, &m)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN", why);
    // A blob that exists only in another repository.
    let elsewhere = api.push_blob("elsewhere", b"other repo layer");
    let m = to_vec(&oci_manifest(
        c.clone(),
        vec![desc(OCI_LAYER, &elsewhere, 16)],
        json!({}),
    ));
    api.put_manifest(repo, "foreign-layer", OCI_MANIFEST, &m)
        .expect_error(
            400,
            "MANIFEST_BLOB_UNKNOWN",
            "a layer of another repository is unknown to this one",
        );
    // A missing child manifest of an index.
    let idx = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &sha256(b"no such child"), 13)],
    }));
    api.put_manifest(repo, "missing-child", OCI_INDEX, &idx).expect_error(
        400,
        "MANIFEST_BLOB_UNKNOWN",
        "spec: an index naming a manifest the registry lacks is rejected with MANIFEST_BLOB_UNKNOWN",
    );

    // Not JSON / not a manifest.
    for (body, ct) in [
        (b"{not json".to_vec(), OCI_MANIFEST),
        (b"".to_vec(), OCI_MANIFEST),
        (b"[]".to_vec(), OCI_MANIFEST),
        (b"{\"schemaVersion\":2}".to_vec(), OCI_MANIFEST),
        (
            to_vec(&oci_manifest(
                c.clone(),
                vec![l.clone()],
                json!({"schemaVersion": 1}),
            )),
            OCI_MANIFEST,
        ),
        (
            to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "nope"})),
            OCI_INDEX,
        ),
    ] {
        api.put_manifest(repo, "bad", ct, &body).expect_error(
            400,
            "MANIFEST_INVALID",
            &format!(
                "a body that is no valid manifest is 400 MANIFEST_INVALID: {}",
                String::from_utf8_lossy(&body)
            ),
        );
    }
    // mediaType in the body vs Content-Type.
    api.put_manifest(repo, "mismatch", DOCKER_MANIFEST, &good).expect_error(
        400,
        "MANIFEST_INVALID",
        "spec: if a manifest has a mediaType, Content-Type MUST be that value; a mismatch is MANIFEST_INVALID",
    );
    api.put_manifest(repo, "mismatch", OCI_INDEX, &good)
        .expect_error(
            400,
            "MANIFEST_INVALID",
            "an OCI manifest sent as an OCI index is MANIFEST_INVALID",
        );
    api.get(&format!("/v2/{repo}/manifests/bad"))
        .expect_status(404, "no invalid manifest was stored");
    api.get(&format!("/v2/{repo}/manifests/mismatch"))
        .expect_status(404, "no mismatched manifest was stored");

    // A subject that does not exist (yet) MUST be accepted.
    let subject = desc(OCI_MANIFEST, &sha256(b"a subject pushed later"), 22);
    let m = to_vec(&oci_manifest(c, vec![l], json!({"subject": subject})));
    let r = api.put_manifest(repo, "early-referrer", OCI_MANIFEST, &m);
    r.expect_status(
        201,
        "spec (Push): a registry MUST initially accept a manifest whose subject does not exist",
    );
}

#[test]
fn manifest_size_limit() {
    let mut api = Api::start();
    let repo = "big";
    let (c, l) = api.push_image_blobs(repo, OCI_CONFIG, OCI_LAYER, "s");
    let limit: usize = 4 * 1024 * 1024;
    // A manifest of exactly `size` bytes, padded in an annotation.
    let sized = |size: usize| -> Vec<u8> {
        let base = to_vec(&oci_manifest(
            c.clone(),
            vec![l.clone()],
            json!({"annotations": {"pad": ""}}),
        ));
        let pad = "p".repeat(size - base.len());
        let m = to_vec(&oci_manifest(
            c.clone(),
            vec![l.clone()],
            json!({"annotations": {"pad": pad}}),
        ));
        assert_eq!(m.len(), size);
        m
    };
    let at_limit = sized(limit);
    let r = api.put_manifest(repo, "four-mib", OCI_MANIFEST, &at_limit);
    r.expect_status(
        201,
        "spec: registries SHOULD expect to support manifest pushes of at least 4 megabytes (4 MiB = the default limit)",
    );
    let r = api.get(&format!("/v2/{repo}/manifests/four-mib"));
    assert!(r.body == at_limit, "the 4 MiB manifest comes back whole");

    // Over the limit, announced by Content-Length and streamed chunked.
    let over = sized(limit + 1);
    for chunked in [false, true] {
        let how = if chunked {
            "Transfer-Encoding: chunked"
        } else {
            "Content-Length"
        };
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {}", over.len())
        };
        let head = format!(
            "PUT /v2/{repo}/manifests/too-big HTTP/1.1\r\nHost: {}\r\nContent-Type: {OCI_MANIFEST}\r\n{framing}\r\n\r\n",
            api.srv.addr
        );
        let got = raw_request(&api.srv.addr, &head, over.clone(), chunked);
        assert!(
            matches!(got, Ok((413, _))),
            "spec: a push over the registry's manifest size limit SHOULD get 413 Payload Too Large \
             ({how}, the client reading while it sends); got {got:?}"
        );
    }
    api.new_client();
    api.get(&format!("/v2/{repo}/manifests/too-big"))
        .expect_status(404, "the oversized manifest was not stored");
}

#[test]
fn overwrite_and_delete_tags_and_manifests() {
    let api = Api::start();
    let repo = "life";
    let m1 = api.oci_image(repo, "one");
    let m2 = api.oci_image(repo, "two");
    let d1 = api.push_manifest(repo, "latest", OCI_MANIFEST, &m1);
    api.push_manifest(repo, "v1", OCI_MANIFEST, &m1);
    api.push_manifest(repo, "stable", OCI_MANIFEST, &m1);
    // Overwrite `latest`.
    let d2 = api.push_manifest(repo, "latest", OCI_MANIFEST, &m2);
    let r = api.get(&format!("/v2/{repo}/manifests/latest"));
    r.expect_status(200, "a re-pushed tag resolves");
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d2.as_str()),
        "a tag pushed again points at the new manifest"
    );
    assert!(r.body == m2, "the tag serves the new manifest");
    api.get(&format!("/v2/{repo}/manifests/{d1}"))
        .expect_status(200, "the previous manifest stays reachable by digest");

    // Delete a tag.
    let r = api.delete(&format!("/v2/{repo}/manifests/v1"));
    r.expect_status(
        202,
        "spec (Deleting tags): DELETE of a tag MUST answer 202 Accepted",
    );
    api.get(&format!("/v2/{repo}/manifests/v1")).expect_error(
        404,
        "MANIFEST_UNKNOWN",
        "spec: once a tag is deleted, a GET of it returns 404",
    );
    api.get(&format!("/v2/{repo}/manifests/{d1}"))
        .expect_status(
            200,
            "deleting a tag leaves the manifest reachable by digest",
        );
    api.get(&format!("/v2/{repo}/manifests/stable"))
        .expect_status(200, "other tags on the manifest stay");
    api.delete(&format!("/v2/{repo}/manifests/v1"))
        .expect_error(
            404,
            "MANIFEST_UNKNOWN",
            "deleting a tag that no longer exists is 404",
        );
    let tags = api.get(&format!("/v2/{repo}/tags/list")).json()["tags"].clone();
    assert_eq!(
        tags,
        json!(["latest", "stable"]),
        "a deleted tag leaves tags/list"
    );

    // Delete a manifest by digest: every tag on it goes.
    api.push_manifest(repo, "v1", OCI_MANIFEST, &m1);
    let r = api.delete(&format!("/v2/{repo}/manifests/{d1}"));
    r.expect_status(
        202,
        "spec (Deleting Manifests): DELETE by digest MUST answer 202 Accepted",
    );
    for reference in [d1.as_str(), "v1", "stable"] {
        api.get(&format!("/v2/{repo}/manifests/{reference}")).expect_error(
            404,
            "MANIFEST_UNKNOWN",
            "spec: once a manifest is deleted, GET of its digest and any tag pointing to it returns 404",
        );
        api.head(&format!("/v2/{repo}/manifests/{reference}"))
            .expect_status(404, "HEAD of a deleted manifest or its tags is 404");
    }
    let tags = api.get(&format!("/v2/{repo}/tags/list")).json()["tags"].clone();
    assert_eq!(
        tags,
        json!(["latest"]),
        "tags of a deleted manifest leave tags/list"
    );
    api.get(&format!("/v2/{repo}/manifests/latest"))
        .expect_status(200, "a tag on another manifest is untouched");
    api.delete(&format!("/v2/{repo}/manifests/{d1}"))
        .expect_error(
            404,
            "MANIFEST_UNKNOWN",
            "deleting a manifest already deleted is 404",
        );
    api.delete(&format!("/v2/nope/manifests/{d1}"))
        .expect_status(
            404,
            "spec: deleting in a repository that does not exist MUST return 404",
        );
    // The manifest can be pushed again, and the blobs survived.
    api.push_manifest(repo, "back", OCI_MANIFEST, &m1);
    api.get(&format!("/v2/{repo}/manifests/{d1}"))
        .expect_status(200, "a deleted manifest can be pushed again");
}

#[test]
fn unknown_and_malformed_references() {
    let api = Api::start();
    let repo = "refs";
    let m = api.oci_image(repo, "r");
    api.push_manifest(repo, "ok", OCI_MANIFEST, &m);
    let long_tag = "t".repeat(129);
    for reference in [
        "missing",
        "-leading-dash",
        ".leading-dot",
        long_tag.as_str(),
        "sha256:zz",
        "sha256:abc",
        "bad:colon",
        &sha256(b"absent manifest"),
    ] {
        let why = format!(
            "spec (Pulling manifests): <reference> MUST be a digest or a tag \
             ([a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}); {reference:?} names no manifest: 404"
        );
        api.get(&format!("/v2/{repo}/manifests/{reference}"))
            .expect_error(404, "MANIFEST_UNKNOWN", &why);
        api.head(&format!("/v2/{repo}/manifests/{reference}"))
            .expect_status(404, &why);
        api.delete(&format!("/v2/{repo}/manifests/{reference}"))
            .expect_status(404, &why);
    }
    api.get("/v2/no-such-repo/manifests/latest").expect_status(
        404,
        "spec: an attempt to pull a nonexistent repository MUST return 404",
    );
    for reference in ["-bad", ".bad", long_tag.as_str()] {
        let r = api.put_manifest(repo, reference, OCI_MANIFEST, &m);
        r.expect_status(
            400,
            &format!("pushing under an invalid tag {reference:?} is refused with 400"),
        );
    }
    let r = api.put_manifest(repo, "sha256:zz", OCI_MANIFEST, &m);
    r.expect_error(
        400,
        "DIGEST_INVALID",
        "pushing under a malformed digest is 400 DIGEST_INVALID",
    );
}

#[test]
fn accept_negotiation() {
    let api = Api::start();
    let repo = "neg";
    let amd = api.docker_image(repo, "amd64");
    let arm = api.docker_image(repo, "arm64");
    api.push_manifest(repo, &sha256(&amd), DOCKER_MANIFEST, &amd);
    api.push_manifest(repo, &sha256(&arm), DOCKER_MANIFEST, &arm);
    let list = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            platform_entry(DOCKER_MANIFEST, &arm, "arm64"),
            platform_entry(DOCKER_MANIFEST, &amd, "amd64"),
        ],
    }));
    api.push_manifest(repo, "multi", DOCKER_LIST, &list);
    let oci = api.oci_image(repo, "oci");
    api.push_manifest(repo, "oci", OCI_MANIFEST, &oci);

    let get = |reference: &str, accept: &[&str]| -> R {
        let mut rb = api.req("GET", &format!("/v2/{repo}/manifests/{reference}"));
        for a in accept {
            rb = rb.header("Accept", *a);
        }
        api.send(rb)
    };

    let r = get("multi", &[DOCKER_MANIFEST]);
    r.expect_status(
        200,
        "Docker manifest v2 schema 2 compatibility: a client accepting only schema 2 gets the \
         linux/amd64 image of a manifest list",
    );
    assert_eq!(
        r.header("Content-Type"),
        Some(DOCKER_MANIFEST),
        "the rewritten answer is a schema 2 manifest"
    );
    assert!(r.body == amd, "the linux/amd64 entry is served");
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(sha256(&amd).as_str()),
        "the digest is the served child's"
    );

    let r = get("multi", &[DOCKER_LIST]);
    r.expect_status(200, "a client accepting lists gets the list");
    assert!(r.body == list, "the list itself");
    let r = get("multi", &[&format!("{DOCKER_MANIFEST}, {DOCKER_LIST}")]);
    assert!(
        r.body == list,
        "a comma-separated Accept naming the list type gets the list"
    );
    let r = get("multi", &[DOCKER_MANIFEST, DOCKER_LIST]);
    assert!(
        r.body == list,
        "several Accept headers, one naming the list type, get the list"
    );

    let r = get("oci", &[DOCKER_MANIFEST, DOCKER_LIST]);
    r.expect_error(
        404,
        "MANIFEST_UNKNOWN",
        "an OCI manifest is not served to a client that accepts only Docker types (404 MANIFEST_UNKNOWN)",
    );
    let r = get("oci", &[OCI_MANIFEST]);
    assert!(r.body == oci, "an OCI manifest to a client that accepts it");

    for (reference, body, mt) in [("oci", &oci, OCI_MANIFEST), ("multi", &list, DOCKER_LIST)] {
        let r = get(reference, &["*/*"]);
        r.expect_status(200, "Accept: */* accepts anything");
        assert!(
            r.body == *body,
            "Accept: */* gets the stored manifest as is"
        );
        assert_eq!(
            r.header("Content-Type"),
            Some(mt),
            "with its own media type"
        );
        let r = get(reference, &[&format!("{DOCKER_MANIFEST};q=0.9, */*;q=0.1")]);
        r.expect_status(200, "a wildcard among other types accepts anything");
        assert!(r.body == *body, "the wildcard gets the stored manifest");
    }

    // By digest, the content is fixed: no rewriting to another manifest.
    let list_digest = sha256(&list);
    for method in ["GET", "HEAD"] {
        let r = api.send(
            api.req(method, &format!("/v2/{repo}/manifests/{list_digest}"))
                .header("Accept", DOCKER_MANIFEST),
        );
        assert!(
            r.status == 404
                || (r.status == 200
                    && r.header("Docker-Content-Digest") == Some(list_digest.as_str())
                    && (method == "HEAD" || sha256(&r.body) == list_digest)),
            "content addressing: a manifest requested by digest is that digest's content or 404, \
             never another manifest (distribution/distribution: \"Only rewrite manifests lists when \
             they are being fetched by tag. If they are being fetched by digest, we can't return \
             something not matching the digest.\"; spec: clients SHOULD verify the returned manifest \
             matches the requested digest); {method} by the list's digest with Accept: \
             {DOCKER_MANIFEST}:\n  {}",
            r.describe()
        );
    }
}
