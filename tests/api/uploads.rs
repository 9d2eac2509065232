//! `/v2/<name>/blobs/uploads/`: sessions, monolithic and chunked uploads,
//! their errors, sha512, the empty blob, a large streamed upload, mounts.

use std::io::Read;

use reqwest::blocking::Body;

use crate::support::*;

fn status(api: &Api, loc: &str) -> R {
    api.get(loc)
}

/// Asserts a session's reported progress (`Range: 0-<last byte>`).
fn expect_range(r: &R, received: u64, why: &str) {
    let want = format!("0-{}", received.saturating_sub(1));
    assert_eq!(
        r.header("Range"),
        Some(want.as_str()),
        "{why}: spec (chunked upload): Range: 0-<end-of-range>, the last byte received \
         ({received} bytes so far)\n  {}",
        r.describe()
    );
}

#[test]
fn post_opens_a_session() {
    let api = Api::start();
    let r = api.send(
        api.req("POST", "/v2/up/blobs/uploads/")
            .header("Content-Length", "0"),
    );
    r.expect_status(
        202,
        "end-4a: POST /v2/<name>/blobs/uploads/ MUST answer 202 Accepted",
    );
    let loc = r.location();
    assert!(
        loc.starts_with("/v2/up/blobs/uploads/") || loc.contains("/v2/up/blobs/uploads/"),
        "the Location is the upload URL: {loc}"
    );
    let id = loc.rsplit('/').next().unwrap().split('?').next().unwrap();
    assert!(
        uuid::Uuid::try_parse(id).is_ok(),
        "spec (POST then PUT): the <location> MUST contain a UUID; got {loc}"
    );
    expect_range(&r, 0, "a new session has received nothing: Range 0-0");
    let uuid_header = r
        .header("Docker-Upload-UUID")
        .expect("Docker API v2: a new session carries Docker-Upload-UUID");
    assert!(
        loc.contains(uuid_header),
        "Docker-Upload-UUID ({uuid_header}) identifies the session of the Location ({loc})"
    );
    assert_eq!(r.content_length(), Some(0), "the 202 has Content-Length: 0");

    let r = status(&api, &loc);
    r.expect_status(
        204,
        "end-13: GET of an active session MUST answer 204 No Content",
    );
    assert!(
        r.header("Location").is_some(),
        "end-13: the status MUST carry Location"
    );
    expect_range(&r, 0, "end-13: status of an empty session");

    let other = api.start_upload("up");
    assert_ne!(other, loc, "each POST opens a distinct session");
    // The no-trailing-slash form names the same endpoint.
    let r = api.send(api.req("POST", "/v2/up/blobs/uploads"));
    r.expect_status(
        202,
        "POST /v2/<name>/blobs/uploads (no trailing slash) opens a session too",
    );
}

#[test]
fn single_post_upload() {
    let api = Api::start();
    for (repo, data) in [
        ("mono", gen_data(10, 0, 1000)),
        ("mono", gen_data(11, 0, (3 * MIB) as usize)),
    ] {
        let d = sha256(&data);
        let r = api.send(
            api.req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"))
                .header("Content-Type", "application/octet-stream")
                .body(data.clone()),
        );
        r.expect_status(
            201,
            "end-4b: a single POST with ?digest= and the blob MUST answer 201 Created",
        );
        let loc = r.location();
        assert_eq!(
            r.header("Docker-Content-Digest"),
            Some(d.as_str()),
            "201 carries the digest"
        );
        let got = api.get(&loc);
        got.expect_status(
            200,
            "spec (Single POST): the Location is a pullable blob URL",
        );
        assert!(got.body == data, "the pulled blob is the pushed one");
    }
    // A digest that does not match: refused, nothing stored.
    let data = b"mismatch".to_vec();
    let wrong = sha256(b"something else");
    let r = api.send(
        api.req("POST", &format!("/v2/mono/blobs/uploads/?digest={wrong}"))
            .body(data),
    );
    r.expect_error(
        400,
        "DIGEST_INVALID",
        "end-4b: a digest that does not match the body is 400 DIGEST_INVALID",
    );
    api.head(&format!("/v2/mono/blobs/{wrong}"))
        .expect_status(404, "a refused upload stores nothing");
    // Same for a large body (not gathered in memory).
    let big = gen_data(12, 0, (2 * MIB) as usize);
    let r = api.send(
        api.req("POST", &format!("/v2/mono/blobs/uploads/?digest={wrong}"))
            .body(big.clone()),
    );
    r.expect_error(
        400,
        "DIGEST_INVALID",
        "end-4b: a large body with a wrong digest is 400 DIGEST_INVALID",
    );
    api.head(&format!("/v2/mono/blobs/{}", sha256(&big)))
        .expect_status(404, "a refused large upload stores nothing");
}

#[test]
fn post_then_put_upload() {
    let api = Api::start();
    let data = gen_data(20, 0, 5000);
    let d = sha256(&data);
    let loc = api.start_upload("pp");
    let r = api.put_upload(&loc, &d, Some((0, &data)));
    r.expect_status(
        201,
        "end-6: PUT <location>?digest= with the whole blob MUST answer 201",
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "201 carries the digest"
    );
    let blob_loc = r.location();
    let got = api.get(&blob_loc);
    got.expect_status(
        200,
        "spec (POST then PUT): <blob-location> is a pullable blob URL",
    );
    assert!(got.body == data, "the pulled blob is the pushed one");
    status(&api, &loc).expect_error(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "a session closed by its PUT is no longer an active upload",
    );
    // Without Content-Range (plain monolithic PUT).
    let data = gen_data(21, 0, 7000);
    let loc = api.start_upload("pp");
    let r = api.send(
        api.req(
            "PUT",
            &with_query(&loc, &format!("digest={}", sha256(&data))),
        )
        .header("Content-Type", "application/octet-stream")
        .body(data.clone()),
    );
    r.expect_status(201, "end-6: a monolithic PUT without Content-Range");
    api.expect_blob("pp", &sha256(&data), &data, "the monolithic blob is served");
}

#[test]
fn chunked_upload_with_content_range() {
    let api = Api::start();
    let data = gen_data(30, 0, 30_000);
    let d = sha256(&data);
    let loc = api.start_upload("chunks");

    let r = api.patch_chunk(&loc, 0, &data[..10_000]);
    r.expect_status(202, "end-5: an accepted chunk MUST answer 202 Accepted");
    assert!(
        r.header("Location").is_some(),
        "end-5: the 202 MUST carry Location"
    );
    expect_range(&r, 10_000, "after the first chunk");
    let loc = api.url(&r.location());

    let r = status(&api, &loc);
    r.expect_status(204, "end-13: status of an active session is 204");
    expect_range(&r, 10_000, "end-13: status after one chunk");

    // Out of order: a gap.
    let r = api.patch_chunk(&loc, 15_000, &data[15_000..20_000]);
    r.expect_status(416, "spec: a chunk uploaded out of order MUST get 416");
    // Repeated: the first chunk again.
    let r = api.patch_chunk(&loc, 0, &data[..10_000]);
    r.expect_status(
        416,
        "spec: a chunk not starting at the last <end-of-range>+1 MUST get 416",
    );
    // Overlapping.
    let r = api.patch_chunk(&loc, 9_000, &data[9_000..20_000]);
    r.expect_status(416, "spec: an overlapping chunk MUST get 416");
    let r = status(&api, &loc);
    r.expect_status(204, "end-13: the session is still active after a 416");
    expect_range(
        &r,
        10_000,
        "a refused chunk leaves the session's progress unchanged",
    );

    let r = api.patch_chunk(&loc, 10_000, &data[10_000..20_000]);
    r.expect_status(202, "end-5: the next chunk in order is accepted");
    expect_range(&r, 20_000, "after the second chunk");

    // The final chunk comes with the closing PUT.
    let r = api.put_upload(&loc, &d, Some((20_000, &data[20_000..])));
    r.expect_status(
        201,
        "spec: the final chunk MAY be uploaded in the closing PUT -> 201",
    );
    assert_eq!(
        r.location(),
        format!("/v2/chunks/blobs/{d}"),
        "the 201 Location is the blob's URL"
    );
    api.expect_blob("chunks", &d, &data, "the chunks make up the blob in order");
}

#[test]
fn patch_without_content_range_is_streamed() {
    let api = Api::start();
    let data = gen_data(31, 0, (3 * MIB) as usize + 77);
    let d = sha256(&data);
    let loc = api.start_upload("stream");
    let cut = (MIB as usize) + 5;
    let r = api.send(
        api.req("PATCH", &loc)
            .header("Content-Type", "application/octet-stream")
            .body(streamed(data[..cut].to_vec())),
    );
    r.expect_status(
        202,
        "a streamed PATCH (chunked transfer encoding, no Content-Range) is accepted",
    );
    expect_range(&r, cut as u64, "after the first streamed PATCH");
    let loc = r.location();
    let r = api.send(api.req("PATCH", &loc).body(streamed(data[cut..].to_vec())));
    r.expect_status(202, "a second streamed PATCH appends");
    expect_range(&r, data.len() as u64, "after the second streamed PATCH");
    let r = api.put_upload(&r.location(), &d, None);
    r.expect_status(201, "closing a streamed upload with an empty PUT");
    api.expect_blob("stream", &d, &data, "the streamed upload stored the blob");
}

#[test]
fn put_without_digest_is_digest_invalid() {
    let api = Api::start();
    let data = b"no digest given".to_vec();
    let loc = api.start_upload("nd");
    let r = api.send(
        api.req("PUT", &loc)
            .header("Content-Type", "application/octet-stream")
            .body(data.clone()),
    );
    r.expect_error(
        400,
        "DIGEST_INVALID",
        "spec: the closing PUT MUST include the digest; without it the upload is not complete (400)",
    );
    // The session was not completed: it can still be closed properly.
    let r = status(&api, &loc);
    r.expect_status(
        204,
        "a PUT refused for lack of a digest leaves the session open",
    );
    expect_range(&r, 0, "and unchanged");
    api.put_upload(&loc, &sha256(&data), Some((0, &data)))
        .expect_status(201, "the session can then be closed with the digest");
}

#[test]
fn wrong_digest_leaves_the_session_usable() {
    let api = Api::start();
    let wrong = sha256(b"not the content");

    // (a) Monolithic PUT.
    let data = gen_data(40, 0, 2000);
    let loc = api.start_upload("wd");
    api.put_upload(&loc, &wrong, Some((0, &data))).expect_error(
        400,
        "DIGEST_INVALID",
        "end-6: a digest that does not match the content is 400 DIGEST_INVALID",
    );
    api.head(&format!("/v2/wd/blobs/{wrong}"))
        .expect_status(404, "nothing is stored under a digest that was refused");
    let r = status(&api, &loc);
    r.expect_status(204, "after DIGEST_INVALID the session is still there");
    expect_range(
        &r,
        0,
        "after a refused monolithic PUT the session is unchanged",
    );
    api.put_upload(&loc, &sha256(&data), Some((0, &data)))
        .expect_status(201, "the same session then completes with the right digest");

    // (b) Chunks, then an empty closing PUT with a wrong digest.
    let data = gen_data(41, 0, 3000);
    let loc = api.start_upload("wd");
    api.patch_chunk(&loc, 0, &data).expect_status(202, "chunk");
    api.put_upload(&loc, &wrong, None).expect_error(
        400,
        "DIGEST_INVALID",
        "end-6: an empty closing PUT with a wrong digest is 400 DIGEST_INVALID",
    );
    let r = status(&api, &loc);
    r.expect_status(204, "after DIGEST_INVALID the session is still there");
    expect_range(&r, 3000, "the refused PUT did not change the received data");
    api.put_upload(&loc, &sha256(&data), None)
        .expect_status(201, "the session then completes with the right digest");
    api.expect_blob("wd", &sha256(&data), &data, "blob after retry (b)");

    // (c) A chunk, then the final chunk in a PUT with a wrong digest.
    let data = gen_data(42, 0, 4000);
    let loc = api.start_upload("wd");
    api.patch_chunk(&loc, 0, &data[..1500])
        .expect_status(202, "chunk");
    api.put_upload(&loc, &wrong, Some((1500, &data[1500..])))
        .expect_error(
            400,
            "DIGEST_INVALID",
            "end-6: a final chunk with a wrong digest is 400 DIGEST_INVALID",
        );
    let r = status(&api, &loc);
    r.expect_status(204, "after DIGEST_INVALID the session is still there");
    expect_range(
        &r,
        1500,
        "a refused closing PUT leaves the session as it was (its final chunk not kept)",
    );
    api.put_upload(&loc, &sha256(&data), Some((1500, &data[1500..])))
        .expect_status(
            201,
            "retrying the closing PUT with the right digest completes the blob",
        );
    api.expect_blob("wd", &sha256(&data), &data, "blob after retry (c)");
}

#[test]
fn cancel_an_upload() {
    let api = Api::start();
    let loc = api.start_upload("cancel");
    api.patch_chunk(&loc, 0, b"partial")
        .expect_status(202, "chunk");
    let r = api.send(api.req("DELETE", &loc).header("Content-Length", "0"));
    r.expect_status(
        204,
        "end-14: canceling a session SHOULD answer 204 No Content",
    );
    status(&api, &loc).expect_error(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "after DELETE the session is no longer valid: 404 BLOB_UPLOAD_UNKNOWN",
    );
    api.patch_chunk(&loc, 7, b"more").expect_error(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "PATCH of a canceled session",
    );
    api.put_upload(&loc, &sha256(b"partial"), None)
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN", "PUT of a canceled session");
    api.delete(&loc)
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN", "DELETE of a canceled session");
}

#[test]
fn unknown_and_foreign_sessions() {
    let api = Api::start();
    let d = sha256(b"x");
    let fresh = uuid::Uuid::new_v4();
    for id in [
        fresh.to_string(),
        fresh.simple().to_string(),
        "garbage".to_string(),
        "..%2F..%2Fetc%2Fpasswd".to_string(),
        "12345".to_string(),
    ] {
        let loc = format!("/v2/repo/blobs/uploads/{id}");
        let why = format!("session id {id:?} was never issued: 404 BLOB_UPLOAD_UNKNOWN");
        status(&api, &loc).expect_error(404, "BLOB_UPLOAD_UNKNOWN", &why);
        api.patch_chunk(&loc, 0, b"x")
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN", &why);
        api.put_upload(&loc, &d, Some((0, b"x")))
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN", &why);
        api.delete(&loc)
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN", &why);
    }
    // A session belongs to the repository it was opened in.
    let loc = api.start_upload("alpha");
    api.patch_chunk(&loc, 0, b"abc")
        .expect_status(202, "chunk in alpha");
    let foreign = loc.replace("/v2/alpha/", "/v2/beta/");
    assert_ne!(foreign, loc);
    let why = "a session of repository alpha used through beta is unknown there (404 BLOB_UPLOAD_UNKNOWN)";
    status(&api, &foreign).expect_error(404, "BLOB_UPLOAD_UNKNOWN", why);
    api.patch_chunk(&foreign, 3, b"def")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN", why);
    api.put_upload(&foreign, &sha256(b"abc"), None)
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN", why);
    api.delete(&foreign)
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN", why);
    api.head(&format!("/v2/beta/blobs/{}", sha256(b"abc")))
        .expect_status(404, "nothing was stored in beta");
    let r = status(&api, &loc);
    r.expect_status(204, "the session is intact in alpha");
    expect_range(&r, 3, "its progress unchanged");
    api.put_upload(&loc, &sha256(b"abc"), None)
        .expect_status(201, "and it completes in alpha");
}

#[test]
fn content_length_must_match_content_range() {
    let api = Api::start();
    let loc = api.start_upload("mm");
    api.patch_chunk(&loc, 0, b"0123456789")
        .expect_status(202, "chunk");
    // Announces 10 bytes, carries 5.
    let r = api.send(
        api.req("PATCH", &loc)
            .header("Content-Range", "10-19")
            .body(b"abcde".to_vec()),
    );
    r.expect_status(
        400,
        "a chunk whose Content-Length differs from its Content-Range is 400",
    );
    // Announces 3 bytes, carries 5.
    let r = api.send(
        api.req("PATCH", &loc)
            .header("Content-Range", "10-12")
            .body(b"abcde".to_vec()),
    );
    r.expect_status(400, "a chunk longer than its Content-Range is 400");
    // Same in a closing PUT.
    let r = api.send(
        api.req(
            "PUT",
            &with_query(&loc, &format!("digest={}", sha256(b"0123456789abcde"))),
        )
        .header("Content-Range", "10-19")
        .body(b"abcde".to_vec()),
    );
    r.expect_status(
        400,
        "a final chunk whose Content-Length differs from its Content-Range is 400",
    );
    // Streamed (no Content-Length) with a Content-Range the body does not fill.
    let r = api.send(
        api.req("PATCH", &loc)
            .header("Content-Range", "10-19")
            .body(streamed(b"abcde".to_vec())),
    );
    r.expect_status(
        400,
        "a streamed chunk shorter than its Content-Range is 400",
    );
    // A Content-Range that is no range at all.
    for bad in ["garbage", "10-", "-19", "a-b"] {
        let r = api.send(
            api.req("PATCH", &loc)
                .header("Content-Range", bad)
                .body(b"abcde".to_vec()),
        );
        r.expect_status(
            416,
            &format!("spec (Docker API / OCI detail): a 416 is returned for an invalid Content-Range format ({bad:?})"),
        );
    }
    let r = status(&api, &loc);
    r.expect_status(204, "the session survives refused chunks");
    expect_range(&r, 10, "refused chunks leave the progress unchanged");
    let all = b"0123456789abcde";
    api.put_upload(&loc, &sha256(all), Some((10, b"abcde")))
        .expect_status(201, "the upload then completes");
    api.expect_blob(
        "mm",
        &sha256(all),
        all,
        "only accepted chunks make up the blob",
    );
}

#[test]
fn concurrent_chunks_for_the_same_offset() {
    let api = Api::start();
    let loc = api.start_upload("race");
    let data = gen_data(35, 0, (2 * MIB) as usize);
    let mut threads = Vec::new();
    for _ in 0..4 {
        // Raw requests that read while they send: a refused chunk is
        // answered before its body was read.
        let (addr, data) = (api.srv.addr.clone(), data.clone());
        let head = format!(
            "PATCH {loc} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: 0-{}\r\nContent-Length: {}\r\n\r\n",
            data.len() - 1,
            data.len()
        );
        threads.push(std::thread::spawn(move || {
            raw_request(&addr, &head, data, false)
                .map(|(s, _)| s)
                .unwrap_or(0)
        }));
    }
    let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [202, 416, 416, 416],
        "spec: chunks MUST be received in order: of four concurrent chunks for offset 0 exactly one is \
         accepted, the others get 416"
    );
    let r = status(&api, &loc);
    expect_range(
        &r,
        data.len() as u64,
        "the session holds exactly one copy of the chunk",
    );
    api.put_upload(&loc, &sha256(&data), None)
        .expect_status(201, "the upload completes with the accepted chunk");
}

#[test]
fn sha512_digests() {
    let api = Api::start();
    let why = "spec (digests): sha512 is a registered algorithm the registry accepts";
    // Single POST.
    let a = gen_data(50, 0, 1234);
    let da = sha512(&a);
    api.send(
        api.req("POST", &format!("/v2/s5/blobs/uploads/?digest={da}"))
            .body(a.clone()),
    )
    .expect_status(201, why);
    let r = api.get(&format!("/v2/s5/blobs/{da}"));
    r.expect_status(200, why);
    assert!(r.body == a, "{why}: the sha512-addressed blob is served");
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(da.as_str()),
        "{why}: digest header"
    );
    // POST then PUT, monolithic.
    let b = gen_data(51, 0, 4321);
    let db = sha512(&b);
    let loc = api.start_upload("s5");
    api.put_upload(&loc, &db, Some((0, &b)))
        .expect_status(201, why);
    api.expect_blob("s5", &db, &b, why);
    // Chunked on a default session, closed with a sha512 digest.
    let c = gen_data(52, 0, (2 * MIB) as usize + 3);
    let dc = sha512(&c);
    let loc = api.start_upload("s5");
    api.patch_chunk(&loc, 0, &c[..MIB as usize])
        .expect_status(202, why);
    api.put_upload(&loc, &dc, Some((MIB, &c[MIB as usize..])))
        .expect_status(201, why);
    api.expect_blob("s5", &dc, &c, why);
    // A session asking for sha512 up front, chunked.
    let e = gen_data(53, 0, (2 * MIB) as usize + 9);
    let de = sha512(&e);
    let r = api.send(api.req("POST", "/v2/s5/blobs/uploads/?digest-algorithm=sha512"));
    r.expect_status(202, "POST ?digest-algorithm=sha512 opens a session");
    let loc = r.location();
    api.patch_chunk(&loc, 0, &e[..1000]).expect_status(202, why);
    api.patch_chunk(&loc, 1000, &e[1000..])
        .expect_status(202, why);
    let wrong = sha512(b"nope");
    api.put_upload(&loc, &wrong, None).expect_error(
        400,
        "DIGEST_INVALID",
        "a wrong sha512 digest is 400 DIGEST_INVALID",
    );
    api.put_upload(&loc, &de, None).expect_status(201, why);
    api.expect_blob("s5", &de, &e, why);
    // Wrong digests of either algorithm on a sha512 monolithic push.
    let r = api.send(
        api.req(
            "POST",
            &format!("/v2/s5/blobs/uploads/?digest={}", sha512(b"other")),
        )
        .body(b"content".to_vec()),
    );
    r.expect_error(
        400,
        "DIGEST_INVALID",
        "a single POST whose sha512 does not match is refused",
    );
}

#[test]
fn the_empty_blob() {
    let api = Api::start();
    let empty = sha256(b"");
    let r = api.send(
        api.req("POST", &format!("/v2/e/blobs/uploads/?digest={empty}"))
            .header("Content-Length", "0"),
    );
    r.expect_status(201, "end-4b: the empty blob can be pushed in a single POST");
    let r = api.get(&format!("/v2/e/blobs/{empty}"));
    r.expect_status(200, "end-2: the empty blob is served");
    assert!(r.body.is_empty(), "the empty blob has no bytes");
    assert_eq!(
        r.content_length(),
        Some(0),
        "Content-Length: 0 for the empty blob"
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(empty.as_str()),
        "digest of the empty blob"
    );
    let r = api.head(&format!("/v2/e/blobs/{empty}"));
    r.expect_status(200, "HEAD of the empty blob");
    assert_eq!(
        r.content_length(),
        Some(0),
        "HEAD Content-Length: 0 for the empty blob"
    );

    // Through a session, closed by an empty PUT.
    let loc = api.start_upload("e2");
    api.put_upload(&loc, &empty, None).expect_status(
        201,
        "end-6: a session with no data closes as the empty blob",
    );
    api.expect_blob("e2", &empty, b"", "the empty blob via POST+PUT");
    let loc = api.start_upload("e3");
    api.send(api.req("PATCH", &loc).body(streamed(Vec::new())))
        .expect_status(202, "an empty streamed PATCH is accepted");
    api.put_upload(&loc, &sha512(b""), None)
        .expect_status(201, "the empty blob closed with a sha512 digest");

    // Ranges of a zero-length representation.
    let p = format!("/v2/e/blobs/{empty}");
    let r = api.send(api.req("GET", &p).header("Range", "bytes=0-"));
    r.expect_status(
        416,
        "RFC 9110 14.1.1: no first-pos is satisfiable on a zero-length blob",
    );
    assert_eq!(
        r.header("Content-Range"),
        Some("bytes */0"),
        "416 Content-Range: bytes */0"
    );
    let r = api.send(api.req("GET", &p).header("Range", "bytes=-5"));
    match r.status {
        200 | 416 => {}
        206 => panic!(
            "RFC 9110 14.4: a 206 of a zero-length blob cannot carry a valid Content-Range \
             (complete-length must exceed last-pos); answer 200 or 416 instead:\n  {}",
            r.describe()
        ),
        _ => panic!(
            "Range bytes=-5 on the empty blob: unexpected answer:\n  {}",
            r.describe()
        ),
    }
}

#[test]
fn large_streamed_upload() {
    let api = Api::start();
    let size = 100 * MIB + 12_345;
    let loc = api.start_upload("huge/stream");
    let reader = GenReader::new(77, 0, size);
    let hasher = reader.hasher();
    let r = api.send(
        api.req("PATCH", &loc)
            .header("Content-Type", "application/octet-stream")
            .body(Body::new(reader)),
    );
    r.expect_status(
        202,
        "a 100 MiB streamed PATCH (chunked transfer encoding) is accepted",
    );
    expect_range(&r, size, "after the 100 MiB PATCH");
    let d = finish(&hasher);
    let r = api.put_upload(&r.location(), &d, None);
    r.expect_status(201, "end-6: the 100 MiB blob's digest verifies");
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "the digest of the streamed blob"
    );
    let r = api.head(&format!("/v2/huge/stream/blobs/{d}"));
    r.expect_status(200, "the large blob exists");
    assert_eq!(r.content_length(), Some(size), "and has the size streamed");
    let (first, last) = (size - 300_000, size - 1);
    let r = api.send(
        api.req("GET", &format!("/v2/huge/stream/blobs/{d}"))
            .header("Range", format!("bytes={first}-{last}")),
    );
    r.expect_status(206, "the tail of the large blob");
    assert!(
        r.body == gen_data(77, first, (last - first + 1) as usize),
        "the tail of the large streamed blob holds the bytes sent"
    );
    // A streamed read of the whole blob from the start, spot-checked.
    let mut resp = api
        .http
        .get(api.url(&format!("/v2/huge/stream/blobs/{d}")))
        .send()
        .expect("GET");
    let mut head = vec![0u8; 100_000];
    resp.read_exact(&mut head).expect("the first bytes");
    assert!(
        head == gen_data(77, 0, 100_000),
        "the head of the large blob holds the bytes sent"
    );
}

#[test]
fn cross_repository_mount() {
    let api = Api::start();
    let data = gen_data(60, 0, 9000);
    let d = api.push_blob("src/repo", &data);

    let r = api.send(api.req(
        "POST",
        &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"),
    ));
    r.expect_status(201, "end-11: a successful mount MUST answer 201 Created");
    assert_eq!(
        r.location(),
        format!("/v2/dst/repo/blobs/{d}"),
        "end-11: the 201 MUST carry the Location of the blob in the target repository"
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "the mounted digest"
    );
    api.expect_blob(
        "dst/repo",
        &d,
        &data,
        "a mounted blob is served by the target repository",
    );

    // From a repository that does not have it: an ordinary session.
    let other = api.push_blob("third", b"unrelated");
    let r = api.send(api.req(
        "POST",
        &format!("/v2/dst2/blobs/uploads/?mount={d}&from=third"),
    ));
    r.expect_status(
        202,
        "end-11: a mount that cannot be done SHOULD fall back to a 202 upload session",
    );
    let loc = r.location();
    api.put_upload(&loc, &d, Some((0, &data)))
        .expect_status(201, "the fallback session is a working upload session");
    assert_ne!(other, d);
    // Of a blob unknown to the registry.
    let unknown = sha256(b"nowhere");
    let r = api.send(api.req(
        "POST",
        &format!("/v2/dst3/blobs/uploads/?mount={unknown}&from=src/repo"),
    ));
    r.expect_status(202, "end-11: mounting an unknown blob falls back to 202");
    api.head(&format!("/v2/dst3/blobs/{unknown}"))
        .expect_status(404, "nothing was mounted");

    // Without `from`: the registry MAY mount what it can find.
    let r = api.send(api.req("POST", &format!("/v2/dst4/blobs/uploads/?mount={d}")));
    r.expect_status(
        201,
        "spec: the registry MAY treat `from` as optional and mount the blob if it can be found",
    );
    assert_eq!(
        r.location(),
        format!("/v2/dst4/blobs/{d}"),
        "Location of the anonymous mount"
    );
    api.expect_blob("dst4", &d, &data, "the anonymously mounted blob is served");

    // A blob deleted from its source cannot be mounted from there.
    api.delete(&format!("/v2/src/repo/blobs/{d}"))
        .expect_status(202, "delete");
    let r = api.send(api.req(
        "POST",
        &format!("/v2/dst5/blobs/uploads/?mount={d}&from=src/repo"),
    ));
    r.expect_status(
        202,
        "a blob no longer in `from` cannot be mounted from it: 202 session",
    );
}

#[test]
fn mount_with_invalid_arguments_falls_back_to_an_upload() {
    let api = Api::start();
    let d = api.push_blob("src", b"mount me");
    for q in [
        format!("mount={d}&from=Not..Valid"),
        "mount=sha256:zz&from=src".to_string(),
        "mount=garbage&from=src".to_string(),
    ] {
        let r = api.send(api.req("POST", &format!("/v2/dst/blobs/uploads/?{q}")));
        r.expect_status(
            202,
            &format!(
                "Docker API v2 (Cross Repository Blob Mount): \"If a mount fails due to invalid \
                 repository or digest arguments, the registry will fall back to the standard upload \
                 behavior and return a 202 Accepted\" ({q})"
            ),
        );
    }
}
