//! Tickets: short-lived capabilities "peer P may fetch blob D until T",
//! signed by the hub with its token key (ES256 or RS256, as Docker bearer
//! tokens) when P's own pull of D was authorized, and checked by every peer
//! before it serves a byte (or even says which pieces it has). This is what
//! keeps private images private in the swarm: a peer without a ticket for
//! a digest gets nothing for it (Spegel serves anything to anyone who asks).
//!
//! Claims: `{iss, aud: "dockyard-p2p", sub: <requester PeerId>, dig:
//! <digest>, iat, nbf, exp}`. The subject is matched against the PeerId the
//! noise handshake authenticated, so a stolen ticket is useless to another
//! node.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::registry::digest::Digest;

/// The audience of every ticket.
pub const AUDIENCE: &str = "dockyard-p2p";

/// Most tickets a verifier remembers as verified (each is a few hundred
/// bytes); when full it forgets them all.
const CACHE_LIMIT: usize = 4096;

/// A signed ticket in its compact JWT form.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ticket(String);

impl Ticket {
    pub fn new(token: impl Into<String>) -> Ticket {
        Ticket(token.into())
    }

    /// The absence of a ticket (what a requester without one sends).
    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    pub fn none() -> Ticket {
        Ticket(String::new())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The claims without checking the signature: for a holder deciding
    /// when to ask for a new one, never for a decision to serve.
    #[cfg_attr(not(test), allow(dead_code))] // the tests use it
    pub fn unverified_claims(&self) -> Option<TicketClaims> {
        use base64::Engine as _;
        let payload = self.0.split('.').nth(1)?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?;
        serde_json::from_slice(&json).ok()
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Capabilities stay out of logs.
        write!(f, "Ticket({} bytes)", self.0.len())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    pub iss: String,
    pub aud: String,
    /// The requester's PeerId (base58).
    pub sub: String,
    /// The digest it may fetch.
    pub dig: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("{path}: {message}")]
    Key { path: String, message: String },
    #[error("no ticket")]
    Missing,
    #[error("ticket signature, issuer or audience invalid")]
    Invalid,
    #[error("ticket expired")]
    Expired,
    #[error("ticket is for another digest")]
    WrongDigest,
    #[error("ticket is for another peer")]
    WrongPeer,
}

fn key_err(path: &Path, message: impl ToString) -> TicketError {
    TicketError::Key {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs tickets (the hub).
pub struct TicketIssuer {
    key: EncodingKey,
    algorithm: Algorithm,
    issuer: String,
    lifetime: Duration,
}

impl TicketIssuer {
    /// Loads the hub's token key (PEM EC P-256 or RSA private key), the
    /// one `auth::token::Issuer` signs bearer tokens with.
    pub fn load(
        path: &Path,
        issuer: &str,
        lifetime: Duration,
    ) -> Result<TicketIssuer, TicketError> {
        let pem = std::fs::read(path).map_err(|e| key_err(path, e))?;
        Self::from_pem(&pem, issuer, lifetime).map_err(|m| key_err(path, m))
    }

    pub fn from_pem(pem: &[u8], issuer: &str, lifetime: Duration) -> Result<TicketIssuer, String> {
        let (key, algorithm) = if let Ok(k) = EncodingKey::from_ec_pem(pem) {
            (k, Algorithm::ES256)
        } else if let Ok(k) = EncodingKey::from_rsa_pem(pem) {
            (k, Algorithm::RS256)
        } else {
            return Err("not a PEM EC P-256 or RSA private key".into());
        };
        Ok(TicketIssuer {
            key,
            algorithm,
            issuer: issuer.to_string(),
            lifetime,
        })
    }

    /// A ticket for `requester` to fetch `digest`, valid for the lifetime.
    pub fn issue(&self, requester: &PeerId, digest: &Digest) -> Ticket {
        self.issue_until(requester, digest, unix_now() + self.lifetime.as_secs())
    }

    /// A ticket expiring at `exp` (seconds since the epoch).
    pub fn issue_until(&self, requester: &PeerId, digest: &Digest, exp: u64) -> Ticket {
        let now = unix_now();
        let claims = TicketClaims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_string(),
            sub: requester.to_base58(),
            dig: digest.as_str().to_string(),
            iat: now,
            // Slack for peers whose clocks run behind.
            nbf: now.saturating_sub(10),
            exp,
        };
        let header = Header::new(self.algorithm);
        Ticket(
            jsonwebtoken::encode(&header, &claims, &self.key)
                .expect("signing with a loaded key cannot fail"),
        )
    }
}

/// Checks tickets (every peer): signature by a key of the hub's
/// certificate bundle, issuer, audience, expiry, digest and requester.
/// Signature checks are remembered per ticket string, so a peer fetching
/// many pieces with one ticket costs one signature check per server.
pub struct TicketVerifier {
    keys: Vec<(DecodingKey, Algorithm)>,
    issuer: String,
    cache: Mutex<HashMap<String, TicketClaims>>,
}

impl TicketVerifier {
    /// Loads every EC or RSA certificate (or public key) of a PEM bundle:
    /// the hub's `[token]` root certificate bundle.
    pub fn load(path: &Path, issuer: &str) -> Result<TicketVerifier, TicketError> {
        let text = std::fs::read_to_string(path).map_err(|e| key_err(path, e))?;
        Self::from_pem(&text, issuer).map_err(|m| key_err(path, m))
    }

    pub fn from_pem(text: &str, issuer: &str) -> Result<TicketVerifier, String> {
        let mut keys = Vec::new();
        for block in pem_blocks(text) {
            if let Ok(k) = DecodingKey::from_ec_pem(block.as_bytes()) {
                keys.push((k, Algorithm::ES256));
            } else if let Ok(k) = DecodingKey::from_rsa_pem(block.as_bytes()) {
                keys.push((k, Algorithm::RS256));
            }
        }
        if keys.is_empty() {
            return Err("no EC or RSA certificate or public key in the bundle".into());
        }
        Ok(TicketVerifier {
            keys,
            issuer: issuer.to_string(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The claims if `ticket` lets `requester` fetch `digest` now.
    pub fn verify(
        &self,
        ticket: &Ticket,
        requester: &PeerId,
        digest: &Digest,
    ) -> Result<TicketClaims, TicketError> {
        if ticket.is_empty() {
            return Err(TicketError::Missing);
        }
        let cached = self.cache.lock().unwrap().get(&ticket.0).cloned();
        let claims = match cached {
            Some(c) => c,
            None => {
                let c = self.check_signature(&ticket.0)?;
                let mut cache = self.cache.lock().unwrap();
                if cache.len() >= CACHE_LIMIT {
                    cache.clear();
                }
                cache.insert(ticket.0.clone(), c.clone());
                c
            }
        };
        let now = unix_now();
        if claims.exp <= now {
            return Err(TicketError::Expired);
        }
        if claims.nbf > now + 5 {
            return Err(TicketError::Invalid);
        }
        if claims.dig != digest.as_str() {
            return Err(TicketError::WrongDigest);
        }
        if claims.sub != requester.to_base58() {
            return Err(TicketError::WrongPeer);
        }
        Ok(claims)
    }

    fn check_signature(&self, token: &str) -> Result<TicketClaims, TicketError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TicketError::Invalid)?;
        let mut expired = false;
        for (key, alg) in &self.keys {
            if header.alg != *alg {
                continue;
            }
            let mut v = Validation::new(*alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[AUDIENCE]);
            v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            v.validate_nbf = true;
            v.leeway = 5;
            match jsonwebtoken::decode::<TicketClaims>(token, key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    expired |= matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature)
                }
            }
        }
        Err(if expired {
            TicketError::Expired
        } else {
            TicketError::Invalid
        })
    }
}

/// The PEM blocks of a bundle, each with its armour lines.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(format!("{line}\n"));
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry::digest::Algorithm as DigestAlgorithm;

    /// A hub key pair in `dir` (the dev keys of `auth::token`).
    pub(crate) fn keys(dir: &Path) -> (TicketIssuer, TicketVerifier) {
        let (key, cert) = (dir.join("token.key"), dir.join("token.crt"));
        crate::auth::token::ensure_dev_keys(&key, &cert).unwrap();
        (
            TicketIssuer::load(&key, "hub", Duration::from_secs(300)).unwrap(),
            TicketVerifier::load(&cert, "hub").unwrap(),
        )
    }

    #[test]
    fn issues_verifies_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, verifier) = keys(dir.path());
        let me = PeerId::random();
        let d = Digest::of(DigestAlgorithm::Sha256, b"blob");
        let t = issuer.issue(&me, &d);
        let c = verifier.verify(&t, &me, &d).unwrap();
        assert_eq!(c.aud, AUDIENCE);
        assert_eq!(c.sub, me.to_base58());
        assert_eq!(t.unverified_claims().unwrap(), c);
        // Cached path gives the same answers.
        assert!(verifier.verify(&t, &me, &d).is_ok());
        assert_eq!(
            verifier.verify(&t, &PeerId::random(), &d),
            Err(TicketError::WrongPeer)
        );
        let other = Digest::of(DigestAlgorithm::Sha256, b"other");
        assert_eq!(
            verifier.verify(&t, &me, &other),
            Err(TicketError::WrongDigest)
        );
        assert_eq!(
            verifier.verify(&Ticket::none(), &me, &d),
            Err(TicketError::Missing)
        );
        assert_eq!(
            verifier.verify(&Ticket::new("a.b.c"), &me, &d),
            Err(TicketError::Invalid)
        );
        let old = issuer.issue_until(&me, &d, unix_now() - 60);
        assert_eq!(verifier.verify(&old, &me, &d), Err(TicketError::Expired));
        // Signed by another hub.
        let dir2 = tempfile::tempdir().unwrap();
        let (foreign, _) = keys(dir2.path());
        assert_eq!(
            verifier.verify(&foreign.issue(&me, &d), &me, &d),
            Err(TicketError::Invalid)
        );
        // Right key, other issuer name.
        let wrong_iss = TicketIssuer::load(
            &dir.path().join("token.key"),
            "evil",
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&wrong_iss.issue(&me, &d), &me, &d),
            Err(TicketError::Invalid)
        );
        // Tampered payload (sub swapped for another peer).
        let mut parts: Vec<String> = t.as_str().split('.').map(String::from).collect();
        let mut claims = c.clone();
        let thief = PeerId::random();
        claims.sub = thief.to_base58();
        use base64::Engine as _;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims).unwrap());
        let forged = Ticket::new(parts.join("."));
        assert_eq!(
            verifier.verify(&forged, &thief, &d),
            Err(TicketError::Invalid)
        );
        assert!(format!("{t:?}").starts_with("Ticket("));
    }
}
