//! Parses the path under `/v2/` into a typed route. Repository names may
//! have any number of components (and may even contain `blobs` or
//! `manifests` as one), so the route is recognised from the end.

use crate::registry::RegistryError;
use crate::registry::digest::Digest;
use crate::registry::name::{Reference, RepoName};
use crate::registry::uploads::UploadId;

#[derive(Debug)]
pub enum Route {
    Catalog,
    Tags(RepoName),
    /// The reference stays unparsed-as-error until the method is known: a
    /// malformed one is a 404 for reads and deletes but a 400 for a push.
    Manifest(RepoName, Result<Reference, RegistryError>),
    Blob(RepoName, Digest),
    Uploads(RepoName),
    Upload(RepoName, UploadId),
    Referrers(RepoName, Digest),
    /// `<name>/blobs/<digest>/pieces`: the piece table and a swarm ticket.
    Pieces(RepoName, Digest),
}

/// `None` if the path is no v2 endpoint at all; `Some(Err)` if it is one
/// but a part of it is invalid.
pub fn parse(path: &str) -> Option<Result<Route, RegistryError>> {
    if path == "_catalog" {
        return Some(Ok(Route::Catalog));
    }
    let segs: Vec<&str> = path.split('/').collect();
    let n = segs.len();
    if n < 2 {
        return None;
    }
    let name_of = |upto: usize| -> Result<RepoName, RegistryError> {
        let name = segs[..upto].join("/");
        name.parse().map_err(|e: crate::registry::name::NameError| {
            RegistryError::NameInvalid(e.to_string())
        })
    };
    let (last, prev) = (segs[n - 1], segs[n - 2]);
    let route = if prev == "tags" && last == "list" {
        name_of(n - 2).map(Route::Tags)
    } else if n >= 3 && prev == "uploads" && segs[n - 3] == "blobs" {
        name_of(n - 3).and_then(|name| {
            if last.is_empty() {
                Ok(Route::Uploads(name))
            } else {
                Ok(Route::Upload(name, last.parse()?))
            }
        })
    } else if n >= 3 && last == "pieces" && segs[n - 3] == "blobs" {
        name_of(n - 3).and_then(|name| Ok(Route::Pieces(name, parse_digest(&decode(prev))?)))
    } else if prev == "blobs" && last == "uploads" {
        name_of(n - 2).map(Route::Uploads)
    } else if prev == "manifests" {
        name_of(n - 2).map(|name| {
            let reference = decode(last).parse::<Reference>().map_err(reference_error);
            Route::Manifest(name, reference)
        })
    } else if prev == "blobs" {
        name_of(n - 2).and_then(|name| Ok(Route::Blob(name, parse_digest(&decode(last))?)))
    } else if prev == "referrers" {
        name_of(n - 2).and_then(|name| Ok(Route::Referrers(name, parse_digest(&decode(last))?)))
    } else {
        return None;
    };
    Some(route)
}

pub fn parse_digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse()
        .map_err(|e: crate::registry::digest::DigestError| {
            RegistryError::DigestInvalid(e.to_string())
        })
}

fn reference_error(e: crate::registry::name::ReferenceError) -> RegistryError {
    use crate::registry::name::ReferenceError;
    match e {
        ReferenceError::Tag(t) => RegistryError::TagInvalid(t.to_string()),
        ReferenceError::Digest(d) => RegistryError::DigestInvalid(d.to_string()),
    }
}

/// Clients may percent-encode the `:` of a digest.
fn decode(s: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes_from_the_end() {
        assert!(matches!(parse("a/b/tags/list"), Some(Ok(Route::Tags(n))) if n.as_str() == "a/b"));
        assert!(matches!(parse("a/manifests/b/manifests/v1"),
            Some(Ok(Route::Manifest(n, Ok(Reference::Tag(_))))) if n.as_str() == "a/manifests/b"));
        assert!(matches!(
            parse("a/manifests/.bad"),
            Some(Ok(Route::Manifest(_, Err(_))))
        ));
        assert!(matches!(
            parse(&format!("x/blobs/{D}")),
            Some(Ok(Route::Blob(..)))
        ));
        assert!(matches!(
            parse(&format!("x/blobs/{}", D.replace(':', "%3A"))),
            Some(Ok(Route::Blob(..)))
        ));
        assert!(matches!(
            parse("x/blobs/uploads/"),
            Some(Ok(Route::Uploads(_)))
        ));
        assert!(matches!(
            parse("x/blobs/uploads"),
            Some(Ok(Route::Uploads(_)))
        ));
        assert!(matches!(
            parse("x/y/blobs/uploads/67e55044-10b1-426f-9247-bb680e5fe0c8"),
            Some(Ok(Route::Upload(..)))
        ));
        assert!(matches!(
            parse("x/blobs/uploads/nope"),
            Some(Err(RegistryError::BlobUploadUnknown))
        ));
        assert!(matches!(
            parse("X/tags/list"),
            Some(Err(RegistryError::NameInvalid(_)))
        ));
        assert!(matches!(
            parse("x/blobs/sha256:zz"),
            Some(Err(RegistryError::DigestInvalid(_)))
        ));
        assert!(matches!(
            parse(&format!("x/referrers/{D}")),
            Some(Ok(Route::Referrers(..)))
        ));
        assert!(parse("x/whatever").is_none());
        assert!(parse("tags/list").is_some());
    }
}
