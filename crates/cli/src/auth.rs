//! The authentication flags of `troupe up` and `troupe serve` (the Lambda adapter
//! reads the same variables from its environment), and the rule that a host reachable
//! beyond this machine does not serve the API to anyone without
//! `--insecure-no-auth`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Parser as _;
use troupe_host::auth::{Mode, OidcSettings, RateSettings, Settings};

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Requests need a credential once an API key exists (`troupe keys create`) or an
    /// OIDC issuer is set; before that, everything runs as tenant `default`.
    Auto,
    /// Requests always need a credential.
    Required,
}

/// Authentication and rate limits of the API (`/v1/…`).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// When `/v1/…` requests need `Authorization: Bearer <API key or token>`: `auto`
    /// once an API key exists in the backend or --oidc-issuer is set, `required`
    /// always. `/health` and `/metrics` stay open.
    #[arg(long, env = "TROUPE_AUTH", value_enum, default_value = "auto")]
    pub auth: AuthMode,
    /// Accept OIDC bearer tokens (JWTs signed RS256 or ES256) from this issuer: its
    /// `/.well-known/openid-configuration` names the signing keys. https://, or
    /// http:// on a loopback address only.
    #[arg(long, env = "TROUPE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The audience (`aud`) tokens for this API carry; required with --oidc-issuer.
    #[arg(long, env = "TROUPE_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,
    /// The token claim that names the caller's tenant (`[a-z0-9][a-z0-9-]{0,62}`).
    #[arg(long, env = "TROUPE_OIDC_TENANT_CLAIM", default_value = "tenant")]
    pub oidc_tenant_claim: String,
    /// Least time between two fetches of the issuer's keys when a token names a key
    /// the host does not know (ms): a rotated key is picked up after at most this.
    #[arg(
        long,
        env = "TROUPE_OIDC_REFETCH_INTERVAL_MS",
        default_value_t = 10_000
    )]
    pub oidc_refetch_interval_ms: u64,
    /// Requests per second each credential (API key, or token subject) may make,
    /// sustained (a decimal, e.g. 20 or 0.5); past it the answer is 429 with
    /// `Retry-After`. Off when unset or empty.
    // Strings, so that an empty variable (a deployment template's default) is unset.
    #[arg(long, env = "TROUPE_RATE_LIMIT", value_name = "RPS")]
    pub rate_limit: Option<String>,
    /// Requests a credential may make at once after being idle (default: the rate,
    /// rounded up). Needs --rate-limit.
    #[arg(long, env = "TROUPE_RATE_BURST", value_name = "N")]
    pub rate_burst: Option<String>,
    /// Serve the API without authentication on an address reachable beyond this
    /// machine (a non-loopback --listen); refused otherwise while no API key exists,
    /// no --oidc-issuer is set and --auth is not `required`.
    #[arg(long, env = "TROUPE_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// [`AuthArgs`] alone, to read them from the environment.
#[derive(Debug, clap::Parser)]
struct EnvOnly {
    #[command(flatten)]
    auth: AuthArgs,
}

impl AuthArgs {
    /// The flags' values from the environment only (`TROUPE_AUTH`, `TROUPE_OIDC_…`,
    /// `TROUPE_RATE_…`), as the Lambda adapter is configured.
    pub fn from_env() -> Result<Self> {
        Ok(EnvOnly::try_parse_from(["troupe"])?.auth)
    }

    /// The host's settings, checked.
    pub fn settings(&self) -> Result<Settings> {
        fn given(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let oidc = match (given(&self.oidc_issuer), given(&self.oidc_audience)) {
            (None, None) => None,
            (None, Some(_)) => bail!("--oidc-audience needs --oidc-issuer (TROUPE_OIDC_ISSUER)"),
            (Some(_), None) => bail!(
                "--oidc-issuer needs --oidc-audience (TROUPE_OIDC_AUDIENCE): the `aud` that tokens for this API carry"
            ),
            (Some(issuer), Some(audience)) => Some(OidcSettings {
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                tenant_claim: self.oidc_tenant_claim.trim().to_owned(),
                refetch_interval: Duration::from_millis(self.oidc_refetch_interval_ms),
            }),
        };
        let rate = match (given(&self.rate_limit), given(&self.rate_burst)) {
            (None, None) => None,
            (None, Some(_)) => bail!("--rate-burst needs --rate-limit (TROUPE_RATE_LIMIT)"),
            (Some(rps), burst) => {
                let per_second: f64 = rps.parse().map_err(|_| {
                    anyhow::anyhow!("--rate-limit {rps}: give requests per second, e.g. 20 or 0.5")
                })?;
                let burst = match burst {
                    Some(n) => n.parse().map_err(|_| {
                        anyhow::anyhow!("--rate-burst {n}: give a whole number of requests")
                    })?,
                    // Whole requests; the float-to-int cast saturates.
                    None => per_second.ceil().max(1.0) as u32,
                };
                Some(RateSettings { per_second, burst })
            }
        };
        let settings = Settings {
            mode: match self.auth {
                AuthMode::Auto => Mode::Auto,
                AuthMode::Required => Mode::Required,
            },
            oidc,
            rate,
        };
        settings.check()?;
        Ok(settings)
    }

    /// Refuses a listener reachable beyond this machine while authentication is off
    /// (`keys_exist`: whether the backend holds an API key), unless
    /// --insecure-no-auth says so.
    pub fn check_listen(
        &self,
        listen: SocketAddr,
        settings: &Settings,
        keys_exist: bool,
    ) -> Result<()> {
        let on = settings.mode == Mode::Required || settings.oidc.is_some() || keys_exist;
        if on || listen.ip().is_loopback() || self.insecure_no_auth {
            return Ok(());
        }
        bail!(
            "--listen {listen} is reachable beyond this machine and authentication is off (no API key exists, no --oidc-issuer, --auth is not `required`): \
             create a key first (`troupe keys create --tenant NAME`), set --oidc-issuer, or pass --insecure-no-auth to serve the API to anyone who can reach it"
        )
    }
}

/// The gate of `troupe worker`'s listener: the deployment's credentials, as the
/// hosts check them.
pub fn worker_gate(auth: troupe_host::auth::Auth) -> troupe_gpu_worker::server::Gate {
    let auth = std::sync::Arc::new(auth);
    std::sync::Arc::new(move |method, path, headers| {
        let auth = auth.clone();
        Box::pin(async move {
            auth.admit(&method, &path, &headers)
                .await
                .map(|_| ())
                .map_err(|r| {
                    let mut headers = Vec::new();
                    if let Some(c) = r
                        .challenge
                        .and_then(|c| troupe_host::http::HeaderValue::from_str(&c).ok())
                    {
                        headers.push((troupe_host::http::header::WWW_AUTHENTICATE, c));
                    }
                    if let Some(secs) = r.retry_after {
                        headers.push((
                            troupe_host::http::header::RETRY_AFTER,
                            troupe_host::http::HeaderValue::from(secs),
                        ));
                    }
                    troupe_gpu_worker::server::Denied {
                        status: r.status.as_u16(),
                        body: serde_json::json!({"error": {"code": r.code, "message": r.message}}),
                        headers,
                    }
                })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> AuthArgs {
        let mut argv = vec!["troupe"];
        argv.extend_from_slice(extra);
        EnvOnly::try_parse_from(argv).unwrap().auth
    }

    #[test]
    fn oidc_flags_go_together() {
        let s = args(&[
            "--oidc-issuer",
            "https://idp.example.com",
            "--oidc-audience",
            "api",
        ])
        .settings()
        .unwrap();
        let oidc = s.oidc.unwrap();
        assert_eq!(
            (
                oidc.issuer.as_str(),
                oidc.audience.as_str(),
                oidc.tenant_claim.as_str()
            ),
            ("https://idp.example.com", "api", "tenant")
        );
        for (flags, says) in [
            (
                &["--oidc-issuer", "https://idp.example.com"][..],
                "--oidc-audience",
            ),
            (&["--oidc-audience", "api"][..], "--oidc-issuer"),
            (
                &[
                    "--oidc-issuer",
                    "http://idp.example.com",
                    "--oidc-audience",
                    "api",
                ][..],
                "loopback",
            ),
            (&["--rate-burst", "3"][..], "--rate-limit"),
            (&["--rate-limit", "0"][..], "--rate-limit"),
        ] {
            let e = args(flags).settings().unwrap_err().to_string();
            assert!(e.contains(says), "{flags:?}: {e}");
        }
    }

    #[test]
    fn empty_values_are_unset_and_bad_ones_named() {
        let s = args(&["--rate-limit", "", "--rate-burst", " ", "--oidc-issuer", ""])
            .settings()
            .unwrap();
        assert_eq!((s.rate, s.oidc), (None, None));
        for (flags, says) in [
            (&["--rate-limit", "fast"][..], "--rate-limit fast"),
            (
                &["--rate-limit", "2", "--rate-burst", "1.5"][..],
                "--rate-burst 1.5",
            ),
        ] {
            let e = args(flags).settings().unwrap_err().to_string();
            assert!(e.contains(says), "{flags:?}: {e}");
        }
    }

    #[test]
    fn the_burst_defaults_to_the_rate() {
        let s = args(&["--rate-limit", "2.5"]).settings().unwrap();
        assert_eq!(s.rate.unwrap().burst, 3);
        let s = args(&["--rate-limit", "0.2", "--rate-burst", "5"])
            .settings()
            .unwrap();
        assert_eq!(s.rate.unwrap().burst, 5);
    }

    #[test]
    fn only_loopback_listens_without_auth() {
        let off = args(&[]);
        let s = off.settings().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let e = off.check_listen(public, &s, false).unwrap_err().to_string();
        assert!(e.contains("--insecure-no-auth"), "{e}");
        assert!(off.check_listen(local, &s, false).is_ok());
        assert!(
            off.check_listen("[::1]:80".parse().unwrap(), &s, false)
                .is_ok()
        );
        assert!(off.check_listen(public, &s, true).is_ok());
        let insecure = args(&["--insecure-no-auth"]);
        assert!(insecure.check_listen(public, &s, false).is_ok());
        let required = args(&["--auth", "required"]);
        let s = required.settings().unwrap();
        assert!(required.check_listen(public, &s, false).is_ok());
    }
}
