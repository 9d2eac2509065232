//! Tests of `RedisMeta` on a real Redis (`testsupport`), each under a fresh
//! key prefix: focused cases, a differential run against the SQL
//! implementation (SQLite) on random operations, races, and a check of
//! the internal indexes after all of them.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use super::RedisMeta;
use crate::meta::accounts::{
    AccountStore, ApiToken, MemberPrivilege, NamespaceKind, OrgRole, OrgUpdate, Organization,
    Permit, Refusal, Repository, SystemRole, Team, TeamRole, User, UserSource, UserUpdate,
};
use crate::meta::audit::{AuditEvent, AuditQuery, AuditStore};
use crate::meta::sql::SqlMeta;
use crate::meta::{ContentStore, ManifestRecord, MetaStore, MissingRefs};
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::name::{RepoName, Tag};
use crate::testsupport::{Service, start};

/// The test Redis, started once per test binary.
fn redis_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| start(Service::Redis))
}

/// A store on the test Redis under a prefix no other test uses.
async fn fresh() -> RedisMeta {
    let prefix = format!("dytest-{}", uuid::Uuid::new_v4().simple());
    RedisMeta::open(redis_url(), &prefix)
        .await
        .expect("open redis")
}

/// Another handle (own connection) on the same data as `m`.
async fn same_data(m: &RedisMeta) -> RedisMeta {
    RedisMeta::open(redis_url(), &m.prefix)
        .await
        .expect("open redis")
}

impl RedisMeta {
    /// Every key under the prefix (test only: scans).
    async fn all_keys(&self) -> Vec<String> {
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys
    }

    /// Removes everything under the prefix.
    async fn wipe(&self) {
        let keys = self.all_keys().await;
        for chunk in keys.chunks(500) {
            let _: i64 = self.query(redis::cmd("UNLINK").arg(chunk)).await.unwrap();
        }
    }

    async fn raw<T: redis::FromRedisValue>(&self, cmd: &str, args: &[&str]) -> T {
        let mut c = redis::cmd(cmd);
        for a in args {
            c.arg(*a);
        }
        self.query(&c).await.unwrap()
    }

    /// Checks that every reverse index mirrors its forward one and the
    /// reference counts match the stored references.
    async fn check_consistency(&self) {
        let p = format!("{}:", self.prefix);
        let keys = self.all_keys().await;
        let rel = |k: &str| k[p.len()..].to_string();
        let set: BTreeSet<String> = keys.iter().map(|k| rel(k)).collect();
        // Live repositories.
        let mut live = HashMap::new();
        for k in set.iter().filter(|k| k.starts_with("repo:")) {
            let name = &k["repo:".len()..];
            let id: String = self.raw("HGET", &[&self.key(k), "id"]).await;
            let ns: String = self.raw("HGET", &[&self.key(k), "ns"]).await;
            let score: Option<f64> = self.raw("ZSCORE", &[&self.key("repos"), name]).await;
            assert!(score.is_some(), "{name} not in the catalog");
            let score: Option<f64> = self
                .raw("ZSCORE", &[&self.key(&format!("ns:{ns}")), name])
                .await;
            assert!(score.is_some(), "{name} not in namespace {ns}");
            live.insert(id, name.to_string());
        }
        let catalog: Vec<String> = self.raw("ZRANGE", &[&self.key("repos"), "0", "-1"]).await;
        assert_eq!(catalog.len(), live.len(), "catalog has extra names");
        let trash: Vec<String> = self.raw("SMEMBERS", &[&self.key("trash")]).await;
        assert!(trash.is_empty(), "undrained repositories {trash:?}");
        // Content keys belong to live ids only.
        let mut refcount: HashMap<String, i64> = HashMap::new();
        let mut links: BTreeSet<(String, String)> = BTreeSet::new();
        for k in set.iter().filter(|k| k.starts_with("r:")) {
            let mut it = k.splitn(4, ':');
            let (_, id, word) = (it.next(), it.next().unwrap(), it.next().unwrap());
            assert!(live.contains_key(id), "key {k} of a dead repository");
            let rk = |w: &str| self.key(&format!("r:{id}:{w}"));
            match word {
                "mref" => {
                    let d = it.next().unwrap();
                    let ms: bool = self.raw("SISMEMBER", &[&rk("manifests"), d]).await;
                    assert!(ms, "{k} of an absent manifest");
                    let targets: Vec<String> = self.raw("SMEMBERS", &[&self.key(k)]).await;
                    for t in targets {
                        *refcount.entry(t).or_default() += 1;
                    }
                }
                "m" | "mtags" => {
                    let d = it.next().unwrap();
                    let ms: bool = self.raw("SISMEMBER", &[&rk("manifests"), d]).await;
                    assert!(ms, "{k} of an absent manifest");
                    if word == "mtags" {
                        let tags: Vec<String> = self.raw("SMEMBERS", &[&self.key(k)]).await;
                        for t in tags {
                            let to: Option<String> = self.raw("HGET", &[&rk("tag"), &t]).await;
                            assert_eq!(to.as_deref(), Some(d), "{k}: tag {t}");
                        }
                    }
                }
                "tag" => {
                    let tags: HashMap<String, String> = self.raw("HGETALL", &[&self.key(k)]).await;
                    let zs: Vec<String> = self.raw("ZRANGE", &[&rk("tags"), "0", "-1"]).await;
                    assert_eq!(
                        zs.iter().cloned().collect::<BTreeSet<_>>(),
                        tags.keys().cloned().collect::<BTreeSet<_>>(),
                        "{k}: tag list"
                    );
                    for (t, d) in tags {
                        let ms: bool = self.raw("SISMEMBER", &[&rk("manifests"), &d]).await;
                        assert!(ms, "tag {t} of {k} names absent manifest {d}");
                        let back: bool = self
                            .raw("SISMEMBER", &[&rk(&format!("mtags:{d}")), &t])
                            .await;
                        assert!(back, "tag {t} missing from mtags:{d}");
                    }
                }
                "blobs" => {
                    let bl: HashMap<String, String> = self.raw("HGETALL", &[&self.key(k)]).await;
                    for (d, at) in bl {
                        let back: Option<String> = self
                            .raw("HGET", &[&self.key(&format!("blob_links:{d}")), id])
                            .await;
                        assert_eq!(back, Some(at), "blob_links:{d} for {id}");
                        assert!(
                            set.contains(&format!("blob:{d}")),
                            "link to unknown blob {d}"
                        );
                        links.insert((d, id.to_string()));
                    }
                }
                "ref" | "reft" => {
                    let ds: Vec<String> = self.raw("ZRANGE", &[&self.key(k), "0", "-1"]).await;
                    for d in ds {
                        let ms: bool = self.raw("SISMEMBER", &[&rk("manifests"), &d]).await;
                        assert!(ms, "{k} names absent manifest {d}");
                    }
                }
                "manifests" | "tags" => {}
                other => panic!("unexpected repository key {k} ({other})"),
            }
        }
        let stored: HashMap<String, i64> = self.raw("HGETALL", &[&self.key("refs")]).await;
        assert_eq!(stored, refcount, "reference counts");
        for k in set.iter().filter(|k| k.starts_with("blob_links:")) {
            let d = &k["blob_links:".len()..];
            let ids: Vec<String> = self.raw("HKEYS", &[&self.key(k)]).await;
            for id in ids {
                assert!(
                    links.contains(&(d.to_string(), id.clone())),
                    "stale {k} {id}"
                );
            }
        }
        let blobs: Vec<String> = self.raw("ZRANGE", &[&self.key("blobs"), "0", "-1"]).await;
        let blob_keys: Vec<String> = set
            .iter()
            .filter_map(|k| k.strip_prefix("blob:").map(str::to_string))
            .collect();
        assert_eq!(blobs, blob_keys, "blob index");
        // Accounts: every reverse index mirrors its forward one.
        async fn pairs(
            m: &RedisMeta,
            prefix: &str,
            set: &BTreeSet<String>,
        ) -> BTreeSet<(String, String, String)> {
            let mut out = BTreeSet::new();
            for k in set.iter().filter(|k| k.starts_with(prefix)) {
                let owner = &k[prefix.len()..];
                let h: HashMap<String, String> = m.raw("HGETALL", &[&m.key(k)]).await;
                for (f, v) in h {
                    out.insert((owner.to_string(), f, v));
                }
            }
            out
        }
        let om = pairs(self, "org_members:", &set).await;
        let uo: BTreeSet<_> = pairs(self, "user_orgs:", &set)
            .await
            .into_iter()
            .map(|(u, o, r)| (o, u, r))
            .collect();
        assert_eq!(om, uo, "org members");
        for (o, u, _) in &om {
            assert!(
                set.contains(&format!("org:{o}")),
                "member of unknown org {o}"
            );
            assert!(
                set.contains(&format!("user:{u}")),
                "unknown user {u} in {o}"
            );
        }
        let split = |s: &str| {
            let (a, b) = s.split_once(':').unwrap();
            (a.replace("%3A", ":").replace("%25", "%"), b.to_string())
        };
        let tm: BTreeSet<_> = pairs(self, "team_members:", &set)
            .await
            .into_iter()
            .map(|(ot, u, r)| {
                let (o, t) = split(&ot);
                (o, t, u, r)
            })
            .collect();
        let ut: BTreeSet<_> = pairs(self, "user_teams:", &set)
            .await
            .into_iter()
            .map(|(ou, t, r)| {
                let (o, u) = split(&ou);
                (o, t, u, r)
            })
            .collect();
        assert_eq!(tm, ut, "team members");
        for (o, t, u, _) in &tm {
            let team: bool = self
                .raw("HEXISTS", &[&self.key(&format!("teams:{o}")), t])
                .await;
            assert!(team, "member of unknown team {o}/{t}");
            assert!(
                om.iter().any(|(oo, uu, _)| oo == o && uu == u),
                "{u} in {o}/{t} but not in {o}"
            );
        }
        let tr: BTreeSet<_> = pairs(self, "team_repos:", &set).await.into_iter().collect();
        let rp: BTreeSet<_> = pairs(self, "repo_permits:", &set)
            .await
            .into_iter()
            .map(|(r, ot, p)| (ot, r, p))
            .collect();
        assert_eq!(tr, rp, "team permits");
        for (ot, r, _) in &tr {
            let (o, t) = split(ot);
            let team: bool = self
                .raw("HEXISTS", &[&self.key(&format!("teams:{o}")), &t])
                .await;
            assert!(team, "permit of unknown team {o}/{t}");
            assert!(
                set.contains(&format!("repo:{r}")),
                "permit on unknown repository {r}"
            );
        }
        for k in set.iter().filter(|k| k.starts_with("teams:")) {
            assert!(
                set.contains(&format!("org:{}", &k["teams:".len()..])),
                "{k} of unknown org"
            );
        }
        // Tokens.
        let ut = pairs(self, "user_tokens:", &set).await;
        let tokens: BTreeSet<String> = set
            .iter()
            .filter_map(|k| k.strip_prefix("token:").map(str::to_string))
            .collect();
        assert_eq!(
            ut.iter()
                .map(|(_, id, _)| id.clone())
                .collect::<BTreeSet<_>>(),
            tokens,
            "token index"
        );
        for (u, id, _) in &ut {
            assert!(
                set.contains(&format!("user:{u}")),
                "token {id} of unknown user {u}"
            );
            let owner: String = self
                .raw("HGET", &[&self.key(&format!("token:{id}")), "user"])
                .await;
            assert_eq!(&owner, u);
        }
        // Users, orgs and admins.
        let users: Vec<String> = self.raw("ZRANGE", &[&self.key("users"), "0", "-1"]).await;
        let user_keys: Vec<String> = set
            .iter()
            .filter_map(|k| k.strip_prefix("user:").map(str::to_string))
            .collect();
        assert_eq!(users, user_keys, "user index");
        let orgs: Vec<String> = self.raw("ZRANGE", &[&self.key("orgs"), "0", "-1"]).await;
        let org_keys: Vec<String> = set
            .iter()
            .filter_map(|k| k.strip_prefix("org:").map(str::to_string))
            .collect();
        assert_eq!(orgs, org_keys, "org index");
        for o in &orgs {
            assert!(!users.contains(o), "{o} is both a user and an org");
        }
        let admins: Vec<String> = self.raw("SMEMBERS", &[&self.key("admins")]).await;
        for a in admins {
            let role: String = self
                .raw("HGET", &[&self.key(&format!("user:{a}")), "role"])
                .await;
            assert_eq!(role, "1", "{a} in admins");
        }
    }
}

fn digest(s: &str) -> Digest {
    Digest::of(Algorithm::Sha256, s.as_bytes())
}

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

fn manifest(name: &str, blobs: &[&Digest], manifests: &[&Digest]) -> ManifestRecord {
    let body = format!("{{\"name\":{name:?},\"blobs\":{blobs:?},\"manifests\":{manifests:?}}}");
    ManifestRecord {
        digest: digest(&body),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        body: Bytes::from(body),
        subject: None,
        artifact_type: None,
        annotations: None,
        blob_refs: blobs.iter().map(|d| (*d).clone()).collect(),
        manifest_refs: manifests.iter().map(|d| (*d).clone()).collect(),
    }
}

fn user(name: &str, role: SystemRole) -> User {
    User {
        name: name.into(),
        email: Some(format!("{name}@example.test")),
        password_hash: "$argon2id$x".into(),
        realname: None,
        comment: None,
        role,
        source: UserSource::Db,
        created_at: 10,
        updated_at: 10,
    }
}

fn org(name: &str) -> Organization {
    Organization {
        name: name.into(),
        email: None,
        comment: Some("an org".into()),
        url: None,
        location: None,
        member_privilege: MemberPrivilege::Read,
        created_at: 20,
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test]
async fn content_round_trip() {
    let m = fresh().await;
    let r = repo("acme/app");
    let (b1, b2) = (digest("layer1"), digest("layer2"));
    assert!(!m.repo_exists(&r).await.unwrap());
    m.link_blob(&r, &b1, 11).await.unwrap();
    assert!(m.repo_exists(&r).await.unwrap());
    assert_eq!(m.repo_blob(&r, &b1).await.unwrap(), Some(11));
    assert_eq!(m.repo_blob(&repo("other"), &b1).await.unwrap(), None);
    assert_eq!(m.blob_size(&b1).await.unwrap(), Some(11));
    assert_eq!(m.blob_size(&b2).await.unwrap(), None);
    let rec = m.repo(&r).await.unwrap().unwrap();
    assert_eq!((rec.namespace.as_str(), rec.is_public), ("acme", false));

    // A missing reference: nothing changes, not even the repository.
    let img = manifest("img", &[&b1, &b2], &[]);
    let r2 = repo("acme/other");
    let miss = m.put_manifest(&r2, &img, Some(&tag("v1"))).await.unwrap();
    assert_eq!(miss.blobs, vec![b1.clone(), b2.clone()]);
    assert!(!m.repo_exists(&r2).await.unwrap());
    let miss = m.put_manifest(&r, &img, Some(&tag("v1"))).await.unwrap();
    assert_eq!(
        miss,
        MissingRefs {
            blobs: vec![b2.clone()],
            manifests: vec![]
        }
    );
    assert!(
        m.manifest_by_digest(&r, &img.digest)
            .await
            .unwrap()
            .is_none()
    );

    m.link_blob(&r, &b2, 22).await.unwrap();
    assert!(
        m.put_manifest(&r, &img, Some(&tag("v1")))
            .await
            .unwrap()
            .is_empty()
    );
    let (mt, body) = m
        .manifest_by_digest(&r, &img.digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((mt.as_str(), &body), (img.media_type.as_str(), &img.body));
    let (d, _, body) = m.manifest_by_tag(&r, &tag("v1")).await.unwrap().unwrap();
    assert_eq!((&d, &body), (&img.digest, &img.body));
    assert!(m.manifest_by_tag(&r, &tag("v2")).await.unwrap().is_none());

    // An index naming a manifest that is absent, then present.
    let other = manifest("other", &[&b1], &[]);
    let index = manifest("index", &[], &[&img.digest, &other.digest]);
    let miss = m.put_manifest(&r, &index, None).await.unwrap();
    assert_eq!(miss.manifests, vec![other.digest.clone()]);
    assert!(
        m.put_manifest(&r, &other, Some(&tag("v2")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        m.put_manifest(&r, &index, Some(&tag("latest")))
            .await
            .unwrap()
            .is_empty()
    );
    // Idempotent.
    assert!(
        m.put_manifest(&r, &index, Some(&tag("latest")))
            .await
            .unwrap()
            .is_empty()
    );

    // Tags: byte order, paging, moving, deleting.
    for t in ["a", "B", "z", "v1.1", "_x"] {
        assert!(
            m.put_manifest(&r, &img, Some(&tag(t)))
                .await
                .unwrap()
                .is_empty()
        );
    }
    let all = m.list_tags(&r, None, 100).await.unwrap();
    assert_eq!(all, ["B", "_x", "a", "latest", "v1", "v1.1", "v2", "z"]);
    assert_eq!(
        m.list_tags(&r, Some("a"), 2).await.unwrap(),
        ["latest", "v1"]
    );
    assert_eq!(
        m.list_tags(&r, Some("zz"), 2).await.unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(m.list_tags(&r, Some(""), 1).await.unwrap(), ["B"]);
    assert!(m.list_tags(&r, None, 0).await.unwrap().is_empty());
    assert!(
        m.list_tags(&repo("nope"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Move v2 from `other` to `img`.
    assert!(
        m.put_manifest(&r, &img, Some(&tag("v2")))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        m.manifest_by_tag(&r, &tag("v2")).await.unwrap().unwrap().0,
        img.digest
    );
    assert!(m.delete_tag(&r, &tag("z")).await.unwrap());
    assert!(!m.delete_tag(&r, &tag("z")).await.unwrap());
    // Deleting a manifest deletes the tags pointing at it, no others.
    assert!(m.delete_manifest(&r, &img.digest).await.unwrap());
    assert!(!m.delete_manifest(&r, &img.digest).await.unwrap());
    assert_eq!(m.list_tags(&r, None, 100).await.unwrap(), ["latest"]);
    assert!(m.manifest_by_tag(&r, &tag("v1")).await.unwrap().is_none());

    // Catalog.
    for name in ["b/x", "a", "a/b", "a-b"] {
        m.link_blob(&repo(name), &b1, 11).await.unwrap();
    }
    let all = m.list_repos(None, 100).await.unwrap();
    assert_eq!(all, ["a", "a-b", "a/b", "acme/app", "b/x"]);
    assert_eq!(
        m.list_repos(Some("a-b"), 2).await.unwrap(),
        ["a/b", "acme/app"]
    );

    // Unlinking.
    assert!(m.unlink_blob(&r, &b2).await.unwrap());
    assert!(!m.unlink_blob(&r, &b2).await.unwrap());
    assert_eq!(m.repo_blob(&r, &b2).await.unwrap(), None);
    assert_eq!(m.blob_size(&b2).await.unwrap(), Some(22));
    m.check_consistency().await;
    m.wipe().await;
}

#[tokio::test]
async fn referrers_by_subject_and_type() {
    let m = fresh().await;
    let r = repo("acme/app");
    let b = digest("cfg");
    m.link_blob(&r, &b, 3).await.unwrap();
    let subject = manifest("subject", &[&b], &[]);
    assert!(m.put_manifest(&r, &subject, None).await.unwrap().is_empty());
    let mut refs = Vec::new();
    for (i, at) in [Some("a/sig"), Some("a/sbom"), None, Some("a/sig"), Some("")]
        .into_iter()
        .enumerate()
    {
        let mut x = manifest(&format!("ref{i}"), &[&b], &[]);
        x.subject = Some(subject.digest.clone());
        x.artifact_type = at.map(str::to_string);
        x.annotations = (i == 0).then(|| "{\"k\":\"v\"}".to_string());
        assert!(m.put_manifest(&r, &x, None).await.unwrap().is_empty());
        refs.push(x);
    }
    let mut sorted: Vec<_> = refs.iter().map(|x| x.digest.clone()).collect();
    sorted.sort();
    let got = m
        .referrers(&r, &subject.digest, None, None, 100)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(),
        sorted
    );
    let first = got.iter().find(|x| x.digest == refs[0].digest).unwrap();
    assert_eq!(first.size, refs[0].body.len() as u64);
    assert_eq!(first.artifact_type.as_deref(), Some("a/sig"));
    assert_eq!(first.annotations.as_deref(), Some("{\"k\":\"v\"}"));
    let page = m
        .referrers(&r, &subject.digest, None, Some(&sorted[1]), 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(),
        sorted[2..4]
    );
    let sigs = m
        .referrers(&r, &subject.digest, Some("a/sig"), None, 100)
        .await
        .unwrap();
    let mut want = vec![refs[0].digest.clone(), refs[3].digest.clone()];
    want.sort();
    assert_eq!(
        sigs.iter().map(|x| x.digest.clone()).collect::<Vec<_>>(),
        want
    );
    let empty = m
        .referrers(&r, &subject.digest, Some(""), None, 100)
        .await
        .unwrap();
    assert_eq!(empty.len(), 1);
    assert_eq!(empty[0].digest, refs[4].digest);
    assert!(
        m.referrers(&r, &b, None, None, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        m.referrers(&repo("x/y"), &subject.digest, None, None, 9)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(m.delete_manifest(&r, &refs[0].digest).await.unwrap());
    let sigs = m
        .referrers(&r, &subject.digest, Some("a/sig"), None, 100)
        .await
        .unwrap();
    assert_eq!(sigs.len(), 1);
    m.check_consistency().await;
    m.wipe().await;
}

#[tokio::test]
async fn garbage_collection() {
    let m = fresh().await;
    let r = repo("acme/app");
    let (b1, b2, b3) = (digest("g1"), digest("g2"), digest("g3"));
    for b in [&b1, &b2, &b3] {
        m.link_blob(&r, b, 5).await.unwrap();
    }
    let t = now();
    let img = manifest("img", &[&b1], &[]);
    assert!(
        m.put_manifest(&r, &img, Some(&tag("v1")))
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing is old enough yet.
    assert!(m.gc_candidates(t - 10, None, 100).await.unwrap().is_empty());
    let mut want = [b2.clone(), b3.clone()];
    want.sort();
    let got = m.gc_candidates(t + 10, None, 100).await.unwrap();
    assert_eq!(got, want.iter().map(|d| (d.clone(), 5)).collect::<Vec<_>>());
    let page = m.gc_candidates(t + 10, None, 1).await.unwrap();
    assert_eq!(page, [(want[0].clone(), 5)]);
    let page = m.gc_candidates(t + 10, Some(&want[0]), 1).await.unwrap();
    assert_eq!(page, [(want[1].clone(), 5)]);
    assert!(
        m.gc_candidates(t + 10, Some(&want[1]), 1)
            .await
            .unwrap()
            .is_empty()
    );

    // Referenced blobs are refused; the reference goes with the manifest.
    assert!(!m.forget_blob(&b1).await.unwrap());
    assert!(m.forget_blob(&b2).await.unwrap());
    assert_eq!(m.blob_size(&b2).await.unwrap(), None);
    assert_eq!(m.repo_blob(&r, &b2).await.unwrap(), None);
    // The same manifest in a second repository counts separately.
    let r2 = repo("acme/two");
    m.link_blob(&r2, &b1, 5).await.unwrap();
    assert!(m.put_manifest(&r2, &img, None).await.unwrap().is_empty());
    assert!(m.delete_manifest(&r, &img.digest).await.unwrap());
    assert!(!m.forget_blob(&b1).await.unwrap());
    assert_eq!(m.delete_repo(&r2).await.unwrap(), Ok(()));
    assert!(
        m.gc_candidates(t + 10, None, 100)
            .await
            .unwrap()
            .contains(&(b1.clone(), 5))
    );
    assert!(m.forget_blob(&b1).await.unwrap());
    assert_eq!(m.repo_blob(&r, &b1).await.unwrap(), None);
    m.check_consistency().await;
    m.wipe().await;
}

/// A blob linked into a repository after `before` is no candidate, even if
/// it was known long before; the link time is what counts, per repository.
#[tokio::test]
async fn gc_grace_follows_links() {
    let m = fresh().await;
    let (r1, r2) = (repo("acme/one"), repo("acme/two"));
    let b = digest("grace");
    m.link_blob(&r1, &b, 1).await.unwrap();
    // Pretend the blob and its first link are an hour old.
    let old = (now() - 3600).to_string();
    let _: i64 = m
        .raw("HSET", &[&m.key(&format!("blob:{b}")), "at", &old])
        .await;
    let id1: String = m.raw("HGET", &[&m.key("repo:acme/one"), "id"]).await;
    let _: i64 = m
        .raw(
            "HSET",
            &[&m.key(&format!("r:{id1}:blobs")), b.as_str(), &old],
        )
        .await;
    let _: i64 = m
        .raw("HSET", &[&m.key(&format!("blob_links:{b}")), &id1, &old])
        .await;
    let before = now() - 60;
    assert_eq!(
        m.gc_candidates(before, None, 10).await.unwrap(),
        [(b.clone(), 1)]
    );
    m.link_blob(&r2, &b, 1).await.unwrap();
    assert!(m.gc_candidates(before, None, 10).await.unwrap().is_empty());
    // Unlinking the fresh link makes it a candidate again (as in SQL).
    assert!(m.unlink_blob(&r2, &b).await.unwrap());
    assert_eq!(
        m.gc_candidates(before, None, 10).await.unwrap(),
        [(b.clone(), 1)]
    );
    m.check_consistency().await;
    m.wipe().await;
}

#[tokio::test]
async fn delete_repo_drains_everything() {
    let m = fresh().await;
    let r = repo("acme/big");
    let mut blobs = Vec::new();
    for i in 0..700 {
        let b = digest(&format!("big{i}"));
        m.link_blob(&r, &b, i).await.unwrap();
        blobs.push(b);
    }
    let mut digests: Vec<Digest> = Vec::new();
    for i in 0..450 {
        let mut x = manifest(&format!("m{i}"), &[&blobs[i], &blobs[i + 1]], &[]);
        if i > 0 {
            x.subject = Some(digests[0].clone());
            x.artifact_type = Some("a/t".into());
        }
        let t = tag(&format!("t{i}"));
        assert!(m.put_manifest(&r, &x, Some(&t)).await.unwrap().is_empty());
        digests.push(x.digest.clone());
    }
    let shared = repo("acme/shared");
    m.link_blob(&shared, &blobs[0], 0).await.unwrap();
    let keep = manifest("keep", &[&blobs[0]], &[]);
    assert!(
        m.put_manifest(&shared, &keep, Some(&tag("v1")))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(team_setup(&m).await);
    assert_eq!(m.delete_repo(&r).await.unwrap(), Ok(()));
    assert!(m.team_repos("acme", "dev").await.unwrap().is_empty());
    assert_eq!(
        m.delete_repo(&r).await.unwrap(),
        Err(Refusal::Missing("repository acme/big".into()))
    );
    assert!(!m.repo_exists(&r).await.unwrap());
    assert_eq!(m.list_repos(None, 10).await.unwrap(), ["acme/shared"]);
    m.check_consistency().await;
    // Only the shared blob is still referenced.
    let cands = m.gc_candidates(now() + 10, None, 1000).await.unwrap();
    assert_eq!(cands.len(), 699);
    assert!(!cands.iter().any(|(d, _)| *d == blobs[0]));
    // The name is free again, with no trace of the old content.
    m.link_blob(&r, &blobs[5], 5).await.unwrap();
    assert!(m.list_tags(&r, None, 10).await.unwrap().is_empty());
    assert!(
        m.manifest_by_digest(&r, &digests[3])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(m.repo_blob(&r, &blobs[4]).await.unwrap(), None);
    m.check_consistency().await;
    m.wipe().await;
}

/// A team of org `acme` with a permit on `acme/big`, if it exists.
async fn team_setup(m: &RedisMeta) -> bool {
    m.create_user(&user("owner", SystemRole::Member))
        .await
        .unwrap()
        .unwrap();
    m.create_org(&org("acme"), "owner").await.unwrap().unwrap();
    let team = Team {
        org: "acme".into(),
        name: "dev".into(),
        comment: None,
    };
    m.create_team(&team, Some("owner")).await.unwrap().unwrap();
    m.set_team_repo("acme", "dev", &repo("acme/big"), Permit::Write)
        .await
        .unwrap()
        .is_ok()
}

#[tokio::test]
async fn accounts_round_trip() {
    let m = fresh().await;
    m.create_user(&user("alice", SystemRole::Admin))
        .await
        .unwrap()
        .unwrap();
    m.create_user(&user("bob", SystemRole::Member))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.create_user(&user("bob", SystemRole::Member))
            .await
            .unwrap(),
        Err(Refusal::Exists("name bob".into()))
    );
    assert_eq!(m.admin_count().await.unwrap(), 1);
    assert_eq!(
        m.user("alice").await.unwrap().unwrap(),
        user("alice", SystemRole::Admin)
    );
    assert!(m.user("nobody").await.unwrap().is_none());
    let up = UserUpdate {
        realname: Some("Bob B".into()),
        role: Some(SystemRole::Admin),
        ..Default::default()
    };
    m.update_user("bob", &up, 99).await.unwrap().unwrap();
    let bob = m.user("bob").await.unwrap().unwrap();
    assert_eq!(
        (bob.realname.as_deref(), bob.role, bob.updated_at),
        (Some("Bob B"), SystemRole::Admin, 99)
    );
    assert_eq!(bob.email.as_deref(), Some("bob@example.test"));
    assert_eq!(m.admin_count().await.unwrap(), 2);
    assert_eq!(
        m.update_user("nobody", &up, 1).await.unwrap(),
        Err(Refusal::Missing("user nobody".into()))
    );

    // Names are shared by users and organisations.
    assert_eq!(
        m.create_org(&org("alice"), "alice").await.unwrap(),
        Err(Refusal::Exists("name alice".into()))
    );
    assert_eq!(
        m.create_org(&org("acme"), "nobody").await.unwrap(),
        Err(Refusal::Missing("user nobody".into()))
    );
    m.create_org(&org("acme"), "alice").await.unwrap().unwrap();
    assert_eq!(
        m.create_user(&user("acme", SystemRole::Member))
            .await
            .unwrap(),
        Err(Refusal::Exists("name acme".into()))
    );
    assert_eq!(
        m.namespace_kind("acme").await.unwrap(),
        Some(NamespaceKind::Organization)
    );
    assert_eq!(
        m.namespace_kind("bob").await.unwrap(),
        Some(NamespaceKind::User)
    );
    assert_eq!(m.namespace_kind("zed").await.unwrap(), None);
    assert_eq!(
        m.org_members("acme").await.unwrap(),
        [("alice".to_string(), OrgRole::Admin)]
    );
    let ou = OrgUpdate {
        url: Some("https://acme.test".into()),
        ..Default::default()
    };
    m.update_org("acme", &ou).await.unwrap().unwrap();
    let o = m.org("acme").await.unwrap().unwrap();
    assert_eq!(
        (o.url.as_deref(), o.comment.as_deref()),
        (Some("https://acme.test"), Some("an org"))
    );

    // Teams need org members.
    let dev = Team {
        org: "acme".into(),
        name: "dev".into(),
        comment: Some(String::new()),
    };
    assert_eq!(
        m.create_team(&dev, Some("bob")).await.unwrap(),
        Err(Refusal::Invalid(
            "bob is not a member of organization acme".into()
        ))
    );
    assert!(m.team("acme", "dev").await.unwrap().is_none());
    m.create_team(&dev, Some("alice")).await.unwrap().unwrap();
    assert_eq!(m.team("acme", "dev").await.unwrap().unwrap(), dev);
    let ops = Team {
        org: "acme".into(),
        name: "ops".into(),
        comment: None,
    };
    m.create_team(&ops, None).await.unwrap().unwrap();
    assert_eq!(m.teams("acme").await.unwrap(), [dev.clone(), ops.clone()]);
    assert_eq!(
        m.set_team_member("acme", "dev", "bob", TeamRole::Member)
            .await
            .unwrap(),
        Err(Refusal::Invalid(
            "bob is not a member of organization acme".into()
        ))
    );
    m.set_org_member("acme", "bob", OrgRole::Member)
        .await
        .unwrap()
        .unwrap();
    m.set_team_member("acme", "dev", "bob", TeamRole::Member)
        .await
        .unwrap()
        .unwrap();
    m.set_team_member("acme", "ops", "bob", TeamRole::Admin)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.user_teams("acme", "bob").await.unwrap(),
        [
            ("dev".to_string(), TeamRole::Member),
            ("ops".to_string(), TeamRole::Admin)
        ]
    );
    assert_eq!(
        m.user_orgs("bob").await.unwrap(),
        [("acme".to_string(), OrgRole::Member)]
    );

    // Permits on the org's repositories only.
    let app = repo("acme/app");
    let mine = Repository {
        name: app.clone(),
        namespace: "acme".into(),
        is_public: true,
        comment: None,
        created_at: 30,
    };
    m.create_repo(&mine).await.unwrap().unwrap();
    assert_eq!(
        m.create_repo(&mine).await.unwrap(),
        Err(Refusal::Exists("repository acme/app".into()))
    );
    assert_eq!(m.repo(&app).await.unwrap().unwrap(), mine);
    m.link_blob(&repo("bob/tool"), &digest("x"), 1)
        .await
        .unwrap();
    assert_eq!(
        m.set_team_repo("acme", "dev", &repo("bob/tool"), Permit::Read)
            .await
            .unwrap(),
        Err(Refusal::Invalid(
            "repository bob/tool does not belong to organization acme".into()
        ))
    );
    assert_eq!(
        m.set_team_repo("acme", "dev", &repo("acme/none"), Permit::Read)
            .await
            .unwrap(),
        Err(Refusal::Missing("repository acme/none".into()))
    );
    m.set_team_repo("acme", "dev", &app, Permit::Read)
        .await
        .unwrap()
        .unwrap();
    m.set_team_repo("acme", "ops", &app, Permit::Write)
        .await
        .unwrap()
        .unwrap();
    let mut p = m.team_permits("bob", &app).await.unwrap();
    p.sort_by_key(|p| *p as u8);
    assert_eq!(p, [Permit::Write, Permit::Read]);
    assert_eq!(m.team_permits("alice", &app).await.unwrap(), [Permit::Read]);
    // Leaving the org leaves its teams.
    m.remove_org_member("acme", "bob").await.unwrap().unwrap();
    assert!(m.team_permits("bob", &app).await.unwrap().is_empty());
    assert!(m.user_teams("acme", "bob").await.unwrap().is_empty());

    // Tokens.
    let tok = |id: &str, at: i64| ApiToken {
        id: id.into(),
        user: "bob".into(),
        name: format!("ci {id}"),
        secret_hash: "ab".repeat(32),
        scopes: vec!["repository:bob/*:pull".into()],
        created_at: at,
        expires_at: (at == 5).then_some(1000),
    };
    for (id, at) in [("t3", 7), ("t1", 5), ("t2", 5)] {
        m.create_token(&tok(id, at)).await.unwrap().unwrap();
    }
    assert_eq!(
        m.tokens("bob").await.unwrap(),
        [tok("t1", 5), tok("t2", 5), tok("t3", 7)]
    );
    assert_eq!(m.token("t3").await.unwrap().unwrap(), tok("t3", 7));
    assert_eq!(
        m.delete_token("alice", "t1").await.unwrap(),
        Err(Refusal::Missing("token t1".into()))
    );
    m.delete_token("bob", "t1").await.unwrap().unwrap();
    assert_eq!(m.tokens("bob").await.unwrap().len(), 2);

    // Deleting a repository removes its permits; deleting the org its teams.
    m.delete_repo(&app).await.unwrap().unwrap();
    assert!(m.team_repos("acme", "dev").await.unwrap().is_empty());
    m.delete_org("acme").await.unwrap().unwrap();
    assert!(m.teams("acme").await.unwrap().is_empty());
    assert!(m.user_orgs("alice").await.unwrap().is_empty());
    // Deleting a user removes their tokens.
    m.delete_user("bob").await.unwrap().unwrap();
    assert!(m.token("t2").await.unwrap().is_none());
    assert_eq!(m.admin_count().await.unwrap(), 1);
    m.check_consistency().await;
    m.wipe().await;
}

#[tokio::test]
async fn audit_log() {
    let m = fresh().await;
    let ev = |at: i64, actor: &str, action: &str, repo: Option<&str>| AuditEvent {
        at,
        actor: actor.into(),
        action: action.into(),
        repo: repo.map(str::to_string),
        target: Some("latest".into()),
        detail: None,
        addr: Some("127.0.0.1".into()),
        count: 1,
    };
    let events = vec![
        ev(100, "alice", "push", Some("a/x")),
        ev(101, "bob", "pull", Some("a/x")),
        ev(102, "alice", "pull", Some("a/y")),
        ev(99, "alice", "login", None),
        ev(103, "bob", "pull", Some("a/y")),
    ];
    m.append_audit(&events).await.unwrap();
    m.append_audit(&[]).await.unwrap();
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 100,
            ..Default::default()
        };
        f(&mut q);
        q
    };
    let ids = |v: Vec<(i64, AuditEvent)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
    assert_eq!(
        ids(m.query_audit(&q(&|_| ())).await.unwrap()),
        [5, 4, 3, 2, 1]
    );
    let all = m.query_audit(&q(&|_| ())).await.unwrap();
    assert_eq!(all[4].1, events[0]);
    assert_eq!(
        ids(m
            .query_audit(&q(&|q| q.actor = Some("alice".into())))
            .await
            .unwrap()),
        [4, 3, 1]
    );
    assert_eq!(
        ids(m
            .query_audit(&q(&|q| {
                q.actor = Some("alice".into());
                q.action = Some("pull".into());
            }))
            .await
            .unwrap()),
        [3]
    );
    assert_eq!(
        ids(m
            .query_audit(&q(&|q| q.repo = Some("a/x".into())))
            .await
            .unwrap()),
        [2, 1]
    );
    assert_eq!(
        ids(m
            .query_audit(&q(&|q| {
                q.since = Some(100);
                q.until = Some(102);
            }))
            .await
            .unwrap()),
        [3, 2, 1]
    );
    assert_eq!(
        ids(m
            .query_audit(&q(&|q| {
                q.before_id = Some(4);
                q.limit = 2;
            }))
            .await
            .unwrap()),
        [3, 2]
    );
    assert!(
        m.query_audit(&q(&|q| q.limit = 0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(m.prune_audit(101).await.unwrap(), 2);
    assert_eq!(ids(m.query_audit(&q(&|_| ())).await.unwrap()), [5, 3, 2]);
    assert_eq!(
        ids(m
            .query_audit(&q(&|q| q.actor = Some("alice".into())))
            .await
            .unwrap()),
        [3]
    );
    // Many events: paging over batches, pruning in batches.
    let many: Vec<_> = (0..2500)
        .map(|i| {
            ev(
                200 + i,
                if i % 3 == 0 { "carol" } else { "dave" },
                "pull",
                None,
            )
        })
        .collect();
    m.append_audit(&many).await.unwrap();
    let carol = m
        .query_audit(&q(&|q| {
            q.actor = Some("carol".into());
            q.action = Some("pull".into());
            q.since = Some(300);
            q.limit = 1000;
        }))
        .await
        .unwrap();
    assert_eq!(carol.len(), (100..2500).filter(|i| i % 3 == 0).count());
    assert!(carol.windows(2).all(|w| w[0].0 > w[1].0));
    assert_eq!(m.prune_audit(10_000).await.unwrap(), 2503);
    assert!(m.query_audit(&q(&|_| ())).await.unwrap().is_empty());
    let keys = m.all_keys().await;
    assert_eq!(keys, [m.key("audit:seq")]);
    m.wipe().await;
}

/// Manifest bodies are bytes, of any size the registry allows; names
/// with `%` and `:` in them do not confuse the key layout.
#[tokio::test]
async fn binary_bodies_and_odd_names() {
    let m = fresh().await;
    let r = repo("acme/bin");
    let b = digest("bin");
    m.link_blob(&r, &b, 1).await.unwrap();
    let mut x = manifest("bin", &[&b], &[]);
    let body: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 % 251) as u8).collect();
    x.body = Bytes::from(body);
    x.media_type = "application/octet-stream; \u{0} \u{ff}".into();
    assert!(
        m.put_manifest(&r, &x, Some(&tag("big")))
            .await
            .unwrap()
            .is_empty()
    );
    let (mt, got) = m.manifest_by_digest(&r, &x.digest).await.unwrap().unwrap();
    assert_eq!((mt, got), (x.media_type.clone(), x.body.clone()));
    let refs = m.referrers(&r, &b, None, None, 10).await.unwrap();
    assert!(refs.is_empty());

    // An org "a:b" and an org "a" with team "b:..." must not share keys.
    for u in ["u", "a", "a:b", "a%3Ab"] {
        m.create_user(&user(&format!("user-{u}"), SystemRole::Member))
            .await
            .unwrap()
            .unwrap();
    }
    m.create_org(&org("a:b"), "user-a:b")
        .await
        .unwrap()
        .unwrap();
    m.create_org(&org("a"), "user-a").await.unwrap().unwrap();
    m.create_org(&org("a%3Ab"), "user-a%3Ab")
        .await
        .unwrap()
        .unwrap();
    let t = |o: &str, n: &str| Team {
        org: o.into(),
        name: n.into(),
        comment: None,
    };
    m.create_team(&t("a:b", "c"), Some("user-a:b"))
        .await
        .unwrap()
        .unwrap();
    m.create_team(&t("a", "b:c"), Some("user-a"))
        .await
        .unwrap()
        .unwrap();
    m.create_team(&t("a%3Ab", "c"), Some("user-a%3Ab"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        m.team_members("a:b", "c").await.unwrap(),
        [("user-a:b".to_string(), TeamRole::Admin)]
    );
    assert_eq!(
        m.team_members("a", "b:c").await.unwrap(),
        [("user-a".to_string(), TeamRole::Admin)]
    );
    assert_eq!(
        m.team_members("a%3Ab", "c").await.unwrap(),
        [("user-a%3Ab".to_string(), TeamRole::Admin)]
    );
    assert_eq!(
        m.user_teams("a:b", "user-a:b").await.unwrap(),
        [("c".to_string(), TeamRole::Admin)]
    );
    m.delete_org("a:b").await.unwrap().unwrap();
    assert_eq!(m.team_members("a%3Ab", "c").await.unwrap().len(), 1);
    assert_eq!(m.team_members("a", "b:c").await.unwrap().len(), 1);
    m.check_consistency().await;
    m.wipe().await;
}

#[tokio::test]
async fn open_fails_cleanly_without_a_server() {
    let err = RedisMeta::open("redis://127.0.0.1:1/", "x").await.err();
    assert!(
        matches!(err, Some(crate::meta::MetaError::Backend(_))),
        "{err:?}"
    );
    let err = RedisMeta::open("http://nope", "x").await.err();
    assert!(
        matches!(err, Some(crate::meta::MetaError::Backend(_))),
        "{err:?}"
    );
}

/// Two prefixes on one server see nothing of each other.
#[tokio::test]
async fn prefixes_are_separate() {
    let (a, b) = (fresh().await, fresh().await);
    a.create_user(&user("alice", SystemRole::Admin))
        .await
        .unwrap()
        .unwrap();
    b.create_user(&user("alice", SystemRole::Admin))
        .await
        .unwrap()
        .unwrap();
    a.link_blob(&repo("x"), &digest("x"), 1).await.unwrap();
    assert!(b.list_repos(None, 10).await.unwrap().is_empty());
    assert!(
        b.all_keys()
            .await
            .iter()
            .all(|k| k.starts_with(&format!("{}:", b.prefix)))
    );
    a.wipe().await;
    b.wipe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_have_one_winner() {
    let m = fresh().await;
    for round in 0..20 {
        let name = format!("racer{round}");
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = same_data(&m).await;
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                // In even rounds all eight create the user; in odd rounds
                // half try an organisation of the same name instead.
                if i % 2 == 0 || round % 2 == 0 {
                    s.create_user(&user(&name, SystemRole::Member))
                        .await
                        .unwrap()
                } else {
                    s.create_user(&user(&format!("c{i}-{name}"), SystemRole::Member))
                        .await
                        .unwrap()
                        .unwrap();
                    s.create_org(&org(&name), &format!("c{i}-{name}"))
                        .await
                        .unwrap()
                }
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => wins += 1,
                Err(e) => assert_eq!(e, Refusal::Exists(format!("name {name}"))),
            }
        }
        assert_eq!(wins, 1, "round {round}");
        let user = m.user(&name).await.unwrap().is_some();
        let org = m.org(&name).await.unwrap().is_some();
        assert!(user ^ org);
        // Racing repository creation: one winner too.
        let r = repo(&format!("racer/{round}"));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = same_data(&m).await;
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                let rec = Repository {
                    name: r,
                    namespace: "racer".into(),
                    is_public: i % 2 == 0,
                    comment: Some(format!("{i}")),
                    created_at: i,
                };
                s.create_repo(&rec).await.unwrap().is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as u32;
        }
        assert_eq!(wins, 1);
    }
    m.check_consistency().await;
    m.wipe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_pushes_keep_indexes_whole() {
    let m = fresh().await;
    let r = repo("acme/race");
    let b = digest("base");
    m.link_blob(&r, &b, 1).await.unwrap();
    let manifests: Arc<Vec<ManifestRecord>> = Arc::new(
        (0..8)
            .map(|i| manifest(&format!("race{i}"), &[&b], &[]))
            .collect(),
    );
    for round in 0..10 {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = same_data(&m).await;
            let (r, ms) = (r.clone(), manifests.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..20 {
                    let x = &ms[(i + k) % 8];
                    let t = tag(if k % 2 == 0 { "latest" } else { "stable" });
                    assert!(s.put_manifest(&r, x, Some(&t)).await.unwrap().is_empty());
                    if k % 7 == 3 {
                        s.delete_manifest(&r, &ms[(i + k + 1) % 8].digest)
                            .await
                            .unwrap();
                    }
                    if k % 5 == 4 {
                        s.delete_tag(&r, &t).await.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        if let Some((d, _, _)) = m.manifest_by_tag(&r, &tag("latest")).await.unwrap() {
            assert!(manifests.iter().any(|x| x.digest == d));
        }
        m.check_consistency().await;
        let _ = round;
    }
    // Pushes racing the repository's deletion leave either nothing or a
    // whole new repository.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = same_data(&m).await;
        let (r, ms, b) = (r.clone(), manifests.clone(), b.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..10 {
                if i == 0 && k % 3 == 0 {
                    let _ = s.delete_repo(&r).await.unwrap();
                } else {
                    s.link_blob(&r, &b, 1).await.unwrap();
                    // The blob may be gone again by now: then nothing is stored.
                    let miss = s
                        .put_manifest(&r, &ms[i], Some(&tag("latest")))
                        .await
                        .unwrap();
                    assert!(miss.manifests.is_empty());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    m.check_consistency().await;
    m.wipe().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_membership_changes_keep_teams_within_orgs() {
    let m = fresh().await;
    m.create_user(&user("boss", SystemRole::Member))
        .await
        .unwrap()
        .unwrap();
    m.create_org(&org("acme"), "boss").await.unwrap().unwrap();
    for t in ["t1", "t2", "t3"] {
        let team = Team {
            org: "acme".into(),
            name: t.into(),
            comment: None,
        };
        m.create_team(&team, Some("boss")).await.unwrap().unwrap();
    }
    for u in ["u1", "u2", "u3", "u4"] {
        m.create_user(&user(u, SystemRole::Member))
            .await
            .unwrap()
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..8usize {
        let s = same_data(&m).await;
        tasks.push(tokio::spawn(async move {
            for k in 0..60usize {
                let u = ["u1", "u2", "u3", "u4"][(i + k) % 4];
                let t = ["t1", "t2", "t3"][(i * 7 + k) % 3];
                match (i + k) % 6 {
                    0 => drop(s.set_org_member("acme", u, OrgRole::Member).await.unwrap()),
                    1 => drop(s.remove_org_member("acme", u).await.unwrap()),
                    2 | 3 => drop(
                        s.set_team_member("acme", t, u, TeamRole::Member)
                            .await
                            .unwrap(),
                    ),
                    4 => drop(s.delete_user(u).await.unwrap()),
                    _ => drop(s.create_user(&user(u, SystemRole::Member)).await.unwrap()),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    m.check_consistency().await;
    m.wipe().await;
}

// ---- differential run against SQL ----------------------------------------

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    fn maybe<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        if self.below(3) == 0 {
            None
        } else {
            Some(self.pick(v))
        }
    }
}

const NAMES: &[&str] = &["alice", "bob", "carol", "acme", "corp"];
const TEAMS: &[&str] = &["dev", "ops"];
const REPOS: &[&str] = &["acme/app", "acme/lib", "corp/web", "alice/tool", "base"];
const NAMESPACES: &[&str] = &["acme", "corp", "alice", "library", "bob"];
const TAGS: &[&str] = &["latest", "v1", "v2"];
const TYPES: &[&str] = &["a/x", "a/y"];

struct World {
    blobs: Vec<Digest>,
    manifests: Vec<ManifestRecord>,
}

impl World {
    fn new() -> World {
        let blobs: Vec<Digest> = (0..6).map(|i| digest(&format!("blob{i}"))).collect();
        let b = |i: usize| &blobs[i];
        let mut ms: Vec<ManifestRecord> = Vec::new();
        ms.push(manifest("m0", &[b(0), b(1)], &[]));
        ms.push(manifest("m1", &[b(1), b(2)], &[]));
        let mut m2 = manifest("m2", &[b(3)], &[]);
        m2.subject = Some(ms[0].digest.clone());
        m2.artifact_type = Some("a/x".into());
        ms.push(m2);
        let mut m3 = manifest("m3", &[b(4)], &[]);
        m3.subject = Some(ms[0].digest.clone());
        m3.artifact_type = Some("a/y".into());
        m3.annotations = Some("{\"org.example\":\"1\"}".into());
        ms.push(m3);
        let m4 = manifest("m4", &[], &[&ms[0].digest, &ms[1].digest]);
        ms.push(m4);
        let mut m5 = manifest("m5", &[b(0)], &[]);
        m5.subject = Some(ms[1].digest.clone());
        ms.push(m5);
        let m6 = manifest("m6", &[b(5), b(5)], &[&ms[4].digest]);
        ms.push(m6);
        let mut m7 = manifest("m7", &[], &[]);
        m7.subject = Some(ms[0].digest.clone());
        m7.artifact_type = Some("a/x".into());
        ms.push(m7);
        World {
            blobs,
            manifests: ms,
        }
    }
}

/// One random operation, applied to a store; the result as text.
async fn apply(s: &dyn MetaStore, w: &World, op: &Op) -> String {
    match op {
        Op::CreateUser(n, admin, at) => {
            let mut u = user(
                n,
                if *admin {
                    SystemRole::Admin
                } else {
                    SystemRole::Member
                },
            );
            u.created_at = *at;
            u.source = if *admin {
                UserSource::Db
            } else {
                UserSource::Ldap
            };
            format!("{:?}", s.create_user(&u).await)
        }
        Op::UpdateUser(n, up, at) => format!("{:?}", s.update_user(n, up, *at).await),
        Op::DeleteUser(n) => format!("{:?}", s.delete_user(n).await),
        Op::CreateOrg(n, c, at) => {
            let mut o = org(n);
            o.created_at = *at;
            format!("{:?}", s.create_org(&o, c).await)
        }
        Op::UpdateOrg(n, up) => format!("{:?}", s.update_org(n, up).await),
        Op::DeleteOrg(n) => format!("{:?}", s.delete_org(n).await),
        Op::SetOrgMember(o, u, r) => format!("{:?}", s.set_org_member(o, u, *r).await),
        Op::RemoveOrgMember(o, u) => format!("{:?}", s.remove_org_member(o, u).await),
        Op::CreateTeam(t, c) => format!("{:?}", s.create_team(t, c.as_deref()).await),
        Op::DeleteTeam(o, t) => format!("{:?}", s.delete_team(o, t).await),
        Op::SetTeamMember(o, t, u, r) => format!("{:?}", s.set_team_member(o, t, u, *r).await),
        Op::RemoveTeamMember(o, t, u) => format!("{:?}", s.remove_team_member(o, t, u).await),
        Op::SetTeamRepo(o, t, r, p) => format!("{:?}", s.set_team_repo(o, t, &repo(r), *p).await),
        Op::RemoveTeamRepo(o, t, r) => format!("{:?}", s.remove_team_repo(o, t, &repo(r)).await),
        Op::CreateRepo(r) => format!("{:?}", s.create_repo(r).await),
        Op::UpdateRepo(r, p, c) => format!("{:?}", s.update_repo(&repo(r), *p, c.as_deref()).await),
        Op::DeleteRepo(r) => format!("{:?}", s.delete_repo(&repo(r)).await),
        Op::CreateToken(t) => format!("{:?}", s.create_token(t).await),
        Op::DeleteToken(u, id) => format!("{:?}", s.delete_token(u, id).await),
        Op::Link(r, b) => format!(
            "{:?}",
            s.link_blob(&repo(r), &w.blobs[*b], *b as u64 * 100).await
        ),
        Op::Unlink(r, b) => format!("{:?}", s.unlink_blob(&repo(r), &w.blobs[*b]).await),
        Op::Put(r, m, t) => format!(
            "{:?}",
            s.put_manifest(&repo(r), &w.manifests[*m], t.map(tag).as_ref())
                .await
        ),
        Op::DeleteManifest(r, m) => {
            format!(
                "{:?}",
                s.delete_manifest(&repo(r), &w.manifests[*m].digest).await
            )
        }
        Op::DeleteTag(r, t) => format!("{:?}", s.delete_tag(&repo(r), &tag(t)).await),
        Op::Forget(b) => format!("{:?}", s.forget_blob(&w.blobs[*b]).await),
    }
}

#[derive(Debug)]
enum Op {
    CreateUser(&'static str, bool, i64),
    UpdateUser(&'static str, UserUpdate, i64),
    DeleteUser(&'static str),
    CreateOrg(&'static str, &'static str, i64),
    UpdateOrg(&'static str, OrgUpdate),
    DeleteOrg(&'static str),
    SetOrgMember(&'static str, &'static str, OrgRole),
    RemoveOrgMember(&'static str, &'static str),
    CreateTeam(Team, Option<String>),
    DeleteTeam(&'static str, &'static str),
    SetTeamMember(&'static str, &'static str, &'static str, TeamRole),
    RemoveTeamMember(&'static str, &'static str, &'static str),
    SetTeamRepo(&'static str, &'static str, &'static str, Permit),
    RemoveTeamRepo(&'static str, &'static str, &'static str),
    CreateRepo(Repository),
    UpdateRepo(&'static str, Option<bool>, Option<String>),
    DeleteRepo(&'static str),
    CreateToken(ApiToken),
    DeleteToken(&'static str, String),
    Link(&'static str, usize),
    Unlink(&'static str, usize),
    Put(&'static str, usize, Option<&'static str>),
    DeleteManifest(&'static str, usize),
    DeleteTag(&'static str, &'static str),
    Forget(usize),
}

fn random_op(g: &mut Rng, i: i64, tokens: &mut Vec<(&'static str, String)>) -> Op {
    // Mostly users act as users and orgs as orgs; sometimes names cross.
    let pick_user = |g: &mut Rng| {
        if g.below(8) == 0 {
            *g.pick(NAMES)
        } else {
            *g.pick(&NAMES[..3])
        }
    };
    let user_name = pick_user(g);
    let member = pick_user(g);
    let org_name = if g.below(8) == 0 {
        *g.pick(NAMES)
    } else {
        *g.pick(&NAMES[3..])
    };
    let team = *g.pick(TEAMS);
    let r = *g.pick(REPOS);
    let text = |g: &mut Rng| g.maybe(&["x", "", "y:z"]).map(|s| s.to_string());
    // Weights out of 1000, in this order.
    const W: &[u32] = &[
        50, 30, 8, 40, 20, 4, 80, 30, 70, 6, 80, 30, 60, 20, 30, 20, 10, 30, 20, 120, 20, 20, 140,
        30, 30,
    ];
    let mut roll = g.below(W.iter().sum::<u32>() as usize) as u32;
    let mut which = 0;
    while roll >= W[which] {
        roll -= W[which];
        which += 1;
    }
    match which {
        0 => Op::CreateUser(user_name, g.below(2) == 0, i),
        1 => Op::UpdateUser(
            user_name,
            UserUpdate {
                email: text(g),
                realname: text(g),
                comment: text(g),
                password_hash: text(g),
                role: g.maybe(&[SystemRole::Admin, SystemRole::Member]).copied(),
            },
            i,
        ),
        2 => Op::DeleteUser(user_name),
        3 => Op::CreateOrg(org_name, member, i),
        4 => Op::UpdateOrg(
            org_name,
            OrgUpdate {
                email: text(g),
                comment: text(g),
                url: text(g),
                location: text(g),
                member_privilege: g
                    .maybe(&[
                        MemberPrivilege::Write,
                        MemberPrivilege::Read,
                        MemberPrivilege::None,
                    ])
                    .copied(),
            },
        ),
        5 => Op::DeleteOrg(org_name),
        6 => Op::SetOrgMember(
            org_name,
            member,
            *g.pick(&[OrgRole::Admin, OrgRole::Member]),
        ),
        7 => Op::RemoveOrgMember(org_name, member),
        8 => Op::CreateTeam(
            Team {
                org: org_name.into(),
                name: team.into(),
                comment: text(g),
            },
            g.maybe(&NAMES[..3]).map(|s| s.to_string()),
        ),
        9 => Op::DeleteTeam(org_name, team),
        10 => Op::SetTeamMember(
            org_name,
            team,
            member,
            *g.pick(&[TeamRole::Admin, TeamRole::Member]),
        ),
        11 => Op::RemoveTeamMember(org_name, team, member),
        12 => Op::SetTeamRepo(org_name, team, r, *g.pick(&[Permit::Read, Permit::Write])),
        13 => Op::RemoveTeamRepo(org_name, team, r),
        14 => {
            let name = repo(r);
            let namespace = if g.below(4) == 0 {
                g.pick(NAMESPACES).to_string()
            } else {
                name.namespace().to_string()
            };
            Op::CreateRepo(Repository {
                name,
                namespace,
                is_public: g.below(2) == 0,
                comment: text(g),
                created_at: i,
            })
        }
        15 => Op::UpdateRepo(r, g.maybe(&[true, false]).copied(), text(g)),
        16 => Op::DeleteRepo(r),
        17 => {
            let id = format!("tok{i}");
            tokens.push((user_name, id.clone()));
            Op::CreateToken(ApiToken {
                id,
                user: user_name.into(),
                name: "ci".into(),
                secret_hash: "00".repeat(32),
                scopes: vec![format!("repository:{r}:pull")],
                created_at: (i / 7) * 7,
                expires_at: (i % 2 == 0).then_some(i + 100),
            })
        }
        18 => match tokens.is_empty() {
            true => Op::DeleteToken(user_name, "none".into()),
            false => {
                let (u, id) = g.pick(tokens).clone();
                Op::DeleteToken(if g.below(4) == 0 { member } else { u }, id)
            }
        },
        19 => Op::Link(r, g.below(6)),
        20 => Op::Unlink(r, g.below(6)),
        21 => Op::Forget(g.below(6)),
        22 => Op::Put(r, g.below(8), g.maybe(TAGS).copied()),
        23 => Op::DeleteManifest(r, g.below(8)),
        _ => Op::DeleteTag(r, TAGS[g.below(TAGS.len())]),
    }
}

/// Everything the store answers about the small world, as text.
async fn snapshot(s: &dyn MetaStore, w: &World) -> String {
    let mut o = String::new();
    let t0 = 1_000_000_000; // implicit repositories are stamped with `now`
    for n in NAMES {
        writeln!(o, "user {n}: {:?}", s.user(n).await.unwrap()).unwrap();
        writeln!(o, "org {n}: {:?}", s.org(n).await.unwrap()).unwrap();
        writeln!(o, "kind {n}: {:?}", s.namespace_kind(n).await.unwrap()).unwrap();
        writeln!(o, "user_orgs {n}: {:?}", s.user_orgs(n).await.unwrap()).unwrap();
        writeln!(o, "org_members {n}: {:?}", s.org_members(n).await.unwrap()).unwrap();
        writeln!(o, "teams {n}: {:?}", s.teams(n).await.unwrap()).unwrap();
        writeln!(o, "tokens {n}: {:?}", s.tokens(n).await.unwrap()).unwrap();
        for t in TEAMS {
            writeln!(o, "team {n}/{t}: {:?}", s.team(n, t).await.unwrap()).unwrap();
            writeln!(o, "  members: {:?}", s.team_members(n, t).await.unwrap()).unwrap();
            writeln!(o, "  repos: {:?}", s.team_repos(n, t).await.unwrap()).unwrap();
        }
        for u in NAMES {
            writeln!(o, "org_role {n} {u}: {:?}", s.org_role(n, u).await.unwrap()).unwrap();
            writeln!(
                o,
                "user_teams {n} {u}: {:?}",
                s.user_teams(n, u).await.unwrap()
            )
            .unwrap();
            for t in TEAMS {
                writeln!(
                    o,
                    "team_role {n}/{t} {u}: {:?}",
                    s.team_role(n, t, u).await.unwrap()
                )
                .unwrap();
            }
        }
    }
    writeln!(o, "users: {:?}", s.users(None, 100).await.unwrap()).unwrap();
    writeln!(
        o,
        "users after b: {:?}",
        s.users(Some("b"), 2).await.unwrap()
    )
    .unwrap();
    writeln!(o, "orgs: {:?}", s.orgs(None, 100).await.unwrap()).unwrap();
    writeln!(o, "orgs after b: {:?}", s.orgs(Some("b"), 1).await.unwrap()).unwrap();
    writeln!(o, "admins: {}", s.admin_count().await.unwrap()).unwrap();
    let norm = |r: Option<Repository>| {
        r.map(|mut r| {
            if r.created_at > t0 {
                r.created_at = 0;
            }
            r
        })
    };
    for ns in NAMESPACES {
        let v: Vec<_> = s
            .repos_in(ns)
            .await
            .unwrap()
            .into_iter()
            .map(|r| norm(Some(r)))
            .collect();
        writeln!(o, "repos_in {ns}: {v:?}").unwrap();
    }
    for r in REPOS {
        let rn = repo(r);
        writeln!(o, "repo {r}: {:?}", norm(s.repo(&rn).await.unwrap())).unwrap();
        writeln!(o, "  exists: {:?}", s.repo_exists(&rn).await.unwrap()).unwrap();
        writeln!(
            o,
            "  tags: {:?}",
            s.list_tags(&rn, None, 100).await.unwrap()
        )
        .unwrap();
        writeln!(
            o,
            "  tags after v1: {:?}",
            s.list_tags(&rn, Some("v1"), 1).await.unwrap()
        )
        .unwrap();
        for u in NAMES {
            let mut p: Vec<u8> = s
                .team_permits(u, &rn)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p as u8)
                .collect();
            p.sort();
            writeln!(o, "  permits {u}: {p:?}").unwrap();
        }
        for (i, b) in w.blobs.iter().enumerate() {
            writeln!(o, "  blob {i}: {:?}", s.repo_blob(&rn, b).await.unwrap()).unwrap();
        }
        for (i, m) in w.manifests.iter().enumerate() {
            writeln!(
                o,
                "  manifest {i}: {:?}",
                s.manifest_by_digest(&rn, &m.digest).await.unwrap()
            )
            .unwrap();
        }
        for t in TAGS {
            let got = s.manifest_by_tag(&rn, &tag(t)).await.unwrap();
            writeln!(o, "  tag {t}: {:?}", got.map(|(d, _, _)| d)).unwrap();
        }
        for subject in [&w.manifests[0].digest, &w.manifests[1].digest] {
            for at in std::iter::once(None).chain(TYPES.iter().copied().map(Some)) {
                let all = s.referrers(&rn, subject, at, None, 100).await.unwrap();
                writeln!(o, "  referrers {subject} {at:?}: {all:?}").unwrap();
                if let Some(first) = all.first() {
                    let rest = s
                        .referrers(&rn, subject, at, Some(&first.digest), 1)
                        .await
                        .unwrap();
                    writeln!(o, "  after first: {rest:?}").unwrap();
                }
            }
        }
    }
    writeln!(o, "catalog: {:?}", s.list_repos(None, 100).await.unwrap()).unwrap();
    writeln!(
        o,
        "catalog after acme/lib: {:?}",
        s.list_repos(Some("acme/lib"), 2).await.unwrap()
    )
    .unwrap();
    for (i, b) in w.blobs.iter().enumerate() {
        writeln!(o, "blob_size {i}: {:?}", s.blob_size(b).await.unwrap()).unwrap();
    }
    let far = now() + 1000;
    let gc = s.gc_candidates(far, None, 100).await.unwrap();
    writeln!(o, "gc: {gc:?}").unwrap();
    if let Some((first, _)) = gc.first() {
        writeln!(
            o,
            "gc after first: {:?}",
            s.gc_candidates(far, Some(first), 2).await.unwrap()
        )
        .unwrap();
    }
    writeln!(
        o,
        "gc old: {:?}",
        s.gc_candidates(0, None, 100).await.unwrap()
    )
    .unwrap();
    o
}

fn first_difference(a: &str, b: &str) -> String {
    for (x, y) in a.lines().zip(b.lines()) {
        if x != y {
            return format!("sql:   {x}\nredis: {y}");
        }
    }
    "(lengths differ)".into()
}

async fn sql_store(dir: &tempfile::TempDir) -> SqlMeta {
    let uri = format!("sqlite://{}/meta.db?mode=rwc", dir.path().display());
    SqlMeta::open(&uri, 2).await.expect("open sqlite")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behaves_like_sql() {
    for seed in [1u64, 7, 42, 2024] {
        let dir = tempfile::tempdir().unwrap();
        let sql = sql_store(&dir).await;
        let red = fresh().await;
        let w = World::new();
        let mut g = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut tokens = Vec::new();
        let mut log = Vec::new();
        for i in 1..=800 {
            let op = random_op(&mut g, i, &mut tokens);
            let a = apply(&sql, &w, &op).await;
            let b = apply(&red, &w, &op).await;
            log.push(format!("{i}: {op:?} -> {a}"));
            let tail = log[log.len().saturating_sub(15)..].join("\n");
            assert_eq!(a, b, "seed {seed}, op {i} {op:?}\n{tail}");
            if i % 20 == 0 {
                let (x, y) = (snapshot(&sql, &w).await, snapshot(&red, &w).await);
                assert!(
                    x == y,
                    "seed {seed}, after op {i}:\n{}\n{tail}",
                    first_difference(&x, &y)
                );
                red.check_consistency().await;
            }
        }
        red.wipe().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_behaves_like_sql() {
    let dir = tempfile::tempdir().unwrap();
    let sql = sql_store(&dir).await;
    let red = fresh().await;
    let mut g = Rng(99);
    let actors = ["alice", "bob", "anonymous"];
    let actions = ["pull", "push", "login"];
    let repos = ["a/x", "a/y"];
    for round in 0..30 {
        let n = g.below(40);
        let events: Vec<AuditEvent> = (0..n)
            .map(|_| AuditEvent {
                at: 1000 + g.below(200) as i64,
                actor: g.pick(&actors).to_string(),
                action: g.pick(&actions).to_string(),
                repo: g.maybe(&repos).map(|s| s.to_string()),
                target: g.maybe(&["latest", "sha256:x"]).map(|s| s.to_string()),
                detail: g.maybe(&["{}"]).map(|s| s.to_string()),
                addr: g.maybe(&["::1"]).map(|s| s.to_string()),
                count: 1 + g.below(5) as u64,
            })
            .collect();
        sql.append_audit(&events).await.unwrap();
        red.append_audit(&events).await.unwrap();
        for _ in 0..10 {
            let q = AuditQuery {
                actor: g
                    .maybe(&actors)
                    .filter(|_| g.below(2) == 0)
                    .map(|s| s.to_string()),
                repo: g
                    .maybe(&repos)
                    .filter(|_| g.below(2) == 0)
                    .map(|s| s.to_string()),
                action: g
                    .maybe(&actions)
                    .filter(|_| g.below(2) == 0)
                    .map(|s| s.to_string()),
                since: g.maybe(&[1050, 1100]).filter(|_| g.below(2) == 0).copied(),
                until: g.maybe(&[1120, 1180]).filter(|_| g.below(2) == 0).copied(),
                before_id: g
                    .maybe(&[50, 200, 400])
                    .filter(|_| g.below(2) == 0)
                    .copied(),
                limit: *g.pick(&[1, 5, 50, 1000]),
            };
            let a = sql.query_audit(&q).await.unwrap();
            let b = red.query_audit(&q).await.unwrap();
            assert_eq!(a, b, "round {round}, {q:?}");
        }
        if round % 7 == 6 {
            let before = 1000 + g.below(100) as i64;
            assert_eq!(
                sql.prune_audit(before).await.unwrap(),
                red.prune_audit(before).await.unwrap()
            );
        }
    }
    red.wipe().await;
}

// ---- the backend-independent contract ----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract() {
    let m = fresh().await;
    crate::meta::contract::run_all(&m).await;
    m.check_consistency().await;
    m.wipe().await;
}
