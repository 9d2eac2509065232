//! `GET /uam/audit?user=&repo=&action=&since=&until=&before=&limit=`:
//! administrators see every event, others only their own.

use axum::extract::Query;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Ctx, UamError, UamResult, ok};
use crate::meta::audit::AuditQuery;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    user: Option<String>,
    repo: Option<String>,
    action: Option<String>,
    /// Seconds since the epoch (inclusive).
    since: Option<i64>,
    until: Option<i64>,
    /// Only events with an id below this (the `next` of a previous page).
    before: Option<i64>,
    limit: Option<u32>,
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

pub async fn query(
    ctx: Ctx,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> UamResult {
    let caller = ctx.caller().await?;
    let Query(p) = q.map_err(|e| UamError::Invalid(e.body_text()))?;
    let actor = match p.user {
        Some(u) if caller.admin || u == caller.name => Some(u),
        Some(_) => {
            return Err(UamError::Forbidden(
                "you may only read your own events".into(),
            ));
        }
        None if caller.admin => None,
        None => Some(caller.name.clone()),
    };
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let events = ctx
        .auth
        .meta
        .query_audit(&AuditQuery {
            actor,
            repo: p.repo,
            action: p.action,
            since: p.since,
            until: p.until,
            before_id: p.before,
            limit,
        })
        .await?;
    let next = (events.len() == limit as usize)
        .then(|| events.last().map(|(id, _)| *id))
        .flatten();
    let items: Vec<Value> = events
        .into_iter()
        .map(|(id, e)| {
            json!({
                "id": id,
                "at": e.at,
                "user": e.actor,
                "action": e.action,
                "repository": e.repo,
                "target": e.target,
                "detail": e.detail,
                "addr": e.addr,
                "count": e.count,
            })
        })
        .collect();
    ok(json!({"events": items, "next": next}))
}
