//! Bearer tokens: forged, tampered, expired and misaddressed tokens are
//! refused with `401` and `WWW-Authenticate: Bearer ...,error="invalid_token"`
//! (and do nothing); tokens never grant more than the resolver allows, and
//! a token for one repository does not open another.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::hub::*;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims(sub: &str, aud: &str, iss: &str, repo: &str, exp: i64, nbf: i64) -> Value {
    json!({
        "iss": iss,
        "sub": sub,
        "aud": aud,
        "exp": exp,
        "nbf": nbf,
        "iat": nbf,
        "jti": unique(),
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push", "delete"]}],
    })
}

/// Signs `claims` with the PEM EC key at `key_pem`, `kid` in the header.
fn sign(key_pem: &[u8], kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(key_pem).expect("EC key");
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &key).expect("sign")
}

/// Every refusal of a bad token: 401 with an `invalid_token` challenge.
#[track_caller]
fn assert_invalid_token(r: &Resp, what: &str) {
    let h = r.header("www-authenticate");
    assert!(
        r.status == 401 && h.starts_with("Bearer ") && h.contains("error=\"invalid_token\""),
        "{what}: expected 401 with a Bearer invalid_token challenge: {}",
        r.describe()
    );
}

/// A hub with `alice`'s private `alice/app` (an image tagged v1).
fn setup(hub: &Hub) -> (Cred, String) {
    hub.signup("alice", "alice-password").expect(200);
    let alice = Cred::basic("alice", "alice-password");
    let d = hub.push_image(&alice, "alice/app", "v1");
    (alice, d)
}

/// Uses `token` for a pull, a blob push and a manifest delete on
/// `alice/app`; each must be refused as an invalid token and change
/// nothing.
fn assert_token_useless(hub: &Hub, token: &str, what: &str, digest: &str) {
    let c = Cred::Bearer(token.to_string());
    let admin = Cred::admin();
    assert_invalid_token(
        &hub.get_manifest(&c, "alice/app", "v1"),
        &format!("{what}: pull"),
    );
    let blob = format!("pushed with {what} {}", unique()).into_bytes();
    assert_invalid_token(
        &hub.push_blob(&c, "alice/app", &blob),
        &format!("{what}: push"),
    );
    assert_eq!(
        hub.head_blob(&admin, "alice/app", &sha256(&blob)).status,
        404,
        "{what}: blob written"
    );
    assert_invalid_token(
        &hub.delete_manifest(&c, "alice/app", digest),
        &format!("{what}: delete"),
    );
    assert_eq!(
        hub.get_manifest(&admin, "alice/app", digest).status,
        200,
        "{what}: manifest deleted"
    );
    assert_invalid_token(
        &hub.send("GET", "/v2/", &c, &[], None),
        &format!("{what}: /v2/"),
    );
}

/// Tampered signature, modified payload, a foreign key, `alg: none`, an
/// HMAC "signed" with the public certificate, wrong issuer and audience
/// (signed with the right key), expired and not-yet-valid tokens, garbage.
#[test]
fn forged_and_tampered_tokens_are_refused() {
    let hub = Hub::start();
    let (alice, digest) = setup(&hub);
    let (good, payload) = hub.token(&alice, &["repository:alice/app:pull"]);
    assert_eq!(granted(&payload, "alice/app"), set(&["pull"]));
    hub.get_manifest(&Cred::Bearer(good.clone()), "alice/app", "v1")
        .expect(200);
    let (header, _) = jwt_parts(&good);
    assert_eq!(header["alg"], "ES256", "{header}");
    let kid = header["kid"].as_str().expect("kid").to_string();
    let parts: Vec<&str> = good.split('.').collect();
    let key_pem = std::fs::read(&hub.key).unwrap();
    let t = now();

    // Signature bytes changed (first character: the last one may only
    // carry padding bits).
    let mut sig = parts[2].to_string();
    let first = if sig.starts_with('A') { "B" } else { "A" };
    sig.replace_range(0..1, first);
    assert_token_useless(
        &hub,
        &format!("{}.{}.{sig}", parts[0], parts[1]),
        "tampered signature",
        &digest,
    );
    // Signature dropped.
    assert_token_useless(
        &hub,
        &format!("{}.{}.", parts[0], parts[1]),
        "no signature",
        &digest,
    );

    // Payload modified (more actions, another subject), signature kept.
    let mut p = jwt_parts(&good).1;
    p["access"][0]["actions"] = json!(["pull", "push", "delete"]);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(p.to_string().as_bytes()),
        parts[2]
    );
    assert_token_useless(&hub, &forged, "payload with more actions", &digest);
    p["sub"] = json!(ADMIN);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(p.to_string().as_bytes()),
        parts[2]
    );
    assert_token_useless(&hub, &forged, "payload with another subject", &digest);

    // A key the hub does not trust, with the right kid and claims.
    let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let valid = claims(
        "alice",
        SERVICE,
        "dockyard-token-issuer",
        "alice/app",
        t + 300,
        t - 10,
    );
    assert_token_useless(
        &hub,
        &sign(other.as_bytes(), &kid, &valid),
        "signed by another key",
        &digest,
    );

    // alg none, unsigned.
    let none = format!(
        "{}.{}.",
        b64url(br#"{"typ":"JWT","alg":"none"}"#),
        b64url(valid.to_string().as_bytes())
    );
    assert_token_useless(&hub, &none, "alg none", &digest);
    // HS256 with the public certificate as the secret (key confusion).
    let cert = std::fs::read(&hub.cert).unwrap();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(kid.clone());
    let hs = jsonwebtoken::encode(&h, &valid, &EncodingKey::from_secret(&cert)).unwrap();
    assert_token_useless(&hub, &hs, "HS256 keyed with the certificate", &digest);

    // The right key, wrong claims.
    let cases = [
        (
            "wrong issuer",
            claims(
                "alice",
                SERVICE,
                "evil-issuer",
                "alice/app",
                t + 300,
                t - 10,
            ),
        ),
        (
            "wrong audience",
            claims(
                "alice",
                "other-service",
                "dockyard-token-issuer",
                "alice/app",
                t + 300,
                t - 10,
            ),
        ),
        (
            "expired a minute ago",
            claims(
                "alice",
                SERVICE,
                "dockyard-token-issuer",
                "alice/app",
                t - 60,
                t - 120,
            ),
        ),
        (
            "not valid for another minute",
            claims(
                "alice",
                SERVICE,
                "dockyard-token-issuer",
                "alice/app",
                t + 600,
                t + 60,
            ),
        ),
    ];
    for (what, c) in &cases {
        assert_token_useless(&hub, &sign(&key_pem, &kid, c), what, &digest);
    }
    // Without exp.
    let mut no_exp = valid.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_token_useless(
        &hub,
        &sign(&key_pem, &kid, &no_exp),
        "no exp claim",
        &digest,
    );
    // The control: the same construction with good claims is accepted, so
    // the refusals above are about what they change.
    let control = sign(&key_pem, &kid, &valid);
    hub.get_manifest(&Cred::Bearer(control), "alice/app", "v1")
        .expect(200);

    for junk in ["garbage", "a.b.c", ""] {
        let r = hub.get_manifest(&Cred::Bearer(junk.to_string()), "alice/app", "v1");
        if junk.is_empty() {
            assert!(r.status == 401, "empty bearer: {}", r.describe());
        } else {
            assert_invalid_token(&r, junk);
        }
    }
}

/// `[auth_server] expiration` is honoured: a 1-second token works at
/// once and is refused once it (and the verifier's few seconds of clock
/// leeway) has passed.
#[test]
fn expired_tokens_are_refused() {
    let hub = Hub::start_with(HubConfig {
        auth_server: vec!["expiration = 1".into()],
        ..Default::default()
    });
    let (alice, digest) = setup(&hub);
    let r = hub.token_resp(&alice, &["repository:alice/app:pull,push"]);
    r.expect(200);
    let v = r.json();
    assert_eq!(v["expires_in"], 1, "{}", r.describe());
    let token = v["token"].as_str().unwrap().to_string();
    let (_, p) = jwt_parts(&token);
    assert_eq!(
        p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(),
        1,
        "{p}"
    );
    let c = Cred::Bearer(token.clone());
    hub.get_manifest(&c, "alice/app", "v1").expect(200);
    // exp + 5 s leeway, and a margin.
    let exp = p["exp"].as_i64().unwrap();
    while now() <= exp + 6 {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_token_useless(&hub, &token, "expired token", &digest);
    // A fresh one works again.
    let (fresh, _) = hub.token(&alice, &["repository:alice/app:pull"]);
    hub.get_manifest(&Cred::Bearer(fresh), "alice/app", "v1")
        .expect(200);
}

/// Tokens of a second hub that shares the key pair but serves another
/// `[token] service` (wrong audience), or names another issuer, are
/// refused — in both directions.
#[test]
fn tokens_for_another_service_or_issuer_are_refused() {
    let a = Hub::start();
    let (alice_a, digest) = setup(&a);
    let keys = a.key.parent().unwrap().to_path_buf();
    let b = Hub::start_with(HubConfig {
        token: vec!["service = \"other-registry\"".into()],
        key_dir: Some(keys.clone()),
        ..Default::default()
    });
    let c = Hub::start_with(HubConfig {
        auth_server: vec!["issuer = \"someone-else\"".into()],
        token: vec!["issuer = \"someone-else\"".into()],
        key_dir: Some(keys),
    });
    assert_eq!(
        std::fs::read(&a.cert).unwrap(),
        std::fs::read(&b.cert).unwrap(),
        "the hubs share one key pair"
    );
    for (hub, issuer) in [(&b, "dockyard-token-issuer"), (&c, "someone-else")] {
        hub.signup("alice", "alice-password").expect(200);
        let alice = Cred::basic("alice", "alice-password");
        hub.push_image(&alice, "alice/app", "v1");
        let svc = if std::ptr::eq(hub, &b) {
            "other-registry"
        } else {
            SERVICE
        };
        // The token service names its own service; it refuses another.
        let r = hub.send(
            "GET",
            &format!("/uam/auth?service={svc}&scope=repository:alice/app:pull"),
            &alice,
            &[],
            None,
        );
        r.expect(200);
        let token = r.json()["token"].as_str().unwrap().to_string();
        let (_, p) = jwt_parts(&token);
        assert_eq!(p["aud"], svc, "{p}");
        assert_eq!(p["iss"], issuer, "{p}");
        // Valid where it was issued...
        hub.get_manifest(&Cred::Bearer(token.clone()), "alice/app", "v1")
            .expect(200);
        // ...refused by hub a.
        assert_token_useless(
            &a,
            &token,
            &format!("token of aud {svc} / iss {issuer}"),
            &digest,
        );
        // And a's token is refused by this hub.
        let (ta, _) = a.token(&alice_a, &["repository:alice/app:pull"]);
        let r = hub.get_manifest(&Cred::Bearer(ta), "alice/app", "v1");
        assert_invalid_token(&r, "hub a's token on another hub");
    }
    let r = b.send(
        "GET",
        &format!("/uam/auth?service={SERVICE}&scope=repository:alice/app:pull"),
        &Cred::basic("alice", "alice-password"),
        &[],
        None,
    );
    assert!(
        r.status == 400 || r.status == 401 || r.status == 403,
        "a token for another service must not be issued: {}",
        r.describe()
    );
}

/// Scope escalation: a pull-only token cannot push or delete; asking for
/// push on someone else's repository yields a token without push; a token
/// for repository A does not work on repository B; the token service and
/// `/uam` take no bearer tokens.
#[test]
fn scope_escalation_is_refused() {
    let hub = Hub::start();
    let (alice, digest) = setup(&hub);
    hub.signup("bob", "bob-password").expect(200);
    let bob = Cred::basic("bob", "bob-password");
    let admin = Cred::admin();
    hub.uam(
        "PUT",
        "/uam/repository/update",
        &alice,
        Some(json!({"name": "app", "ispublic": true, "username": "alice"})),
    )
    .expect(200);
    hub.push_image(&alice, "alice/other", "v1");
    hub.push_image(&bob, "bob/own", "v1");

    // alice, pull only, on her own repository.
    let pull_only = hub.bearer(&alice, "alice/app", "pull");
    hub.get_manifest(&pull_only, "alice/app", "v1").expect(200);
    let blob = b"escalation blob 1".to_vec();
    let r = hub.push_blob(&pull_only, "alice/app", &blob);
    assert!(
        (r.status == 401
            && r.header("www-authenticate")
                .contains("error=\"insufficient_scope\""))
            || (r.status == 403 && r.error_code() == "DENIED"),
        "push with a pull-only token: {}",
        r.describe()
    );
    assert_eq!(
        hub.head_blob(&admin, "alice/app", &sha256(&blob)).status,
        404,
        "nothing written"
    );
    let r = hub.put_manifest(
        &pull_only,
        "alice/app",
        "v2",
        &image_manifest(b"{}", &blob, None),
    );
    assert!(
        is_refusal(&r),
        "manifest push with a pull-only token: {}",
        r.describe()
    );
    assert_eq!(hub.get_manifest(&admin, "alice/app", "v2").status, 404);
    let r = hub.delete_manifest(&pull_only, "alice/app", &digest);
    assert!(
        is_refusal(&r),
        "delete with a pull-only token: {}",
        r.describe()
    );
    assert_eq!(hub.get_manifest(&admin, "alice/app", &digest).status, 200);

    // bob asks for everything on alice's public repository: pull only.
    let (t, p) = hub.token(&bob, &["repository:alice/app:pull,push,delete"]);
    assert_eq!(granted(&p, "alice/app"), set(&["pull"]), "{p}");
    let (_, p) = hub.token(&bob, &["repository:alice/app:*"]);
    assert_eq!(granted(&p, "alice/app"), set(&["pull"]), "{p}");
    let bt = Cred::Bearer(t);
    hub.get_manifest(&bt, "alice/app", "v1").expect(200);
    let blob = b"escalation blob 2".to_vec();
    assert!(is_refusal(&hub.push_blob(&bt, "alice/app", &blob)));
    assert!(is_refusal(&hub.delete_manifest(&bt, "alice/app", &digest)));
    assert_eq!(
        hub.head_blob(&admin, "alice/app", &sha256(&blob)).status,
        404
    );
    assert_eq!(hub.get_manifest(&admin, "alice/app", &digest).status, 200);

    // Several scopes at once: each is granted on its own merits.
    let (_, p) = hub.token(
        &bob,
        &[
            "repository:bob/own:pull,push repository:alice/other:pull,push",
            "repository:alice/app:push",
        ],
    );
    assert_eq!(granted(&p, "bob/own"), set(&["pull", "push"]), "{p}");
    assert_eq!(granted(&p, "alice/other"), set(&[]), "{p}");
    assert_eq!(granted(&p, "alice/app"), set(&[]), "{p}");

    // A token for A on B.
    let a_token = hub.bearer(&alice, "alice/app", "pull,push,delete");
    let r = hub.get_manifest(&a_token, "alice/other", "v1");
    assert!(
        is_refusal(&r),
        "a token for alice/app on alice/other: {}",
        r.describe()
    );
    let blob = b"escalation blob 3".to_vec();
    assert!(is_refusal(&hub.push_blob(&a_token, "alice/other", &blob)));
    assert_eq!(
        hub.head_blob(&admin, "alice/other", &sha256(&blob)).status,
        404
    );
    // ...nor a mount from B into A.
    let d = hub.get_manifest(&admin, "alice/other", "v1").json()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let bob_token = hub.bearer(&bob, "bob/own", "pull,push");
    let r = hub.send(
        "POST",
        &format!("/v2/bob/own/blobs/uploads/?mount={d}&from=alice/other"),
        &bob_token,
        &[],
        None,
    );
    assert_ne!(
        r.status,
        201,
        "bob must not mount a blob of alice's private repository: {}",
        r.describe()
    );
    assert_eq!(
        hub.head_blob(&admin, "bob/own", &d).status,
        404,
        "mounted into bob/own"
    );

    // No bearer tokens at the token service or /uam, and an account
    // parameter must match the credentials.
    let r = hub.send(
        "GET",
        "/uam/auth?service=dockyard&scope=repository:alice/app:pull",
        &a_token,
        &[],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.describe());
    let r = hub.uam("GET", "/uam/user/signin", &a_token, None);
    assert_eq!(r.status, 401, "{}", r.describe());
    let r = hub.send(
        "GET",
        "/uam/auth?service=dockyard&account=alice&scope=repository:alice/app:push",
        &bob,
        &[],
        None,
    );
    assert!(
        r.status == 400 || r.status == 401 || r.status == 403,
        "{}",
        r.describe()
    );
    // Bad credentials get no token at all (not an anonymous one).
    let r = hub.token_resp(
        &Cred::basic("alice", "wrong-password"),
        &["repository:alice/app:pull"],
    );
    assert_eq!(r.status, 401, "{}", r.describe());
}

/// Cross-repository mounts with bearer tokens: a token that also grants
/// pull on the source mounts (201); without it, or when the caller may not
/// pull the source, the mount turns into an ordinary upload (202) and the
/// blob is not linked. A client that follows challenges (the Go
/// conformance suite) learns the scopes from the 401: it must name the
/// source repository too, or such clients never mount.
#[test]
fn cross_repository_mounts_with_tokens() {
    let hub = Hub::start();
    let (alice, _) = setup(&hub);
    hub.signup("bob", "bob-password").expect(200);
    let bob = Cred::basic("bob", "bob-password");
    let admin = Cred::admin();
    let blob = format!("mountable {}", unique()).into_bytes();
    let d = sha256(&blob);
    hub.push_blob(&alice, "alice/app", &blob).expect(201);
    let mount = |c: &Cred, to: &str| {
        hub.send(
            "POST",
            &format!("/v2/{to}/blobs/uploads/?mount={d}&from=alice/app"),
            c,
            &[],
            None,
        )
    };

    let both = Cred::Bearer(
        hub.token(
            &alice,
            &[
                "repository:alice/copy:pull,push",
                "repository:alice/app:pull",
            ],
        )
        .0,
    );
    let r = mount(&both, "alice/copy");
    assert_eq!(
        r.status,
        201,
        "mount with a token granting the source: {}",
        r.describe()
    );
    assert_eq!(hub.head_blob(&admin, "alice/copy", &d).status, 200);

    let target_only = hub.bearer(&alice, "alice/copy2", "pull,push");
    let r = mount(&target_only, "alice/copy2");
    assert_eq!(
        r.status,
        202,
        "mount without the source scope: {}",
        r.describe()
    );
    assert_eq!(hub.head_blob(&admin, "alice/copy2", &d).status, 404);

    let (t, p) = hub.token(
        &bob,
        &["repository:bob/copy:pull,push", "repository:alice/app:pull"],
    );
    assert!(granted(&p, "alice/app").is_empty(), "{p}");
    let r = mount(&Cred::Bearer(t), "bob/copy");
    assert_ne!(
        r.status,
        201,
        "bob mounts from alice's private repository: {}",
        r.describe()
    );
    assert_eq!(hub.head_blob(&admin, "bob/copy", &d).status, 404);

    // The challenge a token client sees for the mount.
    let r = mount(&Cred::Anon, "alice/copy3");
    assert_eq!(r.status, 401, "{}", r.describe());
    let params = challenge_params(&r.header("www-authenticate"));
    let scope = param(&params, "scope").unwrap_or("").to_string();
    assert!(
        scope.split(' ').any(|s| s == "repository:alice/app:pull"),
        "the challenge for a mount must ask for pull on the source repository too \
         (scope {scope:?}), or challenge-following clients can never mount: {}",
        r.describe()
    );
}
