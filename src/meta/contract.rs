//! The `MetaStore` contract: backend-independent checks that every metadata
//! backend must pass, and the entry points that run them on SQLite, MariaDB
//! and PostgreSQL (other backends call [`run_all`] from their own tests).
//!
//! Every check makes its own names (a random suffix), so checks can share
//! one database with each other and with earlier runs. Checks that look at
//! global listings (catalog, users, organisations, garbage-collection
//! candidates) start after their own random prefix or filter what they get;
//! `prune_audit` is only used on timestamps far in the past that no other
//! check uses. `run_all` runs the checks one after the other: `admin_count`
//! is checked by difference, so nothing else may create administrators in
//! the same store meanwhile.
//!
//! Where the trait documentation leaves room, the checks decide:
//!
//! - Order is byte order (`-`, `.`, `/`, digits, uppercase, `_`,
//!   lowercase), and names, tags, digests, artifact types and actors
//!   compare case-sensitively, in every listing and lookup.
//! - A repository exists (`repo_exists`, `repo`, `list_repos`) from its first
//!   content or `create_repo` until `delete_repo`; unlinking its last blob
//!   does not remove it. `create_repo` on a pushed repository is `Exists`.
//! - `blob_size` knows a blob from its first link until `forget_blob`, even
//!   when no repository links it any more (the garbage collector relies on
//!   that); `forget_blob` of an unknown blob is `true`; `delete_repo` leaves
//!   its blobs known, as candidates.
//! - A refused `put_manifest` changes nothing: no repository, no tag move.
//!   The missing references come back in any order.
//! - `tokens` lists oldest first; `team_permits` in any order; every other
//!   account listing by name.
//! - `delete_user` and `delete_org` leave the repositories of the namespace
//!   (and an organisation its deleted creator made); the name is free again
//!   for either kind, with nothing of the old account coming back.
//! - `create_token` with an id in use is `Exists`; `delete_token` of
//!   another user's token is `Missing`.
//! - Audit events are newest first by id, not by `at`: within one
//!   `append_audit`, later events are newer.
//! - Racing creations of one name (user, organisation, team, repository,
//!   token) leave one `Ok` and `Exists` for the others, never an error;
//!   racing upserts (members, tags) all succeed; deletions racing with
//!   writes under the deleted object leave nothing behind.
//!
//! `DYTEST_CONTRACT_ONLY=substring` runs only the checks whose name contains
//! it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::join_all;

use super::MetaStore;
use super::accounts::{
    ApiToken, Change, MemberPrivilege, NamespaceKind, OrgRole, OrgUpdate, Organization, Permit,
    Refusal, Repository, SystemRole, Team, TeamRole, User, UserSource, UserUpdate,
};
use super::audit::{AuditEvent, AuditQuery};
use super::{ManifestRecord, MissingRefs, Referrer};
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::name::{RepoName, Tag};

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
pub type CheckFn = for<'a> fn(&'a dyn MetaStore) -> CheckFuture<'a>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        /// Every check, by name, in the order [`run_all`] runs them.
        pub const CHECKS: &[(&str, CheckFn)] = &[
            $((stringify!($name), |s| Box::pin($name(s))),)*
        ];
    };
}

checks!(
    blob_links,
    manifest_missing_refs,
    manifest_roundtrip,
    tag_overwrite,
    delete_manifest_and_tags,
    tag_listing_byte_order,
    catalog_byte_order,
    referrers,
    gc_candidates_and_forget,
    users,
    orgs_and_namespaces,
    org_membership,
    teams,
    team_repos_and_permits,
    repositories,
    delete_repo_cascade,
    delete_user_cascade,
    delete_org_cascade,
    tokens,
    audit_query,
    audit_prune,
    concurrent_names,
    concurrent_memberships,
    concurrent_content,
    concurrent_deletes,
    aci_images,
    aci_conversions,
    aci_pubkeys,
    aci_blobs_in_use,
    v1_images,
    v1_conversions,
    v1_repo_images,
    v1_search,
);

/// Runs every check (or those `DYTEST_CONTRACT_ONLY` selects) one after the
/// other and panics listing those that failed.
pub async fn run_all(store: &dyn MetaStore) {
    let only = std::env::var("DYTEST_CONTRACT_ONLY").ok();
    let started = Instant::now();
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let t = Instant::now();
        match AssertUnwindSafe(check(store)).catch_unwind().await {
            Ok(()) => eprintln!("contract {name}: ok ({} ms)", t.elapsed().as_millis()),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("contract {name}: FAILED: {msg}");
                failed.push(format!("{name}: {msg}"));
            }
        }
    }
    eprintln!("contract: {} ms in all", started.elapsed().as_millis());
    assert!(
        failed.is_empty(),
        "{} contract check(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------- helpers

/// A fresh lowercase name: `prefix` and 12 random hex digits.
pub fn uniq(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap_or_else(|e| panic!("repo name {s:?}: {e}"))
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap_or_else(|e| panic!("tag {s:?}: {e:?}"))
}

fn rand_digest() -> Digest {
    Digest::of(Algorithm::Sha256, uuid::Uuid::new_v4().as_bytes())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn byte_sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    v
}

/// A manifest whose digest is that of `body`.
fn manifest(body: impl Into<Vec<u8>>, blobs: &[&Digest], manifests: &[&Digest]) -> ManifestRecord {
    let body = Bytes::from(body.into());
    ManifestRecord {
        digest: Digest::of(Algorithm::Sha256, &body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body,
        subject: None,
        artifact_type: None,
        annotations: None,
        blob_refs: blobs.iter().map(|d| (*d).clone()).collect(),
        manifest_refs: manifests.iter().map(|d| (*d).clone()).collect(),
    }
}

/// A small manifest with a unique body and no references.
fn plain_manifest() -> ManifestRecord {
    manifest(format!("{{\"n\":\"{}\"}}", uniq("")), &[], &[])
}

fn user(name: &str) -> User {
    User {
        name: name.to_string(),
        email: Some(format!("{name}@example.test")),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        realname: None,
        comment: None,
        role: SystemRole::Member,
        source: UserSource::Db,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    }
}

fn org(name: &str) -> Organization {
    Organization {
        name: name.to_string(),
        email: None,
        comment: None,
        url: None,
        location: None,
        member_privilege: MemberPrivilege::Read,
        created_at: 1_700_000_000,
    }
}

fn team(org: &str, name: &str) -> Team {
    Team {
        org: org.to_string(),
        name: name.to_string(),
        comment: None,
    }
}

fn repository(name: &RepoName) -> Repository {
    Repository {
        name: name.clone(),
        namespace: name.namespace().to_string(),
        is_public: false,
        comment: None,
        created_at: 1_700_000_000,
    }
}

fn token(user: &str, created_at: i64) -> ApiToken {
    ApiToken {
        id: uniq("tok"),
        user: user.to_string(),
        name: format!("ci {created_at}"),
        secret_hash: hex::encode([created_at as u8; 32]),
        scopes: vec![format!("repository:{user}/*:pull,push")],
        created_at,
        expires_at: None,
    }
}

fn kind(r: &Change) -> &'static str {
    match r {
        Ok(()) => "Ok",
        Err(Refusal::Exists(_)) => "Exists",
        Err(Refusal::Missing(_)) => "Missing",
        Err(Refusal::Invalid(_)) => "Invalid",
    }
}

/// Awaits a change and asserts it was done.
macro_rules! done {
    ($e:expr) => {
        match $e.await {
            Ok(Ok(())) => {}
            other => panic!("{}: expected Ok(Ok(())), got {other:?}", stringify!($e)),
        }
    };
}

/// Awaits a change and asserts it was refused with the given reason.
macro_rules! refused {
    ($reason:ident, $e:expr) => {
        match $e.await {
            Ok(Err(Refusal::$reason(_))) => {}
            other => panic!(
                "{}: expected a {} refusal, got {other:?}",
                stringify!($e),
                stringify!($reason)
            ),
        }
    };
}

/// Awaits a metadata call that must not fail.
macro_rules! q {
    ($e:expr) => {
        $e.await
            .unwrap_or_else(|e| panic!("{}: {e}", stringify!($e)))
    };
}

async fn put(s: &dyn MetaStore, r: &RepoName, m: &ManifestRecord, t: Option<&str>) {
    let t = t.map(tag);
    let missing = q!(s.put_manifest(r, m, t.as_ref()));
    assert_eq!(
        missing,
        MissingRefs::default(),
        "put_manifest {r} {}",
        m.digest
    );
}

/// Every garbage-collection candidate for `before`, paging by 7 and
/// checking the pages come in strictly increasing digest order.
async fn all_gc_candidates(s: &dyn MetaStore, before: i64) -> Vec<(Digest, u64)> {
    let mut all: Vec<(Digest, u64)> = Vec::new();
    loop {
        let after = all.last().map(|(d, _)| d.clone());
        let page = q!(s.gc_candidates(before, after.as_ref(), 7));
        assert!(page.len() <= 7, "gc_candidates returned more than limit");
        for (d, size) in page.iter() {
            if let Some((prev, _)) = all.last() {
                assert!(
                    prev.as_str().as_bytes() < d.as_str().as_bytes(),
                    "gc_candidates out of order: {prev} then {d}"
                );
            }
            all.push((d.clone(), *size));
        }
        if page.len() < 7 {
            return all;
        }
    }
}

// ---------------------------------------------------------------- content

/// Links and unlinks; a blob stays known (`blob_size`) until forgotten.
pub async fn blob_links(s: &dyn MetaStore) {
    let r1 = repo(&uniq("bl"));
    let r2 = repo(&format!("{}/two", uniq("bl")));
    let d = rand_digest();
    assert!(!q!(s.repo_exists(&r1)));
    assert_eq!(q!(s.repo_blob(&r1, &d)), None);
    assert_eq!(q!(s.blob_size(&d)), None);

    q!(s.link_blob(&r1, &d, 1234));
    assert!(q!(s.repo_exists(&r1)), "link_blob creates the repository");
    assert_eq!(q!(s.repo_blob(&r1, &d)), Some(1234));
    assert_eq!(q!(s.blob_size(&d)), Some(1234));
    assert_eq!(q!(s.repo_blob(&r2, &d)), None, "linked in r1 only");
    assert!(!q!(s.repo_exists(&r2)));

    // Idempotent.
    q!(s.link_blob(&r1, &d, 1234));
    assert_eq!(q!(s.repo_blob(&r1, &d)), Some(1234));

    // Sizes beyond 32 bits.
    let big = rand_digest();
    let big_size = (5u64 << 32) + 7;
    q!(s.link_blob(&r2, &big, big_size));
    assert_eq!(q!(s.repo_blob(&r2, &big)), Some(big_size));
    assert_eq!(q!(s.blob_size(&big)), Some(big_size));

    // The same blob in two repositories, unlinked from one.
    q!(s.link_blob(&r2, &d, 1234));
    assert!(q!(s.unlink_blob(&r1, &d)));
    assert!(!q!(s.unlink_blob(&r1, &d)), "second unlink");
    assert_eq!(q!(s.repo_blob(&r1, &d)), None);
    assert_eq!(q!(s.repo_blob(&r2, &d)), Some(1234));
    assert!(q!(s.unlink_blob(&r2, &d)));
    // Linked nowhere now, but known until forget_blob.
    assert_eq!(q!(s.blob_size(&d)), Some(1234));
    assert!(q!(s.repo_exists(&r1)), "an emptied repository still exists");
    assert!(!q!(s.unlink_blob(&r1, &rand_digest())), "never linked");
    assert!(
        !q!(s.unlink_blob(&repo(&uniq("nowhere")), &d)),
        "unknown repository"
    );

    // Relinked.
    q!(s.link_blob(&r1, &d, 1234));
    assert_eq!(q!(s.repo_blob(&r1, &d)), Some(1234));
}

/// A manifest naming anything its repository lacks is refused as a whole.
pub async fn manifest_missing_refs(s: &dyn MetaStore) {
    let r = repo(&uniq("mm"));
    let other = repo(&uniq("mm"));
    let present = rand_digest();
    let absent = rand_digest();
    let elsewhere = rand_digest();
    q!(s.link_blob(&r, &present, 10));
    q!(s.link_blob(&other, &elsewhere, 11));

    // A tag already pointing somewhere must not move.
    let before = plain_manifest();
    put(s, &r, &before, Some("v1")).await;

    let child = rand_digest();
    let m = manifest("missing refs", &[&present, &absent, &elsewhere], &[&child]);
    let missing = q!(s.put_manifest(&r, &m, Some(&tag("v1"))));
    assert_eq!(
        sorted(missing.blobs.clone()),
        sorted(vec![absent.clone(), elsewhere.clone()]),
        "a blob linked only in another repository is missing too"
    );
    assert_eq!(missing.manifests, vec![child.clone()]);
    assert_eq!(q!(s.manifest_by_digest(&r, &m.digest)), None);
    let (d, _, _) = q!(s.manifest_by_tag(&r, &tag("v1"))).expect("v1 still there");
    assert_eq!(d, before.digest, "a refused put_manifest moved the tag");
    assert_eq!(q!(s.list_tags(&r, None, 100)), vec!["v1".to_string()]);

    // Only the missing manifest reference.
    let only_child = manifest("only child", &[&present], &[&child]);
    let missing = q!(s.put_manifest(&r, &only_child, None));
    assert!(missing.blobs.is_empty());
    assert_eq!(missing.manifests, vec![child.clone()]);

    // A refused manifest does not create its repository.
    let fresh = repo(&uniq("mm"));
    let missing = q!(s.put_manifest(&fresh, &m, Some(&tag("latest"))));
    assert_eq!(missing.blobs.len(), 3);
    assert!(
        !q!(s.repo_exists(&fresh)),
        "refused put_manifest created a repository"
    );
    assert!(q!(s.list_tags(&fresh, None, 10)).is_empty());

    // A child manifest stored in another repository does not count.
    let c = plain_manifest();
    put(s, &other, &c, None).await;
    let index = manifest("index", &[], &[&c.digest]);
    let missing = q!(s.put_manifest(&r, &index, None));
    assert_eq!(missing.manifests, vec![c.digest.clone()]);

    // Once everything is there, the same manifests are accepted.
    q!(s.link_blob(&r, &absent, 12));
    q!(s.link_blob(&r, &elsewhere, 11));
    let child_m = plain_manifest();
    put(s, &r, &child_m, None).await;
    let m = manifest(
        "missing refs resolved",
        &[&present, &absent, &elsewhere],
        &[&child_m.digest],
    );
    put(s, &r, &m, Some("v1")).await;
    put(s, &r, &c, None).await;
    put(s, &r, &index, None).await;
    let (d, _, _) = q!(s.manifest_by_tag(&r, &tag("v1"))).unwrap();
    assert_eq!(d, m.digest);
}

/// Manifests come back byte for byte, by digest and by tag.
pub async fn manifest_roundtrip(s: &dyn MetaStore) {
    let r = repo(&format!("{}/img", uniq("mr")));
    let config = rand_digest();
    let layer = rand_digest();
    q!(s.link_blob(&r, &config, 100));
    q!(s.link_blob(&r, &layer, 200));

    // 200 KiB, every byte value, not UTF-8 (beyond MySQL's 64 KiB BLOB).
    let body: Vec<u8> = (0..200 * 1024u32)
        .map(|i| (i.wrapping_mul(7919) % 256) as u8)
        .collect();
    let mut m = manifest(body.clone(), &[&config, &layer, &layer], &[]);
    m.media_type = "application/vnd.docker.distribution.manifest.v2+json".into();
    put(s, &r, &m, Some("latest")).await;

    let (mt, b) = q!(s.manifest_by_digest(&r, &m.digest)).expect("stored");
    assert_eq!(mt, m.media_type);
    assert!(b[..] == body[..], "body changed in the store");
    let (d, mt, b) = q!(s.manifest_by_tag(&r, &tag("latest"))).expect("tagged");
    assert_eq!(d, m.digest);
    assert_eq!(mt, m.media_type);
    assert!(b[..] == body[..], "body changed in the store");

    // Idempotent, and a second tag on the same manifest.
    put(s, &r, &m, None).await;
    put(s, &r, &m, Some("stable")).await;
    let (d, _, _) = q!(s.manifest_by_tag(&r, &tag("stable"))).unwrap();
    assert_eq!(d, m.digest);

    // An index naming it; an empty body.
    let mut index = manifest("{\"manifests\":[]}", &[], &[&m.digest]);
    index.media_type = "application/vnd.oci.image.index.v1+json".into();
    put(s, &r, &index, Some("multi")).await;
    let (mt, _) = q!(s.manifest_by_digest(&r, &index.digest)).unwrap();
    assert_eq!(mt, "application/vnd.oci.image.index.v1+json");
    let empty = manifest(Vec::new(), &[], &[]);
    put(s, &r, &empty, None).await;
    let (_, b) = q!(s.manifest_by_digest(&r, &empty.digest)).unwrap();
    assert!(b.is_empty());

    // Not in other repositories, not under other tags.
    let other = repo(&uniq("mr"));
    assert_eq!(q!(s.manifest_by_digest(&other, &m.digest)), None);
    assert_eq!(q!(s.manifest_by_tag(&r, &tag("nope"))), None);
    assert_eq!(q!(s.manifest_by_tag(&r, &tag("LATEST"))), None);
    assert_eq!(q!(s.manifest_by_digest(&r, &rand_digest())), None);
    assert_eq!(
        q!(s.list_tags(&r, None, 10)),
        vec!["latest".to_string(), "multi".into(), "stable".into()]
    );
}

/// A tag moves to the last manifest put with it.
pub async fn tag_overwrite(s: &dyn MetaStore) {
    let r = repo(&uniq("to"));
    let m1 = plain_manifest();
    let m2 = plain_manifest();
    put(s, &r, &m1, Some("t")).await;
    put(s, &r, &m2, Some("t")).await;
    let (d, _, body) = q!(s.manifest_by_tag(&r, &tag("t"))).unwrap();
    assert_eq!(d, m2.digest);
    assert_eq!(body, m2.body);
    assert!(
        q!(s.manifest_by_digest(&r, &m1.digest)).is_some(),
        "m1 kept"
    );
    assert_eq!(q!(s.list_tags(&r, None, 10)), vec!["t".to_string()]);

    // Putting m1 again without a tag leaves the tag alone; with it, moves it back.
    put(s, &r, &m1, None).await;
    assert_eq!(q!(s.manifest_by_tag(&r, &tag("t"))).unwrap().0, m2.digest);
    put(s, &r, &m1, Some("t")).await;
    assert_eq!(q!(s.manifest_by_tag(&r, &tag("t"))).unwrap().0, m1.digest);
}

/// Deleting a manifest deletes every tag pointing at it, and nothing else.
pub async fn delete_manifest_and_tags(s: &dyn MetaStore) {
    let r = repo(&uniq("dm"));
    let b = rand_digest();
    q!(s.link_blob(&r, &b, 5));
    let m = manifest("to delete", &[&b], &[]);
    let keep = plain_manifest();
    put(s, &r, &m, Some("a")).await;
    put(s, &r, &m, Some("b")).await;
    put(s, &r, &keep, Some("c")).await;

    assert!(q!(s.delete_tag(&r, &tag("c"))));
    assert!(!q!(s.delete_tag(&r, &tag("c"))), "second delete_tag");
    assert!(!q!(s.delete_tag(&r, &tag("zzz"))), "unknown tag");
    assert!(
        q!(s.manifest_by_digest(&r, &keep.digest)).is_some(),
        "delete_tag keeps the manifest"
    );
    put(s, &r, &keep, Some("c")).await;

    assert!(q!(s.delete_manifest(&r, &m.digest)));
    assert_eq!(q!(s.manifest_by_digest(&r, &m.digest)), None);
    assert_eq!(q!(s.manifest_by_tag(&r, &tag("a"))), None);
    assert_eq!(q!(s.manifest_by_tag(&r, &tag("b"))), None);
    assert_eq!(q!(s.list_tags(&r, None, 10)), vec!["c".to_string()]);
    assert!(!q!(s.delete_manifest(&r, &m.digest)), "second delete");
    assert!(
        !q!(s.delete_manifest(&r, &rand_digest())),
        "unknown manifest"
    );
    assert_eq!(q!(s.repo_blob(&r, &b)), Some(5), "blob links stay");

    // It can be pushed again, untagged tags do not come back.
    put(s, &r, &m, None).await;
    assert_eq!(q!(s.list_tags(&r, None, 10)), vec!["c".to_string()]);
}

/// Tags list in byte order (uppercase before lowercase), case-sensitively,
/// and page with `last`.
pub async fn tag_listing_byte_order(s: &dyn MetaStore) {
    let r = repo(&uniq("tl"));
    let names: Vec<String> = [
        "latest", "v1", "V1", "A", "a", "B", "b", "Z", "_z", "1.0", "1.0-rc", "10", "9", "a.b",
        "a-b", "a_b", "a__b", "ab", "Ab", "aB",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let mut upper_v1 = None;
    let mut lower_v1 = None;
    for t in &names {
        let m = plain_manifest();
        put(s, &r, &m, Some(t)).await;
        match t.as_str() {
            "V1" => upper_v1 = Some(m.digest.clone()),
            "v1" => lower_v1 = Some(m.digest.clone()),
            _ => {}
        }
    }
    let expected = byte_sorted(&names);
    assert_eq!(q!(s.list_tags(&r, None, 1000)), expected);
    assert_eq!(
        q!(s.manifest_by_tag(&r, &tag("V1"))).unwrap().0,
        upper_v1.unwrap()
    );
    assert_eq!(
        q!(s.manifest_by_tag(&r, &tag("v1"))).unwrap().0,
        lower_v1.unwrap()
    );

    // Pages of 3.
    let mut paged = Vec::new();
    loop {
        let page = q!(s.list_tags(&r, paged.last().map(String::as_str), 3));
        assert!(page.len() <= 3);
        let n = page.len();
        paged.extend(page);
        if n < 3 {
            break;
        }
    }
    assert_eq!(paged, expected);

    // `last` need not be a tag.
    for last in ["C", "a", "aA", "_", "0", "zz"] {
        let want: Vec<String> = expected
            .iter()
            .filter(|t| t.as_bytes() > last.as_bytes())
            .cloned()
            .collect();
        assert_eq!(
            q!(s.list_tags(&r, Some(last), 1000)),
            want,
            "after {last:?}"
        );
    }
    assert_eq!(
        q!(s.list_tags(&r, Some("B"), 2)),
        vec!["V1".to_string(), "Z".into()]
    );
    assert!(q!(s.list_tags(&repo(&uniq("tl")), None, 10)).is_empty());
}

/// The catalog lists repositories in byte order, however they came to be.
pub async fn catalog_byte_order(s: &dyn MetaStore) {
    let p = uniq("ca");
    let names: Vec<String> = [
        "/a", "-z", ".a", "_x", "0", "/a/b", "/b", "__y", "/a-b", "/a.b", "/a_b", "/0",
    ]
    .iter()
    .map(|suffix| format!("{p}{suffix}"))
    .collect();
    for (i, n) in names.iter().enumerate() {
        let r = repo(n);
        match i % 3 {
            0 => q!(s.link_blob(&r, &rand_digest(), 1)),
            1 => put(s, &r, &plain_manifest(), Some("x")).await,
            _ => done!(s.create_repo(&repository(&r))),
        }
    }
    let expected = byte_sorted(&names);
    let n = expected.len() as u32;
    assert_eq!(q!(s.list_repos(Some(&p), n)), expected);
    let mut paged: Vec<String> = Vec::new();
    while paged.len() < expected.len() {
        let last = paged.last().cloned().unwrap_or_else(|| p.clone());
        let page = q!(s.list_repos(Some(&last), 5));
        assert!(!page.is_empty() && page.len() <= 5);
        paged.extend(page.into_iter().filter(|r| r.starts_with(&p)));
    }
    assert_eq!(paged, expected);
    let after_mine = q!(s.list_repos(expected.last().map(String::as_str), 100));
    assert!(after_mine.iter().all(|r| !r.starts_with(&p)));
    let all = q!(s.list_repos(None, u32::MAX / 2));
    let mine: Vec<String> = all.into_iter().filter(|r| r.starts_with(&p)).collect();
    assert_eq!(mine, expected);
}

/// Referrers of a subject, filtered by artifact type (case-sensitively),
/// in digest order, paged with `after`.
pub async fn referrers(s: &dyn MetaStore) {
    let r = repo(&uniq("rf"));
    let other = repo(&uniq("rf"));
    let subject = plain_manifest();
    put(s, &r, &subject, Some("v1")).await;
    put(s, &other, &subject, None).await;

    // Annotations beyond 64 KiB, with multi-byte characters.
    let big_note = format!(
        "{{\"org.example.note\":\"{}\"}}",
        "Zoë 🚢 ünïcødé ".repeat(5000)
    );
    let types = [
        Some("application/vnd.a"),
        Some("application/vnd.b"),
        Some("application/vnd.a"),
        None,
        Some("application/vnd.A"),
        Some("application/vnd.a"),
    ];
    let mut want = Vec::new();
    for (i, at) in types.iter().enumerate() {
        let mut m = manifest(format!("referrer {i} {}", uniq("")), &[], &[]);
        m.subject = Some(subject.digest.clone());
        m.artifact_type = at.map(str::to_string);
        m.annotations = match i {
            0 => Some(big_note.clone()),
            1 => Some("{\"a\":\"b\"}".into()),
            _ => None,
        };
        if i == 5 {
            m.media_type = "application/vnd.oci.artifact.manifest.v1+json".into();
        }
        put(s, &r, &m, None).await;
        want.push(Referrer {
            digest: m.digest.clone(),
            media_type: m.media_type.clone(),
            size: m.body.len() as u64,
            artifact_type: m.artifact_type.clone(),
            annotations: m.annotations.clone(),
        });
    }
    want.sort_by(|a, b| a.digest.as_str().cmp(b.digest.as_str()));

    // Noise: same subject elsewhere, another subject here.
    let mut elsewhere = manifest(format!("elsewhere {}", uniq("")), &[], &[]);
    elsewhere.subject = Some(subject.digest.clone());
    elsewhere.artifact_type = Some("application/vnd.a".into());
    put(s, &other, &elsewhere, None).await;
    let mut unrelated = manifest(format!("unrelated {}", uniq("")), &[], &[]);
    unrelated.subject = Some(rand_digest());
    unrelated.artifact_type = Some("application/vnd.a".into());
    put(s, &r, &unrelated, None).await;

    let got = q!(s.referrers(&r, &subject.digest, None, None, 100));
    assert_eq!(got.len(), want.len());
    assert!(got == want, "referrers differ");

    let of_a: Vec<Referrer> = want
        .iter()
        .filter(|x| x.artifact_type.as_deref() == Some("application/vnd.a"))
        .cloned()
        .collect();
    assert_eq!(of_a.len(), 3);
    let got = q!(s.referrers(&r, &subject.digest, Some("application/vnd.a"), None, 100));
    assert!(got == of_a, "artifact type filter (case-sensitive)");
    let got = q!(s.referrers(&r, &subject.digest, Some("application/vnd.A"), None, 100));
    assert_eq!(got.len(), 1);
    assert!(q!(s.referrers(&r, &subject.digest, Some("application/vnd.c"), None, 100)).is_empty());

    // Pages of 2, with and without the filter.
    for (filter, expected) in [(None, &want), (Some("application/vnd.a"), &of_a)] {
        let mut paged: Vec<Referrer> = Vec::new();
        loop {
            let after = paged.last().map(|x| x.digest.clone());
            let page = q!(s.referrers(&r, &subject.digest, filter, after.as_ref(), 2));
            assert!(page.len() <= 2);
            let n = page.len();
            paged.extend(page);
            if n < 2 {
                break;
            }
        }
        assert!(paged == *expected, "paged referrers ({filter:?})");
    }

    assert_eq!(
        q!(s.referrers(&other, &subject.digest, None, None, 100)).len(),
        1
    );
    assert!(q!(s.referrers(&r, &rand_digest(), None, None, 100)).is_empty());

    assert!(q!(s.delete_manifest(&r, &want[0].digest)));
    let got = q!(s.referrers(&r, &subject.digest, None, None, 100));
    assert!(got == want[1..], "a deleted referrer is gone");
}

/// Candidates are blobs no manifest anywhere references; `forget_blob`
/// refuses referenced blobs and otherwise drops the blob and its links.
pub async fn gc_candidates_and_forget(s: &dyn MetaStore) {
    let r = repo(&uniq("gc"));
    let r2 = repo(&uniq("gc"));
    let referenced = rand_digest();
    let free = rand_digest();
    let unlinked = rand_digest();
    let shared = rand_digest();
    for (d, size) in [(&referenced, 1), (&free, 2), (&unlinked, 3), (&shared, 4)] {
        q!(s.link_blob(&r, d, size));
    }
    assert!(q!(s.unlink_blob(&r, &unlinked)));
    let m = manifest(format!("gc {}", uniq("")), &[&referenced], &[]);
    put(s, &r, &m, Some("t")).await;
    // `shared` is referenced by a manifest in another repository only.
    q!(s.link_blob(&r2, &shared, 4));
    let m2 = manifest(format!("gc2 {}", uniq("")), &[&shared], &[]);
    put(s, &r2, &m2, None).await;

    let t = now();
    let cands = all_gc_candidates(s, t + 1000).await;
    let has = |d: &Digest| cands.iter().find(|(c, _)| c == d).map(|(_, size)| *size);
    assert_eq!(has(&free), Some(2));
    assert_eq!(has(&unlinked), Some(3));
    assert_eq!(has(&referenced), None, "referenced by a manifest");
    assert_eq!(has(&shared), None, "referenced in another repository");

    // Nothing of ours is older than the grace period.
    let old = all_gc_candidates(s, t - 1000).await;
    for d in [&free, &unlinked, &referenced, &shared] {
        assert!(!old.iter().any(|(c, _)| c == d), "{d} is too new");
    }

    assert!(!q!(s.forget_blob(&referenced)));
    assert_eq!(q!(s.repo_blob(&r, &referenced)), Some(1));
    assert!(!q!(s.forget_blob(&shared)));
    assert_eq!(q!(s.repo_blob(&r, &shared)), Some(4));

    assert!(q!(s.forget_blob(&free)));
    assert_eq!(q!(s.blob_size(&free)), None);
    assert_eq!(q!(s.repo_blob(&r, &free)), None);
    assert!(q!(s.forget_blob(&unlinked)));
    assert_eq!(q!(s.blob_size(&unlinked)), None);
    assert!(
        q!(s.forget_blob(&rand_digest())),
        "an unknown blob is forgotten"
    );

    // Once its manifest is deleted, a blob becomes a candidate.
    assert!(q!(s.delete_manifest(&r, &m.digest)));
    let cands = all_gc_candidates(s, t + 1000).await;
    assert!(cands.iter().any(|(c, _)| c == &referenced));
    assert!(q!(s.forget_blob(&referenced)));
    assert_eq!(q!(s.blob_size(&referenced)), None);

    // A forgotten blob can come back.
    q!(s.link_blob(&r, &free, 2));
    assert_eq!(q!(s.repo_blob(&r, &free)), Some(2));
}

// ---------------------------------------------------------------- accounts

pub async fn users(s: &dyn MetaStore) {
    let p = uniq("us");
    let names: Vec<String> = ["-B", "-a", "-A", "_c", ".d", "-ab", "-aB"]
        .iter()
        .map(|x| format!("{p}{x}"))
        .collect();
    for n in &names {
        done!(s.create_user(&user(n)));
    }
    let expected = byte_sorted(&names);
    let listed: Vec<String> = q!(s.users(Some(&p), names.len() as u32))
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(
        listed, expected,
        "users are distinct by case and in byte order"
    );
    let mut paged: Vec<String> = Vec::new();
    while paged.len() < expected.len() {
        let last = paged.last().cloned().unwrap_or_else(|| p.clone());
        let page = q!(s.users(Some(&last), 2));
        assert!(!page.is_empty() && page.len() <= 2);
        paged.extend(page.into_iter().map(|u| u.name));
    }
    assert_eq!(paged, expected);

    // Every field back as stored; multi-byte text.
    let mut u = user(&uniq("us"));
    u.realname = Some("Zoë Ünïcødé 🚢".into());
    u.comment = Some("line one\nline 'two' \"quoted\" \\ back".into());
    u.created_at = 1_600_000_000;
    u.updated_at = 1_600_000_001;
    done!(s.create_user(&u));
    assert_eq!(q!(s.user(&u.name)), Some(u.clone()));
    refused!(Exists, s.create_user(&u));
    refused!(Exists, s.create_user(&user(&names[0])));
    assert_eq!(q!(s.user(&uniq("nobody"))), None);
    assert_eq!(q!(s.user(&u.name.to_uppercase())), None, "case-sensitive");

    let mut ldap = user(&uniq("us"));
    ldap.password_hash = String::new();
    ldap.source = UserSource::Ldap;
    ldap.email = None;
    done!(s.create_user(&ldap));
    assert_eq!(q!(s.user(&ldap.name)), Some(ldap.clone()));

    // Updates change only what they name, and set updated_at.
    done!(s.update_user(
        &u.name,
        &UserUpdate {
            email: Some("new@example.test".into()),
            ..Default::default()
        },
        1_650_000_000
    ));
    let got = q!(s.user(&u.name)).unwrap();
    assert_eq!(
        got,
        User {
            email: Some("new@example.test".into()),
            updated_at: 1_650_000_000,
            ..u.clone()
        }
    );
    done!(s.update_user(
        &u.name,
        &UserUpdate {
            email: Some("e@x.test".into()),
            realname: Some("R".into()),
            comment: Some("C".into()),
            password_hash: Some("$argon2id$new".into()),
            role: Some(SystemRole::Admin),
        },
        1_650_000_001
    ));
    let got = q!(s.user(&u.name)).unwrap();
    assert_eq!(
        got,
        User {
            email: Some("e@x.test".into()),
            realname: Some("R".into()),
            comment: Some("C".into()),
            password_hash: "$argon2id$new".into(),
            role: SystemRole::Admin,
            updated_at: 1_650_000_001,
            ..u.clone()
        }
    );
    // An update that changes nothing but the time, and one to the same values.
    done!(s.update_user(&u.name, &UserUpdate::default(), 1_650_000_001));
    done!(s.update_user(
        &u.name,
        &UserUpdate {
            role: Some(SystemRole::Admin),
            ..Default::default()
        },
        1_650_000_001
    ));
    assert_eq!(q!(s.user(&u.name)).unwrap(), got);
    refused!(
        Missing,
        s.update_user(&uniq("nobody"), &UserUpdate::default(), 1)
    );

    // admin_count follows creations, promotions and deletions.
    let admins = q!(s.admin_count());
    let mut a = user(&uniq("us"));
    a.role = SystemRole::Admin;
    done!(s.create_user(&a));
    assert_eq!(q!(s.admin_count()), admins + 1);
    done!(s.update_user(
        &a.name,
        &UserUpdate {
            role: Some(SystemRole::Member),
            ..Default::default()
        },
        1
    ));
    assert_eq!(q!(s.admin_count()), admins);
    done!(s.update_user(
        &a.name,
        &UserUpdate {
            role: Some(SystemRole::Admin),
            ..Default::default()
        },
        1
    ));
    assert_eq!(q!(s.admin_count()), admins + 1);
    done!(s.delete_user(&a.name));
    assert_eq!(q!(s.admin_count()), admins);
}

pub async fn orgs_and_namespaces(s: &dyn MetaStore) {
    let owner = uniq("ow");
    done!(s.create_user(&user(&owner)));
    let name = uniq("or");
    let o = Organization {
        email: Some("org@example.test".into()),
        comment: Some("Ünïcødé 🚢".into()),
        url: Some("https://example.test/".into()),
        location: Some("Kraków".into()),
        member_privilege: MemberPrivilege::Write,
        ..org(&name)
    };
    done!(s.create_org(&o, &owner));
    assert_eq!(q!(s.org(&name)), Some(o.clone()));
    assert_eq!(q!(s.org_role(&name, &owner)), Some(OrgRole::Admin));
    assert_eq!(
        q!(s.org_members(&name)),
        vec![(owner.clone(), OrgRole::Admin)]
    );

    // One namespace for users and organisations.
    refused!(Exists, s.create_org(&org(&name), &owner));
    refused!(Exists, s.create_org(&org(&owner), &owner));
    refused!(Exists, s.create_user(&user(&name)));
    assert_eq!(q!(s.namespace_kind(&owner)), Some(NamespaceKind::User));
    assert_eq!(
        q!(s.namespace_kind(&name)),
        Some(NamespaceKind::Organization)
    );
    assert_eq!(q!(s.namespace_kind(&uniq("nobody"))), None);
    assert_eq!(q!(s.namespace_kind(&name.to_uppercase())), None);

    // The creator must exist; nothing is created otherwise.
    let orphan = uniq("or");
    refused!(Missing, s.create_org(&org(&orphan), &uniq("nobody")));
    assert_eq!(q!(s.org(&orphan)), None);
    assert_eq!(q!(s.namespace_kind(&orphan)), None);

    done!(s.update_org(
        &name,
        &OrgUpdate {
            comment: Some("new".into()),
            member_privilege: Some(MemberPrivilege::None),
            ..Default::default()
        }
    ));
    assert_eq!(
        q!(s.org(&name)),
        Some(Organization {
            comment: Some("new".into()),
            member_privilege: MemberPrivilege::None,
            ..o.clone()
        })
    );
    done!(s.update_org(&name, &OrgUpdate::default()));
    done!(s.update_org(
        &name,
        &OrgUpdate {
            member_privilege: Some(MemberPrivilege::None),
            ..Default::default()
        }
    ));
    refused!(
        Missing,
        s.update_org(&uniq("nobody"), &OrgUpdate::default())
    );

    // Listing in byte order.
    let p = uniq("ol");
    let names: Vec<String> = ["-b", "-A", "-a", "_z"]
        .iter()
        .map(|x| format!("{p}{x}"))
        .collect();
    for n in &names {
        done!(s.create_org(&org(n), &owner));
    }
    let expected = byte_sorted(&names);
    let listed: Vec<String> = q!(s.orgs(Some(&p), names.len() as u32))
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(listed, expected);
    let page: Vec<String> = q!(s.orgs(Some(&expected[1]), 2))
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(page, expected[2..4]);
}

pub async fn org_membership(s: &dyn MetaStore) {
    let owner = uniq("ow");
    let u1 = uniq("u1");
    let u2 = uniq("u2");
    for u in [&owner, &u1, &u2] {
        done!(s.create_user(&user(u)));
    }
    // Named so that o sorts before o2.
    let o = format!("{}-1", uniq("om"));
    let o2 = format!("{o}-2");
    done!(s.create_org(&org(&o), &owner));
    done!(s.create_org(&org(&o2), &owner));

    done!(s.set_org_member(&o, &u1, OrgRole::Member));
    assert_eq!(q!(s.org_role(&o, &u1)), Some(OrgRole::Member));
    done!(s.set_org_member(&o, &u1, OrgRole::Admin));
    assert_eq!(q!(s.org_role(&o, &u1)), Some(OrgRole::Admin));
    done!(s.set_org_member(&o, &u1, OrgRole::Admin));
    done!(s.set_org_member(&o, &u2, OrgRole::Member));
    let mut want = vec![
        (owner.clone(), OrgRole::Admin),
        (u1.clone(), OrgRole::Admin),
        (u2.clone(), OrgRole::Member),
    ];
    want.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(q!(s.org_members(&o)), want);
    assert_eq!(q!(s.org_role(&o, &uniq("nobody"))), None);
    assert_eq!(q!(s.org_role(&uniq("noorg"), &u1)), None);
    assert!(q!(s.org_members(&uniq("noorg"))).is_empty());

    refused!(
        Missing,
        s.set_org_member(&uniq("noorg"), &u1, OrgRole::Member)
    );
    refused!(
        Missing,
        s.set_org_member(&o, &uniq("nobody"), OrgRole::Member)
    );

    done!(s.set_org_member(&o2, &u1, OrgRole::Member));
    assert_eq!(
        q!(s.user_orgs(&u1)),
        vec![(o.clone(), OrgRole::Admin), (o2.clone(), OrgRole::Member)]
    );
    assert!(q!(s.user_orgs(&uniq("nobody"))).is_empty());

    // Leaving an organisation leaves its teams, not other organisations'.
    done!(s.create_team(&team(&o, "t"), Some(&owner)));
    done!(s.create_team(&team(&o2, "t"), Some(&owner)));
    done!(s.set_team_member(&o, "t", &u1, TeamRole::Member));
    done!(s.set_team_member(&o2, "t", &u1, TeamRole::Member));
    done!(s.remove_org_member(&o, &u1));
    assert_eq!(q!(s.org_role(&o, &u1)), None);
    assert_eq!(q!(s.team_role(&o, "t", &u1)), None);
    assert!(q!(s.user_teams(&o, &u1)).is_empty());
    assert_eq!(q!(s.team_role(&o2, "t", &u1)), Some(TeamRole::Member));
    assert_eq!(q!(s.user_orgs(&u1)), vec![(o2.clone(), OrgRole::Member)]);
    refused!(Missing, s.remove_org_member(&o, &u1));
    refused!(Missing, s.remove_org_member(&uniq("noorg"), &u1));
    // And may join again, without the old team memberships.
    done!(s.set_org_member(&o, &u1, OrgRole::Member));
    assert!(q!(s.user_teams(&o, &u1)).is_empty());
}

pub async fn teams(s: &dyn MetaStore) {
    let owner = uniq("ow");
    let m1 = uniq("m1");
    let outsider = uniq("ou");
    for u in [&owner, &m1, &outsider] {
        done!(s.create_user(&user(u)));
    }
    let o = uniq("tm");
    done!(s.create_org(&org(&o), &owner));
    done!(s.set_org_member(&o, &m1, OrgRole::Member));

    let dev = Team {
        comment: Some("the developers 🚢".into()),
        ..team(&o, "dev")
    };
    done!(s.create_team(&dev, Some(&owner)));
    assert_eq!(q!(s.team(&o, "dev")), Some(dev.clone()));
    assert_eq!(
        q!(s.team_members(&o, "dev")),
        vec![(owner.clone(), TeamRole::Admin)]
    );
    // Case-sensitive names; a team without members.
    done!(s.create_team(&team(&o, "Dev"), None));
    assert!(q!(s.team_members(&o, "Dev")).is_empty());
    refused!(Exists, s.create_team(&team(&o, "dev"), None));
    refused!(Missing, s.create_team(&team(&uniq("noorg"), "dev"), None));
    // The creator must be a member of the organisation.
    refused!(Invalid, s.create_team(&team(&o, "ops"), Some(&outsider)));
    assert_eq!(q!(s.team(&o, "ops")), None);
    assert_eq!(
        q!(s.teams(&o)),
        vec![team(&o, "Dev"), dev.clone()],
        "teams in byte order"
    );
    assert!(q!(s.teams(&uniq("noorg"))).is_empty());
    assert_eq!(q!(s.team(&o, "DEV")), None);

    // Members.
    done!(s.set_team_member(&o, "dev", &m1, TeamRole::Member));
    assert_eq!(q!(s.team_role(&o, "dev", &m1)), Some(TeamRole::Member));
    done!(s.set_team_member(&o, "dev", &m1, TeamRole::Admin));
    assert_eq!(q!(s.team_role(&o, "dev", &m1)), Some(TeamRole::Admin));
    done!(s.set_team_member(&o, "dev", &m1, TeamRole::Admin));
    refused!(
        Missing,
        s.set_team_member(&o, "nope", &m1, TeamRole::Member)
    );
    refused!(
        Missing,
        s.set_team_member(&o, "dev", &uniq("nobody"), TeamRole::Member)
    );
    refused!(
        Invalid,
        s.set_team_member(&o, "dev", &outsider, TeamRole::Member)
    );
    assert_eq!(q!(s.team_role(&o, "dev", &outsider)), None);
    let mut want = vec![
        (owner.clone(), TeamRole::Admin),
        (m1.clone(), TeamRole::Admin),
    ];
    want.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    assert_eq!(q!(s.team_members(&o, "dev")), want);
    done!(s.set_team_member(&o, "Dev", &m1, TeamRole::Member));
    assert_eq!(
        q!(s.user_teams(&o, &m1)),
        vec![
            ("Dev".to_string(), TeamRole::Member),
            ("dev".into(), TeamRole::Admin)
        ]
    );
    assert!(q!(s.user_teams(&o, &outsider)).is_empty());

    done!(s.remove_team_member(&o, "Dev", &m1));
    refused!(Missing, s.remove_team_member(&o, "Dev", &m1));
    refused!(Missing, s.remove_team_member(&o, "nope", &m1));
    assert_eq!(
        q!(s.user_teams(&o, &m1)),
        vec![("dev".to_string(), TeamRole::Admin)]
    );

    // Deleting a team drops its members and permits.
    let r = repo(&format!("{o}/app"));
    done!(s.create_repo(&repository(&r)));
    done!(s.set_team_repo(&o, "dev", &r, Permit::Read));
    assert_eq!(q!(s.team_permits(&m1, &r)), vec![Permit::Read]);
    done!(s.delete_team(&o, "dev"));
    assert_eq!(q!(s.team(&o, "dev")), None);
    assert!(q!(s.team_members(&o, "dev")).is_empty());
    assert!(q!(s.user_teams(&o, &m1)).is_empty());
    assert!(q!(s.team_repos(&o, "dev")).is_empty());
    assert!(q!(s.team_permits(&m1, &r)).is_empty());
    assert_eq!(q!(s.teams(&o)), vec![team(&o, "Dev")]);
    refused!(Missing, s.delete_team(&o, "dev"));
    // A new team of the same name starts empty.
    done!(s.create_team(&team(&o, "dev"), None));
    assert!(q!(s.team_members(&o, "dev")).is_empty());
    assert!(q!(s.team_repos(&o, "dev")).is_empty());
}

pub async fn team_repos_and_permits(s: &dyn MetaStore) {
    let owner = uniq("ow");
    let m = uniq("mb");
    let outsider = uniq("ou");
    for u in [&owner, &m, &outsider] {
        done!(s.create_user(&user(u)));
    }
    let o = uniq("tp");
    let o2 = uniq("tp");
    done!(s.create_org(&org(&o), &owner));
    done!(s.create_org(&org(&o2), &owner));
    done!(s.set_org_member(&o, &m, OrgRole::Member));
    done!(s.create_team(&team(&o, "a"), Some(&owner)));
    done!(s.create_team(&team(&o, "b"), Some(&owner)));
    done!(s.create_team(&team(&o2, "a"), Some(&owner)));
    done!(s.set_team_member(&o, "b", &m, TeamRole::Member));

    let app = repo(&format!("{o}/app"));
    let lib = repo(&format!("{o}/lib"));
    let foreign = repo(&format!("{o2}/x"));
    done!(s.create_repo(&repository(&app)));
    q!(s.link_blob(&lib, &rand_digest(), 1)); // created by a push
    done!(s.create_repo(&repository(&foreign)));

    done!(s.set_team_repo(&o, "a", &app, Permit::Write));
    done!(s.set_team_repo(&o, "b", &app, Permit::Read));
    done!(s.set_team_repo(&o, "a", &lib, Permit::Read));
    done!(s.set_team_repo(&o2, "a", &foreign, Permit::Read));
    refused!(Invalid, s.set_team_repo(&o, "a", &foreign, Permit::Read));
    refused!(
        Missing,
        s.set_team_repo(&o, "a", &repo(&format!("{o}/missing")), Permit::Read)
    );
    refused!(Missing, s.set_team_repo(&o, "zz", &app, Permit::Read));
    refused!(
        Missing,
        s.set_team_repo(&uniq("noorg"), "a", &app, Permit::Read)
    );

    assert_eq!(
        q!(s.team_repos(&o, "a")),
        vec![
            (app.as_str().to_string(), Permit::Write),
            (lib.as_str().to_string(), Permit::Read)
        ]
    );
    done!(s.set_team_repo(&o, "a", &lib, Permit::Write));
    done!(s.set_team_repo(&o, "a", &lib, Permit::Write));
    assert_eq!(
        q!(s.team_repos(&o, "a")),
        vec![
            (app.as_str().to_string(), Permit::Write),
            (lib.as_str().to_string(), Permit::Write)
        ]
    );
    assert!(q!(s.team_repos(&o, "zz")).is_empty());

    let permits = |v: Vec<Permit>| sorted(v.into_iter().map(u8::from).collect::<Vec<u8>>());
    assert_eq!(
        permits(q!(s.team_permits(&owner, &app))),
        vec![Permit::Write as u8, Permit::Read as u8]
    );
    assert_eq!(q!(s.team_permits(&m, &app)), vec![Permit::Read]);
    assert!(q!(s.team_permits(&m, &lib)).is_empty());
    assert!(q!(s.team_permits(&outsider, &app)).is_empty());
    assert_eq!(q!(s.team_permits(&owner, &foreign)), vec![Permit::Read]);
    assert!(q!(s.team_permits(&m, &foreign)).is_empty());

    done!(s.remove_team_repo(&o, "a", &app));
    refused!(Missing, s.remove_team_repo(&o, "a", &app));
    refused!(Missing, s.remove_team_repo(&o, "zz", &app));
    assert_eq!(q!(s.team_permits(&owner, &app)), vec![Permit::Read]);
    // Leaving the team ends its permits.
    done!(s.remove_team_member(&o, "b", &m));
    assert!(q!(s.team_permits(&m, &app)).is_empty());
}

pub async fn repositories(s: &dyn MetaStore) {
    let ns = uniq("ns");
    let b = repo(&format!("{ns}/b"));
    let a = repo(&format!("{ns}/a"));
    let deep = repo(&format!("{ns}/a/deep"));
    let dash = repo(&format!("{ns}/a-z"));
    let rb = Repository {
        name: b.clone(),
        namespace: ns.clone(),
        is_public: true,
        comment: Some("Ünïcødé 🚢".into()),
        created_at: 42,
    };
    assert!(!q!(s.repo_exists(&b)));
    done!(s.create_repo(&rb));
    assert_eq!(q!(s.repo(&b)), Some(rb.clone()));
    assert!(q!(s.repo_exists(&b)), "a created repository exists");
    refused!(Exists, s.create_repo(&rb));
    refused!(
        Exists,
        s.create_repo(&Repository {
            is_public: false,
            ..rb.clone()
        })
    );

    // One created by a push: private, no comment, namespace from its name.
    let t0 = now();
    q!(s.link_blob(&a, &rand_digest(), 1));
    let ra = q!(s.repo(&a)).expect("pushed repository has a record");
    assert_eq!(ra.name, a);
    assert_eq!(ra.namespace, ns);
    assert!(!ra.is_public);
    assert_eq!(ra.comment, None);
    assert!((t0 - 5..=now() + 5).contains(&ra.created_at));
    refused!(Exists, s.create_repo(&repository(&a)));
    put(s, &deep, &plain_manifest(), Some("x")).await;
    done!(s.create_repo(&repository(&dash)));

    let lib = repo(&uniq("lib"));
    q!(s.link_blob(&lib, &rand_digest(), 1));
    assert_eq!(q!(s.repo(&lib)).unwrap().namespace, "library");

    let names: Vec<String> = q!(s.repos_in(&ns))
        .into_iter()
        .map(|r| r.name.as_str().to_string())
        .collect();
    assert_eq!(
        names,
        byte_sorted(&[
            a.to_string(),
            b.to_string(),
            deep.to_string(),
            dash.to_string()
        ])
    );
    assert!(q!(s.repos_in(&uniq("nons"))).is_empty());
    assert!(q!(s.repos_in(&ns.to_uppercase())).is_empty());

    done!(s.update_repo(&b, Some(false), None));
    assert_eq!(
        q!(s.repo(&b)),
        Some(Repository {
            is_public: false,
            ..rb.clone()
        })
    );
    done!(s.update_repo(&b, None, Some("new comment")));
    done!(s.update_repo(&b, Some(false), None));
    done!(s.update_repo(&b, None, None));
    assert_eq!(
        q!(s.repo(&b)),
        Some(Repository {
            is_public: false,
            comment: Some("new comment".into()),
            ..rb.clone()
        })
    );
    done!(s.update_repo(&a, Some(true), Some("pushed")));
    let ra2 = q!(s.repo(&a)).unwrap();
    assert!(ra2.is_public);
    assert_eq!(ra2.comment.as_deref(), Some("pushed"));
    refused!(
        Missing,
        s.update_repo(&repo(&format!("{ns}/missing")), Some(true), None)
    );
    assert_eq!(q!(s.repo(&repo(&format!("{ns}/missing")))), None);
}

/// `delete_repo` removes the repository with its content and permits; the
/// blobs stay known until garbage collection.
pub async fn delete_repo_cascade(s: &dyn MetaStore) {
    let owner = uniq("ow");
    let m = uniq("mb");
    done!(s.create_user(&user(&owner)));
    done!(s.create_user(&user(&m)));
    let o = uniq("dr");
    done!(s.create_org(&org(&o), &owner));
    done!(s.set_org_member(&o, &m, OrgRole::Member));
    done!(s.create_team(&team(&o, "t"), Some(&owner)));
    done!(s.set_team_member(&o, "t", &m, TeamRole::Member));

    let r = repo(&format!("{o}/app"));
    let keep = repo(&format!("{o}/keep"));
    let shared = rand_digest();
    let own = rand_digest();
    q!(s.link_blob(&r, &shared, 10));
    q!(s.link_blob(&r, &own, 20));
    q!(s.link_blob(&keep, &shared, 10));
    let man = manifest(format!("dr {}", uniq("")), &[&shared], &[]);
    let own_man = manifest(format!("dr own {}", uniq("")), &[&own], &[]);
    put(s, &r, &man, Some("v1")).await;
    put(s, &r, &own_man, Some("own")).await;
    put(s, &keep, &man, Some("v1")).await;
    let mut referrer = plain_manifest();
    referrer.subject = Some(man.digest.clone());
    put(s, &r, &referrer, None).await;
    done!(s.set_team_repo(&o, "t", &r, Permit::Write));
    done!(s.set_team_repo(&o, "t", &keep, Permit::Read));

    done!(s.delete_repo(&r));
    assert!(!q!(s.repo_exists(&r)));
    assert_eq!(q!(s.repo(&r)), None);
    assert_eq!(q!(s.repo_blob(&r, &shared)), None);
    assert_eq!(q!(s.repo_blob(&r, &own)), None);
    assert_eq!(q!(s.manifest_by_digest(&r, &man.digest)), None);
    assert_eq!(q!(s.manifest_by_tag(&r, &tag("v1"))), None);
    assert!(q!(s.list_tags(&r, None, 10)).is_empty());
    assert!(q!(s.referrers(&r, &man.digest, None, None, 10)).is_empty());
    assert_eq!(
        q!(s.team_repos(&o, "t")),
        vec![(keep.as_str().to_string(), Permit::Read)]
    );
    assert!(q!(s.team_permits(&m, &r)).is_empty());
    assert!(!q!(s.list_repos(Some(&o), 10)).contains(&r.to_string()));
    assert!(q!(s.repos_in(&o)).iter().all(|x| x.name != r));
    refused!(Missing, s.delete_repo(&r));

    // Other repositories keep what they share with it.
    assert_eq!(
        q!(s.manifest_by_tag(&keep, &tag("v1"))).unwrap().0,
        man.digest
    );
    assert_eq!(q!(s.repo_blob(&keep, &shared)), Some(10));
    // Its own blobs wait for the garbage collector.
    assert_eq!(q!(s.blob_size(&own)), Some(20));
    let cands = all_gc_candidates(s, now() + 1000).await;
    assert!(cands.iter().any(|(d, _)| d == &own));
    assert!(!cands.iter().any(|(d, _)| d == &shared));

    // Pushed again, it starts empty.
    q!(s.link_blob(&r, &own, 20));
    put(s, &r, &own_man, Some("new")).await;
    assert_eq!(q!(s.list_tags(&r, None, 10)), vec!["new".to_string()]);
    assert_eq!(q!(s.manifest_by_digest(&r, &man.digest)), None);
    assert!(q!(s.team_permits(&m, &r)).is_empty());
}

pub async fn delete_user_cascade(s: &dyn MetaStore) {
    let victim = uniq("vi");
    let owner = uniq("ow");
    done!(s.create_user(&user(&victim)));
    done!(s.create_user(&user(&owner)));
    let o = uniq("du");
    done!(s.create_org(&org(&o), &owner));
    done!(s.set_org_member(&o, &victim, OrgRole::Admin));
    done!(s.create_team(&team(&o, "t"), Some(&owner)));
    done!(s.set_team_member(&o, "t", &victim, TeamRole::Admin));
    let own_org = uniq("du");
    done!(s.create_org(&org(&own_org), &victim));
    let tok = token(&victim, 100);
    done!(s.create_token(&tok));
    let r = repo(&format!("{victim}/app"));
    done!(s.create_repo(&repository(&r)));
    let other_tok = token(&owner, 100);
    done!(s.create_token(&other_tok));

    done!(s.delete_user(&victim));
    assert_eq!(q!(s.user(&victim)), None);
    assert_eq!(q!(s.namespace_kind(&victim)), None);
    assert!(q!(s.user_orgs(&victim)).is_empty());
    assert_eq!(q!(s.org_members(&o)), vec![(owner.clone(), OrgRole::Admin)]);
    assert_eq!(
        q!(s.team_members(&o, "t")),
        vec![(owner.clone(), TeamRole::Admin)]
    );
    assert!(q!(s.user_teams(&o, &victim)).is_empty());
    assert!(q!(s.tokens(&victim)).is_empty());
    assert_eq!(q!(s.token(&tok.id)), None);
    assert_eq!(q!(s.token(&other_tok.id)), Some(other_tok.clone()));
    // What they owned stays.
    assert!(
        q!(s.repo(&r)).is_some(),
        "repositories in the namespace stay"
    );
    assert!(q!(s.org(&own_org)).is_some(), "organisations stay");
    assert!(q!(s.org_members(&own_org)).is_empty());
    refused!(Missing, s.delete_user(&victim));

    // The name is free again, and nothing comes back with it.
    done!(s.create_user(&user(&victim)));
    assert!(q!(s.user_orgs(&victim)).is_empty());
    assert!(q!(s.user_teams(&o, &victim)).is_empty());
    assert!(q!(s.tokens(&victim)).is_empty());
}

pub async fn delete_org_cascade(s: &dyn MetaStore) {
    let owner = uniq("ow");
    let m = uniq("mb");
    done!(s.create_user(&user(&owner)));
    done!(s.create_user(&user(&m)));
    let o = uniq("do");
    let keep = uniq("do");
    done!(s.create_org(&org(&o), &owner));
    done!(s.create_org(&org(&keep), &owner));
    done!(s.set_org_member(&o, &m, OrgRole::Member));
    done!(s.set_org_member(&keep, &m, OrgRole::Member));
    done!(s.create_team(&team(&o, "t"), Some(&owner)));
    done!(s.create_team(&team(&keep, "t"), Some(&owner)));
    done!(s.set_team_member(&o, "t", &m, TeamRole::Member));
    done!(s.set_team_member(&keep, "t", &m, TeamRole::Member));
    let r = repo(&format!("{o}/app"));
    done!(s.create_repo(&repository(&r)));
    done!(s.set_team_repo(&o, "t", &r, Permit::Write));

    done!(s.delete_org(&o));
    assert_eq!(q!(s.org(&o)), None);
    assert_eq!(q!(s.namespace_kind(&o)), None);
    assert!(q!(s.org_members(&o)).is_empty());
    assert_eq!(q!(s.org_role(&o, &owner)), None);
    assert_eq!(q!(s.user_orgs(&m)), vec![(keep.clone(), OrgRole::Member)]);
    assert!(q!(s.teams(&o)).is_empty());
    assert_eq!(q!(s.team(&o, "t")), None);
    assert!(q!(s.team_members(&o, "t")).is_empty());
    assert!(q!(s.user_teams(&o, &m)).is_empty());
    assert!(q!(s.team_repos(&o, "t")).is_empty());
    assert!(q!(s.team_permits(&m, &r)).is_empty());
    assert!(
        q!(s.repo(&r)).is_some(),
        "repositories in the namespace stay"
    );
    assert_eq!(q!(s.team_role(&keep, "t", &m)), Some(TeamRole::Member));
    refused!(Missing, s.delete_org(&o));

    // The name is free for a user, then for an organisation again, which
    // starts with nothing but its creator.
    done!(s.create_user(&user(&o)));
    assert_eq!(q!(s.namespace_kind(&o)), Some(NamespaceKind::User));
    done!(s.delete_user(&o));
    done!(s.create_org(&org(&o), &m));
    assert_eq!(q!(s.org_members(&o)), vec![(m.clone(), OrgRole::Admin)]);
    assert!(q!(s.teams(&o)).is_empty());
    assert!(q!(s.team_permits(&m, &r)).is_empty());
}

pub async fn tokens(s: &dyn MetaStore) {
    let u = uniq("tk");
    let other = uniq("tk");
    done!(s.create_user(&user(&u)));
    done!(s.create_user(&user(&other)));
    let t1 = ApiToken {
        scopes: vec![
            "repository:a/*:pull".into(),
            "repository:b:pull,push".into(),
            "ünïcødé \"quoted\" \\".into(),
        ],
        expires_at: Some(4_000_000_000),
        ..token(&u, 200)
    };
    let t2 = ApiToken {
        scopes: Vec::new(),
        ..token(&u, 100)
    };
    let t3 = token(&other, 150);
    done!(s.create_token(&t1));
    done!(s.create_token(&t2));
    done!(s.create_token(&t3));
    assert_eq!(q!(s.token(&t1.id)), Some(t1.clone()));
    assert_eq!(q!(s.token(&t2.id)), Some(t2.clone()));
    assert_eq!(q!(s.token(&uniq("tok"))), None);
    assert_eq!(q!(s.token(&t1.id.to_uppercase())), None);
    assert_eq!(
        q!(s.tokens(&u)),
        vec![t2.clone(), t1.clone()],
        "oldest first"
    );
    assert!(q!(s.tokens(&uniq("nobody"))).is_empty());

    refused!(Missing, s.create_token(&token(&uniq("nobody"), 1)));
    refused!(
        Exists,
        s.create_token(&ApiToken {
            user: other.clone(),
            ..t1.clone()
        })
    );
    assert_eq!(q!(s.token(&t1.id)), Some(t1.clone()));

    refused!(Missing, s.delete_token(&other, &t1.id));
    assert!(q!(s.token(&t1.id)).is_some(), "deleted by another user");
    done!(s.delete_token(&u, &t1.id));
    refused!(Missing, s.delete_token(&u, &t1.id));
    assert_eq!(q!(s.token(&t1.id)), None);
    assert_eq!(q!(s.tokens(&u)), vec![t2.clone()]);
    assert_eq!(q!(s.tokens(&other)), vec![t3]);
}

// ---------------------------------------------------------------- audit

fn event(actor: &str, at: i64, action: &str, repo: Option<&str>) -> AuditEvent {
    AuditEvent {
        at,
        actor: actor.to_string(),
        action: action.to_string(),
        repo: repo.map(str::to_string),
        target: Some(format!("sha256:{at:064x}")),
        detail: None,
        addr: Some("192.0.2.1".into()),
        count: 1,
    }
}

/// Events come back newest (highest id) first, filtered and paged.
pub async fn audit_query(s: &dyn MetaStore) {
    let actor = uniq("ac");
    let r1 = format!("{actor}/one");
    let r2 = format!("{actor}/two");
    let base = 1_700_000_000;
    let mut first = vec![
        event(&actor, base, "login", None),
        event(&actor, base + 10, "push", Some(&r1)),
        event(&actor, base + 10, "pull", Some(&r1)),
        event(&actor, base + 20, "pull", Some(&r2)),
        event(&actor, base + 30, "delete", Some(&r1)),
    ];
    first[1].count = 1 << 40;
    first[2].detail = Some("Ünïcødé 🚢 detail".into());
    first[3].target = None;
    first[3].addr = None;
    first[4].addr = Some("2001:db8::1".into());
    q!(s.append_audit(&first));
    q!(s.append_audit(&[]));
    // Older timestamps appended later still come first: order is by id.
    let second = vec![
        event(&actor, base + 5, "pull", Some(&r2)),
        event(&actor, base + 40, "user.create", None),
    ];
    q!(s.append_audit(&second));
    // Noise: another actor differing only in case.
    q!(s.append_audit(&[event(&actor.to_uppercase(), base + 10, "pull", Some(&r1))]));

    let all: Vec<AuditEvent> = first.iter().chain(second.iter()).rev().cloned().collect();
    let query = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            actor: Some(actor.clone()),
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let got = q!(s.query_audit(&query(&|_| {})));
    let ids: Vec<i64> = got.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "ids not strictly decreasing: {ids:?}"
    );
    let events: Vec<AuditEvent> = got.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(events, all, "newest first, every field as appended");

    let matching = |f: &dyn Fn(&AuditEvent) -> bool| -> Vec<AuditEvent> {
        all.iter().filter(|e| f(e)).cloned().collect()
    };
    let events_of = |q: AuditQuery| async move {
        q!(s.query_audit(&q))
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        events_of(query(&|q| q.repo = Some(r1.clone()))).await,
        matching(&|e| e.repo.as_deref() == Some(&r1))
    );
    assert_eq!(
        events_of(query(&|q| q.action = Some("pull".into()))).await,
        matching(&|e| e.action == "pull")
    );
    assert_eq!(
        events_of(query(&|q| {
            q.since = Some(base + 10);
            q.until = Some(base + 20);
        }))
        .await,
        matching(&|e| (base + 10..=base + 20).contains(&e.at)),
        "since and until are inclusive"
    );
    assert_eq!(
        events_of(query(&|q| {
            q.repo = Some(r2.clone());
            q.action = Some("pull".into());
            q.since = Some(base + 6);
        }))
        .await,
        matching(&|e| e.repo.as_deref() == Some(&r2) && e.at >= base + 6)
    );
    // Without an actor: filters alone.
    let by_repo = events_of(AuditQuery {
        repo: Some(r1.clone()),
        action: Some("pull".into()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(by_repo.len(), 2, "both actors' pulls of r1");
    assert_eq!(events_of(query(&|q| q.limit = 2)).await, all[..2]);

    // Paging by before_id.
    let mut paged: Vec<(i64, AuditEvent)> = Vec::new();
    loop {
        let before_id = paged.last().map(|(id, _)| *id);
        let page = q!(s.query_audit(&query(&|q| {
            q.limit = 3;
            q.before_id = before_id;
        })));
        assert!(page.len() <= 3);
        let n = page.len();
        paged.extend(page);
        if n < 3 {
            break;
        }
    }
    assert_eq!(paged, got);
    let before_id = got[2].0;
    assert_eq!(
        q!(s.query_audit(&query(&|q| q.before_id = Some(before_id)))),
        got[3..]
    );
}

/// `prune_audit` deletes events older than its bound, and only those.
pub async fn audit_prune(s: &dyn MetaStore) {
    let actor = uniq("ap");
    // Far in the past, where no other check writes.
    let base = 1_000 + (uuid::Uuid::new_v4().as_u128() % 1_000_000) as i64 * 10;
    let events: Vec<AuditEvent> = (0..4)
        .map(|i| event(&actor, base + i, "pull", None))
        .collect();
    q!(s.append_audit(&events));
    let n = q!(s.prune_audit(base + 2));
    assert!(n >= 2, "prune_audit reported {n}, expected at least 2");
    let left: Vec<i64> = q!(s.query_audit(&AuditQuery {
        actor: Some(actor.clone()),
        limit: 10,
        ..Default::default()
    }))
    .into_iter()
    .map(|(_, e)| e.at)
    .collect();
    assert_eq!(left, vec![base + 3, base + 2]);
    assert_eq!(q!(s.prune_audit(base + 2)), 0, "nothing left to prune");
}

// ---------------------------------------------------------------- concurrency

const RACERS: usize = 8;

fn count_kinds(results: &[Change]) -> (usize, usize, Vec<&'static str>) {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let exists = results
        .iter()
        .filter(|r| matches!(r, Err(Refusal::Exists(_))))
        .count();
    (ok, exists, results.iter().map(kind).collect())
}

/// Racing creations of one name: one winner, the others `Exists`.
pub async fn concurrent_names(s: &dyn MetaStore) {
    let name = uniq("cu");
    let u = user(&name);
    let results: Vec<Change> = join_all((0..RACERS).map(|_| s.create_user(&u)))
        .await
        .into_iter()
        .map(|r| r.expect("create_user failed under contention"))
        .collect();
    let (ok, exists, kinds) = count_kinds(&results);
    assert_eq!((ok, exists), (1, RACERS - 1), "create_user race: {kinds:?}");

    // Users and organisations share names.
    let owner = uniq("ow");
    done!(s.create_user(&user(&owner)));
    let name = uniq("cx");
    let u = user(&name);
    let o = org(&name);
    let results: Vec<Change> = join_all((0..RACERS).map(|i| {
        let (u, o, owner) = (&u, &o, &owner);
        async move {
            if i % 2 == 0 {
                s.create_user(u).await
            } else {
                s.create_org(o, owner).await
            }
        }
    }))
    .await
    .into_iter()
    .map(|r| r.expect("create_user/create_org failed under contention"))
    .collect();
    let (ok, exists, kinds) = count_kinds(&results);
    assert_eq!(
        (ok, exists),
        (1, RACERS - 1),
        "create_user/create_org race: {kinds:?}"
    );
    let winner = results.iter().position(|r| r.is_ok()).unwrap();
    let want = if winner % 2 == 0 {
        NamespaceKind::User
    } else {
        NamespaceKind::Organization
    };
    assert_eq!(q!(s.namespace_kind(&name)), Some(want));
    assert_eq!(q!(s.user(&name)).is_some(), want == NamespaceKind::User);
    assert_eq!(
        q!(s.org(&name)).is_some(),
        want == NamespaceKind::Organization
    );

    // Teams, repositories and tokens.
    let o = uniq("ct");
    done!(s.create_org(&org(&o), &owner));
    let t = team(&o, "t");
    let results: Vec<Change> = join_all((0..RACERS).map(|_| s.create_team(&t, Some(&owner))))
        .await
        .into_iter()
        .map(|r| r.expect("create_team failed under contention"))
        .collect();
    let (ok, exists, kinds) = count_kinds(&results);
    assert_eq!((ok, exists), (1, RACERS - 1), "create_team race: {kinds:?}");
    assert_eq!(
        q!(s.team_members(&o, "t")),
        vec![(owner.clone(), TeamRole::Admin)]
    );

    let r = repo(&format!("{o}/app"));
    let rr = repository(&r);
    let results: Vec<Change> = join_all((0..RACERS).map(|_| s.create_repo(&rr)))
        .await
        .into_iter()
        .map(|r| r.expect("create_repo failed under contention"))
        .collect();
    let (ok, exists, kinds) = count_kinds(&results);
    assert_eq!((ok, exists), (1, RACERS - 1), "create_repo race: {kinds:?}");

    let tok = token(&owner, 1);
    let results: Vec<Change> = join_all((0..RACERS).map(|_| s.create_token(&tok)))
        .await
        .into_iter()
        .map(|r| r.expect("create_token failed under contention"))
        .collect();
    let (ok, exists, kinds) = count_kinds(&results);
    assert_eq!(
        (ok, exists),
        (1, RACERS - 1),
        "create_token race: {kinds:?}"
    );
}

/// Racing membership changes all succeed and leave one membership.
pub async fn concurrent_memberships(s: &dyn MetaStore) {
    let owner = uniq("ow");
    let m = uniq("mb");
    done!(s.create_user(&user(&owner)));
    done!(s.create_user(&user(&m)));
    let o = uniq("cm");
    done!(s.create_org(&org(&o), &owner));

    let roles = [OrgRole::Member, OrgRole::Admin];
    let results = join_all((0..RACERS).map(|i| s.set_org_member(&o, &m, roles[i % 2]))).await;
    for r in results {
        assert_eq!(r.expect("set_org_member failed under contention"), Ok(()));
    }
    let members = q!(s.org_members(&o));
    assert_eq!(members.len(), 2, "{members:?}");
    assert!(members.iter().any(|(u, _)| u == &m));

    // Many members joining at once.
    let many: Vec<String> = (0..RACERS).map(|_| uniq("mm")).collect();
    for u in &many {
        done!(s.create_user(&user(u)));
    }
    let results = join_all(
        many.iter()
            .map(|u| s.set_org_member(&o, u, OrgRole::Member)),
    )
    .await;
    for r in results {
        assert_eq!(r.expect("set_org_member failed under contention"), Ok(()));
    }
    assert_eq!(q!(s.org_members(&o)).len(), 2 + RACERS);

    done!(s.create_team(&team(&o, "t"), None));
    let troles = [TeamRole::Member, TeamRole::Admin];
    let results =
        join_all((0..RACERS).map(|i| s.set_team_member(&o, "t", &m, troles[i % 2]))).await;
    for r in results {
        assert_eq!(r.expect("set_team_member failed under contention"), Ok(()));
    }
    assert_eq!(q!(s.team_members(&o, "t")).len(), 1);

    // Racing removals: one succeeds.
    let results: Vec<Change> = join_all((0..RACERS).map(|_| s.remove_org_member(&o, &m)))
        .await
        .into_iter()
        .map(|r| r.expect("remove_org_member failed under contention"))
        .collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        ok,
        1,
        "remove_org_member race: {:?}",
        results.iter().map(kind).collect::<Vec<_>>()
    );
    assert!(q!(s.team_members(&o, "t")).is_empty());
}

/// Racing pushes: every one succeeds; a tag ends on one of the manifests.
pub async fn concurrent_content(s: &dyn MetaStore) {
    // Links racing to create one repository.
    let r = repo(&uniq("cc"));
    let b = rand_digest();
    let results = join_all((0..RACERS).map(|_| s.link_blob(&r, &b, 77))).await;
    for x in results {
        x.expect("link_blob failed under contention");
    }
    assert_eq!(q!(s.repo_blob(&r, &b)), Some(77));

    // Distinct manifests racing for one tag.
    let ms: Vec<ManifestRecord> = (0..RACERS)
        .map(|i| manifest(format!("racer {i} {}", uniq("")), &[&b], &[]))
        .collect();
    let latest = tag("latest");
    let results = join_all(ms.iter().map(|m| s.put_manifest(&r, m, Some(&latest)))).await;
    for x in results {
        assert_eq!(
            x.expect("put_manifest failed under contention"),
            MissingRefs::default()
        );
    }
    let (d, _, body) = q!(s.manifest_by_tag(&r, &latest)).expect("tag set");
    let winner = ms
        .iter()
        .find(|m| m.digest == d)
        .expect("tag names a racer");
    assert_eq!(body, winner.body);
    assert_eq!(q!(s.list_tags(&r, None, 10)), vec!["latest".to_string()]);
    for m in &ms {
        assert!(q!(s.manifest_by_digest(&r, &m.digest)).is_some());
    }

    // One manifest put by all, on a repository that does not exist yet.
    let fresh = repo(&uniq("cc"));
    let m = plain_manifest();
    let t = tag("same");
    let results = join_all((0..RACERS).map(|_| s.put_manifest(&fresh, &m, Some(&t)))).await;
    for x in results {
        assert_eq!(
            x.expect("put_manifest failed under contention"),
            MissingRefs::default()
        );
    }
    assert_eq!(q!(s.manifest_by_tag(&fresh, &t)).unwrap().0, m.digest);

    // Racing deletes of one manifest: one wins.
    let results = join_all((0..RACERS).map(|_| s.delete_manifest(&r, &ms[0].digest))).await;
    let wins = results
        .into_iter()
        .map(|x| x.expect("delete_manifest failed under contention"))
        .filter(|x| *x)
        .count();
    assert_eq!(wins, 1);
}

/// Deletions racing with writes under what they delete: whichever wins,
/// nothing is left behind that the deleted object owned.
pub async fn concurrent_deletes(s: &dyn MetaStore) {
    // A repository deleted while pushes go on, the deletion starting at
    // different moments of the pushes.
    for delay_us in [0, 300, 600, 900, 1200, 1600, 2000, 2500, 3000, 4000] {
        repo_deleted_during_pushes(s, delay_us).await;
    }

    // An organisation deleted while members join and teams are made.
    let owner = uniq("ow");
    done!(s.create_user(&user(&owner)));
    let members: Vec<String> = (0..RACERS).map(|_| uniq("mb")).collect();
    for m in &members {
        done!(s.create_user(&user(m)));
    }
    let o = uniq("cd");
    done!(s.create_org(&org(&o), &owner));
    let team_names: Vec<String> = (0..RACERS).map(|i| format!("t{i}")).collect();
    let joins = join_all(members.iter().zip(&team_names).map(|(m, t)| {
        let (o, owner) = (&o, &owner);
        async move {
            let a = s.set_org_member(o, m, OrgRole::Member).await?;
            let b = s.create_team(&team(o, t), Some(owner)).await?;
            Ok::<_, super::MetaError>((a, b))
        }
    }));
    let (deleted, joined) = futures_util::join!(s.delete_org(&o), joins);
    assert!(matches!(deleted, Ok(Ok(()))), "delete_org: {deleted:?}");
    for j in joined {
        let (a, b) = j.expect("membership change failed while the organisation was deleted");
        for c in [a, b] {
            assert!(
                matches!(c, Ok(()) | Err(Refusal::Missing(_))),
                "expected done or Missing, got {c:?}"
            );
        }
    }
    if q!(s.org(&o)).is_none() {
        assert!(
            q!(s.org_members(&o)).is_empty(),
            "members left in a deleted organisation"
        );
        assert!(
            q!(s.teams(&o)).is_empty(),
            "teams left in a deleted organisation"
        );
        for m in &members {
            assert!(q!(s.user_orgs(m)).is_empty());
        }
    }

    // A user deleted while joining an organisation and making tokens.
    let victim = uniq("vi");
    done!(s.create_user(&user(&victim)));
    let o = uniq("cd");
    done!(s.create_org(&org(&o), &owner));
    let toks: Vec<ApiToken> = (0..RACERS as i64).map(|i| token(&victim, i)).collect();
    let writes = join_all(toks.iter().map(|tok| {
        let (o, victim) = (&o, &victim);
        async move {
            let a = s.set_org_member(o, victim, OrgRole::Member).await?;
            let b = s.create_token(tok).await?;
            Ok::<_, super::MetaError>((a, b))
        }
    }));
    let (deleted, written) = futures_util::join!(s.delete_user(&victim), writes);
    assert!(matches!(deleted, Ok(Ok(()))), "delete_user: {deleted:?}");
    for w in written {
        let (a, b) = w.expect("change failed while the user was deleted");
        for c in [a, b] {
            assert!(
                matches!(c, Ok(()) | Err(Refusal::Missing(_))),
                "expected done or Missing, got {c:?}"
            );
        }
    }
    assert_eq!(q!(s.user(&victim)), None);
    assert!(
        q!(s.user_orgs(&victim)).is_empty(),
        "membership left by a deleted user"
    );
    assert_eq!(q!(s.org_members(&o)), vec![(owner.clone(), OrgRole::Admin)]);
    assert!(
        q!(s.tokens(&victim)).is_empty(),
        "tokens left by a deleted user"
    );
}

async fn repo_deleted_during_pushes(s: &dyn MetaStore, delay_us: u64) {
    let r = repo(&uniq("cd"));
    let b0 = rand_digest();
    q!(s.link_blob(&r, &b0, 1));
    put(
        s,
        &r,
        &manifest(format!("cd {}", uniq("")), &[&b0], &[]),
        Some("old"),
    )
    .await;
    let blobs: Vec<Digest> = (0..RACERS).map(|_| rand_digest()).collect();
    let ms: Vec<ManifestRecord> = blobs
        .iter()
        .map(|b| manifest(format!("cd {b}"), &[b], &[]))
        .collect();
    // Half the pushes only link a blob (so that nothing recreates the
    // repository after the deletion, leaving any stray link in sight).
    let pushes = join_all(blobs.iter().zip(&ms).enumerate().map(|(i, (b, m))| {
        let r = &r;
        async move {
            s.link_blob(r, b, 1).await?;
            if i % 2 == 1 {
                let t = tag(&format!("t{i}"));
                s.put_manifest(r, m, Some(&t)).await?;
            }
            Ok::<(), super::MetaError>(())
        }
    }));
    let delete = async {
        tokio::time::sleep(std::time::Duration::from_micros(delay_us)).await;
        s.delete_repo(&r).await
    };
    let (deleted, pushed) = futures_util::join!(delete, pushes);
    assert!(matches!(deleted, Ok(Ok(()))), "delete_repo: {deleted:?}");
    for p in pushed {
        p.expect("push failed while its repository was deleted");
    }
    let tags = q!(s.list_tags(&r, None, 100));
    let links: Vec<bool> = join_all(blobs.iter().map(|b| s.repo_blob(&r, b)))
        .await
        .into_iter()
        .map(|x| x.expect("repo_blob").is_some())
        .collect();
    if q!(s.repo_exists(&r)) {
        assert!(
            !tags.contains(&"old".to_string()),
            "a deleted tag came back"
        );
        for t in &tags {
            let (d, _, _) = q!(s.manifest_by_tag(&r, &tag(t))).expect("tag names a manifest");
            let i = ms
                .iter()
                .position(|m| m.digest == d)
                .expect("a pushed manifest");
            assert!(links[i], "{t} names a manifest whose blob is not linked");
        }
    } else {
        assert!(
            tags.is_empty(),
            "tags left in a deleted repository ({delay_us} us): {tags:?}"
        );
        assert!(
            !links.contains(&true),
            "links left in a deleted repository ({delay_us} us): {links:?}"
        );
        for m in &ms {
            assert_eq!(q!(s.manifest_by_digest(&r, &m.digest)), None);
        }
        assert_eq!(q!(s.repo_blob(&r, &b0)), None);
    }
}

// ---------------------------------------------------------------- backends

/// Fresh, empty databases on the test servers (`crate::testsupport`), one
/// per test run, created with a default collation that is not byte order so
/// that a schema relying on it fails.
mod aci;
use aci::{aci_blobs_in_use, aci_conversions, aci_images, aci_pubkeys};
mod legacy;
use legacy::{v1_conversions, v1_images, v1_repo_images, v1_search};

pub(crate) mod databases {
    use sea_orm::{ConnectionTrait, Database};

    use crate::testsupport::{self, Service};

    pub enum Server {
        MariaDb,
        Postgres,
    }

    /// Makes a statement for a database name.
    type Sql = fn(&str) -> String;

    pub struct FreshDb {
        /// Connect here.
        pub url: String,
        server_url: String,
        drop_sql: String,
    }

    impl FreshDb {
        /// Starts the server if needed (failing with the script's message
        /// if it cannot) and creates the database.
        pub async fn create(server: Server) -> FreshDb {
            let (server_url, create, drop_sql): (String, Sql, Sql) = match server {
                // The server's default collation is case-insensitive
                // (utf8mb4_general_ci); say so anyway.
                Server::MariaDb => (
                    testsupport::start(Service::MariaDb),
                    |n| {
                        format!(
                            "CREATE DATABASE {n} CHARACTER SET utf8mb4 \
                                 COLLATE utf8mb4_general_ci"
                        )
                    },
                    |n| format!("DROP DATABASE {n}"),
                ),
                // ICU en-US: "a" < "B", punctuation ignored at first.
                Server::Postgres => (
                    testsupport::start(Service::Postgres),
                    |n| {
                        format!(
                            "CREATE DATABASE {n} TEMPLATE template0 ENCODING 'UTF8' \
                                 LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                        )
                    },
                    |n| format!("DROP DATABASE {n} WITH (FORCE)"),
                ),
            };
            let name = super::uniq("dockyard_");
            let admin = Database::connect(&server_url)
                .await
                .unwrap_or_else(|e| panic!("connect to {server_url}: {e}"));
            admin
                .execute_unprepared(&create(&name))
                .await
                .unwrap_or_else(|e| panic!("create database {name}: {e}"));
            admin.close().await.ok();
            let (base, _) = server_url
                .rsplit_once('/')
                .expect("URL has a database path");
            FreshDb {
                url: format!("{base}/{name}"),
                server_url,
                drop_sql: drop_sql(&name),
            }
        }

        /// Drops the database (kept if a test failed before, to look at).
        pub async fn drop(self) {
            if let Ok(admin) = Database::connect(&self.server_url).await {
                admin.execute_unprepared(&self.drop_sql).await.ok();
                admin.close().await.ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::databases::{FreshDb, Server};
    use super::*;
    use crate::meta::sql::SqlMeta;

    /// Connections per store: enough for the races to really race.
    const POOL: u32 = 8;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("sqlite://{}?mode=rwc", dir.path().join("meta.db").display());
        let store = SqlMeta::open(&uri, POOL).await.expect("open SQLite");
        run_all(&store).await;
    }

    async fn on_server(server: Server) {
        let db = FreshDb::create(server).await;
        let store = SqlMeta::open(&db.url, POOL)
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", db.url));
        run_all(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb() {
        on_server(Server::MariaDb).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        on_server(Server::Postgres).await;
    }
}
