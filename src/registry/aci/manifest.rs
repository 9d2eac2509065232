//! appc image manifests: the checks `actool validate` makes (the schema of
//! `schema/image.go` and `schema/types`), the labels a manifest carries,
//! and the manifest of a converted Docker/OCI image.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{AC_VERSION, AciError, AciResult, valid_acname, valid_identifier, valid_os_arch};

/// What the hub reads out of a valid image manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageManifest {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

fn bad(msg: impl Into<String>) -> AciError {
    AciError::Invalid(format!("image manifest: {}", msg.into()))
}

fn str_field<'a>(v: &'a Value, what: &str) -> AciResult<&'a str> {
    v.as_str()
        .ok_or_else(|| bad(format!("{what} must be a string")))
}

fn semver_like(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `name`/`value` pairs with AC identifier names, each name once.
fn named_list(v: Option<&Value>, what: &str) -> AciResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return Ok(out) };
    if v.is_null() {
        return Ok(out);
    }
    let list = v
        .as_array()
        .ok_or_else(|| bad(format!("{what} must be an array")))?;
    for item in list {
        let name = str_field(&item["name"], &format!("{what} name"))?;
        if !valid_identifier(name) {
            return Err(bad(format!("{what} name {name:?} is not an AC identifier")));
        }
        let value = str_field(&item["value"], &format!("{what} {name}"))?;
        if out.insert(name.to_string(), value.to_string()).is_some() {
            return Err(bad(format!("{what} {name:?} appears twice")));
        }
    }
    Ok(out)
}

fn env_name_ok(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

fn check_app(app: &Value) -> AciResult<()> {
    let app = app
        .as_object()
        .ok_or_else(|| bad("app must be an object"))?;
    if let Some(exec) = app.get("exec").filter(|e| !e.is_null()) {
        let exec = exec
            .as_array()
            .ok_or_else(|| bad("app.exec must be an array"))?;
        for a in exec {
            str_field(a, "app.exec item")?;
        }
    }
    for key in ["user", "group"] {
        let v = app.get(key).unwrap_or(&Value::Null);
        if str_field(v, &format!("app.{key}"))?.is_empty() {
            return Err(bad(format!("app.{key} is required")));
        }
    }
    if let Some(wd) = app.get("workingDirectory").filter(|v| !v.is_null()) {
        let wd = str_field(wd, "app.workingDirectory")?;
        if !wd.is_empty() && !wd.starts_with('/') {
            return Err(bad("app.workingDirectory must be an absolute path"));
        }
    }
    if let Some(env) = app.get("environment").filter(|v| !v.is_null()) {
        let env = env
            .as_array()
            .ok_or_else(|| bad("app.environment must be an array"))?;
        for e in env {
            let n = str_field(&e["name"], "environment name")?;
            if !env_name_ok(n) {
                return Err(bad(format!("environment variable name {n:?} is invalid")));
            }
            str_field(&e["value"], "environment value")?;
        }
    }
    if let Some(ports) = app.get("ports").filter(|v| !v.is_null()) {
        let ports = ports
            .as_array()
            .ok_or_else(|| bad("app.ports must be an array"))?;
        for p in ports {
            let name = str_field(&p["name"], "port name")?;
            if !valid_acname(name) {
                return Err(bad(format!("port name {name:?} is not an AC name")));
            }
            let port = p["port"].as_u64().unwrap_or(0);
            let count = p.get("count").and_then(Value::as_u64).unwrap_or(0);
            if !(1..=65535).contains(&port) || port + count > 65536 {
                return Err(bad(format!("port {name} is out of the 1-65535 range")));
            }
        }
    }
    Ok(())
}

/// Parses and checks an image manifest.
pub fn parse(body: &[u8]) -> AciResult<ImageManifest> {
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    if obj.get("acKind").and_then(Value::as_str) != Some("ImageManifest") {
        return Err(bad("acKind must be \"ImageManifest\""));
    }
    let version = obj.get("acVersion").and_then(Value::as_str).unwrap_or("");
    if !semver_like(version) {
        return Err(bad(format!(
            "acVersion {version:?} is not a semantic version"
        )));
    }
    let name = obj.get("name").and_then(Value::as_str).unwrap_or("");
    if !valid_identifier(name) {
        return Err(bad(format!("name {name:?} is not an AC identifier")));
    }
    let labels = named_list(obj.get("labels"), "label")?;
    if labels.contains_key("name") {
        return Err(bad("\"name\" is not a valid label name"));
    }
    if let Some(os) = labels.get("os")
        && !valid_os_arch(os, labels.get("arch").map(String::as_str))
    {
        return Err(bad(format!(
            "os/arch {os}/{} is not one appc defines",
            labels.get("arch").map_or("-", String::as_str)
        )));
    }
    let annotations = named_list(obj.get("annotations"), "annotation")?;
    if let Some(created) = annotations.get("created")
        && chrono::DateTime::parse_from_rfc3339(created).is_err()
    {
        return Err(bad(format!(
            "annotation created {created:?} is not an RFC 3339 date"
        )));
    }
    if let Some(app) = obj.get("app").filter(|a| !a.is_null()) {
        check_app(app)?;
    }
    for key in ["dependencies", "pathWhitelist"] {
        if let Some(d) = obj.get(key)
            && !d.is_null()
            && !d.is_array()
        {
            return Err(bad(format!("{key} must be an array")));
        }
    }
    Ok(ImageManifest {
        name: name.to_string(),
        labels,
    })
}

/// The parts of a Docker/OCI image config the conversion maps.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerRunConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// A Docker/OCI image config.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    pub architecture: Option<String>,
    #[serde(default)]
    pub os: Option<String>,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub config: Option<DockerRunConfig>,
}

/// Docker's `User` as appc's user and group: no user is root; a user
/// without a group gets group 0 (Docker would take the user's primary
/// group from the image's /etc/passwd, which the manifest cannot express).
pub fn user_group(user: Option<&str>) -> (String, String) {
    match user.map(str::trim).filter(|u| !u.is_empty()) {
        None => ("0".into(), "0".into()),
        Some(u) => match u.split_once(':') {
            Some((u, g)) if !u.is_empty() && !g.is_empty() => (u.into(), g.into()),
            Some((u, _)) if !u.is_empty() => (u.into(), "0".into()),
            Some(_) => ("0".into(), "0".into()),
            None => (u.into(), "0".into()),
        },
    }
}

/// What names the conversion's result.
pub struct Target<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub os: &'a str,
    pub arch: &'a str,
    pub repository: &'a str,
    pub manifest_digest: &'a str,
    pub config_digest: &'a str,
}

/// The image manifest of a converted image: name and labels from the
/// target; exec (entrypoint then cmd), user and group, working directory,
/// environment and ports from the config; the Docker facts as annotations.
pub fn converted(t: &Target<'_>, config: &DockerConfig) -> Vec<u8> {
    let run = config.config.as_ref();
    let entrypoint = run.and_then(|r| r.entrypoint.clone()).unwrap_or_default();
    let cmd = run.and_then(|r| r.cmd.clone()).unwrap_or_default();
    let exec: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    let (user, group) = user_group(run.and_then(|r| r.user.as_deref()));
    let mut app = Map::new();
    app.insert("exec".into(), json!(exec));
    app.insert("user".into(), json!(user));
    app.insert("group".into(), json!(group));
    if let Some(wd) = run
        .and_then(|r| r.working_dir.as_deref())
        .filter(|w| w.starts_with('/'))
    {
        app.insert("workingDirectory".into(), json!(wd));
    }
    let env: Vec<Value> = run
        .and_then(|r| r.env.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            env_name_ok(k).then(|| json!({"name": k, "value": v}))
        })
        .collect();
    if !env.is_empty() {
        app.insert("environment".into(), json!(env));
    }
    let mut ports = Vec::new();
    for spec in run
        .and_then(|r| r.exposed_ports.as_ref())
        .into_iter()
        .flat_map(|p| p.keys())
    {
        let (port, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        if port == 0 || !matches!(proto, "tcp" | "udp" | "sctp") {
            continue;
        }
        ports.push(json!({
            "name": format!("{proto}-{port}"),
            "protocol": proto,
            "port": port,
            "count": 1,
            "socketActivated": false,
        }));
    }
    if !ports.is_empty() {
        app.insert("ports".into(), json!(ports));
    }
    let mut annotations = Vec::new();
    if let Some(created) = config
        .created
        .as_deref()
        .filter(|c| chrono::DateTime::parse_from_rfc3339(c).is_ok())
    {
        annotations.push(json!({"name": "created", "value": created}));
    }
    for (name, value) in [
        ("appc.io/docker/repository", t.repository.to_string()),
        ("appc.io/docker/tag", t.version.to_string()),
        ("appc.io/docker/manifesthash", t.manifest_digest.to_string()),
        ("appc.io/docker/imageid", t.config_digest.to_string()),
        (
            "appc.io/docker/entrypoint",
            serde_json::to_string(&entrypoint).expect("strings serialize"),
        ),
        (
            "appc.io/docker/cmd",
            serde_json::to_string(&cmd).expect("strings serialize"),
        ),
    ] {
        annotations.push(json!({"name": name, "value": value}));
    }
    let m = json!({
        "acKind": "ImageManifest",
        "acVersion": AC_VERSION,
        "name": t.name,
        "labels": [
            {"name": "version", "value": t.version},
            {"name": "os", "value": t.os},
            {"name": "arch", "value": t.arch},
        ],
        "app": Value::Object(app),
        "annotations": annotations,
    });
    serde_json::to_vec_pretty(&m).expect("JSON serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_the_schema() {
        let ok = br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"hub.test/a/b",
            "labels":[{"name":"version","value":"1.0.0"},{"name":"os","value":"linux"},{"name":"arch","value":"amd64"}],
            "app":{"exec":["/bin/sh"],"user":"0","group":"0","environment":[{"name":"A_1","value":"x"}],
                   "ports":[{"name":"http","protocol":"tcp","port":80,"count":1,"socketActivated":false}]}}"#;
        let m = parse(ok).unwrap();
        assert_eq!(m.name, "hub.test/a/b");
        assert_eq!(m.labels["version"], "1.0.0");
        let s = std::str::from_utf8(ok).unwrap();
        for (from, to) in [
            ("ImageManifest", "PodManifest"),
            ("0.8.11", "eight"),
            ("hub.test/a/b", "Hub/A"),
            ("\"linux\"", "\"plan9\""),
            ("\"amd64\"", "\"x86_64\""),
            ("\"user\":\"0\"", "\"user\":\"\""),
            ("A_1", "1A"),
            ("\"port\":80", "\"port\":0"),
            ("\"name\":\"version\"", "\"name\":\"os\""),
        ] {
            assert!(
                parse(s.replace(from, to).as_bytes()).is_err(),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn converts_docker_config() {
        let config: DockerConfig = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","created":"2024-05-06T07:08:09.123456789Z",
            "config":{"User":"app:staff","Env":["PATH=/usr/bin","X=a=b","bad name=1"],
            "Entrypoint":["/bin/app"],"Cmd":["--serve"],"WorkingDir":"/srv",
            "ExposedPorts":{"8080/tcp":{},"53/udp":{}}}}"#,
        )
        .unwrap();
        let t = Target {
            name: "hub.test/acme/web",
            version: "1.2",
            os: "linux",
            arch: "amd64",
            repository: "acme/web",
            manifest_digest: "sha256:00",
            config_digest: "sha256:11",
        };
        let body = converted(&t, &config);
        let m = parse(&body).unwrap();
        assert_eq!(m.name, "hub.test/acme/web");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["app"]["exec"], json!(["/bin/app", "--serve"]));
        assert_eq!(v["app"]["user"], "app");
        assert_eq!(v["app"]["group"], "staff");
        assert_eq!(v["app"]["workingDirectory"], "/srv");
        assert_eq!(
            v["app"]["environment"],
            json!([{"name":"PATH","value":"/usr/bin"},{"name":"X","value":"a=b"}])
        );
        assert_eq!(v["app"]["ports"][0]["name"], "udp-53");
        assert_eq!(v["app"]["ports"][1]["port"], 8080);
        assert_eq!(converted(&t, &config), body, "deterministic");
        assert_eq!(user_group(Some("1000")), ("1000".into(), "0".into()));
        assert_eq!(user_group(None), ("0".into(), "0".into()));
    }
}
