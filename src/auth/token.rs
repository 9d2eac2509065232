//! Docker registry bearer tokens: JWTs signed with the token service's
//! private key and verified against the certificates of the root bundle,
//! as the Docker token authentication specification describes.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// One grant of a token: `{"type":"repository","name":"a/b","actions":["pull"]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The account the token was issued to; empty for anonymous.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
    /// The API token the subject logged in with, if any: the bearer token
    /// dies with it and never exceeds its scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dyt: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Generate(String),
}

fn file_err(path: &Path, message: impl ToString) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Signs tokens.
pub struct Issuer {
    key: EncodingKey,
    algorithm: Algorithm,
    kid: String,
    issuer: String,
    service: String,
    lifetime: Duration,
}

/// Checks tokens: signature by a key of the bundle, issuer, audience
/// (the service), expiry and not-before.
pub struct Verifier {
    keys: Vec<(DecodingKey, Algorithm)>,
    issuer: String,
    service: String,
}

impl Issuer {
    /// Loads a PEM private key (EC P-256 or RSA, PKCS#8 or traditional).
    pub fn load(
        path: &Path,
        issuer: &str,
        service: &str,
        lifetime: Duration,
    ) -> Result<Issuer, KeyError> {
        let pem = std::fs::read(path).map_err(|e| file_err(path, e))?;
        let (key, algorithm) = if let Ok(k) = EncodingKey::from_ec_pem(&pem) {
            (k, Algorithm::ES256)
        } else if let Ok(k) = EncodingKey::from_rsa_pem(&pem) {
            (k, Algorithm::RS256)
        } else {
            return Err(file_err(path, "not a PEM EC P-256 or RSA private key"));
        };
        let kid = key_id(&pem).map_err(|e| file_err(path, e))?;
        Ok(Issuer {
            key,
            algorithm,
            kid,
            issuer: issuer.to_string(),
            service: service.to_string(),
            lifetime,
        })
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A signed token for `subject` with `access`, and its claims.
    pub fn issue(
        &self,
        subject: &str,
        access: Vec<Access>,
        api_token: Option<&str>,
    ) -> (String, Claims) {
        let now = unix_now();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_string(),
            aud: self.service.clone(),
            exp: now + self.lifetime.as_secs(),
            // A little slack for clocks of other nodes that run behind.
            nbf: now.saturating_sub(10),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
            dyt: api_token.map(str::to_string),
        };
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .expect("signing with a loaded key cannot fail");
        (token, claims)
    }
}

impl Verifier {
    /// Loads every certificate (or public key) of a PEM bundle.
    pub fn load(path: &Path, issuer: &str, service: &str) -> Result<Verifier, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
        let mut keys = Vec::new();
        for block in pem_blocks(&text) {
            if let Ok(k) = DecodingKey::from_ec_pem(block.as_bytes()) {
                keys.push((k, Algorithm::ES256));
            } else if let Ok(k) = DecodingKey::from_rsa_pem(block.as_bytes()) {
                keys.push((k, Algorithm::RS256));
            }
        }
        if keys.is_empty() {
            return Err(file_err(
                path,
                "no EC or RSA certificate or public key in the bundle",
            ));
        }
        Ok(Verifier {
            keys,
            issuer: issuer.to_string(),
            service: service.to_string(),
        })
    }

    /// The claims of a valid token; `None` for anything else (bad
    /// signature, other issuer or audience, expired, not yet valid).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        for (key, alg) in &self.keys {
            if header.alg != *alg {
                continue;
            }
            let mut v = Validation::new(*alg);
            v.set_issuer(&[&self.issuer]);
            v.set_audience(&[&self.service]);
            v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
            v.validate_nbf = true;
            v.leeway = 5;
            if let Ok(data) = jsonwebtoken::decode::<Claims>(token, key, &v) {
                return Some(data.claims);
            }
        }
        None
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// The libtrust key id of the key's public part, which Docker's registry
/// uses to pick a verification key: SHA-256 of the DER public key, the
/// first 240 bits in base32, in groups of four separated by colons.
fn key_id(private_pem: &[u8]) -> Result<String, String> {
    use sha2::Digest as _;
    let text = std::str::from_utf8(private_pem).map_err(|e| e.to_string())?;
    let pair = rcgen::KeyPair::from_pem(text).map_err(|e| format!("reading the key: {e}"))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&pair);
    let hash = sha2::Sha256::digest(&spki);
    let b32 = base32(&hash[..30]);
    let groups: Vec<&str> = (0..b32.len())
        .step_by(4)
        .map(|i| &b32[i..(i + 4).min(b32.len())])
        .collect();
    Ok(groups.join(":"))
}

fn base32(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Creates a development key pair (EC P-256) and a self-signed certificate
/// for it, unless both files exist. Returns true if it generated them.
pub fn ensure_dev_keys(key_path: &Path, cert_path: &Path) -> Result<bool, KeyError> {
    match (key_path.exists(), cert_path.exists()) {
        (true, true) => return Ok(false),
        (true, false) => return Err(file_err(cert_path, "missing, but the private key exists")),
        (false, true) => return Err(file_err(key_path, "missing, but the certificate exists")),
        (false, false) => {}
    }
    let pair = rcgen::KeyPair::generate().map_err(|e| KeyError::Generate(e.to_string()))?;
    let params = rcgen::CertificateParams::new(vec!["dockyard-token-signer".to_string()])
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let cert = params
        .self_signed(&pair)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    for path in [key_path, cert_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        }
    }
    write_private(key_path, pair.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem()).map_err(|e| file_err(cert_path, e))?;
    Ok(true)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(bytes).map_err(|e| file_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path) -> (Issuer, Verifier) {
        let (key, cert) = (dir.join("k.pem"), dir.join("c.pem"));
        assert!(ensure_dev_keys(&key, &cert).unwrap());
        assert!(!ensure_dev_keys(&key, &cert).unwrap());
        (
            Issuer::load(&key, "iss", "svc", Duration::from_secs(60)).unwrap(),
            Verifier::load(&cert, "iss", "svc").unwrap(),
        )
    }

    #[test]
    fn issues_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, verifier) = pair(dir.path());
        let access = vec![Access {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        }];
        let (token, _) = issuer.issue("alice", access.clone(), None);
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access, access);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        let kid = header.kid.unwrap();
        assert_eq!(kid.len(), 12 * 4 + 11, "libtrust key id: {kid}");
    }

    #[test]
    fn refuses_tampered_foreign_and_misaddressed_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, verifier) = pair(dir.path());
        let (token, _) = issuer.issue("alice", Vec::new(), None);
        // Flip a character of the payload.
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut p = parts[1].clone().into_bytes();
        p[5] = if p[5] == b'A' { b'B' } else { b'A' };
        parts[1] = String::from_utf8(p).unwrap();
        assert!(verifier.verify(&parts.join(".")).is_none(), "tampered");
        // Another key.
        let other = tempfile::tempdir().unwrap();
        let (other_issuer, _) = pair(other.path());
        assert!(
            verifier
                .verify(&other_issuer.issue("alice", Vec::new(), None).0)
                .is_none(),
            "foreign key"
        );
        // Wrong audience / issuer.
        let key = dir.path().join("k.pem");
        let wrong_aud = Issuer::load(&key, "iss", "other", Duration::from_secs(60)).unwrap();
        assert!(
            verifier
                .verify(&wrong_aud.issue("alice", Vec::new(), None).0)
                .is_none(),
            "audience"
        );
        let wrong_iss = Issuer::load(&key, "evil", "svc", Duration::from_secs(60)).unwrap();
        assert!(
            verifier
                .verify(&wrong_iss.issue("alice", Vec::new(), None).0)
                .is_none(),
            "issuer"
        );
        // Expired.
        let expired = Issuer::load(&key, "iss", "svc", Duration::from_secs(0)).unwrap();
        let (t, _) = expired.issue("alice", Vec::new(), None);
        std::thread::sleep(Duration::from_millis(1100));
        let v = verifier;
        // Leeway is 5 s, so build a token already past it.
        let claims = Claims {
            iss: "iss".into(),
            sub: "alice".into(),
            aud: "svc".into(),
            exp: unix_now() - 60,
            nbf: unix_now() - 120,
            iat: unix_now() - 120,
            jti: "x".into(),
            access: Vec::new(),
            dyt: None,
        };
        let mut header = Header::new(expired.algorithm);
        header.kid = Some(expired.kid.clone());
        let old = jsonwebtoken::encode(&header, &claims, &expired.key).unwrap();
        assert!(v.verify(&old).is_none(), "expired");
        assert!(v.verify(&t).is_some(), "within leeway");
        assert!(v.verify("garbage").is_none());
    }

    #[test]
    fn base32_matches_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }
}
