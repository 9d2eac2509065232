//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`: content, headers, ranges,
//! errors, deletion, dedup and a large blob served zero-copy.

use std::io::Read;

use sha2::Digest as _;

use crate::support::*;

#[test]
fn get_and_head_a_blob() {
    let api = Api::start();
    let data = gen_data(1, 0, 300_000);
    let d = api.push_blob("team/app", &data);

    let r = api.get(&format!("/v2/team/app/blobs/{d}"));
    r.expect_status(200, "end-2: GET of an existing blob MUST answer 200 OK");
    assert!(r.body == data, "end-2: GET MUST provide the expected blob");
    assert_eq!(
        sha256(&r.body),
        d,
        "spec (Pulling blobs): the body's digest matches the requested digest"
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "spec (Pulling blobs): Docker-Content-Digest, if present, MUST match the body's digest"
    );
    assert_eq!(
        r.content_length(),
        Some(data.len() as u64),
        "GET: Content-Length is the blob size"
    );

    let r = api.head(&format!("/v2/team/app/blobs/{d}"));
    r.expect_status(200, "end-2: HEAD of an existing blob MUST answer 200 OK");
    assert!(r.body.is_empty(), "HEAD has no body");
    assert_eq!(
        r.content_length(),
        Some(data.len() as u64),
        "spec (Checking if content exists): a successful HEAD SHOULD carry the size in Content-Length"
    );
    assert_eq!(
        r.header("Docker-Content-Digest"),
        Some(d.as_str()),
        "spec (Checking if content exists): a successful HEAD SHOULD carry Docker-Content-Digest"
    );

    // A digest with a percent-encoded colon names the same blob.
    let enc = d.replace(':', "%3A");
    api.get(&format!("/v2/team/app/blobs/{enc}")).expect_status(
        200,
        "a percent-encoded ':' in the digest is the same URL (RFC 3986)",
    );
}

/// Checks a 206 answer: Content-Range consistent with the body and the
/// expected span of `data`.
fn expect_partial(r: &R, data: &[u8], first: usize, last: usize, why: &str) {
    r.expect_status(206, why);
    let want = format!("bytes {first}-{last}/{}", data.len());
    assert_eq!(
        r.header("Content-Range"),
        Some(want.as_str()),
        "{why}: RFC 9110 14.4: a 206 carries Content-Range for the part sent"
    );
    assert!(
        r.body == data[first..=last],
        "{why}: the body is bytes {first}..={last} of the blob (got {} bytes)",
        r.body.len()
    );
    assert_eq!(
        r.content_length(),
        Some((last - first + 1) as u64),
        "{why}: Content-Length of the part"
    );
}

fn range(api: &Api, path: &str, spec: &str) -> R {
    api.send(api.req("GET", path).header("Range", spec))
}

#[test]
fn range_requests() {
    let api = Api::start();
    let data = gen_data(2, 0, 1000);
    let d = api.push_blob("r", &data);
    let p = format!("/v2/r/blobs/{d}");
    let why = "spec (Pulling blobs): a registry SHOULD support Range per RFC 9110";

    expect_partial(&range(&api, &p, "bytes=0-0"), &data, 0, 0, why);
    expect_partial(&range(&api, &p, "bytes=10-19"), &data, 10, 19, why);
    expect_partial(&range(&api, &p, "bytes=990-"), &data, 990, 999, why);
    expect_partial(&range(&api, &p, "bytes=0-"), &data, 0, 999, why);
    expect_partial(&range(&api, &p, "bytes=-10"), &data, 990, 999, why);
    expect_partial(
        &range(&api, &p, "bytes=-5000"),
        &data,
        0,
        999,
        "RFC 9110 14.1.2: a suffix longer than the representation selects all of it",
    );
    expect_partial(
        &range(&api, &p, "bytes=500-5000"),
        &data,
        500,
        999,
        "RFC 9110 14.1.2: a last-pos past the end is taken as the last byte",
    );
    expect_partial(&range(&api, &p, "bytes=999-999"), &data, 999, 999, why);

    for unsat in [
        "bytes=1000-",
        "bytes=1000-1005",
        "bytes=5000-6000",
        "bytes=-0",
    ] {
        let r = range(&api, &p, unsat);
        r.expect_status(
            416,
            &format!("RFC 9110 15.5.17: {unsat} on a 1000-byte blob is unsatisfiable -> 416"),
        );
        assert_eq!(
            r.header("Content-Range"),
            Some("bytes */1000"),
            "RFC 9110 15.5.17: a 416 to a byte range request SHOULD carry Content-Range: bytes */<size>"
        );
    }

    // A range unit the server does not understand is ignored (RFC 9110 14.2: MUST ignore).
    let r = range(&api, &p, "items=0-5");
    r.expect_status(
        200,
        "RFC 9110 14.2: an origin server MUST ignore a Range with an unknown unit",
    );
    assert!(
        r.body == data,
        "the whole blob is sent when Range is ignored"
    );
}

#[test]
fn unknown_blobs_and_invalid_digests() {
    let api = Api::start();
    api.push_blob("have", b"present");
    let missing = sha256(b"never pushed");
    let r = api.get(&format!("/v2/have/blobs/{missing}"));
    r.expect_error(
        404,
        "BLOB_UNKNOWN",
        "end-2: a blob not in the repository is 404 BLOB_UNKNOWN",
    );
    let r = api.head(&format!("/v2/have/blobs/{missing}"));
    r.expect_status(404, "end-2: HEAD of a missing blob MUST be 404");
    assert!(r.body.is_empty(), "HEAD has no body");
    // The blob exists, but not in this repository.
    let d = api.push_blob("other", b"elsewhere");
    api.get(&format!("/v2/have/blobs/{d}")).expect_error(
        404,
        "BLOB_UNKNOWN",
        "spec (Pulling blobs): a blob not found in the repository MUST be 404, whatever other repositories hold",
    );
    let r = api.get(&format!("/v2/never/blobs/{missing}"));
    r.expect_status(404, "end-2: a blob of an unknown repository MUST be 404");

    for bad in [
        "sha256:zz",
        "sha256:abc",
        "nodigest",
        "sha256:",
        &format!("sha256:{}", "A".repeat(64)),
        &format!("sha512:{}", "a".repeat(64)),
    ] {
        let r = api.get(&format!("/v2/have/blobs/{bad}"));
        r.expect_error(
            400,
            "DIGEST_INVALID",
            &format!("a malformed digest ({bad}) is 400 DIGEST_INVALID"),
        );
        let r = api.delete(&format!("/v2/have/blobs/{bad}"));
        r.expect_error(
            400,
            "DIGEST_INVALID",
            &format!("DELETE with a malformed digest ({bad}) is 400 DIGEST_INVALID"),
        );
    }
}

#[test]
fn delete_blob() {
    let api = Api::start();
    let data = b"to be deleted";
    let d = api.push_blob("one", data);
    api.push_blob("two", data);
    api.expect_blob("one", &d, data, "the blob is served before its deletion");
    let r = api.delete(&format!("/v2/one/blobs/{d}"));
    r.expect_status(
        202,
        "end-10: DELETE of an existing blob MUST answer 202 Accepted",
    );
    api.get(&format!("/v2/one/blobs/{d}")).expect_error(
        404,
        "BLOB_UNKNOWN",
        "a deleted blob is 404 in that repository",
    );
    api.head(&format!("/v2/one/blobs/{d}"))
        .expect_status(404, "a deleted blob is 404 for HEAD too");
    api.delete(&format!("/v2/one/blobs/{d}")).expect_error(
        404,
        "BLOB_UNKNOWN",
        "end-10: deleting a blob that is not found MUST be 404",
    );
    api.expect_blob(
        "two",
        &d,
        data,
        "deleting a blob from one repository leaves it readable from another that has it",
    );
    // It can be pushed again into the first repository.
    api.push_blob("one", data);
    api.expect_blob("one", &d, data, "a deleted blob can be pushed again");
}

#[test]
fn same_blob_in_two_repositories_is_stored_once() {
    let api = Api::start();
    let blobs = api.srv.data_dir().join("blobs");
    let small = gen_data(3, 0, 10_000);
    let big = gen_data(4, 0, (3 * MIB) as usize);
    api.push_blob("a", &small);
    api.push_blob_post_put("b", &small);
    let loc = api.start_upload("c");
    api.patch_chunk(&loc, 0, &small[..4000])
        .expect_status(202, "chunk");
    api.put_upload(&loc, &sha256(&small), Some((4000, &small[4000..])))
        .expect_status(201, "chunked upload of a blob already stored");
    assert_eq!(
        count_files(&blobs),
        1,
        "spec (Layer Upload De-duplication): the same blob pushed to three repositories is stored once"
    );
    api.push_blob("a", &big);
    let loc = api.start_upload("b");
    api.patch_chunk(&loc, 0, &big).expect_status(202, "chunk");
    api.put_upload(&loc, &sha256(&big), None)
        .expect_status(201, "closing a chunked upload of a stored blob");
    assert_eq!(
        count_files(&blobs),
        2,
        "a large blob pushed twice is stored once as well"
    );
    for repo in ["a", "b", "c"] {
        api.expect_blob(
            repo,
            &sha256(&small),
            &small,
            "every repository serves the shared blob",
        );
    }
    api.expect_blob(
        "b",
        &sha256(&big),
        &big,
        "the second push of the large blob is served",
    );
}

#[test]
fn large_blob_is_served_correctly() {
    let api = Api::start();
    const SEED: u64 = 64;
    let size: u64 = 64 * MIB + 4321;
    let loc = api.start_upload("big/blob");
    let mut h = sha2::Sha256::new();
    let chunk = 16 * MIB;
    let mut pos = 0;
    while pos < size {
        let n = chunk.min(size - pos);
        let data = gen_data(SEED, pos, n as usize);
        h.update(&data);
        api.patch_chunk(&loc, pos, &data)
            .expect_status(202, "end-5: each chunk is accepted with 202");
        pos += n;
    }
    let d = format!("sha256:{}", hex::encode(h.finalize()));
    api.put_upload(&loc, &d, None).expect_status(
        201,
        "end-6: closing the session with the whole blob's digest",
    );

    let p = format!("/v2/big/blob/blobs/{d}");
    let r = api.head(&p);
    r.expect_status(200, "HEAD of the large blob");
    assert_eq!(
        r.content_length(),
        Some(size),
        "HEAD Content-Length is the large blob's size"
    );

    // The whole blob, compared as it streams in.
    let mut resp = api
        .http
        .get(api.url(&p))
        .send()
        .expect("GET the large blob");
    assert_eq!(
        resp.status().as_u16(),
        200,
        "end-2: GET of the large blob is 200"
    );
    assert_eq!(
        resp.headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok()),
        Some(d.as_str()),
        "Docker-Content-Digest of the large blob"
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut expected = vec![0u8; 1 << 20];
    let mut got: u64 = 0;
    loop {
        let n = resp.read(&mut buf).expect("reading the large blob");
        if n == 0 {
            break;
        }
        assert!(got + n as u64 <= size, "the body is longer than the blob");
        fill(SEED, got, &mut expected[..n]);
        assert!(
            buf[..n] == expected[..n],
            "end-2: GET MUST provide the expected blob: bytes at offset {got} differ"
        );
        got += n as u64;
    }
    assert_eq!(got, size, "end-2: the whole large blob is sent");

    // Ranges in the middle, crossing internal window boundaries, large and small.
    for (first, last) in [
        (30 * MIB + 123, 40 * MIB + 456),
        (8 * MIB - 100_000, 24 * MIB + 7),
        (8 * MIB - 10, 8 * MIB + 10),
        (size - 200_000, size - 1),
        (1, 200_001),
    ] {
        let r = range(&api, &p, &format!("bytes={first}-{last}"));
        r.expect_status(
            206,
            "RFC 9110: a satisfiable range of the large blob is 206",
        );
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {first}-{last}/{size}").as_str()),
            "Content-Range of a part of the large blob"
        );
        let want = gen_data(SEED, first, (last - first + 1) as usize);
        assert!(
            r.body == want,
            "Range {first}-{last} of the large blob returns exactly those bytes (got {} bytes)",
            r.body.len()
        );
    }
}
