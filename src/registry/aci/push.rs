//! The acpush protocol (`appc/acpush`, proposed in appc/spec#418): a
//! client discovers the push URL (`ac-push-discovery`, rendered with the
//! image's name and labels), `POST`s to it to open a session, `PUT`s the
//! image manifest, the armored signature and the ACI to the URLs the
//! session names, and `POST`s `{"success": bool, "reason": ...}` to its
//! completion URL; the answer is `{"success", "reason", "server_reason"}`.
//!
//! Each part is checked as it arrives; a part that fails marks the session
//! failed and changes nothing visible. Only a successful completion stores
//! the image (and points `latest` of its os/arch at it, unless an ACI was
//! pushed with the literal version `latest`). Sessions live in this
//! process's memory (a push is a few requests in a row) and expire.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::inspect::{ChannelReader, Inspected, inspect};
use super::manifest::{self, ImageManifest};
use super::{Aci, AciError, AciName, AciResult, Labels, MAX_ARMORED, check_armor, gather};
use crate::meta::aci::AciImage;
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::name::RepoName;
use crate::storage::ByteStream;

/// Sessions kept at most, and how long an idle one lives.
const MAX_SESSIONS: usize = 1024;
const SESSION_TTL: Duration = Duration::from_secs(3600);

/// What the pushed image must be, from the push URL.
#[derive(Clone, Debug)]
pub struct Expected {
    pub name: AciName,
    /// `latest` when the client named no version (discovery's default):
    /// then any version label is accepted.
    pub labels: Labels,
}

#[derive(Clone, Debug)]
struct Received {
    digest: Digest,
    size: u64,
    inspected: Inspected,
}

struct Session {
    expected: Expected,
    manifest: Option<ImageManifest>,
    signature: Option<Digest>,
    aci: Option<Received>,
    failed: Option<String>,
    busy: bool,
    touched: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// The outcome of a push, as the completion answer reports it.
pub enum Completed {
    Stored(Box<AciImage>),
    Refused(String),
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Checks a manifest against what the push URL says the image is: the
/// name exactly, `os` and `arch` exactly, `version` exactly unless none
/// was named (then it must have one).
fn matches(m: &ImageManifest, e: &Expected) -> Result<(), String> {
    let name = e.name.to_string();
    if m.name != name {
        return Err(format!(
            "the manifest names {:?}, but the image is pushed as {name:?}",
            m.name
        ));
    }
    let Some(version) = m.labels.get("version") else {
        return Err("the manifest has no version label (it becomes the tag)".into());
    };
    if e.labels.version != "latest" && version != &e.labels.version {
        return Err(format!(
            "the manifest's version label is {version:?}, but the image is pushed as version {:?}",
            e.labels.version
        ));
    }
    if let Err(err) = version.parse::<crate::registry::name::Tag>() {
        return Err(format!("the version label cannot be a tag: {err}"));
    }
    for (label, want) in [("os", &e.labels.os), ("arch", &e.labels.arch)] {
        match m.labels.get(label) {
            Some(v) if v == want => {}
            Some(v) => {
                return Err(format!(
                    "the manifest's {label} label is {v:?}, but the image is pushed for {want:?}"
                ));
            }
            None => return Err(format!("the manifest has no {label} label")),
        }
    }
    Ok(())
}

impl Aci {
    /// Opens a push session; returns its id.
    pub fn push_start(&self, expected: Expected) -> AciResult<String> {
        let mut map = self.sessions.lock();
        map.retain(|_, s| s.touched.elapsed() < SESSION_TTL);
        if map.len() >= MAX_SESSIONS {
            return Err(AciError::Unsupported(
                "too many pushes under way; try again later".into(),
            ));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        map.insert(
            id.clone(),
            Session {
                expected,
                manifest: None,
                signature: None,
                aci: None,
                failed: None,
                busy: false,
                touched: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The repository a session pushes to (for authorization).
    pub fn push_repo(&self, id: &str) -> AciResult<RepoName> {
        self.sessions
            .lock()
            .get(id)
            .map(|s| s.expected.name.repo.clone())
            .ok_or_else(|| AciError::NotFound(format!("no push session {id}")))
    }

    /// Takes the session for one step (one request at a time).
    fn begin(&self, id: &str) -> AciResult<Expected> {
        let mut map = self.sessions.lock();
        let s = map
            .get_mut(id)
            .ok_or_else(|| AciError::NotFound(format!("no push session {id}")))?;
        if s.busy {
            return Err(AciError::Invalid(
                "another request of this push is under way".into(),
            ));
        }
        if let Some(f) = &s.failed {
            return Err(AciError::Invalid(format!("this push already failed: {f}")));
        }
        s.busy = true;
        s.touched = Instant::now();
        Ok(s.expected.clone())
    }

    /// Ends a step: applies `update` on success, marks the session failed
    /// otherwise.
    fn end<T>(
        &self,
        id: &str,
        r: AciResult<T>,
        update: impl FnOnce(&mut Session, &T),
    ) -> AciResult<T> {
        let mut map = self.sessions.lock();
        if let Some(s) = map.get_mut(id) {
            s.busy = false;
            s.touched = Instant::now();
            match &r {
                Ok(v) => update(s, v),
                Err(e) => s.failed = Some(e.to_string()),
            }
        }
        r
    }

    /// `PUT` of the image manifest.
    pub async fn push_manifest(&self, id: &str, body: ByteStream) -> AciResult<()> {
        let expected = self.begin(id)?;
        let r = async {
            let bytes = gather(body, super::inspect::MAX_MANIFEST as usize).await?;
            let m = manifest::parse(&bytes)?;
            matches(&m, &expected).map_err(AciError::Invalid)?;
            Ok(m)
        }
        .await;
        self.end(id, r, |s, m| s.manifest = Some(m.clone()))
            .map(|_| ())
    }

    /// `PUT` of the armored detached signature.
    pub async fn push_signature(&self, id: &str, body: ByteStream) -> AciResult<()> {
        let expected = self.begin(id)?;
        let r = async {
            let bytes = gather(body, MAX_ARMORED).await?;
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| AciError::Invalid("the signature is not ASCII armor".into()))?;
            check_armor(text, "SIGNATURE")?;
            let stream: ByteStream =
                Box::pin(futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)]));
            let (digest, _) = self
                .reg
                .store_generated(&expected.name.repo, Algorithm::Sha256, stream)
                .await?;
            Ok(digest)
        }
        .await;
        self.end(id, r, |s, d| s.signature = Some(d.clone()))
            .map(|_| ())
    }

    /// `PUT` of the ACI: streamed into storage while it is decompressed,
    /// hashed and checked; refused (and not kept) if it is not a valid ACI
    /// of the expected name and labels.
    pub async fn push_aci(&self, id: &str, body: ByteStream) -> AciResult<()> {
        let expected = self.begin(id)?;
        let r = self
            .receive(&expected.name.repo, body)
            .await
            .and_then(|rcv| {
                let m = manifest::parse(&rcv.inspected.manifest)?;
                matches(&m, &expected).map_err(AciError::Invalid)?;
                Ok((rcv, m))
            });
        self.end(id, r, |s, (rcv, m)| {
            s.aci = Some(rcv.clone());
            // The ACI's own manifest is the one that counts.
            if s.manifest.as_ref().is_some_and(|pm| pm != m) {
                s.failed = Some("the manifest uploaded differs from the one inside the ACI".into());
            }
            s.manifest = Some(m.clone());
        })
        .map(|_| ())
    }

    /// Streams an ACI into a blob of `repo`. The blob is committed only if
    /// the whole stream read as a valid ACI.
    async fn receive(&self, repo: &RepoName, body: ByteStream) -> AciResult<Received> {
        let (tx, rx) = mpsc::channel::<bytes::Bytes>(4);
        let checker = tokio::task::spawn_blocking(move || inspect(ChannelReader::new(rx)));
        let verdict = std::sync::Arc::new(Mutex::new(None));
        let slot = verdict.clone();
        // The body, passed on to storage and to the checker; its end waits
        // for the checker's verdict, so a refused ACI is never committed.
        let stream = futures_util::stream::unfold(
            (body, Some(tx), Some(checker), slot),
            |(mut body, tx, mut checker, slot)| async move {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        if let Some(t) = &tx
                            && t.send(chunk.clone()).await.is_err()
                        {
                            // The checker stopped early: it failed.
                            let e = finish(checker.take(), &slot).await;
                            return Some((Err(e), (body, None, checker, slot)));
                        }
                        Some((Ok(chunk), (body, tx, checker, slot)))
                    }
                    Some(Err(e)) => Some((Err(e), (body, None, checker, slot))),
                    None => {
                        drop(tx);
                        checker.as_ref()?;
                        let e = finish(checker.take(), &slot).await;
                        let accepted =
                            matches!(*slot.lock().unwrap_or_else(|e| e.into_inner()), Some(Ok(_)));
                        if accepted {
                            return None;
                        }
                        Some((Err(e), (body, None, checker, slot)))
                    }
                }
            },
        );
        let stored = self
            .reg
            .store_generated(repo, Algorithm::Sha256, Box::pin(stream))
            .await;
        let inspected = verdict.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (stored, inspected) {
            (Ok((digest, size)), Some(Ok(inspected))) => Ok(Received {
                digest,
                size,
                inspected,
            }),
            (_, Some(Err(why))) => Err(AciError::Invalid(format!("the ACI is invalid: {why}"))),
            (Err(e), _) => Err(e.into()),
            (Ok(_), None) => Err(AciError::Internal("the ACI was not checked".into())),
        }
    }

    /// `POST` of the completion message.
    pub async fn push_complete(
        &self,
        id: &str,
        client_ok: bool,
        client_reason: Option<&str>,
    ) -> AciResult<Completed> {
        let session = {
            let mut map = self.sessions.lock();
            match map.get(id) {
                None => return Err(AciError::NotFound(format!("no push session {id}"))),
                Some(s) if s.busy => {
                    return Err(AciError::Invalid(
                        "a part of this push is still being uploaded".into(),
                    ));
                }
                Some(_) => map.remove(id).expect("present"),
            }
        };
        if !client_ok {
            return Ok(Completed::Refused(format!(
                "the client gave the push up ({}); nothing was stored",
                client_reason.unwrap_or("no reason given")
            )));
        }
        if let Some(f) = session.failed {
            return Ok(Completed::Refused(f));
        }
        let Some(aci) = session.aci else {
            return Ok(Completed::Refused("no ACI was uploaded".into()));
        };
        let m = session.manifest.expect("set with the ACI");
        let version = m.labels["version"].clone();
        let e = &session.expected;
        let image = AciImage {
            repo: e.name.repo.clone(),
            version: version.clone(),
            os: e.labels.os.clone(),
            arch: e.labels.arch.clone(),
            aci: aci.digest,
            size: aci.size,
            image_id: aci.inspected.image_id,
            signature: session.signature,
            manifest: aci.inspected.manifest,
            created_at: crate::registry::now(),
        };
        let meta = &self.reg.meta;
        meta.put_aci_image(&image).await?;
        if version != "latest" {
            // `latest` follows the last push, unless one was pushed as
            // `latest` itself.
            let literal = match meta
                .aci_image(&image.repo, "latest", &image.os, &image.arch)
                .await?
            {
                Some(cur) => {
                    manifest::parse(&cur.manifest)
                        .ok()
                        .and_then(|m| m.labels.get("version").cloned())
                        .as_deref()
                        == Some("latest")
                }
                None => false,
            };
            if !literal {
                let mut alias = image.clone();
                alias.version = "latest".into();
                meta.put_aci_image(&alias).await?;
            }
        }
        Ok(Completed::Stored(Box::new(image)))
    }
}

/// Waits for the checker and leaves its verdict in `slot`; returns the
/// error to end the stream with if it refused.
async fn finish(
    checker: Option<tokio::task::JoinHandle<std::io::Result<Inspected>>>,
    slot: &Mutex<Option<Result<Inspected, String>>>,
) -> std::io::Error {
    let verdict = match checker {
        Some(h) => match h.await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("checker: {e}")),
        },
        None => Err("no checker".into()),
    };
    let err = match &verdict {
        Ok(_) => std::io::Error::other("checked"),
        Err(e) => std::io::Error::other(e.clone()),
    };
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
    err
}
