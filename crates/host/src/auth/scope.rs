//! Scopes: what a credential may do, and what each request needs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a credential may do; each scope includes the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads: document records, trails, event streams, search, embeddings.
    #[default]
    Read,
    /// Reads, uploads and deletes.
    Write,
    /// Everything, webhooks included.
    Admin,
}

/// A scope name that is not `read`, `write` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a scope: use read, write or admin")]
pub struct InvalidScope(pub String);

impl Scope {
    /// The name (`read`, `write`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }

    /// The scope a request needs: webhooks are `admin`; reading (GET, HEAD), search
    /// and embeddings are `read`; every other request changes something: `write`.
    pub fn required(method: &http::Method, path: &str) -> Self {
        if path.starts_with("/v1/webhooks") {
            Self::Admin
        } else if method == http::Method::GET
            || method == http::Method::HEAD
            || (method == http::Method::POST && (path == "/v1/search" || path == "/v1/embeddings"))
        {
            Self::Read
        } else {
            Self::Write
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = InvalidScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            other => Err(InvalidScope(other.chars().take(40).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn scopes_parse_and_order() {
        assert_eq!("read".parse(), Ok(Scope::Read));
        assert_eq!("write".parse(), Ok(Scope::Write));
        assert_eq!("admin".parse(), Ok(Scope::Admin));
        for bad in ["", "Read", "ADMIN", " write", "owner", "read write"] {
            let e = bad.parse::<Scope>().unwrap_err();
            assert!(e.to_string().contains("use read, write or admin"), "{bad}");
        }
        assert!(Scope::Read < Scope::Write && Scope::Write < Scope::Admin);
        for s in [Scope::Read, Scope::Write, Scope::Admin] {
            assert_eq!(s.as_str().parse(), Ok(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn each_request_needs_its_scope() {
        let cases = [
            (Method::GET, "/v1/documents/x", Scope::Read),
            (Method::HEAD, "/v1/documents/x", Scope::Read),
            (Method::GET, "/v1/documents", Scope::Read),
            (Method::POST, "/v1/search", Scope::Read),
            (Method::POST, "/v1/embeddings", Scope::Read),
            (Method::POST, "/v1/documents", Scope::Write),
            (Method::DELETE, "/v1/documents/x", Scope::Write),
            (Method::PUT, "/v1/search", Scope::Write),
            (Method::OPTIONS, "/v1/documents", Scope::Write),
            (Method::GET, "/v1/webhooks", Scope::Admin),
            (Method::POST, "/v1/webhooks", Scope::Admin),
            (Method::DELETE, "/v1/webhooks/abc", Scope::Admin),
        ];
        for (method, path, want) in cases {
            assert_eq!(Scope::required(&method, path), want, "{method} {path}");
        }
    }
}
