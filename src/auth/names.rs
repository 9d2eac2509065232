//! Validation of account names. Users and organisations name namespaces,
//! so their names must be valid repository-name components; teams follow
//! the same rule. Some names are reserved because they are paths of the
//! `/uam` API or the Docker Hub convention.

/// Names that can never be accounts.
const RESERVED: [&str; 8] = [
    "library",
    "user",
    "organization",
    "team",
    "repository",
    "auth",
    "audit",
    "permission",
];

const MAX_LEN: usize = 64;

fn valid_component(s: &str) -> bool {
    format!("{s}/x")
        .parse::<crate::registry::name::RepoName>()
        .is_ok()
}

/// A user or organisation name.
pub fn check_account_name(name: &str) -> Result<String, String> {
    check(name, "name")?;
    if RESERVED.contains(&name) {
        return Err(format!("{name:?} is a reserved name"));
    }
    Ok(name.to_string())
}

/// A team name.
pub fn check_team_name(name: &str) -> Result<String, String> {
    check(name, "team name")?;
    Ok(name.to_string())
}

fn check(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > MAX_LEN {
        return Err(format!("{what} is longer than {MAX_LEN} characters"));
    }
    if name.contains('/') || !valid_component(name) {
        return Err(format!(
            "{what} {name:?} is not legal: lowercase letters and digits, separated by '.', '_', '__' or dashes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_account_name("alice").is_ok());
        assert!(check_account_name("a-b.c_d").is_ok());
        for bad in [
            "",
            "Alice",
            "a/b",
            "-a",
            "a-",
            "library",
            "user",
            &"a".repeat(65),
        ] {
            assert!(check_account_name(bad).is_err(), "{bad}");
        }
        assert!(check_team_name("user").is_ok());
    }
}
