//! Manifest formats: which media types the hub accepts, and what it reads
//! out of a manifest (the blobs and manifests it references, its subject,
//! artifact type and annotations).

use serde::Deserialize;

use super::digest::Digest;
use super::error::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// Layers of these types live outside the registry (`urls`), so a manifest
/// may name them without the registry holding them.
const FOREIGN_LAYERS: [&str; 4] = [
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// The kinds of manifest the hub stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerList,
}

impl ManifestKind {
    pub fn from_media_type(mt: &str) -> Option<ManifestKind> {
        match mt {
            OCI_MANIFEST => Some(ManifestKind::OciManifest),
            OCI_INDEX => Some(ManifestKind::OciIndex),
            DOCKER_MANIFEST => Some(ManifestKind::DockerManifest),
            DOCKER_LIST => Some(ManifestKind::DockerList),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::DockerList => DOCKER_LIST,
        }
    }

    fn is_index(self) -> bool {
        matches!(self, ManifestKind::OciIndex | ManifestKind::DockerList)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    urls: Option<Vec<String>>,
}

/// What the registry reads out of a manifest.
#[derive(Debug)]
pub struct ParsedManifest {
    pub kind: ManifestKind,
    pub blob_refs: Vec<Digest>,
    pub manifest_refs: Vec<Digest>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::ManifestInvalid(msg.into())
}

impl RawDescriptor {
    fn check(&self, what: &str) -> Result<Digest, RegistryError> {
        let digest = self
            .digest
            .as_deref()
            .ok_or_else(|| invalid(format!("{what}: missing digest")))?;
        let digest: Digest = digest
            .parse()
            .map_err(|e| invalid(format!("{what}: digest {digest:?}: {e}")))?;
        match self.size {
            Some(s) if s >= 0 => {}
            _ => return Err(invalid(format!("{what}: missing or negative size"))),
        }
        if self.media_type.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(format!("{what}: missing mediaType")));
        }
        Ok(digest)
    }

    fn is_foreign(&self) -> bool {
        self.media_type
            .as_deref()
            .is_some_and(|mt| FOREIGN_LAYERS.contains(&mt))
            && self.urls.as_ref().is_some_and(|u| !u.is_empty())
    }
}

/// Decides the manifest's kind from the request's `Content-Type` and the
/// body's own `mediaType`, and checks that the body is a well-formed
/// manifest of that kind.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, RegistryError> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    let declared = content_type
        .map(|ct| ct.split(';').next().unwrap_or(ct).trim())
        .filter(|ct| !ct.is_empty());
    if let Some(ct) = declared
        && DOCKER_SCHEMA1.contains(&ct)
    {
        return Err(RegistryError::ManifestInvalid(
            "Docker image manifest schema 1 is not supported; push schema 2 or OCI".into(),
        ));
    }
    let generic =
        declared.is_none_or(|ct| ct == "application/json" || ct == "application/octet-stream");
    let kind = match declared.and_then(ManifestKind::from_media_type) {
        Some(k) => k,
        // No telling Content-Type: the body's mediaType decides, or its shape.
        None if generic => match raw.media_type.as_deref() {
            Some(mt) => ManifestKind::from_media_type(mt)
                .ok_or_else(|| invalid(format!("unsupported manifest media type {mt:?}")))?,
            None if raw.manifests.is_some() => ManifestKind::OciIndex,
            None if raw.config.is_some() => ManifestKind::OciManifest,
            None => return Err(invalid("cannot tell the manifest's media type")),
        },
        None => {
            return Err(invalid(format!(
                "unsupported manifest media type {:?}",
                declared.unwrap_or("")
            )));
        }
    };
    if let Some(mt) = raw.media_type.as_deref() {
        if mt != kind.media_type() {
            return Err(invalid(format!(
                "mediaType {mt:?} in the manifest does not match Content-Type {:?}",
                kind.media_type()
            )));
        }
    } else if matches!(
        kind,
        ManifestKind::DockerManifest | ManifestKind::DockerList
    ) {
        return Err(invalid("Docker manifests must carry their mediaType"));
    }
    if raw.schema_version != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }

    let mut blob_refs = Vec::new();
    let mut manifest_refs = Vec::new();
    if kind.is_index() {
        let list = raw
            .manifests
            .as_ref()
            .ok_or_else(|| invalid("an index must have a manifests array"))?;
        for (i, d) in list.iter().enumerate() {
            manifest_refs.push(d.check(&format!("manifests[{i}]"))?);
        }
        if raw.config.is_some() || raw.layers.is_some() {
            return Err(invalid("an index must not have config or layers"));
        }
    } else {
        let config = raw
            .config
            .as_ref()
            .ok_or_else(|| invalid("an image manifest must have a config"))?;
        blob_refs.push(config.check("config")?);
        let layers = raw
            .layers
            .as_ref()
            .ok_or_else(|| invalid("an image manifest must have a layers array"))?;
        for (i, d) in layers.iter().enumerate() {
            let digest = d.check(&format!("layers[{i}]"))?;
            if !d.is_foreign() {
                blob_refs.push(digest);
            }
        }
        if raw.manifests.is_some() {
            return Err(invalid("an image manifest must not have a manifests array"));
        }
    }
    let subject = raw
        .subject
        .as_ref()
        .map(|s| s.check("subject"))
        .transpose()?;
    // An empty artifactType counts as none.
    let declared_type = raw.artifact_type.clone().filter(|t| !t.is_empty());
    let artifact_type = declared_type.or_else(|| {
        if kind.is_index() {
            None
        } else {
            raw.config.as_ref().and_then(|c| c.media_type.clone())
        }
    });
    let annotations = match &raw.annotations {
        Some(a) if !a.is_empty() => Some(serde_json::to_string(a).expect("JSON map serializes")),
        _ => None,
    };
    Ok(ParsedManifest {
        kind,
        blob_refs,
        manifest_refs,
        subject,
        artifact_type,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D2}","size":3}}]{extra}}}"#
        )
    }

    #[test]
    fn reads_references_and_subject() {
        let body = image(&format!(
            r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":9}},"annotations":{{"a":"b"}}"#
        ));
        let p = parse(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(p.kind, ManifestKind::OciManifest);
        assert_eq!(p.blob_refs.len(), 2);
        assert_eq!(p.subject.unwrap().as_str(), D2);
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(p.annotations.as_deref(), Some(r#"{"a":"b"}"#));
    }

    #[test]
    fn rejects_mismatch_and_garbage() {
        let body = image("");
        assert!(parse(Some(DOCKER_MANIFEST), body.as_bytes()).is_err());
        assert!(parse(Some(OCI_MANIFEST), b"{").is_err());
        assert!(parse(Some(OCI_MANIFEST), br#"{"schemaVersion":2}"#).is_err());
        assert!(parse(Some("text/plain"), body.as_bytes()).is_err());
        let bad_digest = body.replace(D2, "sha256:nothex");
        assert!(parse(Some(OCI_MANIFEST), bad_digest.as_bytes()).is_err());
        // Without Content-Type the body's mediaType decides.
        assert_eq!(
            parse(None, body.as_bytes()).unwrap().kind,
            ManifestKind::OciManifest
        );
    }

    #[test]
    fn index_names_manifests() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}}]}}"#
        );
        let p = parse(Some(OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(p.manifest_refs.len(), 1);
        assert!(p.blob_refs.is_empty());
    }
}
