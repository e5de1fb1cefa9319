//! `notify` (on `document.indexed` and `document.failed`): a signed webhook per
//! transition to each endpoint of the document's tenant — the webhooks it registered
//! (`POST /v1/webhooks`, each with its own secret and event filter) and, for the
//! `default` tenant only, the operator's `webhook_urls` (comma-separated, signed with
//! `webhook_secret`). A tenant's endpoints never receive another tenant's events: the
//! invocation acts for the event's tenant and reads only its webhooks.
//!
//! - Signature: `troupe-signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
//!   with `troupe-timestamp` (Unix seconds) and `troupe-event-id` headers. Never
//!   unsigned: the manifest refuses `webhook_urls` without `webhook_secret` at start-up
//!   (`variables_require`), and should the secret still be empty here, each event is
//!   rejected (`webhook_secret_missing`, dead-lettered: set the secret and redrive)
//!   instead of sent.
//! - Once per transition and endpoint: a claim in state
//!   (`webhook/<tenant>/<endpoint>/<event id>`, compare-and-set) lets one delivery
//!   send; it becomes `sent` on a 2xx.
//! - A call that fails — an error status, no connection, or no answer within
//!   `webhook_timeout_ms` (default 10 s) — counts against the endpoint's circuit
//!   (`breaker/<tenant>/<endpoint>`). Below `breaker_failures` failures in a row (default 5) the
//!   event is retried through the queue (a counted delivery, the subscription's
//!   backoff). The failure that opens the circuit and every wait — circuit open, a claim
//!   held by another delivery, the status not yet recorded — *defers* the event:
//!   redelivered later without using up a delivery, so an endpoint down for any length
//!   of time still gets every event, once, when it is back.
//! - An open circuit lasts `breaker_open_ms` (default 30 s); then one delivery tries
//!   the endpoint while the others keep waiting (half-open): a 2xx closes the circuit,
//!   a failure opens it again at once.
//! - One invocation sends for at most about [`SEND_BUDGET_MS`] (below the component's
//!   30 s timeout): events whose call would not fit are deferred to the next one.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spin_sdk::http::conversions::TryIntoOutgoingRequest;
use spin_sdk::http::{Method, Request};
use spin_sdk::wit::wasi::http0_2_0::{outgoing_handler, types as wasi_http};
use troupe_guest::documents::{self, Change, Status, Verdict};
use troupe_guest::events::{Indexed, Payload};
use troupe_guest::{
    Event, HostError, Outcome, config, config_u64, each, log, logging, now_ms, reject, state,
};
use troupe_guest::{stages, webhooks};

use troupe_guest::{HandlerError, Result, host};
troupe_guest::event_function!(handle);

/// An endpoint's failure count and when its open circuit closes again.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Breaker {
    failures: u32,
    open_until_ms: u64,
    /// It opened and no call has succeeded since: one delivery at a time tries the
    /// endpoint, and a failure opens the circuit again without counting up first.
    #[serde(default)]
    tripped: bool,
}

/// Where one event goes: an endpoint of its tenant.
struct Target {
    /// Names its claims and breaker: the webhook's id, or a hash of an operator URL.
    endpoint: String,
    url: String,
    /// The HMAC key of its signatures.
    secret: String,
}

/// The settings every delivery of a batch shares.
struct Settings {
    /// The operator's endpoints (`webhook_urls`), for the `default` tenant.
    urls: Vec<String>,
    /// Their signing secret (`webhook_secret`).
    secret: String,
    /// `breaker_failures`: failures in a row that open an endpoint's circuit.
    threshold: u32,
    /// `breaker_open_ms`.
    open_ms: u64,
    /// `webhook_timeout_ms`: the longest a call may take, connection to last byte.
    timeout_ms: u64,
    /// When this invocation started, for [`SEND_BUDGET_MS`].
    started_ms: u64,
    /// Calls this invocation has made.
    calls: std::cell::Cell<u32>,
}

/// How long one invocation spends calling endpoints, so that calls that time out
/// cannot run it into the component's timeout (`timeout_ms = 30000` in spin.toml),
/// which would fail the batch without counting the breaker. The first call always
/// goes; a further one only if it fits.
const SEND_BUDGET_MS: u64 = 20_000;

/// How long a delivery waits while another one tries a half-open circuit: the trial
/// holds the circuit for its timeout plus this.
const TRIAL_MARGIN_MS: u64 = 1_000;

/// Past this age an event still waiting for its status record is retried (counted)
/// rather than deferred, so a record that never settles cannot keep it forever.
const PENDING_DEFER_MS: u64 = 3_600_000;

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
    let settings = Settings {
        urls,
        secret: config::get("webhook_secret").unwrap_or_default(),
        threshold: u32::try_from(config_u64("breaker_failures", 5))
            .unwrap_or(5)
            .max(1),
        open_ms: config_u64("breaker_open_ms", 30_000),
        timeout_ms: config_u64("webhook_timeout_ms", 10_000).max(1),
        started_ms: now_ms(),
        calls: std::cell::Cell::new(0),
    };
    each(events, |event| {
        let tenant = stages::tenant(event);
        let operator = tenant == troupe_guest::DEFAULT_TENANT && !settings.urls.is_empty();
        if operator && settings.secret.trim().is_empty() {
            return Ok(reject(
                "webhook_secret_missing",
                "webhook_urls is set but webhook_secret is empty, and webhooks are never sent unsigned: set webhook_secret (TROUPE_VARIABLE_WEBHOOK_SECRET), restart, and redrive this dead letter",
            ));
        }
        let targets = targets(&tenant, event, &settings, operator)?;
        if targets.is_empty() {
            return Ok(Outcome::Ok);
        }
        // Only transitions the record confirms are announced.
        let id = event.subject.clone().unwrap_or_default();
        let settled_as = if event.type_ == Indexed::TYPE {
            Status::Indexed
        } else {
            Status::Failed
        };
        match documents::verdict(&tenant, &id, settled_as)? {
            Verdict::Agrees => {}
            Verdict::Disagrees => return Ok(Outcome::Ok),
            // The status projection has not recorded it yet (it reacts to the same
            // event): look again soon, then less often — the wait grows with the
            // event's age. A wait, not a failure, unless it has gone on for an hour.
            Verdict::Pending => {
                let wait = pending_wait(event);
                let age = troupe_guest::age_ms(event).unwrap_or(0);
                return Ok(if age > PENDING_DEFER_MS {
                    Outcome::Retry(Some(wait))
                } else {
                    Outcome::Defer(wait)
                });
            }
        }
        // One body for every endpoint: the record as `GET` shows it.
        let body = payload(event)?;
        let mut outcome = Outcome::Ok;
        for target in &targets {
            outcome = combine(outcome, deliver(event, &tenant, target, &settings, &body)?);
        }
        Ok(outcome)
    })
}

/// The endpoints of `tenant` that receive `event`: its registered webhooks that ask
/// for the event's topic, and the operator's URLs when `operator`.
fn targets(
    tenant: &str,
    event: &Event,
    settings: &Settings,
    operator: bool,
) -> Result<Vec<Target>> {
    let topic = stages::topic_of(event);
    let mut targets: Vec<Target> = webhooks::list(tenant)?
        .into_iter()
        .filter(|h| h.wants(topic))
        .map(|h| Target {
            endpoint: h.id,
            url: h.url,
            secret: h.secret,
        })
        .collect();
    if operator {
        targets.extend(settings.urls.iter().map(|url| Target {
            endpoint: hex::encode(&Sha256::digest(url.as_bytes())[..8]),
            url: url.clone(),
            secret: settings.secret.clone(),
        }));
    }
    Ok(targets)
}

/// The event's outcome over several endpoints: a failure (counted) over a wait, the
/// shorter of two waits (the other endpoint's defers again, at no cost).
fn combine(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (Outcome::Ok, o) | (o, Outcome::Ok) => o,
        (Outcome::Defer(x), Outcome::Defer(y)) => Outcome::Defer(x.min(y)),
        (o @ Outcome::Reject(_), _) | (_, o @ Outcome::Reject(_)) => o,
        (o @ Outcome::Retry(_), _) | (_, o @ Outcome::Retry(_)) => o,
    }
}

/// How long to wait for the status projection: the event's age, within 20 ms–2 s.
fn pending_wait(event: &Event) -> u32 {
    let age = troupe_guest::age_ms(event).unwrap_or(200);
    u32::try_from(age.clamp(20, 2_000)).unwrap_or(2_000)
}

/// A wait of `ms` milliseconds that does not count as a delivery.
fn wait(ms: u64) -> Outcome {
    Outcome::Defer(u32::try_from(ms).unwrap_or(u32::MAX))
}

fn deliver(
    event: &Event,
    tenant: &str,
    target: &Target,
    settings: &Settings,
    body: &[u8],
) -> Result<Outcome> {
    let (endpoint, url) = (&target.endpoint, &target.url);
    let claim_key = format!("webhook/{tenant}/{endpoint}/{}", event.id);
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
            // Look again when the claim lapses, not before.
            return Ok(wait(CLAIM_MS - held));
        }
        expected = entry.version;
    }
    let breaker_key = format!("breaker/{tenant}/{endpoint}");
    let (breaker, version) = documents::get_json::<Breaker>(&breaker_key)?.unwrap_or_default();
    if breaker.open_until_ms > now {
        return Ok(wait(breaker.open_until_ms - now));
    }
    // A call that would not fit in this invocation waits for the next one.
    let spent = now.saturating_sub(settings.started_ms);
    if settings.calls.get() > 0 && spent + settings.timeout_ms > SEND_BUDGET_MS {
        return Ok(wait(0));
    }
    if breaker.tripped {
        // Half-open: this delivery tries the endpoint; the circuit stays shut to the
        // others until the call is over.
        let trial = Breaker {
            open_until_ms: now + settings.timeout_ms + TRIAL_MARGIN_MS,
            ..breaker.clone()
        };
        let bytes = serde_json::to_vec(&trial)
            .map_err(|e| HandlerError::State(format!("encoding {breaker_key}: {e}")))?;
        match state::put(&breaker_key, &bytes, Some(version)) {
            Ok(_) => {}
            Err(HostError::Conflict) => {
                return Ok(wait(settings.timeout_ms + TRIAL_MARGIN_MS));
            }
            Err(e) => return Err(host("taking the circuit's trial call")(e)),
        }
    }
    match state::put(
        &claim_key,
        format!("sending@{now}").as_bytes(),
        Some(expected),
    ) {
        Ok(_) => {}
        Err(HostError::Conflict) => return Ok(wait(CLAIM_MS)),
        Err(e) => return Err(host("claiming the webhook")(e)),
    }
    settings.calls.set(settings.calls.get() + 1);
    match send(url, &target.secret, settings, &event.id, body) {
        Ok(()) => {
            state::put(&claim_key, b"sent", None).map_err(host("state"))?;
            if breaker.failures > 0 || breaker.tripped {
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
            let mut open_until = None;
            documents::update(&breaker_key, |b: Option<Breaker>| {
                let mut b = b.unwrap_or_default();
                if !b.tripped {
                    b.failures += 1;
                }
                if b.tripped || b.failures >= settings.threshold {
                    b.tripped = true;
                    b.failures = 0;
                    b.open_until_ms = now_ms() + settings.open_ms;
                }
                open_until = b.tripped.then_some(b.open_until_ms);
                Change::Put(b)
            })?;
            Ok(match open_until {
                // The endpoint is down: wait for the circuit, uncounted.
                Some(until) => wait(until.saturating_sub(now_ms())),
                None => Outcome::Retry(None),
            })
        }
    }
}

/// The webhook body: the transition and the document as `GET` shows it.
fn payload(event: &Event) -> Result<Vec<u8>> {
    let tenant = stages::tenant(event);
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

fn send(
    url: &str,
    secret: &str,
    settings: &Settings,
    event_id: &str,
    body: &[u8],
) -> Result<(), Undelivered> {
    if secret.trim().is_empty() {
        return Err(Undelivered::Key("it is empty".into()));
    }
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
    let status = call(request, settings.timeout_ms)?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Undelivered::Status(status))
    }
}

/// Sends `request` with `timeout_ms` for connecting, for the first byte of the answer
/// and between bytes (`wasi:http` request options, which `spin_sdk::http::send` does
/// not set); returns the status.
fn call(request: Request, timeout_ms: u64) -> Result<u16, Undelivered> {
    let transport = |what: &str, e: String| Undelivered::Transport(format!("{what}: {e}"));
    let (outgoing, buffered) = request
        .try_into_outgoing_request()
        .map_err(|e| transport("building the request", e.to_string()))?;
    let body = buffered.unwrap_or_default();
    let options = wasi_http::RequestOptions::new();
    let ns = Some(timeout_ms.saturating_mul(1_000_000));
    for set in [
        options.set_connect_timeout(ns),
        options.set_first_byte_timeout(ns),
        options.set_between_bytes_timeout(ns),
    ] {
        set.map_err(|()| transport("setting the timeout", "refused by the host".into()))?;
    }
    let sink = outgoing
        .body()
        .map_err(|()| transport("opening the body", "already taken".into()))?;
    let future = outgoing_handler::handle(outgoing, Some(options))
        .map_err(|e| transport("sending", format!("{e:?}")))?;
    {
        let stream = sink
            .write()
            .map_err(|()| transport("writing the body", "no stream".into()))?;
        // `blocking_write_and_flush` takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| transport("writing the body", format!("{e:?}")))?;
        }
    }
    wasi_http::OutgoingBody::finish(sink, None)
        .map_err(|e| transport("finishing the body", format!("{e:?}")))?;
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Ok(response.status()),
        Some(Ok(Err(code))) => Err(Undelivered::Transport(format!("{code:?}"))),
        Some(Err(())) | None => Err(transport("the response", "was lost".into())),
    }
}
