//! The authorization matrix over HTTP: every role × pull/push/delete/admin
//! × public/private repositories in a user namespace and in organisations
//! with each member privilege, checked three ways — the token service's
//! grants (decoded JWT), the registry with that token, and the registry
//! with Basic credentials — plus `/uam` administration, the catalog, and
//! repository creation by push.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde_json::json;

use crate::hub::*;

/// The repositories of the matrix: a user namespace (`alice`) and three
/// organisations whose plain members have WRITE (2), READ (3) and NONE (4).
const REPOS: [&str; 8] = [
    "alice/pub",
    "alice/priv",
    "orgw/pub",
    "orgw/priv",
    "orgr/pub",
    "orgr/priv",
    "orgn/pub",
    "orgn/priv",
];

/// The spec, derived from the rules in `src/auth/resolver.rs` (and the
/// issue): P = pull, U = push, D = delete, A = administer through `/uam`
/// (update the repository, add it to a team, delete it).
///
/// * sysadmin: everything.
/// * owner (`alice`): everything in her namespace; elsewhere what anyone
///   may (pull of public repositories).
/// * org-admin (`orgadm`, administrator of all three organisations):
///   everything in them.
/// * member-write/read/none: plain member of orgw/orgr/orgn: the member
///   privilege (WRITE = pull+push, READ = pull, NONE = nothing beyond
///   public) on every repository of their organisation, private included.
/// * team-write/team-read: plain members of orgn (NONE) in a team holding
///   a WRITE/READ permit on both orgn repositories.
/// * outsider, anonymous: pull of public repositories only.
///
/// Nobody but owners and system administrators deletes: a WRITE privilege
/// or permit gives pull and push only (the original's "ADMIN" level).
const MATRIX: [(&str, [&str; 8]); 10] = [
    // role            alice/pub alice/priv orgw/pub orgw/priv orgr/pub orgr/priv orgn/pub orgn/priv
    (
        "sysadmin",
        [
            "PUDA", "PUDA", "PUDA", "PUDA", "PUDA", "PUDA", "PUDA", "PUDA",
        ],
    ),
    ("owner", ["PUDA", "PUDA", "P", "-", "P", "-", "P", "-"]),
    (
        "org-admin",
        ["P", "-", "PUDA", "PUDA", "PUDA", "PUDA", "PUDA", "PUDA"],
    ),
    ("member-write", ["P", "-", "PU", "PU", "P", "-", "P", "-"]),
    ("member-read", ["P", "-", "P", "-", "P", "P", "P", "-"]),
    ("member-none", ["P", "-", "P", "-", "P", "-", "P", "-"]),
    ("team-write", ["P", "-", "P", "-", "P", "-", "PU", "PU"]),
    ("team-read", ["P", "-", "P", "-", "P", "-", "P", "P"]),
    ("outsider", ["P", "-", "P", "-", "P", "-", "P", "-"]),
    ("anonymous", ["P", "-", "P", "-", "P", "-", "P", "-"]),
];

/// The account of each role (none for anonymous).
fn account(role: &str) -> Option<&'static str> {
    Some(match role {
        "sysadmin" => ADMIN,
        "owner" => "alice",
        "org-admin" => "orgadm",
        "member-write" => "mw",
        "member-read" => "mr",
        "member-none" => "mn",
        "team-write" => "tmw",
        "team-read" => "tmr",
        "outsider" => "bob",
        "anonymous" => return None,
        other => panic!("unknown role {other}"),
    })
}

fn password(user: &str) -> String {
    if user == ADMIN {
        ADMIN_PASSWORD.to_string()
    } else {
        format!("{user}-password")
    }
}

fn cred(role: &str) -> Cred {
    match account(role) {
        Some(u) => Cred::basic(u, &password(u)),
        None => Cred::Anon,
    }
}

fn split(repo: &str) -> (&str, &str) {
    repo.split_once('/').unwrap()
}

fn is_org(ns: &str) -> bool {
    ns.starts_with("org")
}

/// The throw-away twin of a repository (same namespace and visibility)
/// that its owner deletes in the admin phase (the system administrator
/// deletes the repositories themselves at the end).
fn twin(repo: &str) -> String {
    format!("{repo}-tmp")
}

/// The system administrator's token for everything on `repos`: the
/// checks of what an operation did use it instead of Basic credentials,
/// which every `/uam` change makes the hub verify again (Argon2).
fn admin_bearer(hub: &Hub, repos: &[String]) -> Cred {
    let scopes: Vec<String> = repos
        .iter()
        .map(|r| format!("repository:{r}:pull,push,delete"))
        .collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    Cred::Bearer(hub.token(&Cred::admin(), &scopes).0)
}

fn all_repos() -> Vec<String> {
    REPOS
        .iter()
        .flat_map(|r| [r.to_string(), twin(r)])
        .collect()
}

/// Runs `f` on every item, each in its own thread.
fn par<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    std::thread::scope(|s| {
        for i in items {
            let f = &f;
            s.spawn(move || f(i));
        }
    });
}

/// Accounts, organisations, teams and the repositories of `REPOS` (and
/// their twins), each holding an image tagged `v1`. Every `/uam` change
/// makes the hub forget verified passwords, so the steps run in parallel
/// where they can.
fn build(hub: &Hub) -> BTreeMap<String, String> {
    let users = ["alice", "orgadm", "mw", "mr", "mn", "tmw", "tmr", "bob"];
    par(&users, |u| {
        hub.signup(u, &password(u)).expect(200);
    });
    let orgadm = cred("org-admin");
    let alice = cred("owner");
    let repos = all_repos();
    let create_repo = |r: &String| {
        let (ns, name) = split(r);
        let by = if is_org(ns) { &orgadm } else { &alice };
        hub.create_repo(by, ns, is_org(ns), name, name.starts_with("pub"))
            .expect(200);
    };
    let orgs = [("orgw", 2), ("orgr", 3), ("orgn", 4)];
    let user_repos: Vec<String> = repos
        .iter()
        .filter(|r| r.starts_with("alice/"))
        .cloned()
        .collect();
    std::thread::scope(|s| {
        s.spawn(|| par(&user_repos, create_repo));
        par(&orgs, |(org, privilege)| {
            hub.create_org(&orgadm, org, *privilege).expect(200);
        });
    });
    let org_repos: Vec<String> = repos
        .iter()
        .filter(|r| !r.starts_with("alice/"))
        .cloned()
        .collect();
    let members = [
        ("orgw", "mw"),
        ("orgr", "mr"),
        ("orgn", "mn"),
        ("orgn", "tmw"),
        ("orgn", "tmr"),
    ];
    let teams = [
        ("orgw", "scratch"),
        ("orgr", "scratch"),
        ("orgn", "scratch"),
        ("orgn", "writers"),
        ("orgn", "readers"),
    ];
    std::thread::scope(|s| {
        s.spawn(|| par(&org_repos, create_repo));
        s.spawn(|| {
            par(&members, |(org, user)| {
                hub.org_add_user(&orgadm, org, user, 4).expect(200);
            })
        });
        par(&teams, |(org, team)| {
            hub.create_team(&orgadm, org, team).expect(200);
        });
    });
    let team_users = [("writers", "tmw"), ("readers", "tmr")];
    let team_repos = [
        ("writers", "pub", 2),
        ("writers", "priv", 2),
        ("readers", "pub", 3),
        ("readers", "priv", 3),
    ];
    std::thread::scope(|s| {
        s.spawn(|| {
            par(&team_users, |(team, user)| {
                hub.team_add_user(&orgadm, "orgn", team, user, 6)
                    .expect(200);
            })
        });
        par(&team_repos, |(team, repo, permit)| {
            hub.team_add_repo(&orgadm, "orgn", team, repo, *permit)
                .expect(200);
        });
    });
    let admin = admin_bearer(hub, &repos);
    let out = Mutex::new(BTreeMap::new());
    par(&repos, |r| {
        let d = hub.push_image(&admin, r, "v1");
        out.lock().unwrap().insert(r.clone(), d);
    });
    out.into_inner().unwrap()
}

fn expected(role: &str, repo: &str) -> &'static str {
    let i = REPOS.iter().position(|r| *r == repo).unwrap();
    MATRIX.iter().find(|(r, _)| *r == role).unwrap().1[i]
}

fn actions_of(spec: &str) -> BTreeSet<String> {
    let mut s = BTreeSet::new();
    for (c, a) in [('P', "pull"), ('U', "push"), ('D', "delete")] {
        if spec.contains(c) {
            s.insert(a.to_string());
        }
    }
    s
}

/// Pull, push and delete on `repo` with `cred`, each checked against
/// `spec` and its effect checked as the administrator.
#[allow(clippy::too_many_arguments)]
fn registry_ops(
    hub: &Hub,
    admin: &Cred,
    how: &str,
    role: &str,
    repo: &str,
    c: &Cred,
    base: &str,
    fails: &Mutex<Vec<String>>,
) {
    let spec = expected(role, repo);
    let fail = |m: String| {
        fails
            .lock()
            .unwrap()
            .push(format!("{role} {how} on {repo}: {m}"))
    };

    // pull
    let r = hub.get_manifest(c, repo, "v1");
    if spec.contains('P') {
        if r.status != 200 || r.header("docker-content-digest") != base {
            fail(format!("pull should work: {}", r.describe()));
        }
    } else if !is_refusal(&r) {
        fail(format!(
            "pull should be refused (401 challenge or 403 DENIED): {}",
            r.describe()
        ));
    }

    // push (a blob nobody else has)
    let blob = format!("blob of {role} {how} {repo} {}", unique()).into_bytes();
    let r = hub.push_blob(c, repo, &blob);
    let stored = hub.head_blob(admin, repo, &sha256(&blob)).status;
    if spec.contains('U') {
        if r.status != 201 || stored != 200 {
            fail(format!(
                "push should work (blob HEAD as admin: {stored}): {}",
                r.describe()
            ));
        }
    } else if !is_refusal(&r) || stored != 404 {
        fail(format!(
            "push should be refused and write nothing (blob HEAD as admin: {stored}): {}",
            r.describe()
        ));
    }

    // delete (a manifest pushed for this purpose)
    let victim = hub.push_variant(admin, repo, "v1");
    let r = hub.delete_manifest(c, repo, &victim);
    let left = hub.get_manifest(admin, repo, &victim).status;
    if spec.contains('D') {
        if r.status != 202 || left != 404 {
            fail(format!(
                "delete should work (manifest GET as admin: {left}): {}",
                r.describe()
            ));
        }
    } else if !is_refusal(&r) || left != 200 {
        fail(format!(
            "delete should be refused and remove nothing (manifest GET as admin: {left}): {}",
            r.describe()
        ));
    }
}

/// The token service: what a token asked for `pull,push,delete` grants.
fn token_grants(hub: &Hub, role: &str, repo: &str, fails: &Mutex<Vec<String>>) -> Cred {
    let c = cred(role);
    let scope = format!("repository:{repo}:pull,push,delete");
    let (token, payload) = hub.token(&c, &[&scope]);
    let want = actions_of(expected(role, repo));
    let got = granted(&payload, repo);
    let mut problems = Vec::new();
    if got != want {
        problems.push(format!("granted {got:?}, expected {want:?}"));
    }
    let sub = account(role).unwrap_or("");
    if payload["sub"] != sub
        || payload["aud"] != SERVICE
        || payload["iss"] != "dockyard-token-issuer"
    {
        problems.push(format!("claims sub/aud/iss wrong: {payload}"));
    }
    if !problems.is_empty() {
        fails
            .lock()
            .unwrap()
            .push(format!("{role} token for {scope}: {}", problems.join("; ")));
    }
    Cred::Bearer(token)
}

/// A catalog as `role` sees it (anonymous: through the token flow).
fn catalog_of(hub: &Hub, role: &str) -> BTreeSet<String> {
    let c = cred(role);
    let r = if role == "anonymous" {
        let r = hub.catalog(&Cred::Anon);
        assert_eq!(
            r.status,
            401,
            "anonymous catalog without a token: {}",
            r.describe()
        );
        let params = challenge_params(&r.header("www-authenticate"));
        let realm = param(&params, "realm").expect("realm");
        let mut q = format!("{realm}?service={}", param(&params, "service").unwrap());
        if let Some(s) = param(&params, "scope") {
            q.push_str(&format!("&scope={s}"));
        }
        let t = hub.send("GET", &q, &Cred::Anon, &[], None);
        t.expect(200);
        let token = t.json()["token"].as_str().unwrap().to_string();
        hub.catalog(&Cred::Bearer(token))
    } else {
        hub.catalog(&c)
    };
    r.expect(200);
    r.json()["repositories"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.describe()))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The whole matrix on one hub: token grants, registry operations with
/// the token and with Basic credentials, the catalog, then `/uam`
/// administration (refusals first, then the permitted changes).
#[test]
fn authorization_matrix() {
    let hub = Hub::start();
    let bases = build(&hub);
    let admin_t = admin_bearer(&hub, &all_repos());
    let fails = Mutex::new(Vec::new());

    // Tokens and registry operations, one thread per role.
    std::thread::scope(|s| {
        for (role, _) in MATRIX {
            let (hub, bases, fails, admin_t) = (&hub, &bases, &fails, &admin_t);
            s.spawn(move || {
                for repo in REPOS {
                    let bearer = token_grants(hub, role, repo, fails);
                    registry_ops(
                        hub,
                        admin_t,
                        "with its token",
                        role,
                        repo,
                        &bearer,
                        &bases[repo],
                        fails,
                    );
                    let how = if role == "anonymous" {
                        "without credentials"
                    } else {
                        "with Basic"
                    };
                    registry_ops(
                        hub,
                        admin_t,
                        how,
                        role,
                        repo,
                        &cred(role),
                        &bases[repo],
                        fails,
                    );
                }
            });
        }
    });

    // The catalog lists exactly what the caller may pull (a twin is
    // pullable as its repository is, except through the team permits,
    // which name the repositories themselves).
    let pullable = |role: &str, r: &str| {
        let kind = r.trim_end_matches("-tmp");
        let via_team = role.starts_with("team-") && kind.starts_with("orgn/");
        if r != kind && via_team {
            kind.ends_with("/pub")
        } else {
            expected(role, kind).contains('P')
        }
    };
    let all: BTreeSet<String> = bases.keys().cloned().collect();
    for (role, _) in MATRIX {
        let want: BTreeSet<String> = all.iter().filter(|r| pullable(role, r)).cloned().collect();
        let got: BTreeSet<String> = catalog_of(&hub, role).intersection(&all).cloned().collect();
        if got != want {
            fails.lock().unwrap().push(format!(
                "{role} catalog: got {got:?}, expected {want:?} (missing {:?}, extra {:?})",
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>()
            ));
        }
    }

    // /uam administration: update the repository, add it to a team (org
    // repositories), delete its twin. Refusals first (they change
    // nothing, so the later checks see what the permitted changes did).
    let admin_ops = |role: &str, repo: &str, allowed: bool| {
        let c = cred(role);
        let (ns, name) = split(repo);
        let owner_key = if is_org(ns) { "orgname" } else { "username" };
        let want = match (allowed, role) {
            (true, _) => 200,
            (false, "anonymous") => 401,
            (false, _) => 403,
        };
        let mut results = vec![hub.uam(
            "PUT",
            "/uam/repository/update",
            &c,
            Some(json!({"name": name, "comment": format!("set by {role}"), owner_key: ns})),
        )];
        if is_org(ns) {
            results.push(hub.team_add_repo(&c, ns, "scratch", name, 3));
        }
        if !allowed || role != "sysadmin" {
            results.push(hub.uam("DELETE", &format!("/uam/{}", twin(repo)), &c, None));
        }
        for r in results {
            if r.status != want {
                fails.lock().unwrap().push(format!(
                    "{role} admin of {repo}: expected {want}: {}",
                    r.describe()
                ));
            }
        }
    };
    par(&MATRIX, |(role, row)| {
        for (i, repo) in REPOS.iter().enumerate() {
            if !row[i].contains('A') {
                admin_ops(role, repo, false);
            }
        }
    });
    let admin = Cred::admin();
    let show = |repo: &str| {
        let (ns, name) = split(repo);
        hub.uam("GET", &format!("/uam/repository/{ns}/{name}"), &admin, None)
    };
    for repo in REPOS {
        // Nothing refused left a trace.
        let r = hub.get_manifest(&admin_t, &twin(repo), "v1");
        if r.status != 200 {
            fails.lock().unwrap().push(format!(
                "refused deletes removed {}: {}",
                twin(repo),
                r.describe()
            ));
        }
        let r = show(repo);
        r.expect(200);
        if !r.json()["comment"].is_null() {
            fails
                .lock()
                .unwrap()
                .push(format!("a refused update changed {repo}: {}", r.describe()));
        }
    }
    par(&MATRIX, |(role, row)| {
        for (i, repo) in REPOS.iter().enumerate() {
            if row[i].contains('A') {
                admin_ops(role, repo, true);
            }
        }
    });
    let gone = |repo: &str, fails: &Mutex<Vec<String>>| {
        let r = show(repo);
        let content = hub.get_manifest(&admin_t, repo, "v1");
        if r.status != 404 || content.status != 404 {
            fails.lock().unwrap().push(format!(
                "{repo} should be gone with its content after DELETE /uam/{repo}: {} / {}",
                r.describe(),
                content.describe()
            ));
        }
    };
    for repo in REPOS {
        gone(&twin(repo), &fails);
        let r = show(repo);
        r.expect(200);
        let comment = r.json()["comment"].as_str().unwrap_or("").to_string();
        if !comment.starts_with("set by ") {
            fails.lock().unwrap().push(format!(
                "permitted updates did not change {repo}: {}",
                r.describe()
            ));
        }
        let (ns, name) = split(repo);
        if is_org(ns) {
            let l = hub.uam(
                "GET",
                &format!("/uam/team/{ns}/scratch/listrepository"),
                &admin,
                None,
            );
            l.expect(200);
            if !l
                .json()
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["reponame"] == name)
            {
                fails.lock().unwrap().push(format!(
                    "{repo} was not added to team scratch: {}",
                    l.describe()
                ));
            }
        }
    }
    // Last, the system administrator deletes the repositories themselves.
    par(&REPOS, |repo| {
        let r = hub.uam("DELETE", &format!("/uam/{repo}"), &admin, None);
        if r.status != 200 {
            fails
                .lock()
                .unwrap()
                .push(format!("sysadmin deleting {repo}: {}", r.describe()));
        }
    });
    for repo in REPOS {
        gone(repo, &fails);
    }
    let left = catalog_of(&hub, "sysadmin");
    if left.iter().any(|r| all.contains(r)) {
        fails.lock().unwrap().push(format!(
            "deleted repositories still in the catalog: {left:?}"
        ));
    }

    let fails = fails.into_inner().unwrap();
    assert!(
        fails.is_empty(),
        "{} authorization matrix failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

/// A push into one's own namespace creates the repository, private; a
/// push into someone else's namespace (or a namespace nobody owns) is
/// refused and creates nothing; an organisation's plain members cannot
/// create repositories in it even with WRITE.
#[test]
fn push_creates_private_repositories_only_in_owned_namespaces() {
    let hub = Hub::start();
    for u in ["alice", "bob", "carol"] {
        hub.signup(u, &password(u)).expect(200);
    }
    let alice = Cred::basic("alice", &password("alice"));
    let bob = Cred::basic("bob", &password("bob"));
    let carol = Cred::basic("carol", &password("carol"));
    let admin = Cred::admin();
    hub.create_org(&alice, "acme", 2).expect(200);
    hub.org_add_user(&alice, "acme", "carol", 4).expect(200);

    // Own namespace, with a token as docker does.
    let t = hub.bearer(&alice, "alice/new", "pull,push");
    let d = hub.push_image(&t, "alice/new", "v1");
    let show = hub.uam("GET", "/uam/repository/alice/new", &alice, None);
    show.expect(200);
    assert_eq!(
        show.json()["ispublic"],
        false,
        "auto-created repositories are private: {}",
        show.describe()
    );
    assert_eq!(
        hub.get_manifest(&alice, "alice/new", "v1")
            .expect(200)
            .header("docker-content-digest"),
        d
    );
    assert!(
        is_refusal(&hub.get_manifest(&bob, "alice/new", "v1")),
        "an outsider cannot pull it"
    );
    let anon = hub.token(&Cred::Anon, &["repository:alice/new:pull"]);
    assert!(
        granted(&anon.1, "alice/new").is_empty(),
        "anonymous gets no pull: {}",
        anon.1
    );
    assert!(is_refusal(&hub.get_manifest(
        &Cred::Bearer(anon.0),
        "alice/new",
        "v1"
    )));
    assert!(is_refusal(&hub.get_manifest(
        &Cred::Anon,
        "alice/new",
        "v1"
    )));
    // A bearer catalog request needs `registry:catalog:*`, as in Docker's
    // registry; what it lists is filtered to what the caller may pull.
    let cat = hub.catalog(&Cred::Bearer(
        hub.token(&Cred::Anon, &["registry:catalog:*"]).0,
    ));
    cat.expect(200);
    assert!(
        !cat.text().contains("alice/new"),
        "anonymous must not see a private repository in the catalog: {}",
        cat.describe()
    );
    let cat = hub.catalog(&bob);
    cat.expect(200);
    assert!(!cat.text().contains("alice/new"), "{}", cat.describe());
    let cat = hub.catalog(&alice);
    assert!(cat.text().contains("alice/new"), "{}", cat.describe());

    // Basic credentials create too; an organisation admin creates in it.
    hub.push_image(&alice, "alice/basic", "v1");
    hub.push_image(&alice, "acme/app", "v1");
    for r in ["alice/basic", "acme/app"] {
        let (ns, name) = split(r);
        let show = hub.uam("GET", &format!("/uam/repository/{ns}/{name}"), &admin, None);
        show.expect(200);
        assert_eq!(show.json()["ispublic"], false, "{}", show.describe());
    }
    // carol (WRITE member of acme) may push to it but not create new ones.
    hub.push_blob(&carol, "acme/app", b"carol's blob")
        .expect(201);
    for (who, c, repo) in [
        ("bob", &bob, "alice/intruder"),
        ("carol", &carol, "acme/carols"),
        ("bob", &bob, "nobody/thing"),
        ("bob", &bob, "single"),
        ("alice", &alice, "library/thing"),
    ] {
        let t = hub.bearer(c, repo, "pull,push");
        let (_, payload) = jwt_parts(match &t {
            Cred::Bearer(s) => s,
            _ => unreachable!(),
        });
        assert!(
            granted(&payload, repo).is_empty(),
            "{who} must get nothing on {repo}: {payload}"
        );
        let blob = format!("{who} pushing to {repo}").into_bytes();
        for how in [&t, c] {
            let r = hub.push_blob(how, repo, &blob);
            assert!(is_refusal(&r), "{who} push to {repo}: {}", r.describe());
            let m = hub.put_manifest(how, repo, "v1", &image_manifest(b"{}", &blob, None));
            assert!(
                is_refusal(&m),
                "{who} manifest push to {repo}: {}",
                m.describe()
            );
        }
        assert_eq!(
            hub.head_blob(&admin, repo, &sha256(&blob)).status,
            404,
            "{who}'s blob in {repo}"
        );
        let (ns, name) = repo.split_once('/').unwrap_or(("library", repo));
        let show = hub.uam("GET", &format!("/uam/repository/{ns}/{name}"), &admin, None);
        assert_eq!(
            show.status,
            404,
            "{repo} must not be created: {}",
            show.describe()
        );
    }
    // System administrators own `library` (one-component names).
    hub.push_image(&admin, "single", "v1");
    assert_eq!(hub.get_manifest(&admin, "single", "v1").status, 200);
}

/// Anonymous pull of a public repository through the Docker token flow:
/// `GET /v2/` → 401 challenge → token from the realm without credentials
/// → pull; the same token cannot push, and a private repository stays
/// closed.
#[test]
fn anonymous_token_flow_pulls_public_repositories() {
    let hub = Hub::start();
    hub.signup("alice", &password("alice")).expect(200);
    let alice = Cred::basic("alice", &password("alice"));
    hub.create_repo(&alice, "alice", false, "open", true)
        .expect(200);
    hub.create_repo(&alice, "alice", false, "closed", false)
        .expect(200);
    let open = hub.push_image(&alice, "alice/open", "v1");
    hub.push_image(&alice, "alice/closed", "v1");

    let r = hub.send("GET", "/v2/", &Cred::Anon, &[], None);
    assert_eq!(r.status, 401, "{}", r.describe());
    let params = challenge_params(&r.header("www-authenticate"));
    let realm = param(&params, "realm").expect("realm in the challenge");
    assert_eq!(
        realm,
        hub.url("/uam/auth"),
        "default realm: this hub's /uam/auth"
    );
    assert_eq!(param(&params, "service"), Some(SERVICE));

    // The manifest request's challenge names the scope it needs.
    let r = hub.get_manifest(&Cred::Anon, "alice/closed", "v1");
    assert_eq!(r.status, 401, "{}", r.describe());
    let p = challenge_params(&r.header("www-authenticate"));
    assert_eq!(
        param(&p, "scope"),
        Some("repository:alice/closed:pull"),
        "{}",
        r.describe()
    );

    for (repo, want) in [("alice/open", true), ("alice/closed", false)] {
        let url = format!("{realm}?service={SERVICE}&scope=repository:{repo}:pull,push");
        let t = hub.send("GET", &url, &Cred::Anon, &[], None);
        t.expect(200);
        let token = t.json()["token"].as_str().unwrap().to_string();
        let (_, payload) = jwt_parts(&token);
        assert_eq!(
            payload["sub"], "",
            "anonymous tokens have no subject: {payload}"
        );
        let want_set = if want { set(&["pull"]) } else { set(&[]) };
        assert_eq!(granted(&payload, repo), want_set, "{payload}");
        let bearer = Cred::Bearer(token);
        let m = hub.get_manifest(&bearer, repo, "v1");
        if want {
            m.expect(200);
            assert_eq!(m.header("docker-content-digest"), open);
        } else {
            assert_eq!(m.status, 401, "{}", m.describe());
            assert!(
                m.header("www-authenticate")
                    .contains("error=\"insufficient_scope\""),
                "{}",
                m.describe()
            );
        }
        let p = hub.push_blob(&bearer, repo, b"anonymous blob");
        assert!(is_refusal(&p), "{}", p.describe());
    }
    assert_eq!(
        hub.head_blob(&alice, "alice/open", &sha256(b"anonymous blob"))
            .status,
        404
    );
}
