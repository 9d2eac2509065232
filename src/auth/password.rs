//! Password hashing with Argon2id, and a short-lived cache of successful
//! verifications so clients that send Basic credentials on every request
//! (skopeo, podman) do not pay a key-derivation per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// OWASP's Argon2id setting with the smallest memory (7 MiB, 5 passes):
/// memory stays bounded even with several logins at once.
fn hasher() -> Argon2<'static> {
    let params = Params::new(7 * 1024, 5, 1, None).expect("valid Argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// At most this many key derivations run at once (each holds 7 MiB).
static SLOTS: Semaphore = Semaphore::const_new(2);

/// Hashes a password to a PHC string.
pub async fn hash(password: &str) -> String {
    let password = password.to_string();
    let _slot = SLOTS.acquire().await.expect("semaphore never closes");
    tokio::task::spawn_blocking(move || {
        hasher()
            .hash_password(password.as_bytes())
            .expect("hashing with valid parameters cannot fail")
            .to_string()
    })
    .await
    .expect("hashing does not panic")
}

/// Checks a password against a PHC string.
pub async fn verify(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_string(), phc.to_string());
    let _slot = SLOTS.acquire().await.expect("semaphore never closes");
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|h| hasher().verify_password(password.as_bytes(), &h).is_ok())
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Remembers, for a short time, that a user's current credentials were
/// right. Keyed by a salted hash of user and secret, never the secret.
pub struct VerifiedCache {
    salt: [u8; 16],
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Instant>>,
}

const CACHE_MAX: usize = 10_000;

impl VerifiedCache {
    pub fn new(ttl: Duration) -> Self {
        VerifiedCache {
            salt: *uuid::Uuid::new_v4().as_bytes(),
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, user: &str, secret: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(secret.as_bytes());
        h.finalize().into()
    }

    pub fn hit(&self, user: &str, secret: &str) -> bool {
        let key = self.key(user, secret);
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&key).is_some_and(|t| t.elapsed() < self.ttl)
    }

    pub fn remember(&self, user: &str, secret: &str) {
        let key = self.key(user, secret);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX {
            let ttl = self.ttl;
            entries.retain(|_, t| t.elapsed() < ttl);
            if entries.len() >= CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(key, Instant::now());
    }

    /// Forgets everything (a password changed or a user was removed).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify() {
        let h = hash("s3cret").await;
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h).await);
        assert!(!verify("s3creT", &h).await);
        assert!(!verify("s3cret", "not a hash").await);
    }

    #[test]
    fn cache_expires_and_separates_users() {
        let c = VerifiedCache::new(Duration::from_millis(50));
        c.remember("alice", "pw");
        assert!(c.hit("alice", "pw"));
        assert!(!c.hit("alice", "other"));
        assert!(!c.hit("bob", "pw"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!c.hit("alice", "pw"));
    }
}
