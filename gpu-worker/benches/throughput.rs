//! Embedding throughput (tokens/s) of the worker's backend on chunk mixes of ~16, ~128
//! and ~256 tokens at several batch sizes.
//!
//! Then the rate of the GEMM alone at the encoder's layer shapes (`gemm` crate, both
//! threads), the ceiling for a GEMM-bound forward pass.
//!
//! Run through `scripts/bench-embeddings.sh`, which writes the inputs, runs this (once
//! with the dense layers in bf16 where the CPU has AMX, once with `TROUPE_CPU_BF16=0`)
//! and the Python peers on the same inputs, and prints the side-by-side table. Reads
//! the inputs from `$TROUPE_BENCH_INPUTS` (JSON: {"mix": [texts…]}) and prints one
//! JSON line per (mix, batch size). With `$TROUPE_BENCH_VECTORS` set, also writes the
//! embeddings of each (mix, batch size) there (JSON: {"mix|batch": [[f32; 384]…]}), for
//! their cosine to the f32 reference.

use std::time::Instant;

use troupe_gpu_worker::backend::{EmbeddingBackend, best_device};
use troupe_gpu_worker::cpu::bf16_dense_layers;
use troupe_gpu_worker::cpu::gemm::{View, matmul};
use troupe_gpu_worker::{CandleBackend, Tokens};

fn main() {
    let inputs = std::env::var("TROUPE_BENCH_INPUTS")
        .expect("TROUPE_BENCH_INPUTS: run scripts/bench-embeddings.sh");
    let model =
        std::env::var("TROUPE_MODEL_DIR").unwrap_or_else(|_| "models/all-MiniLM-L6-v2".into());
    let model = std::path::Path::new(&model);
    let mixes: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&inputs).expect("inputs"))
            .expect("inputs json");
    let tokens = Tokens::load(model, 256).expect("tokenizer");
    let mut backend = CandleBackend::load(model, &best_device(), usize::MAX).expect("model");
    let precision = if bf16_dense_layers() { "bf16" } else { "f32" };
    let vectors_out = std::env::var("TROUPE_BENCH_VECTORS").ok();
    let mut vectors = serde_json::Map::new();
    for (mix, texts) in &mixes {
        let ids: Vec<Vec<u32>> = texts
            .as_array()
            .expect("list")
            .iter()
            .map(|t| tokens.encode(t.as_str().expect("text")).expect("encode"))
            .collect();
        let total: usize = ids.iter().map(Vec::len).sum();
        for batch in [1usize, 8, 32] {
            // Warm-up on one batch, then the whole mix.
            backend
                .embed(&ids[..batch.min(ids.len())])
                .expect("warm-up");
            let mut out = Vec::with_capacity(ids.len());
            let start = Instant::now();
            for chunk in ids.chunks(batch) {
                out.extend(backend.embed(chunk).expect("embed"));
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"engine": "troupe", "precision": precision, "mix": mix, "batch": batch, "texts": ids.len(), "tokens": total, "seconds": secs, "tokens_per_s": total as f64 / secs})
            );
            vectors.insert(format!("{mix}|{batch}"), serde_json::json!(out));
        }
    }
    if let Some(path) = vectors_out {
        std::fs::write(&path, serde_json::Value::Object(vectors).to_string()).expect("vectors");
    }
    for (m, k, n) in GEMM_SHAPES {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let (a, b) = (View::dense(&a, m, k), View::dense(&b, k, n));
        matmul(&mut c, n, a, b, false, true);
        let flop = 2.0 * (m * k * n) as f64;
        let iters = (2e10 / flop).ceil() as usize;
        let start = Instant::now();
        for _ in 0..iters {
            matmul(&mut c, n, a, b, false, true);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"engine": "troupe", "gemm": format!("{m}x{k}x{n}"), "gflops": flop * iters as f64 / secs / 1e9})
        );
    }
}

/// tokens × in × out of the encoder's dense layers (a batch of 4,096 tokens) and of
/// a single 16-token input.
const GEMM_SHAPES: [(usize, usize, usize); 4] = [
    (4096, 384, 1152),
    (4096, 384, 1536),
    (4096, 1536, 384),
    (16, 384, 1536),
];
