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
use crate::registry::digest::Digest;
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
    /// Told of every blob stored from an upload (the swarm makes its piece
    /// table then).
    on_commit: std::sync::OnceLock<CommitHook>,
}

/// Called with the digest of each blob stored from an upload, after it is
/// committed and linked; must not block.
pub type CommitHook = Box<dyn Fn(&Digest) + Send + Sync>;

impl Registry {
    pub fn new(meta: Arc<dyn MetaStore>, store: Arc<dyn BlobStore>, limits: Limits) -> Arc<Self> {
        Arc::new(Registry {
            meta,
            store,
            sessions: uploads::SessionLocks::default(),
            limits,
            on_commit: std::sync::OnceLock::new(),
        })
    }

    /// Sets the hook told of committed blobs (once; later calls are
    /// ignored).
    pub fn on_commit(&self, hook: CommitHook) {
        let _ = self.on_commit.set(hook);
    }

    fn committed(&self, digest: &Digest) {
        if let Some(hook) = self.on_commit.get() {
            hook(digest);
        }
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
