//! Tenant names: who a request, an event and every stored thing belongs to.
//!
//! A tenant name is 1–63 characters of `[a-z0-9-]`, starting with a letter or digit
//! (`[a-z0-9][a-z0-9-]{0,62}`): it is a path segment in state keys and blob keys, a
//! label in metrics and a claim in tokens, so it is checked wherever it enters.
//!
//! # Where a tenant's things live
//!
//! State keys and blob keys name their tenant as their second segment,
//! `<kind>/<tenant>/<rest>` (`doc/acme/<id>`, `docs/acme/<id>`, `uploads/acme/a.pdf`);
//! event-log subjects name it first, `<tenant>/<rest>`. The host checks every key a
//! tenant's invocation names against these rules ([`Tenant::owns_key`],
//! [`Tenant::owns_prefix`], [`Tenant::owns_subject`]), so no guest reaches another
//! tenant's data whatever it asks for. Kinds starting with `_` are the host's own.

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

    /// Whether `key` is `<kind>/<this tenant>/<rest>`, with a kind that is not the
    /// host's (`_…`) and a non-empty rest.
    pub fn owns_key(&self, key: &str) -> bool {
        matches!(split(key), Some((_, t, rest)) if t == self.0 && !rest.is_empty())
    }

    /// Whether every key under `prefix` is this tenant's: `prefix` is
    /// `<kind>/<this tenant>/…` (the slash after the tenant included).
    pub fn owns_prefix(&self, prefix: &str) -> bool {
        matches!(split(prefix), Some((_, t, _)) if t == self.0)
    }

    /// Whether an event-log subject (`<tenant>/<rest>`) is this tenant's.
    pub fn owns_subject(&self, subject: &str) -> bool {
        subject
            .split_once('/')
            .is_some_and(|(t, rest)| t == self.0 && !rest.is_empty())
    }

    /// The tenant a key names as its second segment, if it names a valid one and
    /// has something after it: `uploads/acme/a.pdf` → `acme`; `uploads/a.pdf` →
    /// `None` (a file dropped straight under a prefix belongs to the default tenant).
    pub fn of_key(key: &str) -> Option<Self> {
        match split(key) {
            Some((_, t, rest)) if !rest.is_empty() => Self::new(t).ok(),
            _ => None,
        }
    }
}

/// `<kind>/<tenant>/<rest>` of a key whose kind is not empty and not the host's.
fn split(key: &str) -> Option<(&str, &str, &str)> {
    let mut parts = key.splitn(3, '/');
    let (kind, tenant, rest) = (parts.next()?, parts.next()?, parts.next()?);
    (!kind.is_empty() && !kind.starts_with('_')).then_some((kind, tenant, rest))
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
    fn keys_name_their_tenant_second() {
        let acme = Tenant::new("acme").unwrap();
        assert!(acme.owns_key("doc/acme/d1"));
        assert!(acme.owns_key("chunks/acme/d1/00001.json"));
        for other in [
            "doc/beta/d1",
            "doc/acme",
            "doc/acme/",
            "doc/acmex/d1",
            "acme/doc/d1",
            "/acme/d1",
            "_troupe/acme/keys",
            "doc",
            "",
        ] {
            assert!(!acme.owns_key(other), "{other}");
        }
        assert!(acme.owns_prefix("active/acme/"));
        assert!(acme.owns_prefix("doc/acme/01"));
        for wide in ["active/", "active/acm", "active/acme", "", "_troupe/acme/"] {
            assert!(!acme.owns_prefix(wide), "{wide}");
        }
        assert!(acme.owns_subject("acme/d1"));
        assert!(!acme.owns_subject("beta/d1"));
        assert!(!acme.owns_subject("acme/"));
        assert!(!acme.owns_subject("acme"));
    }

    #[test]
    fn drop_ins_name_their_tenant_by_folder() {
        assert_eq!(
            Tenant::of_key("uploads/acme/a.pdf"),
            Some(Tenant::new("acme").unwrap())
        );
        assert_eq!(
            Tenant::of_key("uploads/acme/sub/a.pdf"),
            Some(Tenant::new("acme").unwrap())
        );
        assert_eq!(Tenant::of_key("uploads/a.pdf"), None);
        assert_eq!(Tenant::of_key("uploads/Big Folder/a.pdf"), None);
        assert_eq!(Tenant::of_key("uploads/acme/"), None);
    }

    #[test]
    fn serde_refuses_bad_names() {
        assert!(serde_json::from_str::<Tenant>("\"acme\"").is_ok());
        assert!(serde_json::from_str::<Tenant>("\"../etc\"").is_err());
    }
}
