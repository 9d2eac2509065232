//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::response::Response;

use super::{ApiResult, CONTENT_DIGEST, empty, header_str, hv};
use crate::registry::manifests::Accept;
use crate::registry::name::{Reference, RepoName};
use crate::registry::{Registry, RegistryError};

const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");

pub async fn get(
    reg: &Registry,
    name: &RepoName,
    r: &Reference,
    h: &HeaderMap,
    head: bool,
) -> ApiResult {
    let accept = Accept::from_headers(
        h.get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let m = reg.get_manifest(name, r, &accept).await?;
    let len = m.body.len();
    let mut resp = Response::new(if head {
        Body::empty()
    } else {
        Body::from(m.body)
    });
    let hs = resp.headers_mut();
    hs.insert(header::CONTENT_TYPE, hv(&m.media_type));
    hs.insert(header::CONTENT_LENGTH, hv(len.to_string()));
    hs.insert(CONTENT_DIGEST, hv(m.digest.as_str()));
    hs.insert(header::ETAG, hv(format!("\"{}\"", m.digest)));
    Ok(resp)
}

pub async fn put(
    reg: &Registry,
    name: &RepoName,
    r: &Reference,
    h: &HeaderMap,
    body: Body,
) -> ApiResult {
    let limit = reg.limits().max_manifest_size;
    let announced: Option<u64> =
        header_str(h, &header::CONTENT_LENGTH).and_then(|v| v.parse().ok());
    if announced.is_some_and(|l| l > limit) {
        return Err(RegistryError::ManifestTooLarge(limit).into());
    }
    let bytes = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                RegistryError::ManifestTooLarge(limit)
            } else {
                RegistryError::ManifestInvalid(format!("reading the manifest failed: {inner}"))
            }
        })?;
    let pushed = reg
        .put_manifest(name, r, header_str(h, &header::CONTENT_TYPE), bytes)
        .await?;
    let mut headers = vec![
        (
            header::LOCATION,
            hv(format!("/v2/{name}/manifests/{}", pushed.digest)),
        ),
        (CONTENT_DIGEST, hv(pushed.digest.as_str())),
    ];
    if let Some(subject) = &pushed.subject {
        headers.push((OCI_SUBJECT, hv(subject.as_str())));
    }
    Ok(empty(StatusCode::CREATED, &headers))
}

pub async fn delete(reg: &Registry, name: &RepoName, r: &Reference) -> ApiResult {
    reg.delete_manifest(name, r).await?;
    Ok(empty(StatusCode::ACCEPTED, &[]))
}
