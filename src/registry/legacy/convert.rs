//! The conversions between v1 image chains and v2 images, as pure
//! functions: same input, same bytes.
//!
//! **v1 → v2** ([`v2_config`], [`v2_manifest`]), for a chain root first:
//!
//! - config (`application/vnd.docker.container.image.v1+json`):
//!   `architecture` and `os` of the top image (default `amd64`/`linux`);
//!   `config`, `container_config`, `created`, `author`, `docker_version` of
//!   the top image where present; `history` with one entry per v1 image
//!   (`created`, `created_by` = its `container_config.Cmd` joined with
//!   spaces, `author`, `comment`, each where present); `rootfs` of type
//!   `layers` whose `diff_ids` are the SHA-256 of each uncompressed layer.
//! - manifest: Docker schema 2 naming the config and each image's layer
//!   blob, `…diff.tar.gzip` for gzip layers and `…diff.tar` for plain ones,
//!   with their sizes.
//!
//! **v2 → v1** ([`v1_chain`]): one v1 image per layer, root first. Image
//! `i` has `architecture` and `os` of the config; `created`, `author` and
//! `comment` of the `i`-th history entry that is not an empty layer (when
//! the history has one per layer; else `created` of the config), and
//! `container_config: {"Cmd": [created_by]}`; `Size` is the layer blob's
//! size (compressed: the uncompressed size is not known without reading
//! the layer). The top image gets the config's `config`,
//! `container_config`, `created`, `author`, `docker_version` and
//! `container` where present. Ids: with `J` the image's JSON without `id`
//! and `parent` (serialized compactly), `id = sha256(layer digest + " " +
//! parent id (empty for the root) + " " + sha256(J))` in hex, and for the
//! top image `sha256(that + " " + config digest)`: so an image's id stands
//! for its JSON, its layer and everything below it.

use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::layer::{GZIP_LAYER, TAR_LAYER};
use super::{LegacyError, LegacyResult};
use crate::registry::digest::Digest;
use crate::registry::manifest::DOCKER_MANIFEST;

pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// One v1 image of a chain as the v1 → v2 conversion reads it.
pub struct ChainLink<'a> {
    /// The image JSON (an object).
    pub json: &'a Value,
    pub layer: &'a Digest,
    pub size: u64,
    pub diff_id: &'a Digest,
    /// `GZIP_LAYER` or `TAR_LAYER`.
    pub media_type: &'a str,
}

fn copy(from: &Value, to: &mut Map<String, Value>, key: &str) {
    if let Some(v) = from.get(key)
        && !v.is_null()
    {
        to.insert(key.to_string(), v.clone());
    }
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The schema 2 config of a chain (root first).
pub fn v2_config(chain: &[ChainLink<'_>]) -> Vec<u8> {
    let top = chain.last().map(|l| l.json).unwrap_or(&Value::Null);
    let mut c = Map::new();
    c.insert(
        "architecture".into(),
        json!(text(top, "architecture").unwrap_or("amd64")),
    );
    c.insert("os".into(), json!(text(top, "os").unwrap_or("linux")));
    for key in [
        "config",
        "container_config",
        "created",
        "author",
        "docker_version",
    ] {
        copy(top, &mut c, key);
    }
    let history: Vec<Value> = chain
        .iter()
        .map(|l| {
            let mut h = Map::new();
            copy(l.json, &mut h, "created");
            let cmd: Option<Vec<&str>> = l
                .json
                .get("container_config")
                .and_then(|cc| cc.get("Cmd"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect());
            if let Some(cmd) = cmd
                && !cmd.is_empty()
            {
                h.insert("created_by".into(), json!(cmd.join(" ")));
            }
            if let Some(a) = text(l.json, "author").filter(|a| !a.is_empty()) {
                h.insert("author".into(), json!(a));
            }
            copy(l.json, &mut h, "comment");
            Value::Object(h)
        })
        .collect();
    c.insert("history".into(), Value::Array(history));
    c.insert(
        "rootfs".into(),
        json!({
            "type": "layers",
            "diff_ids": chain.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>(),
        }),
    );
    serde_json::to_vec(&Value::Object(c)).expect("JSON values serialize")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    size: u64,
    digest: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SchemaTwo<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

/// The schema 2 manifest of a chain (root first) and its config.
pub fn v2_manifest(config: &Digest, config_size: u64, chain: &[ChainLink<'_>]) -> Vec<u8> {
    let m = SchemaTwo {
        schema_version: 2,
        media_type: DOCKER_MANIFEST,
        config: Descriptor {
            media_type: DOCKER_CONFIG,
            size: config_size,
            digest: config.as_str(),
        },
        layers: chain
            .iter()
            .map(|l| Descriptor {
                media_type: l.media_type,
                size: l.size,
                digest: l.layer.as_str(),
            })
            .collect(),
    };
    serde_json::to_vec(&m).expect("manifests serialize")
}

/// A layer of a v2 image manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct V2Layer {
    pub digest: Digest,
    pub size: u64,
    /// `GZIP_LAYER` or `TAR_LAYER`.
    pub media_type: &'static str,
}

fn invalid(msg: impl Into<String>) -> LegacyError {
    LegacyError::Invalid(msg.into())
}

/// The config digest and layers of a Docker schema 2 or OCI image
/// manifest, refusing layers a v1 client cannot read.
pub fn v2_layers(manifest: &[u8]) -> LegacyResult<(Digest, Vec<V2Layer>)> {
    let v: Value =
        serde_json::from_slice(manifest).map_err(|e| invalid(format!("manifest: {e}")))?;
    let digest = |d: &Value, what: &str| -> LegacyResult<Digest> {
        d.get("digest")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid(format!("manifest: {what} has no valid digest")))
    };
    let config = digest(
        v.get("config")
            .ok_or_else(|| invalid("manifest has no config"))?,
        "config",
    )?;
    let mut layers = Vec::new();
    for (i, l) in v
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("manifest has no layers"))?
        .iter()
        .enumerate()
    {
        let mt = text(l, "mediaType").unwrap_or("");
        let media_type = match mt {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.oci.image.layer.v1.tar+gzip" => GZIP_LAYER,
            "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.oci.image.layer.v1.tar" => TAR_LAYER,
            "application/vnd.oci.image.layer.v1.tar+zstd" => {
                return Err(invalid(format!(
                    "layer {i} is zstd-compressed: v1 clients read only gzip or uncompressed layers"
                )));
            }
            other => {
                return Err(invalid(format!(
                    "layer {i} has media type {other:?}: v1 clients read only gzip or uncompressed tar layers the hub stores"
                )));
            }
        };
        let size = l
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid(format!("manifest: layer {i} has no size")))?;
        layers.push(V2Layer {
            digest: digest(l, &format!("layer {i}"))?,
            size,
            media_type,
        });
    }
    if layers.is_empty() {
        return Err(invalid(
            "the image has no layers: a v1 image needs at least one",
        ));
    }
    Ok((config, layers))
}

/// A v1 image synthesized from a v2 image.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthImage {
    pub id: String,
    pub parent: Option<String>,
    pub json: Vec<u8>,
    pub layer: V2Layer,
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The v1 chain (root first) of a v2 image: its config digest and bytes,
/// and its layers.
pub fn v1_chain(
    config_digest: &Digest,
    config: &[u8],
    layers: &[V2Layer],
) -> LegacyResult<Vec<SynthImage>> {
    let c: Value = serde_json::from_slice(config).map_err(|e| invalid(format!("config: {e}")))?;
    if !c.is_object() {
        return Err(invalid("config is not a JSON object"));
    }
    let history: Vec<&Value> = c
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter(|e| e.get("empty_layer").and_then(Value::as_bool) != Some(true))
                .collect()
        })
        .unwrap_or_default();
    let history = (history.len() == layers.len()).then_some(history);
    let mut out: Vec<SynthImage> = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let top = i + 1 == layers.len();
        let h = history.as_ref().map(|h| h[i]);
        let mut j = Map::new();
        copy(&c, &mut j, "architecture");
        copy(&c, &mut j, "os");
        match h {
            Some(h) => {
                copy(h, &mut j, "created");
                copy(h, &mut j, "author");
                copy(h, &mut j, "comment");
                if let Some(by) = text(h, "created_by") {
                    j.insert("container_config".into(), json!({ "Cmd": [by] }));
                }
            }
            None => copy(&c, &mut j, "created"),
        }
        if top {
            for key in [
                "config",
                "container_config",
                "created",
                "author",
                "docker_version",
                "container",
            ] {
                copy(&c, &mut j, key);
            }
        }
        j.insert("Size".into(), json!(layer.size));
        let parent = out.last().map(|p| p.id.clone());
        let body = serde_json::to_vec(&Value::Object(j.clone())).expect("JSON serializes");
        let mut id = sha256_hex(
            format!(
                "{} {} {}",
                layer.digest,
                parent.as_deref().unwrap_or(""),
                sha256_hex(&body)
            )
            .as_bytes(),
        );
        if top {
            id = sha256_hex(format!("{id} {config_digest}").as_bytes());
        }
        j.insert("id".into(), json!(id));
        if let Some(p) = &parent {
            j.insert("parent".into(), json!(p));
        }
        out.push(SynthImage {
            id,
            parent,
            json: serde_json::to_vec(&Value::Object(j)).expect("JSON serializes"),
            layer: layer.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    fn d(s: &str) -> Digest {
        Digest::of(Algorithm::Sha256, s.as_bytes())
    }

    #[test]
    fn v2_to_v1_is_deterministic_and_chained() {
        let config = br#"{"architecture":"arm64","os":"linux","created":"2024-01-01T00:00:00Z",
            "config":{"Cmd":["/bin/sh"]},"history":[{"created":"c0","created_by":"ADD a /"},
            {"created":"cx","created_by":"ENV x=1","empty_layer":true},
            {"created":"c1","created_by":"RUN b","author":"me"}],
            "rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000","sha256:1111111111111111111111111111111111111111111111111111111111111111"]}}"#;
        let layers = vec![
            V2Layer {
                digest: d("l0"),
                size: 10,
                media_type: GZIP_LAYER,
            },
            V2Layer {
                digest: d("l1"),
                size: 20,
                media_type: TAR_LAYER,
            },
        ];
        let a = v1_chain(&d("cfg"), config, &layers).unwrap();
        let b = v1_chain(&d("cfg"), config, &layers).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].parent.as_deref(), Some(a[0].id.as_str()));
        let j0: Value = serde_json::from_slice(&a[0].json).unwrap();
        let j1: Value = serde_json::from_slice(&a[1].json).unwrap();
        assert_eq!(j0["id"], a[0].id);
        assert_eq!(j0["container_config"]["Cmd"][0], "ADD a /");
        assert!(j0.get("parent").is_none());
        assert_eq!(j1["parent"], a[0].id);
        assert_eq!(j1["config"]["Cmd"][0], "/bin/sh");
        assert_eq!(j1["architecture"], "arm64");
        assert_eq!(j1["Size"], 20);
        // Another config: same base layer, same base JSON: same base id;
        // another top.
        let other = v1_chain(&d("cfg2"), config, &layers).unwrap();
        assert_eq!(other[0].id, a[0].id);
        assert_ne!(other[1].id, a[1].id);
    }

    #[test]
    fn v1_to_v2_config_and_manifest() {
        let root = json!({"id":"r","created":"t0","container_config":{"Cmd":["/bin/sh","-c","#(nop) ADD x"]}});
        let top = json!({"id":"t","parent":"r","created":"t1","architecture":"amd64","os":"linux",
            "config":{"Cmd":["sh"]},"container_config":{"Cmd":["/bin/sh","-c","echo hi"]},"author":"a","docker_version":"1.6.2"});
        let (l0, l1, d0, d1) = (d("l0"), d("l1"), d("d0"), d("d1"));
        let chain = [
            ChainLink {
                json: &root,
                layer: &l0,
                size: 5,
                diff_id: &d0,
                media_type: GZIP_LAYER,
            },
            ChainLink {
                json: &top,
                layer: &l1,
                size: 6,
                diff_id: &d1,
                media_type: TAR_LAYER,
            },
        ];
        let c = v2_config(&chain);
        assert_eq!(c, v2_config(&chain));
        let v: Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["rootfs"]["diff_ids"], json!([d0.as_str(), d1.as_str()]));
        assert_eq!(v["history"][0]["created_by"], "/bin/sh -c #(nop) ADD x");
        assert_eq!(v["history"][1]["author"], "a");
        assert_eq!(v["config"]["Cmd"][0], "sh");
        assert_eq!(v["docker_version"], "1.6.2");
        let m = v2_manifest(&d("c"), c.len() as u64, &chain);
        let (config, layers) = v2_layers(&m).unwrap();
        assert_eq!(config, d("c"));
        assert_eq!(layers[0].media_type, GZIP_LAYER);
        assert_eq!(layers[1].media_type, TAR_LAYER);
        assert_eq!(layers[1].size, 6);
    }

    #[test]
    fn refuses_what_v1_cannot_read() {
        let m = json!({"schemaVersion":2,"config":{"digest":d("c").as_str(),"size":1},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":d("l").as_str(),"size":1}]});
        let e = v2_layers(m.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("zstd"), "{e}");
        let m = json!({"schemaVersion":2,"config":{"digest":d("c").as_str(),"size":1},"layers":[]});
        assert!(v2_layers(m.to_string().as_bytes()).is_err());
    }
}
