//! Shared by the worker's integration tests: the real model, fetched once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use troupe_gpu_worker::batcher::BatchStats;
use troupe_gpu_worker::embedder::Options;
use troupe_gpu_worker::{CandleBackend, Embedder, Tokens};

/// `models/all-MiniLM-L6-v2`, fetched by `scripts/fetch-model.sh` if needed.
pub fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = std::path::PathBuf::from(
            std::env::var_os("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("..");
        let status = std::process::Command::new(root.join("scripts/fetch-model.sh"))
            .status()
            .expect("fetch-model.sh");
        assert!(status.success(), "fetching the model failed");
        root.join("models/all-MiniLM-L6-v2")
    })
}

/// An embedder on the CPU with the given token budget and admission limit, and the
/// log of the batches it ran.
pub fn embedder(budget: usize, max_queued: usize) -> (Embedder, Arc<Mutex<Vec<BatchStats>>>) {
    let dir = model_dir();
    let backend = CandleBackend::load(dir, &candle_core::Device::Cpu, budget).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let e = Embedder::start(
        Box::new(backend),
        Tokens::load(dir, 256).unwrap(),
        Options {
            max_queued_texts: max_queued,
            ..Options::default()
        },
        Some(Box::new(move |s: &BatchStats| log.lock().unwrap().push(*s))),
    )
    .unwrap();
    (e, seen)
}
