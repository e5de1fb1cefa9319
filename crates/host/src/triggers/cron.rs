//! Schedules: invoke a component with a `troupe.cron.tick.v1` event at each time the
//! cron expression names. Runs are never concurrent; ticks missed while a run is
//! still going are skipped, not queued.
//!
//! Several hosts on one backend (two `troupe serve` on the same Postgres, or the same
//! data directory) share each schedule: before a tick runs, the host claims it in
//! state with a compare-and-set on `troupe.cron/<component>/<expression>`, which
//! records the tick's scheduled time and a lease (the component's timeout plus a
//! margin) that the run releases when it ends. A tick already claimed, or a lease
//! another host still holds, is skipped; a host that dies mid-run holds the schedule
//! only until its lease ends.
//!
//! Time is read from tokio's clock (anchored to the wall clock at start), so tests
//! drive schedules with `tokio::time::pause()`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;
use troupe_core::{Event, State};

use troupe_events::Tenant;

use crate::Shared;
use crate::manifest::CronTrigger;
use crate::tenancy::Binding;

/// CloudEvents type of a tick.
pub const TICK_TYPE: &str = "troupe.cron.tick.v1";

struct Clock {
    wall: DateTime<Utc>,
    mono: tokio::time::Instant,
}

impl Clock {
    fn now(&self) -> DateTime<Utc> {
        self.wall + (tokio::time::Instant::now() - self.mono)
    }
}

/// Runs until `stop` turns true.
pub async fn run(shared: Arc<Shared>, trigger: CronTrigger, mut stop: watch::Receiver<bool>) {
    let clock = Clock {
        wall: Utc::now(),
        mono: tokio::time::Instant::now(),
    };
    loop {
        let now = clock.now();
        let Some(next) = trigger.schedule.after(&now).next() else {
            return;
        };
        let wait = (next - now).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let Some(claimed) = claim(&shared, &trigger, next, clock.now()).await else {
            continue;
        };
        tick(&shared, &trigger, next).await;
        claimed.release(&*shared.backends.state).await;
    }
}

/// The state key where hosts sharing a backend claim a schedule's ticks.
pub fn claim_key(trigger: &CronTrigger) -> String {
    format!("troupe.cron/{}/{}", trigger.component, trigger.expression)
}

/// What [`claim_key`] holds.
#[derive(Debug, Serialize, Deserialize)]
struct Claimed {
    /// Scheduled time (ms since the epoch) of the latest tick a host claimed.
    tick_ms: i64,
    /// Until when (ms since the epoch) that host's run holds the schedule; 0 once it
    /// has ended.
    until_ms: i64,
}

/// A tick this host claimed.
struct Claim {
    key: String,
    tick_ms: i64,
    version: u64,
}

impl Claim {
    /// Ends the lease at once, so the next tick may run on any host. Lost to a host
    /// that took over after the lease ran out, it is left alone.
    async fn release(self, state: &dyn State) {
        let value = serde_json::to_vec(&Claimed {
            tick_ms: self.tick_ms,
            until_ms: 0,
        })
        .unwrap_or_default();
        if let Err(e) = state.put(&self.key, &value, Some(self.version)).await
            && !matches!(e, troupe_core::Error::Conflict { .. })
        {
            tracing::warn!(key = %self.key, error = %e, "releasing the cron lease failed; it ends by itself");
        }
    }
}

/// Margin of the cron lease past the component's timeout.
const LEASE_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Claims the tick scheduled at `at` for this host; `None` when another host has
/// claimed it or still runs an earlier one (or the state store cannot be asked: a
/// sweep is better skipped than run beside another).
async fn claim(
    shared: &Shared,
    trigger: &CronTrigger,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Claim> {
    let state = &*shared.backends.state;
    let key = claim_key(trigger);
    let tick_ms = at.timestamp_millis();
    let now_ms = now.timestamp_millis();
    let current = match state.get(&key).await {
        Ok(current) => current,
        Err(e) => {
            tracing::warn!(component = %trigger.component, error = %e, "reading the cron lease failed; skipping this tick");
            return None;
        }
    };
    let expected = match &current {
        Some(entry) => {
            // Unreadable (written by something else): taken over.
            if let Ok(held) = serde_json::from_slice::<Claimed>(&entry.value)
                && (held.tick_ms >= tick_ms || held.until_ms > now_ms)
            {
                tracing::debug!(component = %trigger.component, "cron tick claimed by another host; skipped");
                return None;
            }
            entry.version
        }
        None => 0,
    };
    let timeout = shared
        .app
        .components
        .get(&trigger.component)
        .map_or(std::time::Duration::ZERO, |c| c.timeout);
    let lease_ms = i64::try_from((timeout + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX);
    let value = serde_json::to_vec(&Claimed {
        tick_ms,
        until_ms: now_ms.saturating_add(lease_ms),
    })
    .unwrap_or_default();
    match state.put(&key, &value, Some(expected)).await {
        Ok(version) => Some(Claim {
            key,
            tick_ms,
            version,
        }),
        Err(troupe_core::Error::Conflict { .. }) => {
            tracing::debug!(component = %trigger.component, "cron tick claimed by another host; skipped");
            None
        }
        Err(e) => {
            tracing::warn!(component = %trigger.component, error = %e, "claiming the cron tick failed; skipping it");
            None
        }
    }
}

/// One scheduled tick: the component runs once per tenant the deployment has seen,
/// each run acting for its tenant (so a cron job reaches no tenant's data but the one
/// it runs for).
pub async fn tick(shared: &Shared, trigger: &CronTrigger, at: DateTime<Utc>) {
    let tenants = match shared.tenants.all().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(component = %trigger.component, error = %e, "listing tenants for a cron tick failed; the next tick runs as scheduled");
            return;
        }
    };
    for tenant in tenants {
        tick_for(shared, trigger, at, tenant).await;
    }
}

async fn tick_for(shared: &Shared, trigger: &CronTrigger, at: DateTime<Utc>, tenant: Tenant) {
    let scheduled = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut event = Event::new(
        format!("/cron/{}", trigger.component),
        TICK_TYPE,
        &serde_json::json!({"schedule": trigger.expression, "scheduled_time": scheduled}),
    );
    event.time = scheduled;
    event.tenant = Some(tenant.to_string());
    let span = tracing::info_span!(
        "host.invoke",
        otel.name = %format!("cron {}", trigger.component),
        otel.status_code = tracing::field::Empty,
        component = %trigger.component,
        trigger = "cron",
        tenant = %tenant,
        messaging.message.id = %event.id,
    );
    let started = Instant::now();
    let (result, cpu) = crate::metrics::cpu_timed(
        shared
            .runtime
            .handle_events(
                &trigger.component,
                vec![event.into()],
                Binding::tenant(tenant),
            )
            .instrument(span.clone()),
    )
    .await;
    let label = result.as_ref().err().map_or("ok", |f| f.label());
    shared.metrics.invoked(
        &trigger.component,
        "cron",
        label,
        started.elapsed().as_secs_f64(),
        cpu,
    );
    if let Err(fault) = result {
        troupe_telemetry::set_error(&span, fault.label());
        tracing::warn!(parent: &span, component = %trigger.component, error = %fault, "cron invocation failed; the next tick runs as scheduled");
    }
}
