//! The registry core: blobs, upload sessions, manifests, tags, catalog and
//! referrers, over a `MetaStore` and a `BlobStore`.
//!
//! Architecture invariant: the core never sees an HTTP type. Front-ends
//! parse requests into the domain types here (`Digest`, `RepoName`,
//! `Reference`, byte streams) and map `RegistryError` to their protocol.

pub mod aci;
pub mod blobs;
pub mod digest;
pub mod error;
pub mod gc;
pub mod legacy;
pub mod manifest;
pub mod manifests;
pub mod name;
pub mod uploads;

use std::sync::Arc;
use std::time::Duration;

use crate::meta::MetaStore;
use crate::storage::BlobStore;

pub use error::{RegistryError, RegistryResult};

/// Limits the core enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_manifest_size: u64,
    /// Seconds an idle upload session is kept.
    pub upload_expiry: u64,
}

pub struct Registry {
    meta: Arc<dyn MetaStore>,
    store: Arc<dyn BlobStore>,
    sessions: uploads::SessionLocks,
    limits: Limits,
}

impl Registry {
    pub fn new(meta: Arc<dyn MetaStore>, store: Arc<dyn BlobStore>, limits: Limits) -> Arc<Self> {
        Arc::new(Registry {
            meta,
            store,
            sessions: uploads::SessionLocks::default(),
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Removes upload sessions idle for longer than the expiry, now and
    /// then, for as long as the registry lives.
    pub fn spawn_janitor(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let Some(reg) = weak.upgrade() else { return };
                match reg.expire_uploads().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "expired idle upload sessions"),
                    Err(e) => tracing::warn!(error = %e, "expiring upload sessions failed"),
                }
            }
        });
    }
}

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
