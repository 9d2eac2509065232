//! `GET /v1/search?q=&n=&page=`: repositories whose name or comment
//! contains the query, among those the caller may pull, a page at a time.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::access;
use super::{Ctx, V1Result, error_response, json_response, v1_error};
use crate::auth::model::{Action, Principal};
use crate::registry::name::LIBRARY;

const DEFAULT_PAGE_SIZE: u32 = 25;
const MAX_PAGE_SIZE: u32 = 100;
/// Candidates read per step, and the most a search looks at.
const STEP: u32 = 1000;
const MAX_SCANNED: usize = 10_000;

fn number(ctx: &Ctx, key: &str, default: u32) -> Result<u32, axum::response::Response> {
    match ctx.param(key).as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            v1_error(
                StatusCode::BAD_REQUEST,
                &format!("{key} must be a positive integer, not {v:?}"),
            )
        }),
    }
}

pub async fn search(ctx: &Ctx) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    let query = ctx.param("q").unwrap_or_default();
    let n = number(ctx, "n", DEFAULT_PAGE_SIZE)?.clamp(1, MAX_PAGE_SIZE);
    let page = number(ctx, "page", 1)?;
    if page == 0 {
        return Err(v1_error(StatusCode::BAD_REQUEST, "page starts at 1"));
    }
    let skip = (page as usize - 1).saturating_mul(n as usize);
    let reg = &ctx.state.registry;
    let mut results = Vec::new();
    let mut visible = 0usize;
    let mut scanned = 0usize;
    let mut after: Option<String> = None;
    while scanned < MAX_SCANNED {
        let batch = reg
            .v1_search(&query, after.as_deref(), STEP)
            .await
            .map_err(error_response)?;
        scanned += batch.len();
        let done = batch.len() < STEP as usize;
        after = batch.last().map(|m| m.name.to_string());
        for m in batch {
            let may = match (&ctx.state.auth, &caller.principal) {
                (Some(auth), p) => auth
                    .decide(p.as_ref().unwrap_or(&Principal::Anonymous), &m.name)
                    .await
                    .is_ok_and(|d| d.actions.has(Action::Pull)),
                (None, _) => true,
            };
            if !may {
                continue;
            }
            if visible >= skip && results.len() < n as usize {
                results.push(json!({
                    "name": m.name.as_str(),
                    "description": m.comment.unwrap_or_default(),
                    "star_count": 0,
                    "is_official": m.name.namespace() == LIBRARY,
                    "is_automated": false,
                }));
            }
            visible += 1;
        }
        if done {
            break;
        }
    }
    let body = json!({
        "num_results": visible,
        "query": query,
        "page": page,
        "num_pages": visible.div_ceil(n as usize),
        "page_size": n,
        "results": Value::Array(results),
    });
    json_response(StatusCode::OK, body.to_string())
}
