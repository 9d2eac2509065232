//! `tags/list` and `_catalog`: order, `n`, `last`, `Link`, errors.

use serde_json::Value;

use crate::support::*;

fn strings(v: &Value, key: &str, r: &R) -> Vec<String> {
    serde_json::from_value(v[key].clone()).unwrap_or_else(|_| {
        panic!(
            "the body has a `{key}` array of strings:\n  {}",
            r.describe()
        )
    })
}

/// Walks a paginated listing by following `Link` from `first`; checks
/// every page against the full `all` list.
fn walk(api: &Api, first: &str, key: &str, n: usize, all: &[String]) {
    let mut url = first.to_string();
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= all.len() + 2, "pagination ends");
        let r = api.get(&url);
        r.expect_status(
            200,
            &format!("following the Link header ({url}) answers 200"),
        );
        let items = strings(&r.json(), key, &r);
        let more_follow = seen.len() + items.len() < all.len();
        assert!(
            items.len() == n || (items.len() < n && !more_follow),
            "spec (Listing Tags): a page holds n={n} entries unless the list ends; got {items:?} at {url}"
        );
        seen.extend(items);
        match next_link(&r) {
            Some(next) => {
                assert!(
                    more_follow,
                    "spec: the Link header is present only when more entries follow ({url} had the last ones)"
                );
                url = next;
            }
            None => {
                assert!(
                    !more_follow,
                    "a Link header MUST be present when more entries follow (page {url} stopped at {} of {})",
                    seen.len(),
                    all.len()
                );
                break;
            }
        }
    }
    assert_eq!(
        seen, all,
        "following Link pages (n={n}) yields every entry once, in lexical order, without gaps or duplicates"
    );
}

#[test]
fn tags_list_order_and_pagination() {
    let api = Api::start();
    let repo = "paged/tags";
    let m = api.oci_image(repo, "p");
    // Pushed out of order; names chosen so byte order is the lexical order.
    let mut tags: Vec<String> = (0..25).map(|i| format!("t{:02}", (i * 7) % 25)).collect();
    tags.push("1.0".into());
    tags.push("latest".into());
    tags.push("v1.2.3-rc_1".into());
    for t in &tags {
        api.push_manifest(repo, t, OCI_MANIFEST, &m);
    }
    tags.sort();
    let total = tags.len();

    let r = api.get(&format!("/v2/{repo}/tags/list"));
    r.expect_status(
        200,
        "end-8a: tags/list of an existing repository MUST answer 200",
    );
    let v = r.json();
    assert_eq!(v["name"], repo, "spec: the body names the repository");
    assert_eq!(
        strings(&v, "tags", &r),
        tags,
        "spec: the tags MUST be in lexical order"
    );
    assert!(
        r.header("Link").is_none(),
        "no Link when everything was returned"
    );

    for n in [1, 5, 7, total - 1, total, total + 1, 1000] {
        walk(
            &api,
            &format!("/v2/{repo}/tags/list?n={n}"),
            "tags",
            n,
            &tags,
        );
    }

    let r = api.get(&format!("/v2/{repo}/tags/list?n=0"));
    r.expect_status(200, "end-8b: n=0");
    assert!(
        strings(&r.json(), "tags", &r).is_empty(),
        "spec: when n is zero, this endpoint MUST return an empty list"
    );
    assert!(
        r.header("Link").is_none(),
        "spec: when n is zero, it MUST NOT include a Link header"
    );

    let r = api.get(&format!("/v2/{repo}/tags/list?n=3&last=t10"));
    assert_eq!(
        strings(&r.json(), "tags", &r),
        ["t11", "t12", "t13"],
        "spec: `last` returns up to n tags lexically after it, not including it"
    );
    let r = api.get(&format!("/v2/{repo}/tags/list?last=t20"));
    assert_eq!(
        strings(&r.json(), "tags", &r),
        ["t21", "t22", "t23", "t24", "v1.2.3-rc_1"],
        "spec: with `last`, `n` is optional"
    );
    assert!(r.header("Link").is_none(), "no Link after the last page");
    let r = api.get(&format!("/v2/{repo}/tags/list?n=2&last=t125"));
    assert_eq!(
        strings(&r.json(), "tags", &r),
        ["t13", "t14"],
        "`last` need not be an existing tag: entries lexically after it"
    );
    let r = api.get(&format!("/v2/{repo}/tags/list?n=5&last=zzz"));
    assert!(
        strings(&r.json(), "tags", &r).is_empty(),
        "nothing after the last tag"
    );
    assert!(r.header("Link").is_none(), "and no Link");

    for bad in ["-1", "abc", "1.5", "99999999999999999999"] {
        api.get(&format!("/v2/{repo}/tags/list?n={bad}"))
            .expect_status(
                400,
                &format!("an n that is not a non-negative integer ({bad}) is 400"),
            );
    }

    api.get("/v2/no/such/repo/tags/list").expect_error(
        404,
        "NAME_UNKNOWN",
        "end-8a: tags/list of an unknown repository is 404 NAME_UNKNOWN",
    );
}

#[test]
fn tags_list_of_a_repository_without_tags() {
    let api = Api::start();
    api.push_blob("blobs/only", b"untagged");
    let r = api.get("/v2/blobs/only/tags/list");
    r.expect_status(
        200,
        "spec: assuming a repository is found, tags/list MUST return 200",
    );
    assert!(
        r.json()["tags"].as_array().is_none_or(|a| a.is_empty()),
        "spec: the list of tags MAY be empty"
    );
    let m = api.oci_image("digest/only", "d");
    api.push_manifest("digest/only", &sha256(&m), OCI_MANIFEST, &m);
    let r = api.get("/v2/digest/only/tags/list");
    r.expect_status(200, "a repository with only untagged manifests exists");
}

#[test]
fn catalog_order_and_pagination() {
    let api = Api::start();
    let r = api.get("/v2/_catalog");
    r.expect_status(200, "_catalog of an empty registry");
    assert!(
        r.json()["repositories"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "an empty registry lists no repositories"
    );
    let mut repos: Vec<String> = (0..25)
        .map(|i| {
            let i = (i * 11) % 25;
            if i % 3 == 0 {
                format!("team{i:02}/app")
            } else {
                format!("r{i:02}")
            }
        })
        .collect();
    for (i, repo) in repos.iter().enumerate() {
        if i % 2 == 0 {
            api.push_blob(repo, repo.as_bytes());
        } else {
            let m = api.oci_image(repo, repo);
            api.push_manifest(repo, "v1", OCI_MANIFEST, &m);
        }
    }
    // A session alone does not make a repository.
    api.start_upload("only-a-session");
    repos.sort();

    let r = api.get("/v2/_catalog");
    r.expect_status(200, "_catalog answers 200");
    assert_eq!(
        strings(&r.json(), "repositories", &r),
        repos,
        "_catalog lists the repositories in lexical order"
    );
    for n in [1, 7, 24, 25, 26] {
        walk(
            &api,
            &format!("/v2/_catalog?n={n}"),
            "repositories",
            n,
            &repos,
        );
    }
    let r = api.get("/v2/_catalog?n=0");
    r.expect_status(200, "_catalog?n=0");
    assert!(
        strings(&r.json(), "repositories", &r).is_empty(),
        "n=0 returns an empty list"
    );
    assert!(r.header("Link").is_none(), "n=0 has no Link");
    let r = api.get("/v2/_catalog?n=2&last=r10");
    assert_eq!(
        strings(&r.json(), "repositories", &r),
        ["r11", "r13"],
        "`last` returns the repositories after it"
    );
    for bad in ["-3", "x"] {
        api.get(&format!("/v2/_catalog?n={bad}"))
            .expect_status(400, &format!("_catalog with n={bad} is 400"));
    }
}
