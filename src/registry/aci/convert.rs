//! Docker/OCI images served as ACIs.
//!
//! The image a request names is the manifest its `version` label names as
//! a tag; a manifest list or index is resolved to the entry of the
//! requested platform, a single image must be of it (none declared is
//! linux/amd64). Docker platforms map onto appc's: `386` is `i386`,
//! `arm64` is `aarch64`, `arm` is `armv6l` with variant `v6` and `armv7l`
//! otherwise; darwin's `amd64` is `x86_64`.
//!
//! The ACI is a tar of `manifest` (see `manifest::converted`), a `rootfs`
//! directory, and the layers flattened in order below `rootfs/`, in two
//! streaming passes over the layers:
//!
//! 1. index: every path's final provider (layer and entry number). A
//!    whiteout `.wh.NAME` removes `NAME` and everything below it from the
//!    layers underneath; `.wh..wh..opq` removes everything below its
//!    directory from the layers underneath; any other `.wh..wh.` name is
//!    dropped; a non-directory replacing a directory removes what was below
//!    it. Entries of the same layer are never hidden by its own whiteouts.
//! 2. emit: the layers again, each entry written only if it is its path's
//!    final provider, with its type, mode, owner (uid/gid and names),
//!    modification time, device numbers, symlink target and content. A
//!    hard link stays a hard link when its target survives as the same
//!    entry; when the target was replaced or deleted above, the target's
//!    content is written as the first such link and the others link to it.
//!
//! Output is deterministic (same input, same bytes: fixed gzip header, no
//! timestamps of the hub's own), so the image ID is stable. Results are
//! cached in the metadata under a key of every input (the converter's
//! version, the ACI name, the labels, the source manifest); concurrent
//! first requests in one process convert once (a lock per key), and across
//! nodes the first conversion stored wins.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use tar::EntryType;
use tokio::sync::mpsc;

use super::inspect::{ChannelWriter, HashWriter, StreamReader, clean_path, decompressed, image_id};
use super::manifest::{DockerConfig, Target, converted};
use super::{Aci, AciError, AciName, AciResult, Labels};
use crate::meta::aci::AciConversion;
use crate::registry::Registry;
use crate::registry::digest::{Algorithm, Digest};
use crate::registry::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
use crate::registry::name::{RepoName, Tag};

/// Changes whenever the output of a conversion would change.
const CONVERTER: &str = "dockyard-aci-converter-1";
/// Largest image config read.
const MAX_CONFIG: u64 = 4 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct ImageIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ImageManifestDoc {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// A Docker platform as appc's os and arch, if appc has them.
pub fn appc_platform(os: &str, arch: &str, variant: Option<&str>) -> Option<(String, String)> {
    let arch = match (os, arch, variant) {
        ("linux", "amd64", _) | ("freebsd", "amd64", _) => "amd64",
        ("darwin", "amd64", _) => "x86_64",
        (_, "386", _) => "i386",
        ("linux", "arm64", _) => "aarch64",
        ("linux", "arm", Some("v6")) => "armv6l",
        ("linux", "arm", _) => "armv7l",
        ("freebsd", "arm", _) => "arm",
        ("linux", a @ ("ppc64" | "ppc64le" | "s390x"), _) => a,
        _ => return None,
    };
    Some((os.to_string(), arch.to_string()))
}

fn not_found(name: &AciName, labels: &Labels, why: &str) -> AciError {
    AciError::NotFound(format!(
        "no ACI {name} version {} for {}/{}: {why}",
        labels.version, labels.os, labels.arch
    ))
}

/// One layer to read: its blob and size.
#[derive(Clone)]
struct Layer {
    digest: Digest,
    size: u64,
}

impl Aci {
    /// The conversion of the image `name`'s tag `labels.version` names,
    /// for `labels`' platform: from the cache, or made now.
    pub(super) async fn converted(
        &self,
        name: &AciName,
        labels: &Labels,
    ) -> AciResult<AciConversion> {
        let repo = &name.repo;
        let meta = &self.reg.meta;
        let tag: Tag = labels
            .version
            .parse()
            .map_err(|_| not_found(name, labels, "the version is no tag"))?;
        let (mut digest, mut media_type, mut body) = meta
            .manifest_by_tag(repo, &tag)
            .await?
            .ok_or_else(|| not_found(name, labels, "no such tag"))?;
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            let index: ImageIndex = serde_json::from_slice(&body)
                .map_err(|e| AciError::Internal(format!("stored index {digest}: {e}")))?;
            let child = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform.as_ref().is_some_and(|p| {
                        appc_platform(&p.os, &p.architecture, p.variant.as_deref())
                            == Some((labels.os.clone(), labels.arch.clone()))
                    }) && m
                        .media_type
                        .as_deref()
                        .is_none_or(|t| t == OCI_MANIFEST || t == DOCKER_MANIFEST)
                })
                .ok_or_else(|| not_found(name, labels, "the index has no image for it"))?;
            digest = child
                .digest
                .parse()
                .map_err(|e| AciError::Internal(format!("stored index {digest}: {e}")))?;
            (media_type, body) = meta
                .manifest_by_digest(repo, &digest)
                .await?
                .ok_or_else(|| not_found(name, labels, "the index's image is missing"))?;
        }
        if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
            return Err(not_found(name, labels, "the tag names no image"));
        }
        let doc: ImageManifestDoc = serde_json::from_slice(&body)
            .map_err(|e| AciError::Internal(format!("stored manifest {digest}: {e}")))?;
        let config_digest: Digest = doc
            .config
            .digest
            .parse()
            .map_err(|e| AciError::Internal(format!("stored manifest {digest}: {e}")))?;
        let config_size = meta
            .repo_blob(repo, &config_digest)
            .await?
            .ok_or_else(|| not_found(name, labels, "the image config is missing"))?;
        if config_size > MAX_CONFIG {
            return Err(AciError::Unsupported(format!(
                "image config {config_digest} is larger than {MAX_CONFIG} bytes"
            )));
        }
        let config_bytes = super::gather(
            self.reg.read_blob(&config_digest, 0..config_size).await?,
            MAX_CONFIG as usize,
        )
        .await?;
        let config: DockerConfig = serde_json::from_slice(&config_bytes).unwrap_or_default();
        let platform = appc_platform(
            config.os.as_deref().unwrap_or("linux"),
            config.architecture.as_deref().unwrap_or("amd64"),
            config.variant.as_deref(),
        );
        if platform != Some((labels.os.clone(), labels.arch.clone())) {
            return Err(not_found(name, labels, "the image is of another platform"));
        }
        let mut layers = Vec::new();
        for l in &doc.layers {
            let d: Digest = l
                .digest
                .parse()
                .map_err(|e| AciError::Internal(format!("stored manifest {digest}: {e}")))?;
            let Some(size) = meta.repo_blob(repo, &d).await? else {
                return Err(AciError::Unsupported(format!(
                    "layer {d} is not in the hub (a foreign layer?)"
                )));
            };
            layers.push(Layer { digest: d, size });
        }

        let aci_name = name.to_string();
        let key = cache_key(&aci_name, labels, &digest);
        if let Some(c) = self.cached(repo, &key).await? {
            return Ok(c);
        }
        let lock = {
            let mut map = self.converting.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(key.clone()).or_default().clone()
        };
        let result = async {
            let _guard = lock.lock().await;
            // Someone converted it while this request waited.
            if let Some(c) = self.cached(repo, &key).await? {
                return Ok(c);
            }
            let manifest = converted(
                &Target {
                    name: &aci_name,
                    version: &labels.version,
                    os: &labels.os,
                    arch: &labels.arch,
                    repository: &format!("{}/{}", name.domain, repo),
                    manifest_digest: digest.as_str(),
                    config_digest: config_digest.as_str(),
                },
                &config,
            );
            let mtime = config
                .created
                .as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map_or(0, |t| t.timestamp().max(0) as u64);
            let (aci, size, image_id) = self
                .run_conversion(repo, layers, Bytes::from(manifest.clone()), mtime)
                .await?;
            tracing::info!(%repo, version = %labels.version, %aci, "converted an image to an ACI");
            let record = AciConversion {
                key: key.clone(),
                repo: repo.clone(),
                source: digest.clone(),
                aci,
                size,
                image_id,
                manifest: Bytes::from(manifest),
                created_at: crate::registry::now(),
            };
            Ok(self.reg.meta.put_aci_conversion(&record).await?)
        }
        .await;
        // Forget the lock once nobody else waits on it.
        let mut map = self.converting.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&lock) == 2 {
            map.remove(&key);
        }
        result
    }

    async fn cached(&self, repo: &RepoName, key: &str) -> AciResult<Option<AciConversion>> {
        match self.reg.meta.aci_conversion(key).await? {
            Some(c) if self.linked(repo, &c.aci).await? => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    /// Streams the conversion into storage; returns the ACI's digest,
    /// size and image ID.
    async fn run_conversion(
        &self,
        repo: &RepoName,
        layers: Vec<Layer>,
        manifest: Bytes,
        mtime: u64,
    ) -> AciResult<(Digest, u64, String)> {
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let reg = self.reg.clone();
        let handle = tokio::runtime::Handle::current();
        let worker = tokio::task::spawn_blocking(move || {
            let out = ChannelWriter::new(tx.clone());
            let r = write_aci(&handle, &reg, &layers, &manifest, mtime, out);
            if let Err(e) = &r {
                // Before the stream can end: the store must not commit.
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
            r
        });
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let stored = self
            .reg
            .store_generated(repo, Algorithm::Sha256, Box::pin(stream))
            .await;
        let produced = worker
            .await
            .map_err(|e| AciError::Internal(format!("converter: {e}")))?;
        let image_id = match produced {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                return Err(AciError::Unsupported(e.to_string()));
            }
            Err(e) => return Err(AciError::Internal(format!("converting: {e}"))),
        };
        let (digest, size) = stored?;
        Ok((digest, size, image_id))
    }
}

fn cache_key(name: &str, labels: &Labels, source: &Digest) -> String {
    let text = format!(
        "{CONVERTER}\n{name}\n{}\n{}\n{}\n{source}\n",
        labels.version, labels.os, labels.arch
    );
    Digest::of(Algorithm::Sha256, text.as_bytes())
        .hex()
        .to_string()
}

fn open_layer(
    handle: &tokio::runtime::Handle,
    reg: &Registry,
    layer: &Layer,
) -> io::Result<tar::Archive<Box<dyn Read + Send>>> {
    let stream = handle
        .block_on(reg.read_blob(&layer.digest, 0..layer.size))
        .map_err(|e| io::Error::other(format!("layer {}: {e}", layer.digest)))?;
    let r = decompressed(StreamReader::new(handle.clone(), stream)).map_err(|e| {
        let kind = if e.kind() == io::ErrorKind::Other {
            io::ErrorKind::Unsupported
        } else {
            e.kind()
        };
        io::Error::new(kind, format!("layer {}: {e}", layer.digest))
    })?;
    Ok(tar::Archive::new(r))
}

/// The final provider of a path: layer and entry number, and for a hard
/// link its target with the number of the entry it names in its layer.
struct Final {
    layer: usize,
    ordinal: usize,
    link: Option<(String, Option<usize>)>,
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((d, b)) => (d, b),
        None => ("", path),
    }
}

fn join(dir: &str, base: &str) -> String {
    if dir.is_empty() {
        base.to_string()
    } else {
        format!("{dir}/{base}")
    }
}

/// Removes what layers below `layer` put under `dir` (everything for the
/// root).
fn remove_below(map: &mut BTreeMap<String, Final>, dir: &str, layer: usize) {
    let doomed: Vec<String> = if dir.is_empty() {
        map.iter()
            .filter(|(_, f)| f.layer < layer)
            .map(|(k, _)| k.clone())
            .collect()
    } else {
        map.range(format!("{dir}/")..format!("{dir}0"))
            .filter(|(_, f)| f.layer < layer)
            .map(|(k, _)| k.clone())
            .collect()
    };
    for k in doomed {
        map.remove(&k);
    }
}

fn supported(t: EntryType) -> bool {
    matches!(
        t,
        EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo
    )
}

fn entry_path<R: Read>(e: &tar::Entry<'_, R>) -> Option<String> {
    let raw = e.path_bytes();
    clean_path(&String::from_utf8_lossy(&raw))
}

fn link_target<R: Read>(e: &tar::Entry<'_, R>) -> Option<String> {
    let raw = e.link_name_bytes()?;
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// Pass 1: who provides each path in the end.
fn index(
    handle: &tokio::runtime::Handle,
    reg: &Registry,
    layers: &[Layer],
) -> io::Result<BTreeMap<String, Final>> {
    let mut map: BTreeMap<String, Final> = BTreeMap::new();
    for (li, layer) in layers.iter().enumerate() {
        let mut ar = open_layer(handle, reg, layer)?;
        let mut here: HashMap<String, usize> = HashMap::new();
        for (i, e) in ar.entries()?.enumerate() {
            let e = e?;
            let Some(path) = entry_path(&e) else { continue };
            let (dir, base) = split(&path);
            if let Some(hidden) = base.strip_prefix(".wh.") {
                if hidden == ".wh..opq" {
                    remove_below(&mut map, dir, li);
                } else if !hidden.starts_with(".wh.") {
                    let target = join(dir, hidden);
                    if map.get(&target).is_some_and(|f| f.layer < li) {
                        map.remove(&target);
                    }
                    remove_below(&mut map, &target, li);
                }
                continue;
            }
            let t = e.header().entry_type();
            if !supported(t) {
                continue;
            }
            if !t.is_dir() {
                remove_below(&mut map, &path, li);
            }
            let link = if t == EntryType::Link {
                let target = link_target(&e).and_then(|l| clean_path(&l));
                match target {
                    Some(target) => {
                        let ord = here.get(&target).copied();
                        Some((target, ord))
                    }
                    None => continue,
                }
            } else {
                None
            };
            here.insert(path.clone(), i);
            map.insert(
                path,
                Final {
                    layer: li,
                    ordinal: i,
                    link,
                },
            );
        }
    }
    Ok(map)
}

/// The output header for an entry: type, mode, owner, time, devices.
fn header_from(src: &tar::Header, t: EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(src.mode().unwrap_or(0o644) & 0o7777);
    h.set_uid(src.uid().unwrap_or(0));
    h.set_gid(src.gid().unwrap_or(0));
    h.set_mtime(src.mtime().unwrap_or(0));
    if let Ok(Some(u)) = src.username() {
        let _ = h.set_username(u);
    }
    if let Ok(Some(g)) = src.groupname() {
        let _ = h.set_groupname(g);
    }
    if matches!(t, EntryType::Char | EntryType::Block) {
        let _ = h.set_device_major(src.device_major().ok().flatten().unwrap_or(0));
        let _ = h.set_device_minor(src.device_minor().ok().flatten().unwrap_or(0));
    }
    h.set_size(size);
    h
}

fn plain_header(t: EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

/// Writes the ACI (gzip-compressed) to `out`; returns its image ID.
fn write_aci(
    handle: &tokio::runtime::Handle,
    reg: &Registry,
    layers: &[Layer],
    manifest: &[u8],
    mtime: u64,
    out: ChannelWriter,
) -> io::Result<String> {
    let map = index(handle, reg, layers)?;
    // Hard links whose target did not survive as the entry they named:
    // the target's content goes to the first of them.
    let mut copies: HashMap<(usize, usize), Vec<String>> = HashMap::new();
    for (path, f) in &map {
        if let Some((target, Some(ord))) = &f.link {
            let intact = map
                .get(target)
                .is_some_and(|g| g.layer == f.layer && g.ordinal == *ord);
            if !intact {
                copies
                    .entry((f.layer, *ord))
                    .or_default()
                    .push(path.clone());
            }
        }
    }
    let carrier: HashMap<&str, &str> = copies
        .values()
        .flat_map(|links| links.iter().map(move |l| (l.as_str(), links[0].as_str())))
        .collect();

    let gz = flate2::GzBuilder::new().write(out, flate2::Compression::default());
    let mut b = tar::Builder::new(HashWriter {
        inner: gz,
        hasher: sha2::Sha512::default(),
    });
    let mut h = plain_header(EntryType::Regular, 0o644, manifest.len() as u64, mtime);
    b.append_data(&mut h, "manifest", manifest)?;
    let mut h = plain_header(EntryType::Directory, 0o755, 0, mtime);
    b.append_data(&mut h, "rootfs", io::empty())?;

    for (li, layer) in layers.iter().enumerate() {
        let mut ar = open_layer(handle, reg, layer)?;
        for (i, e) in ar.entries()?.enumerate() {
            let mut e = e?;
            let Some(path) = entry_path(&e) else { continue };
            if split(&path).1.starts_with(".wh.") {
                continue;
            }
            let t = e.header().entry_type();
            if !supported(t) {
                continue;
            }
            if let Some(links) = copies.get(&(li, i)) {
                if t.is_file() {
                    let mut h = header_from(e.header(), EntryType::Regular, e.size());
                    b.append_data(&mut h, format!("rootfs/{}", links[0]), &mut e)?;
                }
                continue;
            }
            let Some(f) = map.get(&path) else { continue };
            if f.layer != li || f.ordinal != i {
                continue;
            }
            let out_path = format!("rootfs/{path}");
            match t {
                EntryType::Link => {
                    let target = match (carrier.get(path.as_str()), &f.link) {
                        (Some(c), _) if *c == path => continue,
                        (Some(c), _) => (*c).to_string(),
                        (None, Some((target, Some(_)))) => target.clone(),
                        // A link to nothing earlier in its layer: kept only
                        // if its target is written before it.
                        (None, Some((target, None))) => match map.get(target) {
                            Some(g) if (g.layer, g.ordinal) < (li, i) && g.link.is_none() => {
                                target.clone()
                            }
                            _ => continue,
                        },
                        (None, None) => continue,
                    };
                    let mut h = header_from(e.header(), EntryType::Link, 0);
                    b.append_link(&mut h, &out_path, format!("rootfs/{target}"))?;
                }
                EntryType::Symlink => {
                    let target = link_target(&e).unwrap_or_default();
                    let mut h = header_from(e.header(), EntryType::Symlink, 0);
                    b.append_link(&mut h, &out_path, target)?;
                }
                EntryType::Regular | EntryType::Continuous => {
                    let mut h = header_from(e.header(), EntryType::Regular, e.size());
                    b.append_data(&mut h, &out_path, &mut e)?;
                }
                t => {
                    let mut h = header_from(e.header(), t, 0);
                    b.append_data(&mut h, &out_path, io::empty())?;
                }
            }
        }
    }
    let hw = b.into_inner()?;
    let id = image_id(hw.hasher);
    let mut out = hw.inner.finish()?;
    out.flush()?;
    Ok(id)
}
