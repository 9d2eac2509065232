//! The authentication service: checks credentials (database passwords,
//! LDAP, API tokens, bearer tokens), throttles guessing, issues tokens, and
//! asks the resolver. Front-ends hold one `Auth` and nothing else of auth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::audit::Auditor;
use super::ldap::{Ldap, LdapIdentity, same_dn};
use super::model::{Actions, Principal, RequestedScope, ScopeGrant, TokenLimit};
use super::password::{self, VerifiedCache};
use super::resolver::{Decision, Resolver};
use super::throttle::Throttle;
use super::token::{Access, Claims, Issuer, Verifier};
use crate::config::{Authn, Config, LdapTeamMap};
use crate::meta::MetaStore;
use crate::meta::accounts::{OrgRole, SystemRole, TeamRole, User, UserSource};
use crate::registry::name::RepoName;

/// Prefix of API token secrets: `dyt_<id>_<secret>`.
pub const API_TOKEN_PREFIX: &str = "dyt_";

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("invalid username or password")]
    Invalid,
    #[error("too many failed logins; retry in {} s", .0.as_secs())]
    Throttled(Duration),
    #[error("authentication backend failed: {0}")]
    Backend(String),
}

enum Authenticator {
    Db,
    Ldap {
        ldap: Box<Ldap>,
        teams: Vec<LdapTeamMap>,
    },
}

pub struct Auth {
    pub meta: Arc<dyn MetaStore>,
    pub resolver: Resolver,
    pub audit: Auditor,
    issuer: Issuer,
    verifier: Verifier,
    service: String,
    realm: String,
    authenticator: Authenticator,
    throttle: Throttle,
    verified: VerifiedCache,
    bearer_cache: Mutex<HashMap<[u8; 32], Claims>>,
    principals: Mutex<HashMap<PrincipalKey, (Principal, std::time::Instant)>>,
    signups: Throttle,
}

const BEARER_CACHE_MAX: usize = 10_000;
/// A token's subject and the API token it came from.
type PrincipalKey = (String, Option<String>);
const PRINCIPAL_TTL: Duration = Duration::from_secs(3);
/// Sign-ups one address may make before it is slowed down.
const SIGNUPS_PER_ADDRESS: u32 = 20;

impl Auth {
    pub async fn new(
        config: &Config,
        meta: Arc<dyn MetaStore>,
        audit: Auditor,
    ) -> anyhow::Result<Auth> {
        use anyhow::Context as _;
        let key = &config.auth_server.private_key;
        let bundle = &config.token.rootcertbundle;
        if super::token::ensure_dev_keys(key, bundle).context("auth_server.privateKey")? {
            tracing::warn!(
                key = %key.display(),
                cert = %bundle.display(),
                "generated a development token-signing key pair; use your own key in production"
            );
        }
        let issuer = Issuer::load(
            key,
            &config.auth_server.issuer,
            &config.token.service,
            Duration::from_secs(config.auth_server.expiration),
        )
        .context("auth_server.privateKey")?;
        let verifier = Verifier::load(bundle, &config.token.issuer, &config.token.service)
            .context("token.rootcertbundle")?;
        let authenticator = match config.auth_server.authn {
            Authn::AuthnDb => Authenticator::Db,
            Authn::AuthnLdap => Authenticator::Ldap {
                ldap: Box::new(Ldap::new(&config.authn_ldap).context("authn_ldap")?),
                teams: config.authn_ldap.teams.clone(),
            },
        };
        let auth = Auth {
            resolver: Resolver::new(meta.clone()),
            audit,
            meta,
            issuer,
            verifier,
            service: config.token.service.clone(),
            realm: config.token.realm.clone(),
            authenticator,
            throttle: Throttle::default(),
            verified: VerifiedCache::new(Duration::from_secs(60)),
            bearer_cache: Mutex::new(HashMap::new()),
            principals: Mutex::new(HashMap::new()),
            signups: Throttle::with_free(SIGNUPS_PER_ADDRESS),
        };
        auth.bootstrap_admin(
            &config.auth_server.admin,
            &config.auth_server.admin_password,
        )
        .await?;
        Ok(auth)
    }

    /// Creates the configured administrator if no system administrator
    /// exists yet.
    async fn bootstrap_admin(&self, name: &str, password: &str) -> anyhow::Result<()> {
        if name.is_empty() {
            return Ok(());
        }
        if self.meta.admin_count().await? > 0 {
            return Ok(());
        }
        let name = super::names::check_account_name(name)
            .map_err(|e| anyhow::anyhow!("auth_server.admin: {e}"))?;
        self.create_admin(&name, password, None).await?;
        tracing::info!(admin = %name, "created the first system administrator from the configuration");
        Ok(())
    }

    /// Creates a system administrator (`dockyard admin create`, config).
    pub async fn create_admin(
        &self,
        name: &str,
        password: &str,
        email: Option<String>,
    ) -> anyhow::Result<()> {
        if password.is_empty() {
            anyhow::bail!("the password must not be empty");
        }
        let now = chrono::Utc::now().timestamp();
        let user = User {
            name: name.to_string(),
            email,
            password_hash: password::hash(password).await,
            realname: None,
            comment: Some("system administrator".into()),
            role: SystemRole::Admin,
            source: UserSource::Db,
            created_at: now,
            updated_at: now,
        };
        self.meta
            .create_user(&user)
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    /// Slows down mass sign-ups from one address (each costs a key
    /// derivation): `Err(retry_after)` when this one must wait.
    pub fn signup_allowed(&self, addr: Option<IpAddr>) -> Result<(), Duration> {
        self.signups.check(None, addr)?;
        self.signups.failed(None, addr);
        Ok(())
    }

    /// Whether accounts come from a directory (then nobody signs up: a
    /// name could be taken before its directory user first logs in).
    pub fn uses_directory(&self) -> bool {
        matches!(self.authenticator, Authenticator::Ldap { .. })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The token endpoint for challenges: the configured realm, or this
    /// hub's `/uam/auth` at the address the client used.
    pub fn realm(&self, scheme_and_host: &str) -> String {
        if self.realm.is_empty() {
            format!("{scheme_and_host}/uam/auth")
        } else {
            self.realm.clone()
        }
    }

    /// Forget cached decisions and principals (after any account change).
    pub fn invalidate(&self) {
        self.resolver.invalidate();
        self.principals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Forget remembered passwords too (after a password change).
    pub fn forget_credentials(&self) {
        self.invalidate();
        self.verified.clear();
    }

    /// Checks a user name and a password or API token secret.
    pub async fn login(
        &self,
        name: &str,
        secret: &str,
        addr: Option<IpAddr>,
    ) -> Result<Principal, LoginError> {
        // API token secrets cannot be guessed; slowing their account down
        // would only let anyone lock a CI robot out by failing its logins.
        let account = (!secret.starts_with(API_TOKEN_PREFIX)).then_some(name);
        if let Err(wait) = self.throttle.check(account, addr) {
            return Err(LoginError::Throttled(wait));
        }
        match self.check_credentials(name, secret).await {
            Ok(Some(p)) => {
                self.throttle.succeeded(name);
                Ok(p)
            }
            Ok(None) => {
                self.throttle.failed(account, addr);
                self.audit
                    .record(name, "login_failed", None, None, addr)
                    .await;
                Err(LoginError::Invalid)
            }
            Err(e) => Err(e),
        }
    }

    async fn check_credentials(
        &self,
        name: &str,
        secret: &str,
    ) -> Result<Option<Principal>, LoginError> {
        let backend = |e: crate::meta::MetaError| LoginError::Backend(e.to_string());
        if secret.is_empty() {
            return Ok(None);
        }
        if let Some(rest) = secret.strip_prefix(API_TOKEN_PREFIX) {
            return self.check_api_token(name, rest).await;
        }
        let user = self.meta.user(name).await.map_err(backend)?;
        match (&self.authenticator, &user) {
            // Database accounts (and, with LDAP, local ones such as the
            // configured administrator) check their own password.
            (_, Some(u)) if u.source == UserSource::Db => {
                if self.verified.hit(name, secret)
                    || password::verify(secret, &u.password_hash).await
                {
                    self.verified.remember(name, secret);
                    Ok(Some(principal_of(u)))
                } else {
                    Ok(None)
                }
            }
            (Authenticator::Ldap { ldap, teams }, _) => {
                // Directories match names loosely (case, spaces); hub
                // accounts are named exactly, so only exact names log in.
                if super::names::check_account_name(name).is_err() {
                    return Ok(None);
                }
                if self.verified.hit(name, secret)
                    && let Some(u) = &user
                {
                    return Ok(Some(principal_of(u)));
                }
                let Some(identity) = ldap
                    .authenticate(name, secret)
                    .await
                    .map_err(|e| LoginError::Backend(e.to_string()))?
                else {
                    return Ok(None);
                };
                let u = self
                    .ldap_account(name, user, &identity)
                    .await
                    .map_err(backend)?;
                self.sync_ldap_teams(name, &identity, teams)
                    .await
                    .map_err(backend)?;
                self.verified.remember(name, secret);
                Ok(Some(principal_of(&u)))
            }
            _ => {
                // An unknown name costs as much as a wrong password, so
                // timing does not tell which accounts exist.
                static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
                let dummy = DUMMY
                    .get_or_init(|| password::hash("no such account"))
                    .await;
                let _ = password::verify(secret, dummy).await;
                Ok(None)
            }
        }
    }

    async fn check_api_token(
        &self,
        name: &str,
        rest: &str,
    ) -> Result<Option<Principal>, LoginError> {
        let backend = |e: crate::meta::MetaError| LoginError::Backend(e.to_string());
        let Some((id, secret)) = rest.split_once('_') else {
            return Ok(None);
        };
        let Some(tok) = self.meta.token(id).await.map_err(backend)? else {
            return Ok(None);
        };
        let hash = hex::encode(Sha256::digest(secret.as_bytes()));
        let expired = tok
            .expires_at
            .is_some_and(|t| t <= chrono::Utc::now().timestamp());
        if tok.user != name
            || !constant_time_eq(hash.as_bytes(), tok.secret_hash.as_bytes())
            || expired
        {
            return Ok(None);
        }
        let Some(user) = self.meta.user(name).await.map_err(backend)? else {
            return Ok(None);
        };
        let grants = tok
            .scopes
            .iter()
            .filter_map(|s| ScopeGrant::parse(s))
            .collect();
        Ok(Some(Principal::User {
            name: user.name,
            admin: false,
            limit: Some(TokenLimit { id: tok.id, grants }),
        }))
    }

    /// The local account of a directory user, created at first login.
    async fn ldap_account(
        &self,
        name: &str,
        existing: Option<User>,
        id: &LdapIdentity,
    ) -> crate::meta::MetaResult<User> {
        if let Some(u) = existing {
            return Ok(u);
        }
        let now = chrono::Utc::now().timestamp();
        let user = User {
            name: name.to_string(),
            email: id.email.clone(),
            password_hash: String::new(),
            realname: id.realname.clone(),
            comment: Some(format!("directory account {}", id.dn)),
            role: SystemRole::Member,
            source: UserSource::Ldap,
            created_at: now,
            updated_at: now,
        };
        // A concurrent first login may have created it: both are fine.
        let _ = self.meta.create_user(&user).await?;
        Ok(self.meta.user(name).await?.unwrap_or(user))
    }

    /// Puts the user into the teams mapped from their directory groups and
    /// out of mapped teams whose groups they left.
    async fn sync_ldap_teams(
        &self,
        name: &str,
        id: &LdapIdentity,
        teams: &[LdapTeamMap],
    ) -> crate::meta::MetaResult<()> {
        let mut changed = false;
        for map in teams {
            let member = id.groups.iter().any(|g| same_dn(g, &map.group));
            let current = self.meta.team_role(&map.org, &map.team, name).await?;
            if member && current.is_none() {
                if self.meta.org_role(&map.org, name).await?.is_none() {
                    let _ = self
                        .meta
                        .set_org_member(&map.org, name, OrgRole::Member)
                        .await?;
                }
                match self
                    .meta
                    .set_team_member(&map.org, &map.team, name, TeamRole::Member)
                    .await?
                {
                    Ok(()) => changed = true,
                    Err(e) => {
                        tracing::warn!(team = %map.team, org = %map.org, error = %e, "cannot map directory group onto team")
                    }
                }
            } else if !member && current.is_some() {
                let _ = self
                    .meta
                    .remove_team_member(&map.org, &map.team, name)
                    .await?;
                changed = true;
            }
        }
        if changed {
            self.resolver.invalidate();
        }
        Ok(())
    }

    /// The claims of a valid bearer token of this hub.
    pub fn bearer(&self, token: &str) -> Option<Claims> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp() as u64;
        {
            let cache = self.bearer_cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(&key) {
                return (c.exp > now).then(|| c.clone());
            }
        }
        let claims = self.verifier.verify(token)?;
        let mut cache = self.bearer_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= BEARER_CACHE_MAX {
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= BEARER_CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, claims.clone());
        Some(claims)
    }

    /// The principal a user name stands for now (anonymous for none, or for
    /// an account that no longer exists).
    pub async fn principal_of_subject(&self, sub: &str) -> crate::meta::MetaResult<Principal> {
        if sub.is_empty() {
            return Ok(Principal::Anonymous);
        }
        Ok(match self.meta.user(sub).await? {
            Some(u) => principal_of(&u),
            // A deleted account keeps nothing.
            None => Principal::Anonymous,
        })
    }

    /// The principal a bearer token speaks for now: its subject as the
    /// account stands, limited by the API token it came from — which must
    /// still exist. Cached briefly; `/uam` changes clear the cache.
    pub async fn principal_of_claims(&self, claims: &Claims) -> crate::meta::MetaResult<Principal> {
        let key = (claims.sub.clone(), claims.dyt.clone());
        {
            let cache = self.principals.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((p, at)) = cache.get(&key)
                && at.elapsed() < PRINCIPAL_TTL
            {
                return Ok(p.clone());
            }
        }
        let p = match &claims.dyt {
            None => self.principal_of_subject(&claims.sub).await?,
            Some(id) => match self.meta.token(id).await? {
                Some(t)
                    if t.user == claims.sub
                        && t.expires_at
                            .is_none_or(|e| e > chrono::Utc::now().timestamp()) =>
                {
                    let grants = t
                        .scopes
                        .iter()
                        .filter_map(|s| ScopeGrant::parse(s))
                        .collect();
                    Principal::User {
                        name: claims.sub.clone(),
                        admin: false,
                        limit: Some(TokenLimit { id: t.id, grants }),
                    }
                }
                // The API token was deleted or expired: so is this one.
                _ => Principal::Anonymous,
            },
        };
        let mut cache = self.principals.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= BEARER_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (p.clone(), std::time::Instant::now()));
        Ok(p)
    }

    /// What a bearer token allows on `repo`: its grants, cut down to what
    /// its principal may do now (so revoking a permission, an account or an
    /// API token takes effect before the token expires), and whether a push
    /// would create the repository.
    pub async fn token_allows(
        &self,
        claims: &Claims,
        repo: &RepoName,
    ) -> crate::meta::MetaResult<Decision> {
        let granted = claims
            .access
            .iter()
            .filter(|a| a.kind == "repository" && a.name == repo.as_str())
            .fold(Actions::NONE, |acc, a| {
                acc.union(Actions::parse_list(&a.actions.join(",")))
            });
        if granted.is_empty() {
            return Ok(Decision {
                actions: Actions::NONE,
                creates: false,
            });
        }
        let who = self.principal_of_claims(claims).await?;
        let now = self.decide(&who, repo).await?;
        Ok(Decision {
            actions: granted.intersect(now.actions),
            creates: now.creates && granted.has(super::model::Action::Push),
        })
    }

    pub async fn decide(
        &self,
        who: &Principal,
        repo: &RepoName,
    ) -> crate::meta::MetaResult<Decision> {
        self.resolver.decide(who, repo).await
    }

    /// Issues a token granting, of each requested scope, what the resolver
    /// allows `who` (possibly nothing).
    pub async fn issue(
        &self,
        who: &Principal,
        scopes: &[RequestedScope],
    ) -> crate::meta::MetaResult<(String, Claims)> {
        let mut access: Vec<Access> = Vec::new();
        for s in scopes {
            let granted = match s.kind.as_str() {
                "repository" => match s.name.parse::<RepoName>() {
                    Ok(repo) => {
                        let wanted = Actions::parse_list(&s.actions.join(","));
                        let d = self.decide(who, &repo).await?;
                        d.actions.intersect(wanted).names()
                    }
                    Err(_) => Vec::new(),
                },
                // The catalog lists only what the caller may pull anyway.
                "registry" if s.name == "catalog" => {
                    s.actions.iter().filter(|a| *a == "*").cloned().collect()
                }
                _ => Vec::new(),
            };
            access.push(Access {
                kind: s.kind.clone(),
                name: s.name.clone(),
                actions: granted,
            });
        }
        let (subject, api_token) = match who {
            Principal::Anonymous => ("", None),
            Principal::User { name, limit, .. } => {
                (name.as_str(), limit.as_ref().map(|l| l.id.as_str()))
            }
        };
        Ok(self.issuer.issue(subject, access, api_token))
    }

    pub fn token_lifetime(&self) -> Duration {
        self.issuer.lifetime()
    }
}

fn principal_of(u: &User) -> Principal {
    Principal::User {
        name: u.name.clone(),
        admin: u.role == SystemRole::Admin,
        limit: None,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
