//! Slows down password guessing: after a few failed logins, per account
//! and per client address, further attempts are refused for a time that
//! doubles with every failure (capped), without checking the password.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures after which further attempts are delayed.
const FREE_FAILURES: u32 = 5;
const MAX_BLOCK: Duration = Duration::from_secs(300);
/// A quiet period after which an account or address starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(900);
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

struct Entry {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

pub struct Throttle {
    entries: Mutex<HashMap<Key, Entry>>,
    free: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::with_free(FREE_FAILURES)
    }
}

impl Throttle {
    /// A throttle that lets `free` events pass before delaying.
    pub fn with_free(free: u32) -> Self {
        Throttle {
            entries: Mutex::new(HashMap::new()),
            free,
        }
    }

    fn keys(account: Option<&str>, addr: Option<IpAddr>) -> Vec<Key> {
        let mut keys: Vec<Key> = account
            .map(|a| Key::Account(a.to_string()))
            .into_iter()
            .collect();
        keys.extend(addr.map(Key::Address));
        keys
    }

    /// `Err(retry_after)` while the account or the address is blocked.
    pub fn check(&self, account: Option<&str>, addr: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let wait = Self::keys(account, addr)
            .iter()
            .filter_map(|k| entries.get(k)?.blocked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(w) => Err(w.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    pub fn failed(&self, account: Option<&str>, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now - e.last < FORGET_AFTER);
        }
        for key in Self::keys(account, addr) {
            let e = entries.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
                blocked_until: None,
            });
            if now - e.last >= FORGET_AFTER {
                e.failures = 0;
            }
            e.failures += 1;
            e.last = now;
            if e.failures >= self.free {
                let exp = (e.failures - self.free).min(16);
                let block = Duration::from_secs(1u64 << exp).min(MAX_BLOCK);
                e.blocked_until = Some(now + block);
            }
        }
    }

    /// A successful login clears the account's record (the address keeps
    /// its own, so one good account does not unlock guessing at others).
    pub fn succeeded(&self, account: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.remove(&Key::Account(account.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_free_failures_per_account_and_address() {
        let t = Throttle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert!(t.check(Some("alice"), Some(a)).is_ok());
            t.failed(Some("alice"), Some(a));
        }
        assert!(
            t.check(Some("alice"), Some(b)).is_err(),
            "the account is blocked from anywhere"
        );
        assert!(
            t.check(Some("bob"), Some(a)).is_err(),
            "the address is blocked for any account"
        );
        assert!(t.check(Some("bob"), Some(b)).is_ok());
        t.succeeded("alice");
        assert!(t.check(Some("alice"), Some(b)).is_ok());
        assert!(
            t.check(Some("alice"), Some(a)).is_err(),
            "the address stays blocked"
        );
    }
}
