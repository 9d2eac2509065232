//! v1 images: JSON, layer and checksum pushes, reads, ancestry.

use std::ops::Range;

use bytes::Bytes;
use serde_json::Value;

use super::layer::{LayerHasher, pump};
use super::{ImageId, LegacyError, LegacyResult, MAX_CHAIN};
use crate::meta::accounts::Refusal;
use crate::meta::legacy::{LayerInfo, V1Image, V1Layer};
use crate::registry::digest::{Algorithm, Digest, Hasher};
use crate::registry::name::RepoName;
use crate::registry::uploads::Body;
use crate::registry::{Registry, now};
use crate::storage::{ByteStream, UploadState};

/// An image JSON checked at the edge: an object naming `id`, and its parent.
pub struct ParsedJson {
    pub id: ImageId,
    pub parent: Option<ImageId>,
    pub json: Bytes,
}

impl ParsedJson {
    /// Checks an image JSON pushed for `id`.
    pub fn parse(id: &ImageId, json: Bytes) -> LegacyResult<ParsedJson> {
        let v: Value = serde_json::from_slice(&json)
            .map_err(|_| LegacyError::Invalid("Invalid JSON".into()))?;
        let Some(obj) = v.as_object() else {
            return Err(LegacyError::Invalid("Invalid JSON".into()));
        };
        match obj.get("id").and_then(Value::as_str) {
            None => return Err(LegacyError::Invalid("Missing key `id' in JSON".into())),
            Some(i) if i != id.as_str() => {
                return Err(LegacyError::Invalid("JSON data contains invalid id".into()));
            }
            Some(_) => {}
        }
        let parent = match obj.get("parent") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) if p.is_empty() => None,
            Some(Value::String(p)) => Some(p.parse::<ImageId>()?),
            Some(_) => return Err(LegacyError::Invalid("parent must be an image id".into())),
        };
        if parent.as_ref() == Some(id) {
            return Err(LegacyError::Invalid(
                "an image cannot be its own parent".into(),
            ));
        }
        Ok(ParsedJson {
            id: id.clone(),
            parent,
            json,
        })
    }
}

fn not_found() -> LegacyError {
    LegacyError::NotFound("Image not found".into())
}

fn exists() -> LegacyError {
    LegacyError::Exists("Image already exists".into())
}

impl Registry {
    /// An image as stored, complete or not.
    pub async fn v1_image(&self, id: &ImageId) -> LegacyResult<Option<V1Image>> {
        Ok(self.meta.v1_image(id.as_str()).await?)
    }

    /// Whether an image is complete and its layer's bytes are still there
    /// (the garbage collector frees layers no manifest references).
    pub async fn v1_present(&self, image: &V1Image) -> LegacyResult<bool> {
        let Some(layer) = &image.layer else {
            return Ok(false);
        };
        Ok(image.complete && self.store.stat(&layer.digest).await?.is_some())
    }

    /// Stores an image's JSON for a push to `push_repo` (none on a hub
    /// without accounts and no session). The parent must exist. A complete
    /// image is not replaced (`Exists`), unless its layer is gone.
    pub async fn v1_put_json(
        &self,
        parsed: ParsedJson,
        push_repo: Option<&RepoName>,
    ) -> LegacyResult<()> {
        let mut ancestry = vec![parsed.id.to_string()];
        if let Some(p) = &parsed.parent {
            let parent = self.meta.v1_image(p.as_str()).await?.ok_or_else(|| {
                LegacyError::Invalid("Image depends on a non existing parent".into())
            })?;
            ancestry.extend(parent.ancestry);
            if ancestry.len() > MAX_CHAIN {
                return Err(LegacyError::Invalid(format!(
                    "the image would have more than {MAX_CHAIN} ancestors"
                )));
            }
        }
        let existing = self.meta.v1_image(parsed.id.as_str()).await?;
        let replace_complete = match &existing {
            Some(e) if e.complete => {
                if self.v1_present(e).await? {
                    return Err(exists());
                }
                true
            }
            _ => false,
        };
        let image = V1Image {
            id: parsed.id.to_string(),
            json: parsed.json,
            parent: parsed.parent.map(|p| p.to_string()),
            ancestry,
            layer: None,
            checksum: None,
            complete: false,
            push_repo: push_repo.cloned(),
            created_at: now(),
        };
        match self.meta.put_v1_image(&image, replace_complete).await? {
            Ok(()) => {}
            Err(_) => return Err(exists()),
        }
        if let Some(repo) = push_repo {
            self.meta
                .reference_v1_images(repo, std::slice::from_ref(&image.id))
                .await?;
        }
        Ok(())
    }

    /// Receives an image's layer: streams it into the blob store while
    /// hashing it (blob digest, v1 checksum, diff id) and records it.
    /// Returns the layer's digest.
    pub async fn v1_put_layer(&self, id: &ImageId, body: Body) -> LegacyResult<Digest> {
        let image = self
            .meta
            .v1_image(id.as_str())
            .await?
            .ok_or_else(not_found)?;
        if image.complete {
            return Err(exists());
        }
        let sid = uuid::Uuid::new_v4().simple().to_string();
        let state = UploadState {
            repo: image
                .push_repo
                .as_ref()
                .map_or_else(|| "library/v1-upload".to_string(), |r| r.to_string()),
            offset: 0,
            hash_state: Hasher::new(Algorithm::Sha256).save(),
            started_at: now(),
            updated_at: now(),
        };
        self.store.create_upload(&sid, &state).await?;
        let result = async {
            let writer = self.store.append_upload(&sid, 0)?;
            let (hashes, len) = pump(
                body.stream,
                LayerHasher::new(Some(&image.json)),
                Some(writer),
            )
            .await?;
            if let Some(expected) = body.len
                && expected != len
            {
                return Err(LegacyError::Invalid(format!(
                    "body has {len} bytes, expected {expected}"
                )));
            }
            self.store.commit_upload(&sid, &hashes.digest, len).await?;
            Ok(hashes)
        }
        .await;
        let hashes = match result {
            Ok(h) => h,
            Err(e) => {
                let _ = self.store.delete_upload(&sid).await;
                return Err(e);
            }
        };
        if let Some(repo) = &image.push_repo {
            self.meta
                .link_blob(repo, &hashes.digest, hashes.size)
                .await?;
        }
        if let Some((diff_id, media_type)) = hashes.diff {
            let info = LayerInfo {
                diff_id,
                media_type: media_type.to_string(),
            };
            self.meta.put_layer_info(&hashes.digest, &info).await?;
        }
        let layer = V1Layer {
            digest: hashes.digest.clone(),
            size: hashes.size,
        };
        let checksum = hashes.checksum.unwrap_or_default();
        match self
            .meta
            .set_v1_layer(id.as_str(), &layer, &checksum)
            .await?
        {
            Ok(()) => Ok(hashes.digest),
            Err(Refusal::Missing(_)) => Err(not_found()),
            Err(_) => Err(exists()),
        }
    }

    /// Confirms an image's checksum (`sha256:` of its JSON, a newline and
    /// its layer), which completes its push.
    pub async fn v1_put_checksum(&self, id: &ImageId, checksum: &str) -> LegacyResult<()> {
        let image = self
            .meta
            .v1_image(id.as_str())
            .await?
            .ok_or_else(not_found)?;
        if image.complete {
            return Err(LegacyError::Exists("Cannot set this image checksum".into()));
        }
        if image.layer.is_none() {
            return Err(LegacyError::Invalid(
                "Image layer has not been uploaded".into(),
            ));
        }
        match self.meta.complete_v1_image(id.as_str(), checksum).await? {
            Ok(()) => Ok(()),
            Err(Refusal::Missing(_)) => Err(not_found()),
            Err(Refusal::Exists(_)) => {
                Err(LegacyError::Exists("Cannot set this image checksum".into()))
            }
            Err(_) => Err(LegacyError::Invalid("Checksum mismatch".into())),
        }
    }

    /// A complete image with its layer and checksum (computed now, once,
    /// for images synthesized from v2 manifests).
    pub async fn v1_complete_image(
        &self,
        id: &ImageId,
    ) -> LegacyResult<(V1Image, V1Layer, String)> {
        let mut image = self
            .meta
            .v1_image(id.as_str())
            .await?
            .ok_or_else(not_found)?;
        if !image.complete {
            return Err(LegacyError::InProgress);
        }
        let layer = image
            .layer
            .clone()
            .ok_or_else(|| LegacyError::Internal(format!("complete v1 image {id} has no layer")))?;
        let checksum = match image.checksum.take() {
            Some(c) => c,
            None => {
                let stream = self.v1_layer_stream(&layer, 0..layer.size).await?;
                let (hashes, _) = pump(stream, LayerHasher::new(Some(&image.json)), None).await?;
                let c = hashes.checksum.unwrap_or_default();
                self.meta.set_v1_checksum(id.as_str(), &c).await?;
                c
            }
        };
        image.checksum = Some(checksum.clone());
        Ok((image, layer, checksum))
    }

    /// Streams part of a layer.
    pub async fn v1_layer_stream(
        &self,
        layer: &V1Layer,
        range: Range<u64>,
    ) -> LegacyResult<ByteStream> {
        if range.is_empty() {
            return Ok(Box::pin(futures_util::stream::empty()));
        }
        Ok(self.read_blob(&layer.digest, range).await?)
    }

    /// The diff id and v2 media type of a layer blob: recorded, or found by
    /// reading it once (then recorded).
    pub(super) async fn v1_layer_info(&self, layer: &Digest, size: u64) -> LegacyResult<LayerInfo> {
        if let Some(info) = self.meta.layer_info(layer).await? {
            return Ok(info);
        }
        let blob = V1Layer {
            digest: layer.clone(),
            size,
        };
        let stream = self.v1_layer_stream(&blob, 0..size).await?;
        let (hashes, _) = pump(stream, LayerHasher::new(None), None).await?;
        let Some((diff_id, media_type)) = hashes.diff else {
            return Err(LegacyError::Invalid(format!(
                "layer {layer} is {}: Docker v2 clients read gzip or uncompressed tar layers",
                hashes.compression.name()
            )));
        };
        let info = LayerInfo {
            diff_id,
            media_type: media_type.to_string(),
        };
        self.meta.put_layer_info(layer, &info).await?;
        Ok(info)
    }
}
