//! `tags/list`, `_catalog` (both paginated with `n`/`last` and `Link`), and
//! the referrers API.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::access::{Who, may_list};
use super::route::parse_digest;
use super::{ApiResult, Query, hv};
use crate::api::state::AppState;
use crate::registry::digest::Digest;
use crate::registry::manifest::OCI_INDEX;
use crate::registry::manifests::{Page, page_size};
use crate::registry::name::RepoName;
use crate::registry::{Registry, RegistryError};

const FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

fn page_params(q: &Query) -> Result<(Option<u32>, Option<&str>), RegistryError> {
    let n = match q.get("n") {
        None | Some("") => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            RegistryError::PaginationInvalid(format!("n must be a non-negative integer, not {v:?}"))
        })?),
    };
    Ok((n, q.get("last").filter(|l| !l.is_empty())))
}

fn json_response(body: serde_json::Value, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Adds `Link: <path?n=..&last=..>; rel="next"` when more items follow.
fn with_link(mut r: Response, path: &str, page: &Page, n: Option<u32>) -> Response {
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(n) = n {
            q.append_pair("n", &n.to_string());
        }
        q.append_pair("last", last);
        r.headers_mut().insert(
            header::LINK,
            hv(format!("<{path}?{}>; rel=\"next\"", q.finish())),
        );
    }
    r
}

pub async fn tags(reg: &Registry, name: &RepoName, q: &Query) -> ApiResult {
    let (n, last) = page_params(q)?;
    let page = reg.list_tags(name, last, n).await?;
    let r = json_response(
        json!({ "name": name.as_str(), "tags": page.items }),
        "application/json; charset=utf-8",
    );
    Ok(with_link(r, &format!("/v2/{name}/tags/list"), &page, n))
}

/// The catalog, showing only repositories the caller may pull: pages of
/// the full list are read until `n` visible names are found (or it ends).
pub async fn catalog(state: &AppState, who: &Who, q: &Query) -> ApiResult {
    let (n, last) = page_params(q)?;
    let reg = &state.registry;
    let mut page = reg.catalog(last, n).await?;
    if state.auth.is_some() {
        let want = page_size(n);
        let mut visible = Vec::new();
        let mut more = true;
        let mut cursor = last.map(str::to_string);
        // Bounded: a page of up to MAX_PAGE names per round, few rounds.
        for _ in 0..16 {
            let batch = reg.catalog(cursor.as_deref(), Some(want)).await?;
            more = batch.more;
            cursor = batch.items.last().cloned();
            for name in batch.items {
                if visible.len() < want as usize
                    && let Ok(repo) = name.parse::<RepoName>()
                    && may_list(state, who, &repo).await
                {
                    visible.push(name);
                }
            }
            if visible.len() >= want as usize || !more {
                break;
            }
        }
        page = Page {
            items: visible,
            more,
        };
    }
    let r = json_response(
        json!({ "repositories": page.items }),
        "application/json; charset=utf-8",
    );
    Ok(with_link(r, "/v2/_catalog", &page, n))
}

pub async fn referrers(reg: &Registry, name: &RepoName, subject: &Digest, q: &Query) -> ApiResult {
    let artifact_type = q.get("artifactType").filter(|t| !t.is_empty());
    let last = q.get("last").map(parse_digest).transpose()?;
    let (found, more) = reg
        .referrers(name, subject, artifact_type, last.as_ref())
        .await?;
    let next = more
        .then(|| found.last().map(|r| r.digest.clone()))
        .flatten();
    let manifests: Vec<serde_json::Value> = found
        .into_iter()
        .map(|r| {
            let mut d = json!({
                "mediaType": r.media_type,
                "digest": r.digest,
                "size": r.size,
            });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = json!(t);
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<serde_json::Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let mut r = json_response(
        json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }),
        OCI_INDEX,
    );
    if let Some(t) = artifact_type {
        r.headers_mut()
            .insert(FILTERS_APPLIED, HeaderValue::from_static("artifactType"));
        if let Some(next) = &next {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("artifactType", t);
            q.append_pair("last", next.as_str());
            r.headers_mut().insert(
                header::LINK,
                hv(format!(
                    "</v2/{name}/referrers/{subject}?{}>; rel=\"next\"",
                    q.finish()
                )),
            );
        }
    } else if let Some(next) = &next {
        r.headers_mut().insert(
            header::LINK,
            hv(format!(
                "</v2/{name}/referrers/{subject}?last={next}>; rel=\"next\""
            )),
        );
    }
    Ok(r)
}
