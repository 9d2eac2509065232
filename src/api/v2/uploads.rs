//! `/v2/<name>/blobs/uploads/[<id>]`: POST (new session, single-request
//! upload, cross-repository mount), GET status, PATCH, PUT, DELETE.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use super::route::parse_digest;
use super::{ApiResult, CONTENT_DIGEST, Query, core_body, empty, header_str, hv};
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::name::RepoName;
use crate::registry::uploads::{ChunkRange, UploadId};
use crate::registry::{Registry, RegistryError};

const UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");

fn session_headers(name: &RepoName, id: &UploadId, offset: u64) -> [(HeaderName, HeaderValue); 3] {
    // Inclusive end of what was received; "0-0" for nothing yet, as the
    // reference registry and the clients built against it expect.
    let end = offset.saturating_sub(1);
    [
        (
            header::LOCATION,
            hv(format!("/v2/{name}/blobs/uploads/{id}")),
        ),
        (header::RANGE, hv(format!("0-{end}"))),
        (UPLOAD_UUID, hv(id.to_string())),
    ]
}

fn created(name: &RepoName, digest: &Digest) -> axum::response::Response {
    empty(
        StatusCode::CREATED,
        &[
            (header::LOCATION, hv(format!("/v2/{name}/blobs/{digest}"))),
            (CONTENT_DIGEST, hv(digest.as_str())),
        ],
    )
}

pub async fn start(
    reg: &Registry,
    name: &RepoName,
    q: &Query,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    if let Some(mount) = q.get("mount") {
        // A mount with arguments that cannot name a blob falls back to an
        // ordinary upload, as the Docker API prescribes.
        let digest = parse_digest(mount).ok();
        let from = match q.get("from").map(str::parse::<RepoName>) {
            Some(Ok(f)) => Some(Some(f)),
            Some(Err(_)) => None,
            None => Some(None),
        };
        if let (Some(digest), Some(from)) = (digest, from)
            && reg
                .mount_blob(name, &digest, from.as_ref())
                .await?
                .is_some()
        {
            return Ok(created(name, &digest));
        }
        // Not mountable: an ordinary session, as the spec prescribes.
    } else if let Some(d) = q.get("digest") {
        let digest = parse_digest(d)?;
        reg.upload_whole(name, &digest, core_body(h, body)).await?;
        return Ok(created(name, &digest));
    }
    let algorithm = match q.get("digest-algorithm") {
        None | Some("sha256") => Algorithm::Sha256,
        Some("sha512") => Algorithm::Sha512,
        Some(other) => {
            return Err(RegistryError::DigestInvalid(format!(
                "unsupported digest algorithm {other:?}"
            ))
            .into());
        }
    };
    let id = reg.start_upload(name, algorithm).await?;
    Ok(empty(StatusCode::ACCEPTED, &session_headers(name, &id, 0)))
}

pub async fn status(reg: &Registry, name: &RepoName, id: &UploadId) -> ApiResult {
    let offset = reg.upload_offset(name, id).await?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        &session_headers(name, id, offset),
    ))
}

pub async fn patch(
    reg: &Registry,
    name: &RepoName,
    id: &UploadId,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let range = content_range(h)?;
    let offset = reg
        .append_upload(name, id, range, core_body(h, body))
        .await?;
    Ok(empty(
        StatusCode::ACCEPTED,
        &session_headers(name, id, offset),
    ))
}

pub async fn put(
    reg: &Registry,
    name: &RepoName,
    id: &UploadId,
    q: &Query,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let digest = match q.get("digest") {
        Some(d) => parse_digest(d)?,
        None => {
            return Err(RegistryError::DigestInvalid(
                "the digest query parameter is required".into(),
            )
            .into());
        }
    };
    let range = content_range(h)?;
    reg.finish_upload(name, id, &digest, range, core_body(h, body))
        .await?;
    Ok(created(name, &digest))
}

pub async fn cancel(reg: &Registry, name: &RepoName, id: &UploadId) -> ApiResult {
    reg.cancel_upload(name, id).await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}

/// `Content-Range: <start>-<end>` (inclusive), also accepting the RFC 9110
/// form `bytes <start>-<end>/<size>` some clients send.
fn content_range(h: &HeaderMap) -> Result<Option<ChunkRange>, RegistryError> {
    let Some(v) = header_str(h, &header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let v = v.trim();
    let v = v.strip_prefix("bytes").map(str::trim_start).unwrap_or(v);
    let v = v.split('/').next().unwrap_or(v).trim();
    let bad = || RegistryError::RangeInvalid(format!("malformed Content-Range {v:?}"));
    let (a, b) = v.split_once('-').ok_or_else(bad)?;
    let start = a.trim().parse().map_err(|_| bad())?;
    let end = b.trim().parse().map_err(|_| bad())?;
    Ok(Some(ChunkRange { start, end }))
}
