//! TLS to Postgres, as libpq's `sslmode` describes it, with rustls (the ring provider
//! the rest of Troupe uses):
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked |
//! | `require` | always (RDS with `rds.force_ssl`) | not checked |
//! | `verify-full` | always | chain to `sslrootcert` (a PEM file; else the web PKI roots) and the host name |
//!
//! `sslmode` and `sslrootcert` are read from the URL's query (or the `key=value` form)
//! and the rest is handed to `tokio-postgres`, which knows only the first three modes.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;
use troupe_core::{Error, Result};

/// How a connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, unverified.
    Prefer,
    /// TLS always, unverified.
    Require,
    /// TLS always, chain and host name verified.
    VerifyFull,
}

/// The TLS settings of a connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `sslmode`.
    pub mode: Mode,
    /// `sslrootcert`: the CA certificates (PEM) a `verify-full` server must chain to.
    pub root_cert: Option<PathBuf>,
}

/// Splits `sslmode` and `sslrootcert` off a Postgres URL (or `key=value` string);
/// returns the rest for `tokio-postgres`, and the settings.
pub fn split(url: &str) -> Result<(String, Settings)> {
    let mut settings = Settings {
        mode: Mode::Prefer,
        root_cert: None,
    };
    let mut take = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => {
                settings.mode = match value {
                    "disable" => Mode::Disable,
                    "prefer" | "allow" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(Error::invalid(
                            "TROUPE_DATABASE_URL",
                            format!(
                                "sslmode={other} is not supported: use disable, prefer, require or verify-full"
                            ),
                        ));
                    }
                };
                Ok(true)
            }
            "sslrootcert" => {
                settings.root_cert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if let Some((base, query)) = url
        .split_once('?')
        .filter(|_| url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            if !take(k, &v)? {
                kept.push(pair);
            }
        }
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        }
    } else if url.contains("://") {
        url.to_owned()
    } else {
        let mut kept = Vec::new();
        for token in url.split_whitespace() {
            let (k, v) = token.split_once('=').unwrap_or((token, ""));
            if !take(k, v.trim_matches('\''))? {
                kept.push(token);
            }
        }
        kept.join(" ")
    };
    if settings.root_cert.is_some() && settings.mode != Mode::VerifyFull {
        return Err(Error::invalid(
            "TROUPE_DATABASE_URL",
            "sslrootcert is given but sslmode is not verify-full: the certificate would not be checked; add sslmode=verify-full",
        ));
    }
    Ok((rest, settings))
}

/// `%XX` escapes of a URL query value decoded (a path may hold spaces or `&`).
fn percent_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Settings {
    /// `tokio-postgres`'s own mode for these settings.
    pub fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector for these settings.
    pub fn connector(&self) -> Result<MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::backend("postgres", e))?;
        let config = match self.mode {
            Mode::VerifyFull => {
                let mut roots = rustls::RootCertStore::empty();
                match &self.root_cert {
                    Some(path) => {
                        let certs: Vec<CertificateDer<'static>> =
                            CertificateDer::pem_file_iter(path)
                                .and_then(|it| it.collect())
                                .map_err(|e| {
                                    Error::invalid(
                                        "TROUPE_DATABASE_URL",
                                        format!(
                                            "sslrootcert {}: cannot read PEM certificates: {e}",
                                            path.display()
                                        ),
                                    )
                                })?;
                        let (added, _) = roots.add_parsable_certificates(certs);
                        if added == 0 {
                            return Err(Error::invalid(
                                "TROUPE_DATABASE_URL",
                                format!(
                                    "sslrootcert {} holds no usable certificate",
                                    path.display()
                                ),
                            ));
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }
}

/// `prefer`/`require`: the channel is encrypted and the handshake's signatures are
/// checked, but the certificate is taken as it comes (libpq's meaning of the modes).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_off_the_url() {
        let (rest, s) = split("postgres://u:p@db:5432/troupe?sslmode=verify-full&sslrootcert=%2Fetc%2Frds%20ca.pem&application_name=x").unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/troupe?application_name=x");
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(
            s.root_cert.as_deref(),
            Some(std::path::Path::new("/etc/rds ca.pem"))
        );
        let (rest, s) = split("postgres://u@db/troupe?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), s.mode),
            ("postgres://u@db/troupe", Mode::Require)
        );
        let (rest, s) = split("postgres://u@db/troupe").unwrap();
        assert_eq!(
            (rest.as_str(), s.mode),
            ("postgres://u@db/troupe", Mode::Prefer)
        );
        let (rest, s) = split("host=db user=u sslmode=disable dbname=t").unwrap();
        assert_eq!(
            (rest.as_str(), s.mode),
            ("host=db user=u dbname=t", Mode::Disable)
        );
        let err = split("postgres://db/t?sslmode=verify-ca")
            .unwrap_err()
            .to_string();
        assert!(err.contains("verify-full"), "{err}");
        let err = split("postgres://db/t?sslrootcert=/ca.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslmode=verify-full"), "{err}");
    }
}
