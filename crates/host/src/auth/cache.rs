//! What the host remembers of the state store's keys, briefly, so that a request does
//! not read the store: each key record for at most [`KEY_TTL`] (a revocation reaches
//! every host within it), and whether any key exists for at most [`SWITCH_TTL`] while
//! none does (once one does, authentication stays on: records are never deleted).

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use super::keys::{self, KeyRecord, KeyStore};
use super::{Principal, Refusal, Result};

/// Longest a key record is used without reading it again.
pub const KEY_TTL: Duration = Duration::from_secs(2);

/// Longest "no key exists" is believed.
pub const SWITCH_TTL: Duration = Duration::from_secs(2);

/// Most key records remembered at once.
const MAX_RECORDS: usize = 4096;

/// Key records and the on/off switch.
#[derive(Debug)]
pub struct KeyCache {
    store: KeyStore,
    /// On whatever the store holds (`--auth required`, or an OIDC issuer).
    always: bool,
    /// When the store was last asked whether a key exists, and its answer.
    switch: RwLock<Option<(Instant, bool)>>,
    /// One store read at a time refreshes the switch.
    switch_refresh: tokio::sync::Mutex<()>,
    /// Key records by id, with when they were read.
    records: Mutex<HashMap<String, (Instant, KeyRecord)>>,
}

impl KeyCache {
    /// Nothing remembered yet.
    pub fn new(store: KeyStore, always: bool) -> Self {
        Self {
            store,
            always,
            switch: RwLock::new(None),
            switch_refresh: tokio::sync::Mutex::new(()),
            records: Mutex::new(HashMap::new()),
        }
    }

    fn switch(&self) -> Option<bool> {
        match *self.switch.read().unwrap_or_else(|p| p.into_inner()) {
            Some((_, true)) => Some(true),
            Some((at, false)) if at.elapsed() < SWITCH_TTL => Some(false),
            _ => None,
        }
    }

    /// Whether authentication is on.
    pub async fn is_on(&self) -> Result<bool> {
        if self.always {
            return Ok(true);
        }
        if let Some(on) = self.switch() {
            return Ok(on);
        }
        let _refreshing = self.switch_refresh.lock().await;
        if let Some(on) = self.switch() {
            return Ok(on);
        }
        let on = self.store.any().await?;
        *self.switch.write().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), on));
        if on {
            tracing::info!("an API key exists: requests to /v1/ need a credential from now on");
        }
        Ok(on)
    }

    /// The principal of API key `key`, or why it is refused.
    pub async fn verify(&self, key: &str) -> std::result::Result<Principal, Refusal> {
        let Some((id, secret)) = keys::parse(key) else {
            return Err(Refusal::unauthorized(
                "the bearer token is not a well-formed API key (trp_<id>_<secret>)",
                true,
            ));
        };
        let record = self.record(id).await?;
        let Some(record) = record.filter(|r| r.matches(secret)) else {
            return Err(Refusal::unauthorized("unknown API key", true));
        };
        if record.revoked_at.is_some() {
            return Err(Refusal::unauthorized("this API key has been revoked", true));
        }
        Ok(Principal {
            tenant: record.tenant,
            scope: record.scope,
            credential: record.id,
        })
    }

    /// Key `id`'s record, remembered or read.
    async fn record(&self, id: &str) -> std::result::Result<Option<KeyRecord>, Refusal> {
        {
            let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, r)) = records.get(id)
                && at.elapsed() < KEY_TTL
            {
                return Ok(Some(r.clone()));
            }
        }
        let record = self.store.get(id).await.map_err(|e| {
            tracing::warn!(key.id = %id, error = %e, "reading an API key failed");
            Refusal::unavailable("credentials cannot be checked right now; retry shortly")
        })?;
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        match &record {
            Some(r) => {
                if records.len() >= MAX_RECORDS {
                    records.retain(|_, (at, _)| now.duration_since(*at) < KEY_TTL);
                    if records.len() >= MAX_RECORDS {
                        records.clear();
                    }
                }
                records.insert(id.to_owned(), (now, r.clone()));
            }
            None => {
                records.remove(id);
            }
        }
        Ok(record)
    }
}
