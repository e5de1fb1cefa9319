//! The issuer's signing keys: found through `<issuer>/.well-known/openid-configuration`
//! (its `jwks_uri`), kept in memory, fetched again when a token names a key not among
//! them (at most once per refetch interval, so unknown `kid`s cannot make the host
//! hammer the issuer) and at least every [`MAX_AGE`], so keys the issuer dropped stop
//! being accepted.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::oidc::check_url;

/// Keys older than this are fetched again before use (the old ones serve if the
/// issuer cannot be reached).
const MAX_AGE: Duration = Duration::from_secs(600);

/// Longest a fetch of the discovery document or the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest discovery document or key set read.
const MAX_DOCUMENT: u64 = 1 << 20;

/// One verification key.
struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// A fetched key set.
struct KeySet {
    keys: Vec<Key>,
    fetched: Instant,
}

impl KeySet {
    /// The key `kid` names for `alg`; a token without `kid` is accepted only when one
    /// key fits its algorithm.
    fn get(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let mut fitting = self.keys.iter().filter(|k| k.alg == alg);
        match kid {
            Some(kid) => fitting
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| k.key.clone()),
            None => match (fitting.next(), fitting.next()) {
                (Some(k), None) => Some(k.key.clone()),
                _ => None,
            },
        }
    }
}

/// What [`Keys::find`] found.
pub enum KeyLookup {
    /// The key to verify the token with.
    Found(DecodingKey),
    /// The issuer does not list that key.
    Unknown,
    /// The issuer's keys could not be fetched.
    Unavailable(String),
}

/// Fetch bookkeeping, held while fetching (one fetch at a time).
#[derive(Default)]
struct Fetches {
    last_attempt: Option<Instant>,
    jwks_uri: Option<String>,
}

/// One issuer's keys.
pub struct Keys {
    issuer: String,
    refetch_interval: Duration,
    current: RwLock<Option<Arc<KeySet>>>,
    fetches: tokio::sync::Mutex<Fetches>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// `issuer`'s keys, fetched on first use.
    pub fn new(issuer: &str, refetch_interval: Duration) -> Self {
        Self {
            issuer: issuer.to_owned(),
            refetch_interval,
            current: RwLock::new(None),
            fetches: tokio::sync::Mutex::new(Fetches::default()),
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The key for a token's `kid` and `alg`, fetching the key set when it does not
    /// hold it (or is old) and the refetch interval allows.
    pub async fn find(&self, kid: Option<&str>, alg: Algorithm) -> KeyLookup {
        if let Some(set) = self.current()
            && set.fetched.elapsed() < MAX_AGE
            && let Some(key) = set.get(kid, alg)
        {
            return KeyLookup::Found(key);
        }
        let mut fetches = self.fetches.lock().await;
        // Another request may have fetched while this one waited.
        let set = self.current();
        if let Some(set) = &set
            && set.fetched.elapsed() < MAX_AGE
            && let Some(key) = set.get(kid, alg)
        {
            return KeyLookup::Found(key);
        }
        let old = set.as_ref().and_then(|s| s.get(kid, alg));
        let may_fetch = fetches
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.refetch_interval);
        if !may_fetch {
            return match (old, &set) {
                (Some(key), _) => KeyLookup::Found(key),
                (None, Some(_)) => KeyLookup::Unknown,
                (None, None) => KeyLookup::Unavailable(format!(
                    "the token issuer's keys could not be fetched; retrying at most every {:?}",
                    self.refetch_interval
                )),
            };
        }
        fetches.last_attempt = Some(Instant::now());
        match self.fetch(&mut fetches).await {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                tracing::info!(
                    issuer = %self.issuer,
                    keys = fresh.keys.len(),
                    "fetched the token issuer's signing keys"
                );
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh.clone());
                fresh
                    .get(kid, alg)
                    .map_or(KeyLookup::Unknown, KeyLookup::Found)
            }
            Err(why) => {
                tracing::warn!(issuer = %self.issuer, error = %why, "fetching the token issuer's signing keys failed");
                match old {
                    Some(key) => KeyLookup::Found(key),
                    None => KeyLookup::Unavailable(
                        "the token issuer's keys could not be fetched; retry shortly".into(),
                    ),
                }
            }
        }
    }

    /// Discovery (once) and the key set.
    async fn fetch(&self, fetches: &mut Fetches) -> Result<KeySet, String> {
        let jwks_uri = match &fetches.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.issuer.trim_end_matches('/')
                );
                let doc = get_json(url.clone()).await?;
                let named = doc["issuer"].as_str().unwrap_or_default();
                if named != self.issuer {
                    return Err(format!(
                        "{url} names the issuer `{named}`, not `{}`: give --oidc-issuer exactly as the issuer names itself",
                        self.issuer
                    ));
                }
                let uri = doc["jwks_uri"]
                    .as_str()
                    .ok_or_else(|| format!("{url} has no `jwks_uri`"))?;
                check_url(uri, "jwks_uri").map_err(|e| format!("{url}: {e}"))?;
                fetches.jwks_uri = Some(uri.to_owned());
                uri.to_owned()
            }
        };
        let doc = get_json(jwks_uri).await?;
        Ok(KeySet {
            keys: parse_keys(&doc),
            fetched: Instant::now(),
        })
    }
}

/// GETs a JSON document with a timeout and a size cap, off the async threads.
async fn get_json(url: String) -> Result<Value, String> {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent
            .get(&url)
            .header("accept", "application/json")
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", resp.status()));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT)
            .read_to_string()
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: not JSON: {e}"))
    })
    .await
    .map_err(|e| format!("the fetch task failed: {e}"))?
}

/// The signature keys of a JWK set the host can use: RSA (RS256) and EC P-256 (ES256);
/// others, encryption keys and malformed entries are skipped.
fn parse_keys(doc: &Value) -> Vec<Key> {
    let Some(entries) = doc["keys"].as_array() else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
        .filter_map(|k| {
            let (alg, key) = match (k["kty"].as_str()?, k["crv"].as_str()) {
                ("RSA", _) => (
                    Algorithm::RS256,
                    DecodingKey::from_rsa_components(k["n"].as_str()?, k["e"].as_str()?).ok()?,
                ),
                ("EC", Some("P-256")) => (
                    Algorithm::ES256,
                    DecodingKey::from_ec_components(k["x"].as_str()?, k["y"].as_str()?).ok()?,
                ),
                _ => return None,
            };
            // A key bound to another algorithm is not used for this one.
            if k["alg"].as_str().is_some_and(|a| a != alg_name(alg)) {
                return None;
            }
            Some(Key {
                kid: k["kid"].as_str().map(str::to_owned),
                alg,
                key,
            })
        })
        .collect()
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        _ => "RS256",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A P-256 point (the generator) and an RSA modulus-shaped value.
    const X: &str = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY";
    const Y: &str = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";
    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";
    const E: &str = "AQAB";

    #[test]
    fn usable_signature_keys_are_kept() {
        let doc = json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": N, "e": E, "use": "sig", "alg": "RS256"},
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": X, "y": Y},
            {"kty": "RSA", "kid": "enc", "n": N, "e": E, "use": "enc"},
            {"kty": "RSA", "kid": "ps", "n": N, "e": E, "alg": "PS256"},
            {"kty": "EC", "kid": "p384", "crv": "P-384", "x": X, "y": Y},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken"},
            "not a key",
        ]});
        let set = KeySet {
            keys: parse_keys(&doc),
            fetched: Instant::now(),
        };
        let kids: Vec<_> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["r1", "e1"]);
        assert!(set.get(Some("r1"), Algorithm::RS256).is_some());
        assert!(set.get(Some("r1"), Algorithm::ES256).is_none());
        assert!(set.get(Some("e1"), Algorithm::ES256).is_some());
        assert!(set.get(Some("nope"), Algorithm::RS256).is_none());
        // Without `kid`: the one key of that algorithm.
        assert!(set.get(None, Algorithm::ES256).is_some());
        assert!(parse_keys(&json!({})).is_empty());
        assert!(parse_keys(&json!({"keys": 3})).is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_unavailable_and_refetches_are_spaced() {
        // Port 9 (discard) on loopback: nothing listens there in a test machine.
        let keys = Keys::new("http://127.0.0.1:9", Duration::from_secs(3600));
        assert!(matches!(
            keys.find(Some("k"), Algorithm::RS256).await,
            KeyLookup::Unavailable(_)
        ));
        let first = keys.fetches.lock().await.last_attempt;
        assert!(matches!(
            keys.find(Some("k"), Algorithm::RS256).await,
            KeyLookup::Unavailable(_)
        ));
        assert_eq!(
            keys.fetches.lock().await.last_attempt,
            first,
            "no second fetch within the interval"
        );
    }
}
