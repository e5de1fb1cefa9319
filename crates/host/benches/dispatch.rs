//! Dispatch latency: one queue event handed to a pre-instantiated component (fresh
//! store + instance from the pooling allocator, `handle` called, outcome returned).
//!
//! `cargo bench -p troupe-host --bench dispatch` (after `make setup`) prints p50, p90
//! and p99 over 20,000 sequential dispatches to the `noop` test component.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_core::Event;
use troupe_host::{App, Backends, Runtime};

fn main() {
    let root = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../..");
    let wasm = root.join("functions/dist/noop.wasm");
    assert!(
        wasm.is_file(),
        "{} is missing: run `make setup` first",
        wasm.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"bench\"\n[component.noop]\nsource = \"{}\"\n",
            wasm.display()
        ),
    )
    .expect("manifest");
    let app = App::load(&manifest).expect("app");
    let local = troupe_local::Local::open(&dir.path().join("data")).expect("data");
    let backends = Backends {
        queue: Arc::new(local.queue.clone()),
        dead_letters: Arc::new(local.queue.clone()),
        blobs: Arc::new(local.blobs.clone()),
        state: Arc::new(local.state.clone()),
        vectors: Arc::new(local.vectors.clone()),
        leases: Some(Arc::new(local.queue.clone())),
        embeddings: None,
    };
    let runtime = Runtime::new(
        &app,
        &backends,
        Some(&dir.path().join("cache")),
        &Default::default(),
    )
    .expect("runtime");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let event = Event::new(
        "/bench",
        "bench.v1",
        &serde_json::json!({"document": "doc-1", "n": 1}),
    );
    let samples = rt.block_on(async {
        for _ in 0..2_000 {
            runtime
                .handle_events("noop", vec![event.clone().into()], Default::default())
                .await
                .expect("warm-up");
        }
        let mut samples = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            let out = runtime
                .handle_events("noop", vec![event.clone().into()], Default::default())
                .await
                .expect("dispatch");
            samples.push(t.elapsed());
            assert_eq!(out.len(), 1);
        }
        samples
    });
    let mut sorted = samples.clone();
    sorted.sort();
    let pct = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p) as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!("| dispatches | p50 | p90 | p99 | mean |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.1} µs | {:.1} µs | {:.1} µs | {:.1} µs |",
        samples.len(),
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.9).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6
    );
}
