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

    /// Whether the rule names its host outright (`http://127.0.0.1:8080`,
    /// `https://db.internal`), not by a wildcard: only such a rule lets a component
    /// reach a loopback, link-local or private address.
    pub fn names_host(&self) -> bool {
        self.host.as_deref().is_some_and(|h| !h.starts_with("*."))
    }
}

/// Whether `ip` is an address on the public internet. Loopback, private (RFC 1918,
/// unique-local), link-local (the cloud metadata service at 169.254.169.254),
/// shared (100.64/10), unspecified, multicast, broadcast and documentation ranges are
/// not, nor IPv6 forms of those (mapped, compatible, NAT64 of a private IPv4).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            // NAT64 (64:ff9b::/96) of an address that is not public.
            if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0; 4] {
                let [.., hi, lo] = seg;
                let v4 =
                    std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link local
                || (seg[0] & 0xffc0) == 0xfec0 // site local
                || seg[0..6] == [0; 6] // IPv4-compatible
                || (seg[0] == 0x2001 && seg[1] == 0xdb8)) // documentation
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "127.9.9.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_rule_names_its_host_or_a_wildcard() {
        assert!(
            OutboundRule::parse("http://127.0.0.1:*")
                .unwrap()
                .names_host()
        );
        assert!(
            OutboundRule::parse("https://hooks.example.com")
                .unwrap()
                .names_host()
        );
        assert!(!OutboundRule::parse("http://*:*").unwrap().names_host());
        assert!(
            !OutboundRule::parse("https://*.example.com")
                .unwrap()
                .names_host()
        );
    }
}
