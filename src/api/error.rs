//! The one place where core errors become HTTP responses, in the
//! distribution spec's JSON form:
//! `{"errors":[{"code":"...","message":"...","detail":...}]}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::registry::RegistryError;

/// A response-ready error: a core error, or one found while parsing HTTP.
#[derive(Debug)]
pub struct ApiError(pub RegistryError);

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        use RegistryError::*;
        match &self.0 {
            BlobUnknown => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            BlobUploadInvalid(_) => (StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID"),
            BlobUploadUnknown => (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN"),
            RangeInvalid(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN"),
            DigestInvalid(_) => (StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
            ManifestBlobUnknown(_) => (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN"),
            ManifestInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            ManifestUnknown | ManifestNotAcceptable(_) => {
                (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
            }
            NameInvalid(_) => (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            NameUnknown => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            SizeInvalid(_) => (StatusCode::BAD_REQUEST, "SIZE_INVALID"),
            // The spec's code list has no tag or pagination codes.
            TagInvalid(_) => (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"),
            Unsupported(_) => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            ManifestTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID"),
            PaginationInvalid(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            NotOffered(_) => (StatusCode::NOT_FOUND, "UNSUPPORTED"),
            RequestInvalid(_) => (StatusCode::BAD_REQUEST, "UNSUPPORTED"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self.0 {
            RegistryError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal server error".to_string()
            }
            other => other.to_string(),
        };
        let body = json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        let mut resp = (status, body.to_string()).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let RegistryError::RangeNotSatisfiable(size) = self.0
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_spec_shape() {
        let resp = ApiError(RegistryError::DigestInvalid("x".into())).into_response();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        let resp = ApiError(RegistryError::RangeNotSatisfiable(10)).into_response();
        assert_eq!(resp.headers()[header::CONTENT_RANGE], "bytes */10");
    }
}
