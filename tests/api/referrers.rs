//! `GET /v2/<name>/referrers/<digest>` and the `OCI-Subject` header.

use serde_json::{Value, json};

use crate::support::*;

const SBOM: &str = "application/vnd.example.sbom.v1";
const SIG: &str = "application/vnd.example.signature.v1";
const CUSTOM_CONFIG: &str = "application/vnd.example.config.v1+json";

fn referrers(api: &Api, repo: &str, subject: &str, query: &str) -> R {
    let r = api.get(&format!("/v2/{repo}/referrers/{subject}{query}"));
    r.expect_status(
        200,
        "end-12: the referrers API MUST answer 200 (never 404) for a valid digest",
    );
    assert_eq!(
        r.header("Content-Type"),
        Some(OCI_INDEX),
        "spec (Listing Referrers): Content-Type MUST be application/vnd.oci.image.index.v1+json"
    );
    let v = r.json();
    assert_eq!(
        v["schemaVersion"], 2,
        "the referrers list is an image index (schemaVersion 2)"
    );
    assert_eq!(
        v["mediaType"], OCI_INDEX,
        "the referrers list is an image index"
    );
    assert!(
        v["manifests"].is_array(),
        "spec: the index holds a `manifests` list of descriptors"
    );
    r
}

fn manifests(r: &R) -> Vec<Value> {
    r.json()["manifests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn find<'a>(list: &'a [Value], digest: &str) -> Option<&'a Value> {
    list.iter().find(|d| d["digest"] == digest)
}

/// Pushes a manifest with a subject, checking `OCI-Subject`.
fn push_referrer(api: &Api, repo: &str, mt: &str, body: &[u8], subject: &str) -> String {
    let r = api.put_manifest(repo, &sha256(body), mt, body);
    r.expect_status(201, "end-7: a manifest with a subject is pushed");
    assert_eq!(
        r.header("OCI-Subject"),
        Some(subject),
        "spec (Pushing Manifests with Subject): a registry supporting the referrers API MUST answer \
         with OCI-Subject: <subject digest>"
    );
    sha256(body)
}

#[test]
fn referrers_api() {
    let api = Api::start();
    let repo = "app";
    let subject_body = api.oci_image(repo, "subject");
    let subject = api.push_manifest(repo, "v1", OCI_MANIFEST, &subject_body);
    let subject_desc = desc(OCI_MANIFEST, &subject, subject_body.len());
    let r = api.put_manifest(repo, "plain", OCI_MANIFEST, &api.oci_image(repo, "plain"));
    r.expect_status(201, "push");
    assert!(
        r.header("OCI-Subject").is_none(),
        "no OCI-Subject for a manifest without a subject"
    );

    let empty = api.push_blob(repo, b"{}");
    let empty_cfg = |mt: &str| desc(mt, &empty, 2);
    let layer = api.push_blob(repo, b"sbom content");

    // A: artifactType set, with annotations.
    let a = to_vec(&oci_manifest(
        empty_cfg("application/vnd.oci.empty.v1+json"),
        vec![desc("application/json", &layer, 12)],
        json!({
            "artifactType": SBOM,
            "subject": subject_desc,
            "annotations": {"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
        }),
    ));
    let da = push_referrer(&api, repo, OCI_MANIFEST, &a, &subject);
    // B: no artifactType; the config media type stands in.
    let b = to_vec(&oci_manifest(
        empty_cfg(CUSTOM_CONFIG),
        vec![],
        json!({"subject": subject_desc}),
    ));
    let db = push_referrer(&api, repo, OCI_MANIFEST, &b, &subject);
    // C: a signature artifact.
    let c = to_vec(&oci_manifest(
        empty_cfg("application/vnd.oci.empty.v1+json"),
        vec![],
        json!({"artifactType": SIG, "subject": subject_desc, "annotations": {"sig": "abcd"}}),
    ));
    let dc = push_referrer(&api, repo, OCI_MANIFEST, &c, &subject);
    // D: an index referrer without artifactType.
    let d = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [desc(OCI_MANIFEST, &da, a.len())],
        "subject": subject_desc,
        "annotations": {"kind": "index"},
    }));
    let dd = push_referrer(&api, repo, OCI_INDEX, &d, &subject);
    // E: an index referrer with artifactType.
    let e = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": SBOM,
        "manifests": [],
        "subject": subject_desc,
    }));
    let de = push_referrer(&api, repo, OCI_INDEX, &e, &subject);

    let r = referrers(&api, repo, &subject, "");
    assert!(
        r.header("OCI-Filters-Applied").is_none(),
        "no OCI-Filters-Applied without a filter"
    );
    let list = manifests(&r);
    assert_eq!(
        list.len(),
        5,
        "every manifest with this subject is listed: {list:?}"
    );
    let check = |digest: &str, mt: &str, size: usize, at: Option<&str>, ann: Value| {
        let entry =
            find(&list, digest).unwrap_or_else(|| panic!("referrer {digest} is listed: {list:?}"));
        assert_eq!(
            entry["mediaType"], mt,
            "spec: the descriptor's mediaType is the referrer's"
        );
        assert_eq!(
            entry["size"], size,
            "the descriptor's size is the referrer manifest's length"
        );
        match at {
            Some(at) => assert_eq!(
                entry["artifactType"], at,
                "spec: artifactType is the manifest's artifactType, else its config mediaType: {entry}"
            ),
            None => assert!(
                entry.get("artifactType").is_none(),
                "spec: if artifactType is missing in an index, it MUST be omitted: {entry}"
            ),
        }
        assert_eq!(
            entry.get("annotations").cloned().unwrap_or(json!({})),
            ann,
            "spec: the descriptors MUST include annotations from the image manifest or index"
        );
    };
    check(
        &da,
        OCI_MANIFEST,
        a.len(),
        Some(SBOM),
        json!({"org.example.kind": "sbom", "org.opencontainers.image.created": "2024-01-01T00:00:00Z"}),
    );
    check(&db, OCI_MANIFEST, b.len(), Some(CUSTOM_CONFIG), json!({}));
    check(
        &dc,
        OCI_MANIFEST,
        c.len(),
        Some(SIG),
        json!({"sig": "abcd"}),
    );
    check(&dd, OCI_INDEX, d.len(), None, json!({"kind": "index"}));
    check(&de, OCI_INDEX, e.len(), Some(SBOM), json!({}));

    // Filtering.
    let r = referrers(
        &api,
        repo,
        &subject,
        &format!("?artifactType={}", SBOM.replace('/', "%2F")),
    );
    assert_eq!(
        r.header("OCI-Filters-Applied"),
        Some("artifactType"),
        "spec: if filtering is requested and applied, OCI-Filters-Applied: artifactType MUST be set"
    );
    let mut got: Vec<String> = manifests(&r)
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want = vec![da.clone(), de.clone()];
    want.sort();
    assert_eq!(
        got, want,
        "?artifactType= keeps only the referrers of that type"
    );
    // Encoded as Go's url.Values does ('+' would otherwise read as a space).
    let r = referrers(
        &api,
        repo,
        &subject,
        &format!(
            "?artifactType={}",
            CUSTOM_CONFIG.replace('/', "%2F").replace('+', "%2B")
        ),
    );
    assert_eq!(
        manifests(&r).len(),
        1,
        "the config-derived artifactType filters too"
    );
    let r = referrers(&api, repo, &subject, "?artifactType=application/vnd.none");
    assert!(
        manifests(&r).is_empty(),
        "a filter matching nothing gives an empty list"
    );
    assert_eq!(
        r.header("OCI-Filters-Applied"),
        Some("artifactType"),
        "the filter was still applied"
    );

    // Unknown subject, unknown repository.
    let r = referrers(&api, repo, &sha256(b"no such subject"), "");
    assert!(
        manifests(&r).is_empty(),
        "spec: if a query results in no matching referrers, an empty manifest list MUST be returned"
    );
    let r = referrers(&api, "never/pushed", &subject, "");
    assert!(
        manifests(&r).is_empty(),
        "an unknown repository has no referrers (200, empty)"
    );
    // Referrers are per repository.
    api.push_blob("other", b"x");
    let r = referrers(&api, "other", &subject, "");
    assert!(
        manifests(&r).is_empty(),
        "referrers in another repository are not listed"
    );

    // Deleting a referrer removes it from the list.
    api.delete(&format!("/v2/{repo}/manifests/{dc}"))
        .expect_status(202, "delete a referrer");
    let list = manifests(&referrers(&api, repo, &subject, ""));
    assert_eq!(
        list.len(),
        4,
        "a deleted referrer is no longer listed: {list:?}"
    );
    assert!(
        find(&list, &dc).is_none(),
        "the deleted referrer is gone from the list"
    );

    // Deleting the subject does not make the API 404.
    api.delete(&format!("/v2/{repo}/manifests/{subject}"))
        .expect_status(202, "delete the subject");
    referrers(&api, repo, &subject, "");

    // Invalid digests.
    for bad in ["sha256:zz", "notadigest", "sha256:ABC"] {
        api.get(&format!("/v2/{repo}/referrers/{bad}"))
            .expect_status(
                400,
                &format!(
                    "spec (Listing Referrers): a <digest> with invalid syntax ({bad}) MUST get 400"
                ),
            );
    }
}

#[test]
fn referrer_pushed_before_its_subject() {
    let api = Api::start();
    let repo = "early";
    let subject_body = api.oci_image(repo, "later");
    let subject = sha256(&subject_body);
    let cfg = api.push_blob(repo, b"{}");
    let r = to_vec(&oci_manifest(
        desc(CUSTOM_CONFIG, &cfg, 2),
        vec![],
        json!({"subject": desc(OCI_MANIFEST, &subject, subject_body.len())}),
    ));
    let dr = push_referrer(&api, repo, OCI_MANIFEST, &r, &subject);
    let list = manifests(&referrers(&api, repo, &subject, ""));
    assert!(
        find(&list, &dr).is_some(),
        "a referrer pushed before its subject is listed for that subject: {list:?}"
    );
    api.push_manifest(repo, "v1", OCI_MANIFEST, &subject_body);
    let list = manifests(&referrers(&api, repo, &subject, ""));
    assert_eq!(
        list.len(),
        1,
        "pushing the subject afterwards changes nothing: {list:?}"
    );
}

#[test]
fn empty_artifact_type_is_treated_as_missing() {
    let api = Api::start();
    let repo = "emptyat";
    let subject_body = api.oci_image(repo, "s");
    let subject = api.push_manifest(repo, "v1", OCI_MANIFEST, &subject_body);
    let sd = desc(OCI_MANIFEST, &subject, subject_body.len());
    let cfg = api.push_blob(repo, b"{}");
    let m = to_vec(&oci_manifest(
        desc(CUSTOM_CONFIG, &cfg, 2),
        vec![],
        json!({"artifactType": "", "subject": sd}),
    ));
    let dm = push_referrer(&api, repo, OCI_MANIFEST, &m, &subject);
    let i = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "",
        "manifests": [],
        "subject": sd,
    }));
    let di = push_referrer(&api, repo, OCI_INDEX, &i, &subject);
    let list = manifests(&referrers(&api, repo, &subject, ""));
    let m_entry = find(&list, &dm).expect("the manifest referrer is listed");
    assert_eq!(
        m_entry["artifactType"], CUSTOM_CONFIG,
        "spec (Listing Referrers): \"If the artifactType is empty or missing in the image manifest, \
         the value of artifactType MUST be set to the config descriptor mediaType value\": {m_entry}"
    );
    let i_entry = find(&list, &di).expect("the index referrer is listed");
    assert!(
        i_entry.get("artifactType").is_none(),
        "spec (Listing Referrers): \"If the artifactType is empty or missing in an index, the \
         artifactType MUST be omitted\": {i_entry}"
    );
}
