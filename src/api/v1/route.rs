//! Parses a `/v1/...` path into a typed route. Repository paths are parsed
//! from their end (`/images`, `/tags`, `/tags/<tag>`, a trailing `/`), so
//! the name is whatever comes before; a one-component name lives under
//! `library/`.

use crate::registry::legacy::ImageId;
use crate::registry::name::{LIBRARY, RepoName};

/// What an image path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePart {
    Json,
    Layer,
    Checksum,
    Ancestry,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    Ping,
    Users,
    Search,
    /// An image path; `None` if the id is malformed (no such image).
    Image(Option<ImageId>, ImagePart),
    /// `/v1/repositories/<name>/` (or without the slash).
    Repository(RepoName),
    RepoImages(RepoName),
    Tags(RepoName),
    /// The tag as written (checked by the handler).
    Tag(RepoName, String),
}

/// Why a path is no route.
#[derive(Debug, PartialEq)]
pub enum RouteError {
    NotFound,
    BadName(String),
}

fn repo(name: &str) -> Result<RepoName, RouteError> {
    let full = if name.contains('/') {
        name.to_string()
    } else {
        format!("{LIBRARY}/{name}")
    };
    full.parse()
        .map_err(|e| RouteError::BadName(format!("Invalid repository name: {e}")))
}

/// Parses the path after `/v1/`.
pub fn parse(path: &str) -> Result<Route, RouteError> {
    match path {
        "_ping" | "_ping/" => return Ok(Route::Ping),
        "users" | "users/" => return Ok(Route::Users),
        "search" | "search/" => return Ok(Route::Search),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("images/") {
        let (id, part) = rest.split_once('/').ok_or(RouteError::NotFound)?;
        let part = match part.trim_end_matches('/') {
            "json" => ImagePart::Json,
            "layer" => ImagePart::Layer,
            "checksum" => ImagePart::Checksum,
            "ancestry" => ImagePart::Ancestry,
            _ => return Err(RouteError::NotFound),
        };
        return Ok(Route::Image(id.parse().ok(), part));
    }
    let Some(rest) = path.strip_prefix("repositories/") else {
        return Err(RouteError::NotFound);
    };
    if let Some(name) = rest.strip_suffix("/images") {
        return Ok(Route::RepoImages(repo(name)?));
    }
    if let Some(name) = rest.strip_suffix("/tags").or(rest.strip_suffix("/tags/")) {
        return Ok(Route::Tags(repo(name)?));
    }
    if let Some((name, tag)) = rest.rsplit_once("/tags/")
        && !tag.is_empty()
        && !tag.contains('/')
    {
        return Ok(Route::Tag(repo(name)?, tag.to_string()));
    }
    let name = rest.strip_suffix('/').unwrap_or(rest);
    if name.is_empty() {
        return Err(RouteError::NotFound);
    }
    Ok(Route::Repository(repo(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn routes() {
        let id = "a".repeat(64);
        assert_eq!(parse("_ping"), Ok(Route::Ping));
        assert_eq!(parse("users/"), Ok(Route::Users));
        assert_eq!(
            parse(&format!("images/{id}/json")),
            Ok(Route::Image(Some(id.parse().unwrap()), ImagePart::Json))
        );
        assert_eq!(
            parse("images/xyz/layer"),
            Ok(Route::Image(None, ImagePart::Layer))
        );
        assert_eq!(parse("images/xyz/other"), Err(RouteError::NotFound));
        assert_eq!(
            parse("repositories/foo/bar/"),
            Ok(Route::Repository(r("foo/bar")))
        );
        assert_eq!(
            parse("repositories/busybox/"),
            Ok(Route::Repository(r("library/busybox")))
        );
        assert_eq!(
            parse("repositories/foo/bar/images"),
            Ok(Route::RepoImages(r("foo/bar")))
        );
        assert_eq!(
            parse("repositories/foo/bar/tags"),
            Ok(Route::Tags(r("foo/bar")))
        );
        assert_eq!(
            parse("repositories/foo/tags/latest"),
            Ok(Route::Tag(r("library/foo"), "latest".into()))
        );
        assert!(matches!(
            parse("repositories/Foo/bar/"),
            Err(RouteError::BadName(_))
        ));
        assert_eq!(parse("repositories/"), Err(RouteError::NotFound));
        assert_eq!(parse("nothing"), Err(RouteError::NotFound));
    }
}
