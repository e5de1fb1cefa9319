//! A token issuer for the tests: signing keys made here (RSA for RS256, P-256 for
//! ES256), and a real OIDC discovery document and JWKS served over HTTP on
//! `127.0.0.1:0`, whose key set a test can change while `troupe` runs (key rotation).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::Generate as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key and its public JWK.
pub struct SigningKey {
    /// Its `kid`.
    pub kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key (RS256).
    pub fn rsa(kid: &str) -> Self {
        let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("RSA key");
        let der = key.to_pkcs1_der().expect("PKCS#1 DER");
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": b64(&key.n_bytes()), "e": b64(&key.e_bytes()),
            }),
        }
    }

    /// A fresh P-256 key (ES256).
    pub fn ec(kid: &str) -> Self {
        use p256::pkcs8::EncodePrivateKey as _;
        let key = p256::SecretKey::generate();
        let der = key.to_pkcs8_der().expect("PKCS#8 DER");
        // Uncompressed SEC1: 0x04, x, y.
        let point = key.public_key().to_sec1_bytes();
        assert_eq!(point.len(), 65, "an uncompressed P-256 point");
        let (x, y) = (&point[1..33], &point[33..]);
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({
                "kty": "EC", "use": "sig", "crv": "P-256", "kid": kid,
                "x": b64(x), "y": b64(y),
            }),
        }
    }

    /// A token with `claims`, signed by this key and naming its `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a token")
    }
}

/// An unsigned token (`alg: none`) with `claims`, naming `kid`.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": kid});
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// A token signed with HMAC-SHA256 under `secret` (a shared-secret algorithm the host
/// must refuse), naming `kid`.
pub fn hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_secret(secret).expect("an HMAC key");
    jsonwebtoken::encode(&header, claims, &key).expect("HS256")
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// An OIDC issuer on loopback: `/.well-known/openid-configuration` and `/jwks`.
pub struct Issuer {
    /// Its URL (`http://127.0.0.1:PORT`), the `iss` of its tokens.
    pub url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Issuer {
    /// Serves `keys` until the test process ends.
    pub fn start(keys: &[&SigningKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the issuer");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let issuer = Self {
            url: url.clone(),
            jwks: Arc::new(Mutex::new(Value::Null)),
            fetches: Arc::new(AtomicUsize::new(0)),
        };
        issuer.publish(keys);
        let (jwks, fetches) = (issuer.jwks.clone(), issuer.fetches.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/.well-known/openid-configuration" => (
                        "200 OK",
                        json!({"issuer": url, "jwks_uri": format!("{url}/jwks")}),
                    ),
                    "/jwks" => {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        ("200 OK", jwks.lock().expect("jwks").clone())
                    }
                    _ => ("404 Not Found", json!({})),
                };
                let body = body.to_string();
                let mut stream = reader.into_inner();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        issuer
    }

    /// Serves `keys` from now on (a rotation).
    pub fn publish(&self, keys: &[&SigningKey]) {
        let set: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.jwks.lock().expect("jwks") = json!({ "keys": set });
    }

    /// How many times the key set was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}
