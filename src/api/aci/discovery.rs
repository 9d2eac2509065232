//! appc discovery pages (`GET /<name>?ac-discovery=1`, and the host root):
//! HTML from `views/aci-discovery.html` with, for each domain the hub
//! answers for, the `ac-discovery` template of images and signatures, the
//! `ac-push-discovery` endpoint and, on a repository's page, the
//! `ac-discovery-pubkeys` URL of its namespace's keys. A repository page
//! answers only for a repository the caller may pull; any other path (a
//! hidden or absent repository alike) is 404, and clients walk up to the
//! root page.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::registry::name::RepoName;

/// The template shipped with the hub, used if `views/` is not beside the
/// working directory.
const DEFAULT_PAGE: &str = include_str!("../../../views/aci-discovery.html");
const VIEW: &str = "views/aci-discovery.html";

/// The discovery page template, loaded at start.
#[derive(Clone)]
pub struct View {
    page: String,
}

impl View {
    /// `views/aci-discovery.html` from the working directory if there is
    /// one (operators may restyle it), else the copy built in.
    pub fn load() -> View {
        let page = match std::fs::read_to_string(VIEW) {
            Ok(p) if p.contains("{{meta}}") => p,
            Ok(_) => {
                tracing::warn!(
                    view = VIEW,
                    "has no {{{{meta}}}} placeholder; using the built-in page"
                );
                DEFAULT_PAGE.to_string()
            }
            Err(_) => DEFAULT_PAGE.to_string(),
        };
        View { page }
    }

    /// Renders the page of `title` with `metas` (kind, prefix, URL).
    pub fn render(&self, title: &str, metas: &[(&str, String, String)]) -> Response {
        let tags: Vec<String> = metas
            .iter()
            .map(|(kind, prefix, url)| {
                format!(
                    "<meta name=\"{}\" content=\"{} {}\">",
                    escape(kind),
                    escape(prefix),
                    escape(url)
                )
            })
            .collect();
        // One pass over the template, so text substituted for one
        // placeholder is never scanned for another.
        let mut out = String::with_capacity(self.page.len() + 256 * tags.len());
        let mut rest = self.page.as_str();
        while let Some(i) = rest.find("{{") {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            if let Some(r) = after.strip_prefix("{{title}}") {
                out.push_str(&escape(title));
                rest = r;
            } else if let Some(r) = after.strip_prefix("{{meta}}") {
                out.push_str(&tags.join("\n"));
                rest = r;
            } else {
                out.push_str("{{");
                rest = &after[2..];
            }
        }
        out.push_str(rest);
        let mut r = (StatusCode::OK, out).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    }
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The domains ACI names start with: the configured ones, or the host the
/// client used (without its port).
pub fn domains(configured: &[String], headers: &HeaderMap) -> Vec<String> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_ascii_lowercase();
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("").to_string()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    vec![host]
}

/// The meta tags of a page: templates for every domain, and the keys of
/// `repo`'s namespace on a repository's page.
pub fn metas(
    origin: &str,
    domains: &[String],
    repo: Option<&RepoName>,
) -> Vec<(&'static str, String, String)> {
    let mut m = Vec::new();
    for d in domains {
        m.push((
            "ac-discovery",
            d.clone(),
            format!("{origin}/_aci/images/{{name}}/{{version}}/{{os}}/{{arch}}.{{ext}}"),
        ));
        m.push((
            "ac-push-discovery",
            d.clone(),
            format!("{origin}/_aci/push/{{name}}?version={{version}}&os={{os}}&arch={{arch}}"),
        ));
        if let Some(repo) = repo {
            m.push((
                "ac-discovery-pubkeys",
                format!("{d}/{repo}"),
                format!("{origin}/_aci/pubkeys/{}", repo.namespace()),
            ));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_escaped() {
        let v = View {
            page: "<title>{{title}}</title>{{meta}}{{other}}".into(),
        };
        let r = v.render(
            "a<b>\"{{meta}}",
            &[(
                "ac-discovery",
                "hub".into(),
                "http://h/x?a=1&b={name}".into(),
            )],
        );
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(
            body,
            "<title>a&lt;b&gt;&quot;{{meta}}</title><meta name=\"ac-discovery\" content=\"hub http://h/x?a=1&amp;b={name}\">{{other}}"
        );
    }

    #[test]
    fn domains_default_to_the_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("Hub.Test:5000"));
        assert_eq!(domains(&[], &h), vec!["hub.test".to_string()]);
        h.insert(header::HOST, HeaderValue::from_static("[::1]:5000"));
        assert_eq!(domains(&[], &h), vec!["::1".to_string()]);
        assert_eq!(domains(&["a.test".into()], &h), vec!["a.test".to_string()]);
    }
}
