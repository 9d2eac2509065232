//! Docker Registry v1 (legacy) in the core: v1 images (global, by id) whose
//! layers are ordinary blobs, their checksums and ancestry, v1 tags (which
//! are the repositories' v2 tags), the conversions between v1 image chains
//! and v2 manifests, and repository search.
//!
//! Conversions are deterministic (the same input gives the same bytes and
//! ids) and done once: their results are recorded in the metadata
//! (`meta::legacy`).
//!
//! - v1 → v2 (`PUT` of a v1 tag): the chain's JSONs become a Docker schema 2
//!   config (`convert::v2_config`), stored as a blob, and a schema 2
//!   manifest naming the layer blobs, stored through the normal manifest
//!   path under the tag.
//! - v2 → v1 (reading v1 tags): a schema 2 or OCI manifest and its config
//!   become a chain of synthesized v1 images, one per layer
//!   (`convert::v1_chain`).
//!
//! Architecture invariant: no v1 request holds a layer in memory. Layer
//! bodies stream through a bounded channel to a blocking thread that hashes
//! them three ways in one pass (blob digest, v1 checksum, diff id of the
//! uncompressed tar) while the store writes them.

pub mod convert;
mod images;
mod layer;
mod search;
mod tags;

use std::fmt;
use std::str::FromStr;

use crate::meta::MetaError;
use crate::registry::RegistryError;
use crate::storage::StoreError;

pub use images::ParsedJson;

/// The deepest image chain the hub takes (Docker's own limit was 127).
pub const MAX_CHAIN: usize = 256;
/// How many repositories an image's access check looks at.
pub const MAX_IMAGE_REPOS: u32 = 100;
/// How many tags or images a v1 listing holds.
pub const MAX_LISTING: u32 = 10_000;

/// A v1 image id: 64 lowercase hex digits, parsed at the edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId(String);

impl FromStr for ImageId {
    type Err = LegacyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(ImageId(s.to_string()))
        } else {
            Err(LegacyError::Invalid(format!(
                "{s:?} is not an image id (64 lowercase hex digits)"
            )))
        }
    }
}

impl ImageId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What can go wrong in a v1 operation, by how a client should take it.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exists(String),
    /// The image's push has not finished (no confirmed checksum yet).
    #[error("Image is being uploaded, retry later")]
    InProgress,
    /// A `Range` that does not fit the layer; carries its size.
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("{0}")]
    TooLarge(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type LegacyResult<T> = Result<T, LegacyError>;

impl From<RegistryError> for LegacyError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::BlobUnknown => LegacyError::NotFound("layer not found".into()),
            RegistryError::ManifestUnknown | RegistryError::NameUnknown => {
                LegacyError::NotFound(e.to_string())
            }
            RegistryError::RangeNotSatisfiable(size) => LegacyError::RangeNotSatisfiable(size),
            RegistryError::ManifestTooLarge(_) => LegacyError::TooLarge(e.to_string()),
            RegistryError::Internal(m) => LegacyError::Internal(m),
            other => LegacyError::Invalid(other.to_string()),
        }
    }
}

impl From<MetaError> for LegacyError {
    fn from(e: MetaError) -> Self {
        LegacyError::Internal(e.to_string())
    }
}

impl From<StoreError> for LegacyError {
    fn from(e: StoreError) -> Self {
        LegacyError::Internal(e.to_string())
    }
}
