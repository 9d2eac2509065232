//! The vocabulary of authorization: actions on repositories, the
//! principals that ask, and token scopes.

use std::fmt;

use crate::registry::name::RepoName;

/// What may be done to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
}

/// A set of actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const PULL: Actions = Actions(1);
    pub const PUSH: Actions = Actions(2);
    pub const DELETE: Actions = Actions(4);
    pub const PULL_PUSH: Actions = Actions(3);
    pub const ALL: Actions = Actions(7);

    pub fn of(a: Action) -> Actions {
        match a {
            Action::Pull => Actions::PULL,
            Action::Push => Actions::PUSH,
            Action::Delete => Actions::DELETE,
        }
    }

    pub fn has(self, a: Action) -> bool {
        self.0 & Actions::of(a).0 != 0
    }

    pub fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Names in the order Docker clients use (`pull,push,delete`).
    pub fn names(self) -> Vec<String> {
        [Action::Pull, Action::Push, Action::Delete]
            .into_iter()
            .filter(|a| self.has(*a))
            .map(|a| a.as_str().to_string())
            .collect()
    }

    /// Parses a token-scope action list; `*` means every action.
    pub fn parse_list(s: &str) -> Actions {
        s.split(',').fold(Actions::NONE, |acc, a| {
            acc.union(match a.trim() {
                "pull" => Actions::PULL,
                "push" => Actions::PUSH,
                "delete" => Actions::DELETE,
                "*" => Actions::ALL,
                _ => Actions::NONE,
            })
        })
    }
}

impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    Anonymous,
    User {
        name: String,
        admin: bool,
        /// Logged in with an API token: the user's rights are cut down to
        /// its scopes.
        limit: Option<TokenLimit>,
    },
}

/// The API token a principal logged in with.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLimit {
    pub id: String,
    pub grants: Vec<ScopeGrant>,
}

impl Principal {
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "anonymous",
            Principal::User { name, .. } => name,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Principal::User {
                admin: true,
                limit: None,
                ..
            }
        )
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Principal::Anonymous)
    }
}

/// A grant of an API token: repositories named exactly or by a prefix
/// ending in `*`, and the actions allowed on them.
#[derive(Clone, Debug, PartialEq)]
pub struct ScopeGrant {
    pub pattern: String,
    pub actions: Actions,
}

impl ScopeGrant {
    /// `repository:<name or prefix*>:<actions>`
    pub fn parse(s: &str) -> Option<ScopeGrant> {
        let rest = s.strip_prefix("repository:")?;
        let (pattern, actions) = rest.rsplit_once(':')?;
        let actions = Actions::parse_list(actions);
        let name_ok = match pattern.strip_suffix('*') {
            Some(prefix) => {
                prefix.is_empty() || prefix.trim_end_matches('/').parse::<RepoName>().is_ok()
            }
            None => pattern.parse::<RepoName>().is_ok(),
        };
        (name_ok && !actions.is_empty()).then(|| ScopeGrant {
            pattern: pattern.to_string(),
            actions,
        })
    }

    pub fn matches(&self, repo: &RepoName) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => repo.as_str().starts_with(prefix),
            None => repo.as_str() == self.pattern,
        }
    }

    pub fn to_scope(&self) -> String {
        format!("repository:{}:{}", self.pattern, self.actions)
    }
}

/// One item of a token request's `scope`: `type:name:actions`.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestedScope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl RequestedScope {
    /// Parses `repository:a/b:pull,push`; names may contain `:` only in a
    /// `repository(plugin)` style type, so split from both ends.
    pub fn parse(s: &str) -> Option<RequestedScope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() || actions.is_empty() {
            return None;
        }
        Some(RequestedScope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.split(',').map(|a| a.trim().to_string()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_scopes() {
        assert_eq!(Actions::parse_list("pull,push"), Actions::PULL_PUSH);
        assert_eq!(Actions::parse_list("*"), Actions::ALL);
        assert_eq!(Actions::ALL.names(), ["pull", "push", "delete"]);
        let g = ScopeGrant::parse("repository:acme/*:pull").unwrap();
        assert!(g.matches(&"acme/app".parse().unwrap()));
        assert!(!g.matches(&"other/app".parse().unwrap()));
        assert!(ScopeGrant::parse("repository:Bad:pull").is_none());
        assert!(ScopeGrant::parse("registry:catalog:*").is_none());
        let s = RequestedScope::parse("repository:a/b:pull,push").unwrap();
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("repository", "a/b"));
        assert_eq!(s.actions, ["pull", "push"]);
        assert!(RequestedScope::parse("repository::pull").is_none());
    }
}
