//! Tenant names: who a request, an event and every stored thing belongs to.
//!
//! A tenant name is 1–63 characters of `[a-z0-9-]`, starting with a letter or digit
//! (`[a-z0-9][a-z0-9-]{0,62}`): it is a path segment in state keys and blob keys, a
//! label in metrics and a claim in tokens, so it is checked wherever it enters.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Tenant of requests and events that name none.
pub const DEFAULT_TENANT: &str = "default";

/// A validated tenant name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tenant(String);

/// Why a tenant name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTenant {
    /// The refused name, cut to 80 characters.
    pub name: String,
}

impl fmt::Display for InvalidTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` is not a tenant name: use 1-63 characters of a-z, 0-9 and `-`, starting with a letter or digit",
            self.name
        )
    }
}

impl std::error::Error for InvalidTenant {}

impl Tenant {
    /// Checks `name` against `[a-z0-9][a-z0-9-]{0,62}`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidTenant> {
        let name = name.into();
        if is_valid(&name) {
            Ok(Self(name))
        } else {
            Err(InvalidTenant {
                name: name.chars().take(80).collect(),
            })
        }
    }

    /// The tenant of everything that names none.
    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Tenant {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Tenant {
    type Err = InvalidTenant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Tenant {
    type Error = InvalidTenant;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Tenant> for String {
    fn from(t: Tenant) -> Self {
        t.0
    }
}

/// Whether `name` matches `[a-z0-9][a-z0-9-]{0,62}`.
pub fn is_valid(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["default", "a", "acme-corp", "0", &"a".repeat(63)] {
            assert!(Tenant::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "A",
            "a_b",
            "a/b",
            "..",
            "a.b",
            "é",
            " a",
            &"a".repeat(64),
        ] {
            let e = Tenant::new(bad).unwrap_err();
            assert!(e.to_string().contains("not a tenant name"), "{bad}");
        }
    }

    #[test]
    fn serde_refuses_bad_names() {
        assert!(serde_json::from_str::<Tenant>("\"acme\"").is_ok());
        assert!(serde_json::from_str::<Tenant>("\"../etc\"").is_err());
    }
}
