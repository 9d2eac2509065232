//! Docker Registry v1 (legacy) metadata: v1 images (global, by id), the
//! layer facts conversions need, the conversions between v1 image chains
//! and v2 manifests, which repositories declare or reference which v1
//! images, and repository search.
//!
//! v1 tags are not kept here: they are the repositories' v2 tags.
//!
//! Semantics every backend keeps (checked by `contract.rs`):
//!
//! - An image is *complete* once its layer's checksum was confirmed (or it
//!   was synthesized from a v2 manifest). A complete image is never
//!   replaced by `put_v1_image` unless the caller says so; an incomplete one
//!   is replaced whole (layer and checksum forgotten).
//! - `add_v1_images`, `put_layer_info` and `put_v1_conversion` keep what
//!   was recorded first: conversions are deterministic, so a second writer
//!   has the same facts.
//! - A repository *declares* the images a v1 push announces and
//!   *references* the images it really holds (pushed in one of its
//!   sessions, or in the ancestry of one of its tags). Only references
//!   give access to an image; declarations only let a push go on.
//! - Listings are in byte order and bounded by their `limit`.

use async_trait::async_trait;
use bytes::Bytes;

use super::MetaResult;
use super::accounts::Change;
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;

/// A v1 image as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct V1Image {
    /// 64 lowercase hex digits.
    pub id: String,
    /// The image JSON, byte for byte as pushed (or synthesized).
    pub json: Bytes,
    pub parent: Option<String>,
    /// This image first, its root last.
    pub ancestry: Vec<String>,
    /// The layer, once uploaded.
    pub layer: Option<V1Layer>,
    /// `sha256:<hex>` of the JSON, a newline and the layer.
    pub checksum: Option<String>,
    pub complete: bool,
    /// The repository of the push session that stored the JSON; `None` for
    /// images synthesized from v2 manifests.
    pub push_repo: Option<RepoName>,
    pub created_at: i64,
}

/// A v1 image's layer: a blob of the blob store.
#[derive(Clone, Debug, PartialEq)]
pub struct V1Layer {
    pub digest: Digest,
    pub size: u64,
}

/// What a v2 manifest says about a layer blob.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerInfo {
    /// SHA-256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The v2 layer media type (gzip or plain tar).
    pub media_type: String,
}

/// A v2 manifest and the v1 image (the top of a chain) that are the same
/// image, one converted from the other.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversion {
    pub manifest: Digest,
    pub media_type: String,
    pub body: Bytes,
    pub image: String,
}

/// A repository a search found.
#[derive(Clone, Debug, PartialEq)]
pub struct RepoMatch {
    pub name: RepoName,
    pub comment: Option<String>,
}

#[async_trait]
pub trait LegacyStore: Send + Sync + 'static {
    /// Stores an image's JSON and what was derived from it (`layer`,
    /// `checksum` and `complete` are stored as given), replacing an
    /// incomplete image of the same id. `Exists` if a complete one exists,
    /// unless `replace_complete`.
    async fn put_v1_image(&self, image: &V1Image, replace_complete: bool) -> MetaResult<Change>;

    /// Stores images unless an image of the same id exists.
    async fn add_v1_images(&self, images: &[V1Image]) -> MetaResult<()>;

    async fn v1_image(&self, id: &str) -> MetaResult<Option<V1Image>>;

    /// Records the uploaded layer of an incomplete image and its checksum.
    /// `Missing` if there is no such image, `Exists` if it is complete.
    async fn set_v1_layer(&self, id: &str, layer: &V1Layer, checksum: &str) -> MetaResult<Change>;

    /// Marks an incomplete image complete if `checksum` is its layer's.
    /// `Missing` if there is no such image, `Exists` if it is complete
    /// already, `Invalid` if it has no layer yet or another checksum.
    async fn complete_v1_image(&self, id: &str, checksum: &str) -> MetaResult<Change>;

    /// Sets the checksum of a complete image that has none (synthesized
    /// images get theirs when first asked). Anything else is left alone.
    async fn set_v1_checksum(&self, id: &str, checksum: &str) -> MetaResult<()>;

    /// Records what a layer blob is, unless recorded already.
    async fn put_layer_info(&self, layer: &Digest, info: &LayerInfo) -> MetaResult<()>;

    async fn layer_info(&self, layer: &Digest) -> MetaResult<Option<LayerInfo>>;

    /// Records a conversion: the manifest's v1 image, and the image's
    /// manifest. Each direction keeps what was recorded first.
    async fn put_v1_conversion(&self, conversion: &Conversion) -> MetaResult<()>;

    /// The v1 image a manifest is (or was converted to).
    async fn v1_image_of_manifest(&self, manifest: &Digest) -> MetaResult<Option<String>>;

    /// The manifest a v1 image is (or was converted to), with its body.
    async fn manifest_of_v1_image(&self, image: &str) -> MetaResult<Option<Conversion>>;

    /// Records that a push to `repo` announced these images.
    async fn declare_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()>;

    /// Records that `repo` holds these images.
    async fn reference_v1_images(&self, repo: &RepoName, ids: &[String]) -> MetaResult<()>;

    /// Whether `repo` references the image.
    async fn v1_references(&self, repo: &RepoName, id: &str) -> MetaResult<bool>;

    /// Images `repo` declares or references, in id order after `after`, at
    /// most `limit`.
    async fn v1_repo_images(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<String>>;

    /// Repositories referencing the image, in name order, at most `limit`.
    async fn v1_image_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>>;

    /// Repositories declaring the image, in name order, at most `limit`.
    async fn v1_declaring_repos(&self, id: &str, limit: u32) -> MetaResult<Vec<RepoName>>;

    /// Forgets what `repo` declared and referenced (the repository is gone).
    async fn forget_v1_repo(&self, repo: &RepoName) -> MetaResult<()>;

    /// Repositories whose name or comment contains `query` (compared in
    /// lowercase; `query` is given in lowercase), in name order after
    /// `after`, at most `limit`.
    async fn search_repos(
        &self,
        query: &str,
        after: Option<&str>,
        limit: u32,
    ) -> MetaResult<Vec<RepoMatch>>;
}
