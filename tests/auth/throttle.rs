//! Login throttling: after 5 failed logins an account is refused with 429
//! TOOMANYREQUESTS and Retry-After (even with the right password) for a
//! time that doubles (1 s, 2 s, ...); the client address is throttled too,
//! so guessing at another account from there is slowed as well.
//!
//! Requests come from loopback, where the hub believes `X-Real-IP` (the
//! nginx setup), so each scenario uses its own client addresses.

use std::time::{Duration, Instant};

use crate::hub::*;

/// How a login attempt is made.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// `GET /uam/user/signin` with Basic.
    Signin,
    /// `GET /uam/auth` (the token service) with Basic.
    TokenService,
}

fn attempt(hub: &Hub, via: Via, user: &str, password: &str, addr: &str) -> Resp {
    let c = Cred::basic(user, password);
    let h = [("X-Real-IP", addr)];
    match via {
        Via::Signin => hub.send("GET", "/uam/user/signin", &c, &h, None),
        Via::TokenService => hub.send(
            "GET",
            &format!("/uam/auth?service={SERVICE}&scope=repository:{user}/app:pull"),
            &c,
            &h,
            None,
        ),
    }
}

/// The seconds of a throttling answer, or a failure message.
fn throttled(r: &Resp) -> Result<u64, String> {
    if r.status != 429 || r.error_code() != "TOOMANYREQUESTS" {
        return Err(format!("expected 429 TOOMANYREQUESTS: {}", r.describe()));
    }
    r.header("retry-after")
        .parse::<u64>()
        .map_err(|_| format!("429 without a numeric Retry-After: {}", r.describe()))
}

fn scenario(via: Via) {
    let hub = Hub::start();
    for u in ["victim", "neighbour"] {
        hub.signup(u, &format!("{u}-password")).expect(200);
    }
    let (good, bad) = ("victim-password", "not-the-password");
    let (a0, a1, a2) = ("10.0.0.9", "10.1.1.1", "10.2.2.2");
    let mut fails: Vec<String> = Vec::new();

    // Five failures, then the right password: blocked ("429 after 5
    // failures, even with the right password").
    hub.signup("early", "early-password").expect(200);
    for i in 1..=5 {
        let r = attempt(&hub, via, "early", bad, a0);
        if r.status != 401 {
            fails.push(format!(
                "failure {i} should be a plain 401: {}",
                r.describe()
            ));
        }
    }
    if let Err(e) = throttled(&attempt(&hub, via, "early", "early-password", a0)) {
        fails.push(format!(
            "after 5 failed logins the next attempt, with the right password, must be throttled: {e}"
        ));
    }

    // The victim: failures until the hub blocks (at most 6).
    let mut n = 0;
    loop {
        let r = attempt(&hub, via, "victim", bad, a1);
        if r.status == 429 {
            break;
        }
        if r.status != 401 {
            fails.push(format!(
                "a failed login should be a plain 401: {}",
                r.describe()
            ));
        }
        n += 1;
        if n == 6 {
            break;
        }
    }
    if n < 5 {
        fails.push(format!("blocked after only {n} failures"));
    }
    let r = attempt(&hub, via, "victim", good, a1);
    let blocked_at = Instant::now();
    match throttled(&r) {
        Ok(s) if (1..=2).contains(&s) => {}
        Ok(s) => fails.push(format!("first block should be about 1 s, Retry-After {s}")),
        Err(e) => fails.push(format!("blocked account, right password: {e}")),
    }
    // From another address too (the account is blocked)...
    if let Err(e) = throttled(&attempt(&hub, via, "victim", good, a2)) {
        fails.push(format!("blocked account from another address: {e}"));
    }
    // ...and also the registry with Basic.
    let r = hub.send(
        "GET",
        "/v2/",
        &Cred::basic("victim", good),
        &[("X-Real-IP", a2)],
        None,
    );
    if let Err(e) = throttled(&r) {
        fails.push(format!("blocked account on /v2/: {e}"));
    }
    // Another account from the guessing address is slowed as well.
    if let Err(e) = throttled(&attempt(&hub, via, "neighbour", "neighbour-password", a1)) {
        fails.push(format!("another account from the blocked address: {e}"));
    }
    // ...but not from elsewhere.
    let r = attempt(&hub, via, "neighbour", "neighbour-password", a2);
    if r.status != 200 {
        fails.push(format!(
            "another account from another address: {}",
            r.describe()
        ));
    }

    // Once the block is over, one more failure blocks for longer (2 s).
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(blocked_at.elapsed()));
    let r = attempt(&hub, via, "victim", bad, a2);
    if r.status == 429 {
        // Still blocked (slow machine): wait a little more.
        std::thread::sleep(Duration::from_millis(1000));
        attempt(&hub, via, "victim", bad, a2);
    }
    let second = Instant::now();
    let r = attempt(&hub, via, "victim", good, a2);
    match throttled(&r) {
        Ok(s) if (2..=4).contains(&s) => {}
        Ok(s) => fails.push(format!(
            "the second block lasts 2 s (checked below) but Retry-After says {s}: a client that \
             waits as told is refused again (the remaining time must be rounded up): {}",
            r.describe()
        )),
        Err(e) => fails.push(format!("after a failure at the end of the block: {e}")),
    }
    std::thread::sleep(Duration::from_millis(1200).saturating_sub(second.elapsed()));
    if let Err(e) = throttled(&attempt(&hub, via, "victim", good, a2)) {
        fails.push(format!("1.2 s into a 2 s block: {e}"));
    }
    // After the block expires the right password works again.
    let ok = poll(Duration::from_secs(6), || {
        let r = attempt(&hub, via, "victim", good, a2);
        (r.status == 200).then_some(second.elapsed())
    });
    match ok {
        Some(t) if t >= Duration::from_millis(1900) => {}
        Some(t) => fails.push(format!("the 2 s block ended after {t:?}")),
        None => fails.push("the right password never worked again after the block".into()),
    }
    // Failed logins are audited.
    let events = hub.audit(&Cred::admin(), "user=victim&action=login_failed");
    let n: u64 = events
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    if n < 6 {
        fails.push(format!("login_failed events for victim: {n}: {events:?}"));
    }
    assert!(
        fails.is_empty(),
        "throttling via {via:?}:\n{}",
        fails.join("\n")
    );
}

#[test]
fn failed_signins_are_throttled_per_account_and_address() {
    scenario(Via::Signin);
}

#[test]
fn failed_token_requests_are_throttled_per_account_and_address() {
    scenario(Via::TokenService);
}
