//! Who is calling: API keys and OIDC bearer tokens, the tenant and scope they carry,
//! and a rate limit per credential. The host authenticates every `/v1/…` request
//! before a native endpoint or a component sees it, and binds the caller's tenant to
//! the invocation (the `troupe-tenant` request header, set by the host only).
//!
//! Authentication is on once any API key exists in the state store (looked at again
//! every [`SWITCH_TTL`] while none does), when an OIDC issuer is configured, or with
//! [`Mode::Required`]. Off, every request acts as the `default` tenant with `admin`
//! scope, as a single-user embedded install expects.
//!
//! # Layout
//!
//! - [`scope`]: [`Scope`] and the scope each request needs.
//! - [`keys`]: API keys (`trp_<id>_<secret>`), their records and [`keys::KeyStore`].
//! - [`cache`]: key records and the on/off switch, cached for at most two seconds.
//! - [`oidc`]: OIDC settings, the `http://`-on-loopback rule, token verification.
//! - [`jwks`]: the issuer's discovery document and signing keys.
//! - [`claims`]: tenant, scope and subject from a token's claims.
//! - [`limit`]: token buckets per credential.

pub mod cache;
pub mod claims;
pub mod jwks;
pub mod keys;
pub mod limit;
pub mod oidc;
pub mod scope;

use std::sync::Arc;

use http::StatusCode;
use troupe_core::State;
use troupe_events::Tenant;

pub use cache::SWITCH_TTL;
pub use keys::{ApiKey, KeyRecord, KeyStore};
pub use limit::RateSettings;
pub use oidc::OidcSettings;
pub use scope::Scope;

/// The request header that carries the caller's tenant to an HTTP component; any
/// value a client sends is replaced.
pub const TENANT_HEADER: &str = "troupe-tenant";

/// What went wrong managing credentials or reading the settings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No key has this id.
    #[error("no API key `{0}`: `troupe keys list` shows the ids")]
    UnknownKey(String),
    /// A key's label is refused.
    #[error("invalid label: {0}")]
    InvalidLabel(String),
    /// A stored key record does not decode.
    #[error("the key record `{key}` is corrupt: {why}")]
    Corrupt {
        /// The state key.
        key: String,
        /// The decoding error.
        why: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] troupe_core::Error),
    /// A setting is unusable.
    #[error("{flag}: {why}")]
    Settings {
        /// The flag (or field) at fault.
        flag: &'static str,
        /// Why.
        why: String,
    },
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant everything the request reads or writes belongs to.
    pub tenant: Tenant,
    /// What it may do.
    pub scope: Scope,
    /// The credential (an API key's id, or `issuer|subject`): rate limits and logs
    /// key on it.
    pub credential: String,
}

impl Principal {
    /// The caller when authentication is off: the `default` tenant, every scope.
    pub fn anonymous() -> Self {
        Self {
            tenant: Tenant::default_tenant(),
            scope: Scope::Admin,
            credential: "anonymous".into(),
        }
    }
}

/// `--auth`: when authentication is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// On once an API key exists or an OIDC issuer is configured.
    #[default]
    Auto,
    /// Always on: without a key or an issuer, every `/v1/…` request is refused.
    Required,
}

/// How the host authenticates, from the command line or the environment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// When authentication is on.
    pub mode: Mode,
    /// The OIDC issuer whose tokens are accepted, if any.
    pub oidc: Option<OidcSettings>,
    /// The rate limit per credential, if any.
    pub rate: Option<RateSettings>,
}

impl Settings {
    /// Checks the OIDC and rate-limit settings as a host would at start, without
    /// starting one.
    pub fn check(&self) -> Result<()> {
        if let Some(oidc) = &self.oidc {
            oidc::Verifier::new(oidc.clone())?;
        }
        if let Some(rate) = self.rate {
            limit::RateLimit::new(rate)?;
        }
        Ok(())
    }
}

/// A request refused before any function ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 401, 403, 429 or 503.
    pub status: StatusCode,
    /// The error code of the JSON body.
    pub code: &'static str,
    /// What the client should know.
    pub message: String,
    /// The `WWW-Authenticate` challenge, on 401 and 403.
    pub challenge: Option<String>,
    /// `Retry-After` in seconds, on 429 and 503.
    pub retry_after: Option<u64>,
}

impl Refusal {
    fn unauthorized(message: impl Into<String>, token_given: bool) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            challenge: Some(if token_given {
                r#"Bearer error="invalid_token""#.into()
            } else {
                "Bearer".into()
            }),
            retry_after: None,
        }
    }

    fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: message.into(),
            challenge: None,
            retry_after: Some(1),
        }
    }
}

/// The authentication state a host shares between requests.
#[derive(Debug)]
pub struct Auth {
    keys: cache::KeyCache,
    oidc: Option<oidc::Verifier>,
    limit: Option<limit::RateLimit>,
}

impl Auth {
    /// Checks `settings`; keys are read from `state` as requests come.
    pub fn new(settings: &Settings, state: Arc<dyn State>) -> Result<Self> {
        let oidc = settings.oidc.clone().map(oidc::Verifier::new).transpose()?;
        let always = settings.mode == Mode::Required || oidc.is_some();
        Ok(Self {
            keys: cache::KeyCache::new(KeyStore::new(state), always),
            oidc,
            limit: settings.rate.map(limit::RateLimit::new).transpose()?,
        })
    }

    /// Whether requests need a credential now.
    pub async fn is_on(&self) -> Result<bool> {
        self.keys.is_on().await
    }

    /// Authenticates a `/v1/…` request and checks its scope and rate; the principal
    /// it acts as, or the answer to send instead.
    pub async fn admit(
        &self,
        method: &http::Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> std::result::Result<Principal, Refusal> {
        let on = self.keys.is_on().await.map_err(|e| {
            tracing::warn!(error = %e, "could not tell whether API keys exist");
            Refusal::unavailable("credentials cannot be checked right now; retry shortly")
        })?;
        let principal = if on {
            self.authenticate(headers).await?
        } else {
            Principal::anonymous()
        };
        let needed = Scope::required(method, path);
        if principal.scope < needed {
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                code: "forbidden",
                message: format!(
                    "this request needs the `{needed}` scope; the credential has `{}`",
                    principal.scope
                ),
                challenge: Some(format!(
                    r#"Bearer error="insufficient_scope", scope="{needed}""#
                )),
                retry_after: None,
            });
        }
        if let Some(limit) = &self.limit
            && let Err(wait) = limit.check(&principal.credential)
        {
            return Err(Refusal {
                status: StatusCode::TOO_MANY_REQUESTS,
                code: "rate_limited",
                message: "this credential is over its request rate; retry after the time given"
                    .into(),
                challenge: None,
                retry_after: Some(limit::retry_after(wait)),
            });
        }
        Ok(principal)
    }

    /// The principal of the request's bearer credential.
    async fn authenticate(
        &self,
        headers: &http::HeaderMap,
    ) -> std::result::Result<Principal, Refusal> {
        let token = bearer(headers)?;
        if token.starts_with(keys::KEY_MARK) {
            return self.keys.verify(token).await;
        }
        let Some(oidc) = &self.oidc else {
            return Err(Refusal::unauthorized(
                "the bearer token is not an API key (trp_…), and this server accepts no other tokens",
                true,
            ));
        };
        oidc.verify(token).await.map_err(|e| match e {
            oidc::TokenError::Invalid(why) => Refusal::unauthorized(why, true),
            oidc::TokenError::Unavailable(why) => Refusal::unavailable(why),
        })
    }
}

/// The bearer token of `Authorization: Bearer <token>`.
fn bearer(headers: &http::HeaderMap) -> std::result::Result<&str, Refusal> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(Refusal::unauthorized(
            "this endpoint needs `Authorization: Bearer <API key or token>`",
            false,
        ));
    };
    let malformed = || {
        Refusal::unauthorized(
            "malformed Authorization header: send `Authorization: Bearer <API key or token>`",
            false,
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(malformed());
    }
    Ok(token)
}

/// Whether `path` is under `/v1` (the API that needs a credential), however a client
/// spells the first segment (`//v1/`, `/V1/`, `/%76%31/`).
pub fn is_api_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let decoded = percent_decode(first);
    decoded.eq_ignore_ascii_case("v1")
}

/// `%XX` escapes decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces any `troupe-tenant` header the client sent with the caller's tenant.
pub fn bind_tenant(headers: &mut http::HeaderMap, tenant: &Tenant) {
    headers.remove(TENANT_HEADER);
    if let Ok(v) = http::HeaderValue::from_str(tenant.as_str()) {
        headers.insert(TENANT_HEADER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        assert_eq!(bearer(&headers(&["Bearer abc"])).unwrap(), "abc");
        assert_eq!(bearer(&headers(&["bearer  abc "])).unwrap(), "abc");
        for bad in [
            &[][..],
            &["Basic dXNlcjpwYXNz"],
            &["Bearer"],
            &["Bearer "],
            &["Bearer a b"],
            &["Token abc"],
            &["Bearer a", "Bearer b"],
        ] {
            let r = bearer(&headers(bad)).unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad:?}");
            assert_eq!(r.challenge.as_deref(), Some("Bearer"), "{bad:?}");
        }
    }

    #[test]
    fn api_paths_are_recognised_however_spelled() {
        for api in [
            "/v1/documents",
            "/v1",
            "/v1/",
            "//v1/search",
            "/V1/search",
            "/%76%31/documents",
            "/%561/x",
        ] {
            assert!(is_api_path(api), "{api}");
        }
        for open in [
            "/", "/health", "/metrics", "/hello/x", "/v10/x", "/v1x", "/x/v1/",
        ] {
            assert!(!is_api_path(open), "{open}");
        }
    }

    #[test]
    fn the_tenant_header_is_the_hosts() {
        let mut h = http::HeaderMap::new();
        h.append(TENANT_HEADER, http::HeaderValue::from_static("victim"));
        h.append(TENANT_HEADER, http::HeaderValue::from_static("other"));
        bind_tenant(&mut h, &Tenant::new("acme").unwrap());
        let all: Vec<_> = h.get_all(TENANT_HEADER).iter().collect();
        assert_eq!(all, ["acme"]);
    }

    #[tokio::test]
    async fn off_means_the_default_tenant_with_every_scope() {
        let dir = tempfile::tempdir().unwrap();
        let local = troupe_local::Local::open(dir.path()).unwrap();
        let auth = Auth::new(&Settings::default(), Arc::new(local.state.clone())).unwrap();
        assert!(!auth.is_on().await.unwrap());
        let p = auth
            .admit(
                &http::Method::DELETE,
                "/v1/webhooks/x",
                &http::HeaderMap::new(),
            )
            .await
            .unwrap();
        assert_eq!(p, Principal::anonymous());
        let required = Settings {
            mode: Mode::Required,
            ..Default::default()
        };
        let auth = Auth::new(&required, Arc::new(local.state.clone())).unwrap();
        let r = auth
            .admit(
                &http::Method::GET,
                "/v1/documents/x",
                &http::HeaderMap::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn keys_turn_auth_on_and_carry_tenant_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        let local = troupe_local::Local::open(dir.path()).unwrap();
        let state: Arc<dyn State> = Arc::new(local.state.clone());
        let auth = Auth::new(&Settings::default(), state.clone()).unwrap();
        assert!(!auth.is_on().await.unwrap());
        let store = KeyStore::new(state.clone());
        let tenant = Tenant::new("acme").unwrap();
        let (_, reader) = store.create(tenant.clone(), Scope::Read, "").await.unwrap();
        // A new host sees the key at once; this one within SWITCH_TTL.
        let auth = Auth::new(&Settings::default(), state.clone()).unwrap();
        assert!(auth.is_on().await.unwrap());
        let with = |key: &str| headers(&[&format!("Bearer {key}")]);
        let p = auth
            .admit(
                &http::Method::GET,
                "/v1/documents/x",
                &with(reader.expose()),
            )
            .await
            .unwrap();
        assert_eq!((p.tenant, p.scope), (tenant, Scope::Read));
        let r = auth
            .admit(&http::Method::POST, "/v1/documents", &with(reader.expose()))
            .await
            .unwrap_err();
        assert_eq!((r.status, r.code), (StatusCode::FORBIDDEN, "forbidden"));
        let r = auth
            .admit(
                &http::Method::GET,
                "/v1/documents/x",
                &http::HeaderMap::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(r.challenge.as_deref(), Some("Bearer"));
        let key = reader.expose();
        let last = if key.ends_with('a') { 'b' } else { 'a' };
        let wrong = format!("{}{last}", &key[..key.len() - 1]);
        let r = auth
            .admit(&http::Method::GET, "/v1/documents/x", &with(&wrong))
            .await
            .unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.challenge.as_deref(),
            Some(r#"Bearer error="invalid_token""#)
        );
    }
}
