//! Shared plumbing for the OCI conformance port: an HTTP client that speaks
//! the way the Go suite's clients do (reggie/resty for the ginkgo suite,
//! `net/http` for the newer runner), Go-compatible query encoding and JSON
//! output, digests, and a small spec runner that keeps going after a failure
//! (like ginkgo) and reports every failing spec by its original title.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Body, Client};
use sha2::{Digest as _, Sha256, Sha512};

pub const MT_OCTET: &str = "application/octet-stream";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_OCI_IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MT_OCI_LAYER_PRE: &str = "application/vnd.oci.image.layer.v1.";
pub const MT_OCI_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MT_OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const MT_OCI_LAYER_ND_GZ: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const MT_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The OCI error codes the suite accepts in an error body (setup.go).
pub const ERROR_CODES: [&str; 15] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
];

// ---------------------------------------------------------------------------
// digests, random data, base64
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub fn digest(self, b: &[u8]) -> String {
        match self {
            Algo::Sha256 => format!("sha256:{}", hex::encode(Sha256::digest(b))),
            Algo::Sha512 => format!("sha512:{}", hex::encode(Sha512::digest(b))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }
}

pub fn sha256(b: &[u8]) -> String {
    Algo::Sha256.digest(b)
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        v.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    v.truncate(n);
    v
}

/// Like Go's `crypto/rand.Text()`: 26 characters of base32.
pub fn rand_text() -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    random_bytes(26)
        .iter()
        .map(|b| A[(*b & 31) as usize] as char)
        .collect()
}

/// Like setup.go's `randomString(16)`.
pub fn random_string(n: usize) -> String {
    const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-";
    random_bytes(n)
        .iter()
        .map(|b| A[(*b as usize) % A.len()] as char)
        .collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64_encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|x| *x == c).expect("base64 char") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Go-compatible JSON output (encoding/json field order, escaping, MarshalIndent)
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum J {
    Null,
    Int(i64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn s(v: impl Into<String>) -> J {
        J::Str(v.into())
    }
    pub fn obj(fields: Vec<(&str, J)>) -> J {
        J::Obj(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
    /// A Go `map[string]string` (keys sorted).
    pub fn map(m: &BTreeMap<String, String>) -> J {
        J::Obj(m.iter().map(|(k, v)| (k.clone(), J::s(v))).collect())
    }
    /// `json.MarshalIndent(v, "", "\t")`
    pub fn indent(&self) -> Vec<u8> {
        let mut s = String::new();
        self.write(&mut s, Some(0));
        s.into_bytes()
    }
    /// `json.Marshal(v)`
    pub fn compact(&self) -> Vec<u8> {
        let mut s = String::new();
        self.write(&mut s, None);
        s.into_bytes()
    }
    fn write(&self, out: &mut String, depth: Option<usize>) {
        let nl = |out: &mut String, d: usize| {
            out.push('\n');
            for _ in 0..d {
                out.push('\t');
            }
        };
        match self {
            J::Null => out.push_str("null"),
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            J::Str(s) => go_quote(out, s),
            J::Arr(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if let Some(d) = depth {
                        nl(out, d + 1);
                    }
                    it.write(out, depth.map(|d| d + 1));
                }
                if let Some(d) = depth {
                    nl(out, d);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                if fields.is_empty() {
                    out.push_str("{}");
                    return;
                }
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if let Some(d) = depth {
                        nl(out, d + 1);
                    }
                    go_quote(out, k);
                    out.push(':');
                    if depth.is_some() {
                        out.push(' ');
                    }
                    v.write(out, depth.map(|d| d + 1));
                }
                if let Some(d) = depth {
                    nl(out, d);
                }
                out.push('}');
            }
        }
    }
}

fn go_quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------
// Go net/url query semantics
// ---------------------------------------------------------------------------

/// `url.QueryEscape`: everything but `[A-Za-z0-9-_.~]` is %-escaped, space is `+`.
pub fn go_query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

pub fn go_query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `url.Values`: parsed from a raw query, encoded sorted by key.
#[derive(Default, Clone, Debug)]
pub struct Values(pub BTreeMap<String, Vec<String>>);

impl Values {
    pub fn parse(raw: &str) -> Values {
        let mut v = Values::default();
        for part in raw.split('&') {
            if part.is_empty() || part.contains(';') {
                continue;
            }
            let (k, val) = part.split_once('=').unwrap_or((part, ""));
            if let (Some(k), Some(val)) = (go_query_unescape(k), go_query_unescape(val)) {
                v.0.entry(k).or_default().push(val);
            }
        }
        v
    }
    pub fn set(&mut self, k: &str, val: &str) {
        self.0.insert(k.to_string(), vec![val.to_string()]);
    }
    pub fn add(&mut self, k: &str, val: &str) {
        self.0
            .entry(k.to_string())
            .or_default()
            .push(val.to_string());
    }
    pub fn encode(&self) -> String {
        let mut parts = Vec::new();
        for (k, vs) in &self.0 {
            for v in vs {
                parts.push(format!("{}={}", go_query_escape(k), go_query_escape(v)));
            }
        }
        parts.join("&")
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// How a request body goes on the wire. Go's `net/http` sends a body it does
/// not know the length of (any `io.Reader` that is not a bytes/strings
/// reader, which is what reggie's `SetBody` and the runner's `apiWithBody`
/// produce) with `Transfer-Encoding: chunked`, and ignores an explicit
/// `Content-Length` header; a request with no body on POST/PUT/PATCH gets
/// `Content-Length: 0`.
#[derive(Clone)]
pub enum ReqBody {
    None,
    Chunked(Vec<u8>),
    Sized(Vec<u8>),
}

/// An async reqwest client driven on its own runtime: unlike the blocking
/// client, it returns a response the server sends before it has read the
/// whole request body (an early 400/401/404 to a request with a chunked
/// body), as Go's `net/http` does, instead of reporting the body upload
/// the server cut short.
pub struct Http {
    client: Client,
    rt: tokio::runtime::Runtime,
    login: Option<Login>,
}

/// Credentials for a registry that requires authentication, used as the
/// Go suite's clients use `OCI_USERNAME`/`OCI_PASSWORD`: a request answered
/// `401` with a `WWW-Authenticate: Bearer realm=..,service=..,scope=..`
/// challenge is retried once with a token fetched from the realm with
/// Basic credentials (`Basic` challenges are retried with Basic). The last
/// authorization that worked for a repository and kind of access is sent
/// with the next such requests (the runner's auth cache), so most requests
/// need no retry.
struct Login {
    user: String,
    pass: String,
    cache: Mutex<HashMap<String, String>>,
}

/// The cache key of a request: the kind of access it needs (pull, push or
/// delete, as a registry's challenge would name it) and its repository
/// (`/v2/<name>/...`, or the path). Keeping push tokens apart from delete
/// tokens means a request with a body rarely meets an early 401 (which
/// the server may send before reading the body, and then close the
/// connection under the client still writing it).
fn auth_key(method: &str, url: &str) -> String {
    let kind = match method {
        "GET" | "HEAD" => "pull",
        "DELETE" => "delete",
        _ => "push",
    };
    format!("{kind} {}", auth_path(url))
}

fn auth_path(url: &str) -> String {
    let path = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
    let path = path.split('?').next().unwrap_or(path);
    for marker in ["/blobs/", "/manifests/", "/tags/", "/referrers/"] {
        if let Some(i) = path.find(marker) {
            return path[..i].to_string();
        }
    }
    path.to_string()
}

/// The parameters of a `Bearer k="v",...` challenge (the runner's regexp:
/// `([a-zA-z]+)="(.+?)"`).
fn challenge_params(header: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = header;
    while let Some(eq) = rest.find("=\"") {
        let key: String = rest[..eq]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<Vec<char>>()
            .into_iter()
            .rev()
            .collect();
        let after = &rest[eq + 2..];
        let Some(end) = after.find('"') else { break };
        out.insert(key.to_ascii_lowercase(), after[..end].to_string());
        rest = &after[end + 1..];
    }
    out
}

#[derive(Clone)]
pub struct Resp {
    pub method: String,
    pub url: String,
    pub req_note: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub body_err: Option<String>,
}

impl Http {
    pub fn new() -> Http {
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .user_agent("distribution-spec-conformance-tests")
            .build()
            .expect("reqwest client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        Http {
            client,
            rt,
            login: None,
        }
    }

    /// A client that authenticates as `user` (see `Login`).
    pub fn with_login(user: &str, pass: &str) -> Http {
        let mut h = Http::new();
        h.login = Some(Login {
            user: user.to_string(),
            pass: pass.to_string(),
            cache: Mutex::new(HashMap::new()),
        });
        h
    }

    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: ReqBody,
    ) -> Result<Resp, String> {
        let Some(login) = &self.login else {
            return self.send_once(method, url, headers, body, None);
        };
        let key = auth_key(method, url);
        let cached = login.cache.lock().unwrap().get(&key).cloned();
        let resp = self.send_once(method, url, headers, body.clone(), cached.as_deref())?;
        if resp.status != 401 {
            return Ok(resp);
        }
        let auth = self.authorization(login, url, &resp)?;
        let retried = self.send_once(method, url, headers, body, Some(&auth))?;
        if retried.status != 401 {
            login.cache.lock().unwrap().insert(key, auth);
        }
        Ok(retried)
    }

    /// The `Authorization` value answering `resp`'s challenge.
    fn authorization(&self, login: &Login, url: &str, resp: &Resp) -> Result<String, String> {
        let basic = || {
            use base64::Engine as _;
            let raw = format!("{}:{}", login.user, login.pass);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        let header = resp.header("WWW-Authenticate");
        if header.to_ascii_lowercase().starts_with("basic") {
            return Ok(basic());
        }
        if !header.to_ascii_lowercase().starts_with("bearer") {
            return Err(format!(
                "401 without a usable challenge: {}",
                resp.describe()
            ));
        }
        let p = challenge_params(&header);
        let realm = p
            .get("realm")
            .ok_or_else(|| format!("challenge without realm: {}", resp.describe()))?;
        let mut u = reqwest::Url::parse(url)
            .and_then(|base| base.join(realm))
            .map_err(|e| format!("realm {realm:?}: {e}"))?;
        {
            let mut q = u.query_pairs_mut();
            q.clear();
            q.append_pair("service", p.get("service").map_or("", String::as_str));
            if let Some(scope) = p.get("scope") {
                q.append_pair("scope", scope);
            }
        }
        let (status, body) = self.rt.block_on(async {
            let r = self
                .client
                .get(u.clone())
                .header("Accept", "application/json")
                .header("Authorization", basic())
                .send()
                .await
                .map_err(|e| format!("token request {u} failed: {e}"))?;
            let status = r.status();
            let body = r.bytes().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        })?;
        if !status.is_success() {
            return Err(format!(
                "token request {u}: status {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("token response of {u} is not JSON: {e}"))?;
        let token = v["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .or(v["token"].as_str())
            .ok_or_else(|| format!("no token in {}", String::from_utf8_lossy(&body)))?;
        Ok(format!("Bearer {token}"))
    }

    fn send_once(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: ReqBody,
        auth: Option<&str>,
    ) -> Result<Resp, String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut rb = self.client.request(m, url);
        let mut note = Vec::new();
        let mut has_range = false;
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("content-length") {
                // set by the body (Go drops an explicit Content-Length header)
                continue;
            }
            if k.eq_ignore_ascii_case("range") {
                has_range = true;
            }
            rb = rb.header(k.as_str(), v.as_str());
            note.push(format!("{k}: {v}"));
        }
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
            note.push(format!(
                "Authorization: {} [censored]",
                a.split(' ').next().unwrap_or("")
            ));
        }
        // Go's transport asks for gzip on every non-HEAD, non-Range request.
        if method != "HEAD" && !has_range {
            rb = rb.header("Accept-Encoding", "gzip");
        }
        let body_note = match body {
            ReqBody::None => {
                if matches!(method, "POST" | "PUT" | "PATCH") {
                    rb = rb.body(Vec::<u8>::new());
                    "Content-Length: 0, no body".to_string()
                } else {
                    "no body".to_string()
                }
            }
            ReqBody::Chunked(b) => {
                let n = b.len();
                // A stream of unknown length: Transfer-Encoding: chunked.
                let chunk: Result<bytes::Bytes, std::io::Error> = Ok(bytes::Bytes::from(b));
                rb = rb.body(Body::wrap_stream(futures_util::stream::iter([chunk])));
                format!("chunked body of {n} bytes")
            }
            ReqBody::Sized(b) => {
                let n = b.len();
                rb = rb.body(b);
                format!("Content-Length: {n}")
            }
        };
        note.push(body_note);
        let (status, headers, final_url, body, body_err) = self.rt.block_on(async {
            let resp = rb
                .send()
                .await
                .map_err(|e| format!("{method} {url} failed: {e:?}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let final_url = resp.url().to_string();
            // A body that cannot be read is only an error for a check that
            // reads it (the runner's api.go never reads the body of, e.g., a
            // 416).
            let (body, body_err) = match resp.bytes().await {
                Ok(b) => (b.to_vec(), None),
                Err(e) => (
                    vec![],
                    Some(format!("reading the response body failed: {e:?}")),
                ),
            };
            Ok::<_, String>((status, headers, final_url, body, body_err))
        })?;
        let url_note = if final_url != url {
            format!("{url} (redirected to {final_url})")
        } else {
            url.to_string()
        };
        let r = Resp {
            method: method.to_string(),
            url: url_note,
            req_note: note.join(", "),
            status,
            headers,
            body,
            body_err,
        };
        if let Some(enc) = r.headers.get("content-encoding") {
            let enc = enc.to_str().unwrap_or("?");
            if !enc.eq_ignore_ascii_case("identity") {
                return Err(format!(
                    "response is Content-Encoding {enc} (the port cannot decode it): {}",
                    r.describe()
                ));
            }
        }
        Ok(r)
    }
}

impl Resp {
    /// Go `Header.Get`: the first value, or "".
    pub fn header(&self, k: &str) -> String {
        self.headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    }
    /// Go `Header.Values`.
    pub fn header_values(&self, k: &str) -> Vec<String> {
        self.headers
            .get_all(k)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|s| s.to_string())
            .collect()
    }
    /// reggie `GetRelativeLocation`: path (and query) of the Location header,
    /// whatever host it names.
    pub fn relative_location(&self) -> String {
        let loc = self.header("Location");
        let (path, query) = if let Some(rest) = loc
            .strip_prefix("http://")
            .or_else(|| loc.strip_prefix("https://"))
        {
            match rest.find('/') {
                Some(i) => split_query(&rest[i..]),
                None => split_query(""),
            }
        } else {
            split_query(&loc)
        };
        let path = path.split('#').next().unwrap_or("").to_string();
        match query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path,
        }
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    /// One line describing the exchange, for failure messages.
    pub fn describe(&self) -> String {
        let mut hs = Vec::new();
        for (k, v) in &self.headers {
            let k = k.as_str();
            if matches!(k, "date" | "connection" | "keep-alive") {
                continue;
            }
            hs.push(format!("{k}: {}", v.to_str().unwrap_or("?")));
        }
        let text = std::str::from_utf8(&self.body)
            .ok()
            .filter(|s| !s.chars().any(|c| c.is_control() && !c.is_whitespace()));
        let body = match text {
            _ if self.body.is_empty() => "<empty>".to_string(),
            None => format!("<{} bytes of binary data>", self.body.len()),
            Some(s) if s.len() > 400 => {
                let cut = (0..=300)
                    .rev()
                    .find(|i| s.is_char_boundary(*i))
                    .unwrap_or(0);
                format!("{}... ({} bytes)", &s[..cut], s.len())
            }
            Some(s) => s.trim_end().to_string(),
        };
        let body = match &self.body_err {
            Some(e) => format!("{body} ({e})"),
            None => body,
        };
        format!(
            "[{} {} ({})] -> [{} {{{}}} body: {}]",
            self.method,
            self.url,
            self.req_note,
            self.status,
            hs.join("; "),
            body
        )
    }
    pub fn is_2xx(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn split_query(s: &str) -> (String, Option<String>) {
    match s.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (s.to_string(), None),
    }
}

pub fn expect_status(r: &Resp, codes: &[u16]) -> Result<(), String> {
    if codes.contains(&r.status) {
        Ok(())
    } else {
        Err(format!(
            "expected status {}, got {}: {}",
            codes
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            r.status,
            r.describe()
        ))
    }
}

/// `SatisfyAll(BeNumerically(">=", 200), BeNumerically("<", 300))`, optionally
/// `SatisfyAny(..., Equal(x), ...)`.
pub fn expect_2xx_or(r: &Resp, also: &[u16]) -> Result<(), String> {
    if r.is_2xx() || also.contains(&r.status) {
        Ok(())
    } else {
        let extra: Vec<String> = also.iter().map(|c| c.to_string()).collect();
        Err(format!(
            "expected status 2xx{}{}, got {}: {}",
            if extra.is_empty() { "" } else { " or " },
            extra.join(" or "),
            r.status,
            r.describe()
        ))
    }
}

/// reggie `Response.Errors()`: the body must be `{"errors":[...]}` with at
/// least one entry; returns the codes.
pub fn oci_error_codes(r: &Resp) -> Result<Vec<String>, String> {
    if let Some(e) = &r.body_err {
        return Err(format!("{e}: {}", r.describe()));
    }
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("error body is not JSON ({e}): {}", r.describe()))?;
    let errs = v
        .get("errors")
        .and_then(|e| e.as_array())
        .cloned()
        .unwrap_or_default();
    if errs.is_empty() {
        return Err(format!(
            "body was valid json but had no `errors` entries: {}",
            r.describe()
        ));
    }
    let mut codes = Vec::new();
    for e in errs {
        match e.get("code") {
            Some(serde_json::Value::String(s)) => codes.push(s.clone()),
            None | Some(serde_json::Value::Null) => codes.push(String::new()),
            Some(_) => {
                return Err(format!(
                    "error entry `code` is not a string: {}",
                    r.describe()
                ));
            }
        }
    }
    Ok(codes)
}

/// Go `json.Unmarshal` into `TagList{Name string; Tags []string}`.
pub fn parse_tag_list(body: &[u8]) -> Result<(String, Vec<String>), String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("tag list is not JSON: {e}"))?;
    let obj = match &v {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Null => return Ok((String::new(), vec![])),
        _ => return Err("tag list is not a JSON object".into()),
    };
    let name = match obj.get("name") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(_) => return Err("tag list `name` is not a string".into()),
    };
    let tags = match obj.get("tags") {
        None | Some(serde_json::Value::Null) => vec![],
        Some(serde_json::Value::Array(a)) => {
            let mut out = Vec::new();
            for t in a {
                match t {
                    serde_json::Value::String(s) => out.push(s.clone()),
                    serde_json::Value::Null => out.push(String::new()),
                    _ => return Err("tag list `tags` has a non-string entry".into()),
                }
            }
            out
        }
        Some(_) => return Err("tag list `tags` is not an array".into()),
    };
    Ok((name, tags))
}

/// A descriptor as read back from a referrers response.
#[derive(Clone, Debug, Default)]
pub struct RDesc {
    pub media_type: String,
    pub artifact_type: String,
    pub digest: String,
    pub size: i64,
    pub annotations: BTreeMap<String, String>,
}

/// Go `json.Unmarshal` into an index (`mediaType`, `schemaVersion`,
/// `manifests[]` descriptors).
pub fn parse_index(body: &[u8]) -> Result<(String, i64, Vec<RDesc>), String> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("index is not JSON: {e}"))?;
    let obj = match &v {
        Value::Object(o) => o.clone(),
        Value::Null => Default::default(),
        _ => return Err("index is not a JSON object".into()),
    };
    let str_field = |o: &serde_json::Map<String, Value>, k: &str| -> Result<String, String> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(format!("`{k}` is not a string")),
        }
    };
    let media_type = str_field(&obj, "mediaType")?;
    let schema_version = match obj.get("schemaVersion") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n.as_i64().ok_or("schemaVersion is not an int")?,
        Some(_) => return Err("`schemaVersion` is not a number".into()),
    };
    let mut out = Vec::new();
    match obj.get("manifests") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for d in a {
                let o = match d {
                    Value::Object(o) => o,
                    _ => return Err("manifests entry is not an object".into()),
                };
                let mut annotations = BTreeMap::new();
                match o.get("annotations") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(m)) => {
                        for (k, v) in m {
                            match v {
                                Value::String(s) => {
                                    annotations.insert(k.clone(), s.clone());
                                }
                                _ => return Err("annotation value is not a string".into()),
                            }
                        }
                    }
                    Some(_) => return Err("`annotations` is not an object".into()),
                }
                let size = match o.get("size") {
                    None | Some(Value::Null) => 0,
                    Some(Value::Number(n)) => n.as_i64().ok_or("size is not an int")?,
                    Some(_) => return Err("`size` is not a number".into()),
                };
                out.push(RDesc {
                    media_type: str_field(o, "mediaType")?,
                    artifact_type: str_field(o, "artifactType")?,
                    digest: str_field(o, "digest")?,
                    size,
                    annotations,
                });
            }
        }
        Some(_) => return Err("`manifests` is not an array".into()),
    }
    Ok((media_type, schema_version, out))
}

// ---------------------------------------------------------------------------
// spec runner
// ---------------------------------------------------------------------------

pub enum SpecErr {
    Fail(String),
    Skip(String),
}

impl From<String> for SpecErr {
    fn from(s: String) -> Self {
        SpecErr::Fail(s)
    }
}

impl From<&str> for SpecErr {
    fn from(s: &str) -> Self {
        SpecErr::Fail(s.to_string())
    }
}

pub type SpecResult = Result<(), SpecErr>;

/// `Expect(cond).To(...)`: return a failure naming what was expected.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !($cond) {
            return Err(format!($($fmt)+).into());
        }
    };
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
    Warn,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub title: String,
    pub status: Status,
    pub msg: String,
}

pub struct Runner {
    pub outcomes: Vec<Outcome>,
    /// Print outcomes as they happen (passes only with `show_pass`).
    pub verbose: bool,
    pub show_pass: bool,
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    pub fn new() -> Runner {
        Runner {
            outcomes: vec![],
            verbose: true,
            show_pass: true,
        }
    }

    /// Runs one ginkgo `Specify`/`It`. A failure (or panic) is recorded and
    /// the suite carries on, as ginkgo does.
    pub fn spec(&mut self, title: &str, f: impl FnOnce() -> SpecResult) {
        let res = catch_unwind(AssertUnwindSafe(f));
        let (status, msg) = match res {
            Ok(Ok(())) => (Status::Pass, String::new()),
            Ok(Err(SpecErr::Fail(m))) => (Status::Fail, m),
            Ok(Err(SpecErr::Skip(m))) => (Status::Skip, m),
            Err(p) => {
                let m = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                (Status::Fail, format!("panicked: {m}"))
            }
        };
        self.record(title, status, msg);
    }

    pub fn record(&mut self, title: &str, status: Status, msg: String) {
        if self.verbose && (self.show_pass || status != Status::Pass) {
            let tag = match status {
                Status::Pass => "ok  ",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
                Status::Warn => "warn",
            };
            if msg.is_empty() {
                eprintln!("[{tag}] {title}");
            } else {
                eprintln!("[{tag}] {title}: {msg}");
            }
        }
        self.outcomes.push(Outcome {
            title: title.to_string(),
            status,
            msg,
        });
    }

    pub fn warn(&mut self, title: &str, msg: String) {
        self.record(title, Status::Warn, msg);
    }

    /// Panics listing every failed spec whose title starts with `prefix`.
    pub fn finish(&self, prefix: &str) {
        let mine: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| o.title.starts_with(prefix))
            .collect();
        let count = |s: Status| mine.iter().filter(|o| o.status == s).count();
        eprintln!(
            "== {prefix}: {} passed, {} failed, {} skipped, {} warnings",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::Skip),
            count(Status::Warn)
        );
        let failed: Vec<String> = mine
            .iter()
            .filter(|o| o.status == Status::Fail)
            .map(|o| format!("  - {}\n      {}", o.title, o.msg))
            .collect();
        if !failed.is_empty() {
            panic!(
                "{} conformance spec(s) failed under `{prefix}`:\n{}",
                failed.len(),
                failed.join("\n")
            );
        }
    }
}
