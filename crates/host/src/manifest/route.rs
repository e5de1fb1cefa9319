//! HTTP routes: an exact path or a prefix (`/api/...`), and which of two is more
//! specific.

/// A parsed route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Matches one path.
    Exact(String),
    /// Matches the prefix and everything below it (`/api/...`).
    Prefix(String),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(p) => f.write_str(p),
            Self::Prefix(p) if p.ends_with('/') => write!(f, "{p}..."),
            Self::Prefix(p) => write!(f, "{p}/..."),
        }
    }
}

impl Route {
    /// Whether `path` is served by this route.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => {
                path == p
                    || (path.starts_with(p.as_str())
                        && (p.ends_with('/') || path.as_bytes().get(p.len()) == Some(&b'/')))
            }
        }
    }

    pub(super) fn specificity(&self) -> (usize, bool) {
        match self {
            Self::Exact(p) => (p.len(), true),
            Self::Prefix(p) => (p.len(), false),
        }
    }
}
