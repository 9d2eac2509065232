//! The one permission resolver: what may a principal do to a repository.
//! Every front-end (v2 now; v1, ACI, UI and the swarm later) and the token
//! service ask it.
//!
//! In order: a system administrator may do everything. For an existing
//! repository: anyone may pull a public one; the user owning the namespace
//! and the administrators of the owning organisation may pull, push and
//! delete; plain members of the organisation get its member privilege
//! (WRITE: pull and push, READ: pull, NONE: nothing); a member of a team
//! holding a permit on the repository gets it (WRITE: pull and push, READ:
//! pull). A repository that does not exist yet may be created by a push of
//! the namespace's owner (the user, or an organisation administrator; only
//! system administrators own `library`); it is created private. An API
//! token never gives more than its scopes.
//!
//! Architecture invariant: no front-end decides permissions itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::model::{Actions, Principal};
use crate::meta::MetaResult;
use crate::meta::MetaStore;
use crate::meta::accounts::{MemberPrivilege, NamespaceKind, OrgRole, Permit};
use crate::registry::name::RepoName;

/// What a principal may do to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub actions: Actions,
    /// The repository does not exist and a push by this principal would
    /// create it.
    pub creates: bool,
}

/// How long a decision is reused. Changes made through `/uam` clear the
/// cache at once; this bounds staleness for changes by other nodes.
const CACHE_TTL: Duration = Duration::from_secs(3);
const CACHE_MAX: usize = 50_000;

pub struct Resolver {
    meta: Arc<dyn MetaStore>,
    cache: Mutex<HashMap<(String, RepoName), (Decision, Instant)>>,
}

impl Resolver {
    pub fn new(meta: Arc<dyn MetaStore>) -> Self {
        Resolver {
            meta,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets cached decisions (after any change of accounts or permits).
    pub fn invalidate(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub async fn decide(&self, who: &Principal, repo: &RepoName) -> MetaResult<Decision> {
        let key = (cache_key(who), repo.clone());
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((d, at)) = cache.get(&key)
                && at.elapsed() < CACHE_TTL
            {
                return Ok(*d);
            }
        }
        let mut d = self.resolve(who, repo).await?;
        if let Principal::User {
            limit: Some(limit), ..
        } = who
        {
            let allowed = limit
                .grants
                .iter()
                .filter(|g| g.matches(repo))
                .fold(Actions::NONE, |acc, g| acc.union(g.actions));
            d.actions = d.actions.intersect(allowed);
            d.creates &= allowed.has(super::model::Action::Push);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (d, Instant::now()));
        Ok(d)
    }

    async fn resolve(&self, who: &Principal, repo: &RepoName) -> MetaResult<Decision> {
        let record = self.meta.repo(repo).await?;
        let exists = record.is_some();
        let (name, admin) = match who {
            Principal::Anonymous => {
                let public = record.as_ref().is_some_and(|r| r.is_public);
                return Ok(Decision {
                    actions: if public { Actions::PULL } else { Actions::NONE },
                    creates: false,
                });
            }
            Principal::User { name, admin, .. } => (name.as_str(), *admin),
        };
        if admin {
            return Ok(Decision {
                actions: Actions::ALL,
                creates: !exists,
            });
        }
        let ns = repo.namespace();
        let owner = match self.meta.namespace_kind(ns).await? {
            Some(NamespaceKind::User) => ns == name,
            Some(NamespaceKind::Organization) => {
                self.meta.org_role(ns, name).await? == Some(OrgRole::Admin)
            }
            None => false,
        };
        let Some(record) = record else {
            return Ok(if owner {
                Decision {
                    actions: Actions::ALL,
                    creates: true,
                }
            } else {
                Decision {
                    actions: Actions::NONE,
                    creates: false,
                }
            });
        };
        if owner {
            return Ok(Decision {
                actions: Actions::ALL,
                creates: false,
            });
        }
        let mut actions = if record.is_public {
            Actions::PULL
        } else {
            Actions::NONE
        };
        if let Some(org) = self.meta.org(ns).await?
            && self.meta.org_role(ns, name).await? == Some(OrgRole::Member)
        {
            actions = actions.union(match org.member_privilege {
                MemberPrivilege::Write => Actions::PULL_PUSH,
                MemberPrivilege::Read => Actions::PULL,
                MemberPrivilege::None => Actions::NONE,
            });
            for permit in self.meta.team_permits(name, repo).await? {
                actions = actions.union(match permit {
                    Permit::Write => Actions::PULL_PUSH,
                    Permit::Read => Actions::PULL,
                });
            }
        }
        Ok(Decision {
            actions,
            creates: false,
        })
    }
}

fn cache_key(who: &Principal) -> String {
    match who {
        Principal::Anonymous => String::new(),
        Principal::User { name, admin, limit } => {
            let mut k = format!("{}{name}", if *admin { '!' } else { '@' });
            if let Some(l) = limit {
                k.push_str(" #");
                k.push_str(&l.id);
                for g in &l.grants {
                    k.push(' ');
                    k.push_str(&g.to_scope());
                }
            }
            k
        }
    }
}
