//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`.

use std::ops::Range;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;

use super::{ApiResult, CONTENT_DIGEST, empty, header_str, hv};
use crate::registry::digest::Digest;
use crate::registry::name::RepoName;
use crate::registry::{Registry, RegistryError};

pub async fn get(
    reg: &Registry,
    name: &RepoName,
    digest: &Digest,
    h: &HeaderMap,
    head: bool,
) -> ApiResult {
    let size = reg.blob_size(name, digest).await?;
    let range = match header_str(h, &header::RANGE) {
        Some(r) => parse_range(r, size)?,
        None => None,
    };
    let (status, span) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.clone()),
        None => (StatusCode::OK, 0..size),
    };
    let body = if head || span.is_empty() {
        Body::empty()
    } else {
        Body::from_stream(reg.read_blob(digest, span.clone()).await?)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let hs = resp.headers_mut();
    hs.insert(
        header::CONTENT_LENGTH,
        hv((span.end - span.start).to_string()),
    );
    hs.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    hs.insert(CONTENT_DIGEST, hv(digest.as_str()));
    hs.insert(header::ETAG, hv(format!("\"{digest}\"")));
    hs.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Content-addressed: the bytes behind this URL never change.
    hs.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=31536000"),
    );
    if range.is_some() {
        hs.insert(
            header::CONTENT_RANGE,
            hv(format!(
                "bytes {}-{}/{size}",
                span.start,
                span.end.saturating_sub(1)
            )),
        );
    }
    Ok(resp)
}

pub async fn delete(reg: &Registry, name: &RepoName, digest: &Digest) -> ApiResult {
    reg.delete_blob(name, digest).await?;
    Ok(empty(
        StatusCode::ACCEPTED,
        &[(CONTENT_DIGEST, hv(digest.as_str()))],
    ))
}

/// Parses a single `bytes=` range against the blob size. A header this
/// does not understand (another unit, several ranges) is ignored and the
/// whole blob served, as RFC 9110 allows; a syntactically valid range that
/// lies outside the blob is refused with 416.
fn parse_range(value: &str, size: u64) -> Result<Option<Range<u64>>, RegistryError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = RegistryError::RangeNotSatisfiable(size);
    if size == 0 {
        // No byte range of an empty blob exists.
        return Err(unsatisfiable);
    }
    let range = if a.is_empty() {
        // Suffix: the last b bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 {
            return Err(unsatisfiable);
        }
        size.saturating_sub(n)..size
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size
        } else {
            let Ok(last) = b.parse::<u64>() else {
                return Ok(None);
            };
            if last < start {
                return Err(unsatisfiable);
            }
            last.saturating_add(1).min(size)
        };
        if start >= size {
            return Err(unsatisfiable);
        }
        start..end
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-1000", 100).unwrap(), Some(0..100));
        assert_eq!(parse_range("bytes=50-1000", 100).unwrap(), Some(50..100));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=-0", 100).is_err());
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert!(parse_range("bytes=9-1", 100).is_err());
        assert!(parse_range("bytes=-5", 0).is_err());
    }
}
