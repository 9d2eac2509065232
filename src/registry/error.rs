//! The registry core's errors: one variant per condition a client can act
//! on, named after the distribution spec's error codes. The HTTP mapping
//! lives in `api::error`, and only there.

use crate::meta::MetaError;
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// A chunk that does not start where the session stands.
    #[error("requested range not satisfiable: {0}")]
    RangeInvalid(String),
    /// A `Range` that does not fit the blob; carries the blob's size.
    #[error("requested range not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("provided digest did not match uploaded content: {0}")]
    DigestInvalid(String),
    #[error("blob unknown to registry: {0}")]
    ManifestBlobUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown")]
    ManifestUnknown,
    /// The manifest exists but is of a media type the client did not accept.
    #[error("manifest is {0}, which the Accept header does not allow")]
    ManifestNotAcceptable(String),
    #[error("invalid repository name: {0}")]
    NameInvalid(String),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    #[error("tag invalid: {0}")]
    TagInvalid(String),
    #[error("the operation is unsupported: {0}")]
    Unsupported(String),
    /// Carries the limit.
    #[error("manifest is larger than the limit of {0} bytes")]
    ManifestTooLarge(u64),
    #[error("pagination number invalid: {0}")]
    PaginationInvalid(String),
    /// A request this hub understands but was not set up to answer (the
    /// peer swarm off, for instance).
    #[error("not offered by this hub: {0}")]
    NotOffered(String),
    /// A malformed request header or parameter with no code of its own.
    #[error("invalid request: {0}")]
    RequestInvalid(String),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type RegistryResult<T> = Result<T, RegistryError>;

impl From<MetaError> for RegistryError {
    fn from(e: MetaError) -> Self {
        RegistryError::Internal(e.to_string())
    }
}

impl From<StoreError> for RegistryError {
    fn from(e: StoreError) -> Self {
        RegistryError::Internal(e.to_string())
    }
}
