//! `/v1/webhooks`: a tenant registers, lists and removes the endpoints `notify` calls
//! for its documents (the host lets only `admin` credentials here).
//!
//! - `POST /v1/webhooks {"url", "events"?}` → 201 `{id, url, events, created_at,
//!   secret}`: the signing secret is shown this once.
//! - `GET /v1/webhooks` → `{"webhooks": [{id, url, events, created_at}]}`.
//! - `DELETE /v1/webhooks/{id}` → 204, or 404.
//!
//! A URL on a loopback, link-local, private or unspecified address (or `localhost`)
//! is refused unless the host allows private outbound calls
//! (`--allow-private-webhooks`); a name that resolves to such an address is refused
//! by the host when `notify` calls it.

use std::net::IpAddr;

use spin_sdk::http::ResponseOutparam;
use troupe_guest::http::{error, json};
use troupe_guest::webhooks::{self, EVENTS, Hook, MAX_PER_TENANT};
use troupe_guest::{HostError, config, describe, new_id, now_rfc3339};

/// The longest URL accepted.
const MAX_URL: usize = 2048;

pub async fn create(out: ResponseOutparam, tenant: &str, body: &[u8]) {
    let request: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            return error(
                out,
                400,
                "bad_request",
                "the body must be a JSON object {\"url\": string, \"events\": [string]?}",
            )
            .await;
        }
    };
    let Some(url) = request.get("url").and_then(|u| u.as_str()) else {
        return error(out, 400, "bad_request", "`url` (a string) is missing").await;
    };
    let private_ok = config::get(troupe_guest::HOST_PRIVATE_OUTBOUND).as_deref() == Some("true");
    if let Err(why) = check_url(url, private_ok) {
        return error(out, 422, "invalid_url", &why).await;
    }
    let events = match request.get("events") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(list)) => {
            let mut events = Vec::new();
            for e in list {
                match e.as_str() {
                    // A repeated name is kept once.
                    Some(e) if events.iter().any(|k| k == e) => {}
                    Some(e) if EVENTS.contains(&e) => events.push(e.to_owned()),
                    _ => {
                        let known = EVENTS.join(", ");
                        return error(
                            out,
                            422,
                            "invalid_events",
                            &format!("`events` may name {known}, not {e}"),
                        )
                        .await;
                    }
                }
            }
            events
        }
        Some(_) => {
            return error(
                out,
                400,
                "bad_request",
                "`events` must be an array of strings",
            )
            .await;
        }
    };
    match webhooks::list(tenant) {
        Ok(hooks) if hooks.len() >= MAX_PER_TENANT => {
            return error(
                out,
                409,
                "too_many_webhooks",
                &format!("a tenant has at most {MAX_PER_TENANT} webhooks; delete one first"),
            )
            .await;
        }
        Ok(_) => {}
        Err(why) => return error(out, 503, "unavailable", &why.to_string()).await,
    }
    let hook = Hook {
        id: new_id(),
        url: url.to_owned(),
        events,
        secret: webhooks::new_secret(),
        created_at: now_rfc3339(),
    };
    match webhooks::create(tenant, &hook) {
        Ok(()) => {
            let mut shown = hook.view();
            shown["secret"] = hook.secret.clone().into();
            json(out, 201, &shown).await
        }
        Err(e) => unavailable(out, &e).await,
    }
}

pub async fn list(out: ResponseOutparam, tenant: &str) {
    match webhooks::list(tenant) {
        Ok(hooks) => {
            let views: Vec<_> = hooks.iter().map(Hook::view).collect();
            json(out, 200, &serde_json::json!({ "webhooks": views })).await
        }
        Err(why) => error(out, 503, "unavailable", &why.to_string()).await,
    }
}

pub async fn delete(out: ResponseOutparam, tenant: &str, id: &str) {
    if !troupe_guest::documents::valid_id(id) {
        return error(out, 404, "not_found", &format!("no webhook `{id}`")).await;
    }
    match webhooks::delete(tenant, id) {
        Ok(true) => troupe_guest::http::empty(out, 204).await,
        Ok(false) => error(out, 404, "not_found", &format!("no webhook `{id}`")).await,
        Err(e) => unavailable(out, &e).await,
    }
}

async fn unavailable(out: ResponseOutparam, e: &HostError) {
    error(
        out,
        503,
        "unavailable",
        &format!("storing webhooks: {}", describe(e)),
    )
    .await
}

/// Why `url` cannot be a webhook: not http(s), no host, credentials in it, too long,
/// or (unless `private_ok`) a local or private address.
fn check_url(url: &str, private_ok: bool) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("the URL is longer than {MAX_URL} characters"));
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("`{url}` is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("the URL must not carry credentials (user@host)".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{url}` names no host"));
    }
    if private_ok {
        return Ok(());
    }
    let host = host.to_ascii_lowercase();
    let local_name = host == "localhost" || host.ends_with(".localhost");
    let local_ip = host.parse::<IpAddr>().is_ok_and(|ip| !public(ip));
    if local_name || local_ip {
        return Err(format!(
            "`{host}` is a loopback, link-local or private address; webhooks go to public addresses unless the server runs with --allow-private-webhooks"
        ));
    }
    Ok(())
}

/// Whether `ip` is routable on the internet (not loopback, private, link-local,
/// unspecified, CGNAT, multicast or unique-local).
fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}
