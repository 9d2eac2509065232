//! v1 with accounts: `/v1/users/` (login check and sign-up), the token
//! flow (`X-Docker-Token: true` → a verifiable JWT for one repository),
//! Basic credentials, denied pushes and pulls, images that stay private
//! when their id is known, search limited to what the caller may pull,
//! and the audit log.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::hub::{ADMIN, Cred, Hub, jwt_parts};
use crate::*;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn session(c: &V1, login: Option<&str>, method: &str, repo: &str, body: Option<Value>) -> Resp {
    let path = if method == "GET" {
        format!("/v1/repositories/{repo}/images")
    } else {
        format!("/v1/repositories/{repo}/")
    };
    c.send(
        method,
        &path,
        login,
        &[
            ("X-Docker-Token", "true"),
            ("Content-Type", "application/json"),
        ],
        match body {
            Some(b) => Payload::Bytes(b.to_string().into_bytes()),
            None => Payload::None,
        },
    )
}

fn search_names(c: &V1, auth: Option<&str>, q: &str) -> Vec<String> {
    let r = c.get(&format!("/v1/search?q={q}&n=100"), auth);
    assert_eq!(r.status, 200, "{}", r.describe());
    let v = r.json();
    let mut names: Vec<String> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(v["num_results"], names.len(), "{v}");
    names.sort();
    names
}

#[test]
fn users_tokens_basic_and_denials() {
    let hub = Hub::start();
    let c = V1::new(&hub.base);

    // Sign-up under the /uam rules, then the login check.
    let signup = |body: Value| {
        c.send(
            "POST",
            "/v1/users/",
            None,
            &[("Content-Type", "application/json")],
            Payload::Bytes(body.to_string().into_bytes()),
        )
    };
    let r = signup(
        json!({"username": "alice", "password": "alice-password", "email": "alice@example.com"}),
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (201, "\"User Created\""),
        "{}",
        r.describe()
    );
    expect_error(
        &signup(
            json!({"username": "alice", "password": "alice-password", "email": "alice@example.com"}),
        ),
        400,
        "already exists",
    );
    expect_error(
        &signup(json!({"username": "shorty", "password": "short"})),
        400,
        "at least 8",
    );
    expect_error(
        &signup(json!({"username": "Bad Name", "password": "long-enough"})),
        400,
        "",
    );
    expect_error(
        &signup(json!({"username": ADMIN, "password": "long-enough"})),
        400,
        "already exists",
    );
    expect_error(
        &c.send(
            "POST",
            "/v1/users/",
            None,
            &[],
            Payload::Bytes(b"{".to_vec()),
        ),
        400,
        "Error Decoding JSON",
    );
    hub.signup("bob", "bob-password").expect(200);
    let alice = basic("alice", "alice-password");
    let bob = basic("bob", "bob-password");
    let r = c.get("/v1/users/", Some(&alice));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "\"OK\""),
        "{}",
        r.describe()
    );
    let r = c.send(
        "GET",
        "/v1/users",
        Some(&basic("alice", "wrong-password")),
        &[("X-Real-IP", "10.9.9.9")],
        Payload::None,
    );
    expect_error(&r, 401, "Wrong login/password");
    expect_error(&c.get("/v1/users/", None), 401, "Requires authorization");

    // Alice's push session: a JWT of the token service for alice/app.
    let imgs = sample_chain("auth");
    let ids: Vec<Value> = imgs.iter().map(|i| json!({"id": i.id})).collect();
    expect_error(
        &session(&c, None, "PUT", "alice/app", Some(json!(ids))),
        401,
        "Requires authorization",
    );
    expect_error(
        &session(&c, Some(&bob), "PUT", "alice/app", Some(json!(ids))),
        403,
        "denied",
    );
    let r = session(&c, Some(&alice), "PUT", "alice/app", Some(json!(ids)));
    expect_done(&r);
    let token = r.header("x-docker-token");
    let sig = token
        .strip_prefix("signature=")
        .and_then(|t| t.strip_suffix(",repository=\"alice/app\",access=write"))
        .unwrap_or_else(|| panic!("token {token:?}"));
    let (_, payload) = jwt_parts(sig);
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["access"][0]["name"], "alice/app");
    assert_eq!(payload["access"][0]["actions"], json!(["pull", "push"]));
    assert!(payload["exp"].as_u64().unwrap() > payload["iat"].as_u64().unwrap());
    assert_eq!(r.header("x-docker-endpoints"), c.addr);

    // The whole push with that token.
    let tok = v1_push(&c, Some(&alice), "alice/app", &imgs, "v1");
    let tok = Some(tok.as_str());
    check_v2_image(&c, Some(&alice), "alice/app", "v1", &imgs);
    // Forged and misaddressed tokens.
    let forged = format!(
        "Token signature={}x,repository=\"alice/app\",access=write",
        sig
    );
    expect_error(
        &c.get("/v1/repositories/alice/app/tags", Some(&forged)),
        401,
        "token",
    );
    let misaddressed = format!("Token signature={sig},repository=\"bob/app\",access=write");
    expect_error(
        &c.get("/v1/repositories/bob/app/tags", Some(&misaddressed)),
        401,
        "not for this repository",
    );
    // A token is for its repository only.
    let r = c.put_json(
        "/v1/repositories/alice/other/tags/x",
        tok,
        &json!(imgs[2].id),
    );
    assert!(r.status == 401 || r.status == 403, "{}", r.describe());

    // Private: others cannot pull it, nor read its images by id.
    let top = &imgs[2].id;
    expect_error(
        &c.get("/v1/repositories/alice/app/tags", None),
        401,
        "Requires authorization",
    );
    expect_error(
        &c.get("/v1/repositories/alice/app/tags", Some(&bob)),
        403,
        "denied",
    );
    expect_error(
        &session(&c, Some(&bob), "GET", "alice/app", None),
        403,
        "denied",
    );
    for part in ["json", "layer", "ancestry"] {
        for who in [None, Some(bob.as_str())] {
            expect_error(
                &c.get(&format!("/v1/images/{top}/{part}"), who),
                404,
                "Image not found",
            );
        }
    }
    // Bob's own session does not reach them either: announcing the id in
    // his repository, pushing its JSON, tagging it.
    let r = session(
        &c,
        Some(&bob),
        "PUT",
        "bob/evil",
        Some(json!([{"id": top}])),
    );
    expect_done(&r);
    let bob_tok = format!("Token {}", r.header("x-docker-token"));
    expect_error(
        &c.get(&format!("/v1/images/{top}/json"), Some(&bob_tok)),
        404,
        "Image not found",
    );
    let r = c.send(
        "PUT",
        &format!("/v1/images/{top}/json"),
        Some(&bob_tok),
        &[],
        Payload::Bytes(imgs[2].json.clone()),
    );
    expect_error(&r, 409, "Image already exists");
    expect_error(
        &c.put_json(
            "/v1/repositories/bob/evil/tags/stolen",
            Some(&bob_tok),
            &json!(top),
        ),
        404,
        "Image not found",
    );
    let r = c.send(
        "HEAD",
        "/v2/bob/evil/manifests/stolen",
        Some(&bob),
        &[],
        Payload::None,
    );
    assert_eq!(r.status, 404, "{}", r.describe());
    // Nor can he build on them.
    let child = chain(&[(&[("x", b"x" as &[u8])], true, "x")]).remove(0);
    let mut j: Value = serde_json::from_slice(&child.json).unwrap();
    j["parent"] = json!(top);
    let r = session(
        &c,
        Some(&bob),
        "PUT",
        "bob/evil",
        Some(json!([{"id": child.id}])),
    );
    expect_done(&r);
    let r = c.send(
        "PUT",
        &format!("/v1/images/{}/json", child.id),
        Some(&bob_tok),
        &[],
        Payload::Bytes(j.to_string().into_bytes()),
    );
    expect_error(&r, 400, "unauthorized parent");
    // An image nobody announced cannot be pushed.
    let lone = new_id();
    let r = c.send(
        "PUT",
        &format!("/v1/images/{lone}/json"),
        Some(&bob),
        &[],
        Payload::Bytes(json!({"id": lone}).to_string().into_bytes()),
    );
    expect_error(&r, 403, "repository");

    // Alice pulls with Basic and with a read token.
    let pulled = v1_pull(&c, Some(&alice), top);
    assert_eq!(pulled.len(), 3);
    let r = session(&c, Some(&alice), "GET", "alice/app", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        r.header("x-docker-token")
            .ends_with("repository=\"alice/app\",access=read")
    );
    let read = format!("Token {}", r.header("x-docker-token"));
    v1_pull(&c, Some(&read), top);

    // Bob gets read access through a team-less public flag: public
    // repositories are pullable by anyone, anonymously too.
    hub.uam(
        "PUT",
        "/uam/repository/update",
        &Cred::basic("alice", "alice-password"),
        Some(json!({"name": "app", "ispublic": true, "username": "alice"})),
    )
    .expect(200);
    let r = session(&c, None, "GET", "alice/app", None);
    assert_eq!(r.status, 200, "{}", r.describe());
    assert!(
        r.header("x-docker-token")
            .ends_with("repository=\"alice/app\",access=read"),
        "{}",
        r.header("x-docker-token")
    );
    let anon_read = format!("Token {}", r.header("x-docker-token"));
    let r = c.get("/v1/repositories/alice/app/tags", Some(&anon_read));
    assert_eq!(r.json(), json!({"v1": top}));
    v1_pull(&c, Some(&anon_read), top);
    v1_pull(&c, None, top);
    // ...but not pushable.
    expect_error(
        &c.put_json(
            "/v1/repositories/alice/app/tags/x",
            Some(&anon_read),
            &json!(top),
        ),
        401,
        "",
    );
    expect_error(
        &c.put_json("/v1/repositories/alice/app/tags/x", Some(&bob), &json!(top)),
        403,
        "denied",
    );
    expect_error(
        &c.send(
            "DELETE",
            "/v1/repositories/alice/app/tags/v1",
            Some(&bob),
            &[],
            Payload::None,
        ),
        403,
        "denied",
    );
    expect_error(
        &c.send(
            "DELETE",
            "/v1/repositories/alice/app/",
            Some(&bob),
            &[],
            Payload::None,
        ),
        403,
        "denied",
    );
    // Bob may now build on alice's image in his own repository.
    expect_done(&c.put_json(
        "/v1/repositories/bob/evil/tags/reuse",
        Some(&bob_tok),
        &json!(top),
    ));
    let r = c.send(
        "PUT",
        &format!("/v1/images/{}/json", child.id),
        Some(&bob_tok),
        &[],
        Payload::Bytes(j.to_string().into_bytes()),
    );
    expect_done(&r);

    // Search: what the caller may pull.
    hub.create_repo(
        &Cred::basic("alice", "alice-password"),
        "alice",
        false,
        "secret-thing",
        false,
    )
    .expect(200);
    hub.uam(
        "POST",
        "/uam/repository",
        &Cred::basic("bob", "bob-password"),
        Some(json!({"name": "thing", "ispublic": true, "comment": "Bob's public thing", "username": "bob"})),
    )
    .expect(200);
    assert_eq!(search_names(&c, None, "thing"), ["bob/thing"]);
    assert_eq!(
        search_names(&c, Some(&alice), "thing"),
        ["alice/secret-thing", "bob/thing"]
    );
    assert_eq!(search_names(&c, Some(&bob), "thing"), ["bob/thing"]);
    assert_eq!(
        search_names(&c, Some(&bob), "PUBLIC"),
        ["bob/thing"],
        "comments match too"
    );
    let r = c.get("/v1/search?q=thing&n=1&page=2", Some(&alice));
    let v = r.json();
    assert_eq!(
        (
            v["num_results"].clone(),
            v["num_pages"].clone(),
            v["page"].clone(),
            v["page_size"].clone()
        ),
        (json!(2), json!(2), json!(2), json!(1))
    );
    assert_eq!(v["results"][0]["name"], "bob/thing");
    assert_eq!(v["results"][0]["description"], "Bob's public thing");
    assert_eq!(v["query"], "thing");
    expect_error(&c.get("/v1/search?q=x&n=many", None), 400, "n must be");
    expect_error(
        &c.get("/v1/search?q=x", Some(&basic("alice", "nope"))),
        401,
        "",
    );

    // Alice deletes; everything was in the audit log.
    expect_done(&c.send(
        "DELETE",
        "/v1/repositories/alice/app/tags/v1",
        Some(&alice),
        &[],
        Payload::None,
    ));
    expect_done(&c.send(
        "DELETE",
        "/v1/repositories/alice/app/",
        Some(&alice),
        &[],
        Payload::None,
    ));
    let wanted: [(&str, Option<String>); 5] = [
        ("push", Some("v1".into())),
        ("push", Some(sha256(&imgs[0].blob))),
        ("pull", None),
        ("delete", Some("v1".into())),
        ("delete", None),
    ];
    let found = crate::hub::poll(std::time::Duration::from_secs(10), || {
        let events = hub.audit(&Cred::admin(), "repo=alice/app");
        let all = wanted.iter().all(|(action, target)| {
            events.iter().any(|e| {
                e["action"] == *action
                    && e["user"] == "alice"
                    && target.as_ref().is_none_or(|t| e["target"] == *t)
            })
        });
        all.then_some(())
    });
    assert!(
        found.is_some(),
        "audit events missing: {:?}",
        hub.audit(&Cred::admin(), "repo=alice/app")
    );
}
