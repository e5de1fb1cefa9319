//! OIDC bearer tokens: JWTs from one issuer, verified against the keys its discovery
//! document's `jwks_uri` lists ([`super::jwks`]), for one audience. RS256 and ES256
//! only; `exp`, `nbf`, `iss` and `aud` checked with a small leeway. A verified token is
//! remembered (by its hash) until it expires or for a minute, whichever comes first,
//! so a client that sends the same token again is not verified again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::jwks::{KeyLookup, Keys};
use super::{Error, Principal, Result, claims};

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_S: u64 = 30;

/// Longest a verified token is remembered.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(60);

/// Most tokens remembered at once.
const TOKEN_CACHE_MAX: usize = 10_000;

/// The algorithms accepted: asymmetric ones only (never `none`, never a shared secret).
const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];

/// `--oidc-issuer`, `--oidc-audience`, `--oidc-tenant-claim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The issuer URL: tokens' `iss`, and where `/.well-known/openid-configuration` is.
    pub issuer: String,
    /// The audience tokens must name in `aud`.
    pub audience: String,
    /// The claim naming the tenant.
    pub tenant_claim: String,
    /// Least time between two fetches of the issuer's keys when a token names a key
    /// the host does not know.
    pub refetch_interval: Duration,
}

/// Default [`OidcSettings::tenant_claim`].
pub const DEFAULT_TENANT_CLAIM: &str = "tenant";

/// Default [`OidcSettings::refetch_interval`].
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Checks a URL the host fetches keys from: `https://`, or `http://` on a loopback
/// address only (an identity provider in a test, or beside the host); `what` names
/// the setting in the error.
pub fn check_url(url: &str, what: &'static str) -> Result<http::Uri> {
    let refuse = |why: String| Error::Settings { flag: what, why };
    let uri: http::Uri = url
        .parse()
        .map_err(|e| refuse(format!("`{url}` is not a URL: {e}")))?;
    let host = uri
        .host()
        .ok_or_else(|| refuse(format!("`{url}` names no host")))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if is_loopback(host) => Ok(uri),
        Some("http") => Err(refuse(format!(
            "`{url}`: an http:// issuer is accepted only on a loopback address (127.0.0.1, ::1, localhost), where nobody can tamper with its keys; use https://"
        ))),
        _ => Err(refuse(format!("`{url}` is not an https:// URL"))),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a token was refused (the message the client gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token is refused: 401.
    Invalid(String),
    /// The issuer's keys could not be fetched: 503, the token may be fine.
    Unavailable(String),
}

/// Verifies one issuer's tokens.
#[derive(Debug)]
pub struct Verifier {
    settings: OidcSettings,
    keys: Keys,
    /// Tokens verified lately, by SHA-256: the principal and until when it holds.
    verified: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl Verifier {
    /// Checks the settings; fetches nothing until the first token.
    pub fn new(settings: OidcSettings) -> Result<Self> {
        check_url(&settings.issuer, "--oidc-issuer")?;
        if settings.audience.trim().is_empty() {
            return Err(Error::Settings {
                flag: "--oidc-audience",
                why: "an audience is required with --oidc-issuer: the value tokens for this API carry in `aud`".into(),
            });
        }
        if settings.tenant_claim.trim().is_empty() {
            return Err(Error::Settings {
                flag: "--oidc-tenant-claim",
                why: "name the claim that carries the tenant".into(),
            });
        }
        Ok(Self {
            keys: Keys::new(&settings.issuer, settings.refetch_interval),
            settings,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The principal `token` stands for.
    pub async fn verify(&self, token: &str) -> std::result::Result<Principal, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            invalid("the bearer token is neither an API key nor a well-formed JWT (RS256 or ES256)")
        })?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Invalid(format!(
                "tokens signed with {:?} are not accepted: use RS256 or ES256",
                header.alg
            )));
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(p) = self.remembered(&digest) {
            return Ok(p);
        }
        let key = match self.keys.find(header.kid.as_deref(), header.alg).await {
            KeyLookup::Found(key) => key,
            KeyLookup::Unknown => {
                return Err(invalid(
                    "the token is signed by a key the issuer does not list",
                ));
            }
            KeyLookup::Unavailable(why) => return Err(TokenError::Unavailable(why)),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(refusal(e.kind()).to_owned()))?;
        let claims = data.claims;
        let principal = Principal {
            tenant: claims::tenant(&claims, &self.settings.tenant_claim)
                .map_err(|e| TokenError::Invalid(e.to_string()))?,
            scope: claims::scope(&claims),
            credential: format!(
                "{}|{}",
                self.settings.issuer,
                claims::subject(&claims).map_err(|e| TokenError::Invalid(e.to_string()))?
            ),
        };
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        self.remember(digest, &principal, exp);
        Ok(principal)
    }

    fn remembered(&self, digest: &[u8; 32]) -> Option<Principal> {
        let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified
            .get(digest)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(p, _)| p.clone())
    }

    /// Remembers a verified token until `exp` (seconds since the epoch) or for
    /// [`TOKEN_CACHE_TTL`], whichever comes first.
    fn remember(&self, digest: [u8; 32], principal: &Principal, exp: u64) {
        let now_s = jsonwebtoken::get_current_timestamp();
        let left = Duration::from_secs(exp.saturating_sub(now_s)).min(TOKEN_CACHE_TTL);
        if left.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= TOKEN_CACHE_MAX {
            verified.retain(|_, (_, until)| now < *until);
            if verified.len() >= TOKEN_CACHE_MAX {
                verified.clear();
            }
        }
        verified.insert(digest, (principal.clone(), now + left));
    }
}

/// The client's message for a token that failed validation.
fn refusal(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidAudience => "the token is for another audience",
        ErrorKind::InvalidIssuer => "the token is from another issuer",
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud)",
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not match its key",
        _ => "the token is not valid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_issuers_only_on_loopback() {
        for ok in [
            "https://login.example.com",
            "https://login.example.com/realms/acme/",
            "http://127.0.0.1:8080",
            "http://127.8.9.10/issuer",
            "http://localhost:9000",
            "http://[::1]:9000/x",
            "https://10.0.0.5",
        ] {
            assert!(check_url(ok, "--oidc-issuer").is_ok(), "{ok}");
        }
        for bad in [
            "http://login.example.com",
            "http://10.0.0.5:8080",
            "http://0.0.0.0:8080",
            "http://[::]:80",
            "http://localhost.example.com",
            "ftp://127.0.0.1/",
            "login.example.com",
            "https://",
            "",
        ] {
            let e = check_url(bad, "--oidc-issuer").unwrap_err().to_string();
            assert!(e.starts_with("--oidc-issuer: "), "{bad}: {e}");
        }
        let e = check_url("http://idp.internal", "--oidc-issuer")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only on a loopback address"), "{e}");
    }

    #[test]
    fn settings_are_checked() {
        let good = OidcSettings {
            issuer: "https://idp.example.com".into(),
            audience: "troupe".into(),
            tenant_claim: DEFAULT_TENANT_CLAIM.into(),
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
        };
        assert!(Verifier::new(good.clone()).is_ok());
        let no_audience = OidcSettings {
            audience: " ".into(),
            ..good.clone()
        };
        let e = Verifier::new(no_audience).unwrap_err().to_string();
        assert!(e.contains("--oidc-audience"), "{e}");
        let plain = OidcSettings {
            issuer: "http://idp.example.com".into(),
            ..good
        };
        assert!(Verifier::new(plain).is_err());
    }

    #[tokio::test]
    async fn tokens_that_are_not_jwts_or_use_other_algorithms_are_refused() {
        let v = Verifier::new(OidcSettings {
            issuer: "http://127.0.0.1:9".into(),
            audience: "troupe".into(),
            tenant_claim: "tenant".into(),
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
        })
        .unwrap();
        use base64::Engine as _;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let claims = b64(r#"{"sub":"u","tenant":"acme","exp":9999999999}"#);
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"HS256","typ":"JWT"}"#,
            r#"{"alg":"RS384","typ":"JWT"}"#,
        ] {
            let token = format!("{}.{claims}.", b64(header));
            match v.verify(&token).await {
                Err(TokenError::Invalid(_)) => {}
                other => panic!("{header}: {other:?}"),
            }
        }
        for junk in ["", "abc", "a.b.c", "trp_x"] {
            assert!(
                matches!(v.verify(junk).await, Err(TokenError::Invalid(_))),
                "{junk}"
            );
        }
    }
}
