//! appc ACIs: names and labels mapped onto repositories and tags, images
//! pushed with the acpush protocol (`push`), the streaming reader that
//! checks an uploaded ACI and computes its image ID (`inspect`), image
//! manifests (`manifest`), and Docker/OCI images served as ACIs
//! (`convert`).
//!
//! Mapping. An ACI name is `<domain>/<repository>`: the domain is one the
//! hub answers for, the rest a repository name (`hub.example.com/acme/web`
//! is repository `acme/web`; `hub.example.com/web` is `web`, in
//! `library`). The label `version` is the tag (`latest` when none is
//! asked), `os` and `arch` are appc's values (`linux`/`amd64`, `aarch64`,
//! `armv7l`, ...). A request is answered by the ACI pushed under exactly
//! those labels, else (ACIs only, no signature) by the Docker/OCI image the
//! tag names, converted for that platform.
//!
//! Architecture invariant: an ACI is never held in memory. Uploads are
//! hashed, decompressed and checked while they stream into storage;
//! conversions stream from the layers into storage; fetches stream blobs.

pub mod convert;
pub mod inspect;
pub mod manifest;
pub mod push;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::digest::Digest;
use super::name::{RepoName, Tag};
use super::{Registry, RegistryError};
use crate::meta::MetaError;
use crate::meta::aci::AciImage;
use crate::storage::ByteStream;

/// The appc spec version the hub writes into the manifests it makes.
pub const AC_VERSION: &str = "0.8.11";
/// Largest armored signature or key set accepted.
pub const MAX_ARMORED: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AciError {
    /// Nothing there (or nothing the caller may know of).
    #[error("{0}")]
    NotFound(String),
    /// The request or its content is wrong; nothing was changed.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type AciResult<T> = Result<T, AciError>;

impl From<MetaError> for AciError {
    fn from(e: MetaError) -> Self {
        AciError::Internal(e.to_string())
    }
}

impl From<RegistryError> for AciError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::BlobUnknown | RegistryError::ManifestUnknown => {
                AciError::NotFound(e.to_string())
            }
            RegistryError::Internal(m) => AciError::Internal(m),
            e => AciError::Invalid(e.to_string()),
        }
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// appc's AC identifier: `[a-z0-9]+([-._~/][a-z0-9]+)*`.
pub fn valid_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    b.iter().all(|&c| is_alnum(c) || b"-._~/".contains(&c))
        && b.windows(2).all(|w| is_alnum(w[0]) || is_alnum(w[1]))
}

/// appc's AC name (ports, volumes): `[a-z0-9]+(-[a-z0-9]+)*`.
pub fn valid_acname(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum(c) || c == b'-')
        && !s.contains("--")
}

/// The os/arch pairs appc allows (`schema/types/labels.go`).
pub fn valid_os_arch(os: &str, arch: Option<&str>) -> bool {
    let archs: &[&str] = match os {
        "linux" => &[
            "amd64",
            "i386",
            "aarch64",
            "aarch64_be",
            "armv6l",
            "armv7l",
            "armv7b",
            "ppc64",
            "ppc64le",
            "s390x",
        ],
        "freebsd" => &["amd64", "i386", "arm"],
        "darwin" => &["x86_64", "i386"],
        _ => return false,
    };
    arch.is_none_or(|a| archs.contains(&a))
}

/// An ACI name the hub serves: a domain and the repository behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AciName {
    pub domain: String,
    pub repo: RepoName,
}

impl AciName {
    /// Parses `<domain>/<repository>`; the domain must be one of `domains`.
    pub fn parse(name: &str, domains: &[String]) -> AciResult<AciName> {
        let unknown = || AciError::NotFound(format!("{name:?} is not an image name of this hub"));
        if !valid_identifier(name) {
            return Err(AciError::Invalid(format!(
                "{name:?} is not a valid AC identifier"
            )));
        }
        let (domain, rest) = name.split_once('/').ok_or_else(unknown)?;
        if !domains.iter().any(|d| d == domain) {
            return Err(unknown());
        }
        let repo = rest.parse::<RepoName>().map_err(|e| {
            AciError::NotFound(format!("{name:?} names no repository of this hub: {e}"))
        })?;
        Ok(AciName {
            domain: domain.to_string(),
            repo,
        })
    }
}

impl std::fmt::Display for AciName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.repo)
    }
}

/// The labels an image is found by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    pub version: String,
    pub os: String,
    pub arch: String,
}

impl Labels {
    /// Checks the labels of a request: the version must be a possible tag,
    /// os and arch a pair appc knows.
    pub fn parse(version: &str, os: &str, arch: &str) -> AciResult<Labels> {
        version.parse::<Tag>().map_err(|e| {
            AciError::Invalid(format!(
                "version {version:?} cannot name an image here: {e}"
            ))
        })?;
        if !valid_os_arch(os, Some(arch)) {
            return Err(AciError::Invalid(format!(
                "os/arch {os}/{arch} is not one appc defines"
            )));
        }
        Ok(Labels {
            version: version.to_string(),
            os: os.to_string(),
            arch: arch.to_string(),
        })
    }
}

/// Something to stream back: a blob of a repository.
pub struct Served {
    pub digest: Digest,
    pub size: u64,
    /// `sha512-...` for ACIs (none for signatures).
    pub image_id: Option<String>,
    pub stream: ByteStream,
}

/// The ACI service: the registry plus what lives only in this process
/// (push sessions, the per-conversion locks).
pub struct Aci {
    reg: Arc<Registry>,
    sessions: push::Sessions,
    converting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Aci {
    pub fn new(reg: Arc<Registry>) -> Arc<Aci> {
        Arc::new(Aci {
            reg,
            sessions: push::Sessions::default(),
            converting: Mutex::new(HashMap::new()),
        })
    }

    /// True if the repository exists.
    pub async fn repo_exists(&self, repo: &RepoName) -> AciResult<bool> {
        Ok(self.reg.meta.repo_exists(repo).await?)
    }

    /// A pushed image, if its ACI is still linked into its repository.
    async fn pushed(&self, repo: &RepoName, labels: &Labels) -> AciResult<Option<AciImage>> {
        let Some(img) = self
            .reg
            .meta
            .aci_image(repo, &labels.version, &labels.os, &labels.arch)
            .await?
        else {
            return Ok(None);
        };
        Ok(self.linked(repo, &img.aci).await?.then_some(img))
    }

    async fn linked(&self, repo: &RepoName, digest: &Digest) -> AciResult<bool> {
        Ok(self.reg.meta.repo_blob(repo, digest).await?.is_some())
    }

    async fn serve(
        &self,
        digest: Digest,
        size: u64,
        image_id: Option<String>,
    ) -> AciResult<Served> {
        let stream = self.reg.read_blob(&digest, 0..size).await?;
        Ok(Served {
            digest,
            size,
            image_id,
            stream,
        })
    }

    /// The ACI for `name` with `labels`: pushed, else converted from the
    /// Docker/OCI image of the tag (on first request; cached).
    pub async fn fetch(&self, name: &AciName, labels: &Labels) -> AciResult<Served> {
        if let Some(img) = self.pushed(&name.repo, labels).await? {
            return self.serve(img.aci, img.size, Some(img.image_id)).await;
        }
        let c = self.converted(name, labels).await?;
        self.serve(c.aci, c.size, Some(c.image_id)).await
    }

    /// The armored signature of a pushed ACI (converted ones have none).
    pub async fn fetch_signature(&self, name: &AciName, labels: &Labels) -> AciResult<Served> {
        let none = || AciError::NotFound(format!("{name} has no signature for {labels:?}"));
        let img = self.pushed(&name.repo, labels).await?.ok_or_else(none)?;
        let sig = img.signature.ok_or_else(none)?;
        let size = self
            .reg
            .meta
            .repo_blob(&name.repo, &sig)
            .await?
            .ok_or_else(none)?;
        self.serve(sig, size, None).await
    }

    /// The armored public keys of a namespace.
    pub async fn pubkeys(&self, namespace: &str) -> AciResult<Option<String>> {
        Ok(self.reg.meta.aci_pubkeys(namespace).await?)
    }

    /// Replaces a namespace's keys after checking they look like armored
    /// OpenPGP public keys.
    pub async fn set_pubkeys(&self, namespace: &str, armored: &str) -> AciResult<()> {
        if armored.len() > MAX_ARMORED {
            return Err(AciError::Invalid(format!(
                "key set is larger than {MAX_ARMORED} bytes"
            )));
        }
        check_armor(armored, "PUBLIC KEY BLOCK")?;
        self.reg
            .meta
            .set_aci_pubkeys(namespace, armored, super::now())
            .await?;
        Ok(())
    }

    pub async fn delete_pubkeys(&self, namespace: &str) -> AciResult<bool> {
        Ok(self.reg.meta.delete_aci_pubkeys(namespace).await?)
    }
}

/// Checks that `text` is one or more ASCII-armored OpenPGP blocks of
/// `kind` (`PUBLIC KEY BLOCK`, `SIGNATURE`) and nothing else but blank
/// lines.
pub fn check_armor(text: &str, kind: &str) -> AciResult<()> {
    let begin = format!("-----BEGIN PGP {kind}-----");
    let end = format!("-----END PGP {kind}-----");
    let bad = |why: &str| AciError::Invalid(format!("not an armored OpenPGP {kind}: {why}"));
    let mut blocks = 0;
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim_end();
        if inside {
            if line == end {
                inside = false;
                blocks += 1;
            } else if !line.bytes().all(|c| c.is_ascii_graphic() || c == b' ') {
                return Err(bad("a line holds non-ASCII text"));
            }
        } else if line == begin {
            inside = true;
        } else if !line.is_empty() {
            return Err(bad("text outside the armor"));
        }
    }
    if inside {
        return Err(bad("the armor is not closed"));
    }
    if blocks == 0 {
        return Err(bad(&format!("no {begin} line")));
    }
    Ok(())
}

/// A small body (signature, manifest, keys) read whole, bounded.
pub async fn gather(mut body: ByteStream, limit: usize) -> AciResult<Bytes> {
    use futures_util::StreamExt;
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AciError::Invalid(format!("reading the body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(AciError::Invalid(format!(
                "body is larger than {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_repositories() {
        let d = vec!["hub.test".to_string(), "127.0.0.1".to_string()];
        let n = AciName::parse("hub.test/acme/web", &d).unwrap();
        assert_eq!(n.repo.as_str(), "acme/web");
        assert_eq!(n.to_string(), "hub.test/acme/web");
        assert_eq!(
            AciName::parse("127.0.0.1/web", &d)
                .unwrap()
                .repo
                .namespace(),
            "library"
        );
        assert!(matches!(
            AciName::parse("other.test/acme/web", &d),
            Err(AciError::NotFound(_))
        ));
        assert!(matches!(
            AciName::parse("hub.test", &d),
            Err(AciError::NotFound(_))
        ));
        // An AC identifier that is no repository name.
        assert!(matches!(
            AciName::parse("hub.test/a~b/c", &d),
            Err(AciError::NotFound(_))
        ));
        assert!(matches!(
            AciName::parse("Hub.test/a", &d),
            Err(AciError::Invalid(_))
        ));
        assert!(valid_identifier("example.com/reduce-worker"));
        assert!(!valid_identifier("a//b"));
        assert!(!valid_identifier("-a"));
        assert!(valid_acname("tcp-80"));
        assert!(!valid_acname("tcp--80"));
    }

    #[test]
    fn labels() {
        assert!(Labels::parse("1.0.0", "linux", "amd64").is_ok());
        assert!(Labels::parse("1.0.0+meta", "linux", "amd64").is_err());
        assert!(Labels::parse("latest", "linux", "x86_64").is_err());
        assert!(Labels::parse("v1", "darwin", "x86_64").is_ok());
    }

    #[test]
    fn armor() {
        let k = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQ==\n=ab\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert!(check_armor(k, "PUBLIC KEY BLOCK").is_ok());
        assert!(check_armor(&format!("{k}{k}"), "PUBLIC KEY BLOCK").is_ok());
        assert!(check_armor(k, "SIGNATURE").is_err());
        assert!(check_armor("hello", "PUBLIC KEY BLOCK").is_err());
        assert!(check_armor(&k[..40], "PUBLIC KEY BLOCK").is_err());
    }
}
