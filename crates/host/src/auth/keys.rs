//! API keys: `trp_<id>_<secret>`, stored only as the SHA-256 of the secret, in the
//! backend's state store under `_troupe/keys/<id>`, so every host of a deployment sees
//! the same keys. A revoked key keeps its record (with `revoked_at`).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use troupe_core::State;
use troupe_events::Tenant;

use super::{Error, Result, Scope};

/// Where key records live in the state store (`_troupe/` is reserved for the host).
pub const KEY_PREFIX: &str = "_troupe/keys/";

/// How every API key starts.
pub const KEY_MARK: &str = "trp_";

/// Random bytes in a key id (shown as hex).
const ID_BYTES: usize = 8;

/// Characters of a key's secret: base62, 43 of them carry 256 bits.
const SECRET_CHARS: usize = 43;

/// Longest label a key may carry.
const MAX_LABEL: usize = 200;

/// A stored key: who it is for and what it may do; never the secret itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public part of the key (`trp_<id>_…`), for listing and revoking.
    pub id: String,
    /// SHA-256 of the secret, lowercase hex: enough to check a key, useless to forge one.
    pub hash: String,
    /// The tenant every request with this key acts in.
    pub tenant: Tenant,
    /// What the key may do.
    pub scope: Scope,
    /// The operator's note on what the key is for.
    #[serde(default)]
    pub label: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked key is refused, and its record stays.
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("scope", &self.scope)
            .field("label", &self.label)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl KeyRecord {
    /// Whether `secret` is this key's secret (compared in constant time).
    pub fn matches(&self, secret: &str) -> bool {
        let mut stored = [0u8; 32];
        if hex::decode_to_slice(&self.hash, &mut stored).is_err() {
            return false;
        }
        bool::from(hash_secret(secret)[..].ct_eq(&stored[..]))
    }

    /// The listing form: everything but the hash.
    pub fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "tenant": self.tenant,
            "scope": self.scope,
            "label": self.label,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        })
    }
}

/// A whole API key, secret included: shown once, at creation. Its `Debug` hides the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key as the client sends it (`trp_<id>_<secret>`).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match parse(&self.0) {
            Some((id, _)) => write!(f, "ApiKey({KEY_MARK}{id}_…)"),
            None => f.write_str("ApiKey(…)"),
        }
    }
}

/// SHA-256 of a key's secret.
fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Splits `trp_<id>_<secret>` into id and secret; `None` when it is not shaped like a
/// key (16 hex digits of id, 43 base62 characters of secret).
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let (id, secret) = key.strip_prefix(KEY_MARK)?.split_once('_')?;
    let id_ok = id.len() == ID_BYTES * 2
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let secret_ok =
        secret.len() == SECRET_CHARS && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    (id_ok && secret_ok).then_some((id, secret))
}

/// A fresh key: a random id and a secret of 256 random bits.
fn generate() -> (String, String) {
    let mut rng = rand::rng();
    let id = hex::encode(rng.random::<[u8; ID_BYTES]>());
    let secret: String = (&mut rng)
        .sample_iter(rand::distr::Alphanumeric)
        .take(SECRET_CHARS)
        .map(char::from)
        .collect();
    (id, secret)
}

/// The state key of key `id`'s record.
fn record_key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}")
}

/// What [`KeyStore::revoke`] did.
#[derive(Debug, Clone)]
pub enum Revoked {
    /// The key was live and is revoked now.
    Now(KeyRecord),
    /// The key had been revoked before; nothing changed.
    Already(KeyRecord),
}

/// The keys in a backend's state store.
#[derive(Clone)]
pub struct KeyStore {
    state: Arc<dyn State>,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Keys in `state`.
    pub fn new(state: Arc<dyn State>) -> Self {
        Self { state }
    }

    /// Creates a key for `tenant` with `scope`; the returned [`ApiKey`] is the only copy
    /// of its secret.
    pub async fn create(
        &self,
        tenant: Tenant,
        scope: Scope,
        label: &str,
    ) -> Result<(KeyRecord, ApiKey)> {
        check_label(label)?;
        let (id, secret) = generate();
        let record = KeyRecord {
            hash: hex::encode(hash_secret(&secret)),
            id: id.clone(),
            tenant,
            scope,
            label: label.to_owned(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        // Expected version 0: a (vanishingly unlikely) id collision fails, never overwrites.
        self.state
            .put(&record_key(&id), &encode(&record)?, Some(0))
            .await?;
        Ok((record, ApiKey(format!("{KEY_MARK}{id}_{secret}"))))
    }

    /// Key `id`'s record, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<KeyRecord>> {
        Ok(self.get_versioned(id).await?.map(|(r, _)| r))
    }

    async fn get_versioned(&self, id: &str) -> Result<Option<(KeyRecord, u64)>> {
        let key = record_key(id);
        match self.state.get(&key).await? {
            Some(entry) => Ok(Some((decode(&key, &entry.value)?, entry.version))),
            None => Ok(None),
        }
    }

    /// Every key (of `tenant`, if given), revoked ones too, oldest first.
    pub async fn list(&self, tenant: Option<&Tenant>) -> Result<Vec<KeyRecord>> {
        let mut out = Vec::new();
        for key in self.state.list(KEY_PREFIX).await? {
            if let Some(entry) = self.state.get(&key).await? {
                let record = decode(&key, &entry.value)?;
                if tenant.is_none_or(|t| *t == record.tenant) {
                    out.push(record);
                }
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Whether any key exists, revoked ones included: then authentication is on.
    pub async fn any(&self) -> Result<bool> {
        Ok(!self.state.list(KEY_PREFIX).await?.is_empty())
    }

    /// Revokes key `id`: every host refuses it once its cache of the key expires
    /// (within seconds).
    pub async fn revoke(&self, id: &str) -> Result<Revoked> {
        loop {
            let Some((mut record, version)) = self.get_versioned(id).await? else {
                return Err(Error::UnknownKey(id.chars().take(80).collect()));
            };
            if record.revoked_at.is_some() {
                return Ok(Revoked::Already(record));
            }
            record.revoked_at = Some(Utc::now());
            match self
                .state
                .put(&record_key(id), &encode(&record)?, Some(version))
                .await
            {
                Ok(_) => return Ok(Revoked::Now(record)),
                // Revoked (or relabelled) meanwhile by someone else: look again.
                Err(troupe_core::Error::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn check_label(label: &str) -> Result<()> {
    if label.chars().count() > MAX_LABEL || label.chars().any(char::is_control) {
        return Err(Error::InvalidLabel(format!(
            "a label is at most {MAX_LABEL} characters, without control characters"
        )));
    }
    Ok(())
}

fn encode(record: &KeyRecord) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::Corrupt {
        key: record_key(&record.id),
        why: e.to_string(),
    })
}

fn decode(key: &str, bytes: &[u8]) -> Result<KeyRecord> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_parse_back() {
        let (id, secret) = generate();
        let key = format!("{KEY_MARK}{id}_{secret}");
        assert_eq!(parse(&key), Some((id.as_str(), secret.as_str())));
        assert_eq!(id.len(), 16);
        assert_eq!(secret.len(), 43);
        assert!(secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        let (id2, secret2) = generate();
        assert!(id != id2 && secret != secret2);
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let (id, secret) = generate();
        let bad = [
            String::new(),
            "trp_".into(),
            format!("trx_{id}_{secret}"),
            format!("{KEY_MARK}{id}{secret}"),
            format!("{KEY_MARK}{}_{secret}", &id[1..]),
            format!("{KEY_MARK}{}_{secret}", id.to_uppercase()),
            format!("{KEY_MARK}{id}_{}", &secret[1..]),
            format!("{KEY_MARK}{id}_{secret}x"),
            format!("{KEY_MARK}{id}_{}-", &secret[1..]),
        ];
        for key in bad {
            assert_eq!(parse(&key), None, "{key}");
        }
    }

    #[test]
    fn only_the_hash_is_stored_and_it_checks_the_secret() {
        let (id, secret) = generate();
        let record = KeyRecord {
            id,
            hash: hex::encode(hash_secret(&secret)),
            tenant: Tenant::new("acme").unwrap(),
            scope: Scope::Write,
            label: "ci".into(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        assert!(record.matches(&secret));
        let mut other = secret.clone().into_bytes();
        other[0] = if other[0] == b'a' { b'b' } else { b'a' };
        assert!(!record.matches(&String::from_utf8(other).unwrap()));
        assert!(!record.matches(""));
        let stored = String::from_utf8(encode(&record).unwrap()).unwrap();
        assert!(!stored.contains(&secret), "{stored}");
        assert_eq!(record.hash.len(), 64);
        assert!(!record.public().to_string().contains(&record.hash));
        assert!(!format!("{record:?}").contains(&record.hash));
        let broken = KeyRecord {
            hash: "not hex".into(),
            ..record
        };
        assert!(!broken.matches(&secret));
    }

    #[test]
    fn a_key_debug_hides_its_secret() {
        let (id, secret) = generate();
        let key = ApiKey(format!("{KEY_MARK}{id}_{secret}"));
        let shown = format!("{key:?}");
        assert!(shown.contains(&id) && !shown.contains(&secret), "{shown}");
    }

    #[tokio::test]
    async fn keys_are_created_listed_and_revoked_in_the_state_store() {
        let dir = tempfile::tempdir().unwrap();
        let local = troupe_local::Local::open(dir.path()).unwrap();
        let store = KeyStore::new(Arc::new(local.state.clone()));
        assert!(!store.any().await.unwrap());
        let acme = Tenant::new("acme").unwrap();
        let (a, key) = store
            .create(acme.clone(), Scope::Admin, "ops")
            .await
            .unwrap();
        let (b, _) = store
            .create(Tenant::new("beta").unwrap(), Scope::Read, "")
            .await
            .unwrap();
        assert!(store.any().await.unwrap());
        let (id, secret) = parse(key.expose()).unwrap();
        assert_eq!(id, a.id);
        let stored = store.get(id).await.unwrap().unwrap();
        assert!(stored.matches(secret));
        assert_eq!(store.list(None).await.unwrap().len(), 2);
        assert_eq!(
            store.list(Some(&acme)).await.unwrap(),
            std::slice::from_ref(&a)
        );
        match store.revoke(&b.id).await.unwrap() {
            Revoked::Now(r) => assert!(r.revoked_at.is_some()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.revoke(&b.id).await.unwrap(),
            Revoked::Already(_)
        ));
        let listed = store.list(None).await.unwrap();
        assert!(
            listed
                .iter()
                .any(|r| r.id == b.id && r.revoked_at.is_some())
        );
        let e = store.revoke("0000000000000000").await.unwrap_err();
        assert!(matches!(e, Error::UnknownKey(_)), "{e}");
        assert!(store.create(acme, Scope::Read, "a\u{7}").await.is_err());
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label("ci runner").is_ok());
        assert!(check_label("").is_ok());
        assert!(check_label("a\nb").is_err());
        assert!(check_label(&"x".repeat(MAX_LABEL + 1)).is_err());
    }
}
