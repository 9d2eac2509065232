//! OCI image layouts built offline with umoci, and reading them back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{OCI_INDEX, OCI_MANIFEST, require_tool, run, sha256_digest};

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/`).
pub struct Layout {
    pub path: PathBuf,
}

/// One file to put in an image, as its own layer.
pub struct File<'a> {
    pub path: &'a str,
    pub data: &'a [u8],
}

impl Layout {
    /// `umoci init --layout PATH`.
    pub fn init(path: &Path) -> Layout {
        let umoci = require_tool("umoci");
        run(std::process::Command::new(umoci)
            .arg("init")
            .arg("--layout")
            .arg(path));
        Layout {
            path: path.to_path_buf(),
        }
    }

    /// A layout written by someone else (e.g. `skopeo copy ... oci:DIR:TAG`).
    pub fn open(path: &Path) -> Layout {
        assert!(
            path.join("index.json").is_file(),
            "{} is not an OCI layout",
            path.display()
        );
        Layout {
            path: path.to_path_buf(),
        }
    }

    fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.path.display())
    }

    /// Creates image `tag` with one layer per file (`umoci new` + `umoci
    /// insert`) and the given platform; returns its manifest digest.
    pub fn build_image(&self, tag: &str, files: &[File<'_>], arch: &str, scratch: &Path) -> String {
        let umoci = require_tool("umoci");
        run(std::process::Command::new(&umoci).args(["new", "--image", &self.image(tag)]));
        for (i, f) in files.iter().enumerate() {
            let src = scratch.join(format!("{tag}-layer-{i}"));
            std::fs::write(&src, f.data).unwrap();
            // A fixed time stamp, so that the same file makes the same layer
            // blob in every image.
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
            std::fs::File::options()
                .write(true)
                .open(&src)
                .unwrap()
                .set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
                .unwrap();
            run(std::process::Command::new(&umoci)
                .args(["insert", "--image", &self.image(tag)])
                .arg(&src)
                .arg(f.path));
            std::fs::remove_file(&src).unwrap();
        }
        run(std::process::Command::new(&umoci).args([
            "config",
            "--image",
            &self.image(tag),
            "--os",
            "linux",
            "--architecture",
            arch,
            "--config.cmd",
            "/bin/true",
            "--config.label",
            &format!("org.example.dockyard.test={tag}"),
        ]));
        let d = self.descriptor(tag);
        assert_eq!(d["mediaType"], OCI_MANIFEST);
        d["digest"].as_str().unwrap().to_string()
    }

    /// Adds tag `tag` pointing at a new OCI index made of the manifests of
    /// `tags` (each with its config's platform); returns the index digest.
    pub fn add_index(&self, tag: &str, tags: &[&str]) -> String {
        let mut manifests = Vec::new();
        for t in tags {
            let d = self.descriptor(t);
            let manifest = self.json_blob(d["digest"].as_str().unwrap());
            let config = self.json_blob(manifest["config"]["digest"].as_str().unwrap());
            manifests.push(json!({
                "mediaType": d["mediaType"],
                "digest": d["digest"],
                "size": d["size"],
                "platform": {"architecture": config["architecture"], "os": config["os"]},
            }));
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        let bytes = serde_json::to_vec(&index).unwrap();
        let digest = sha256_digest(&bytes);
        std::fs::write(self.blob_path(&digest), &bytes).unwrap();
        let mut top = self.top_index();
        top["manifests"].as_array_mut().unwrap().push(json!({
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }));
        std::fs::write(
            self.path.join("index.json"),
            serde_json::to_vec(&top).unwrap(),
        )
        .unwrap();
        digest
    }

    pub fn top_index(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.path.join("index.json")).unwrap()).unwrap()
    }

    /// The descriptor `index.json` holds for `tag`.
    pub fn descriptor(&self, tag: &str) -> Value {
        let top = self.top_index();
        let found: Vec<&Value> = top["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "tag {tag} in {}: {top}",
            self.path.display()
        );
        found[0].clone()
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest.split_once(':').expect("digest");
        self.path.join("blobs").join(alg).join(hex)
    }

    /// A blob's bytes, checked against its digest.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let bytes = std::fs::read(self.blob_path(digest))
            .unwrap_or_else(|e| panic!("blob {digest} in {}: {e}", self.path.display()));
        assert_eq!(
            sha256_digest(&bytes),
            digest,
            "blob file does not match its digest"
        );
        bytes
    }

    pub fn json_blob(&self, digest: &str) -> Value {
        serde_json::from_slice(&self.blob(digest)).unwrap()
    }

    /// Every blob reachable from `digest` (itself included), each read and
    /// checked against its digest.
    pub fn closure(&self, digest: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.walk(digest, &mut out);
        out
    }

    fn walk(&self, digest: &str, out: &mut BTreeSet<String>) {
        out.insert(digest.to_string());
        let v = self.json_blob(digest);
        if let Some(children) = v["manifests"].as_array() {
            for c in children {
                self.walk(c["digest"].as_str().unwrap(), out);
            }
        } else {
            let config = v["config"]["digest"].as_str().unwrap();
            self.blob(config);
            out.insert(config.to_string());
            for l in v["layers"].as_array().unwrap() {
                let d = l["digest"].as_str().unwrap();
                self.blob(d);
                out.insert(d.to_string());
            }
        }
    }

    /// Layer digests of the image manifest `digest`.
    pub fn layers(&self, digest: &str) -> Vec<String> {
        self.json_blob(digest)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }
}
