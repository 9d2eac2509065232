//! Manifests, tags, the catalog and referrers.

use bytes::Bytes;

use super::digest::{Algorithm, Digest};
use super::manifest::{self, ManifestKind};
use super::name::{Reference, RepoName};
use super::{Registry, RegistryError, RegistryResult};
use crate::meta::{ManifestRecord, Referrer};

/// Page size when the client gives none, and the most a page may hold:
/// every listing is bounded in memory.
pub const DEFAULT_PAGE: u32 = 1000;
pub const MAX_PAGE: u32 = 10_000;

/// A manifest as served.
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// The outcome of a manifest push.
pub struct Pushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// One page of a listing and whether more follow.
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// What a client said it accepts, as far as manifests go.
pub struct Accept {
    types: Vec<String>,
}

impl Accept {
    /// From the values of every `Accept` header of a request.
    pub fn from_headers<'a>(values: impl Iterator<Item = &'a str>) -> Accept {
        let types = values
            .flat_map(|v| v.split(','))
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|t| !t.is_empty())
            .collect();
        Accept { types }
    }

    /// True if the client named no manifest type at all, or a wildcard, or
    /// `media_type` itself. Clients that send only unrelated types (such as
    /// `application/json`) get what is stored, as the reference does.
    fn allows(&self, media_type: &str) -> bool {
        let names_manifests = self
            .types
            .iter()
            .any(|t| ManifestKind::from_media_type(t).is_some());
        !names_manifests
            || self
                .types
                .iter()
                .any(|t| t == media_type || t == "*/*" || t == "application/*")
    }
}

impl Registry {
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: &Accept,
    ) -> RegistryResult<Manifest> {
        let found = match reference {
            Reference::Tag(tag) => {
                self.meta
                    .manifest_by_tag(repo, tag)
                    .await?
                    .map(|(digest, media_type, body)| Manifest {
                        digest,
                        media_type,
                        body,
                    })
            }
            Reference::Digest(digest) => {
                self.meta
                    .manifest_by_digest(repo, digest)
                    .await?
                    .map(|(media_type, body)| Manifest {
                        digest: digest.clone(),
                        media_type,
                        body,
                    })
            }
        };
        let m = found.ok_or(RegistryError::ManifestUnknown)?;
        if accept.allows(&m.media_type) {
            return Ok(m);
        }
        // A client that cannot read manifest lists gets the linux/amd64
        // image of a Docker list, as Docker's own registry does; only for a
        // tag, since content fetched by digest must match the digest.
        if matches!(reference, Reference::Tag(_))
            && m.media_type == manifest::DOCKER_LIST
            && accept.allows(manifest::DOCKER_MANIFEST)
            && let Some(child) = default_platform_child(&m.body)
            && let Some((media_type, body)) = self.meta.manifest_by_digest(repo, &child).await?
            && accept.allows(&media_type)
        {
            return Ok(Manifest {
                digest: child,
                media_type,
                body,
            });
        }
        Err(RegistryError::ManifestNotAcceptable(m.media_type))
    }

    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> RegistryResult<Pushed> {
        if body.len() as u64 > self.limits.max_manifest_size {
            return Err(RegistryError::ManifestTooLarge(
                self.limits.max_manifest_size,
            ));
        }
        let parsed = manifest::parse(content_type, &body)?;
        let digest = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(RegistryError::DigestInvalid(format!(
                        "manifest is {actual}, not {expected}"
                    )));
                }
                actual
            }
            Reference::Tag(_) => Digest::of(Algorithm::Sha256, &body),
        };
        let record = ManifestRecord {
            digest: digest.clone(),
            media_type: parsed.kind.media_type().to_string(),
            body,
            subject: parsed.subject.clone(),
            artifact_type: parsed.artifact_type,
            annotations: parsed.annotations,
            blob_refs: parsed.blob_refs,
            manifest_refs: parsed.manifest_refs,
        };
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        let missing = self.meta.put_manifest(repo, &record, tag).await?;
        if let Some(d) = missing.blobs.first().or(missing.manifests.first()) {
            let what = if missing.blobs.is_empty() {
                "manifest"
            } else {
                "blob"
            };
            return Err(RegistryError::ManifestBlobUnknown(format!(
                "{what} {d} is not in repository {repo}"
            )));
        }
        Ok(Pushed {
            digest,
            subject: parsed.subject,
        })
    }

    /// Deletes a manifest (by digest, with every tag on it) or one tag.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> RegistryResult<()> {
        let deleted = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t).await?,
        };
        if deleted {
            Ok(())
        } else {
            Err(RegistryError::ManifestUnknown)
        }
    }

    pub async fn list_tags(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: Option<u32>,
    ) -> RegistryResult<Page> {
        if !self.meta.repo_exists(repo).await? {
            return Err(RegistryError::NameUnknown);
        }
        let n = page_size(n);
        if n == 0 {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        let mut items = self.meta.list_tags(repo, last, n + 1).await?;
        Ok(trim_page(&mut items, n))
    }

    pub async fn catalog(&self, last: Option<&str>, n: Option<u32>) -> RegistryResult<Page> {
        let n = page_size(n);
        if n == 0 {
            return Ok(Page {
                items: Vec::new(),
                more: false,
            });
        }
        let mut items = self.meta.list_repos(last, n + 1).await?;
        Ok(trim_page(&mut items, n))
    }

    /// One page of the manifests in `repo` whose subject is `subject`,
    /// optionally only those of one artifact type, after the referrer
    /// `last`; and whether more follow. An unknown subject has none.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        last: Option<&Digest>,
    ) -> RegistryResult<(Vec<Referrer>, bool)> {
        let mut page = self
            .meta
            .referrers(repo, subject, artifact_type, last, MAX_PAGE + 1)
            .await?;
        let more = page.len() > MAX_PAGE as usize;
        page.truncate(MAX_PAGE as usize);
        Ok((page, more))
    }
}

pub fn page_size(n: Option<u32>) -> u32 {
    n.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE)
}

fn trim_page(items: &mut Vec<String>, n: u32) -> Page {
    let more = items.len() > n as usize;
    items.truncate(n as usize);
    Page {
        items: std::mem::take(items),
        more,
    }
}

/// The linux/amd64 entry of a manifest list, if it has one.
fn default_platform_child(list: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(list).ok()?;
    v.get("manifests")?.as_array()?.iter().find_map(|m| {
        let p = m.get("platform")?;
        if p.get("os")?.as_str()? == "linux" && p.get("architecture")?.as_str()? == "amd64" {
            m.get("digest")?.as_str()?.parse().ok()
        } else {
            None
        }
    })
}
