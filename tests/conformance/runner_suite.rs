//! Port of the newer, non-ginkgo OCI conformance runner (`conformance/run.go`,
//! `api.go`, `testdata.go`, `config.go` of opencontainers/distribution-spec):
//! the one `go test` runs today through `legacy_test.go`, mapping the legacy
//! `OCI_TEST_*` variables onto its config. This port runs it with the
//! defaults of spec version 1.1 and every workflow on: ping, pull, push,
//! blob mount (incl. anonymous), tag list/delete, manifest/blob delete (all
//! "atomic"), referrers, and the sha512 data. Disabled by default in 1.1
//! and so not run here: upload cancel, `?tag=` params, required
//! Docker-Content-Digest headers, sparse manifests (see the extra tests in
//! conformance.rs for upload cancel).
//!
//! Results are recorded per check as `Runner / <path>`; an API the registry
//! answers as "unsupported" (the suite's `errRegUnsupported`, reported as
//! Skip, which does not fail the Go run) is recorded as a warning.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use reqwest::Url;

use crate::support::*;

const CHUNK_MIN: i64 = 1024;

/// (name, Range header, Some((body, Content-Range, Content-Range with `*`))
/// for a 206, None for a 416)
type RangeCase<'a> = (&'a str, &'a str, Option<(Vec<u8>, String, String)>);
const MT_EXAMPLE_CONF1: &str = "application/vnd.example.oci.conformance.v1";
const MT_EXAMPLE_CONF2: &str = "application/vnd.example.oci.conformance.v2";

// ---------------------------------------------------------------------------
// results
// ---------------------------------------------------------------------------

/// `errAPITestFail` / `errRegUnsupported` / `errAPITestSkip`.
#[derive(Debug)]
pub enum E {
    Fail(String),
    Unsupported(String),
    Skip(String),
}

impl From<String> for E {
    fn from(s: String) -> Self {
        E::Fail(s)
    }
}
impl From<&str> for E {
    fn from(s: &str) -> Self {
        E::Fail(s.to_string())
    }
}

type R<T = ()> = Result<T, E>;

#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub expect_bad_digest: bool,
    pub put_last_chunk: bool,
    pub out_of_order: bool,
}

fn exp_status(r: &Resp, codes: &[u16]) -> Result<(), String> {
    expect_status(r, codes)
}

/// `apiExpectHeader`: with an empty value the header must be present,
/// otherwise one of its values must equal `val` exactly.
fn exp_header(r: &Resp, k: &str, val: &str) -> Result<(), String> {
    let cur = r.header_values(k);
    if val.is_empty() {
        if cur.is_empty() {
            return Err(format!("missing header {k:?}: {}", r.describe()));
        }
    } else if !cur.iter().any(|c| c == val) {
        return Err(format!(
            "header value mismatch for {k:?}, expected {val:?}, received {cur:?}: {}",
            r.describe()
        ));
    }
    Ok(())
}

fn exp_body(r: &Resp, want: &[u8]) -> Result<(), String> {
    if let Some(e) = &r.body_err {
        return Err(format!("failed to read body: {e}: {}", r.describe()));
    }
    if r.body == want {
        Ok(())
    } else {
        Err(format!(
            "body contents mismatch, expected {} bytes (sha256 {}), received {} bytes (sha256 {}): {}",
            want.len(),
            sha256(want),
            r.body.len(),
            sha256(&r.body),
            r.describe()
        ))
    }
}

/// Collects every failing expectation of one request, like `api.Do`.
fn all(checks: Vec<Result<(), String>>) -> Result<(), String> {
    let errs: Vec<String> = checks.into_iter().filter_map(|c| c.err()).collect();
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n      AND "))
    }
}

/// `apiReturnHeader`: only overwrite when the response has the header.
fn take(r: &Resp, k: &str, into: &mut String) {
    let v = r.header(k);
    if !v.is_empty() {
        *into = v;
    }
}

fn resolve(base: &Url, loc: &str) -> Result<Url, String> {
    base.join(loc)
        .map_err(|e| format!("could not parse location header {loc:?}: {e}"))
}

/// `qa := u.Query(); qa.Set(k, v); u.RawQuery = qa.Encode()`.
fn set_query(u: &mut Url, k: &str, v: &str) {
    let mut q = Values::parse(u.query().unwrap_or(""));
    q.set(k, v);
    let enc = q.encode();
    u.set_query(if enc.is_empty() { None } else { Some(&enc) });
}

fn add_query(u: &mut Url, k: &str, v: &str) {
    let mut q = Values::parse(u.query().unwrap_or(""));
    q.add(k, v);
    let enc = q.encode();
    u.set_query(if enc.is_empty() { None } else { Some(&enc) });
}

fn h(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

/// `detectMediaType`: the manifest's `mediaType`, defaulting to an image.
fn detect_media_type(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| MT_OCI_IMAGE.to_string())
}

fn detect_subject(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("subject").cloned())
        .filter(|s| s.is_object())
        .map(|s| {
            s.get("digest")
                .and_then(|d| d.as_str())
                .unwrap_or("")
                .to_string()
        })
}

// ---------------------------------------------------------------------------
// api.go
// ---------------------------------------------------------------------------

pub struct Api<'a> {
    pub http: &'a Http,
    pub reg: String,
}

impl Api<'_> {
    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("{}{}", self.reg, path)).expect("url")
    }

    fn send(
        &self,
        method: &str,
        u: &Url,
        headers: Vec<(String, String)>,
        body: ReqBody,
    ) -> Result<Resp, String> {
        self.http.send(method, u.as_str(), &headers, body)
    }

    fn verify_digest(&self, resp: Option<&Resp>, dig: &str) -> Result<(), String> {
        let Some(resp) = resp else { return Ok(()) };
        let got = resp.header("Docker-Content-Digest");
        if !got.is_empty() && !dig.is_empty() && got != dig {
            return Err(format!(
                "Docker-Content-Digest header value expected {dig:?}, received {got:?}: {}",
                resp.describe()
            ));
        }
        Ok(())
    }

    /// `BlobVerifyLocation`: GET the returned location, expect 200 + the blob.
    fn verify_location(&self, u: &Url, loc: &str, body: &[u8]) -> Result<(), String> {
        if loc.is_empty() {
            return Err("location header missing".into());
        }
        let u = resolve(u, loc)?;
        let r = self.send("GET", &u, vec![], ReqBody::None)?;
        all(vec![exp_body(&r, body), exp_status(&r, &[200])])
            .map_err(|e| format!("failed to verify returned location: {e}"))
    }

    pub fn blob_delete(&self, repo: &str, dig: &str) -> R {
        let u = self.url(&format!("/v2/{repo}/blobs/{dig}"));
        let r = self.send("DELETE", &u, vec![], ReqBody::None)?;
        exp_status(&r, &[202, 404, 405]).map_err(|e| format!("blob delete failed: {e}"))?;
        if r.status == 405 {
            return Err(E::Unsupported(format!(
                "registry returned status 405: {}",
                r.describe()
            )));
        }
        Ok(())
    }

    pub fn blob_head_req(&self, repo: &str, dig: &str) -> Result<Resp, String> {
        let u = self.url(&format!("/v2/{repo}/blobs/{dig}"));
        self.send("HEAD", &u, vec![], ReqBody::None)
    }

    pub fn blob_get_req(
        &self,
        repo: &str,
        dig: &str,
        headers: Vec<(String, String)>,
    ) -> Result<Resp, String> {
        let u = self.url(&format!("/v2/{repo}/blobs/{dig}"));
        self.send("GET", &u, headers, ReqBody::None)
    }

    /// `BlobGetExistsFull`
    pub fn blob_get_exists(&self, repo: &str, dig: &str, val: Option<&[u8]>) -> R {
        let r = self.blob_get_req(repo, dig, vec![])?;
        let mut c = vec![exp_status(&r, &[200])];
        if let Some(val) = val
            && (!val.is_empty() || dig == sha256(b""))
        {
            c.push(exp_body(&r, val));
            c.push(exp_header(&r, "Content-Length", &val.len().to_string()));
        }
        c.push(self.verify_digest(Some(&r), dig));
        all(c).map_err(|e| format!("blob get failed: {e}"))?;
        Ok(())
    }

    /// `BlobHeadExists`
    pub fn blob_head_exists(&self, repo: &str, dig: &str, val: Option<&[u8]>) -> R {
        let r = self.blob_head_req(repo, dig)?;
        let mut c = vec![exp_status(&r, &[200]), exp_body(&r, b"")];
        if let Some(val) = val
            && (!val.is_empty() || dig == sha256(b""))
        {
            c.push(exp_header(&r, "Content-Length", &val.len().to_string()));
        }
        c.push(self.verify_digest(Some(&r), dig));
        all(c).map_err(|e| format!("blob head failed: {e}"))?;
        Ok(())
    }

    /// `BlobMount` (source "" = anonymous mount).
    pub fn blob_mount(&self, repo: &str, source: &str, dig: &str, body: &[u8]) -> R {
        let mut u = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        set_query(&mut u, "mount", dig);
        if !source.is_empty() {
            set_query(&mut u, "from", source);
        }
        let mut loc = String::new();
        let r = self.send("POST", &u, vec![], ReqBody::None)?;
        take(&r, "Location", &mut loc);
        exp_status(&r, &[201, 202]).map_err(|e| format!("blob post failed: {e}"))?;
        if loc.is_empty() {
            return Err(format!("blob post did not return a location: {}", r.describe()).into());
        }
        let mut unsupported = None;
        let mut resp = r.clone();
        if r.status == 202 {
            u = resolve(&u, &loc)?;
            set_query(&mut u, "digest", dig);
            let p = self.send(
                "PUT",
                &u,
                vec![h("Content-Type", MT_OCTET)],
                ReqBody::Sized(body.to_vec()),
            )?;
            take(&p, "Location", &mut loc);
            exp_status(&p, &[201]).map_err(|e| format!("blob put failed: {e}"))?;
            unsupported = Some(format!(
                "registry returned status 202, fell back to blob POST+PUT: {}",
                r.describe()
            ));
            resp = p;
        }
        self.verify_digest(Some(&resp), dig)?;
        self.verify_location(&u, &loc, body)?;
        match unsupported {
            Some(m) => Err(E::Unsupported(m)),
            None => Ok(()),
        }
    }

    /// `BlobPatchChunked`. `min_out` gets any OCI-Chunk-Min-Length seen.
    pub fn blob_patch_chunked(
        &self,
        repo: &str,
        dig: &str,
        body: &[u8],
        fl: &Flags,
        min_out: &mut String,
    ) -> R {
        let mut u = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let mut min_str = String::new();
        let mut loc = String::new();
        let mut resp: Option<Resp> = None;
        let r = self.send("POST", &u, vec![], ReqBody::Sized(vec![]))?;
        take(&r, "OCI-Chunk-Min-Length", &mut min_str);
        take(&r, "OCI-Chunk-Min-Length", min_out);
        take(&r, "Location", &mut loc);
        exp_status(&r, &[202]).map_err(|e| format!("blob post failed: {e}"))?;
        let n = body.len() as i64;
        let mut chunk = n / 3 + 1;
        if !min_str.is_empty() {
            let m: i64 = min_str.trim().parse().map_err(|e| {
                format!("parsing OCI-Chunk-Min-Length size {min_str:?} failed: {e}")
            })?;
            if m > chunk {
                chunk = m;
            }
        }
        if chunk < CHUNK_MIN {
            chunk = CHUNK_MIN;
        }
        if chunk > n {
            chunk = n;
        }
        let mut last: i64 = -1;
        while last < n - 1 {
            if fl.out_of_order {
                if loc.is_empty() {
                    return Err("blob request did not return a location".into());
                }
                u = resolve(&u, &loc)?;
                let mut bad_start = last + 1 + chunk;
                if bad_start >= n {
                    bad_start = 0;
                }
                let bad_last = (bad_start + chunk - 1).min(n - 1);
                let mut method = "PATCH";
                if fl.put_last_chunk && bad_last == n - 1 {
                    method = "PUT";
                    set_query(&mut u, "digest", dig);
                }
                let r = self.send(
                    method,
                    &u,
                    vec![
                        h("Content-Type", MT_OCTET),
                        h("Content-Range", &format!("{bad_start}-{bad_last}")),
                    ],
                    ReqBody::Sized(body[bad_start as usize..=bad_last as usize].to_vec()),
                )?;
                take(&r, "Location", &mut loc);
                take(&r, "OCI-Chunk-Min-Length", min_out);
                exp_status(&r, &[416]).map_err(|e| format!("blob out of order chunk: {e}"))?;
                // recover with a GET request to find the new location/range
                let mut range = String::new();
                let g = self.send("GET", &u, vec![], ReqBody::None)?;
                take(&g, "Location", &mut loc);
                take(&g, "Range", &mut range);
                exp_status(&g, &[204])
                    .map_err(|e| format!("blob chunked upload get request: {e}"))?;
                let Some(rest) = range.strip_prefix("0-") else {
                    return Err(format!(
                        "content-range header is missing the 0- prefix: {range:?}: {}",
                        g.describe()
                    )
                    .into());
                };
                let rest = rest.strip_prefix('+').unwrap_or(rest);
                let rl: i64 = rest.parse().map_err(|_| {
                    format!(
                        "content-range header could not be parsed: {rest:?}: {}",
                        g.describe()
                    )
                })?;
                if last >= 0 && rl != last {
                    return Err(format!(
                        "content-range unexpected, received {rest:?}, expected \"0-{last}\": {}",
                        g.describe()
                    )
                    .into());
                }
            }
            if loc.is_empty() {
                return Err("blob request did not return a location".into());
            }
            u = resolve(&u, &loc)?;
            let start = last + 1;
            last = (start + chunk - 1).min(n - 1);
            let headers = vec![
                h("Content-Type", MT_OCTET),
                h("Content-Range", &format!("{start}-{last}")),
            ];
            let part = ReqBody::Sized(body[start as usize..=last as usize].to_vec());
            if fl.put_last_chunk && last == n - 1 {
                set_query(&mut u, "digest", dig);
                let r = self.send("PUT", &u, headers, part)?;
                take(&r, "OCI-Chunk-Min-Length", min_out);
                if fl.expect_bad_digest {
                    exp_status(&r, &[400]).map_err(|e| format!("blob patch failed: {e}"))?;
                } else {
                    take(&r, "Location", &mut loc);
                    exp_status(&r, &[201]).map_err(|e| format!("blob patch failed: {e}"))?;
                    resp = Some(r);
                }
            } else {
                let r = self.send("PATCH", &u, headers, part)?;
                take(&r, "Location", &mut loc);
                take(&r, "OCI-Chunk-Min-Length", min_out);
                exp_status(&r, &[202]).map_err(|e| format!("blob patch failed: {e}"))?;
            }
        }
        if !fl.put_last_chunk {
            if loc.is_empty() {
                return Err("blob patch did not return a location".into());
            }
            u = resolve(&u, &loc)?;
            set_query(&mut u, "digest", dig);
            let r = self.send(
                "PUT",
                &u,
                vec![h("Content-Type", MT_OCTET)],
                ReqBody::Sized(vec![]),
            )?;
            take(&r, "OCI-Chunk-Min-Length", min_out);
            if fl.expect_bad_digest {
                exp_status(&r, &[400]).map_err(|e| format!("blob put failed: {e}"))?;
            } else {
                take(&r, "Location", &mut loc);
                exp_status(&r, &[201]).map_err(|e| format!("blob put failed: {e}"))?;
                resp = Some(r);
            }
        }
        if fl.expect_bad_digest {
            return Ok(());
        }
        self.verify_digest(resp.as_ref(), dig)?;
        self.verify_location(&u, &loc, body)?;
        Ok(())
    }

    /// `BlobPatchStream`
    pub fn blob_patch_stream(&self, repo: &str, dig: &str, body: &[u8], fl: &Flags) -> R {
        let mut u = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let mut loc = String::new();
        let r = self.send("POST", &u, vec![], ReqBody::Sized(vec![]))?;
        take(&r, "Location", &mut loc);
        exp_status(&r, &[202]).map_err(|e| format!("blob post failed: {e}"))?;
        if loc.is_empty() {
            return Err("blob post did not return a location".into());
        }
        u = resolve(&u, &loc)?;
        let r = self.send(
            "PATCH",
            &u,
            vec![h("Content-Type", MT_OCTET)],
            ReqBody::Chunked(body.to_vec()),
        )?;
        take(&r, "Location", &mut loc);
        exp_status(&r, &[202]).map_err(|e| format!("blob patch failed: {e}"))?;
        if loc.is_empty() {
            return Err("blob patch did not return a location".into());
        }
        u = resolve(&u, &loc)?;
        set_query(&mut u, "digest", dig);
        let r = self.send(
            "PUT",
            &u,
            vec![h("Content-Type", MT_OCTET)],
            ReqBody::Sized(vec![]),
        )?;
        take(&r, "Location", &mut loc);
        if fl.expect_bad_digest {
            exp_status(&r, &[400]).map_err(|e| format!("blob put failed: {e}"))?;
            return Ok(());
        }
        all(vec![exp_status(&r, &[201]), exp_header(&r, "Location", "")])
            .map_err(|e| format!("blob put failed: {e}"))?;
        self.verify_digest(Some(&r), dig)?;
        self.verify_location(&u, &loc, body)?;
        Ok(())
    }

    /// `BlobPostCancel`
    pub fn blob_post_cancel(&self, repo: &str) -> R {
        let u = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let mut loc = String::new();
        let r = self.send("POST", &u, vec![], ReqBody::None)?;
        take(&r, "Location", &mut loc);
        exp_status(&r, &[202]).map_err(|e| format!("blob post failed: {e}"))?;
        if loc.is_empty() {
            return Err("blob post did not return a location".into());
        }
        let u = resolve(&u, &loc)?;
        let r = self.send("DELETE", &u, vec![], ReqBody::None)?;
        exp_status(&r, &[204]).map_err(|e| format!("blob cancel failed: {e}"))?;
        Ok(())
    }

    /// `BlobPostOnly`
    pub fn blob_post_only(&self, repo: &str, dig: &str, body: &[u8], fl: &Flags) -> R {
        let mut u = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        set_query(&mut u, "digest", dig);
        let mut loc = String::new();
        let r = self.send(
            "POST",
            &u,
            vec![h("Content-Type", MT_OCTET)],
            ReqBody::Sized(body.to_vec()),
        )?;
        take(&r, "Location", &mut loc);
        if fl.expect_bad_digest {
            exp_status(&r, &[400, 202]).map_err(|e| format!("blob post failed: {e}"))?;
        } else {
            all(vec![
                exp_status(&r, &[201, 202]),
                exp_header(&r, "Location", ""),
            ])
            .map_err(|e| format!("blob post failed: {e}"))?;
        }
        if r.status == 202 {
            u = resolve(&u, &loc)
                .map_err(|e| format!("blob post could not parse location header: {e}"))?;
            set_query(&mut u, "digest", dig);
            let p = self.send(
                "PUT",
                &u,
                vec![h("Content-Type", MT_OCTET)],
                ReqBody::Sized(body.to_vec()),
            )?;
            take(&p, "Location", &mut loc);
            let want = if fl.expect_bad_digest { 400 } else { 201 };
            exp_status(&p, &[want]).map_err(|e| format!("blob post failed: {e}"))?;
            return Err(E::Unsupported(
                "registry does not support content in the POST, fallback to PUT".into(),
            ));
        }
        if fl.expect_bad_digest {
            return Ok(());
        }
        self.verify_digest(Some(&r), dig)?;
        self.verify_location(&u, &loc, body)?;
        Ok(())
    }

    /// `BlobPostPut`
    pub fn blob_post_put(&self, repo: &str, dig: &str, body: &[u8], fl: &Flags) -> R {
        let mut u = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let mut loc = String::new();
        let r = self.send("POST", &u, vec![], ReqBody::None)?;
        take(&r, "Location", &mut loc);
        exp_status(&r, &[202]).map_err(|e| format!("blob post failed: {e}"))?;
        if loc.is_empty() {
            return Err("blob post did not return a location".into());
        }
        u = resolve(&u, &loc)?;
        set_query(&mut u, "digest", dig);
        let p = self.send(
            "PUT",
            &u,
            vec![h("Content-Type", MT_OCTET)],
            ReqBody::Sized(body.to_vec()),
        )?;
        if fl.expect_bad_digest {
            exp_status(&p, &[400]).map_err(|e| format!("blob put failed: {e}"))?;
            return Ok(());
        }
        take(&p, "Location", &mut loc);
        exp_status(&p, &[201]).map_err(|e| format!("blob put failed: {e}"))?;
        self.verify_digest(Some(&p), dig)?;
        self.verify_location(&u, &loc, body)?;
        Ok(())
    }

    /// `ManifestDelete`
    pub fn manifest_delete(&self, repo: &str, reference: &str) -> R {
        let u = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let r = self.send("DELETE", &u, vec![], ReqBody::None)?;
        exp_status(&r, &[202, 404, 400, 405])
            .map_err(|e| format!("manifest delete failed: {e}"))?;
        if r.status == 400 || r.status == 405 {
            return Err(E::Unsupported(format!(
                "registry returned status {}: {}",
                r.status,
                r.describe()
            )));
        }
        Ok(())
    }

    fn manifest_req(&self, method: &str, repo: &str, reference: &str) -> Result<Resp, String> {
        let u = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.send(
            method,
            &u,
            vec![h("Accept", MT_OCI_INDEX), h("Accept", MT_OCI_IMAGE)],
            ReqBody::None,
        )
    }

    pub fn manifest_get_req(&self, repo: &str, reference: &str) -> Result<Resp, String> {
        self.manifest_req("GET", repo, reference)
    }

    pub fn manifest_head_req(&self, repo: &str, reference: &str) -> Result<Resp, String> {
        self.manifest_req("HEAD", repo, reference)
    }

    /// `ManifestGetExists`
    pub fn manifest_get_exists(
        &self,
        repo: &str,
        reference: &str,
        dig: &str,
        val: Option<&[u8]>,
    ) -> R {
        let r = self.manifest_get_req(repo, reference)?;
        let mut c = vec![exp_status(&r, &[200])];
        if let Some(val) = val.filter(|v| !v.is_empty()) {
            c.push(exp_body(&r, val));
            c.push(exp_header(&r, "Content-Type", &detect_media_type(val)));
            c.push(exp_header(&r, "Content-Length", &val.len().to_string()));
            c.push(self.verify_digest(Some(&r), dig));
        }
        all(c).map_err(|e| format!("manifest get failed: {e}"))?;
        Ok(())
    }

    /// `ManifestHeadExists`
    pub fn manifest_head_exists(
        &self,
        repo: &str,
        reference: &str,
        dig: &str,
        val: Option<&[u8]>,
    ) -> R {
        let r = self.manifest_head_req(repo, reference)?;
        let mut c = vec![exp_status(&r, &[200]), exp_body(&r, b"")];
        if let Some(val) = val.filter(|v| !v.is_empty()) {
            c.push(exp_header(&r, "Content-Type", &detect_media_type(val)));
            c.push(exp_header(&r, "Content-Length", &val.len().to_string()));
            c.push(self.verify_digest(Some(&r), dig));
        }
        all(c).map_err(|e| format!("manifest head failed: {e}"))?;
        Ok(())
    }

    /// `ManifestPut` (referrers enabled, as in the 1.1 defaults).
    pub fn manifest_put(
        &self,
        repo: &str,
        reference: &str,
        dig: &str,
        body: &[u8],
        fl: &Flags,
    ) -> R {
        let u = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let mt = detect_media_type(body);
        let mut loc = String::new();
        let r = self.send(
            "PUT",
            &u,
            vec![h("Content-Type", &mt)],
            ReqBody::Chunked(body.to_vec()),
        )?;
        let mut c = vec![];
        if fl.expect_bad_digest {
            c.push(exp_status(&r, &[400]));
        } else {
            take(&r, "Location", &mut loc);
            c.push(exp_status(&r, &[201]));
        }
        if let Some(subj) = detect_subject(body) {
            c.push(exp_header(&r, "OCI-Subject", &subj));
        }
        let mut errs = vec![];
        if let Err(e) = all(c) {
            errs.push(format!("manifest put failed: {e}"));
        }
        if fl.expect_bad_digest {
            return if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("\n").into())
            };
        }
        let got = r.header("Docker-Content-Digest");
        if !got.is_empty() && got != dig {
            errs.push(format!(
                "Docker-Content-Digest header value expected {dig:?}, received {got:?}"
            ));
        }
        if loc.is_empty() {
            errs.push(format!(
                "manifest put did not return a location: {}",
                r.describe()
            ));
        } else {
            match resolve(&u, &loc) {
                Err(e) => errs.push(e),
                Ok(u2) => {
                    let g = self.send(
                        "GET",
                        &u2,
                        vec![h("Accept", MT_OCI_INDEX), h("Accept", MT_OCI_IMAGE)],
                        ReqBody::None,
                    )?;
                    if let Err(e) = all(vec![
                        exp_status(&g, &[200]),
                        exp_header(&g, "Content-Type", &mt),
                        exp_header(&g, "Content-Length", &body.len().to_string()),
                        exp_body(&g, body),
                    ]) {
                        errs.push(format!("failed to verify returned location: {e}"));
                    }
                }
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("\n      AND ").into())
        }
    }

    pub fn ping(&self) -> Result<Resp, String> {
        self.send("GET", &self.url("/v2/"), vec![], ReqBody::None)
    }

    /// `ReferrersList` -> (descriptors, OCI-Filters-Applied)
    pub fn referrers_list(
        &self,
        repo: &str,
        dig: &str,
        params: &[(&str, &str)],
    ) -> R<(Vec<RDesc>, String)> {
        let mut u = self.url(&format!("/v2/{repo}/referrers/{dig}"));
        for (k, v) in params {
            add_query(&mut u, k, v);
        }
        let r = self.send("GET", &u, vec![], ReqBody::None)?;
        all(vec![
            exp_header(&r, "Content-Type", MT_OCI_INDEX),
            exp_status(&r, &[200]),
        ])?;
        if let Some(e) = &r.body_err {
            return Err(format!("{e}: {}", r.describe()).into());
        }
        let (mt, sv, list) = parse_index(&r.body).map_err(|e| format!("{e}: {}", r.describe()))?;
        if mt != MT_OCI_INDEX || sv != 2 {
            return Err(format!(
                "referrers response is not a valid OCI index (media type and schema version): {}",
                r.describe()
            )
            .into());
        }
        Ok((list, r.header("OCI-Filters-Applied")))
    }

    /// `TagList`: 200 with a tag list, or 404.
    pub fn tag_list(&self, repo: &str, params: &[(&str, &str)]) -> R<Vec<String>> {
        let mut u = self.url(&format!("/v2/{repo}/tags/list"));
        for (k, v) in params {
            add_query(&mut u, k, v);
        }
        let r = self.send("GET", &u, vec![], ReqBody::None)?;
        if r.status == 404 {
            return Ok(vec![]);
        }
        exp_status(&r, &[200, 404])
            .map_err(|e| format!("response did not match any condition: {e}"))?;
        if let Some(e) = &r.body_err {
            return Err(format!("{e}: {}", r.describe()).into());
        }
        let (_, tags) = parse_tag_list(&r.body).map_err(|e| format!("{e}: {}", r.describe()))?;
        Ok(tags)
    }
}

// ---------------------------------------------------------------------------
// testdata.go
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

fn plat(os: &str, arch: &str) -> Platform {
    Platform {
        os: os.into(),
        arch: arch.into(),
    }
}

/// image-spec `Descriptor`.
#[derive(Clone, Debug, Default)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    pub urls: Vec<String>,
    pub annotations: BTreeMap<String, String>,
    pub data: Option<Vec<u8>>,
    pub platform: Option<Platform>,
    pub artifact_type: String,
}

impl Desc {
    fn json(&self) -> J {
        let mut f = vec![
            ("mediaType", J::s(&self.media_type)),
            ("digest", J::s(&self.digest)),
            ("size", J::Int(self.size)),
        ];
        if !self.urls.is_empty() {
            f.push(("urls", J::Arr(self.urls.iter().map(J::s).collect())));
        }
        if !self.annotations.is_empty() {
            f.push(("annotations", J::map(&self.annotations)));
        }
        if let Some(d) = self.data.as_ref().filter(|d| !d.is_empty()) {
            f.push(("data", J::s(b64_encode(d))));
        }
        if let Some(p) = &self.platform {
            f.push((
                "platform",
                J::obj(vec![("architecture", J::s(&p.arch)), ("os", J::s(&p.os))]),
            ));
        }
        if !self.artifact_type.is_empty() {
            f.push(("artifactType", J::s(&self.artifact_type)));
        }
        J::obj(f)
    }
}

#[derive(Clone, Default)]
pub struct Gen {
    algo: Option<Algo>,
    annotations: Option<BTreeMap<String, String>>,
    annotation_uniq: bool,
    artifact_type: String,
    blob_size: Option<usize>,
    uncompressed: bool,
    config_bytes: Option<Vec<u8>>,
    config_media_type: String,
    descriptor_media_type: String,
    extra_field: bool,
    layer_bytes: Option<Vec<u8>>,
    layer_count: Option<usize>,
    layer_media_type: String,
    platform: Option<Platform>,
    platforms: Option<Vec<Option<Platform>>>,
    set_data: bool,
    subject: Option<Desc>,
    tag: String,
}

impl Gen {
    fn algo(&self) -> Algo {
        self.algo.unwrap_or(Algo::Sha256)
    }
}

#[derive(Default)]
pub struct TestData {
    pub name: String,
    pub title: String,
    pub tags: BTreeMap<String, String>,
    pub tag_pushed: BTreeSet<String>,
    pub desc: HashMap<String, Desc>,
    pub blobs: BTreeMap<String, Vec<u8>>,
    pub manifests: HashMap<String, Vec<u8>>,
    pub man_order: Vec<String>,
    pub referrers: BTreeMap<String, Vec<Desc>>,
    pub skip_pull: HashSet<String>,
    pub bad_digest: HashSet<String>,
}

/// Adds `"org.<rand>": "<rand>"` after the other fields (`genAddJSONFields`).
fn with_extra(mut j: J, extra: bool) -> J {
    if extra && let J::Obj(f) = &mut j {
        f.push((format!("org.{}", rand_text()), J::s(rand_text())));
    }
    j
}

impl TestData {
    pub fn new(name: &str, title: &str) -> TestData {
        TestData {
            name: name.into(),
            title: title.into(),
            ..Default::default()
        }
    }

    fn add_blob(&mut self, b: Vec<u8>, g: &Gen) -> String {
        let dig = g.algo().digest(&b);
        let mt = if g.descriptor_media_type.is_empty() {
            MT_OCTET.to_string()
        } else {
            g.descriptor_media_type.clone()
        };
        self.desc.insert(
            dig.clone(),
            Desc {
                media_type: mt,
                digest: dig.clone(),
                size: b.len() as i64,
                data: g.set_data.then(|| b.clone()),
                ..Default::default()
            },
        );
        self.blobs.insert(dig.clone(), b);
        dig
    }

    pub fn gen_blob(&mut self, g: &Gen) -> (String, Vec<u8>) {
        let b = random_bytes(g.blob_size.unwrap_or(2048));
        let dig = self.add_blob(b.clone(), g);
        (dig, b)
    }

    /// `genLayer`: the suite builds a one-file tar (gzip'd unless
    /// uncompressed); the registry never looks inside, so random bytes stand
    /// in for it. As in the suite, the "uncompressed" digest is of nothing.
    fn gen_layer(&mut self, g: &Gen) -> (String, String) {
        let body = random_bytes(300);
        let mt = if g.uncompressed {
            MT_OCI_LAYER
        } else {
            MT_OCI_LAYER_GZ
        };
        let dc = g.algo().digest(&body);
        let du = g.algo().digest(b"");
        self.desc.insert(
            dc.clone(),
            Desc {
                media_type: mt.into(),
                digest: dc.clone(),
                size: body.len() as i64,
                data: g.set_data.then(|| body.clone()),
                ..Default::default()
            },
        );
        self.desc.insert(
            du.clone(),
            Desc {
                media_type: MT_OCI_LAYER.into(),
                digest: du.clone(),
                size: 0,
                ..Default::default()
            },
        );
        self.blobs.insert(dc.clone(), body);
        (dc, du)
    }

    fn gen_config(&mut self, p: &Platform, layers: &[String], g: &Gen) -> String {
        let j = J::obj(vec![
            ("author", J::s("OCI Conformance Test")),
            ("architecture", J::s(&p.arch)),
            ("os", J::s(&p.os)),
            ("config", J::obj(vec![])),
            (
                "rootfs",
                J::obj(vec![
                    ("type", J::s("layers")),
                    ("diff_ids", J::Arr(layers.iter().map(J::s).collect())),
                ]),
            ),
        ]);
        let body = with_extra(j, g.extra_field).compact();
        let dig = g.algo().digest(&body);
        let mt = if g.config_media_type.is_empty() {
            MT_OCI_CONFIG.to_string()
        } else {
            g.config_media_type.clone()
        };
        self.desc.insert(
            dig.clone(),
            Desc {
                media_type: mt,
                digest: dig.clone(),
                size: body.len() as i64,
                data: g.set_data.then(|| body.clone()),
                ..Default::default()
            },
        );
        self.blobs.insert(dig.clone(), body);
        dig
    }

    fn gen_manifest(&mut self, conf: Desc, layers: Vec<Desc>, g: &Gen) -> String {
        let mut annotations = g.annotations.clone();
        if g.annotation_uniq {
            annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(format!("org.example.{}", rand_text()), rand_text());
        }
        let mut f = vec![
            ("schemaVersion", J::Int(2)),
            ("mediaType", J::s(MT_OCI_IMAGE)),
        ];
        if !g.artifact_type.is_empty() {
            f.push(("artifactType", J::s(&g.artifact_type)));
        }
        f.push(("config", conf.json()));
        f.push(("layers", J::Arr(layers.iter().map(|l| l.json()).collect())));
        if let Some(s) = &g.subject {
            f.push(("subject", s.json()));
        }
        if let Some(a) = annotations.as_ref().filter(|a| !a.is_empty()) {
            f.push(("annotations", J::map(a)));
        }
        let body = with_extra(J::obj(f), g.extra_field).compact();
        let dig = g.algo().digest(&body);
        self.desc.insert(
            dig.clone(),
            Desc {
                media_type: MT_OCI_IMAGE.into(),
                digest: dig.clone(),
                size: body.len() as i64,
                data: g.set_data.then(|| body.clone()),
                ..Default::default()
            },
        );
        let at = if g.artifact_type.is_empty() {
            conf.media_type.clone()
        } else {
            g.artifact_type.clone()
        };
        if let Some(s) = &g.subject {
            self.referrers
                .entry(s.digest.clone())
                .or_default()
                .push(Desc {
                    media_type: MT_OCI_IMAGE.into(),
                    artifact_type: at,
                    digest: dig.clone(),
                    size: body.len() as i64,
                    annotations: annotations.clone().unwrap_or_default(),
                    ..Default::default()
                });
        }
        if !g.tag.is_empty() {
            self.tags.insert(g.tag.clone(), dig.clone());
        }
        self.manifests.insert(dig.clone(), body);
        self.man_order.push(dig.clone());
        dig
    }

    pub fn gen_manifest_full(&mut self, g: &Gen) -> String {
        let platform = g.platform.clone().unwrap_or_else(|| plat("linux", "amd64"));
        let mut dc_list = vec![];
        let mut du_list = vec![];
        for _ in 0..g.layer_count.unwrap_or(2) {
            if g.layer_media_type.is_empty() || g.layer_media_type.starts_with(MT_OCI_LAYER_PRE) {
                let (dc, du) = self.gen_layer(g);
                dc_list.push(dc);
                du_list.push(du);
            } else {
                let lg = Gen {
                    descriptor_media_type: g.layer_media_type.clone(),
                    ..g.clone()
                };
                let dig = match &g.layer_bytes {
                    Some(b) => self.add_blob(b.clone(), &lg),
                    None => self.gen_blob(&lg).0,
                };
                dc_list.push(dig.clone());
                du_list.push(dig);
            }
        }
        let cdig = if g.config_media_type.is_empty() || g.config_media_type == MT_OCI_CONFIG {
            self.gen_config(&platform, &du_list, g)
        } else {
            let bg = Gen {
                descriptor_media_type: g.config_media_type.clone(),
                ..g.clone()
            };
            self.add_blob(g.config_bytes.clone().unwrap_or_default(), &bg)
        };
        let layers: Vec<Desc> = dc_list.iter().map(|d| self.desc[d].clone()).collect();
        let conf = self.desc[&cdig].clone();
        self.gen_manifest(conf, layers, g)
    }

    pub fn gen_index(
        &mut self,
        platforms: &[Option<Platform>],
        manifests: &[String],
        g: &Gen,
    ) -> String {
        let mut annotations = g.annotations.clone();
        if g.annotation_uniq {
            annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(format!("org.example.{}", rand_text()), rand_text());
        }
        let descs: Vec<J> = manifests
            .iter()
            .zip(platforms)
            .map(|(m, p)| {
                let mut d = self.desc[m].clone();
                d.platform = p.clone();
                d.json()
            })
            .collect();
        let mut f = vec![
            ("schemaVersion", J::Int(2)),
            ("mediaType", J::s(MT_OCI_INDEX)),
        ];
        if !g.artifact_type.is_empty() {
            f.push(("artifactType", J::s(&g.artifact_type)));
        }
        f.push(("manifests", J::Arr(descs)));
        if let Some(s) = &g.subject {
            f.push(("subject", s.json()));
        }
        if let Some(a) = annotations.as_ref().filter(|a| !a.is_empty()) {
            f.push(("annotations", J::map(a)));
        }
        let body = with_extra(J::obj(f), g.extra_field).compact();
        let dig = g.algo().digest(&body);
        self.desc.insert(
            dig.clone(),
            Desc {
                media_type: MT_OCI_INDEX.into(),
                digest: dig.clone(),
                size: body.len() as i64,
                data: g.set_data.then(|| body.clone()),
                ..Default::default()
            },
        );
        if let Some(s) = &g.subject {
            self.referrers
                .entry(s.digest.clone())
                .or_default()
                .push(Desc {
                    media_type: MT_OCI_INDEX.into(),
                    artifact_type: g.artifact_type.clone(),
                    digest: dig.clone(),
                    size: body.len() as i64,
                    annotations: annotations.clone().unwrap_or_default(),
                    ..Default::default()
                });
        }
        if !g.tag.is_empty() {
            self.tags.insert(g.tag.clone(), dig.clone());
        }
        self.manifests.insert(dig.clone(), body);
        self.man_order.push(dig.clone());
        dig
    }

    pub fn gen_index_full(&mut self, g: &Gen) -> String {
        let platforms = g
            .platforms
            .clone()
            .unwrap_or_else(|| vec![Some(plat("linux", "amd64")), Some(plat("linux", "arm64"))]);
        let mut imgs = vec![];
        for p in &platforms {
            let ig = Gen {
                platform: p.clone(),
                ..g.clone()
            };
            imgs.push(self.gen_manifest_full(&ig));
        }
        self.gen_index(&platforms, &imgs, g)
    }
}

fn conformance_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "org.opencontainers.conformance".to_string(),
        "hello conformance test".to_string(),
    )])
}

/// `GenerateData` with the 1.1 defaults (sparse and tag-param sets off).
pub fn generate_data() -> Vec<TestData> {
    let mut out = vec![];
    let tag = |t: &str| Gen {
        tag: t.into(),
        ..Default::default()
    };
    let two = || {
        Some(vec![
            Some(plat("linux", "amd64")),
            Some(plat("linux", "arm64")),
        ])
    };

    let mut td = TestData::new("image", "Image");
    td.gen_manifest_full(&tag("image"));
    out.push(td);

    let mut td = TestData::new("image-uncompressed", "Image Uncompressed");
    td.gen_manifest_full(&Gen {
        uncompressed: true,
        ..tag("image-uncompressed")
    });
    out.push(td);

    let mut td = TestData::new("large-manifest", "Image with Large Manifest");
    let large: BTreeMap<String, String> = (0..390)
        .map(|i| (format!("large-annotation-{i}"), "A".repeat(10000)))
        .collect();
    td.gen_manifest_full(&Gen {
        annotations: Some(large),
        ..tag("large-manifest")
    });
    out.push(td);

    let mut td = TestData::new("index", "Index");
    td.gen_index_full(&Gen {
        platforms: two(),
        ..tag("index")
    });
    out.push(td);

    let mut td = TestData::new("nested-index", "Nested Index");
    let d1 = td.gen_index_full(&Gen {
        platforms: two(),
        ..Default::default()
    });
    let d2 = td.gen_index_full(&Gen {
        platforms: two(),
        ..Default::default()
    });
    td.gen_index(&[None, None], &[d1, d2], &tag("index-of-index"));
    out.push(td);

    let mut td = TestData::new("empty-index", "Empty Index");
    td.gen_index_full(&Gen {
        platforms: Some(vec![]),
        ..tag("index")
    });
    out.push(td);

    let artifact = |t: &str| Gen {
        artifact_type: MT_EXAMPLE_CONF1.into(),
        config_media_type: MT_OCI_EMPTY.into(),
        config_bytes: Some(b"{}".to_vec()),
        layer_count: Some(1),
        layer_media_type: MT_EXAMPLE_CONF1.into(),
        ..tag(t)
    };

    let mut td = TestData::new("artifact", "Artifact");
    td.gen_manifest_full(&artifact("artifact"));
    out.push(td);

    let mut td = TestData::new("artifact-index", "Artifact Index");
    td.gen_index_full(&Gen {
        platforms: two(),
        ..artifact("artifact-index")
    });
    out.push(td);

    let mut td = TestData::new("artifact-without-layers", "Artifact without Layers");
    td.gen_manifest_full(&Gen {
        layer_bytes: Some(b"{}".to_vec()),
        layer_media_type: MT_OCI_EMPTY.into(),
        ..artifact("artifact-without-layers")
    });
    out.push(td);

    let mut td = TestData::new("artifacts-with-subject", "Artifacts with Subject");
    let subj = td.gen_manifest_full(&tag("image"));
    let subj_desc = td.desc[&subj].clone();
    td.gen_manifest_full(&Gen {
        subject: Some(subj_desc.clone()),
        ..Default::default()
    });
    td.gen_manifest_full(&Gen {
        annotations: Some(conformance_annotations()),
        annotation_uniq: true,
        subject: Some(subj_desc.clone()),
        ..artifact("tagged-artifact1")
    });
    td.gen_manifest_full(&Gen {
        artifact_type: MT_EXAMPLE_CONF2.into(),
        annotations: Some(conformance_annotations()),
        annotation_uniq: true,
        layer_media_type: MT_OCTET.into(),
        subject: Some(subj_desc),
        ..artifact("tagged-artifact2")
    });
    out.push(td);

    let mut td = TestData::new("index-with-subject", "Index with Subject");
    let subj = td.gen_index_full(&tag("index"));
    let subj_desc = td.desc[&subj].clone();
    td.gen_index_full(&Gen {
        annotations: Some(conformance_annotations()),
        annotation_uniq: true,
        subject: Some(subj_desc),
        ..artifact("tagged-artifact")
    });
    out.push(td);

    let mut td = TestData::new("missing-subject", "Missing Subject");
    let subj_desc = Desc {
        media_type: MT_OCI_IMAGE.into(),
        size: 123,
        digest: sha256(b"missing content"),
        ..Default::default()
    };
    td.gen_manifest_full(&Gen {
        annotations: Some(conformance_annotations()),
        annotation_uniq: true,
        subject: Some(subj_desc),
        ..artifact("tagged-artifact")
    });
    out.push(td);

    let mut td = TestData::new("data-field", "Data Field");
    td.gen_manifest_full(&Gen {
        set_data: true,
        ..tag("data-field")
    });
    out.push(td);

    let mut td = TestData::new("non-distributable-layers", "Non-distributable Layers");
    {
        let g = Gen::default();
        let c0 = sha256(&random_bytes(256));
        let d0 = sha256(&random_bytes(256));
        let l0 = Desc {
            media_type: MT_OCI_LAYER_ND_GZ.into(),
            digest: d0.clone(),
            size: 123456,
            urls: vec![format!(
                "https://store.example.com/blobs/sha256/{}",
                d0.trim_start_matches("sha256:")
            )],
            ..Default::default()
        };
        let d1 = sha256(&random_bytes(256));
        let l1 = Desc {
            media_type: MT_OCI_LAYER_ND.into(),
            digest: d1.clone(),
            size: 12345,
            urls: vec![format!(
                "https://store.example.com/blobs/sha256/{}",
                d1.trim_start_matches("sha256:")
            )],
            ..Default::default()
        };
        let (dc, du) = td.gen_layer(&g);
        let l2 = td.desc[&dc].clone();
        let cdig = td.gen_config(&plat("linux", "amd64"), &[c0, d1, du], &g);
        let conf = td.desc[&cdig].clone();
        td.gen_manifest(conf, vec![l0, l1, l2], &tag("non-distributable-image"));
    }
    out.push(td);

    let mut td = TestData::new("custom-fields", "Custom Fields");
    td.gen_index_full(&Gen {
        platforms: two(),
        extra_field: true,
        ..tag("custom-fields")
    });
    out.push(td);

    let mut td = TestData::new("no-layers", "No Layers");
    td.gen_manifest_full(&Gen {
        layer_count: Some(0),
        ..tag("no-layers")
    });
    out.push(td);

    // non-canonical digests require tag parameters to push tags, so only by digest
    let mut td = TestData::new("sha512", "Digest Algorithm sha512");
    td.gen_index_full(&Gen {
        algo: Some(Algo::Sha512),
        ..Default::default()
    });
    out.push(td);

    let mut td = TestData::new("bad-digest-image", "Bad Digest Image");
    let dig = td.gen_manifest_full(&Gen::default());
    td.skip_pull.insert(dig.clone());
    td.bad_digest.insert(dig.clone());
    // add some whitespace to make the digest mismatch
    td.manifests.get_mut(&dig).unwrap().extend_from_slice(b"  ");
    out.push(td);

    out
}

// ---------------------------------------------------------------------------
// run.go
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum BlobApi {
    PostPut,
    PostOnly,
    PatchStream,
    PatchChunked,
}

const BLOB_APIS: [BlobApi; 4] = [
    BlobApi::PostPut,
    BlobApi::PostOnly,
    BlobApi::PatchStream,
    BlobApi::PatchChunked,
];

pub struct Suite<'a> {
    pub api: Api<'a>,
    pub repo: String,
    pub repo2: String,
    pub r: &'a mut Runner,
    tested: HashSet<BlobApi>,
    tested_by_algo: HashSet<(Algo, BlobApi)>,
    /// 3 = pass, 4 = fail (the suite's status levels), only raised.
    api_status: HashMap<BlobApi, u8>,
}

impl<'a> Suite<'a> {
    pub fn new(http: &'a Http, base: &str, r: &'a mut Runner) -> Suite<'a> {
        Suite {
            api: Api {
                http,
                reg: base.trim_end_matches('/').to_string(),
            },
            repo: "conformance/repo1".into(),
            repo2: "conformance/repo2".into(),
            r,
            tested: HashSet::new(),
            tested_by_algo: HashSet::new(),
            api_status: HashMap::new(),
        }
    }

    /// Records one check; returns whether it passed (Go: `err == nil`).
    fn check(&mut self, name: &str, res: R) -> bool {
        let title = format!("Runner / {name}");
        match res {
            Ok(()) => {
                self.r.record(&title, Status::Pass, String::new());
                true
            }
            Err(E::Fail(m)) => {
                self.r.record(&title, Status::Fail, m);
                false
            }
            Err(E::Unsupported(m)) => {
                self.r.warn(
                    &title,
                    format!("registry does not support the requested API (the Go runner reports Skip): {m}"),
                );
                false
            }
            Err(E::Skip(m)) => {
                self.r.record(&title, Status::Skip, m);
                false
            }
        }
    }

    fn set_api(&mut self, api: BlobApi, ok: bool, unsupported: bool) {
        let lvl = if ok {
            3
        } else if unsupported {
            2
        } else {
            4
        };
        let e = self.api_status.entry(api).or_insert(0);
        *e = (*e).max(lvl);
    }

    fn push_blob_with(
        &mut self,
        name: &str,
        api: BlobApi,
        repo: &str,
        dig: &str,
        body: &[u8],
        fl: &Flags,
    ) -> bool {
        let res = match api {
            BlobApi::PostPut => self.api.blob_post_put(repo, dig, body, fl),
            BlobApi::PostOnly => self.api.blob_post_only(repo, dig, body, fl),
            BlobApi::PatchStream => self.api.blob_patch_stream(repo, dig, body, fl),
            BlobApi::PatchChunked => {
                let mut m = String::new();
                self.api.blob_patch_chunked(repo, dig, body, fl, &mut m)
            }
        };
        let unsupported = matches!(res, Err(E::Unsupported(_)));
        let label = match api {
            BlobApi::PostPut => "blob-post-put",
            BlobApi::PostOnly => "blob-post-only",
            BlobApi::PatchStream => "blob-patch-stream",
            BlobApi::PatchChunked => "blob-patch-chunked",
        };
        let ok = self.check(&format!("{name}/{label}"), res);
        self.set_api(api, ok, unsupported);
        ok
    }

    /// `TestPushBlobAny`: untested APIs first, then untested for this
    /// algorithm, then passing ones, then the rest; first success wins.
    fn push_blob_any(&mut self, name: &str, repo: &str, dig: &str, body: &[u8]) -> bool {
        let algo = if dig.starts_with("sha512:") {
            Algo::Sha512
        } else {
            Algo::Sha256
        };
        let mut apis: Vec<BlobApi> = vec![];
        for a in BLOB_APIS {
            if !self.tested.contains(&a) {
                apis.push(a);
            }
        }
        for a in BLOB_APIS {
            if !self.tested_by_algo.contains(&(algo, a)) && !apis.contains(&a) {
                apis.push(a);
            }
        }
        for a in BLOB_APIS {
            if self.api_status.get(&a) == Some(&3) && !apis.contains(&a) {
                apis.push(a);
            }
        }
        for a in BLOB_APIS {
            if !apis.contains(&a) {
                apis.push(a);
            }
        }
        for a in apis {
            let ok = self.push_blob_with(name, a, repo, dig, body, &Flags::default());
            self.tested.insert(a);
            self.tested_by_algo.insert((algo, a));
            if ok {
                return true;
            }
        }
        false
    }

    fn delete_blob(&mut self, name: &str, repo: &str, dig: &str) -> bool {
        let res = self.api.blob_delete(repo, dig);
        if !self.check(&format!("{name}/blob-delete"), res) {
            return false;
        }
        // verify blob delete finished immediately
        let res = self
            .api
            .blob_head_req(repo, dig)
            .map_err(E::from)
            .and_then(|r| {
                exp_status(&r, &[404]).map_err(|e| E::Fail(format!("blob head failed: {e}")))
            });
        self.check(&format!("{name}/blob-delete-atomic"), res)
    }

    fn head_blob(&mut self, name: &str, repo: &str, dig: &str, val: Option<&[u8]>) -> bool {
        let res = self.api.blob_head_exists(repo, dig, val);
        self.check(&format!("{name}/blob-head"), res)
    }

    fn pull_blob(&mut self, name: &str, repo: &str, dig: &str, val: Option<&[u8]>) -> bool {
        let res = self.api.blob_get_exists(repo, dig, val);
        self.check(&format!("{name}/blob-get"), res)
    }

    pub fn test_ping(&mut self) {
        let res = self.api.ping().map(|_| ()).map_err(E::from);
        self.check("ping", res);
    }

    pub fn test_empty(&mut self) {
        let repo = self.repo.clone();
        let res = self.api.tag_list(&repo, &[]).map(|_| ());
        self.check("empty/tag list", res);
        let subj = sha256(rand_text().as_bytes());
        let res = self.api.referrers_list(&repo, &subj, &[]).map(|_| ());
        self.check("empty/referrers", res);
    }

    pub fn test_blob_apis(&mut self, algo: Algo) {
        let repo = self.repo.clone();
        let repo2 = self.repo2.clone();
        let base = format!("{} blobs", algo.name());
        let mut td = TestData::new(&format!("blobs-{}", algo.name()), "");
        let gb = |size: usize| Gen {
            blob_size: Some(size),
            algo: Some(algo),
            ..Default::default()
        };
        let names = [
            "post only",
            "post+put",
            "chunked single",
            "stream",
            "mount",
            "mount anonymous",
            "mount missing",
            "post cancel",
        ];
        let mut digests: HashMap<String, String> = HashMap::new();
        for n in names {
            let (d, _) = td.gen_blob(&gb(512));
            digests.insert(n.into(), d);
        }
        // try pulling a blob that has not been pushed
        let res = self
            .api
            .blob_get_req(&repo, &digests["post cancel"], vec![])
            .map_err(E::from)
            .and_then(|r| {
                exp_status(&r, &[404]).map_err(|e| E::Fail(format!("blob get failed: {e}")))
            });
        self.check(&format!("{base}/get-missing"), res);

        let mut min_chunk: i64 = CHUNK_MIN;
        let mut min_header = String::new();
        let all_tests = names.iter().copied().chain([
            "chunked multi",
            "chunked multi and put chunk",
            "chunked out-of-order",
            "chunked out-of-order and put chunk",
        ]);
        for t in all_tests {
            let name = format!("{base}/{t}");
            let big = (min_chunk * 3 - 5) as usize;
            let mut dig = digests.get(t).cloned().unwrap_or_default();
            if dig.is_empty() {
                dig = td.gen_blob(&gb(big)).0;
            }
            let body = td.blobs[&dig].clone();
            let d = Flags::default();
            let (api, ok) = match t {
                "post only" => (
                    Some(BlobApi::PostOnly),
                    self.push_blob_with(&name, BlobApi::PostOnly, &repo, &dig, &body, &d),
                ),
                "post+put" => (
                    Some(BlobApi::PostPut),
                    self.push_blob_with(&name, BlobApi::PostPut, &repo, &dig, &body, &d),
                ),
                "chunked single" => {
                    let res = self
                        .api
                        .blob_patch_chunked(&repo, &dig, &body, &d, &mut min_header);
                    let uns = matches!(res, Err(E::Unsupported(_)));
                    let ok = self.check(&format!("{name}/blob-patch-chunked"), res);
                    self.set_api(BlobApi::PatchChunked, ok, uns);
                    if let Ok(m) = min_header.trim().parse::<i64>()
                        && m > min_chunk
                    {
                        min_chunk = m;
                    }
                    (Some(BlobApi::PatchChunked), ok)
                }
                "chunked multi"
                | "chunked multi and put chunk"
                | "chunked out-of-order"
                | "chunked out-of-order and put chunk" => {
                    let fl = Flags {
                        put_last_chunk: t.ends_with("put chunk"),
                        out_of_order: t.contains("out-of-order"),
                        ..Default::default()
                    };
                    (
                        Some(BlobApi::PatchChunked),
                        self.push_blob_with(&name, BlobApi::PatchChunked, &repo, &dig, &body, &fl),
                    )
                }
                "stream" => (
                    Some(BlobApi::PatchStream),
                    self.push_blob_with(&name, BlobApi::PatchStream, &repo, &dig, &body, &d),
                ),
                "post cancel" => {
                    // stateAPIBlobCancel is disabled by default (1.1): TestSkip
                    self.check(
                        &format!("{name}/blob-post-cancel"),
                        Err(E::Skip(
                            "api Blob upload cancel is disabled in the configuration".into(),
                        )),
                    );
                    (None, false)
                }
                "mount" => {
                    self.push_blob_any(&name, &repo2, &dig, &body);
                    let res = self.api.blob_mount(&repo, &repo2, &dig, &body);
                    (None, self.check(&format!("{name}/blob-mount"), res))
                }
                "mount anonymous" => {
                    self.push_blob_any(&name, &repo2, &dig, &body);
                    let res = self.api.blob_mount(&repo, "", &dig, &body);
                    (
                        None,
                        self.check(&format!("{name}/blob-mount-anonymous"), res),
                    )
                }
                "mount missing" => {
                    // mount from repo2 without first pushing there: must not succeed
                    let res = match self.api.blob_mount(&repo, &repo2, &dig, &body) {
                        Err(E::Unsupported(_)) => Ok(()),
                        Ok(()) => Err(E::Fail(
                            "blob mount of missing blob incorrectly succeeded (POST ?mount=&from= returned 201 for a blob the source repository does not have)".into(),
                        )),
                        Err(e) => Err(e),
                    };
                    (None, self.check(&format!("{name}/blob-mount"), res))
                }
                _ => unreachable!(),
            };
            if let Some(a) = api {
                self.tested.insert(a);
                self.tested_by_algo.insert((algo, a));
            }
            if ok && t != "post cancel" {
                self.head_blob(&name, &repo, &dig, Some(&body));
                self.pull_blob(&name, &repo, &dig, Some(&body));
            }
            self.delete_blob(&name, &repo, &dig);
            if t == "mount" || t == "mount anonymous" {
                self.delete_blob(&format!("{name} (repo2)"), &repo2, &dig);
            }
        }

        // verify support for range requests
        let name = format!("{base}/range requests");
        let (dig, blob) = td.gen_blob(&gb(2048));
        if self.push_blob_any(&name, &repo, &dig, &blob) {
            let n = blob.len();
            let cases: Vec<RangeCase> = vec![
                (
                    "range 500-1499",
                    "bytes=500-1499",
                    Some((
                        blob[500..1500].to_vec(),
                        format!("bytes 500-1499/{n}"),
                        "bytes 500-1499/*".into(),
                    )),
                ),
                (
                    "range 500-",
                    "bytes=500-",
                    Some((
                        blob[500..].to_vec(),
                        format!("bytes 500-{}/{n}", n - 1),
                        format!("bytes 500-{}/*", n - 1),
                    )),
                ),
                (
                    "range -500",
                    "bytes=-500",
                    Some((
                        blob[n - 500..].to_vec(),
                        format!("bytes {}-{}/{n}", n - 500, n - 1),
                        format!("bytes {}-{}/*", n - 500, n - 1),
                    )),
                ),
                (
                    "range 2000-5000",
                    "bytes=2000-5000",
                    Some((
                        blob[2000..].to_vec(),
                        format!("bytes 2000-{}/{n}", n - 1),
                        format!("bytes 2000-{}/*", n - 1),
                    )),
                ),
                ("range 500-0", "bytes=500-0", None),
                ("range 5000-10000", "bytes=5000-10000", None),
            ];
            for (cname, range, want) in cases {
                let res = (|| -> R {
                    let r = self
                        .api
                        .blob_get_req(&repo, &dig, vec![h("Range", range)])?;
                    let primary = match &want {
                        Some((body, cr1, cr2)) => all(vec![
                            exp_body(&r, body),
                            exp_status(&r, &[206]),
                            exp_header(&r, "Content-Length", &body.len().to_string()),
                            exp_header(&r, "Content-Range", cr1)
                                .or_else(|_| exp_header(&r, "Content-Range", cr2)),
                        ]),
                        None => exp_status(&r, &[416]),
                    };
                    if let Err(e) = primary {
                        // fallback: a full 200 response is accepted by the request but
                        // then reported as "range request unsupported" (Skip)
                        let full = all(vec![
                            exp_status(&r, &[200]),
                            exp_header(&r, "Content-Length", &n.to_string()),
                            exp_body(&r, &blob),
                        ]);
                        return match full {
                            Ok(()) => Err(E::Unsupported(format!(
                                "range request unsupported, full blob returned: {}",
                                r.describe()
                            ))),
                            Err(_) => Err(E::Fail(format!(
                                "response did not match any condition: {e}"
                            ))),
                        };
                    }
                    Ok(())
                })();
                self.check(&format!("{name}/{cname}"), res);
            }
            self.delete_blob(&name, &repo, &dig);
        } else {
            self.check(&name, Err(E::Skip("could not push the test blob".into())));
        }

        // test various well known blob contents
        for (cname, val) in [("empty", b"".to_vec()), ("emptyJSON", b"{}".to_vec())] {
            let name = format!("{base}/{cname}");
            let dig = algo.digest(&val);
            self.push_blob_any(&name, &repo, &dig, &val);
            self.head_blob(&name, &repo, &dig, Some(&val));
            self.pull_blob(&name, &repo, &dig, Some(&val));
            self.delete_blob(&name, &repo, &dig);
        }

        // the blob push APIs with a bad digest
        let bad = [
            "bad digest post only",
            "bad digest post+put",
            "bad digest chunked",
            "bad digest chunked and put chunk",
            "bad digest stream",
        ];
        for t in bad {
            let name = format!("{base}/{t}");
            let (dig, mut body) = td.gen_blob(&gb((min_chunk * 3 - 5) as usize));
            body.extend_from_slice(b"oh no");
            let fl = Flags {
                expect_bad_digest: true,
                ..Default::default()
            };
            let (label, res) = match t {
                "bad digest post only" => (
                    "blob-post-only",
                    self.api.blob_post_only(&repo, &dig, &body, &fl),
                ),
                "bad digest post+put" => (
                    "blob-post-put",
                    self.api.blob_post_put(&repo, &dig, &body, &fl),
                ),
                "bad digest stream" => (
                    "blob-patch-stream",
                    self.api.blob_patch_stream(&repo, &dig, &body, &fl),
                ),
                _ => {
                    let mut m = String::new();
                    (
                        "blob-patch-chunked",
                        self.api.blob_patch_chunked(&repo, &dig, &body, &fl, &mut m),
                    )
                }
            };
            self.check(&format!("{name}/{label}"), res);
        }
    }

    /// push, tag list, head, pull, referrers, delete of one data set.
    pub fn test_data(&mut self, td: &mut TestData) {
        let repo = self.repo.clone();
        let base = td.name.clone();
        if self.r.verbose {
            eprintln!("-- data set {:?} ({})", td.name, td.title);
        }
        // push
        let blobs: Vec<(String, Vec<u8>)> = td
            .blobs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (dig, body) in &blobs {
            self.push_blob_any(&format!("{base}/push"), &repo, dig, body);
        }
        for dig in td.man_order.clone() {
            let fl = Flags {
                expect_bad_digest: td.bad_digest.contains(&dig),
                ..Default::default()
            };
            let res = self
                .api
                .manifest_put(&repo, &dig, &dig, &td.manifests[&dig], &fl);
            self.check(&format!("{base}/push/manifest-by-digest"), res);
        }
        for (tag, dig) in td.tags.clone() {
            if td.tag_pushed.contains(&tag) {
                continue;
            }
            let fl = Flags {
                expect_bad_digest: td.bad_digest.contains(&dig),
                ..Default::default()
            };
            let res = self
                .api
                .manifest_put(&repo, &tag, &dig, &td.manifests[&dig], &fl);
            if self.check(&format!("{base}/push/manifest-by-tag {tag}"), res) {
                td.tag_pushed.insert(tag);
            }
        }
        // list
        let res = (|| -> R {
            let tags = self.api.tag_list(&repo, &[])?;
            let mut errs = vec![];
            for t in td.tags.keys() {
                if !tags.contains(t) {
                    errs.push(format!("missing tag {t:?} from listing {tags:?}"));
                }
            }
            if tags.len() >= 2 {
                let mut sorted = tags.clone();
                sorted.sort();
                let end = sorted.len() / 2;
                let last = sorted[end - 1].clone();
                let partial = self.api.tag_list(&repo, &[("last", &last)])?;
                for t in &sorted[..end] {
                    if partial.contains(t) {
                        errs.push(format!(
                            "tag {t:?} returned when last set to {last:?} (got {partial:?})"
                        ));
                    }
                }
                for t in &sorted[end..] {
                    if !partial.contains(t) {
                        errs.push(format!(
                            "tag {t:?} missing when last set to {last:?} (got {partial:?})"
                        ));
                    }
                }
            }
            if errs.is_empty() {
                Ok(())
            } else {
                Err(errs.join("; ").into())
            }
        })();
        self.check(&format!("{base}/tag-list"), res);
        // head + pull
        for (label, method_head) in [("head", true), ("pull", false)] {
            for (tag, dig) in td.tags.clone() {
                if td.skip_pull.contains(&dig) {
                    continue;
                }
                let body = td.manifests.get(&dig).cloned();
                let res = if method_head {
                    self.api
                        .manifest_head_exists(&repo, &tag, &dig, body.as_deref())
                } else {
                    self.api
                        .manifest_get_exists(&repo, &tag, &dig, body.as_deref())
                };
                let what = if method_head {
                    "manifest-head-by-tag"
                } else {
                    "manifest-by-tag"
                };
                self.check(&format!("{base}/{label}/{what} {tag}"), res);
            }
            for dig in td.man_order.clone() {
                if td.skip_pull.contains(&dig) {
                    continue;
                }
                let body = td.manifests.get(&dig).cloned();
                let res = if method_head {
                    self.api
                        .manifest_head_exists(&repo, &dig, &dig, body.as_deref())
                } else {
                    self.api
                        .manifest_get_exists(&repo, &dig, &dig, body.as_deref())
                };
                let what = if method_head {
                    "manifest-head-by-digest"
                } else {
                    "manifest-by-digest"
                };
                self.check(&format!("{base}/{label}/{what}"), res);
            }
            for (dig, body) in &blobs {
                if method_head {
                    self.head_blob(&format!("{base}/{label}"), &repo, dig, Some(body));
                } else {
                    self.pull_blob(&format!("{base}/{label}"), &repo, dig, Some(body));
                }
            }
        }
        // referrers
        for (subj, goals) in td.referrers.clone() {
            let res = (|| -> R {
                let mut errs = vec![];
                let matches = |list: &[RDesc], g: &Desc| {
                    list.iter().any(|r| {
                        r.digest == g.digest
                            && r.media_type == g.media_type
                            && r.size == g.size
                            && r.artifact_type == g.artifact_type
                            && g.annotations
                                .iter()
                                .all(|(k, v)| r.annotations.get(k) == Some(v))
                    })
                };
                match self.api.referrers_list(&repo, &subj, &[]) {
                    Err(e) => return Err(e),
                    Ok((list, _)) => {
                        for g in &goals {
                            if !matches(&list, g) {
                                errs.push(format!(
                                    "entry missing from referrers list, subject {subj}, referrer {} (artifactType {:?}, mediaType {}, size {}, annotations {:?}); got {list:?}",
                                    g.digest, g.artifact_type, g.media_type, g.size, g.annotations
                                ));
                            }
                        }
                    }
                }
                let ats: BTreeSet<String> = goals.iter().map(|g| g.artifact_type.clone()).collect();
                let mut unsupported = vec![];
                for at in ats {
                    let (list, filters) =
                        self.api
                            .referrers_list(&repo, &subj, &[("artifactType", &at)])?;
                    let applied = filters.split(',').any(|f| f.trim() == "artifactType");
                    if !applied {
                        unsupported.push(format!(
                            "registry does not set the expected OCI-Filters-Applied header for the artifactType {at:?}"
                        ));
                    }
                    for g in &goals {
                        if (!applied || g.artifact_type == at) && !matches(&list, g) {
                            errs.push(format!(
                                "entry missing from filtered (artifactType={at}) referrers list, subject {subj}, referrer {}",
                                g.digest
                            ));
                        }
                    }
                    if applied {
                        for d in &list {
                            if d.artifact_type != at {
                                errs.push(format!(
                                    "referrers filter for artifactType {at} included descriptor {d:?}"
                                ));
                            }
                        }
                    }
                }
                if !errs.is_empty() {
                    errs.extend(unsupported);
                    return Err(E::Fail(errs.join("; ")));
                }
                if !unsupported.is_empty() {
                    return Err(E::Unsupported(unsupported.join("; ")));
                }
                Ok(())
            })();
            self.check(&format!("{base}/referrers {subj}"), res);
        }
        // delete: tags, manifests (reverse), blobs
        let repo_c = repo.clone();
        for (tag, dig) in td.tags.clone() {
            if !td.tag_pushed.contains(&tag) {
                continue;
            }
            let res = self.api.manifest_delete(&repo_c, &tag);
            if self.check(&format!("{base}/delete/tag-delete {tag}"), res) {
                let res = self
                    .api
                    .manifest_head_req(&repo_c, &tag)
                    .map_err(E::from)
                    .and_then(|r| {
                        exp_status(&r, &[404]).map_err(|e| {
                            E::Fail(format!(
                                "manifest head failed (tag {tag} -> {dig} should be gone): {e}"
                            ))
                        })
                    });
                self.check(&format!("{base}/delete/tag-delete-atomic {tag}"), res);
            }
        }
        let mut order = td.man_order.clone();
        order.reverse();
        for dig in order {
            let res = self.api.manifest_delete(&repo_c, &dig);
            if self.check(&format!("{base}/delete/manifest-delete"), res) {
                let res = self
                    .api
                    .manifest_head_req(&repo_c, &dig)
                    .map_err(E::from)
                    .and_then(|r| {
                        exp_status(&r, &[404])
                            .map_err(|e| E::Fail(format!("manifest head failed: {e}")))
                    });
                self.check(&format!("{base}/delete/manifest-delete-atomic"), res);
            }
        }
        for (dig, _) in &blobs {
            self.delete_blob(&format!("{base}/delete"), &repo_c, dig);
        }
    }

    /// `TestManifestErrors`
    pub fn test_manifest_errors(&mut self) {
        let repo = self.repo.clone();
        let dig = sha256(&random_bytes(1024));
        let res = self
            .api
            .manifest_get_req(&repo, &dig)
            .map_err(E::from)
            .and_then(|r| {
                exp_status(&r, &[404]).map_err(|e| E::Fail(format!("manifest get failed: {e}")))
            });
        self.check("missing-manifest/by-digest", res);
        let tag = format!("missing-{}", &rand_text().to_lowercase()[..20]);
        let res = self
            .api
            .manifest_get_req(&repo, &tag)
            .map_err(E::from)
            .and_then(|r| {
                exp_status(&r, &[404]).map_err(|e| E::Fail(format!("manifest get failed: {e}")))
            });
        self.check("missing-manifest/by-tag", res);

        let mut td = TestData::new("invalid-manifest-digest", "Invalid Manifest Digest");
        let man = td.gen_manifest_full(&Gen {
            layer_count: Some(1),
            ..Default::default()
        });
        let blobs: Vec<(String, Vec<u8>)> = td
            .blobs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (d, b) in &blobs {
            self.push_blob_any("invalid-digest-format", &repo, d, b);
        }
        let fl = Flags {
            expect_bad_digest: true,
            ..Default::default()
        };
        let res = self.api.manifest_put(
            &repo,
            "sha256:baddigeststring",
            &man,
            &td.manifests[&man],
            &fl,
        );
        self.check("invalid-digest-format/manifest-put", res);
        let res = self
            .api
            .manifest_get_req(&repo, "sha256:baddigeststring")
            .map_err(E::from)
            .and_then(|r| {
                exp_status(&r, &[404, 400])
                    .map_err(|e| E::Fail(format!("manifest get failed: {e}")))
            });
        self.check("invalid-digest-format/manifest-get", res);
        // cleanup (TestDelete of the data set: no tags pushed)
        let res = self.api.manifest_delete(&repo, &man);
        if self.check("invalid-digest-format/delete/manifest-delete", res) {
            let res = self
                .api
                .manifest_head_req(&repo, &man)
                .map_err(E::from)
                .and_then(|r| {
                    exp_status(&r, &[404])
                        .map_err(|e| E::Fail(format!("manifest head failed: {e}")))
                });
            self.check("invalid-digest-format/delete/manifest-delete-atomic", res);
        }
        for (d, _) in &blobs {
            self.delete_blob("invalid-digest-format/delete", &repo, d);
        }
    }

    /// `TestAll`
    pub fn run_all(&mut self) {
        let mut data = generate_data();
        self.test_ping();
        self.test_empty();
        for algo in [Algo::Sha256, Algo::Sha512] {
            self.test_blob_apis(algo);
        }
        for td in data.iter_mut() {
            self.test_data(td);
        }
        self.test_manifest_errors();
    }
}
