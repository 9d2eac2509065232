//! The appc ACI front-end (rkt, acpush): discovery pages, ACI and
//! signature downloads, public keys, the acpush protocol, and the `/uam`
//! administration of a namespace's public keys. It parses HTTP and calls
//! `registry::aci`; permissions come from the one resolver (`access`).
//!
//! | request | what |
//! | --- | --- |
//! | `GET /<path>?ac-discovery=1`, `GET /?ac-discovery=1` | discovery page (`discovery`) |
//! | `GET /_aci/images/<name>/<version>/<os>/<arch>.aci` | the ACI (pull) |
//! | `GET /_aci/images/<name>/<version>/<os>/<arch>.aci.asc` | its armored signature (pull) |
//! | `GET /_aci/pubkeys/<namespace>` | the namespace's armored public keys |
//! | `POST /_aci/push/<name>?version=&os=&arch=` | opens an acpush session (push) |
//! | `PUT /_aci/uploads/<id>/manifest`, `/signature`, `/aci` | its parts (push) |
//! | `POST /_aci/uploads/<id>/complete` | `{success, reason}` in, `{success, reason, server_reason}` out |
//! | `PUT`, `GET`, `DELETE /uam/aci/pubkeys/<namespace>` | a namespace's keys (its owners) |

mod access;
mod discovery;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::json;

use super::auth::Peer;
use super::state::AppState;
use crate::auth::model::Actions;
use crate::registry::aci::push::{Completed, Expected};
use crate::registry::aci::{Aci, AciError, AciName, Labels, MAX_ARMORED, Served};
use crate::registry::name::RepoName;
use crate::storage::ByteStream;

#[derive(Clone)]
struct Ctx {
    aci: Arc<Aci>,
    view: Arc<discovery::View>,
}

/// The ACI routes, with the discovery fallback: every path not routed
/// elsewhere answers a discovery page if asked with `?ac-discovery=1`, and
/// 404 otherwise.
pub fn router(state: &AppState) -> Router<AppState> {
    let ctx = Ctx {
        aci: Aci::new(state.registry.clone()),
        view: Arc::new(discovery::View::load()),
    };
    Router::new()
        .route("/_aci/images/{*path}", get(image))
        .route("/_aci/pubkeys/{namespace}", get(pubkeys))
        .route("/_aci/push/{*name}", post(push_start))
        .route("/_aci/uploads/{id}/{part}", put(push_part))
        .route("/_aci/uploads/{id}/complete", post(push_complete))
        .route(
            "/uam/aci/pubkeys/{namespace}",
            put(keys_put).get(keys_get).delete(keys_delete),
        )
        .fallback(fallback)
        .layer(Extension(ctx))
}

fn error(e: AciError) -> Response {
    let status = match &e {
        AciError::NotFound(_) => StatusCode::NOT_FOUND,
        AciError::Invalid(_) => StatusCode::BAD_REQUEST,
        AciError::Unsupported(_) => StatusCode::UNPROCESSABLE_ENTITY,
        AciError::Internal(m) => {
            tracing::error!(error = %m, "ACI request failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n").into_response();
        }
    };
    (status, format!("{e}\n")).into_response()
}

fn addr(
    state: &AppState,
    headers: &HeaderMap,
    req_peer: Option<&Peer>,
) -> Option<std::net::IpAddr> {
    state.client_addr(headers, req_peer)
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(
        body.into_data_stream()
            .map_err(|e| std::io::Error::other(e.to_string())),
    )
}

/// `<name>/<version>/<os>/<arch>.aci[.asc]`.
fn parse_image_path(path: &str) -> Option<(&str, &str, &str, &str, bool)> {
    let (rest, last) = path.rsplit_once('/')?;
    let (arch, sig) = match last.strip_suffix(".aci.asc") {
        Some(a) => (a, true),
        None => (last.strip_suffix(".aci")?, false),
    };
    let (rest, os) = rest.rsplit_once('/')?;
    let (name, version) = rest.rsplit_once('/')?;
    Some((name, version, os, arch, sig))
}

async fn image(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    let headers = req.headers();
    let addr = addr(&state, headers, req.extensions().get::<Peer>());
    let Some((name, version, os, arch, sig)) = parse_image_path(&path) else {
        return (StatusCode::NOT_FOUND, "not an ACI path\n").into_response();
    };
    let domains = discovery::domains(&state.domains, headers);
    let name = match AciName::parse(name, &domains) {
        Ok(n) => n,
        Err(e) => return error(e),
    };
    let who = match access::check(&state, headers, addr, &name.repo, Actions::PULL).await {
        Ok(w) => w,
        Err(r) => return r.into_response(&format!("ACI {name}")),
    };
    let labels = match Labels::parse(version, os, arch) {
        Ok(l) => l,
        Err(_) => return (StatusCode::NOT_FOUND, "no such ACI\n").into_response(),
    };
    let served = if sig {
        ctx.aci.fetch_signature(&name, &labels).await
    } else {
        ctx.aci.fetch(&name, &labels).await
    };
    let served = match served {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    if !sig {
        state
            .audit
            .record(
                &who.name,
                "pull",
                Some(name.repo.as_str()),
                Some(&format!(
                    "aci:{}/{}/{}",
                    labels.version, labels.os, labels.arch
                )),
                addr,
            )
            .await;
    }
    stream_response(served, sig)
}

fn stream_response(s: Served, sig: bool) -> Response {
    let mut r = Response::new(Body::from_stream(s.stream));
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(s.size));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if sig {
            "application/pgp-signature"
        } else {
            "application/octet-stream"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", s.digest)) {
        h.insert(header::ETAG, v);
    }
    if let Some(id) = s.image_id
        && let Ok(v) = HeaderValue::from_str(&id)
    {
        h.insert("x-aci-image-id", v);
    }
    r
}

async fn pubkeys(Extension(ctx): Extension<Ctx>, Path(namespace): Path<String>) -> Response {
    match ctx.aci.pubkeys(&namespace).await {
        Ok(Some(keys)) => keys_response(keys),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("namespace {namespace} has no public keys\n"),
        )
            .into_response(),
        Err(e) => error(e),
    }
}

fn keys_response(keys: String) -> Response {
    let mut r = (StatusCode::OK, keys).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/pgp-keys"),
    );
    r
}

#[derive(Deserialize)]
struct PushQuery {
    version: Option<String>,
    os: Option<String>,
    arch: Option<String>,
}

/// A JSON answer of the push protocol.
fn push_json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

fn push_failure(why: &str) -> Response {
    push_json(
        StatusCode::BAD_REQUEST,
        json!({"success": false, "reason": why, "server_reason": why}),
    )
}

async fn push_start(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PushQuery>,
    req: Request,
) -> Response {
    let headers = req.headers();
    let addr = addr(&state, headers, req.extensions().get::<Peer>());
    let domains = discovery::domains(&state.domains, headers);
    let name = match AciName::parse(&name, &domains) {
        Ok(n) => n,
        Err(e) => return push_failure(&e.to_string()),
    };
    if let Err(r) = access::check(&state, headers, addr, &name.repo, Actions::PULL_PUSH).await {
        return r.into_response(&format!("repository {}", name.repo));
    }
    let version = q
        .version
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "latest".into());
    let (Some(os), Some(arch)) = (q.os, q.arch) else {
        return push_failure("the push URL must give os and arch");
    };
    let labels = match Labels::parse(&version, &os, &arch) {
        Ok(l) => l,
        Err(e) => return push_failure(&e.to_string()),
    };
    let id = match ctx.aci.push_start(Expected { name, labels }) {
        Ok(id) => id,
        Err(e) => return push_failure(&e.to_string()),
    };
    let base = format!("{}/_aci/uploads/{id}", super::auth::origin(headers));
    push_json(
        StatusCode::OK,
        json!({
            "aci_push_version": "0.0.1",
            "multipart": false,
            "upload_manifest_url": format!("{base}/manifest"),
            "upload_signature_url": format!("{base}/signature"),
            "upload_aci_url": format!("{base}/aci"),
            "completed_url": format!("{base}/complete"),
        }),
    )
}

/// Every request of a session needs push permission on its repository.
async fn session_access(
    state: &AppState,
    ctx: &Ctx,
    id: &str,
    headers: &HeaderMap,
    addr: Option<std::net::IpAddr>,
) -> Result<(RepoName, String), Response> {
    let repo = ctx.aci.push_repo(id).map_err(error)?;
    match access::check(state, headers, addr, &repo, Actions::PULL_PUSH).await {
        Ok(who) => Ok((repo, who.name)),
        Err(r) => Err(r.into_response(&format!("repository {repo}"))),
    }
}

async fn push_part(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path((id, part)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let addr = addr(&state, &parts.headers, parts.extensions.get::<Peer>());
    if let Err(r) = session_access(&state, &ctx, &id, &parts.headers, addr).await {
        return r;
    }
    let body = body_stream(body);
    let r = match part.as_str() {
        "manifest" => ctx.aci.push_manifest(&id, body).await,
        "signature" => ctx.aci.push_signature(&id, body).await,
        "aci" => ctx.aci.push_aci(&id, body).await,
        _ => return (StatusCode::NOT_FOUND, "no such part\n").into_response(),
    };
    match r {
        Ok(()) => push_json(StatusCode::OK, json!({"success": true})),
        Err(AciError::NotFound(m)) => (StatusCode::NOT_FOUND, format!("{m}\n")).into_response(),
        Err(AciError::Internal(m)) => {
            tracing::error!(error = %m, "ACI push part failed");
            push_failure("internal server error")
        }
        // The client goes on and learns the outcome at completion.
        Err(e) => {
            let mut r = push_failure(&e.to_string());
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
    }
}

#[derive(Deserialize)]
struct CompleteMsg {
    success: bool,
    #[serde(default)]
    reason: Option<String>,
}

async fn push_complete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let addr = addr(&state, &parts.headers, parts.extensions.get::<Peer>());
    let (repo, who) = match session_access(&state, &ctx, &id, &parts.headers, addr).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let msg: CompleteMsg = match axum::body::to_bytes(body, 64 * 1024)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(m) => m,
        None => return push_failure("the completion message is not {\"success\": bool, ...}"),
    };
    match ctx
        .aci
        .push_complete(&id, msg.success, msg.reason.as_deref())
        .await
    {
        Ok(Completed::Stored(img)) => {
            state
                .audit
                .record(
                    &who,
                    "push",
                    Some(repo.as_str()),
                    Some(&format!("aci:{}/{}/{}", img.version, img.os, img.arch)),
                    addr,
                )
                .await;
            push_json(StatusCode::OK, json!({"success": true}))
        }
        Ok(Completed::Refused(why)) => push_failure(&why),
        Err(AciError::Internal(m)) => {
            tracing::error!(error = %m, "ACI push completion failed");
            push_failure("internal server error")
        }
        Err(e) => push_failure(&e.to_string()),
    }
}

async fn keys_put(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(namespace): Path<String>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let addr = addr(&state, &parts.headers, parts.extensions.get::<Peer>());
    let who = match access::namespace_owner(&state, &parts.headers, addr, &namespace).await {
        Ok(w) => w,
        Err(r) => return r.into_response(&format!("namespace {namespace}")),
    };
    let text = match crate::registry::aci::gather(body_stream(body), MAX_ARMORED).await {
        Ok(b) => match String::from_utf8(b.to_vec()) {
            Ok(t) => t,
            Err(_) => {
                return (StatusCode::BAD_REQUEST, "keys must be ASCII armor\n").into_response();
            }
        },
        Err(e) => return error(e),
    };
    if let Err(e) = ctx.aci.set_pubkeys(&namespace, &text).await {
        return error(e);
    }
    state
        .audit
        .record(&who, "aci.pubkeys.set", None, Some(&namespace), addr)
        .await;
    keys_response(text)
}

async fn keys_get(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(namespace): Path<String>,
    req: Request,
) -> Response {
    let addr = addr(&state, req.headers(), req.extensions().get::<Peer>());
    if let Err(r) = access::namespace_owner(&state, req.headers(), addr, &namespace).await {
        return r.into_response(&format!("namespace {namespace}"));
    }
    pubkeys(Extension(ctx), Path(namespace)).await
}

async fn keys_delete(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    Path(namespace): Path<String>,
    req: Request,
) -> Response {
    let addr = addr(&state, req.headers(), req.extensions().get::<Peer>());
    let who = match access::namespace_owner(&state, req.headers(), addr, &namespace).await {
        Ok(w) => w,
        Err(r) => return r.into_response(&format!("namespace {namespace}")),
    };
    match ctx.aci.delete_pubkeys(&namespace).await {
        Ok(true) => {
            state
                .audit
                .record(&who, "aci.pubkeys.delete", None, Some(&namespace), addr)
                .await;
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => (
            StatusCode::NOT_FOUND,
            format!("namespace {namespace} has no public keys\n"),
        )
            .into_response(),
        Err(e) => error(e),
    }
}

/// Every request no other route takes: a discovery page if it asks for
/// one, 404 otherwise.
async fn fallback(
    State(state): State<AppState>,
    Extension(ctx): Extension<Ctx>,
    req: Request,
) -> Response {
    let discovery = req.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "ac-discovery" && v == "1")
    });
    if !discovery || req.method() != Method::GET {
        return StatusCode::NOT_FOUND.into_response();
    }
    let headers = req.headers();
    let domains = discovery::domains(&state.domains, headers);
    let origin = super::auth::origin(headers);
    let path = req.uri().path().trim_matches('/');
    if path.is_empty() {
        let metas = discovery::metas(&origin, &domains, None);
        return ctx.view.render(&domains.join(" "), &metas);
    }
    let addr = addr(&state, headers, req.extensions().get::<Peer>());
    let Ok(repo) = path.parse::<RepoName>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Only for a repository the caller may pull; hidden ones look absent.
    let exists = matches!(ctx.aci.repo_exists(&repo).await, Ok(true));
    if !exists || !access::may_pull(&state, headers, addr, &repo).await {
        return StatusCode::NOT_FOUND.into_response();
    }
    let metas = discovery::metas(&origin, &domains, Some(&repo));
    let title = domains
        .first()
        .map_or_else(|| repo.to_string(), |d| format!("{d}/{repo}"));
    ctx.view.render(&title, &metas)
}

#[cfg(test)]
mod tests {
    use super::parse_image_path;

    #[test]
    fn image_paths() {
        assert_eq!(
            parse_image_path("hub.test/acme/web/1.0/linux/amd64.aci"),
            Some(("hub.test/acme/web", "1.0", "linux", "amd64", false))
        );
        assert_eq!(
            parse_image_path("hub.test/web/latest/linux/aarch64.aci.asc"),
            Some(("hub.test/web", "latest", "linux", "aarch64", true))
        );
        assert_eq!(parse_image_path("hub.test/web/latest/linux/amd64"), None);
        assert_eq!(parse_image_path("amd64.aci"), None);
    }
}
