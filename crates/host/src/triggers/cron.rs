//! Schedules: invoke a component with a `troupe.cron.tick.v1` event at each time the
//! cron expression names. Runs are never concurrent; ticks missed while a run is
//! still going are skipped, not queued.
//!
//! Time is read from tokio's clock (anchored to the wall clock at start), so tests
//! drive schedules with `tokio::time::pause()`.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::Instrument;
use troupe_core::Event;

use crate::Shared;
use crate::manifest::CronTrigger;

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
        tick(&shared, &trigger, next).await;
    }
}

/// One scheduled invocation.
pub async fn tick(shared: &Shared, trigger: &CronTrigger, at: DateTime<Utc>) {
    let scheduled = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut event = Event::new(
        format!("/cron/{}", trigger.component),
        TICK_TYPE,
        &serde_json::json!({"schedule": trigger.expression, "scheduled_time": scheduled}),
    );
    event.time = scheduled;
    let span = tracing::info_span!("host.invoke", component = %trigger.component, trigger = "cron", messaging.message.id = %event.id);
    let started = Instant::now();
    let result = shared
        .runtime
        .handle_events(&trigger.component, vec![event.into()])
        .instrument(span)
        .await;
    let label = result.as_ref().err().map_or("ok", |f| f.label());
    shared.metrics.invoked(
        &trigger.component,
        "cron",
        label,
        started.elapsed().as_secs_f64(),
    );
    if let Err(fault) = result {
        tracing::warn!(component = %trigger.component, error = %fault, "cron invocation failed; the next tick runs as scheduled");
    }
}
