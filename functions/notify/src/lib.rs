//! `notify` (on `document.indexed` and `document.failed`): a signed webhook per
//! transition to each endpoint in `webhook_urls` (comma-separated).
//!
//! - Signature: `troupe-signature: v1=<hex HMAC-SHA256(webhook_secret, "<timestamp>.<body>")>`
//!   with `troupe-timestamp` (Unix seconds) and `troupe-event-id` headers.
//! - Once per transition and endpoint: a claim in state (`webhook/<endpoint>/<event id>`,
//!   compare-and-set) lets one delivery send; it becomes `sent` on a 2xx.
//! - Retries go through the queue (the subscription's backoff); after
//!   `breaker_failures` failures in a row (default 5) an endpoint's circuit opens for
//!   `breaker_open_ms` (default 30 s) and its events wait instead of calling it.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spin_sdk::http::{Method, Request, Response};
use troupe_guest::documents::{self, Change, Status, Verdict};
use troupe_guest::events;
use troupe_guest::{
    Event, HostError, Outcome, config, config_u64, each, log, logging, now_ms, state,
};

use troupe_guest::{HandlerError, Result, host};
troupe_guest::event_function!(handle);

/// An endpoint's failure count and when its open circuit closes again.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Breaker {
    failures: u32,
    open_until_ms: u64,
}

/// How long a claim holds before another delivery may take it over (a sender that
/// died mid-call).
/// Longer than the component's timeout (`timeout_ms = 30000` in spin.toml), so a
/// claim outlives its sender but not by much.
const CLAIM_MS: u64 = 35_000;

fn handle(events: Vec<Event>) -> Vec<Outcome> {
    let urls: Vec<String> = config::get("webhook_urls")
        .unwrap_or_default()
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    let secret = config::get("webhook_secret").unwrap_or_default();
    each(events, |event| {
        if urls.is_empty() {
            return Ok(Outcome::Ok);
        }
        // Only transitions the record confirms are announced.
        let tenant = events::tenant(event);
        let id = event.subject.clone().unwrap_or_default();
        let settled_as = if event.type_ == events::type_of(events::INDEXED) {
            Status::Indexed
        } else {
            Status::Failed
        };
        match documents::verdict(&tenant, &id, settled_as)? {
            Verdict::Agrees => {}
            Verdict::Disagrees => return Ok(Outcome::Ok),
            // The status projection has not recorded it yet (it reacts to the same
            // event): look again soon, then less often — the wait doubles with the
            // event's age, so ten deliveries cover several seconds of lag.
            Verdict::Pending => return Ok(Outcome::Retry(Some(pending_wait(event)))),
        }
        // One body for every endpoint: the record as `GET` shows it.
        let body = payload(event)?;
        let mut outcome = Outcome::Ok;
        for url in &urls {
            match deliver(event, url, &secret, &body)? {
                Outcome::Ok => {}
                other => outcome = other,
            }
        }
        Ok(outcome)
    })
}

/// How long to wait for the status projection: the event's age, within 20 ms–2 s.
fn pending_wait(event: &Event) -> u32 {
    let age = troupe_guest::age_ms(event).unwrap_or(200);
    u32::try_from(age.clamp(20, 2_000)).unwrap_or(2_000)
}

fn deliver(event: &Event, url: &str, secret: &str, body: &[u8]) -> Result<Outcome> {
    let endpoint = hex::encode(&Sha256::digest(url.as_bytes())[..8]);
    let claim_key = format!("webhook/{endpoint}/{}", event.id);
    let now = now_ms();
    // Already sent, or being sent by another delivery?
    let mut expected = 0;
    if let Some(entry) = state::get(&claim_key).map_err(host("state"))? {
        let value = String::from_utf8_lossy(&entry.value).into_owned();
        if value == "sent" {
            return Ok(Outcome::Ok);
        }
        let since = value
            .strip_prefix("sending@")
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        let held = now.saturating_sub(since);
        if held < CLAIM_MS {
            // Look again when the claim lapses, not before: every retry is a delivery.
            let wait = u32::try_from(CLAIM_MS - held).unwrap_or(u32::MAX);
            return Ok(Outcome::Retry(Some(wait)));
        }
        expected = entry.version;
    }
    let breaker_key = format!("breaker/{endpoint}");
    let breaker: Breaker = documents::get_json(&breaker_key)?
        .map(|(b, _)| b)
        .unwrap_or_default();
    if breaker.open_until_ms > now {
        let wait = u32::try_from(breaker.open_until_ms - now).unwrap_or(u32::MAX);
        return Ok(Outcome::Retry(Some(wait)));
    }
    match state::put(
        &claim_key,
        format!("sending@{now}").as_bytes(),
        Some(expected),
    ) {
        Ok(_) => {}
        Err(HostError::Conflict) => return Ok(Outcome::Retry(Some(CLAIM_MS as u32))),
        Err(e) => return Err(host("claiming the webhook")(e)),
    }
    let sent = send(url, secret, &event.id, body);
    let threshold = u32::try_from(config_u64("breaker_failures", 5))
        .unwrap_or(5)
        .max(1);
    let open_ms = config_u64("breaker_open_ms", 30_000);
    match sent {
        Ok(()) => {
            state::put(&claim_key, b"sent", None).map_err(host("state"))?;
            if breaker.failures > 0 {
                documents::update(&breaker_key, |_: Option<Breaker>| {
                    Change::Put(Breaker::default())
                })?;
            }
            Ok(Outcome::Ok)
        }
        Err(why) => {
            log(
                logging::Level::Warn,
                &format!("webhook {url} for event {}: {why}", event.id),
            );
            state::delete(&claim_key, None).map_err(host("state"))?;
            documents::update(&breaker_key, |b: Option<Breaker>| {
                let mut b = b.unwrap_or_default();
                b.failures += 1;
                if b.failures >= threshold {
                    b.open_until_ms = now_ms() + open_ms;
                    b.failures = 0;
                }
                Change::Put(b)
            })?;
            Ok(Outcome::Retry(None))
        }
    }
}

/// The webhook body: the transition and the document as `GET` shows it.
fn payload(event: &Event) -> Result<Vec<u8>> {
    let tenant = events::tenant(event);
    let id = event.subject.clone().unwrap_or_default();
    let document = documents::load(&tenant, &id)?.map(|(d, _)| d.view());
    let data: serde_json::Value = serde_json::from_slice(&event.data).unwrap_or_default();
    let body = serde_json::json!({
        "id": event.id,
        "type": event.type_,
        "time": event.time,
        "document_id": id,
        "data": data,
        "document": document,
    });
    serde_json::to_vec(&body)
        .map_err(|e| HandlerError::State(format!("encoding the webhook body: {e}")))
}

/// Why a webhook was not delivered.
#[derive(Debug, thiserror::Error)]
enum Undelivered {
    /// The secret is not usable as an HMAC key.
    #[error("the webhook secret cannot key HMAC-SHA256: {0}")]
    Key(String),
    /// The request did not complete.
    #[error("sending failed: {0}")]
    Transport(String),
    /// The endpoint answered, but not with 2xx.
    #[error("answered HTTP {0}")]
    Status(u16),
}

fn send(url: &str, secret: &str, event_id: &str, body: &[u8]) -> Result<(), Undelivered> {
    let timestamp = (now_ms() / 1000).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| Undelivered::Key(e.to_string()))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let signature = hex::encode(mac.finalize().into_bytes());
    let request = Request::builder()
        .method(Method::Post)
        .uri(url)
        .header("content-type", "application/json")
        .header("content-length", body.len().to_string())
        .header("troupe-event-id", event_id)
        .header("troupe-timestamp", timestamp)
        .header("troupe-signature", format!("v1={signature}"))
        .body(body.to_vec())
        .build();
    let response: Response = spin_sdk::http::run(spin_sdk::http::send(request))
        .map_err(|e| Undelivered::Transport(e.to_string()))?;
    let status = *response.status();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Undelivered::Status(status))
    }
}
