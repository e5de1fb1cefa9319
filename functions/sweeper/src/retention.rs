//! The retention pass: once per `retention_interval_ms` (default a minute) it
//!
//! - removes the working state (`heartbeat/`, `join/`, `active/`, webhook claims) of
//!   documents settled more than `settled_retention_ms` ago (default an hour), from
//!   the work list `settled/` that `status` keeps;
//! - drops the tombstones of documents deleted more than `tombstone_retention_ms` ago
//!   (default 7 days), forgetting the document once more first (a late event racing
//!   the deletion may have left a trail entry);
//! - drops circuit breakers of endpoints with no claims left whose circuit closed more
//!   than `settled_retention_ms` ago.
//!
//! Every listing is a key range under one prefix, and each prefix holds only what is
//! still within its retention, so a pass costs what is recent, not all history.

use troupe_guest::retention::{self, BREAKER_PREFIX, GONE_PREFIX, SETTLED_PREFIX, WEBHOOK_PREFIX};
use troupe_guest::{Result, config_u64, host, log, logging, now_ms, state};

/// Runs the pass over `tenant`'s keys if one is due.
pub fn retain(tenant: &str) -> Result<()> {
    let now = now_ms();
    let last_pass = format!("sweeper/{tenant}/last-retention");
    let last = state::get(&last_pass)
        .map_err(host("state"))?
        .and_then(|e| String::from_utf8_lossy(&e.value).parse::<u64>().ok())
        .unwrap_or(0);
    if now.saturating_sub(last) < config_u64("retention_interval_ms", 60_000) {
        return Ok(());
    }
    let keep_settled = config_u64("settled_retention_ms", 3_600_000);
    let keep_tombstones = config_u64("tombstone_retention_ms", 7 * 24 * 3_600_000);
    let claims = state::list_keys(&format!("{WEBHOOK_PREFIX}{tenant}/"))
        .map_err(host("listing webhook claims"))?;
    let settled = format!("{SETTLED_PREFIX}{tenant}/");
    each_older(&settled, now, keep_settled, |id| {
        retention::remove_working_state(tenant, id, &claims)
    })?;
    let gone = format!("{GONE_PREFIX}{tenant}/");
    each_older(&gone, now, keep_tombstones, |id| {
        retention::forget(tenant, id)
    })?;
    breakers(tenant, now, keep_settled)?;
    state::put(&last_pass, now.to_string().as_bytes(), None).map_err(host("state"))?;
    Ok(())
}

/// For each entry `<prefix><id>` (`prefix` ends with the tenant's `/`) holding a
/// time (ms) more than `keep_ms` before `now`: runs `f`, then removes the entry. One
/// bad entry does not stop the others.
fn each_older(prefix: &str, now: u64, keep_ms: u64, f: impl Fn(&str) -> Result<()>) -> Result<()> {
    let keys = state::list_keys(prefix).map_err(host(format!("listing {prefix}")))?;
    for key in keys {
        let Some(id) = key.strip_prefix(prefix).filter(|id| !id.contains('/')) else {
            continue;
        };
        let done = (|| -> Result<()> {
            let Some(entry) = state::get(&key).map_err(host(format!("reading {key}")))? else {
                return Ok(());
            };
            let at = String::from_utf8_lossy(&entry.value)
                .parse::<u64>()
                .unwrap_or(0);
            if now.saturating_sub(at) <= keep_ms {
                return Ok(());
            }
            f(id)?;
            // Only if unchanged: a document settled again meanwhile keeps its entry.
            match state::delete(&key, Some(entry.version)) {
                Ok(_) | Err(troupe_guest::HostError::Conflict) => Ok(()),
                Err(e) => Err(host(format!("removing {key}"))(e)),
            }
        })();
        if let Err(why) = done {
            log(logging::Level::Warn, &format!("retention of {key}: {why}"));
        }
    }
    Ok(())
}

/// Drops breakers that are closed, long quiet, and have no claims left.
fn breakers(tenant: &str, now: u64, keep_ms: u64) -> Result<()> {
    let prefix = format!("{BREAKER_PREFIX}{tenant}/");
    for key in state::list_keys(&prefix).map_err(host("listing breakers"))? {
        let endpoint = key.strip_prefix(&prefix).unwrap_or_default();
        let claims = state::list_keys(&format!("{WEBHOOK_PREFIX}{tenant}/{endpoint}/"))
            .map_err(host("listing webhook claims"))?;
        if !claims.is_empty() {
            continue;
        }
        let Some(entry) = state::get(&key).map_err(host(format!("reading {key}")))? else {
            continue;
        };
        let open_until = serde_json::from_slice::<serde_json::Value>(&entry.value)
            .ok()
            .and_then(|v| v.get("open_until_ms").and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        if now.saturating_sub(open_until) > keep_ms {
            match state::delete(&key, Some(entry.version)) {
                Ok(_) | Err(troupe_guest::HostError::Conflict) => {}
                Err(e) => return Err(host(format!("removing {key}"))(e)),
            }
        }
    }
    Ok(())
}
