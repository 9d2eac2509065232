//! The audit log as stored: who did what, to which repository, when and
//! from where. Identical events close together are stored once with a
//! count, so a busy pull does not become a million rows.

use async_trait::async_trait;
use serde::Serialize;

use super::MetaResult;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AuditEvent {
    /// Seconds since the epoch (of the first of `count` events).
    pub at: i64,
    /// The account, or `anonymous`.
    pub actor: String,
    /// `pull`, `push`, `delete`, `login`, `login_failed`, or a `/uam` change
    /// such as `user.create`.
    pub action: String,
    pub repo: Option<String>,
    /// Digest, tag, or the name of the account object changed.
    pub target: Option<String>,
    pub detail: Option<String>,
    /// Client address.
    pub addr: Option<String>,
    pub count: u64,
}

/// Which events a query wants; every field narrows it.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub repo: Option<String>,
    pub action: Option<String>,
    /// Inclusive bounds, seconds since the epoch.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Newest first; events older than this id (paging).
    pub before_id: Option<i64>,
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append_audit(&self, events: &[AuditEvent]) -> MetaResult<()>;
    /// Matching events with their ids, newest first.
    async fn query_audit(&self, q: &AuditQuery) -> MetaResult<Vec<(i64, AuditEvent)>>;
    /// Deletes events older than `before`; returns how many.
    async fn prune_audit(&self, before: i64) -> MetaResult<u64>;
}
