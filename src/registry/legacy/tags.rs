//! v1 tags, which are the repositories' v2 tags: setting one converts the
//! v1 chain to a v2 image (once), reading one converts the v2 image to a
//! v1 chain (once). Also the v1 image lists of repositories, and deletes.

use bytes::Bytes;
use serde_json::Value;

use super::convert::{self, ChainLink};
use super::{ImageId, LegacyError, LegacyResult, MAX_IMAGE_REPOS, MAX_LISTING};
use crate::meta::accounts::Refusal;
use crate::meta::legacy::{Conversion, V1Image, V1Layer};
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::manifest::{self, DOCKER_MANIFEST, ManifestKind};
use crate::registry::name::{Reference, RepoName, Tag};
use crate::registry::{Registry, RegistryError, now};

/// An image of a repository's v1 image list.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageEntry {
    pub id: String,
    pub checksum: Option<String>,
}

fn tag_not_found() -> LegacyError {
    LegacyError::NotFound("Tag not found".into())
}

/// The linux/amd64 entry of an image index or manifest list.
fn default_platform_child(list: &[u8]) -> Option<Digest> {
    let v: Value = serde_json::from_slice(list).ok()?;
    v.get("manifests")?.as_array()?.iter().find_map(|m| {
        let p = m.get("platform")?;
        if p.get("os")?.as_str()? == "linux" && p.get("architecture")?.as_str()? == "amd64" {
            m.get("digest")?.as_str()?.parse().ok()
        } else {
            None
        }
    })
}

impl Registry {
    /// Records the images a push to `repo` announces.
    pub async fn v1_declare(&self, repo: &RepoName, ids: &[ImageId]) -> LegacyResult<()> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        Ok(self.meta.declare_v1_images(repo, &ids).await?)
    }

    /// Repositories referencing an image (whose pullers may read it).
    pub async fn v1_image_repos(&self, id: &ImageId) -> LegacyResult<Vec<RepoName>> {
        Ok(self
            .meta
            .v1_image_repos(id.as_str(), MAX_IMAGE_REPOS)
            .await?)
    }

    /// Repositories whose pushes announced an image.
    pub async fn v1_declaring_repos(&self, id: &ImageId) -> LegacyResult<Vec<RepoName>> {
        Ok(self
            .meta
            .v1_declaring_repos(id.as_str(), MAX_IMAGE_REPOS)
            .await?)
    }

    /// Whether `repo` references the image.
    pub async fn v1_references(&self, repo: &RepoName, id: &ImageId) -> LegacyResult<bool> {
        Ok(self.meta.v1_references(repo, id.as_str()).await?)
    }

    /// Points `tag` of `repo` at the v2 image of the v1 image `id` (and its
    /// ancestry), converting the chain the first time. Returns the
    /// manifest's digest.
    pub async fn v1_put_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        id: &ImageId,
    ) -> LegacyResult<Digest> {
        let image = self
            .meta
            .v1_image(id.as_str())
            .await?
            .ok_or_else(|| LegacyError::NotFound("Image not found".into()))?;
        let mut chain: Vec<V1Image> = Vec::with_capacity(image.ancestry.len());
        for aid in image.ancestry.iter().rev() {
            let img = if *aid == image.id {
                image.clone()
            } else {
                self.meta.v1_image(aid).await?.ok_or_else(|| {
                    LegacyError::Invalid(format!("ancestor {aid} of the image is gone"))
                })?
            };
            if !self.v1_present(&img).await? {
                return Err(LegacyError::Invalid(format!(
                    "image {aid} is not complete: push its layer and checksum first"
                )));
            }
            chain.push(img);
        }
        let reference = Reference::Tag(tag.clone());
        let digest = match self.meta.manifest_of_v1_image(id.as_str()).await? {
            Some(conv) => {
                self.v1_link_manifest_blobs(repo, &conv.body).await?;
                self.put_manifest(repo, &reference, Some(&conv.media_type), conv.body)
                    .await?
                    .digest
            }
            None => {
                self.v1_convert_to_v2(repo, &reference, &image.id, &chain)
                    .await?
            }
        };
        self.meta.reference_v1_images(repo, &image.ancestry).await?;
        Ok(digest)
    }

    async fn v1_convert_to_v2(
        &self,
        repo: &RepoName,
        reference: &Reference,
        id: &str,
        chain: &[V1Image],
    ) -> LegacyResult<Digest> {
        let mut jsons = Vec::with_capacity(chain.len());
        let mut facts = Vec::with_capacity(chain.len());
        for img in chain {
            let layer = img.layer.clone().ok_or_else(|| {
                LegacyError::Internal(format!("complete v1 image {} has no layer", img.id))
            })?;
            let info = self.v1_layer_info(&layer.digest, layer.size).await?;
            let json: Value = serde_json::from_slice(&img.json).map_err(|e| {
                LegacyError::Internal(format!("stored JSON of v1 image {}: {e}", img.id))
            })?;
            jsons.push(json);
            facts.push((layer, info));
        }
        let links: Vec<ChainLink<'_>> = jsons
            .iter()
            .zip(&facts)
            .map(|(json, (layer, info))| ChainLink {
                json,
                layer: &layer.digest,
                size: layer.size,
                diff_id: &info.diff_id,
                media_type: &info.media_type,
            })
            .collect();
        let config = Bytes::from(convert::v2_config(&links));
        let (config_digest, config_size) = self
            .store_generated(
                repo,
                Algorithm::Sha256,
                Box::pin(futures_util::stream::iter([Ok(config)])),
            )
            .await?;
        for (layer, _) in &facts {
            self.meta.link_blob(repo, &layer.digest, layer.size).await?;
        }
        let body = Bytes::from(convert::v2_manifest(&config_digest, config_size, &links));
        let pushed = self
            .put_manifest(repo, reference, Some(DOCKER_MANIFEST), body.clone())
            .await?;
        self.meta
            .put_v1_conversion(&Conversion {
                manifest: pushed.digest.clone(),
                media_type: DOCKER_MANIFEST.to_string(),
                body,
                image: id.to_string(),
            })
            .await?;
        Ok(pushed.digest)
    }

    /// Links every blob a manifest names into `repo`, from wherever the hub
    /// has it (the caller may read the image).
    async fn v1_link_manifest_blobs(&self, repo: &RepoName, body: &[u8]) -> LegacyResult<()> {
        let parsed = manifest::parse(None, body)?;
        for d in &parsed.blob_refs {
            let size = self.store.stat(d).await?.ok_or_else(|| {
                LegacyError::Invalid(format!("blob {d} of the image is gone from the hub"))
            })?;
            self.meta.link_blob(repo, d, size).await?;
        }
        Ok(())
    }

    /// The v1 image a tag of `repo` names (converting its v2 image once).
    pub async fn v1_tag(&self, repo: &RepoName, tag: &Tag) -> LegacyResult<String> {
        let (digest, media_type, body) = self
            .meta
            .manifest_by_tag(repo, tag)
            .await?
            .ok_or_else(tag_not_found)?;
        self.v1_of_manifest(repo, &digest, &media_type, body, true)
            .await
    }

    /// Every tag of `repo` with its v1 image; tags whose image a v1 client
    /// cannot read are left out.
    pub async fn v1_tags(&self, repo: &RepoName) -> LegacyResult<Vec<(String, String)>> {
        let page = match self.list_tags(repo, None, Some(MAX_LISTING)).await {
            Ok(p) => p,
            Err(RegistryError::NameUnknown) => {
                return Err(LegacyError::NotFound("Repository not found".into()));
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::with_capacity(page.items.len());
        for name in page.items {
            let Ok(tag) = name.parse::<Tag>() else {
                continue;
            };
            match self.v1_tag(repo, &tag).await {
                Ok(id) => out.push((name, id)),
                Err(LegacyError::NotFound(_) | LegacyError::Invalid(_)) => {
                    tracing::debug!(%repo, tag = %name, "tag left out of the v1 listing");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn v1_of_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        media_type: &str,
        body: Bytes,
        follow_index: bool,
    ) -> LegacyResult<String> {
        if let Some(id) = self.meta.v1_image_of_manifest(digest).await? {
            if !self.meta.v1_references(repo, &id).await?
                && let Some(img) = self.meta.v1_image(&id).await?
            {
                self.meta.reference_v1_images(repo, &img.ancestry).await?;
            }
            return Ok(id);
        }
        match ManifestKind::from_media_type(media_type) {
            Some(ManifestKind::OciIndex | ManifestKind::DockerList) if follow_index => {
                let child = default_platform_child(&body).ok_or_else(|| {
                    LegacyError::Invalid(
                        "the tag names an index without a linux/amd64 image".into(),
                    )
                })?;
                let (mt, child_body) = self
                    .meta
                    .manifest_by_digest(repo, &child)
                    .await?
                    .ok_or_else(tag_not_found)?;
                return Box::pin(self.v1_of_manifest(repo, &child, &mt, child_body, false)).await;
            }
            Some(ManifestKind::OciManifest | ManifestKind::DockerManifest) => {}
            _ => {
                return Err(LegacyError::Invalid(format!(
                    "a v1 client cannot read a {media_type}"
                )));
            }
        }
        let (config_digest, layers) = convert::v2_layers(&body)?;
        let config = self.v1_small_blob(&config_digest).await?;
        let chain = convert::v1_chain(&config_digest, &config, &layers)?;
        let at = now();
        let mut images: Vec<V1Image> = Vec::with_capacity(chain.len());
        for s in &chain {
            let mut ancestry = vec![s.id.clone()];
            if let Some(p) = images.last() {
                ancestry.extend(p.ancestry.iter().cloned());
            }
            images.push(V1Image {
                id: s.id.clone(),
                json: Bytes::from(s.json.clone()),
                parent: s.parent.clone(),
                ancestry,
                layer: Some(V1Layer {
                    digest: s.layer.digest.clone(),
                    size: s.layer.size,
                }),
                checksum: None,
                complete: true,
                push_repo: None,
                created_at: at,
            });
        }
        self.meta.add_v1_images(&images).await?;
        let ids: Vec<String> = chain.iter().map(|s| s.id.clone()).collect();
        self.meta.reference_v1_images(repo, &ids).await?;
        let top = ids.last().cloned().unwrap_or_default();
        self.meta
            .put_v1_conversion(&Conversion {
                manifest: digest.clone(),
                media_type: media_type.to_string(),
                body,
                image: top.clone(),
            })
            .await?;
        Ok(top)
    }

    /// A blob small enough to read into memory (a config), bounded by the
    /// manifest size limit.
    async fn v1_small_blob(&self, digest: &Digest) -> LegacyResult<Vec<u8>> {
        use futures_util::StreamExt;
        let size =
            self.store.stat(digest).await?.ok_or_else(|| {
                LegacyError::Invalid(format!("config {digest} is gone from the hub"))
            })?;
        if size > self.limits.max_manifest_size {
            return Err(LegacyError::Invalid(format!(
                "config {digest} is larger than {} bytes",
                self.limits.max_manifest_size
            )));
        }
        let mut out = Vec::with_capacity(size as usize);
        if size > 0 {
            let mut s = self.read_blob(digest, 0..size).await?;
            while let Some(chunk) = s.next().await {
                out.extend_from_slice(&chunk.map_err(|e| LegacyError::Internal(e.to_string()))?);
            }
        }
        Ok(out)
    }

    /// The images of `repo` a v1 pull lists: those its pushes announced
    /// and those it holds (its tags' chains included), with checksums
    /// where known.
    pub async fn v1_repo_image_list(&self, repo: &RepoName) -> LegacyResult<Vec<ImageEntry>> {
        if self.meta.repo_exists(repo).await? {
            // Converting the tags records their chains as the repository's.
            self.v1_tags(repo).await?;
        } else if self.meta.v1_repo_images(repo, None, 1).await?.is_empty() {
            return Err(LegacyError::NotFound("images not found".into()));
        }
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        while out.len() < MAX_LISTING as usize {
            let page = self
                .meta
                .v1_repo_images(repo, after.as_deref(), 1000)
                .await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for id in page {
                let checksum = self
                    .meta
                    .v1_image(&id)
                    .await?
                    .filter(|i| i.complete)
                    .and_then(|i| i.checksum);
                out.push(ImageEntry { id, checksum });
            }
            after = Some(last);
        }
        out.truncate(MAX_LISTING as usize);
        Ok(out)
    }

    /// Deletes a tag (the v2 tag; its manifest stays).
    pub async fn v1_delete_tag(&self, repo: &RepoName, tag: &Tag) -> LegacyResult<()> {
        match self
            .delete_manifest(repo, &Reference::Tag(tag.clone()))
            .await
        {
            Ok(()) => Ok(()),
            Err(RegistryError::ManifestUnknown) => Err(tag_not_found()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a repository with all its content; the bytes of its blobs
    /// go at the next garbage collection.
    pub async fn v1_delete_repo(&self, repo: &RepoName) -> LegacyResult<()> {
        match self.meta.delete_repo(repo).await? {
            Ok(()) => {}
            Err(Refusal::Missing(_)) => {
                return Err(LegacyError::NotFound("Repository not found".into()));
            }
            Err(r) => return Err(LegacyError::Invalid(r.to_string())),
        }
        self.meta.forget_v1_repo(repo).await?;
        Ok(())
    }
}
