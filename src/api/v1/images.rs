//! `/v1/images/<id>/{json,layer,checksum,ancestry}`.

use std::ops::Range;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde_json::json;

use super::access::{self, Caller};
use super::route::ImagePart;
use super::{
    Ctx, V1Result, core_body, done, error_response, hv, json_response, small_body, v1_error,
};
use crate::meta::legacy::V1Image;
use crate::registry::legacy::{ImageId, LegacyError, ParsedJson};

const X_DOCKER_SIZE: HeaderName = HeaderName::from_static("x-docker-size");
const X_DOCKER_CHECKSUM_PAYLOAD: HeaderName = HeaderName::from_static("x-docker-checksum-payload");

fn not_found() -> Response {
    v1_error(StatusCode::NOT_FOUND, "Image not found")
}

pub async fn handle(ctx: &Ctx, id: Option<ImageId>, part: ImagePart, body: Body) -> V1Result {
    let m = &ctx.method;
    let allowed = match part {
        ImagePart::Json | ImagePart::Layer => {
            matches!(*m, Method::GET | Method::HEAD | Method::PUT)
        }
        ImagePart::Checksum => *m == Method::PUT,
        ImagePart::Ancestry => matches!(*m, Method::GET | Method::HEAD),
    };
    if !allowed {
        return Err(super::method_not_allowed());
    }
    let caller = access::caller(&ctx.state, &ctx.headers, ctx.addr).await?;
    // A malformed id names no image.
    let Some(id) = id else {
        return Err(not_found());
    };
    let reg = &ctx.state.registry;
    let existing = reg.v1_image(&id).await.map_err(error_response)?;
    let head = *m == Method::HEAD;
    match (part, m.clone()) {
        (ImagePart::Json, Method::PUT) => {
            put_json(ctx, &caller, &id, existing.as_ref(), body).await
        }
        (ImagePart::Layer, Method::PUT) => put_layer(ctx, &caller, &id, existing, body).await,
        (ImagePart::Checksum, _) => put_checksum(ctx, &caller, &id, existing).await,
        (part, _) => {
            let Some(image) = existing else {
                return Err(not_found());
            };
            if !access::may_read_image(&ctx.state, &caller, &id).await? {
                return Err(not_found());
            }
            if !image.complete {
                return Err(error_response(LegacyError::InProgress));
            }
            match part {
                ImagePart::Json => get_json(ctx, &id).await,
                ImagePart::Layer => get_layer(ctx, &id, head).await,
                _ => json_response(StatusCode::OK, json!(image.ancestry).to_string()),
            }
        }
    }
}

async fn get_json(ctx: &Ctx, id: &ImageId) -> V1Result {
    let (image, layer, checksum) = ctx
        .state
        .registry
        .v1_complete_image(id)
        .await
        .map_err(error_response)?;
    let mut r = json_response(StatusCode::OK, image.json)?;
    let h = r.headers_mut();
    h.insert(X_DOCKER_SIZE, hv(layer.size.to_string()));
    h.insert(X_DOCKER_CHECKSUM_PAYLOAD, hv(&checksum));
    Ok(r)
}

/// Parses a single `bytes=` range against the layer size; a header this
/// does not understand is ignored (the whole layer is served).
fn parse_range(value: &str, size: u64) -> Result<Option<Range<u64>>, LegacyError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = LegacyError::RangeNotSatisfiable(size);
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
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

async fn get_layer(ctx: &Ctx, id: &ImageId, head: bool) -> V1Result {
    let reg = &ctx.state.registry;
    let image = reg
        .v1_image(id)
        .await
        .map_err(error_response)?
        .ok_or_else(not_found)?;
    let layer = image.layer.ok_or_else(not_found)?;
    let range = match ctx.headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => parse_range(r, layer.size).map_err(error_response)?,
        None => None,
    };
    let (status, span) = match &range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r.clone()),
        None => (StatusCode::OK, 0..layer.size),
    };
    let body = if head || span.is_empty() {
        Body::empty()
    } else {
        Body::from_stream(
            reg.v1_layer_stream(&layer, span.clone())
                .await
                .map_err(error_response)?,
        )
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        hv((span.end - span.start).to_string()),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000"),
    );
    if range.is_some() {
        h.insert(
            header::CONTENT_RANGE,
            hv(format!(
                "bytes {}-{}/{}",
                span.start,
                span.end.saturating_sub(1),
                layer.size
            )),
        );
    }
    Ok(r)
}

async fn put_json(
    ctx: &Ctx,
    caller: &Caller,
    id: &ImageId,
    existing: Option<&V1Image>,
    body: Body,
) -> V1Result {
    let state = &ctx.state;
    let push_repo = access::push_repo(state, caller, id, existing).await?;
    if let Some(e) = existing
        && state.registry.v1_present(e).await.map_err(error_response)?
    {
        return Err(error_response(LegacyError::Exists(
            "Image already exists".into(),
        )));
    }
    let limit = state.registry.limits().max_manifest_size as usize;
    let bytes = small_body(body, limit).await?;
    let parsed = ParsedJson::parse(id, bytes).map_err(error_response)?;
    if let Some(p) = &parsed.parent {
        let reg = &state.registry;
        if reg.v1_image(p).await.map_err(error_response)?.is_none() {
            return Err(v1_error(
                StatusCode::BAD_REQUEST,
                "Image depends on a non existing parent",
            ));
        }
        if !access::may_read_image(state, caller, p).await? {
            return Err(v1_error(
                StatusCode::BAD_REQUEST,
                "Image depends on an unauthorized parent",
            ));
        }
    }
    state
        .registry
        .v1_put_json(parsed, push_repo.as_ref())
        .await
        .map_err(error_response)?;
    done()
}

async fn put_layer(
    ctx: &Ctx,
    caller: &Caller,
    id: &ImageId,
    existing: Option<V1Image>,
    body: Body,
) -> V1Result {
    let Some(image) = existing else {
        return Err(not_found());
    };
    if image.complete {
        // Pushed already (or synthesized from a v2 image): nothing to add.
        return Err(error_response(LegacyError::Exists(
            "Image already exists".into(),
        )));
    }
    let push_repo = access::push_repo(&ctx.state, caller, id, Some(&image)).await?;
    let digest = ctx
        .state
        .registry
        .v1_put_layer(id, core_body(&ctx.headers, body))
        .await
        .map_err(error_response)?;
    ctx.audit(
        &caller.name,
        "push",
        push_repo.as_ref().map(|r| r.as_str()),
        Some(digest.as_str()),
    )
    .await;
    done()
}

async fn put_checksum(
    ctx: &Ctx,
    caller: &Caller,
    id: &ImageId,
    existing: Option<V1Image>,
) -> V1Result {
    let Some(checksum) = ctx
        .headers
        .get("x-docker-checksum-payload")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return Err(v1_error(
            StatusCode::BAD_REQUEST,
            "Missing Image's checksum",
        ));
    };
    let Some(image) = existing else {
        return Err(not_found());
    };
    if image.complete {
        return Err(error_response(LegacyError::Exists(
            "Cannot set this image checksum".into(),
        )));
    }
    access::push_repo(&ctx.state, caller, id, Some(&image)).await?;
    ctx.state
        .registry
        .v1_put_checksum(id, checksum)
        .await
        .map_err(error_response)?;
    done()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some(0..10));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some(90..100));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some(90..100));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert!(parse_range("bytes=9-1", 100).is_err());
    }
}
