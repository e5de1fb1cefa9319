//! Event triggers: subscriptions (`queue` and `blob` triggers) and schedules (`cron`).
//! HTTP routes are served by [`crate::server`].

pub mod cron;
pub mod subscription;
