//! Configuration: `conf/runtime.toml`, overridden by environment variables
//! named `DOCKYARD_<SECTION>_<KEY>` (or `DOCKYARD_<KEY>` for top-level keys),
//! e.g. `DOCKYARD_DB_URI` or `DOCKYARD_DOCKYARD_PATH`.
//!
//! Every key has a default, unknown keys are errors, and every error names
//! the key it is about.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `dev` logs at debug level by default; `prod` at info.
    pub runmode: RunMode,
    /// `http`, or `https` (TLS served by the hub itself).
    pub listenmode: ListenMode,
    /// PEM certificate chain for `listenmode = "https"`.
    pub httpscertfile: PathBuf,
    /// PEM private key for `listenmode = "https"`.
    pub httpskeyfile: PathBuf,
    pub log: LogConfig,
    pub db: DbConfig,
    pub dockyard: DockyardConfig,
    pub auth_server: AuthServerConfig,
    pub token: TokenConfig,
    pub authn_ldap: LdapConfig,
    pub audit: AuditConfig,
    pub rados: RadosConfig,
    pub p2p: P2pConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    #[default]
    Dev,
    Prod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    #[default]
    Http,
    /// TLS served by the hub itself (rustls), from `httpscertfile` and
    /// `httpskeyfile`.
    Https,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `dockyard=debug,info`; empty
    /// means by run mode.
    pub level: String,
    /// Log file; empty means standard error.
    pub filepath: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DbDriver {
    #[default]
    Sqlite,
    Mysql,
    Postgres,
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbConfig {
    pub driver: DbDriver,
    /// For `sqlite`, a file path (relative to the working directory) or a
    /// `sqlite://` URI; empty means `<dockyard.path>/dockyard.db`.
    pub uri: String,
    /// Connections in the pool.
    pub max_connections: u32,
    /// Redis only: prefix of every key, so several hubs can share a server.
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    /// Ceph RADOS (`[rados]`); needs a build with the `rados` feature.
    Rados,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockyardConfig {
    /// Data directory: blobs, upload data, the embedded database.
    pub path: PathBuf,
    /// Blob storage backend.
    pub backend: Backend,
    /// Keep tag, manifest and blob-link lookups in memory. Only honoured
    /// when this process is the only writer of the metadata (SQLite).
    pub cachable: bool,
    /// Upload sessions idle for longer than this many seconds are removed.
    pub upload_expiry: u64,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: u64,
    /// `true`: no authentication or authorization at all (an open hub).
    pub standalone: bool,
    /// Believe `X-Real-IP` / `X-Forwarded-For` from loopback peers (nginx
    /// on this host), for throttling and the audit log.
    pub trustproxy: bool,
    /// Host names this hub answers for, comma-separated: appc image names
    /// start with one (`hub.example.com/ns/app`), v1 clients are sent to
    /// the first (`X-Docker-Endpoints`). Empty: the Host the client used.
    pub domains: String,
}

/// The token service (the issuing side).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthServerConfig {
    /// `iss` of issued tokens.
    pub issuer: String,
    /// PEM private key (EC P-256 or RSA) tokens are signed with; a
    /// development key pair is generated here (and at
    /// `token.rootcertbundle`) on first start if neither exists.
    #[serde(rename = "privateKey")]
    pub private_key: PathBuf,
    /// Token lifetime in seconds.
    pub expiration: u64,
    /// `authn_db` (passwords in the hub's database) or `authn_ldap`.
    pub authn: Authn,
    /// A system administrator created at start if there is none yet.
    pub admin: String,
    pub admin_password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Authn {
    #[default]
    AuthnDb,
    AuthnLdap,
}

/// Token verification on the registry side.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// The token endpoint named in challenges; empty means this hub's own
    /// `/uam/auth` at the address the client used.
    pub realm: String,
    /// `aud` of tokens, and `service` in challenges.
    pub service: String,
    /// Accepted `iss`.
    pub issuer: String,
    /// PEM certificates (or public keys) whose keys may sign tokens.
    pub rootcertbundle: PathBuf,
}

/// `authn_ldap`: bind as the user against a directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LdapConfig {
    /// `host:port` of the directory.
    pub addr: String,
    /// LDAPS (TLS from the first byte).
    pub tls: bool,
    /// StartTLS on a plain connection.
    pub starttls: bool,
    pub insecuretlsskipverify: bool,
    /// PEM CA certificate(s) to verify the directory with; empty: the
    /// system's roots.
    pub certfile: String,
    /// Active Directory style: bind as `user@domain` (no search needed).
    pub domain: String,
    /// Where users are searched.
    pub basedn: String,
    /// Account that searches; empty: anonymous search.
    pub binddn: String,
    pub bindpassword: String,
    /// User search filter; `${account}` is replaced by the escaped name.
    pub filter: String,
    /// Where groups are searched (empty: `basedn`).
    pub groupbasedn: String,
    /// Group search filter; `${dn}` is the member's DN (user or group,
    /// so nested groups resolve).
    pub groupfilter: String,
    /// LDAP groups whose members are put into hub teams at each login.
    pub teams: Vec<LdapTeamMap>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapTeamMap {
    /// The group's DN.
    pub group: String,
    pub org: String,
    pub team: String,
}

/// `[rados]`: blobs in a Ceph pool, for `dockyard.backend = "rados"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RadosConfig {
    /// The cluster's ceph.conf (monitors, auth, keyring, client timeouts).
    pub conf: PathBuf,
    /// Pool the blobs and upload sessions live in (must exist).
    pub pool: String,
    /// Ceph client name, without `client.`.
    pub user: String,
    /// Bytes per RADOS object a blob is split into (RADOS objects are
    /// limited to 128 MiB; data is written in pieces of at most 4 MiB).
    pub chunksize: u64,
    /// RADOS namespace within the pool, so several hubs can share one pool;
    /// empty: the default namespace.
    pub namespace: String,
}

/// Largest `rados.chunksize`: a small blob up to one chunk may be written
/// in one operation, and the OSDs refuse writes above 90 MiB
/// (`osd_max_write_size`).
pub const RADOS_MAX_CHUNK: u64 = 90 * 1024 * 1024;
/// Smallest `rados.chunksize`.
pub const RADOS_MIN_CHUNK: u64 = 4096;

/// `[p2p]`: the peer swarm through which host agents (and other nodes)
/// fetch blob pieces from each other instead of from this hub's storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    pub enabled: bool,
    /// Comma-separated multiaddrs the swarm node listens on.
    pub listen: String,
    /// Comma-separated multiaddrs of peers to join through, each ending in
    /// `/p2p/<PeerId>`.
    pub bootstrap: String,
    /// Discover peers on the local network by mDNS.
    pub mdns: bool,
    /// Bytes per piece of the piece tables this hub makes.
    pub piece_size: u32,
    /// Seconds a ticket (a peer's permission to fetch one blob) is valid.
    pub ticket_lifetime: u64,
    /// Hub nodes on their own disks: fetch a blob this node lacks from the
    /// peer hub nodes (which share the metadata and the token key).
    pub tier: bool,
    /// With `tier`: nodes each stored blob is on before the store reports
    /// it stored (a push is acknowledged).
    pub replicas: usize,
}

impl Default for P2pConfig {
    fn default() -> Self {
        P2pConfig {
            enabled: false,
            listen: "/ip4/0.0.0.0/tcp/4001".into(),
            bootstrap: String::new(),
            mdns: false,
            piece_size: crate::p2p::piece::DEFAULT_PIECE_SIZE,
            ticket_lifetime: 300,
            tier: false,
            replicas: 1,
        }
    }
}

impl P2pConfig {
    pub fn listen_addrs(&self) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
        multiaddrs("p2p.listen", &self.listen)
    }

    pub fn bootstrap_addrs(&self) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
        let addrs = multiaddrs("p2p.bootstrap", &self.bootstrap)?;
        for a in &addrs {
            if !matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
                return Err(ConfigError::Invalid {
                    key: "p2p.bootstrap",
                    message: format!("{a} does not end in /p2p/<PeerId>"),
                });
            }
        }
        Ok(addrs)
    }
}

fn multiaddrs(key: &'static str, list: &str) -> Result<Vec<libp2p::Multiaddr>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|e| ConfigError::Invalid {
                key,
                message: format!("{a:?}: {e}"),
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Events older than this many days are deleted.
    pub retention_days: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runmode: RunMode::Dev,
            listenmode: ListenMode::Http,
            httpscertfile: PathBuf::from("cert/dockyard.crt"),
            httpskeyfile: PathBuf::from("cert/dockyard.key"),
            log: LogConfig::default(),
            db: DbConfig::default(),
            dockyard: DockyardConfig::default(),
            auth_server: AuthServerConfig::default(),
            token: TokenConfig::default(),
            authn_ldap: LdapConfig::default(),
            audit: AuditConfig::default(),
            rados: RadosConfig::default(),
            p2p: P2pConfig::default(),
        }
    }
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            driver: DbDriver::Sqlite,
            uri: String::new(),
            max_connections: 4,
            prefix: "dockyard".into(),
        }
    }
}

impl Default for DockyardConfig {
    fn default() -> Self {
        DockyardConfig {
            path: PathBuf::from("data"),
            backend: Backend::Local,
            cachable: true,
            upload_expiry: 24 * 3600,
            max_manifest_size: 4 * 1024 * 1024,
            standalone: true,
            trustproxy: false,
            domains: String::new(),
        }
    }
}

impl Default for AuthServerConfig {
    fn default() -> Self {
        AuthServerConfig {
            issuer: "dockyard-token-issuer".into(),
            private_key: PathBuf::from("cert/token.key"),
            expiration: 300,
            authn: Authn::AuthnDb,
            admin: String::new(),
            admin_password: String::new(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            realm: String::new(),
            service: "dockyard".into(),
            issuer: "dockyard-token-issuer".into(),
            rootcertbundle: PathBuf::from("cert/token.crt"),
        }
    }
}

impl Default for RadosConfig {
    fn default() -> Self {
        RadosConfig {
            conf: PathBuf::from("/etc/ceph/ceph.conf"),
            pool: "registry".into(),
            user: "admin".into(),
            chunksize: 4 * 1024 * 1024,
            namespace: String::new(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention_days: 90 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

const ENV_PREFIX: &str = "DOCKYARD_";

impl Config {
    /// Reads `path` (a missing file at the default path means defaults),
    /// applies environment overrides and validates the result.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Config::from_parts(path, &text, &env)
    }

    fn from_parts(
        path: &Path,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        apply_env(&mut table, env)?;
        let config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_err(e.to_string().trim().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.dockyard.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "dockyard.path",
                message: "must not be empty".into(),
            });
        }
        if self.db.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "db.max_connections",
                message: "must be at least 1".into(),
            });
        }
        if self.dockyard.max_manifest_size < 1024 {
            return Err(ConfigError::Invalid {
                key: "dockyard.max_manifest_size",
                message: "must be at least 1024 bytes".into(),
            });
        }
        if self.dockyard.upload_expiry < 60 {
            return Err(ConfigError::Invalid {
                key: "dockyard.upload_expiry",
                message: "must be at least 60 seconds".into(),
            });
        }
        if !self.log.level.is_empty() {
            tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
                ConfigError::Invalid {
                    key: "log.level",
                    message: e.to_string(),
                }
            })?;
        }
        let invalid = |key: &'static str, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        let scheme_ok = match self.db.driver {
            DbDriver::Sqlite => true,
            DbDriver::Mysql => self.db.uri.starts_with("mysql://"),
            DbDriver::Postgres => {
                self.db.uri.starts_with("postgres://") || self.db.uri.starts_with("postgresql://")
            }
            DbDriver::Redis => {
                self.db.uri.starts_with("redis://") || self.db.uri.starts_with("rediss://")
            }
        };
        if !scheme_ok {
            return invalid(
                "db.uri",
                "must be a mysql://, postgres:// or redis:// URI matching db.driver",
            );
        }
        if self.auth_server.expiration == 0 {
            return invalid("auth_server.expiration", "must be at least 1 second");
        }
        if self.token.service.is_empty() {
            return invalid("token.service", "must not be empty");
        }
        if self.token.issuer != self.auth_server.issuer {
            return invalid(
                "token.issuer",
                "must equal auth_server.issuer (this hub verifies the tokens it issues)",
            );
        }
        if self.auth_server.admin.is_empty() != self.auth_server.admin_password.is_empty() {
            return invalid(
                "auth_server.admin_password",
                "auth_server.admin and auth_server.admin_password go together",
            );
        }
        if self.auth_server.authn == Authn::AuthnLdap {
            let l = &self.authn_ldap;
            if l.addr.is_empty() {
                return invalid("authn_ldap.addr", "is required with authn = \"authn_ldap\"");
            }
            if l.domain.is_empty() && (l.basedn.is_empty() || l.filter.is_empty()) {
                return invalid(
                    "authn_ldap.filter",
                    "either authn_ldap.domain or authn_ldap.basedn and filter are required",
                );
            }
            if !l.filter.is_empty() && !l.filter.contains("${account}") {
                return invalid("authn_ldap.filter", "must contain ${account}");
            }
            if !l.teams.is_empty() && l.groupfilter.is_empty() {
                return invalid(
                    "authn_ldap.groupfilter",
                    "is required to map groups onto teams",
                );
            }
        }
        if self.listenmode == ListenMode::Https {
            for (key, path) in [
                ("httpscertfile", &self.httpscertfile),
                ("httpskeyfile", &self.httpskeyfile),
            ] {
                if !path.is_file() {
                    return Err(ConfigError::Invalid {
                        key,
                        message: format!(
                            "{} does not exist (needed for listenmode = \"https\")",
                            path.display()
                        ),
                    });
                }
            }
        }
        if self.audit.retention_days == 0 {
            return invalid("audit.retention_days", "must be at least 1");
        }
        self.validate_p2p()?;
        self.validate_rados()
    }

    fn validate_p2p(&self) -> Result<(), ConfigError> {
        let p = &self.p2p;
        if !p.enabled {
            return Ok(());
        }
        if p.listen_addrs()?.is_empty() {
            return Err(ConfigError::Invalid {
                key: "p2p.listen",
                message: "needs at least one address".into(),
            });
        }
        p.bootstrap_addrs()?;
        use crate::p2p::piece::{MAX_PIECE_SIZE, MIN_PIECE_SIZE, PIECE_SIZE_UNIT};
        if !crate::p2p::piece::valid_piece_size(p.piece_size) {
            return Err(ConfigError::Invalid {
                key: "p2p.piece_size",
                message: format!(
                    "must be a multiple of {PIECE_SIZE_UNIT} between {MIN_PIECE_SIZE} and {MAX_PIECE_SIZE} bytes"
                ),
            });
        }
        if p.replicas == 0 || (p.replicas > 1 && !p.tier) {
            return Err(ConfigError::Invalid {
                key: "p2p.replicas",
                message: "must be at least 1; above 1 needs p2p.tier = true".into(),
            });
        }
        if p.ticket_lifetime < 10 {
            return Err(ConfigError::Invalid {
                key: "p2p.ticket_lifetime",
                message: "must be at least 10 seconds".into(),
            });
        }
        Ok(())
    }

    fn validate_rados(&self) -> Result<(), ConfigError> {
        let invalid =
            |key: &'static str, message: String| Err(ConfigError::Invalid { key, message });
        if self.dockyard.backend != Backend::Rados {
            return Ok(());
        }
        if cfg!(not(feature = "rados")) {
            return invalid(
                "dockyard.backend",
                "\"rados\" needs a dockyard built with the rados feature \
                 (cargo build --release --features rados, with librados-dev installed)"
                    .into(),
            );
        }
        let r = &self.rados;
        if !r.conf.is_file() {
            return invalid("rados.conf", format!("{} is not a file", r.conf.display()));
        }
        if r.pool.is_empty() {
            return invalid("rados.pool", "must not be empty".into());
        }
        if r.user.is_empty() {
            return invalid("rados.user", "must not be empty".into());
        }
        if !(RADOS_MIN_CHUNK..=RADOS_MAX_CHUNK).contains(&r.chunksize) {
            return invalid(
                "rados.chunksize",
                format!("must be between {RADOS_MIN_CHUNK} and {RADOS_MAX_CHUNK} bytes"),
            );
        }
        Ok(())
    }

    /// `[dockyard] domains` as a list.
    pub fn domains(&self) -> Vec<String> {
        self.dockyard
            .domains
            .split(',')
            .map(|d| d.trim().to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect()
    }

    /// The database URI the `[db]` section resolves to.
    pub fn db_uri(&self) -> String {
        let uri = &self.db.uri;
        if self.db.driver != DbDriver::Sqlite || uri.starts_with("sqlite:") {
            uri.clone()
        } else if uri.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.dockyard.path.join("dockyard.db").display()
            )
        } else {
            format!("sqlite://{uri}?mode=rwc")
        }
    }
}

/// Applies `DOCKYARD_*` variables onto the parsed file. Keys are matched
/// against the known configuration (so section and key names containing
/// underscores resolve unambiguously); values are typed like the default.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    for (var, raw) in env {
        let name = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let mut target = None;
        for (key, value) in &defaults {
            match value {
                toml::Value::Table(section) => {
                    for (sub, sub_value) in section {
                        if name == format!("{key}_{sub}").to_ascii_lowercase() {
                            target = Some((Some(key.clone()), sub.clone(), sub_value.clone()));
                        }
                    }
                }
                other if name == key.to_ascii_lowercase() => {
                    target = Some((None, key.clone(), other.clone()))
                }
                _ => {}
            }
        }
        let Some((section, key, default)) = target else {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "does not name a configuration key".into(),
            });
        };
        let value = match default {
            toml::Value::Boolean(_) => match raw.as_str() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => {
                    return Err(ConfigError::Env {
                        var: var.clone(),
                        message: format!("{raw:?} is not a boolean"),
                    });
                }
            },
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.parse().map_err(|_| ConfigError::Env {
                    var: var.clone(),
                    message: format!("{raw:?} is not an integer"),
                })?)
            }
            _ => toml::Value::String(raw.clone()),
        };
        let dest = match section {
            Some(s) => table
                .entry(s.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError::Env {
                    var: var.clone(),
                    message: format!("[{s}] in the config file is not a table"),
                })?,
            None => &mut *table,
        };
        dest.insert(key, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_parts(Path::new("t.toml"), text, &env)
    }

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../conf/runtime.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.db.driver, DbDriver::Sqlite);
        assert_eq!(c.dockyard.backend, Backend::Local);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[dockyard]\npathh = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("pathh"), "{e}");
        let e = load("[db]\ndriver = \"oracle\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("driver"), "{e}");
        let e = load("[dockyard]\nupload_expiry = 5\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("dockyard.upload_expiry"), "{e}");
        let e = load("[log]\nlevel = \"[[[\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level"), "{e}");
    }

    #[test]
    fn environment_overrides() {
        let c = load(
            "[dockyard]\npath = \"a\"\n",
            &[
                ("DOCKYARD_DOCKYARD_PATH", "b"),
                ("DOCKYARD_DB_MAX_CONNECTIONS", "3"),
                ("DOCKYARD_RUNMODE", "prod"),
                ("DOCKYARD_DOCKYARD_CACHABLE", "false"),
            ],
        )
        .unwrap();
        assert_eq!(c.dockyard.path, PathBuf::from("b"));
        assert_eq!(c.db.max_connections, 3);
        assert_eq!(c.runmode, RunMode::Prod);
        assert!(!c.dockyard.cachable);
        let e = load("", &[("DOCKYARD_DB_MAX_CONNECTIONS", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DOCKYARD_DB_MAX_CONNECTIONS"), "{e}");
        let e = load("", &[("DOCKYARD_NOPE", "x")]).unwrap_err().to_string();
        assert!(e.contains("DOCKYARD_NOPE"), "{e}");
    }

    #[test]
    fn p2p_section() {
        let c = load(
            "[p2p]\nenabled = true\nlisten = \"/ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/udp/0/quic-v1\"\n",
            &[("DOCKYARD_P2P_PIECE_SIZE", "65536")],
        )
        .unwrap();
        assert_eq!(c.p2p.listen_addrs().unwrap().len(), 2);
        assert_eq!(c.p2p.piece_size, 65536);
        assert!(c.p2p.bootstrap_addrs().unwrap().is_empty());
        let key_of = |text: &str| match load(text, &[]) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key_of("[p2p]\nenabled = true\nbootstrap = \"/ip4/10.0.0.1/tcp/4001\"\n"),
            "p2p.bootstrap"
        );
        assert_eq!(
            key_of("[p2p]\nenabled = true\nlisten = \"nonsense\"\n"),
            "p2p.listen"
        );
        assert_eq!(
            key_of("[p2p]\nenabled = true\npiece_size = 100\n"),
            "p2p.piece_size"
        );
        assert_eq!(
            key_of("[p2p]\nenabled = true\nticket_lifetime = 1\n"),
            "p2p.ticket_lifetime"
        );
        assert_eq!(
            key_of("[p2p]\nenabled = true\nreplicas = 2\n"),
            "p2p.replicas"
        );
        assert_eq!(
            key_of("[p2p]\nenabled = true\ntier = true\nreplicas = 0\n"),
            "p2p.replicas"
        );
        assert!(load("[p2p]\nenabled = true\ntier = true\nreplicas = 3\n", &[]).is_ok());
        // Off: not checked.
        assert!(load("[p2p]\npiece_size = 100\n", &[]).is_ok());
    }

    #[test]
    fn rados_section() {
        let c = load("[rados]\npool = \"p\"\nchunksize = 65536\n", &[]).unwrap();
        assert_eq!(c.rados.pool, "p");
        assert_eq!(c.rados.chunksize, 65536);
        assert_eq!(c.rados.user, "admin");
        let conf = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "[dockyard]\nbackend = \"rados\"\n[rados]\nconf = {:?}\n",
            conf.path().display().to_string()
        );
        if cfg!(feature = "rados") {
            let c = load(&text, &[]).unwrap();
            assert_eq!(c.dockyard.backend, Backend::Rados);
            let e = load(
                "[dockyard]\nbackend = \"rados\"\n[rados]\nconf = \"/nonexistent\"\n",
                &[],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("rados.conf"), "{e}");
            let e = load(&text, &[("DOCKYARD_RADOS_CHUNKSIZE", "100")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("rados.chunksize"), "{e}");
            let e = load(
                &text,
                &[("DOCKYARD_RADOS_CHUNKSIZE", &(200u64 << 20).to_string())],
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("rados.chunksize"), "{e}");
        } else {
            let e = load(&text, &[]).unwrap_err().to_string();
            assert!(e.contains("dockyard.backend") && e.contains("rados"), "{e}");
        }
    }
}
