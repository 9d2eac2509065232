//! The `/uam` administration API, endpoint by endpoint: users,
//! organisations and members, teams, repositories, effective permissions,
//! API tokens and the audit log — status codes, JSON field names, who may
//! call what, and the effect each change has on the registry.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::hub::*;

const REFUSED: &[u16] = &[401, 403];

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn user(name: &str) -> Cred {
    Cred::basic(name, &format!("{name}-password"))
}

fn signup_all(hub: &Hub, names: &[&str]) {
    for n in names {
        hub.signup(n, &format!("{n}-password")).expect(200);
    }
}

/// An error answer must be JSON with a message.
fn has_message(r: &Resp) -> bool {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| {
            v["errors"][0]["message"]
                .as_str()
                .or(v["message"].as_str())
                .map(|m| !m.is_empty())
        })
        .unwrap_or(false)
}

/// Status and, for an error, a JSON message.
fn expect_err(c: &mut Checks, what: &str, r: &Resp, want: &[u16]) {
    if c.status(what, r, want) && r.status >= 400 {
        c.check(
            what,
            has_message(r),
            format!("error without a JSON message: {}", r.describe()),
        );
    }
}

fn array(r: &Resp) -> Vec<Value> {
    r.json()
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {}", r.describe()))
        .clone()
}

fn has_keys(c: &mut Checks, what: &str, v: &Value, want: &[&str]) {
    let got = keys(v);
    let missing: Vec<&&str> = want.iter().filter(|k| !got.contains(**k)).collect();
    c.check(
        what,
        missing.is_empty(),
        format!("JSON lacks {missing:?}: {v}"),
    );
}

/// The effective permission of `who` on `repo` as `/uam/permission` says.
fn permission(hub: &Hub, asker: &Cred, who: &str, repo: &str) -> Resp {
    hub.uam("GET", &format!("/uam/permission/{who}/{repo}"), asker, None)
}

fn perm_triple(r: &Resp) -> (bool, bool, bool) {
    let v = r.json();
    (
        v["pull"].as_bool().unwrap_or(false),
        v["push"].as_bool().unwrap_or(false),
        v["delete"].as_bool().unwrap_or(false),
    )
}

#[test]
fn users_signup_signin_list_show_update_password_delete() {
    let hub = Hub::start();
    let admin = Cred::admin();
    let mut c = Checks::default();
    let anon = Cred::Anon;

    let r = hub.uam(
        "POST",
        "/uam/user/signup",
        &anon,
        Some(
            json!({"name": "alice", "email": "alice@example.com", "password": "alice-password",
                    "realname": "Alice Liddell", "comment": "first user"}),
        ),
    );
    if c.status("signup", &r, &[200]) {
        let v = r.json();
        has_keys(
            &mut c,
            "signup answer",
            &v,
            &["name", "email", "realname", "comment", "role"],
        );
        c.check(
            "signup answer values",
            v["name"] == "alice"
                && v["email"] == "alice@example.com"
                && v["realname"] == "Alice Liddell"
                && v["comment"] == "first user"
                && v["role"] == 2,
            &v,
        );
        c.check(
            "signup answer hides the password",
            !r.text().contains("alice-password") && v.get("password").is_none(),
            &v,
        );
    }
    signup_all(&hub, &["bob"]);

    // Validation.
    let long = "a".repeat(65);
    for bad in [
        "Alice",
        "a/b",
        "-a",
        "a-",
        "",
        "a b",
        "ab$",
        "a..b",
        long.as_str(),
    ] {
        let r = hub.uam(
            "POST",
            "/uam/user/signup",
            &anon,
            Some(json!({"name": bad, "password": "long-enough-1"})),
        );
        expect_err(&mut c, &format!("signup with bad name {bad:?}"), &r, &[400]);
    }
    for reserved in [
        "library",
        "user",
        "organization",
        "team",
        "repository",
        "auth",
        "audit",
        "permission",
    ] {
        let r = hub.uam(
            "POST",
            "/uam/user/signup",
            &anon,
            Some(json!({"name": reserved, "password": "long-enough-1"})),
        );
        expect_err(
            &mut c,
            &format!("signup with reserved name {reserved:?}"),
            &r,
            &[400],
        );
    }
    for (what, body) in [
        (
            "short password",
            json!({"name": "carl", "password": "short"}),
        ),
        ("empty password", json!({"name": "carl", "password": ""})),
        ("no password", json!({"name": "carl"})),
        (
            "bad email",
            json!({"name": "carl", "password": "long-enough-1", "email": "not-an-address"}),
        ),
        (
            "unknown field",
            json!({"name": "carl", "password": "long-enough-1", "admin": true}),
        ),
        (
            "role at signup",
            json!({"name": "carl", "password": "long-enough-1", "role": 1}),
        ),
    ] {
        let r = hub.uam("POST", "/uam/user/signup", &anon, Some(body));
        expect_err(&mut c, &format!("signup with {what}"), &r, &[400]);
    }
    let r = hub.send(
        "POST",
        "/uam/user/signup",
        &anon,
        &[("Content-Type", "application/json")],
        Some(b"{not json".to_vec()),
    );
    expect_err(&mut c, "signup with malformed JSON", &r, &[400]);
    let r = hub.uam(
        "POST",
        "/uam/user/signup",
        &anon,
        Some(json!({"name": "alice", "password": "another-password"})),
    );
    expect_err(&mut c, "duplicate signup", &r, &[409]);
    c.check(
        "carl was never created",
        hub.uam("GET", "/uam/user/carl", &admin, None).status == 404,
        "GET /uam/user/carl",
    );

    // A user and an organisation cannot share a name.
    hub.create_org(&user("bob"), "acme", 3).expect(200);
    let r = hub.uam(
        "POST",
        "/uam/user/signup",
        &anon,
        Some(json!({"name": "acme", "password": "long-enough-1"})),
    );
    expect_err(&mut c, "signup with an organisation's name", &r, &[409]);
    let r = hub.create_org(&user("bob"), "alice", 3);
    expect_err(&mut c, "organisation with a user's name", &r, &[409]);

    // Sign-in.
    let r = hub.uam("GET", "/uam/user/signin", &user("alice"), None);
    if c.status("signin", &r, &[200]) {
        c.check(
            "signin answer",
            r.json()["name"] == "alice" && r.json()["role"] == 2,
            r.describe(),
        );
    }
    let r = hub.send_from(
        "10.0.0.1",
        "GET",
        "/uam/user/signin",
        &Cred::basic("alice", "wrong-password"),
    );
    expect_err(&mut c, "signin with a wrong password", &r, &[401]);
    let r = hub.send_from(
        "10.0.0.2",
        "GET",
        "/uam/user/signin",
        &Cred::basic("nobody", "whatever-pass"),
    );
    expect_err(&mut c, "signin of an unknown user", &r, &[401]);
    let r = hub.uam("GET", "/uam/user/signin", &anon, None);
    expect_err(&mut c, "signin without credentials", &r, &[401]);
    c.check(
        "401 asks for Basic",
        r.header("www-authenticate").starts_with("Basic"),
        r.describe(),
    );

    // List: administrators only, no password hashes.
    let r = hub.uam("GET", "/uam/user/list", &admin, None);
    if c.status("user list", &r, &[200]) {
        let names: Vec<Value> = array(&r).iter().map(|u| u["name"].clone()).collect();
        c.check(
            "user list content",
            names.contains(&json!("alice"))
                && names.contains(&json!("bob"))
                && names.contains(&json!(ADMIN)),
            r.describe(),
        );
        for u in array(&r) {
            has_keys(&mut c, "user list entry", &u, &["name", "email", "role"]);
        }
        c.check(
            "user list shows no password hashes",
            !r.text().contains("$argon2") && !r.text().contains("password"),
            r.describe(),
        );
    }
    expect_err(
        &mut c,
        "user list by a non-admin",
        &hub.uam("GET", "/uam/user/list", &user("alice"), None),
        REFUSED,
    );
    expect_err(
        &mut c,
        "user list anonymously",
        &hub.uam("GET", "/uam/user/list", &anon, None),
        &[401],
    );

    // Show.
    let r = hub.uam("GET", "/uam/user/alice", &user("alice"), None);
    if c.status("show self", &r, &[200]) {
        has_keys(
            &mut c,
            "show",
            &r.json(),
            &["name", "email", "realname", "comment", "role"],
        );
    }
    expect_err(
        &mut c,
        "show another user",
        &hub.uam("GET", "/uam/user/bob", &user("alice"), None),
        REFUSED,
    );
    c.status(
        "admin shows a user",
        &hub.uam("GET", "/uam/user/bob", &admin, None),
        &[200],
    );
    expect_err(
        &mut c,
        "show an unknown user",
        &hub.uam("GET", "/uam/user/ghost", &admin, None),
        &[404],
    );

    // Update.
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &user("alice"),
        Some(json!({"name": "alice", "email": "alice@new.example", "realname": "Alice B", "comment": "updated"})),
    );
    c.status("update self", &r, &[200]);
    let v = hub.uam("GET", "/uam/user/alice", &admin, None).json();
    c.check(
        "update persisted",
        v["email"] == "alice@new.example"
            && v["realname"] == "Alice B"
            && v["comment"] == "updated",
        &v,
    );
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &user("alice"),
        Some(json!({"name": "alice", "role": 1})),
    );
    expect_err(&mut c, "own role change by a non-admin", &r, REFUSED);
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &user("alice"),
        Some(json!({"name": "bob", "comment": "hacked"})),
    );
    expect_err(&mut c, "updating another user", &r, REFUSED);
    c.check(
        "alice is still a member",
        hub.uam("GET", "/uam/user/alice", &admin, None).json()["role"] == 2,
        "role changed by a refused update",
    );
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &admin,
        Some(json!({"name": "alice", "role": 1})),
    );
    c.status("admin promotes alice", &r, &[200]);
    c.status(
        "alice lists users as admin",
        &hub.uam("GET", "/uam/user/list", &user("alice"), None),
        &[200],
    );
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &admin,
        Some(json!({"name": "alice", "role": 2})),
    );
    c.status("admin demotes alice", &r, &[200]);
    expect_err(
        &mut c,
        "alice demoted",
        &hub.uam("GET", "/uam/user/list", &user("alice"), None),
        REFUSED,
    );
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &admin,
        Some(json!({"name": ADMIN, "role": 2})),
    );
    expect_err(&mut c, "admin changing its own role", &r, REFUSED);
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &admin,
        Some(json!({"name": "alice", "role": 9})),
    );
    expect_err(&mut c, "invalid role", &r, &[400]);
    let r = hub.uam(
        "PUT",
        "/uam/user/update",
        &admin,
        Some(json!({"name": "ghost", "comment": "x"})),
    );
    expect_err(&mut c, "update of an unknown user", &r, &[404]);

    // Password change: the old password is required.
    let r = hub.uam(
        "PUT",
        "/uam/user/password",
        &user("alice"),
        Some(json!({"oldpassword": "wrong-password", "password": "alice-new-password"})),
    );
    expect_err(
        &mut c,
        "password change with a wrong old password",
        &r,
        &[400, 401, 403],
    );
    let r = hub.uam(
        "PUT",
        "/uam/user/password",
        &user("alice"),
        Some(json!({"password": "alice-new-password"})),
    );
    expect_err(
        &mut c,
        "password change without the old password",
        &r,
        &[400],
    );
    let r = hub.uam(
        "PUT",
        "/uam/user/password",
        &user("alice"),
        Some(json!({"oldpassword": "alice-password", "password": "short"})),
    );
    expect_err(&mut c, "password change to a short password", &r, &[400]);
    c.status(
        "old password still works",
        &hub.uam("GET", "/uam/user/signin", &user("alice"), None),
        &[200],
    );
    let r = hub.uam(
        "PUT",
        "/uam/user/password",
        &user("alice"),
        Some(json!({"oldpassword": "alice-password", "password": "alice-new-password"})),
    );
    c.status("password change", &r, &[200]);
    expect_err(
        &mut c,
        "old password after the change",
        &hub.send_from("10.0.0.3", "GET", "/uam/user/signin", &user("alice")),
        &[401],
    );
    let r = hub.send_from("10.0.0.4", "GET", "/v2/", &user("alice"));
    c.status("old password on the registry after the change", &r, &[401]);
    let newpw = Cred::basic("alice", "alice-new-password");
    c.status(
        "new password",
        &hub.uam("GET", "/uam/user/signin", &newpw, None),
        &[200],
    );
    c.status(
        "new password on the registry",
        &hub.send("GET", "/v2/", &newpw, &[], None),
        &[200],
    );

    // Add (administrators).
    let r = hub.uam(
        "POST",
        "/uam/user/add",
        &admin,
        Some(json!({"name": "carol", "password": "carol-password", "role": 1})),
    );
    c.status("admin adds an administrator", &r, &[200]);
    c.status(
        "the new administrator lists users",
        &hub.uam("GET", "/uam/user/list", &user("carol"), None),
        &[200],
    );
    let r = hub.uam(
        "POST",
        "/uam/user/add",
        &newpw,
        Some(json!({"name": "dave", "password": "dave-password"})),
    );
    expect_err(&mut c, "user add by a non-admin", &r, REFUSED);

    // Delete.
    expect_err(
        &mut c,
        "delete by a non-admin",
        &hub.uam("DELETE", "/uam/user/bob", &newpw, None),
        REFUSED,
    );
    c.status(
        "bob still exists",
        &hub.uam("GET", "/uam/user/signin", &user("bob"), None),
        &[200],
    );
    c.status(
        "admin deletes bob",
        &hub.uam("DELETE", "/uam/user/bob", &admin, None),
        &[200],
    );
    expect_err(
        &mut c,
        "deleted user signs in",
        &hub.send_from("10.0.0.5", "GET", "/uam/user/signin", &user("bob")),
        &[401],
    );
    c.status(
        "deleted user on the registry",
        &hub.send_from("10.0.0.6", "GET", "/v2/", &user("bob")),
        &[401],
    );
    expect_err(
        &mut c,
        "delete again",
        &hub.uam("DELETE", "/uam/user/bob", &admin, None),
        &[404],
    );
    expect_err(
        &mut c,
        "admin deletes itself",
        &hub.uam("DELETE", &format!("/uam/user/{ADMIN}"), &admin, None),
        REFUSED,
    );
    c.finish("users");
}

#[test]
fn organizations_members_and_member_privilege() {
    let hub = Hub::start();
    let admin = Cred::admin();
    signup_all(&hub, &["alice", "bob", "carol", "dave"]);
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    let mut c = Checks::default();

    let body = json!({"name": "acme", "email": "ops@acme.example", "comment": "Acme Inc",
                      "url": "https://acme.example", "location": "Earth", "memberprivilege": 2});
    let r = hub.uam("POST", "/uam/organization", &alice, Some(body.clone()));
    if c.status("create organisation", &r, &[200]) {
        let v = r.json();
        has_keys(
            &mut c,
            "organisation answer",
            &v,
            &[
                "name",
                "email",
                "comment",
                "url",
                "location",
                "memberprivilege",
            ],
        );
        for k in [
            "name",
            "email",
            "comment",
            "url",
            "location",
            "memberprivilege",
        ] {
            c.check(&format!("organisation answer {k}"), v[k] == body[k], &v);
        }
    }
    let r = hub.uam(
        "POST",
        "/uam/organization/",
        &bob,
        Some(json!({"name": "bobco"})),
    );
    c.status("create organisation (trailing slash, defaults)", &r, &[200]);
    for (what, b) in [
        (
            "memberprivilege 5",
            json!({"name": "x1", "memberprivilege": 5}),
        ),
        (
            "memberprivilege 1",
            json!({"name": "x2", "memberprivilege": 1}),
        ),
        ("upper-case name", json!({"name": "Acme2"})),
        ("reserved name", json!({"name": "team"})),
        ("empty name", json!({"name": ""})),
        ("unknown field", json!({"name": "x3", "status": 1})),
    ] {
        expect_err(
            &mut c,
            &format!("organisation with {what}"),
            &hub.uam("POST", "/uam/organization", &alice, Some(b)),
            &[400],
        );
    }
    expect_err(
        &mut c,
        "duplicate organisation",
        &hub.uam(
            "POST",
            "/uam/organization",
            &dave,
            Some(json!({"name": "acme"})),
        ),
        &[409],
    );
    expect_err(
        &mut c,
        "organisation anonymously",
        &hub.uam(
            "POST",
            "/uam/organization",
            &Cred::Anon,
            Some(json!({"name": "anon"})),
        ),
        &[401],
    );

    // The creator is its administrator (3).
    let r = hub.uam("GET", "/uam/organization/acme/listuser", &alice, None);
    if c.status("listuser", &r, &[200]) {
        let list = array(&r);
        c.check(
            "creator is admin",
            list == vec![json!({"username": "alice", "role": 3, "orgname": "acme"})],
            r.describe(),
        );
    }

    // Members.
    let r = hub.org_add_user(&alice, "acme", "bob", 4);
    if c.status("add member", &r, &[200]) {
        has_keys(
            &mut c,
            "adduser answer",
            &r.json(),
            &["username", "role", "orgname"],
        );
    }
    c.status(
        "add admin",
        &hub.org_add_user(&alice, "acme", "carol", 3),
        &[200],
    );
    expect_err(
        &mut c,
        "add with role 5",
        &hub.org_add_user(&alice, "acme", "dave", 5),
        &[400],
    );
    expect_err(
        &mut c,
        "add with role 1",
        &hub.org_add_user(&alice, "acme", "dave", 1),
        &[400],
    );
    expect_err(
        &mut c,
        "add an unknown user",
        &hub.org_add_user(&alice, "acme", "ghost", 4),
        &[404],
    );
    expect_err(
        &mut c,
        "add to an unknown organisation",
        &hub.org_add_user(&alice, "nowhere", "dave", 4),
        &[404],
    );
    expect_err(
        &mut c,
        "member adds a user",
        &hub.org_add_user(&bob, "acme", "dave", 4),
        REFUSED,
    );
    expect_err(
        &mut c,
        "outsider adds himself",
        &hub.org_add_user(&dave, "acme", "dave", 3),
        REFUSED,
    );
    let r = hub.uam(
        "POST",
        "/uam/organization/adduser/",
        &carol,
        Some(json!({"username": "dave", "role": 4, "orgname": "acme"})),
    );
    c.status("adduser (trailing slash) by the second admin", &r, &[200]);
    c.status(
        "remove dave again",
        &hub.uam(
            "DELETE",
            "/uam/organization/removeuser/acme/dave",
            &carol,
            None,
        ),
        &[200],
    );
    let r = hub.uam("GET", "/uam/organization/acme/listuser", &carol, None);
    if c.status("listuser by an admin", &r, &[200]) {
        let mut got: Vec<(String, i64)> = array(&r)
            .iter()
            .map(|m| {
                (
                    m["username"].as_str().unwrap_or("").to_string(),
                    m["role"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        got.sort();
        c.check(
            "members",
            got == vec![("alice".into(), 3), ("bob".into(), 4), ("carol".into(), 3)],
            format!("{got:?}"),
        );
    }
    expect_err(
        &mut c,
        "listuser by an outsider",
        &hub.uam("GET", "/uam/organization/acme/listuser", &dave, None),
        REFUSED,
    );

    // Show, list.
    let r = hub.uam("GET", "/uam/organization/acme", &dave, None);
    if c.status("show organisation", &r, &[200]) {
        has_keys(
            &mut c,
            "show organisation",
            &r.json(),
            &[
                "name",
                "email",
                "comment",
                "url",
                "location",
                "memberprivilege",
            ],
        );
    }
    let r = hub.uam("GET", "/uam/organization/bobco", &bob, None);
    if c.status("show defaults", &r, &[200]) {
        c.check(
            "default memberprivilege",
            [2, 3, 4].contains(&r.json()["memberprivilege"].as_i64().unwrap_or(0)),
            r.describe(),
        );
    }
    expect_err(
        &mut c,
        "show an unknown organisation",
        &hub.uam("GET", "/uam/organization/nowhere", &dave, None),
        &[404],
    );
    let r = hub.uam("GET", "/uam/organization/list", &dave, None);
    if c.status("organisation list", &r, &[200]) {
        let names: Vec<Value> = array(&r).iter().map(|o| o["name"].clone()).collect();
        c.check(
            "organisation list",
            names.contains(&json!("acme")) && names.contains(&json!("bobco")),
            r.describe(),
        );
    }

    // The member privilege decides what plain members may do.
    hub.create_repo(&alice, "acme", true, "app", false)
        .expect(200);
    hub.push_image(&alice, "acme/app", "v1");
    let expect_bob = |c: &mut Checks, what: &str, want: (bool, bool, bool), grants: &[&str]| {
        let r = permission(&hub, &bob, "bob", "acme/app");
        if c.status(&format!("{what}: permission"), &r, &[200]) {
            c.check(
                &format!("{what}: permission"),
                perm_triple(&r) == want,
                r.describe(),
            );
        }
        let (_, p) = hub.token(&bob, &["repository:acme/app:pull,push,delete"]);
        c.check(
            &format!("{what}: token"),
            granted(&p, "acme/app") == set(grants),
            &p,
        );
    };
    expect_bob(&mut c, "WRITE", (true, true, false), &["pull", "push"]);
    let r = hub.uam(
        "PUT",
        "/uam/organization/update",
        &alice,
        Some(json!({"name": "acme", "memberprivilege": 3, "comment": "read only now"})),
    );
    c.status("update memberprivilege to READ", &r, &[200]);
    let v = hub.uam("GET", "/uam/organization/acme", &bob, None).json();
    c.check(
        "update persisted",
        v["memberprivilege"] == 3
            && v["comment"] == "read only now"
            && v["url"] == "https://acme.example",
        &v,
    );
    expect_bob(&mut c, "READ", (true, false, false), &["pull"]);
    hub.uam(
        "PUT",
        "/uam/organization/update",
        &alice,
        Some(json!({"name": "acme", "memberprivilege": 4})),
    )
    .expect(200);
    expect_bob(&mut c, "NONE", (false, false, false), &[]);
    expect_err(
        &mut c,
        "member updates the organisation",
        &hub.uam(
            "PUT",
            "/uam/organization/update",
            &bob,
            Some(json!({"name": "acme", "memberprivilege": 2})),
        ),
        REFUSED,
    );
    expect_err(
        &mut c,
        "invalid memberprivilege",
        &hub.uam(
            "PUT",
            "/uam/organization/update",
            &alice,
            Some(json!({"name": "acme", "memberprivilege": 7})),
        ),
        &[400],
    );
    expect_err(
        &mut c,
        "update an unknown organisation",
        &hub.uam(
            "PUT",
            "/uam/organization/update",
            &admin,
            Some(json!({"name": "nowhere", "comment": "x"})),
        ),
        &[404],
    );
    expect_bob(
        &mut c,
        "NONE after refused updates",
        (false, false, false),
        &[],
    );

    // A role change makes bob an administrator (he may delete).
    let r = hub.uam(
        "PUT",
        "/uam/organization/updateorganizationusermap",
        &alice,
        Some(json!({"username": "bob", "role": 3, "orgname": "acme"})),
    );
    c.status("promote bob", &r, &[200]);
    expect_bob(
        &mut c,
        "org admin",
        (true, true, true),
        &["pull", "push", "delete"],
    );
    hub.uam(
        "PUT",
        "/uam/organization/updateorganizationusermap",
        &alice,
        Some(json!({"username": "bob", "role": 4, "orgname": "acme"})),
    )
    .expect(200);

    // Removal, and the last administrator.
    expect_err(
        &mut c,
        "outsider removes a member",
        &hub.uam(
            "DELETE",
            "/uam/organization/removeuser/acme/bob",
            &dave,
            None,
        ),
        REFUSED,
    );
    expect_err(
        &mut c,
        "member removes an admin",
        &hub.uam(
            "DELETE",
            "/uam/organization/removeuser/acme/alice",
            &bob,
            None,
        ),
        REFUSED,
    );
    c.status(
        "admin removes bob",
        &hub.uam(
            "DELETE",
            "/uam/organization/removeuser/acme/bob",
            &carol,
            None,
        ),
        &[200],
    );
    expect_err(
        &mut c,
        "remove bob again",
        &hub.uam(
            "DELETE",
            "/uam/organization/removeuser/acme/bob",
            &carol,
            None,
        ),
        &[404],
    );
    hub.uam(
        "PUT",
        "/uam/organization/update",
        &alice,
        Some(json!({"name": "acme", "memberprivilege": 2})),
    )
    .expect(200);
    expect_bob(&mut c, "removed member", (false, false, false), &[]);
    c.status(
        "alice removes carol",
        &hub.uam(
            "DELETE",
            "/uam/organization/removeuser/acme/carol",
            &alice,
            None,
        ),
        &[200],
    );
    let r = hub.uam(
        "DELETE",
        "/uam/organization/removeuser/acme/alice",
        &alice,
        None,
    );
    expect_err(
        &mut c,
        "the last admin removes herself",
        &r,
        &[400, 403, 409],
    );
    let r = hub.org_add_user(&alice, "acme", "alice", 4);
    expect_err(
        &mut c,
        "the last admin demotes herself",
        &r,
        &[400, 403, 409],
    );
    let r = hub.uam("GET", "/uam/organization/acme/listuser", &alice, None);
    c.check(
        "alice is still the administrator",
        r.status == 200
            && array(&r) == vec![json!({"username": "alice", "role": 3, "orgname": "acme"})],
        r.describe(),
    );

    // Delete.
    expect_err(
        &mut c,
        "outsider deletes the organisation",
        &hub.uam("DELETE", "/uam/acme", &dave, None),
        REFUSED,
    );
    expect_err(
        &mut c,
        "former member deletes the organisation",
        &hub.uam("DELETE", "/uam/acme", &bob, None),
        REFUSED,
    );
    c.status(
        "organisation still there",
        &hub.uam("GET", "/uam/organization/acme", &dave, None),
        &[200],
    );
    // An organisation with repositories cannot go (its name would be free
    // to take, repositories included); emptied, it can.
    c.status(
        "an organisation with repositories is not deleted",
        &hub.uam("DELETE", "/uam/acme", &alice, None),
        &[409],
    );
    for repo in hub
        .uam("GET", "/uam/repository/acme/list", &admin, None)
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = repo["name"].as_str().unwrap_or_default().to_string();
        c.status(
            "its repositories deleted",
            &hub.uam("DELETE", &format!("/uam/{name}"), &alice, None),
            &[200],
        );
    }
    c.status(
        "admin deletes the organisation",
        &hub.uam("DELETE", "/uam/acme", &alice, None),
        &[200],
    );
    expect_err(
        &mut c,
        "deleted organisation",
        &hub.uam("GET", "/uam/organization/acme", &dave, None),
        &[404],
    );
    expect_err(
        &mut c,
        "listuser of a deleted organisation",
        &hub.uam("GET", "/uam/organization/acme/listuser", &admin, None),
        &[404],
    );
    expect_err(
        &mut c,
        "delete again",
        &hub.uam("DELETE", "/uam/acme", &admin, None),
        &[404],
    );
    let (_, p) = hub.token(&alice, &["repository:acme/app:pull,push,delete"]);
    c.check(
        "former admin of a deleted organisation keeps nothing",
        granted(&p, "acme/app").is_empty(),
        &p,
    );
    c.status(
        "DELETE /uam/organization/{org}",
        &hub.uam("DELETE", "/uam/organization/bobco", &bob, None),
        &[200],
    );
    c.finish("organisations");
}

#[test]
fn teams_members_and_permits() {
    let hub = Hub::start();
    signup_all(&hub, &["alice", "bob", "carol", "dave"]);
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    let mut c = Checks::default();
    hub.create_org(&alice, "acme", 4).expect(200);
    hub.org_add_user(&alice, "acme", "bob", 4).expect(200);
    hub.org_add_user(&alice, "acme", "carol", 4).expect(200);
    hub.push_image(&alice, "acme/app", "v1");
    hub.push_image(&alice, "acme/lib", "v1");
    hub.push_image(&alice, "alice/own", "v1");

    let r = hub.uam(
        "POST",
        "/uam/team",
        &alice,
        Some(json!({"teamname": "devs", "comment": "developers", "orgname": "acme"})),
    );
    if c.status("create team", &r, &[200]) {
        let v = r.json();
        has_keys(
            &mut c,
            "team answer",
            &v,
            &["teamname", "comment", "orgname"],
        );
        c.check(
            "team answer",
            v["teamname"] == "devs" && v["comment"] == "developers" && v["orgname"] == "acme",
            &v,
        );
    }
    c.status(
        "create team (trailing slash)",
        &hub.uam(
            "POST",
            "/uam/team/",
            &alice,
            Some(json!({"teamname": "ops", "orgname": "acme"})),
        ),
        &[200],
    );
    expect_err(
        &mut c,
        "member creates a team",
        &hub.create_team(&bob, "acme", "rogue"),
        REFUSED,
    );
    expect_err(
        &mut c,
        "outsider creates a team",
        &hub.create_team(&dave, "acme", "rogue"),
        REFUSED,
    );
    expect_err(
        &mut c,
        "bad team name",
        &hub.create_team(&alice, "acme", "Dev s"),
        &[400],
    );
    expect_err(
        &mut c,
        "duplicate team",
        &hub.create_team(&alice, "acme", "devs"),
        &[409],
    );
    expect_err(
        &mut c,
        "team of an unknown organisation",
        &hub.create_team(&alice, "nowhere", "devs"),
        &[404],
    );
    expect_err(
        &mut c,
        "team without organisation",
        &hub.uam("POST", "/uam/team", &alice, Some(json!({"teamname": "x"}))),
        &[400],
    );

    let r = hub.uam("GET", "/uam/team/acme/listteam", &bob, None);
    if c.status("listteam by a member", &r, &[200]) {
        let list = array(&r);
        for t in &list {
            has_keys(
                &mut c,
                "listteam entry",
                t,
                &["teamname", "comment", "orgname"],
            );
        }
        let names: Vec<Value> = list.iter().map(|t| t["teamname"].clone()).collect();
        c.check(
            "listteam",
            names.contains(&json!("devs")) && names.contains(&json!("ops")),
            r.describe(),
        );
    }
    expect_err(
        &mut c,
        "listteam by an outsider",
        &hub.uam("GET", "/uam/team/acme/listteam", &dave, None),
        REFUSED,
    );

    // Members: role 5 (admin) / 6 (member), organisation members only.
    let r = hub.team_add_user(&alice, "acme", "devs", "bob", 6);
    if c.status("team adduser", &r, &[200]) {
        has_keys(
            &mut c,
            "team adduser answer",
            &r.json(),
            &["teamname", "orgname", "username", "role"],
        );
    }
    c.status(
        "team adduser as team admin",
        &hub.team_add_user(&alice, "acme", "devs", "carol", 5),
        &[200],
    );
    expect_err(
        &mut c,
        "team role 4",
        &hub.team_add_user(&alice, "acme", "devs", "carol", 4),
        &[400],
    );
    expect_err(
        &mut c,
        "team role 3",
        &hub.team_add_user(&alice, "acme", "devs", "carol", 3),
        &[400],
    );
    let r = hub.team_add_user(&alice, "acme", "devs", "dave", 6);
    expect_err(
        &mut c,
        "team adduser of a non-member of the organisation",
        &r,
        &[400, 403, 409],
    );
    expect_err(
        &mut c,
        "team adduser of an unknown user",
        &hub.team_add_user(&alice, "acme", "devs", "ghost", 6),
        &[400, 404],
    );
    expect_err(
        &mut c,
        "adduser to an unknown team",
        &hub.team_add_user(&alice, "acme", "nope", "bob", 6),
        &[404],
    );
    expect_err(
        &mut c,
        "team member adds users",
        &hub.team_add_user(&bob, "acme", "ops", "bob", 5),
        REFUSED,
    );
    let r = hub.uam("GET", "/uam/team/acme/devs/listuser", &carol, None);
    if c.status("team listuser", &r, &[200]) {
        let list = array(&r);
        for m in &list {
            has_keys(
                &mut c,
                "team listuser entry",
                m,
                &["teamname", "orgname", "username", "role"],
            );
        }
        c.check(
            "bob is a member (6)",
            list.iter()
                .any(|m| m["username"] == "bob" && m["role"] == 6),
            r.describe(),
        );
        c.check(
            "carol is an admin (5)",
            list.iter()
                .any(|m| m["username"] == "carol" && m["role"] == 5),
            r.describe(),
        );
        c.check(
            "dave is not in",
            !list.iter().any(|m| m["username"] == "dave"),
            r.describe(),
        );
    }

    // Repositories: permit 2 (WRITE) / 3 (READ), the organisation's own.
    let r = hub.team_add_repo(&carol, "acme", "devs", "app", 2);
    if c.status("addrepository by the team admin", &r, &[200]) {
        has_keys(
            &mut c,
            "addrepository answer",
            &r.json(),
            &["orgname", "reponame", "teamname", "permit"],
        );
    }
    expect_err(
        &mut c,
        "permit 4",
        &hub.team_add_repo(&alice, "acme", "devs", "lib", 4),
        &[400],
    );
    expect_err(
        &mut c,
        "permit 1",
        &hub.team_add_repo(&alice, "acme", "devs", "lib", 1),
        &[400],
    );
    expect_err(
        &mut c,
        "a repository of another namespace",
        &hub.team_add_repo(&alice, "acme", "devs", "alice/own", 2),
        &[400, 403, 404],
    );
    expect_err(
        &mut c,
        "a repository the organisation does not have",
        &hub.team_add_repo(&alice, "acme", "devs", "own", 2),
        &[404],
    );
    expect_err(
        &mut c,
        "team member adds a repository",
        &hub.team_add_repo(&bob, "acme", "devs", "lib", 2),
        REFUSED,
    );
    let r = hub.uam("GET", "/uam/team/acme/devs/listrepository", &bob, None);
    if c.status("listrepository", &r, &[200]) {
        let list = array(&r);
        c.check(
            "listrepository",
            list.len() == 1
                && list[0]["orgname"] == "acme"
                && list[0]["reponame"] == "app"
                && list[0]["teamname"] == "devs"
                && list[0]["permit"] == 2,
            r.describe(),
        );
    }
    let bob_can = |repo: &str| {
        let (_, p) = hub.token(&bob, &[&format!("repository:{repo}:pull,push,delete")]);
        granted(&p, repo)
    };
    c.check(
        "WRITE permit: pull and push",
        bob_can("acme/app") == set(&["pull", "push"]),
        format!("{:?}", bob_can("acme/app")),
    );
    c.check(
        "no permit on acme/lib",
        bob_can("acme/lib").is_empty(),
        format!("{:?}", bob_can("acme/lib")),
    );
    c.check(
        "nothing on alice/own",
        bob_can("alice/own").is_empty(),
        format!("{:?}", bob_can("alice/own")),
    );
    c.status(
        "bob pushes with the permit",
        &hub.push_blob(&bob, "acme/app", b"team blob"),
        &[201],
    );
    let r = hub.uam(
        "PUT",
        "/uam/team/updateteamrepositorymap",
        &alice,
        Some(json!({"orgname": "acme", "reponame": "app", "teamname": "devs", "permit": 3})),
    );
    c.status("updateteamrepositorymap to READ", &r, &[200]);
    c.check(
        "READ permit: pull",
        bob_can("acme/app") == set(&["pull"]),
        format!("{:?}", bob_can("acme/app")),
    );
    let r = hub.uam(
        "PUT",
        "/uam/team/updateteamusermap",
        &alice,
        Some(json!({"teamname": "devs", "orgname": "acme", "username": "bob", "role": 5})),
    );
    c.status("updateteamusermap", &r, &[200]);
    let r = hub.uam("GET", "/uam/team/acme/devs/listuser", &alice, None);
    c.check(
        "bob is a team admin now",
        array(&r)
            .iter()
            .any(|m| m["username"] == "bob" && m["role"] == 5),
        r.describe(),
    );

    expect_err(
        &mut c,
        "outsider removes a permit",
        &hub.uam(
            "DELETE",
            "/uam/team/removerepository/acme/devs/app",
            &dave,
            None,
        ),
        REFUSED,
    );
    c.status(
        "removerepository",
        &hub.uam(
            "DELETE",
            "/uam/team/removerepository/acme/devs/app",
            &alice,
            None,
        ),
        &[200],
    );
    expect_err(
        &mut c,
        "removerepository again",
        &hub.uam(
            "DELETE",
            "/uam/team/removerepository/acme/devs/app",
            &alice,
            None,
        ),
        &[404],
    );
    c.check(
        "no permit, no access",
        bob_can("acme/app").is_empty(),
        format!("{:?}", bob_can("acme/app")),
    );

    expect_err(
        &mut c,
        "outsider removes a team member",
        &hub.uam("DELETE", "/uam/team/removeuser/acme/devs/bob", &dave, None),
        REFUSED,
    );
    c.status(
        "removeuser",
        &hub.uam("DELETE", "/uam/team/removeuser/acme/devs/bob", &carol, None),
        &[200],
    );
    expect_err(
        &mut c,
        "removeuser again",
        &hub.uam("DELETE", "/uam/team/removeuser/acme/devs/bob", &carol, None),
        &[404],
    );
    let r = hub.uam("GET", "/uam/team/acme/devs/listuser", &alice, None);
    c.check(
        "bob left the team",
        !array(&r).iter().any(|m| m["username"] == "bob"),
        r.describe(),
    );

    // Leaving the organisation ends team membership.
    hub.team_add_user(&alice, "acme", "ops", "carol", 6)
        .expect(200);
    hub.team_add_repo(&alice, "acme", "ops", "lib", 2)
        .expect(200);
    hub.uam(
        "DELETE",
        "/uam/organization/removeuser/acme/carol",
        &alice,
        None,
    )
    .expect(200);
    let r = hub.uam("GET", "/uam/team/acme/ops/listuser", &alice, None);
    c.check(
        "carol left ops with the organisation",
        !array(&r).iter().any(|m| m["username"] == "carol"),
        r.describe(),
    );
    let (_, p) = hub.token(&carol, &["repository:acme/lib:pull,push"]);
    c.check(
        "carol keeps no permit",
        granted(&p, "acme/lib").is_empty(),
        &p,
    );

    expect_err(
        &mut c,
        "member deletes a team",
        &hub.uam("DELETE", "/uam/team/acme/ops", &bob, None),
        REFUSED,
    );
    c.status(
        "delete team",
        &hub.uam("DELETE", "/uam/team/acme/devs", &alice, None),
        &[200],
    );
    expect_err(
        &mut c,
        "delete team again",
        &hub.uam("DELETE", "/uam/team/acme/devs", &alice, None),
        &[404],
    );
    let r = hub.uam("GET", "/uam/team/acme/listteam", &alice, None);
    c.check(
        "devs is gone",
        !array(&r).iter().any(|t| t["teamname"] == "devs"),
        r.describe(),
    );
    c.finish("teams");
}

#[test]
fn repositories_create_update_list_show_delete_and_permission() {
    let hub = Hub::start();
    let admin = Cred::admin();
    signup_all(&hub, &["alice", "bob"]);
    let (alice, bob) = (user("alice"), user("bob"));
    let mut c = Checks::default();
    hub.create_org(&alice, "acme", 4).expect(200);
    hub.org_add_user(&alice, "acme", "bob", 4).expect(200);

    let r = hub.uam(
        "POST",
        "/uam/repository",
        &alice,
        Some(json!({"name": "app", "ispublic": false, "comment": "the app", "username": "alice"})),
    );
    if c.status("create repository", &r, &[200]) {
        let v = r.json();
        has_keys(
            &mut c,
            "repository answer",
            &v,
            &["name", "ispublic", "comment"],
        );
        c.check(
            "repository answer",
            (v["name"] == "alice/app" || v["name"] == "app")
                && v["ispublic"] == false
                && v["comment"] == "the app",
            &v,
        );
    }
    c.status(
        "org repository (trailing slash)",
        &hub.uam(
            "POST",
            "/uam/repository/",
            &alice,
            Some(json!({"name": "lib", "ispublic": true, "orgname": "acme"})),
        ),
        &[200],
    );
    for (what, by, b, want) in [
        (
            "in someone else's namespace",
            &bob,
            json!({"name": "x", "ispublic": true, "username": "alice"}),
            REFUSED,
        ),
        (
            "by a plain org member",
            &bob,
            json!({"name": "x", "ispublic": true, "orgname": "acme"}),
            REFUSED,
        ),
        (
            "with orgname and username",
            &alice,
            json!({"name": "x", "ispublic": true, "username": "alice", "orgname": "acme"}),
            &[400][..],
        ),
        (
            "with neither",
            &alice,
            json!({"name": "x", "ispublic": true}),
            &[400],
        ),
        (
            "duplicate",
            &alice,
            json!({"name": "app", "ispublic": true, "username": "alice"}),
            &[409],
        ),
        (
            "upper-case name",
            &alice,
            json!({"name": "App", "ispublic": true, "username": "alice"}),
            &[400],
        ),
        (
            "unknown namespace",
            &admin,
            json!({"name": "x", "ispublic": true, "username": "ghost"}),
            &[404],
        ),
        (
            "no ispublic",
            &alice,
            json!({"name": "y", "username": "alice"}),
            &[400],
        ),
        (
            "unknown field",
            &alice,
            json!({"name": "z", "ispublic": true, "username": "alice", "owner": "x"}),
            &[400],
        ),
    ] {
        expect_err(
            &mut c,
            &format!("create {what}"),
            &hub.uam("POST", "/uam/repository", by, Some(b)),
            want,
        );
    }
    let digest = hub.push_image(&alice, "alice/app", "v1");
    hub.push_image(&alice, "alice/app", "v2");

    // Show and list follow pull permission.
    let r = hub.uam("GET", "/uam/repository/alice/app", &alice, None);
    if c.status("show", &r, &[200]) {
        c.check(
            "show",
            r.json()["ispublic"] == false && r.json()["comment"] == "the app",
            r.describe(),
        );
    }
    expect_err(
        &mut c,
        "show a private repository to an outsider",
        &hub.uam("GET", "/uam/repository/alice/app", &bob, None),
        &[403, 404],
    );
    expect_err(
        &mut c,
        "show anonymously",
        &hub.uam("GET", "/uam/repository/alice/app", &Cred::Anon, None),
        &[401],
    );
    let names = |r: &Resp| -> Vec<String> {
        array(r)
            .iter()
            .map(|e| {
                e["name"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("alice/")
                    .to_string()
            })
            .collect()
    };
    let r = hub.uam("GET", "/uam/repository/alice/list", &alice, None);
    c.check(
        "owner's list",
        r.status == 200 && names(&r).contains(&"app".to_string()),
        r.describe(),
    );
    let r = hub.uam("GET", "/uam/repository/alice/list", &bob, None);
    c.check(
        "outsider's list hides private repositories",
        r.status == 200 && !names(&r).contains(&"app".to_string()),
        r.describe(),
    );
    let r = hub.uam("GET", "/uam/repository/acme/list", &bob, None);
    c.check(
        "org list",
        r.status == 200 && array(&r).len() == 1,
        r.describe(),
    );

    // Update.
    expect_err(
        &mut c,
        "outsider updates",
        &hub.uam(
            "PUT",
            "/uam/repository/update",
            &bob,
            Some(json!({"name": "app", "ispublic": true, "username": "alice"})),
        ),
        REFUSED,
    );
    c.status(
        "still private",
        &hub.get_manifest(&Cred::Anon, "alice/app", "v1"),
        &[401],
    );
    let r = hub.uam(
        "PUT",
        "/uam/repository/update",
        &alice,
        Some(
            json!({"name": "app", "ispublic": true, "comment": "now public", "username": "alice"}),
        ),
    );
    c.status("update", &r, &[200]);
    let r = hub.uam("GET", "/uam/repository/alice/app", &bob, None);
    c.check(
        "update persisted",
        r.status == 200 && r.json()["ispublic"] == true && r.json()["comment"] == "now public",
        r.describe(),
    );
    c.status(
        "public: anonymous pull",
        &hub.get_manifest(&Cred::Anon, "alice/app", "v1"),
        &[200],
    );
    let r = hub.uam("GET", "/uam/repository/alice/list", &bob, None);
    c.check(
        "outsider's list shows public repositories",
        names(&r).contains(&"app".to_string()),
        r.describe(),
    );
    expect_err(
        &mut c,
        "update an unknown repository",
        &hub.uam(
            "PUT",
            "/uam/repository/update",
            &alice,
            Some(json!({"name": "nope", "comment": "x", "username": "alice"})),
        ),
        &[404],
    );
    expect_err(
        &mut c,
        "update with both owners",
        &hub.uam(
            "PUT",
            "/uam/repository/update",
            &alice,
            Some(json!({"name": "app", "comment": "x", "username": "alice", "orgname": "acme"})),
        ),
        &[400],
    );

    // Effective permission.
    let r = permission(&hub, &alice, "alice", "alice/app");
    if c.status("permission", &r, &[200]) {
        has_keys(
            &mut c,
            "permission answer",
            &r.json(),
            &["username", "repository", "pull", "push", "delete"],
        );
        c.check(
            "owner's permission",
            perm_triple(&r) == (true, true, true),
            r.describe(),
        );
    }
    let r = permission(&hub, &admin, "bob", "alice/app");
    c.check(
        "bob on a public repository",
        r.status == 200 && perm_triple(&r) == (true, false, false),
        r.describe(),
    );
    let r = permission(&hub, &bob, "bob", "acme/lib");
    c.check(
        "NONE member on a public org repository",
        r.status == 200 && perm_triple(&r) == (true, false, false),
        r.describe(),
    );
    expect_err(
        &mut c,
        "asking about someone else",
        &permission(&hub, &bob, "alice", "alice/app"),
        REFUSED,
    );
    expect_err(
        &mut c,
        "permission of an unknown user",
        &permission(&hub, &admin, "ghost", "alice/app"),
        &[404],
    );

    // Delete removes the repository and its content.
    expect_err(
        &mut c,
        "outsider deletes",
        &hub.uam("DELETE", "/uam/alice/app", &bob, None),
        REFUSED,
    );
    expect_err(
        &mut c,
        "org member deletes an org repository",
        &hub.uam("DELETE", "/uam/acme/lib", &bob, None),
        REFUSED,
    );
    c.status(
        "refused deletes deleted nothing",
        &hub.get_manifest(&alice, "alice/app", "v1"),
        &[200],
    );
    c.status(
        "delete",
        &hub.uam("DELETE", "/uam/alice/app", &alice, None),
        &[200],
    );
    expect_err(
        &mut c,
        "show after delete",
        &hub.uam("GET", "/uam/repository/alice/app", &admin, None),
        &[404],
    );
    for reference in ["v1", "v2", digest.as_str()] {
        let r = hub.get_manifest(&admin, "alice/app", reference);
        c.status(
            &format!("manifest {reference} after the repository's delete"),
            &r,
            &[404],
        );
    }
    let r = hub.send("GET", "/v2/alice/app/tags/list", &admin, &[], None);
    c.check(
        "tags after delete",
        r.status == 404 || r.json()["tags"].as_array().is_none_or(|t| t.is_empty()),
        r.describe(),
    );
    let r = hub.catalog(&admin);
    c.check(
        "catalog after delete",
        !r.text().contains("alice/app"),
        r.describe(),
    );
    expect_err(
        &mut c,
        "delete again",
        &hub.uam("DELETE", "/uam/alice/app", &alice, None),
        &[404],
    );
    c.status(
        "delete through /uam/repository/{ns}/{repo}",
        &hub.uam("DELETE", "/uam/repository/acme/lib", &alice, None),
        &[200],
    );
    // Pushed again: a new, private repository without the old content.
    hub.push_image(&alice, "alice/app", "v3");
    c.status(
        "old tag stays gone",
        &hub.get_manifest(&admin, "alice/app", "v1"),
        &[404],
    );
    let r = hub.uam("GET", "/uam/repository/alice/app", &alice, None);
    c.check(
        "re-created private",
        r.status == 200 && r.json()["ispublic"] == false,
        r.describe(),
    );
    c.finish("repositories");
}

#[test]
fn api_tokens_are_limited_passwords() {
    let hub = Hub::start();
    signup_all(&hub, &["alice", "bob"]);
    let (alice, bob) = (user("alice"), user("bob"));
    let admin = Cred::admin();
    let mut c = Checks::default();
    hub.push_image(&alice, "alice/app", "v1");
    hub.push_image(&alice, "alice/other", "v1");
    hub.push_image(&bob, "bob/app", "v1");

    let r = hub.uam(
        "POST",
        "/uam/user/token",
        &alice,
        Some(json!({"name": "ci", "scopes": ["repository:alice/app:pull"]})),
    );
    r.expect(200);
    let v = r.json();
    let secret = v["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {}", r.describe()))
        .to_string();
    let id = v["id"].as_str().unwrap().to_string();
    c.check(
        "token answer",
        v["name"] == "ci" && v["scopes"] == json!(["repository:alice/app:pull"]),
        &v,
    );
    let r = hub.uam("GET", "/uam/user/token", &alice, None);
    if c.status("token list", &r, &[200]) {
        c.check(
            "listed",
            array(&r)
                .iter()
                .any(|t| t["id"] == id.as_str() && t["name"] == "ci"),
            r.describe(),
        );
        c.check(
            "list never shows the secret",
            !r.text().contains(&secret),
            r.describe(),
        );
    }
    let r = hub.uam("GET", "/uam/user/token", &bob, None);
    c.check(
        "bob does not see alice's tokens",
        r.status == 200 && !r.text().contains(&id),
        r.describe(),
    );

    // As the password of its owner, within its scopes only.
    let tok = Cred::basic("alice", &secret);
    c.status(
        "pull within scope (Basic)",
        &hub.get_manifest(&tok, "alice/app", "v1"),
        &[200],
    );
    let blob = b"pushed with a pull token".to_vec();
    let r = hub.push_blob(&tok, "alice/app", &blob);
    c.check("push beyond scope", is_refusal(&r), r.describe());
    c.status(
        "nothing written",
        &hub.head_blob(&admin, "alice/app", &sha256(&blob)),
        &[404],
    );
    let r = hub.get_manifest(&tok, "alice/other", "v1");
    c.check(
        "another repository of the owner",
        is_refusal(&r),
        r.describe(),
    );
    let r = hub.get_manifest(&tok, "bob/app", "v1");
    c.check("someone else's repository", is_refusal(&r), r.describe());
    let r = hub.token_resp(
        &tok,
        &[
            "repository:alice/app:pull,push,delete",
            "repository:alice/other:pull",
        ],
    );
    if c.status("token service with an API token", &r, &[200]) {
        let (_, p) = jwt_parts(r.json()["token"].as_str().unwrap());
        c.check(
            "grants within scope",
            granted(&p, "alice/app") == set(&["pull"]),
            &p,
        );
        c.check(
            "grants nothing outside",
            granted(&p, "alice/other").is_empty(),
            &p,
        );
    }
    c.status(
        "docker login with an API token",
        &hub.token_resp(&tok, &[]),
        &[200],
    );
    let r = hub.get_manifest(&Cred::basic("bob", &secret), "alice/app", "v1");
    c.status("the token with another user name", &r, &[401]);

    // The catalog, too, stays within the token's scopes.
    let r = hub.catalog(&tok);
    c.check(
        "catalog with an API token (Basic)",
        r.status == 200 && r.text().contains("alice/app") && !r.text().contains("alice/other"),
        r.describe(),
    );
    let (t, _) = hub.token(&tok, &["registry:catalog:*"]);
    let r = hub.catalog(&Cred::Bearer(t));
    c.check(
        "catalog with a bearer token obtained with an API token",
        r.status == 200 && r.text().contains("alice/app") && !r.text().contains("alice/other"),
        r.describe(),
    );

    // No administration with API tokens.
    for (what, m, path, body) in [
        ("signin", "GET", "/uam/user/signin", None),
        (
            "create a repository",
            "POST",
            "/uam/repository",
            Some(json!({"name": "x", "ispublic": true, "username": "alice"})),
        ),
        (
            "update the account",
            "PUT",
            "/uam/user/update",
            Some(json!({"name": "alice", "comment": "x"})),
        ),
        (
            "change the password",
            "PUT",
            "/uam/user/password",
            Some(json!({"oldpassword": secret, "password": "stolen-password"})),
        ),
        (
            "mint another token",
            "POST",
            "/uam/user/token",
            Some(json!({"name": "more", "scopes": ["repository:alice/*:pull,push,delete"]})),
        ),
        ("delete a repository", "DELETE", "/uam/alice/other", None),
    ] {
        expect_err(
            &mut c,
            &format!("API token: {what}"),
            &hub.uam(m, path, &tok, body),
            REFUSED,
        );
    }
    c.status(
        "alice/other survived",
        &hub.get_manifest(&alice, "alice/other", "v1"),
        &[200],
    );
    c.status(
        "the password did not change",
        &hub.uam("GET", "/uam/user/signin", &alice, None),
        &[200],
    );

    // Scopes never exceed the owner's rights; prefixes work.
    let r = hub.uam(
        "POST",
        "/uam/user/token",
        &alice,
        Some(json!({"name": "greedy", "scopes": ["repository:bob/app:pull,push,delete"]})),
    );
    if r.status == 200 {
        let greedy = Cred::basic("alice", r.json()["token"].as_str().unwrap());
        let r = hub.get_manifest(&greedy, "bob/app", "v1");
        c.check(
            "a token scoped to someone else's repository",
            is_refusal(&r),
            r.describe(),
        );
    } else {
        expect_err(
            &mut c,
            "token scoped to someone else's repository",
            &r,
            &[400, 403],
        );
    }
    let r = hub.uam(
        "POST",
        "/uam/user/token",
        &alice,
        Some(json!({"name": "push", "scopes": ["repository:alice/*:pull,push"]})),
    );
    r.expect(200);
    let pusher = Cred::basic("alice", r.json()["token"].as_str().unwrap());
    c.status(
        "prefix scope: push creates",
        &hub.push_blob(&pusher, "alice/new", b"new repo blob"),
        &[201],
    );
    let r = hub.uam("GET", "/uam/repository/alice/new", &alice, None);
    c.check(
        "created private",
        r.status == 200 && r.json()["ispublic"] == false,
        r.describe(),
    );
    let d = hub
        .get_manifest(&alice, "alice/app", "v1")
        .header("docker-content-digest");
    let r = hub.delete_manifest(&pusher, "alice/app", &d);
    c.check(
        "no delete without the delete scope",
        is_refusal(&r),
        r.describe(),
    );
    let r = hub.push_blob(&pusher, "bob/app", b"into bob");
    c.check(
        "prefix scope does not reach other namespaces",
        is_refusal(&r),
        r.describe(),
    );
    for bad in [
        json!(["registry:catalog:*"]),
        json!(["repository:Bad:pull"]),
        json!(["repository:alice/app:"]),
    ] {
        let r = hub.uam(
            "POST",
            "/uam/user/token",
            &alice,
            Some(json!({"name": "bad", "scopes": bad})),
        );
        expect_err(&mut c, &format!("invalid scopes {bad}"), &r, &[400]);
    }
    expect_err(
        &mut c,
        "token without a name",
        &hub.uam("POST", "/uam/user/token", &alice, Some(json!({"name": ""}))),
        &[400],
    );

    // Expiry.
    let r = hub.uam(
        "POST",
        "/uam/user/token",
        &alice,
        // Expiry is kept in whole seconds: 2 s leaves at least 1 s of use.
        Some(json!({"name": "short", "scopes": ["repository:alice/app:pull"], "expires_in": 2})),
    );
    r.expect(200);
    let short = Cred::basic("alice", r.json()["token"].as_str().unwrap());
    c.status(
        "short-lived token at once",
        &hub.get_manifest(&short, "alice/app", "v1"),
        &[200],
    );
    std::thread::sleep(Duration::from_millis(3200));
    c.status(
        "short-lived token after expiry",
        &hub.get_manifest(&short, "alice/app", "v1"),
        &[401],
    );

    // Deletion.
    expect_err(
        &mut c,
        "bob deletes alice's token",
        &hub.uam("DELETE", &format!("/uam/user/token/{id}"), &bob, None),
        &[403, 404],
    );
    c.status(
        "still works",
        &hub.get_manifest(&tok, "alice/app", "v1"),
        &[200],
    );
    c.status(
        "delete the token",
        &hub.uam("DELETE", &format!("/uam/user/token/{id}"), &alice, None),
        &[200],
    );
    c.status(
        "deleted token on the registry",
        &hub.get_manifest(&tok, "alice/app", "v1"),
        &[401],
    );
    c.status(
        "deleted token at the token service",
        &hub.token_resp(&tok, &["repository:alice/app:pull"]),
        &[401],
    );
    let r = hub.uam("GET", "/uam/user/token", &alice, None);
    c.check("gone from the list", !r.text().contains(&id), r.describe());
    expect_err(
        &mut c,
        "delete again",
        &hub.uam("DELETE", &format!("/uam/user/token/{id}"), &alice, None),
        &[404],
    );
    c.finish("API tokens");
}

#[test]
fn audit_log_records_and_filters() {
    let hub = Hub::start();
    signup_all(&hub, &["alice", "bob"]);
    let (alice, bob) = (user("alice"), user("bob"));
    let admin = Cred::admin();
    let mut c = Checks::default();
    let t0 = now();

    hub.create_repo(&alice, "alice", false, "app", true)
        .expect(200);
    let base = hub.push_image(&alice, "alice/app", "v1");
    hub.get_manifest(&alice, "alice/app", "v1").expect(200);
    hub.send(
        "GET",
        "/v2/alice/app/manifests/v1",
        &bob,
        &[("Accept", ACCEPT), ("X-Real-IP", "10.7.7.7")],
        None,
    )
    .expect(200);
    let variant = hub.push_variant(&alice, "alice/app", "v1");
    hub.delete_manifest(&alice, "alice/app", &variant)
        .expect(202);
    hub.uam(
        "PUT",
        "/uam/repository/update",
        &alice,
        Some(json!({"name": "app", "comment": "audited", "username": "alice"})),
    )
    .expect(200);
    hub.push_image(&bob, "bob/own", "v1");

    let want: Vec<(&str, &str, &str, &str)> = vec![
        // (user, action, target, addr)
        ("alice", "repository.create", "alice/app", "127.0.0.1"),
        ("alice", "push", "v1", "127.0.0.1"),
        ("alice", "pull", "v1", "127.0.0.1"),
        ("bob", "pull", "v1", "10.7.7.7"),
        ("alice", "delete", variant.as_str(), "127.0.0.1"),
        ("alice", "repository.update", "alice/app", "127.0.0.1"),
    ];
    let found = |events: &[Value], (u, a, t, addr): (&str, &str, &str, &str)| {
        events.iter().any(|e| {
            e["user"] == u
                && e["action"] == a
                && e["repository"] == "alice/app"
                && e["target"] == t
                && e["addr"] == addr
                && e["at"]
                    .as_i64()
                    .is_some_and(|at| at >= t0 - 5 && at <= now() + 5)
        })
    };
    let events = poll(Duration::from_secs(5), || {
        let ev = hub.audit(&admin, "repo=alice/app");
        want.iter().all(|w| found(&ev, *w)).then_some(ev)
    });
    let events = events.unwrap_or_else(|| hub.audit(&admin, "repo=alice/app"));
    for w in &want {
        c.check(
            "recorded",
            found(&events, *w),
            format!("no event {w:?} in {events:#?}"),
        );
    }
    if let Some(e) = events.first() {
        has_keys(
            &mut c,
            "audit event",
            e,
            &["user", "action", "repository", "target", "addr", "at"],
        );
    }
    c.check(
        "blob pushes are recorded with their digest",
        events.iter().any(|e| {
            e["action"] == "push"
                && e["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("sha256:"))
        }),
        format!("{events:#?}"),
    );
    c.check(
        "only alice/app",
        events.iter().all(|e| e["repository"] == "alice/app"),
        format!("{events:#?}"),
    );
    let _ = base;

    // Filters.
    let pulls = hub.audit(&admin, "repo=alice/app&action=pull");
    c.check(
        "action filter",
        !pulls.is_empty() && pulls.iter().all(|e| e["action"] == "pull"),
        format!("{pulls:#?}"),
    );
    let bobs = hub.audit(&admin, "user=bob");
    c.check(
        "user filter",
        !bobs.is_empty() && bobs.iter().all(|e| e["user"] == "bob"),
        format!("{bobs:#?}"),
    );
    c.check(
        "user filter includes bob's own pushes",
        bobs.iter().any(|e| e["repository"] == "bob/own"),
        format!("{bobs:#?}"),
    );
    let future = hub.audit(&admin, &format!("since={}", now() + 3600));
    c.check(
        "since in the future",
        future.is_empty(),
        format!("{future:#?}"),
    );
    let past = hub.audit(&admin, &format!("until={}", t0 - 3600));
    c.check("until in the past", past.is_empty(), format!("{past:#?}"));
    let window = hub.audit(
        &admin,
        &format!("repo=alice/app&since={}&until={}", t0 - 5, now() + 5),
    );
    c.check(
        "time window",
        window.len() >= want.len(),
        format!("{window:#?}"),
    );

    // Non-administrators see only their own events.
    let mine = hub.audit(&alice, "");
    c.check(
        "alice sees her events",
        !mine.is_empty() && mine.iter().all(|e| e["user"] == "alice"),
        format!("{mine:#?}"),
    );
    let r = hub.uam("GET", "/uam/audit?user=bob", &alice, None);
    expect_err(&mut c, "alice asks for bob's events", &r, REFUSED);
    let theirs = hub.audit(&bob, "repo=alice/app");
    c.check(
        "bob sees only his events on alice/app",
        !theirs.is_empty() && theirs.iter().all(|e| e["user"] == "bob"),
        format!("{theirs:#?}"),
    );
    expect_err(
        &mut c,
        "anonymous audit",
        &hub.uam("GET", "/uam/audit", &Cred::Anon, None),
        &[401],
    );
    c.finish("audit");
}

/// Deleting an organisation or a user must not hand its repositories to
/// whoever takes the name next.
#[test]
fn deleted_namespaces_cannot_be_taken_over() {
    let hub = Hub::start();
    let admin = Cred::admin();
    signup_all(&hub, &["alice", "victim", "mallory"]);
    let (alice, victim, mallory) = (user("alice"), user("victim"), user("mallory"));
    let mut c = Checks::default();
    hub.create_org(&alice, "acme", 3).expect(200);
    hub.push_image(&alice, "acme/secret", "v1");
    hub.push_image(&victim, "victim/secret", "v1");
    // A namespace with repositories cannot be deleted: its name would be
    // free to take, repositories included.
    c.status(
        "acme with a repository is not deleted",
        &hub.uam("DELETE", "/uam/acme", &alice, None),
        &[409],
    );
    c.status(
        "victim with a repository is not deleted",
        &hub.uam("DELETE", "/uam/user/victim", &admin, None),
        &[409],
    );
    // Repositories left behind by some other way (pushed while the hub
    // ran standalone) are not claimed by signing up under their name.
    c.status(
        "acme/secret deleted",
        &hub.uam("DELETE", "/uam/acme/secret", &alice, None),
        &[200],
    );
    c.status(
        "acme deleted once empty",
        &hub.uam("DELETE", "/uam/acme", &alice, None),
        &[200],
    );
    c.status(
        "victim/secret deleted",
        &hub.uam("DELETE", "/uam/victim/secret", &admin, None),
        &[200],
    );
    c.status(
        "victim deleted once empty",
        &hub.uam("DELETE", "/uam/user/victim", &admin, None),
        &[200],
    );

    // A namespace re-created under the same name starts empty: the old
    // repositories and their content went before the name was freed.
    let r = hub.create_org(&mallory, "acme", 2);
    if r.status == 200 {
        let r = hub.get_manifest(&mallory, "acme/secret", "v1");
        c.check(
            "a new organisation of the same name inherits nothing (pull)",
            is_refusal(&r) || r.status == 404,
            r.describe(),
        );
    }
    let r = hub.signup("victim", "mallory-password");
    if r.status == 200 {
        let m = Cred::basic("victim", "mallory-password");
        let r = hub.get_manifest(&m, "victim/secret", "v1");
        c.check(
            "a new user of the same name inherits nothing (pull)",
            is_refusal(&r) || r.status == 404,
            r.describe(),
        );
    }
    c.finish("namespace takeover");
}

/// `[dockyard] standalone = true` (the shipped default): no accounts, no
/// authentication.
#[test]
fn standalone_hub_has_no_accounts() {
    let srv = crate::common::Server::start();
    let http = client();
    let r = http
        .post(srv.url("/uam/user/signup"))
        .body(json!({"name": "alice", "password": "alice-password"}).to_string())
        .send()
        .unwrap();
    assert_ne!(r.status(), 200, "no accounts on a standalone hub");
    let r = http.get(srv.url("/v2/")).send().unwrap();
    assert_eq!(r.status(), 200, "no authentication on a standalone hub");
    assert!(r.headers().get("www-authenticate").is_none());
    let data = b"open blob";
    let r = http
        .post(srv.url(&format!(
            "/v2/any/repo/blobs/uploads/?digest={}",
            sha256(data)
        )))
        .body(data.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "anyone may push to a standalone hub");
}
