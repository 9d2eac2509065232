//! `/v1/repositories/<name>/...`: push sessions and image lists, tags,
//! and deletes.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::access::{self, Caller};
use super::{Ctx, V1Result, done, error_response, json_response, small_body, v1_error};
use crate::auth::model::Actions;
use crate::registry::legacy::ImageId;
use crate::registry::name::{RepoName, Tag};

/// Largest image list or tag body read.
const LIST_LIMIT: usize = 1024 * 1024;

/// The image ids of a v1 image list (`[{"id": "...", "checksum": ...}]`).
fn image_list(bytes: &[u8]) -> Result<Vec<ImageId>, axum::response::Response> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|_| v1_error(StatusCode::BAD_REQUEST, "Error Decoding JSON"))?;
    let Some(items) = v.as_array() else {
        return Err(v1_error(StatusCode::BAD_REQUEST, "Invalid data"));
    };
    items
        .iter()
        .map(|i| {
            i.get("id")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<ImageId>().ok())
                .ok_or_else(|| {
                    v1_error(
                        StatusCode::BAD_REQUEST,
                        "Invalid data: every image needs a valid id",
                    )
                })
        })
        .collect()
}

async fn with_session(
    ctx: &Ctx,
    caller: &Caller,
    repo: &RepoName,
    write: bool,
    r: V1Result,
) -> V1Result {
    let mut r = r?;
    for (k, v) in access::session_headers(&ctx.state, caller, &ctx.headers, repo, write).await? {
        r.headers_mut().insert(k, v);
    }
    Ok(r)
}

/// `PUT /v1/repositories/<name>/`: a push starts; its images are announced.
pub async fn put_repository(ctx: &Ctx, repo: &RepoName, body: Body) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::PULL_PUSH).await?;
    let ids = image_list(&small_body(body, LIST_LIMIT).await?)?;
    ctx.state
        .registry
        .v1_declare(repo, &ids)
        .await
        .map_err(error_response)?;
    with_session(ctx, &caller, repo, true, done()).await
}

/// `PUT /v1/repositories/<name>/images`: a push ends with its image list.
pub async fn put_images(ctx: &Ctx, repo: &RepoName, body: Body) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::PULL_PUSH).await?;
    let ids = image_list(&small_body(body, LIST_LIMIT).await?)?;
    ctx.state
        .registry
        .v1_declare(repo, &ids)
        .await
        .map_err(error_response)?;
    let r = json_response(StatusCode::NO_CONTENT, Body::empty());
    with_session(ctx, &caller, repo, true, r).await
}

/// `GET /v1/repositories/<name>/images`: a pull starts.
pub async fn get_images(ctx: &Ctx, repo: &RepoName) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::PULL).await?;
    let list = ctx
        .state
        .registry
        .v1_repo_image_list(repo)
        .await
        .map_err(error_response)?;
    let body: Vec<Value> = list
        .into_iter()
        .map(|e| match e.checksum {
            Some(c) => json!({"id": e.id, "checksum": c}),
            None => json!({"id": e.id}),
        })
        .collect();
    ctx.audit(&caller.name, "pull", Some(repo.as_str()), None)
        .await;
    let r = json_response(StatusCode::OK, Value::Array(body).to_string());
    with_session(ctx, &caller, repo, false, r).await
}

/// `GET /v1/repositories/<name>/tags`
pub async fn get_tags(ctx: &Ctx, repo: &RepoName) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::PULL).await?;
    let tags = ctx
        .state
        .registry
        .v1_tags(repo)
        .await
        .map_err(error_response)?;
    let mut map = Map::new();
    for (tag, id) in tags {
        map.insert(tag, Value::String(id));
    }
    json_response(StatusCode::OK, Value::Object(map).to_string())
}

fn parse_tag(tag: &str, status: StatusCode) -> Result<Tag, axum::response::Response> {
    tag.parse().map_err(|_| {
        if status == StatusCode::NOT_FOUND {
            v1_error(status, "Tag not found")
        } else {
            v1_error(status, &format!("Invalid tag {tag:?}"))
        }
    })
}

/// `GET /v1/repositories/<name>/tags/<tag>`
pub async fn get_tag(ctx: &Ctx, repo: &RepoName, tag: &str) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::PULL).await?;
    let tag = parse_tag(tag, StatusCode::NOT_FOUND)?;
    let id = ctx
        .state
        .registry
        .v1_tag(repo, &tag)
        .await
        .map_err(error_response)?;
    ctx.audit(
        &caller.name,
        "pull",
        Some(repo.as_str()),
        Some(tag.as_str()),
    )
    .await;
    json_response(StatusCode::OK, Value::String(id).to_string())
}

/// `PUT /v1/repositories/<name>/tags/<tag>` with `"<image id>"`: the tag
/// names the v2 image of the v1 image from now on.
pub async fn put_tag(ctx: &Ctx, repo: &RepoName, tag: &str, body: Body) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::PULL_PUSH).await?;
    let tag = parse_tag(tag, StatusCode::BAD_REQUEST)?;
    let bytes = small_body(body, LIST_LIMIT).await?;
    let id = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::String(s)) if !s.is_empty() => s,
        _ => return Err(v1_error(StatusCode::BAD_REQUEST, "Invalid data")),
    };
    let not_found = || v1_error(StatusCode::NOT_FOUND, "Image not found");
    let id: ImageId = id.parse().map_err(|_| not_found())?;
    let reg = &ctx.state.registry;
    if reg.v1_image(&id).await.map_err(error_response)?.is_none()
        || !access::may_read_image(&ctx.state, &caller, &id).await?
    {
        return Err(not_found());
    }
    let digest = reg
        .v1_put_tag(repo, &tag, &id)
        .await
        .map_err(error_response)?;
    tracing::debug!(%repo, %tag, %digest, "v1 tag set");
    ctx.audit(
        &caller.name,
        "push",
        Some(repo.as_str()),
        Some(tag.as_str()),
    )
    .await;
    done()
}

/// `DELETE /v1/repositories/<name>/tags/<tag>`
pub async fn delete_tag(ctx: &Ctx, repo: &RepoName, tag: &str) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::DELETE).await?;
    let tag = parse_tag(tag, StatusCode::NOT_FOUND)?;
    ctx.state
        .registry
        .v1_delete_tag(repo, &tag)
        .await
        .map_err(error_response)?;
    ctx.audit(
        &caller.name,
        "delete",
        Some(repo.as_str()),
        Some(tag.as_str()),
    )
    .await;
    done()
}

/// `DELETE /v1/repositories/<name>/` (and `.../tags`): the repository
/// goes, with its tags and manifests.
pub async fn delete_repository(ctx: &Ctx, repo: &RepoName) -> V1Result {
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    access::allow(&ctx.state, &caller, repo, Actions::DELETE).await?;
    ctx.state
        .registry
        .v1_delete_repo(repo)
        .await
        .map_err(error_response)?;
    if let Some(auth) = &ctx.state.auth {
        auth.invalidate();
    }
    ctx.audit(&caller.name, "delete", Some(repo.as_str()), None)
        .await;
    done()
}
