//! Troupe's whole-system tests, as one test binary: every extra binary re-links
//! wasmtime and the AWS SDK. Each module is one suite; run one with
//! `cargo test --release --workspace --test all delivery::`.
//!
//! The suites share a process: the moto and Postgres servers ([`troupe_tests::stack`]),
//! the built components and the model are set up once for all of them. A test that
//! needs a process of its own runs `troupe` as a child ([`troupe_tests::Child`]); none
//! changes the environment or other process-wide state of this one.

mod audit_trail;
mod auth;
mod cli;
mod console;
mod delivery;
mod durability;
mod event_stream;
mod hostile;
mod ingest;
mod kills;
mod metrics;
mod openapi;
mod pipeline;
mod queue_semantics;
mod retention;
mod s3_uploads;
mod sandbox;
mod scale_out;
mod store_semantics;
mod tenants;
mod traces;
mod triggers;
mod webhooks;
