//! `allowed_outbound_hosts` rules.

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, `*` allowed for each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
}

impl OutboundRule {
    /// Parses `http://example.com`, `https://*.example.com:8443`, `*://localhost:*`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("`{s}` lacks a scheme: write e.g. `https://{s}`"))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!("`{s}`: give scheme://host[:port] without a path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let wildcard = |v: &str| {
            if v == "*" {
                None
            } else {
                Some(v.to_ascii_lowercase())
            }
        };
        let scheme = wildcard(scheme);
        if let Some(sc) = &scheme
            && sc != "http"
            && sc != "https"
        {
            return Err(format!("`{s}`: scheme must be http, https or *"));
        }
        if host.is_empty() {
            return Err(format!("`{s}` has no host"));
        }
        let port = match port {
            None => match scheme.as_deref() {
                Some("http") => Some(80),
                Some("https") => Some(443),
                _ => None,
            },
            Some("*") => None,
            Some(p) => Some(
                p.parse()
                    .map_err(|_| format!("`{s}`: port `{p}` is not a number or *"))?,
            ),
        };
        Ok(Self {
            scheme,
            host: wildcard(host),
            port,
        })
    }

    /// Whether a request to `scheme://host:port` is allowed by this rule.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        self.scheme.as_deref().is_none_or(|s| s == scheme)
            && self.port.is_none_or(|p| p == port)
            && self
                .host
                .as_deref()
                .is_none_or(|h| match h.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => h == host,
                })
    }
}
