//! The audit writer: request handlers hand events to a bounded queue; one
//! task writes them in batches, folding identical events of the same
//! moment into one row with a count, and prunes old events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::meta::MetaStore;
use crate::meta::audit::AuditEvent;

/// Events waiting to be written. A full queue makes handlers wait (the
/// log is not allowed to lose events), which bounds memory.
const QUEUE: usize = 8192;
/// Longest an event waits before its batch is written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const BATCH_MAX: usize = 2000;

#[derive(Clone)]
pub struct Auditor {
    tx: mpsc::Sender<AuditEvent>,
}

impl Auditor {
    pub fn spawn(meta: Arc<dyn MetaStore>, retention_days: u64) -> Auditor {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(meta.clone(), rx));
        tokio::spawn(prune_loop(meta, retention_days));
        Auditor { tx }
    }

    /// Records an event (`count` 1, `at` now).
    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        repo: Option<&str>,
        target: Option<&str>,
        addr: Option<std::net::IpAddr>,
    ) {
        let event = AuditEvent {
            at: chrono::Utc::now().timestamp(),
            actor: actor.to_string(),
            action: action.to_string(),
            repo: repo.map(str::to_string),
            target: target.map(str::to_string),
            detail: None,
            addr: addr.map(|a| a.to_string()),
            count: 1,
        };
        if self.tx.send(event).await.is_err() {
            tracing::error!("audit writer is gone; event lost");
        }
    }
}

async fn write_loop(meta: Arc<dyn MetaStore>, mut rx: mpsc::Receiver<AuditEvent>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH_MAX {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(e)) => batch.push(e),
                Ok(None) | Err(_) => break,
            }
        }
        let folded = fold(batch);
        // A failing database must not lose the log silently: retry a
        // little, then report what is dropped.
        let mut attempt = 0;
        loop {
            match meta.append_audit(&folded).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "writing audit events failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, lost = folded.len(), "audit events could not be written");
                    break;
                }
            }
        }
    }
}

/// Folds events that differ only in count (same second, actor, action,
/// repository, target and address) into one.
fn fold(batch: Vec<AuditEvent>) -> Vec<AuditEvent> {
    let mut order = Vec::new();
    let mut seen: HashMap<AuditEvent, usize> = HashMap::new();
    for e in batch {
        let key = AuditEvent {
            count: 0,
            ..e.clone()
        };
        match seen.get(&key) {
            Some(&i) => {
                let existing: &mut AuditEvent = &mut order[i];
                existing.count += e.count;
            }
            None => {
                seen.insert(key, order.len());
                order.push(e);
            }
        }
    }
    order
}

async fn prune_loop(meta: Arc<dyn MetaStore>, retention_days: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = chrono::Utc::now().timestamp() - (retention_days * 86_400) as i64;
        match meta.prune_audit(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "pruned old audit events"),
            Err(e) => tracing::warn!(error = %e, "pruning audit events failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(actor: &str, at: i64) -> AuditEvent {
        AuditEvent {
            at,
            actor: actor.into(),
            action: "pull".into(),
            repo: Some("a/b".into()),
            target: Some("v1".into()),
            detail: None,
            addr: None,
            count: 1,
        }
    }

    #[test]
    fn folds_identical_events_only() {
        let f = fold(vec![
            ev("x", 1),
            ev("x", 1),
            ev("y", 1),
            ev("x", 2),
            ev("x", 1),
        ]);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].count, 3);
        assert_eq!(f[1].actor, "y");
        assert_eq!(f[2].at, 2);
    }
}
