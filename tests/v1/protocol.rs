//! The v1 protocol endpoint by endpoint on a hub without accounts: status
//! codes, headers and bodies, error paths (and that refused requests change
//! nothing), then the pushed image pulled over v2.

use serde_json::{Value, json};

use crate::common::Server;
use crate::*;

#[test]
fn ping_users_and_unknown_paths() {
    let srv = Server::start();
    let c = V1::new(&srv.base);
    let r = c.get("/v1/_ping", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.text(), "\"\"");
    assert_eq!(r.header("x-docker-registry-version"), "0.9.1");
    assert_eq!(r.header("x-docker-registry-standalone"), "true");
    assert_eq!(r.header("content-type"), "application/json");

    // No accounts: every login is fine, nobody signs up.
    let r = c.get("/v1/users/", None);
    assert_eq!((r.status, r.text().as_str()), (200, "\"OK\""));
    let r = c.send(
        "POST",
        "/v1/users/",
        None,
        &[],
        Payload::Bytes(
            br#"{"username":"someone","password":"long-enough","email":"a@b.io"}"#.to_vec(),
        ),
    );
    expect_error(&r, 400, "no accounts");

    let r = c.get("/v1/nothing/here", None);
    expect_error(&r, 404, "Not found");
    assert_eq!(r.header("x-docker-registry-version"), "0.9.1");
    expect_error(
        &c.send("POST", "/v1/_ping", None, &[], Payload::None),
        405,
        "not allowed",
    );
    expect_error(
        &c.send(
            "POST",
            &format!("/v1/images/{}/json", new_id()),
            None,
            &[],
            Payload::None,
        ),
        405,
        "not allowed",
    );
    expect_error(
        &c.get("/v1/repositories/Bad/Name/tags", None),
        400,
        "Invalid repository name",
    );
}

#[test]
fn push_step_by_step_and_errors() {
    let srv = Server::start();
    let c = V1::new(&srv.base);
    let repo = "acme/app";
    let imgs = chain(&[
        (&[("etc/a", b"A\n" as &[u8])], true, "add a"),
        (&[("etc/b", b"B\n" as &[u8])], false, "add b"),
    ]);
    let (a, b) = (&imgs[0], &imgs[1]);

    // The push session: an image list, a token (not checked here: no
    // accounts) and the endpoint to push to.
    let list = json!([{"id": a.id}, {"id": b.id}]);
    let put_repo = |body: Vec<u8>| {
        c.send(
            "PUT",
            &format!("/v1/repositories/{repo}/"),
            None,
            &[("X-Docker-Token", "true")],
            Payload::Bytes(body),
        )
    };
    expect_error(&put_repo(b"{".to_vec()), 400, "Error Decoding JSON");
    expect_error(&put_repo(br#"{"id":"x"}"#.to_vec()), 400, "Invalid data");
    expect_error(
        &put_repo(br#"[{"id":"nothex"}]"#.to_vec()),
        400,
        "Invalid data",
    );
    let r = put_repo(list.to_string().into_bytes());
    expect_done(&r);
    assert_eq!(r.header("x-docker-endpoints"), srv.addr);
    let token = r.header("x-docker-token");
    assert!(
        token.starts_with("signature=")
            && token.ends_with(&format!(",repository=\"{repo}\",access=write")),
        "{token}"
    );
    assert_eq!(r.header("www-authenticate"), format!("Token {token}"));
    // Without asking for a token, none comes; the endpoint always does.
    let r = c.put_json(&format!("/v1/repositories/{repo}"), None, &list);
    expect_done(&r);
    assert_eq!(r.header("x-docker-token"), "");
    assert_eq!(r.header("x-docker-endpoints"), srv.addr);
    let auth = format!("Token {token}");
    let auth = Some(auth.as_str());

    let json_path = |i: &Image| format!("/v1/images/{}/json", i.id);
    let layer_path = |i: &Image| format!("/v1/images/{}/layer", i.id);
    let checksum_path = |i: &Image| format!("/v1/images/{}/checksum", i.id);
    let put = |path: &str, body: Payload, headers: &[(&str, &str)]| {
        c.send("PUT", path, auth, headers, body)
    };

    // Nothing yet.
    expect_error(&c.get(&json_path(a), auth), 404, "Image not found");
    expect_error(&c.get(&layer_path(a), auth), 404, "Image not found");
    expect_error(
        &c.get(&format!("/v1/images/{}/ancestry", a.id), auth),
        404,
        "Image not found",
    );
    expect_error(
        &c.get("/v1/images/not-an-id/json", auth),
        404,
        "Image not found",
    );
    // A layer before its JSON.
    expect_error(
        &put(&layer_path(a), Payload::Chunked(a.blob.clone()), &[]),
        404,
        "Image not found",
    );
    // Bad JSON.
    expect_error(
        &put(&json_path(a), Payload::Bytes(b"nope".to_vec()), &[]),
        400,
        "Invalid JSON",
    );
    expect_error(
        &put(&json_path(a), Payload::Bytes(b"[1]".to_vec()), &[]),
        400,
        "Invalid JSON",
    );
    expect_error(
        &put(&json_path(a), Payload::Bytes(b"{}".to_vec()), &[]),
        400,
        "Missing key",
    );
    expect_error(
        &put(&json_path(a), Payload::Bytes(b.json.clone()), &[]),
        400,
        "invalid id",
    );
    // A parent that does not exist.
    expect_error(
        &put(&json_path(b), Payload::Bytes(b.json.clone()), &[]),
        400,
        "non existing parent",
    );
    expect_error(&c.get(&json_path(a), auth), 404, "Image not found");

    expect_done(&put(&json_path(a), Payload::Bytes(a.json.clone()), &[]));
    // Being pushed: not readable yet.
    expect_error(&c.get(&json_path(a), auth), 400, "being uploaded");
    expect_error(&c.get(&layer_path(a), auth), 400, "being uploaded");
    // The JSON may be sent again until the push completes.
    expect_done(&put(&json_path(a), Payload::Bytes(a.json.clone()), &[]));
    // A checksum before the layer, or without the header.
    expect_error(
        &put(
            &checksum_path(a),
            Payload::None,
            &[("X-Docker-Checksum-Payload", &a.checksum())],
        ),
        400,
        "layer",
    );
    expect_done(&put(&layer_path(a), Payload::Chunked(a.blob.clone()), &[]));
    expect_error(
        &put(&checksum_path(a), Payload::None, &[]),
        400,
        "Missing Image's checksum",
    );
    expect_error(
        &put(
            &checksum_path(a),
            Payload::None,
            &[("X-Docker-Checksum-Payload", &b.checksum())],
        ),
        400,
        "Checksum mismatch",
    );
    expect_error(&c.get(&json_path(a), auth), 400, "being uploaded");
    // A layer sent again replaces the first until the checksum is in.
    expect_done(&put(&layer_path(a), Payload::Chunked(a.blob.clone()), &[]));
    expect_done(&put(
        &checksum_path(a),
        Payload::None,
        &[("X-Docker-Checksum-Payload", &a.checksum())],
    ));
    // Complete: nothing of it changes any more.
    expect_error(
        &put(&json_path(a), Payload::Bytes(a.json.clone()), &[]),
        409,
        "Image already exists",
    );
    expect_error(
        &put(&layer_path(a), Payload::Chunked(b.blob.clone()), &[]),
        409,
        "Image already exists",
    );
    expect_error(
        &put(
            &checksum_path(a),
            Payload::None,
            &[("X-Docker-Checksum-Payload", &a.checksum())],
        ),
        409,
        "Cannot set this image checksum",
    );
    let r = c.get(&json_path(a), auth);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.body == a.json, "the JSON comes back byte for byte");
    assert_eq!(r.header("content-type"), "application/json");
    assert_eq!(r.header("x-docker-size"), a.blob.len().to_string());
    assert_eq!(r.header("x-docker-checksum-payload"), a.checksum());
    assert_eq!(r.header("x-docker-registry-version"), "0.9.1");

    // The child, with a plain tar layer sent with a length.
    expect_done(&put(&json_path(b), Payload::Bytes(b.json.clone()), &[]));
    expect_done(&put(&layer_path(b), Payload::Bytes(b.blob.clone()), &[]));
    expect_done(&put(
        &checksum_path(b),
        Payload::None,
        &[("X-Docker-Checksum-Payload", &b.checksum())],
    ));
    let r = c.get(&format!("/v1/images/{}/ancestry", b.id), auth);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!(r.json(), json!([b.id, a.id]));

    // Layers, whole and in ranges.
    let r = c.get(&layer_path(a), auth);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(r.body == a.blob);
    assert_eq!(r.header("accept-ranges"), "bytes");
    assert_eq!(r.header("content-length"), a.blob.len().to_string());
    let r = c.send(
        "GET",
        &layer_path(b),
        auth,
        &[("Range", "bytes=5-14")],
        Payload::None,
    );
    assert_eq!(r.status, 206, "{}", r.describe());
    assert!(r.body == b.blob[5..15]);
    assert_eq!(
        r.header("content-range"),
        format!("bytes 5-14/{}", b.blob.len())
    );
    let r = c.send(
        "GET",
        &layer_path(b),
        auth,
        &[("Range", "bytes=-10")],
        Payload::None,
    );
    assert_eq!(r.status, 206);
    assert!(r.body == b.blob[b.blob.len() - 10..]);
    let r = c.send(
        "GET",
        &layer_path(b),
        auth,
        &[("Range", &format!("bytes={}-", b.blob.len()))],
        Payload::None,
    );
    assert_eq!(r.status, 416, "{}", r.describe());
    assert_eq!(
        r.header("content-range"),
        format!("bytes */{}", b.blob.len())
    );

    // Tags.
    let tag_path = |t: &str| format!("/v1/repositories/{repo}/tags/{t}");
    expect_error(
        &c.put_json(&tag_path("latest"), auth, &json!(new_id())),
        404,
        "Image not found",
    );
    expect_error(
        &c.put_json(&tag_path("latest"), auth, &json!("short")),
        404,
        "Image not found",
    );
    expect_error(
        &c.put_json(&tag_path("latest"), auth, &json!({"id": b.id})),
        400,
        "Invalid data",
    );
    expect_error(
        &c.put_json(&tag_path("-bad"), auth, &json!(b.id)),
        400,
        "Invalid tag",
    );
    expect_error(&c.get(&tag_path("latest"), auth), 404, "Tag not found");
    expect_done(&c.put_json(&tag_path("latest"), auth, &json!(b.id)));
    let r = c.get(&tag_path("latest"), auth);
    assert_eq!((r.status, r.json()), (200, json!(b.id)), "{}", r.describe());
    expect_error(&c.get(&tag_path("nope"), auth), 404, "Tag not found");
    let r = c.get(&format!("/v1/repositories/{repo}/tags"), auth);
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"latest": b.id})),
        "{}",
        r.describe()
    );
    // Tagging the parent too.
    expect_done(&c.put_json(&tag_path("base"), auth, &json!(a.id)));
    let r = c.get(&format!("/v1/repositories/{repo}/tags"), auth);
    assert_eq!(r.json(), json!({"base": a.id, "latest": b.id}));

    // The closing image list.
    let r = c.send(
        "PUT",
        &format!("/v1/repositories/{repo}/images"),
        auth,
        &[],
        Payload::Bytes(
            json!([{"id": a.id, "checksum": a.checksum()}, {"id": b.id, "checksum": b.checksum()}])
                .to_string()
                .into_bytes(),
        ),
    );
    assert_eq!(r.status, 204, "{}", r.describe());
    let r = c.send(
        "GET",
        &format!("/v1/repositories/{repo}/images"),
        None,
        &[("X-Docker-Token", "true")],
        Payload::None,
    );
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        r.header("x-docker-token")
            .ends_with(&format!("repository=\"{repo}\",access=read"))
    );
    assert_eq!(r.header("x-docker-endpoints"), srv.addr);
    let mut listed: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    listed.sort_by_key(|v| v["id"].as_str().unwrap().to_string());
    let mut want = vec![
        json!({"id": a.id, "checksum": a.checksum()}),
        json!({"id": b.id, "checksum": b.checksum()}),
    ];
    want.sort_by_key(|v| v["id"].as_str().unwrap().to_string());
    assert_eq!(listed, want);
    expect_error(
        &c.get("/v1/repositories/acme/none/images", None),
        404,
        "not found",
    );
    expect_error(
        &c.get("/v1/repositories/acme/none/tags", None),
        404,
        "Repository not found",
    );

    // The same image over v2, and the same manifest for every tag of it.
    let digest = check_v2_image(&c, None, repo, "latest", &imgs);
    let again = c.send(
        "HEAD",
        &format!("/v2/{repo}/manifests/latest"),
        None,
        &[("Accept", DOCKER_MANIFEST)],
        Payload::None,
    );
    assert_eq!(again.header("docker-content-digest"), digest);
    expect_done(&c.put_json(&tag_path("v2"), auth, &json!(b.id)));
    let r = c.send(
        "HEAD",
        &format!("/v2/{repo}/manifests/v2"),
        None,
        &[("Accept", DOCKER_MANIFEST)],
        Payload::None,
    );
    assert_eq!(
        r.header("docker-content-digest"),
        digest,
        "a conversion is done once"
    );
    check_v2_image(&c, None, repo, "base", &imgs[..1]);

    // A one-component name is under library/.
    expect_done(&c.put_json("/v1/repositories/solo/tags/latest", None, &json!(b.id)));
    let r = c.send(
        "HEAD",
        "/v2/library/solo/manifests/latest",
        None,
        &[("Accept", DOCKER_MANIFEST)],
        Payload::None,
    );
    assert_eq!(r.header("docker-content-digest"), digest);
    let r = c.get("/v1/repositories/library/solo/tags/latest", None);
    assert_eq!(r.json(), json!(b.id));

    // Deletes: a tag (twice), an unknown tag, the repository (twice).
    expect_done(&c.send("DELETE", &tag_path("v2"), None, &[], Payload::None));
    expect_error(
        &c.send("DELETE", &tag_path("v2"), None, &[], Payload::None),
        404,
        "Tag not found",
    );
    expect_error(&c.get(&tag_path("v2"), None), 404, "Tag not found");
    let r = c.send(
        "HEAD",
        &format!("/v2/{repo}/manifests/v2"),
        None,
        &[],
        Payload::None,
    );
    assert_eq!(r.status, 404);
    expect_error(
        &c.send(
            "DELETE",
            "/v1/repositories/acme/none/",
            None,
            &[],
            Payload::None,
        ),
        404,
        "Repository not found",
    );
    expect_done(&c.send(
        "DELETE",
        &format!("/v1/repositories/{repo}/"),
        None,
        &[],
        Payload::None,
    ));
    expect_error(
        &c.get(&format!("/v1/repositories/{repo}/tags"), None),
        404,
        "Repository not found",
    );
    let r = c.send(
        "HEAD",
        &format!("/v2/{repo}/manifests/latest"),
        None,
        &[],
        Payload::None,
    );
    assert_eq!(r.status, 404);
    expect_error(
        &c.send(
            "DELETE",
            &format!("/v1/repositories/{repo}/"),
            None,
            &[],
            Payload::None,
        ),
        404,
        "Repository not found",
    );
    // Images are global: they stay, and can be tagged again.
    expect_done(&c.put_json(&tag_path("again"), None, &json!(b.id)));
    assert_eq!(check_v2_image(&c, None, repo, "again", &imgs), digest);
}

#[test]
fn full_v1_push_then_v1_and_v2_pull() {
    let srv = Server::start();
    let c = V1::new(&srv.base);
    let imgs = sample_chain("plain");
    v1_push(&c, None, "team/tool", &imgs, "1.0");
    check_v2_image(&c, None, "team/tool", "1.0", &imgs);

    // A v1 pull gets the images as pushed: ids, JSON, layers, checksums.
    let r = c.get("/v1/repositories/team/tool/tags", None);
    assert_eq!(r.json(), json!({"1.0": imgs[2].id}));
    let pulled = v1_pull(&c, None, &imgs[2].id);
    assert_eq!(pulled.len(), 3);
    for (p, img) in pulled.iter().zip(imgs.iter().rev()) {
        assert_eq!(p.id, img.id);
        assert!(p.raw_json == img.json);
        assert!(p.layer == img.blob);
        assert_eq!(p.checksum, img.checksum());
    }
}
