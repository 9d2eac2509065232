//! LDAP authentication (`[authn_ldap]`): checks a user's password by
//! binding to the directory as that user, reads their mail and name, and
//! finds every group they belong to, directly or through nested groups.
//!
//! Two ways to find the user:
//!
//! - **Search** (`basedn` and `filter` set): bind as `binddn` (or
//!   anonymously), search `basedn`'s subtree with `filter`, `${account}`
//!   replaced by the RFC 4515-escaped user name; exactly one entry must
//!   match. Then bind as that entry with the user's password (on the same
//!   connection), and bind back as `binddn` for the group searches.
//! - **Active Directory UPN** (`domain` set, `filter` empty): bind as
//!   `user@domain` directly, then look up the entry whose
//!   `userPrincipalName` is that (under `basedn`, or the directory's
//!   `defaultNamingContext`) with the user's own rights; if it cannot be
//!   found the identity's DN is the UPN and it has no groups.
//!
//! Groups (only if `groupfilter` is set): `groupfilter` with `${dn}`
//! replaced by the escaped DN of a member is searched under `groupbasedn`
//! (else `basedn`), starting from the user's DN, then again for the groups
//! found, breadth-first (one search per level, members OR-ed together), so
//! a group that is a member of another group passes that membership on.
//! Cycles are harmless (each group is visited once); at most
//! [`MAX_GROUP_DEPTH`] levels and [`MAX_GROUPS`] groups are collected.
//! `memberOf` is not used: with slapo-memberof it only lists direct
//! memberships, and not every directory has it.
//!
//! Every login opens its own connection (`ldap://`, `ldaps://` when `tls`,
//! or `ldap://` upgraded with StartTLS when `starttls`), closed at the end;
//! at most [`MAX_CONCURRENT`] run at once. Connecting (TCP, StartTLS, TLS
//! handshake) and every operation are bounded by the timeout (10 s unless
//! [`Ldap::with_timeout`]), and a whole login by three times that.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::StructureTag;
use ldap3::{LdapConnAsync, LdapConnSettings, LdapResult, ResultEntry, Scope, SearchOptions};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::sync::Semaphore;

use crate::config::LdapConfig;

/// Default bound on connecting and on each operation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Levels of group nesting followed (the user's own groups are level 1).
pub const MAX_GROUP_DEPTH: usize = 10;
/// Groups collected for one user at most; more are dropped with a warning.
pub const MAX_GROUPS: usize = 1000;
/// Logins talking to the directory at once; more wait their turn.
pub const MAX_CONCURRENT: usize = 16;
/// Longer user names and passwords are refused without asking.
const MAX_USER_LEN: usize = 256;
const MAX_PASSWORD_LEN: usize = 4096;
/// Members OR-ed into one group search.
const GROUP_BATCH: usize = 32;
/// Attributes read from the user's entry.
const USER_ATTRS: &[&str] = &["mail", "displayName", "cn"];
/// "No attributes" (RFC 4511 4.5.1.8): group searches need only DNs.
const NO_ATTRS: &[&str] = &["1.1"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapIdentity {
    pub dn: String,
    /// `mail`.
    pub email: Option<String>,
    /// `displayName`, else `cn`.
    pub realname: Option<String>,
    /// DNs of every group the user is in, directly or through nested
    /// groups, as the directory spells them (compare with [`same_dn`]),
    /// nearest first.
    pub groups: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    #[error("authn_ldap configuration: {0}")]
    Config(String),
    #[error("cannot reach the LDAP directory at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("TLS with the LDAP directory at {addr} failed: {reason}")]
    Tls { addr: String, reason: String },
    #[error("the LDAP directory at {addr} did not answer in time ({during})")]
    Timeout { addr: String, during: &'static str },
    #[error("the LDAP directory at {addr} refused the bind as {binddn}: {reason}")]
    ServiceBind {
        addr: String,
        binddn: String,
        reason: String,
    },
    #[error("LDAP {op} at {addr} failed: {reason}")]
    Directory {
        addr: String,
        op: &'static str,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Plain,
    Ldaps,
    StartTls,
}

#[derive(Debug)]
enum Mode {
    /// Search `basedn` with `filter`, then bind as the entry found.
    Search { basedn: String, filter: String },
    /// Bind as `user@domain`; `basedn` (may be empty) is where the entry is
    /// looked up afterwards.
    Upn { domain: String, basedn: String },
}

pub struct Ldap {
    addr: String,
    url: String,
    security: Security,
    tls: Option<Arc<ClientConfig>>,
    insecure: bool,
    mode: Mode,
    binddn: String,
    bindpassword: String,
    /// `groupbasedn`, else `basedn` (empty in UPN mode without either:
    /// the naming context found at login is used).
    groupbase: String,
    groupfilter: String,
    timeout: Duration,
    max_depth: usize,
    max_groups: usize,
    slots: Semaphore,
}

impl std::fmt::Debug for Ldap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ldap")
            .field("url", &self.url)
            .field("security", &self.security)
            .field("insecure", &self.insecure)
            .field("mode", &self.mode)
            .field("binddn", &self.binddn)
            .field("groupbase", &self.groupbase)
            .field("groupfilter", &self.groupfilter)
            .finish_non_exhaustive()
    }
}

fn config_err(msg: impl Into<String>) -> LdapError {
    LdapError::Config(msg.into())
}

/// Checks that `template` with `placeholder` replaced is a valid filter.
fn check_filter(key: &str, template: &str, placeholder: &str) -> Result<(), LdapError> {
    if !template.contains(placeholder) {
        return Err(config_err(format!(
            "{key} {template:?} does not contain {placeholder}"
        )));
    }
    ldap3::parse_filter(template.replace(placeholder, "x"))
        .map(|_| ())
        .map_err(|_| config_err(format!("{key} {template:?} is not a valid LDAP filter")))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host:port`, `host`, `[v6]:port` or `[v6]`.
fn host_of(addr: &str) -> &str {
    if addr.starts_with('[') {
        return addr.split_once(']').map_or(addr, |(h, _)| &h[1..]);
    }
    match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    }
}

impl Ldap {
    /// Validates the configuration and loads `certfile` (blocking file
    /// reads: call it at startup, not on a request).
    pub fn new(cfg: &LdapConfig) -> Result<Ldap, LdapError> {
        let addr = cfg.addr.trim();
        if addr.is_empty() {
            return Err(config_err("addr is empty (host:port of the directory)"));
        }
        if addr.contains("://")
            || addr
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
        {
            return Err(config_err(format!(
                "addr {addr:?} must be host:port (the scheme follows from tls/starttls)"
            )));
        }
        let security = match (cfg.tls, cfg.starttls) {
            (true, true) => {
                return Err(config_err(
                    "tls (LDAPS) and starttls are exclusive: set one",
                ));
            }
            (true, false) => Security::Ldaps,
            (false, true) => Security::StartTls,
            (false, false) => Security::Plain,
        };
        let url = format!(
            "{}://{addr}",
            if security == Security::Ldaps {
                "ldaps"
            } else {
                "ldap"
            }
        );

        let mode = if !cfg.filter.trim().is_empty() {
            if cfg.basedn.trim().is_empty() {
                return Err(config_err("basedn is required with filter"));
            }
            check_filter("filter", &cfg.filter, "${account}")?;
            if !cfg.domain.is_empty() {
                tracing::warn!("authn_ldap: domain is ignored because filter is set");
            }
            Mode::Search {
                basedn: cfg.basedn.trim().to_string(),
                filter: cfg.filter.trim().to_string(),
            }
        } else if !cfg.domain.trim().is_empty() {
            let domain = cfg.domain.trim();
            if domain
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '@')
            {
                return Err(config_err(format!(
                    "domain {domain:?} is not a domain name"
                )));
            }
            if !cfg.binddn.is_empty() {
                tracing::warn!(
                    "authn_ldap: binddn is not used with domain (lookups run as the user)"
                );
            }
            Mode::Upn {
                domain: domain.to_string(),
                basedn: cfg.basedn.trim().to_string(),
            }
        } else {
            return Err(config_err(
                "set basedn and filter (search for the user), or domain (Active Directory)",
            ));
        };

        if !cfg.binddn.is_empty() && cfg.bindpassword.is_empty() {
            // A simple bind with a name and no password is an
            // "unauthenticated bind": anonymous in disguise.
            return Err(config_err("binddn is set but bindpassword is empty"));
        }

        let groupfilter = cfg.groupfilter.trim().to_string();
        if !groupfilter.is_empty() {
            check_filter("groupfilter", &groupfilter, "${dn}")?;
        } else if !cfg.teams.is_empty() {
            return Err(config_err(
                "teams map LDAP groups but groupfilter is empty, so no groups are ever found",
            ));
        }
        for t in &cfg.teams {
            if t.group.trim().is_empty() || parse_dn(&t.group).is_none() {
                return Err(config_err(format!(
                    "teams: group {:?} is not a DN",
                    t.group
                )));
            }
        }
        let groupbase = if cfg.groupbasedn.trim().is_empty() {
            cfg.basedn.trim().to_string()
        } else {
            cfg.groupbasedn.trim().to_string()
        };

        let tls = if security == Security::Plain {
            if !cfg.certfile.is_empty() || cfg.insecuretlsskipverify {
                tracing::warn!(
                    "authn_ldap: certfile and insecuretlsskipverify are ignored without tls or starttls"
                );
            }
            if !is_loopback(host_of(addr)) {
                tracing::warn!(
                    "authn_ldap: passwords go to {addr} in clear text; set starttls or tls"
                );
            }
            None
        } else {
            Some(Arc::new(tls_config(cfg)?))
        };

        Ok(Ldap {
            addr: addr.to_string(),
            url,
            security,
            tls,
            insecure: cfg.insecuretlsskipverify,
            mode,
            binddn: cfg.binddn.clone(),
            bindpassword: cfg.bindpassword.clone(),
            groupbase,
            groupfilter,
            timeout: DEFAULT_TIMEOUT,
            max_depth: MAX_GROUP_DEPTH,
            max_groups: MAX_GROUPS,
            slots: Semaphore::new(MAX_CONCURRENT),
        })
    }

    /// Bounds connecting and each operation by `timeout` (and a whole
    /// login by three times that) instead of [`DEFAULT_TIMEOUT`].
    #[cfg(test)]
    pub fn with_timeout(mut self, timeout: Duration) -> Ldap {
        self.timeout = timeout;
        self
    }

    /// Some(identity) if the directory accepts these credentials; None if
    /// it refuses them (unknown user, wrong password, empty password,
    /// ambiguous search). Err only for failures of the directory or the
    /// connection (including a service account the directory refuses).
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<LdapIdentity>, LdapError> {
        // An empty password would make the bind "unauthenticated", which
        // many directories (Active Directory among them) accept as an
        // anonymous bind: never send one.
        if user.is_empty()
            || password.is_empty()
            || user.len() > MAX_USER_LEN
            || password.len() > MAX_PASSWORD_LEN
            || user.chars().any(char::is_control)
        {
            return Ok(None);
        }
        match tokio::time::timeout(self.timeout * 3, self.login(user, password)).await {
            Ok(result) => result,
            Err(_) => Err(LdapError::Timeout {
                addr: self.addr.clone(),
                during: "the whole login",
            }),
        }
    }

    async fn login(&self, user: &str, password: &str) -> Result<Option<LdapIdentity>, LdapError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let mut conn = self.connect().await?;
        let result = match &self.mode {
            Mode::Search { basedn, filter } => {
                self.search_login(&mut conn, basedn, filter, user, password)
                    .await
            }
            Mode::Upn { domain, basedn } => {
                self.upn_login(&mut conn, domain, basedn, user, password)
                    .await
            }
        };
        conn.close().await;
        result
    }

    async fn search_login(
        &self,
        conn: &mut Conn,
        basedn: &str,
        filter: &str,
        user: &str,
        password: &str,
    ) -> Result<Option<LdapIdentity>, LdapError> {
        if !self.binddn.is_empty() {
            self.service_bind(conn).await?;
        }
        let filter = filter.replace("${account}", &escape_filter_value(user));
        let found = conn
            .search(
                "user search",
                basedn,
                Scope::Subtree,
                &filter,
                USER_ATTRS,
                2,
            )
            .await?;
        let entry = match (found.entries.len(), found.truncated) {
            (0, _) => {
                tracing::debug!(user, "ldap: no such user");
                return Ok(None);
            }
            (1, false) => found.entries.into_iter().next().expect("one entry"),
            _ => {
                tracing::warn!(
                    user,
                    filter,
                    "ldap: the user search matched several entries"
                );
                return Ok(None);
            }
        };
        if entry.dn.is_empty() || !conn.user_bind(&entry.dn, password).await? {
            return Ok(None);
        }
        let groups = if self.groupfilter.is_empty() {
            Vec::new()
        } else {
            // Group searches run with the service account's rights.
            self.service_bind(conn).await?;
            self.groups_of(conn, &self.groupbase, &entry.dn).await?
        };
        Ok(Some(entry.into_identity(groups)))
    }

    async fn upn_login(
        &self,
        conn: &mut Conn,
        domain: &str,
        basedn: &str,
        user: &str,
        password: &str,
    ) -> Result<Option<LdapIdentity>, LdapError> {
        // Only a plain name: Active Directory also takes DNs and
        // DOMAIN\name as bind names.
        if user.contains(['@', '\\', ',', '=']) {
            return Ok(None);
        }
        let upn = format!("{user}@{domain}");
        if !conn.user_bind(&upn, password).await? {
            return Ok(None);
        }
        let base = if basedn.is_empty() {
            conn.naming_context().await?
        } else {
            Some(basedn.to_string())
        };
        let filter = format!("(userPrincipalName={})", escape_filter_value(&upn));
        let mut entry = None;
        if let Some(base) = &base {
            let found = conn
                .search("user lookup", base, Scope::Subtree, &filter, USER_ATTRS, 2)
                .await;
            match found {
                Ok(found) if found.entries.len() == 1 && !found.truncated => {
                    entry = found.entries.into_iter().next();
                }
                Ok(found) => tracing::warn!(
                    upn,
                    base,
                    entries = found.entries.len(),
                    "ldap: bound as the UPN but found no single entry for it"
                ),
                Err(e @ LdapError::Directory { .. }) => {
                    tracing::warn!(upn, "ldap: bound as the UPN but cannot read its entry: {e}")
                }
                Err(e) => return Err(e),
            }
        }
        let Some(entry) = entry else {
            return Ok(Some(LdapIdentity {
                dn: upn,
                email: None,
                realname: None,
                groups: Vec::new(),
            }));
        };
        let groupbase = if !self.groupbase.is_empty() {
            Some(self.groupbase.as_str())
        } else {
            base.as_deref()
        };
        let groups = match groupbase {
            Some(groupbase) if !self.groupfilter.is_empty() => {
                self.groups_of(conn, groupbase, &entry.dn).await?
            }
            _ => Vec::new(),
        };
        Ok(Some(entry.into_identity(groups)))
    }

    /// Binds as `binddn`, or anonymously when it is empty.
    async fn service_bind(&self, conn: &mut Conn) -> Result<(), LdapError> {
        let res = conn
            .bind("service bind", &self.binddn, &self.bindpassword)
            .await?;
        if res.rc == 0 {
            return Ok(());
        }
        Err(LdapError::ServiceBind {
            addr: self.addr.clone(),
            binddn: if self.binddn.is_empty() {
                "anonymous".into()
            } else {
                self.binddn.clone()
            },
            reason: res.to_string(),
        })
    }

    /// Every group `dn` is in, following nested groups breadth-first.
    async fn groups_of(
        &self,
        conn: &mut Conn,
        base: &str,
        dn: &str,
    ) -> Result<Vec<String>, LdapError> {
        let mut seen = HashSet::from([normalize_dn(dn)]);
        let mut groups = Vec::new();
        let mut frontier = vec![dn.to_string()];
        for _ in 0..self.max_depth {
            let mut next = Vec::new();
            for chunk in frontier.chunks(GROUP_BATCH) {
                let mut filter = String::new();
                if chunk.len() > 1 {
                    filter.push_str("(|");
                }
                for member in chunk {
                    filter.push_str(
                        &self
                            .groupfilter
                            .replace("${dn}", &escape_filter_value(member)),
                    );
                }
                if chunk.len() > 1 {
                    filter.push(')');
                }
                let budget = self.max_groups - groups.len();
                let found = conn
                    .search(
                        "group search",
                        base,
                        Scope::Subtree,
                        &filter,
                        NO_ATTRS,
                        budget,
                    )
                    .await?;
                for entry in found.entries {
                    if groups.len() < self.max_groups && seen.insert(normalize_dn(&entry.dn)) {
                        groups.push(entry.dn.clone());
                        next.push(entry.dn);
                    }
                }
                if found.truncated || groups.len() >= self.max_groups {
                    tracing::warn!(
                        dn,
                        "ldap: more than {} groups; the rest are ignored",
                        self.max_groups
                    );
                    return Ok(groups);
                }
            }
            if next.is_empty() {
                return Ok(groups);
            }
            frontier = next;
        }
        tracing::warn!(
            dn,
            "ldap: groups nested deeper than {} levels are ignored",
            self.max_depth
        );
        Ok(groups)
    }

    async fn connect(&self) -> Result<Conn, LdapError> {
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout);
        if let Some(tls) = &self.tls {
            settings = settings
                .set_config(tls.clone())
                .set_starttls(self.security == Security::StartTls)
                .set_no_tls_verify(self.insecure);
        }
        let (conn, ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| self.connect_error(e))?;
        let addr = self.addr.clone();
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(addr, "ldap connection ended: {e}");
            }
        });
        Ok(Conn {
            ldap,
            driver,
            addr: self.addr.clone(),
            timeout: self.timeout,
        })
    }

    fn connect_error(&self, e: ldap3::LdapError) -> LdapError {
        let addr = self.addr.clone();
        let tls = |reason: String| LdapError::Tls {
            addr: addr.clone(),
            reason,
        };
        match &e {
            ldap3::LdapError::Timeout { .. } => {
                return LdapError::Timeout {
                    addr,
                    during: "connecting",
                };
            }
            ldap3::LdapError::Rustls { .. } | ldap3::LdapError::DNSName { .. } => {
                return tls(e.to_string());
            }
            ldap3::LdapError::LdapResult { result } if self.security == Security::StartTls => {
                return tls(format!("the directory refused StartTLS: {result}"));
            }
            ldap3::LdapError::Io { source } if self.security != Security::Plain => {
                if let Some(inner) = source
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    return tls(inner.to_string());
                }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
                ) {
                    return tls(format!("{source} (is it a TLS port?)"));
                }
            }
            _ => {}
        }
        LdapError::Unreachable {
            addr,
            reason: e.to_string(),
        }
    }
}

/// TLS settings: the ring provider (the build also links aws-lc-rs, so the
/// process default cannot be relied on), TLS 1.2 and 1.3, verification
/// against `certfile`, the system's roots, or nothing.
fn tls_config(cfg: &LdapConfig) -> Result<ClientConfig, LdapError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_err(format!("TLS: {e}")))?;
    if cfg.insecuretlsskipverify {
        tracing::warn!(
            "authn_ldap: insecuretlsskipverify: the directory's certificate is not verified, \
             so anyone on the path can impersonate it and read passwords"
        );
        if !cfg.certfile.is_empty() {
            tracing::warn!("authn_ldap: certfile is ignored with insecuretlsskipverify");
        }
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    if !cfg.certfile.is_empty() {
        let pem = std::fs::read(&cfg.certfile)
            .map_err(|e| config_err(format!("certfile {}: {e}", cfg.certfile)))?;
        let mut count = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| config_err(format!("certfile {}: {e}", cfg.certfile)))?;
            roots
                .add(cert)
                .map_err(|e| config_err(format!("certfile {}: {e}", cfg.certfile)))?;
            count += 1;
        }
        if count == 0 {
            return Err(config_err(format!(
                "certfile {} holds no PEM certificate",
                cfg.certfile
            )));
        }
    } else {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!("authn_ldap: loading the system's CA certificates: {e}");
        }
        let (added, _) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!(
                "authn_ldap: no system CA certificates found: set certfile, or TLS to the directory will fail"
            );
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `insecuretlsskipverify`: any certificate, for any name, is accepted;
/// the handshake signatures are still checked (so the peer does hold the
/// key of the certificate it shows, whatever that is).
#[derive(Debug)]
struct SkipVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One connection, its driver task aborted when dropped (so a login that
/// is cancelled leaves nothing behind).
struct Conn {
    ldap: ldap3::Ldap,
    driver: tokio::task::JoinHandle<()>,
    addr: String,
    timeout: Duration,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A search's entries (referrals skipped) and whether there were more.
struct Found {
    entries: Vec<Entry>,
    truncated: bool,
}

struct Entry {
    dn: String,
    attrs: Vec<(String, Vec<String>)>,
}

impl Entry {
    fn first(&self, name: &str) -> Option<String> {
        self.attrs
            .iter()
            .filter(|(a, _)| a.eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values)
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
            .map(str::to_string)
    }

    fn into_identity(self, groups: Vec<String>) -> LdapIdentity {
        LdapIdentity {
            email: self.first("mail"),
            realname: self.first("displayName").or_else(|| self.first("cn")),
            dn: self.dn,
            groups,
        }
    }
}

/// A SearchResultEntry (`[APPLICATION 4] { objectName, attributes }`),
/// parsed without panicking on what a broken server may send.
fn parse_entry(tag: StructureTag) -> Option<Entry> {
    let mut parts = tag.match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs = Vec::new();
    if let Some(list) = parts.next() {
        for attr in list.expect_constructed()? {
            let mut attr = attr.expect_constructed()?.into_iter();
            let name = String::from_utf8(attr.next()?.expect_primitive()?).ok()?;
            let values = attr
                .next()?
                .expect_constructed()?
                .into_iter()
                .filter_map(StructureTag::expect_primitive)
                .filter_map(|v| String::from_utf8(v).ok())
                .collect();
            attrs.push((name, values));
        }
    }
    Some(Entry { dn, attrs })
}

impl Conn {
    fn op_error(&self, op: &'static str, e: ldap3::LdapError) -> LdapError {
        match e {
            ldap3::LdapError::Timeout { .. } => LdapError::Timeout {
                addr: self.addr.clone(),
                during: op,
            },
            e => LdapError::Directory {
                addr: self.addr.clone(),
                op,
                reason: e.to_string(),
            },
        }
    }

    async fn bind(
        &mut self,
        op: &'static str,
        dn: &str,
        password: &str,
    ) -> Result<LdapResult, LdapError> {
        self.ldap
            .with_timeout(self.timeout)
            .simple_bind(dn, password)
            .await
            .map_err(|e| self.op_error(op, e))
    }

    /// Binds as a user: Ok(false) when the directory refuses the
    /// credentials, Err when it fails otherwise.
    async fn user_bind(&mut self, dn: &str, password: &str) -> Result<bool, LdapError> {
        if password.is_empty() {
            // An "unauthenticated bind": it would succeed anonymously.
            return Ok(false);
        }
        let res = self.bind("user bind", dn, password).await?;
        match res.rc {
            0 => Ok(true),
            // noSuchObject, invalidDNSyntax, inappropriateAuthentication,
            // invalidCredentials, insufficientAccessRights,
            // unwillingToPerform (e.g. a locked or disabled account).
            32 | 34 | 48 | 49 | 50 | 53 => {
                tracing::debug!(dn, "ldap: bind refused: {res}");
                Ok(false)
            }
            _ => Err(LdapError::Directory {
                addr: self.addr.clone(),
                op: "user bind",
                reason: res.to_string(),
            }),
        }
    }

    /// Reads at most `limit` entries; `truncated` when there were more.
    async fn search(
        &mut self,
        op: &'static str,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&'static str],
        limit: usize,
    ) -> Result<Found, LdapError> {
        let opts = SearchOptions::new().sizelimit(i32::try_from(limit).unwrap_or(i32::MAX));
        let mut stream = self
            .ldap
            .with_timeout(self.timeout)
            .with_search_options(opts)
            .streaming_search(base, scope, filter, attrs.to_vec())
            .await
            .map_err(|e| self.op_error(op, e))?;
        let mut entries = Vec::new();
        loop {
            let item: Option<ResultEntry> =
                stream.next().await.map_err(|e| self.op_error(op, e))?;
            let Some(item) = item else { break };
            if item.is_ref() || item.is_intermediate() {
                continue;
            }
            let entry = parse_entry(item.0).ok_or_else(|| LdapError::Directory {
                addr: self.addr.clone(),
                op,
                reason: "malformed search result entry".into(),
            })?;
            if entries.len() == limit {
                // The server ignored the size limit: stop it.
                let id = stream.ldap_handle().last_id();
                stream.finish().await;
                let _ = self.ldap.abandon(id).await;
                return Ok(Found {
                    entries,
                    truncated: true,
                });
            }
            entries.push(entry);
        }
        let res = stream.finish().await;
        match res.rc {
            // success, referral (entries elsewhere are not followed).
            0 | 10 => Ok(Found {
                entries,
                truncated: false,
            }),
            // sizeLimitExceeded
            4 => Ok(Found {
                entries,
                truncated: true,
            }),
            _ => Err(LdapError::Directory {
                addr: self.addr.clone(),
                op,
                reason: res.to_string(),
            }),
        }
    }

    /// The root DSE's `defaultNamingContext` (Active Directory), else its
    /// first `namingContexts`.
    async fn naming_context(&mut self) -> Result<Option<String>, LdapError> {
        let found = self
            .search(
                "root DSE",
                "",
                Scope::Base,
                "(objectClass=*)",
                &["defaultNamingContext", "namingContexts"],
                1,
            )
            .await;
        let found = match found {
            Ok(found) => found,
            Err(LdapError::Directory { reason, .. }) => {
                tracing::warn!("ldap: cannot read the root DSE: {reason}");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(found.entries.first().and_then(|e| {
            e.first("defaultNamingContext")
                .or_else(|| e.first("namingContexts"))
        }))
    }

    /// Unbinds (politely, briefly) and closes.
    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ldap.unbind()).await;
    }
}

/// Escapes a value for an LDAP filter (RFC 4515): `\`, `*`, `(`, `)` and
/// NUL, and also every non-ASCII byte and ASCII control, as `\XX`.
fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for &b in value.as_bytes() {
        if matches!(b, b'\\' | b'*' | b'(' | b')') || !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\{b:02x}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// An RDN: its attribute type/value pairs, normalized (values escaped
/// again as RFC 4514 says, or `#hex` as written).
type Rdn = Vec<(String, String)>;

/// Canonical names of attribute types that are also written as OIDs or
/// long names.
fn canonical_type(t: &str) -> &str {
    match t {
        "2.5.4.3" | "commonname" => "cn",
        "2.5.4.4" | "surname" => "sn",
        "2.5.4.6" | "countryname" => "c",
        "2.5.4.7" | "localityname" => "l",
        "2.5.4.8" | "stateorprovincename" => "st",
        "2.5.4.9" | "streetaddress" => "street",
        "2.5.4.10" | "organizationname" => "o",
        "2.5.4.11" | "organizationalunitname" => "ou",
        "0.9.2342.19200300.100.1.1" | "userid" => "uid",
        "0.9.2342.19200300.100.1.25" | "domaincomponent" => "dc",
        t => t,
    }
}

/// Lower case, runs of white space as one space, none at either end
/// (caseIgnoreMatch with RFC 4518's insignificant space handling).
fn normalize_value(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Parses an RFC 4514 DN (also RFC 2253's `;` separators, quoted values
/// and spaces around separators); None if it is not one.
fn parse_dn(dn: &str) -> Option<Vec<Rdn>> {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    /// After a `\`: a hex pair or an escaped character.
    fn unescape(b: &[u8], i: &mut usize, out: &mut Vec<u8>) -> Option<()> {
        let c = *b.get(*i)?;
        if let (Some(h), Some(l)) = (hex(c), b.get(*i + 1).and_then(|&c| hex(c))) {
            out.push(h << 4 | l);
            *i += 2;
        } else {
            out.push(c);
            *i += 1;
        }
        Some(())
    }
    let b = dn.as_bytes();
    let skip_spaces = |i: &mut usize| {
        while *i < b.len() && b[*i] == b' ' {
            *i += 1;
        }
    };
    let mut i = 0;
    let mut rdns = Vec::new();
    let mut rdn = Vec::new();
    skip_spaces(&mut i);
    if i == b.len() {
        return Some(rdns);
    }
    loop {
        skip_spaces(&mut i);
        let start = i;
        while i < b.len() && b[i] != b'=' {
            i += 1;
        }
        if i == b.len() {
            return None;
        }
        let ty = dn[start..i].trim().to_ascii_lowercase();
        let ty = ty.strip_prefix("oid.").unwrap_or(&ty);
        if ty.is_empty()
            || !ty
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
        {
            return None;
        }
        let ty = canonical_type(ty).to_string();
        i += 1;
        skip_spaces(&mut i);
        let value = if b.get(i) == Some(&b'#') {
            // BER, hex-encoded: compared as written.
            let start = i;
            while i < b.len() && !matches!(b[i], b',' | b';' | b'+') {
                i += 1;
            }
            dn[start..i].trim_end().to_ascii_lowercase()
        } else if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        i += 1;
                        unescape(b, &mut i, &mut v)?;
                    }
                    c => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            skip_spaces(&mut i);
            ldap3::dn_escape(normalize_value(&String::from_utf8(v).ok()?)).into_owned()
        } else {
            let mut v = Vec::new();
            while i < b.len() && !matches!(b[i], b',' | b';' | b'+') {
                if b[i] == b'\\' {
                    i += 1;
                    unescape(b, &mut i, &mut v)?;
                } else {
                    v.push(b[i]);
                    i += 1;
                }
            }
            ldap3::dn_escape(normalize_value(&String::from_utf8(v).ok()?)).into_owned()
        };
        rdn.push((ty, value));
        match b.get(i) {
            None => {
                rdns.push(std::mem::take(&mut rdn));
                return Some(rdns);
            }
            Some(b'+') => i += 1,
            Some(b',' | b';') => {
                rdns.push(std::mem::take(&mut rdn));
                i += 1;
            }
            Some(_) => return None,
        }
    }
}

/// A DN in a canonical form, for comparing: attribute types in lower case
/// (and `cn`, `ou`, `o`, `dc`, `uid`, `c`, `l`, `st`, `street`, `sn`
/// for their OIDs and long names); values unescaped, in lower case, with
/// white space runs as one space and none at either end; the values of a
/// multi-valued RDN sorted; no spaces around `,` `+` `=`; `;` read as `,`.
/// Values in `#hex` form are only lower-cased. Something that is not a DN
/// is only trimmed and lower-cased. This is what directories do for the
/// naming attributes in practice (all caseIgnoreMatch); attributes
/// matched case-sensitively in RDNs are very rare.
pub fn normalize_dn(dn: &str) -> String {
    let Some(rdns) = parse_dn(dn) else {
        return dn.trim().to_lowercase();
    };
    rdns.into_iter()
        .map(|mut rdn| {
            rdn.sort();
            rdn.into_iter()
                .map(|(t, v)| format!("{t}={v}"))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether two DNs name the same entry, as far as can be told without the
/// directory's schema (see [`normalize_dn`]).
pub fn same_dn(a: &str, b: &str) -> bool {
    normalize_dn(a) == normalize_dn(b)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::LdapTeamMap;
    use crate::testsupport::{Service, services_dir, start};

    const PLAIN: &str = "127.0.0.1:30389";
    const LDAPS: &str = "127.0.0.1:30636";
    const SUFFIX: &str = "dc=dockyard,dc=test";
    const DEVS: &str = "cn=devs,ou=groups,dc=dockyard,dc=test";
    const OPS: &str = "cn=ops,ou=groups,dc=dockyard,dc=test";
    const PLATFORM: &str = "cn=platform,ou=groups,dc=dockyard,dc=test";

    /// Starts the test directory (a blocking script: off the runtime).
    async fn directory() {
        tokio::task::spawn_blocking(|| start(Service::OpenLdap))
            .await
            .expect("start OpenLDAP");
    }

    fn ca() -> String {
        services_dir()
            .join("openldap/tls/ca.crt")
            .to_string_lossy()
            .into_owned()
    }

    /// Anonymous search for inetOrgPerson by uid, nested groupOfNames.
    fn cfg() -> LdapConfig {
        LdapConfig {
            addr: PLAIN.into(),
            basedn: SUFFIX.into(),
            filter: "(&(objectClass=inetOrgPerson)(uid=${account}))".into(),
            groupbasedn: format!("ou=groups,{SUFFIX}"),
            groupfilter: "(&(objectClass=groupOfNames)(member=${dn}))".into(),
            ..LdapConfig::default()
        }
    }

    /// A PEM file with a certificate that did not sign the server's.
    fn other_ca() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
        std::fs::write(file.path(), cert.cert.pem()).unwrap();
        file
    }

    fn ldap(cfg: &LdapConfig) -> Ldap {
        Ldap::new(cfg).expect("valid config")
    }

    async fn login(l: &Ldap, user: &str, password: &str) -> Option<LdapIdentity> {
        l.authenticate(user, password)
            .await
            .expect("directory answers")
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[tokio::test]
    async fn right_password() {
        directory().await;
        let id = login(&ldap(&cfg()), "alice", "alicepw")
            .await
            .expect("accepted");
        assert_eq!(id.dn, "uid=alice,ou=people,dc=dockyard,dc=test");
        assert_eq!(id.email.as_deref(), Some("alice@dockyard.test"));
        assert_eq!(id.realname.as_deref(), Some("Alice Liddell"));
        assert_eq!(id.groups, [DEVS, PLATFORM], "nearest first");
    }

    #[tokio::test]
    async fn wrong_empty_and_unknown() {
        directory().await;
        let l = ldap(&cfg());
        assert_eq!(login(&l, "alice", "bobpw").await, None);
        assert_eq!(login(&l, "alice", "alicepw ").await, None);
        assert_eq!(login(&l, "alice", "").await, None);
        assert_eq!(login(&l, "", "alicepw").await, None);
        assert_eq!(login(&l, "mallory", "alicepw").await, None);
        assert_eq!(login(&l, "ålice", "alicepw").await, None);
        assert_eq!(login(&l, &"a".repeat(300), "alicepw").await, None);
        assert_eq!(login(&l, "alice\n", "alicepw").await, None);
        assert_eq!(login(&l, "alice", &"p".repeat(5000)).await, None);
    }

    #[tokio::test]
    async fn filter_injection() {
        directory().await;
        let l = ldap(&cfg());
        // Unescaped, "al*" or "*)(uid=alice" would find alice alone and
        // her password would then log in under another name.
        for user in [
            "*",
            "al*",
            "a*e",
            "alice)(uid=*",
            "*)(uid=alice",
            "alice)(|(uid=*",
            "*)(|(objectClass=*",
            "alice\\",
            "alice\0",
            "(uid=alice)",
        ] {
            assert_eq!(login(&l, user, "alicepw").await, None, "user {user:?}");
        }
        // Upper case is the same account for the directory (uid is
        // caseIgnoreMatch): not an injection.
        let id = login(&l, "ALICE", "alicepw").await.expect("accepted");
        assert_eq!(id.dn, "uid=alice,ou=people,dc=dockyard,dc=test");
    }

    #[tokio::test]
    async fn ambiguous_search_is_refused() {
        directory().await;
        // Everyone in ou=people matches: more than one entry, no login.
        let cfg = LdapConfig {
            filter: "(|(uid=${account})(objectClass=inetOrgPerson))".into(),
            ..cfg()
        };
        assert_eq!(login(&ldap(&cfg), "alice", "alicepw").await, None);
    }

    #[tokio::test]
    async fn nested_groups() {
        directory().await;
        let l = ldap(&cfg());
        let groups = |user: &'static str, pw: &'static str| {
            let l = &l;
            async move { sorted(login(l, user, pw).await.expect("accepted").groups) }
        };
        assert_eq!(groups("alice", "alicepw").await, [DEVS, PLATFORM]);
        assert_eq!(groups("carol", "carolpw").await, [PLATFORM]);
        assert_eq!(groups("bob", "bobpw").await, [OPS]);
        assert_eq!(groups("dave", "davepw").await, Vec::<String>::new());

        // Groups searched under basedn (the whole suffix) when groupbasedn
        // is empty; none at all without groupfilter.
        let under_basedn = ldap(&LdapConfig {
            groupbasedn: String::new(),
            ..cfg()
        });
        let id = login(&under_basedn, "alice", "alicepw").await.unwrap();
        assert_eq!(sorted(id.groups), [DEVS, PLATFORM]);
        let no_groups = ldap(&LdapConfig {
            groupfilter: String::new(),
            ..cfg()
        });
        let id = login(&no_groups, "alice", "alicepw").await.unwrap();
        assert!(id.groups.is_empty());
        assert_eq!(id.email.as_deref(), Some("alice@dockyard.test"));
    }

    /// Groups of our own under ou=ldap-rs-tests (members are DNs of no
    /// entry, so nobody's real groups change): a cycle, a chain deeper
    /// than MAX_GROUP_DEPTH, and a fan (two groups at each level).
    async fn seed_test_groups(l: &Ldap) -> String {
        let base = format!("ou=ldap-rs-tests,{SUFFIX}");
        let mut conn = l.connect().await.unwrap();
        let res = conn
            .bind("test", &format!("cn=admin,{SUFFIX}"), "admin")
            .await
            .unwrap();
        assert_eq!(res.rc, 0, "{res}");
        let add = |dn: String, attrs: Vec<(&'static str, HashSet<String>)>| {
            let mut ldap = conn.ldap.clone();
            async move {
                let attrs: Vec<(String, HashSet<String>)> =
                    attrs.into_iter().map(|(a, v)| (a.to_string(), v)).collect();
                let res = ldap.add(&dn, attrs).await.unwrap();
                // 68: entryAlreadyExists (an earlier run).
                assert!(res.rc == 0 || res.rc == 68, "add {dn}: {res}");
            }
        };
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        add(
            base.clone(),
            vec![
                ("objectClass", set(&["top", "organizationalUnit"])),
                ("ou", set(&["ldap-rs-tests"])),
            ],
        )
        .await;
        let group = |name: String, members: Vec<String>| {
            let dn = format!("cn={name},{base}");
            add(
                dn,
                vec![
                    ("objectClass", set(&["top", "groupOfNames"])),
                    ("cn", HashSet::from([name])),
                    ("member", members.into_iter().collect()),
                ],
            )
        };
        // cycle-a <- cycle-b <- cycle-c <- cycle-a, and the member in a.
        group(
            "cycle-a".into(),
            vec![
                format!("uid=cycler,ou=nobody,{SUFFIX}"),
                format!("cn=cycle-c,{base}"),
            ],
        )
        .await;
        group("cycle-b".into(), vec![format!("cn=cycle-a,{base}")]).await;
        group("cycle-c".into(), vec![format!("cn=cycle-b,{base}")]).await;
        // chain-1 holds the member, chain-N+1 holds chain-N.
        group(
            "chain-1".into(),
            vec![format!("uid=chained,ou=nobody,{SUFFIX}")],
        )
        .await;
        for n in 2..=MAX_GROUP_DEPTH + 3 {
            group(
                format!("chain-{n}"),
                vec![format!("cn=chain-{},{base}", n - 1)],
            )
            .await;
        }
        // fan-a, fan-b hold the member; fan-top holds both, fan-a-top fan-a.
        let fanned = format!("uid=fanned,ou=nobody,{SUFFIX}");
        group("fan-a".into(), vec![fanned.clone()]).await;
        group("fan-b".into(), vec![fanned]).await;
        group(
            "fan-top".into(),
            vec![format!("cn=fan-a,{base}"), format!("cn=fan-b,{base}")],
        )
        .await;
        group("fan-a-top".into(), vec![format!("cn=fan-a,{base}")]).await;
        conn.close().await;
        base
    }

    #[tokio::test]
    async fn group_cycles_and_depth_are_bounded() {
        directory().await;
        let l = ldap(&cfg());
        let base = seed_test_groups(&l).await;
        let mut conn = l.connect().await.unwrap();

        let groups = l
            .groups_of(&mut conn, &base, &format!("uid=cycler,ou=nobody,{SUFFIX}"))
            .await
            .unwrap();
        assert_eq!(
            groups,
            ["a", "b", "c"].map(|g| format!("cn=cycle-{g},{base}")),
            "each group once"
        );

        let groups = l
            .groups_of(
                &mut conn,
                &base,
                &format!("UID=Chained, OU=nobody,{SUFFIX}"),
            )
            .await
            .unwrap();
        let expected: Vec<String> = (1..=MAX_GROUP_DEPTH)
            .map(|n| format!("cn=chain-{n},{base}"))
            .collect();
        assert_eq!(groups, expected, "{MAX_GROUP_DEPTH} levels, nearest first");

        // Two groups per level: one search per level, both members in it.
        let groups = l
            .groups_of(&mut conn, &base, &format!("uid=fanned,ou=nobody,{SUFFIX}"))
            .await
            .unwrap();
        let name = |g: &String| g.split([',', '=']).nth(1).unwrap().to_string();
        assert_eq!(groups.len(), 4, "{groups:?}");
        assert_eq!(
            sorted(groups[..2].iter().map(name).collect()),
            ["fan-a", "fan-b"]
        );
        assert_eq!(
            sorted(groups[2..].iter().map(name).collect()),
            ["fan-a-top", "fan-top"]
        );

        // More groups than allowed: the nearest ones are kept.
        let mut few = ldap(&cfg());
        few.max_groups = 3;
        let groups = few
            .groups_of(&mut conn, &base, &format!("uid=chained,ou=nobody,{SUFFIX}"))
            .await
            .unwrap();
        assert_eq!(groups, expected[..3]);
        conn.close().await;
    }

    #[tokio::test]
    async fn service_account() {
        directory().await;
        let ro = LdapConfig {
            binddn: format!("cn=readonly,{SUFFIX}"),
            bindpassword: "readonly".into(),
            ..cfg()
        };
        let l = ldap(&ro);
        let id = login(&l, "carol", "carolpw").await.expect("accepted");
        assert_eq!(id.dn, "uid=carol,ou=people,dc=dockyard,dc=test");
        assert_eq!(id.realname.as_deref(), Some("Carol Danvers"));
        assert_eq!(id.groups, [PLATFORM]);
        assert_eq!(login(&l, "carol", "alicepw").await, None);
        assert_eq!(login(&l, "nobody", "carolpw").await, None);

        // A service account the directory refuses is an error, not a
        // wrong password.
        let bad = ldap(&LdapConfig {
            bindpassword: "wrong".into(),
            ..ro.clone()
        });
        let err = bad.authenticate("carol", "carolpw").await.unwrap_err();
        assert!(matches!(err, LdapError::ServiceBind { .. }), "{err}");

        // So is a base DN that does not exist.
        let nobase = ldap(&LdapConfig {
            basedn: format!("ou=nowhere,{SUFFIX}"),
            ..ro
        });
        let err = nobase.authenticate("carol", "carolpw").await.unwrap_err();
        assert!(matches!(err, LdapError::Directory { .. }), "{err}");
    }

    #[tokio::test]
    async fn starttls_with_ca() {
        directory().await;
        let l = ldap(&LdapConfig {
            starttls: true,
            certfile: ca(),
            ..cfg()
        });
        let id = login(&l, "alice", "alicepw").await.expect("accepted");
        assert_eq!(sorted(id.groups), [DEVS, PLATFORM]);
        assert_eq!(login(&l, "alice", "nope").await, None);
        // StartTLS really ran: the connection has the server's certificate
        // (and a plain one has none).
        let mut conn = l.connect().await.unwrap();
        assert!(conn.ldap.get_peer_certificate().await.unwrap().is_some());
        conn.close().await;
        let mut conn = ldap(&cfg()).connect().await.unwrap();
        assert!(conn.ldap.get_peer_certificate().await.unwrap().is_none());
        conn.close().await;
    }

    #[tokio::test]
    async fn tls_without_ca_fails_as_tls() {
        directory().await;
        for cfg in [
            LdapConfig {
                starttls: true,
                ..cfg()
            },
            LdapConfig {
                addr: LDAPS.into(),
                tls: true,
                ..cfg()
            },
        ] {
            let err = ldap(&cfg)
                .authenticate("alice", "alicepw")
                .await
                .unwrap_err();
            assert!(matches!(err, LdapError::Tls { .. }), "{err}");
            assert!(err.to_string().contains("UnknownIssuer"), "{err}");
        }
        // A CA that did not sign the server's certificate: the same.
        let other = other_ca();
        let err = ldap(&LdapConfig {
            starttls: true,
            certfile: other.path().to_string_lossy().into_owned(),
            ..cfg()
        })
        .authenticate("alice", "alicepw")
        .await
        .unwrap_err();
        assert!(matches!(err, LdapError::Tls { .. }), "{err}");
        // LDAPS spoken to the plain port.
        let err = ldap(&LdapConfig {
            tls: true,
            certfile: ca(),
            ..cfg()
        })
        .authenticate("alice", "alicepw")
        .await
        .unwrap_err();
        assert!(matches!(err, LdapError::Tls { .. }), "{err}");
    }

    #[tokio::test]
    async fn insecure_skip_verify() {
        directory().await;
        let other_ca = other_ca();
        for cfg in [
            LdapConfig {
                starttls: true,
                insecuretlsskipverify: true,
                ..cfg()
            },
            LdapConfig {
                addr: LDAPS.into(),
                tls: true,
                insecuretlsskipverify: true,
                ..cfg()
            },
            // A certfile that would not verify the server is ignored.
            LdapConfig {
                starttls: true,
                insecuretlsskipverify: true,
                certfile: other_ca.path().to_string_lossy().into_owned(),
                ..cfg()
            },
        ] {
            let id = login(&ldap(&cfg), "bob", "bobpw").await;
            assert_eq!(id.expect("accepted").groups, [OPS], "{}", cfg.addr);
        }
    }

    #[tokio::test]
    async fn ldaps_with_ca() {
        directory().await;
        let l = ldap(&LdapConfig {
            addr: LDAPS.into(),
            tls: true,
            certfile: ca(),
            ..cfg()
        });
        let id = login(&l, "dave", "davepw").await.expect("accepted");
        assert_eq!(id.email.as_deref(), Some("dave@dockyard.test"));
        assert!(id.groups.is_empty());
        assert_eq!(login(&l, "dave", "alicepw").await, None);
        let mut conn = l.connect().await.unwrap();
        assert!(conn.ldap.get_peer_certificate().await.unwrap().is_some());
        conn.close().await;
    }

    #[tokio::test]
    async fn unreachable_directory_fails_fast() {
        // Nothing listens: refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let l = ldap(&LdapConfig {
            addr: format!("127.0.0.1:{port}"),
            ..cfg()
        });
        let t = Instant::now();
        let err = l.authenticate("alice", "alicepw").await.unwrap_err();
        assert!(matches!(err, LdapError::Unreachable { .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        // Something accepts connections and never answers: the timeout,
        // whether it is the StartTLS request, the TLS handshake or a bind
        // that hangs.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let some_ca = other_ca();
        for (tls, starttls) in [(false, false), (false, true), (true, false)] {
            let l = ldap(&LdapConfig {
                addr: addr.clone(),
                tls,
                starttls,
                certfile: some_ca.path().to_string_lossy().into_owned(),
                ..cfg()
            })
            .with_timeout(Duration::from_millis(300));
            let t = Instant::now();
            let err = l.authenticate("alice", "alicepw").await.unwrap_err();
            assert!(matches!(err, LdapError::Timeout { .. }), "{err}");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "tls {tls} starttls {starttls}: {:?}",
                t.elapsed()
            );
        }
        accept.abort();
    }

    #[tokio::test]
    async fn upn_mode_against_a_directory_without_upns() {
        directory().await;
        // OpenLDAP takes "alice@dockyard.test" for a malformed DN and
        // refuses the bind: a refusal, not an error.
        let l = ldap(&LdapConfig {
            addr: PLAIN.into(),
            domain: "dockyard.test".into(),
            ..LdapConfig::default()
        });
        assert_eq!(login(&l, "alice", "alicepw").await, None);
        // Names that are other bind-name forms are refused unasked.
        for user in [
            "alice@dockyard.test",
            "DOCKYARD\\alice",
            "uid=alice,ou=people",
        ] {
            assert_eq!(login(&l, user, "alicepw").await, None);
        }
    }

    #[tokio::test]
    async fn concurrent_logins() {
        directory().await;
        let l = Arc::new(ldap(&LdapConfig {
            starttls: true,
            certfile: ca(),
            ..cfg()
        }));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let l = l.clone();
                tokio::spawn(async move {
                    let (user, pw) = [("alice", "alicepw"), ("bob", "bobpw"), ("x", "y")][i % 3];
                    (i % 3, l.authenticate(user, pw).await.unwrap())
                })
            })
            .collect();
        for t in tasks {
            let (k, id) = t.await.unwrap();
            assert_eq!(id.is_some(), k != 2);
        }
    }

    #[test]
    fn config_validation() {
        let bad = |cfg: LdapConfig, what: &str| {
            let err = Ldap::new(&cfg).unwrap_err();
            assert!(matches!(err, LdapError::Config(_)), "{what}: {err}");
            assert!(err.to_string().contains(what), "{what}: {err}");
        };
        bad(LdapConfig::default(), "addr");
        bad(
            LdapConfig {
                addr: "ldap://127.0.0.1:389".into(),
                ..cfg()
            },
            "host:port",
        );
        bad(
            LdapConfig {
                tls: true,
                starttls: true,
                ..cfg()
            },
            "exclusive",
        );
        bad(
            LdapConfig {
                filter: "(uid=alice)".into(),
                ..cfg()
            },
            "${account}",
        );
        bad(
            LdapConfig {
                filter: "(uid=${account}".into(),
                ..cfg()
            },
            "not a valid LDAP filter",
        );
        bad(
            LdapConfig {
                basedn: String::new(),
                ..cfg()
            },
            "basedn",
        );
        bad(
            LdapConfig {
                filter: String::new(),
                ..cfg()
            },
            "domain",
        );
        bad(
            LdapConfig {
                groupfilter: "(member=x)".into(),
                ..cfg()
            },
            "${dn}",
        );
        bad(
            LdapConfig {
                binddn: format!("cn=readonly,{SUFFIX}"),
                ..cfg()
            },
            "bindpassword",
        );
        bad(
            LdapConfig {
                starttls: true,
                certfile: "/nonexistent/ca.crt".into(),
                ..cfg()
            },
            "certfile",
        );
        let not_pem = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_pem.path(), "not a certificate\n").unwrap();
        bad(
            LdapConfig {
                starttls: true,
                certfile: not_pem.path().to_string_lossy().into_owned(),
                ..cfg()
            },
            "no PEM certificate",
        );
        let team = |group: &str| LdapTeamMap {
            group: group.into(),
            org: "acme".into(),
            team: "devs".into(),
        };
        bad(
            LdapConfig {
                groupfilter: String::new(),
                teams: vec![team(DEVS)],
                ..cfg()
            },
            "groupfilter",
        );
        bad(
            LdapConfig {
                teams: vec![team("devs")],
                ..cfg()
            },
            "not a DN",
        );
        Ldap::new(&LdapConfig {
            teams: vec![team(DEVS)],
            ..cfg()
        })
        .unwrap();
        // certfile and skip-verify are ignored (with a warning) without TLS.
        Ldap::new(&LdapConfig {
            certfile: "/nonexistent/ca.crt".into(),
            ..cfg()
        })
        .unwrap();
    }

    #[test]
    fn filter_escaping() {
        assert_eq!(escape_filter_value("alice"), "alice");
        assert_eq!(escape_filter_value("*"), "\\2a");
        assert_eq!(
            escape_filter_value("a)(uid=*\\\0"),
            "a\\29\\28uid=\\2a\\5c\\00"
        );
        assert_eq!(escape_filter_value("ålice"), "\\c3\\a5lice");
        assert_eq!(escape_filter_value("a\nb"), "a\\0ab");
        for v in ["*", "a)(b", "x\\y", "é*"] {
            let f = format!("(uid={})", escape_filter_value(v));
            ldap3::parse_filter(&f).unwrap_or_else(|_| panic!("{f}"));
        }
    }

    #[test]
    fn dn_normalization() {
        let canon = "uid=alice,ou=people,dc=dockyard,dc=test";
        for same in [
            canon,
            "UID=Alice,OU=People,DC=Dockyard,DC=Test",
            "uid = alice , ou=people;dc=dockyard, dc=test",
            "uid=alice,ou=people,dc=dockyard,dc=test ",
            "0.9.2342.19200300.100.1.1=alice,ou=people,dc=dockyard,dc=test",
            "userid=\\61lice,ou=people,domainComponent=dockyard,dc=test",
            "uid=\"alice\",ou=people,dc=dockyard,dc=test",
        ] {
            assert_eq!(normalize_dn(same), canon, "{same}");
            assert!(same_dn(same, canon), "{same}");
        }
        for other in [
            "uid=alice,ou=people,dc=dockyard",
            "uid=alice2,ou=people,dc=dockyard,dc=test",
            "cn=alice,ou=people,dc=dockyard,dc=test",
            "uid=alice+cn=x,ou=people,dc=dockyard,dc=test",
        ] {
            assert!(!same_dn(other, canon), "{other}");
        }
        // Escaped separators stay part of the value.
        assert_eq!(normalize_dn("cn=Doe\\, John,o=X"), "cn=doe\\2c john,o=x");
        assert!(same_dn("cn=Doe\\, John,o=X", "CN=doe\\2C  john, O=x"));
        assert!(!same_dn("cn=a\\,b,o=x", "cn=a,cn=b,o=x"));
        // Multi-valued RDNs in any order; spaces inside collapse.
        assert!(same_dn("cn=A  B+uid=x,o=y", "UID=X + CN=a b,o=y"));
        // Non-ASCII: escaped UTF-8 or raw, any case.
        assert!(same_dn("cn=\\C3\\A9lise,o=x", "cn=Élise,o=x"));
        // '#' values: BER hex, not the same as an escaped '#'.
        assert_eq!(normalize_dn("cn=#04024869,o=x"), "cn=#04024869,o=x");
        assert!(!same_dn("cn=#04024869,o=x", "cn=\\#04024869,o=x"));
        assert_eq!(normalize_dn(""), "");
        // Not DNs: only trimmed and lower-cased.
        assert_eq!(normalize_dn(" Devs "), "devs");
        assert!(parse_dn("cn=a,").is_none());
        assert!(parse_dn("cn=a\\").is_none());
        assert!(parse_dn("=a").is_none());
        assert!(parse_dn("cn=\"a").is_none());
    }

    #[test]
    fn addr_host() {
        assert_eq!(host_of("127.0.0.1:389"), "127.0.0.1");
        assert_eq!(host_of("ldap.example.com"), "ldap.example.com");
        assert_eq!(host_of("[::1]:636"), "::1");
        assert!(is_loopback(host_of("[::1]:636")));
        assert!(is_loopback(host_of("localhost:389")));
        assert!(!is_loopback(host_of("ldap.example.com:389")));
    }
}
