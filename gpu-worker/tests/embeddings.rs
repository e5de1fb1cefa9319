//! The worker against sentence-transformers' own output, and its batching rules, on the
//! real model (fetched by `scripts/fetch-model.sh`, as `make setup` does).

mod common;

use std::time::Duration;

use common::{embedder, model_dir};
use troupe_gpu_worker::{CandleBackend, EmbeddingBackend, Tokens};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

struct Case {
    name: String,
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Case> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reference.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            text: c["text"].as_str().unwrap().to_owned(),
            tokens: c["tokens"].as_u64().unwrap() as usize,
            embedding: c["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect(),
        })
        .collect()
}

/// Both encoders — the packed CPU one the worker runs on CPUs, and candle's, which
/// runs on CUDA — on every case in one padded/packed batch, against the reference and
/// each other.
#[test]
fn both_encoders_match_the_reference_in_one_mixed_batch() {
    let dir = model_dir();
    let cases = reference();
    let tokens = Tokens::load(dir, 256).unwrap();
    let ids: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| tokens.encode(&c.text).unwrap())
        .collect();
    let device = candle_core::Device::Cpu;
    let mut cpu = CandleBackend::load(dir, &device, 1 << 20).unwrap();
    let mut candle = CandleBackend::load_candle(dir, &device, 1 << 20).unwrap();
    let (a, b) = (cpu.embed(&ids).unwrap(), candle.embed(&ids).unwrap());
    for ((c, x), y) in cases.iter().zip(&a).zip(&b) {
        for (engine, v) in [("cpu", x), ("candle", y)] {
            let cos = cosine(v, &c.embedding);
            assert!(cos >= 0.9999, "{} ({engine}): cosine {cos}", c.name);
        }
        // Both f32, they agree to rounding; with the CPU encoder's dense layers in
        // bf16 (AMX), to what the reference allows.
        let agree = if troupe_gpu_worker::cpu::bf16_dense_layers() {
            0.9999
        } else {
            0.99999
        };
        let cos = cosine(x, y);
        assert!(
            cos >= agree,
            "{}: the encoders differ, cosine {cos}",
            c.name
        );
    }
    // Bad input is an error, not a panic: an id outside the vocabulary, too many tokens.
    for bad in [vec![101, 999_999, 102], vec![101; 513]] {
        let err = cpu.embed(&[bad]).unwrap_err().to_string();
        assert!(
            err.contains("vocabulary") || err.contains("positions"),
            "{err}"
        );
    }
    assert!(cpu.embed(&[]).unwrap().is_empty());
}

/// A batch large enough to be encoded as several groups side by side (the CPU
/// encoder's threads each take groups of their own) gives every input, in order, the
/// vector it gets alone.
#[test]
fn a_batch_split_into_groups_gives_each_input_its_own_vector() {
    let dir = model_dir();
    let cases = reference();
    let tokens = Tokens::load(dir, 256).unwrap();
    let device = candle_core::Device::Cpu;
    let mut cpu = CandleBackend::load(dir, &device, 1 << 20).unwrap();
    let alone: Vec<Vec<f32>> = cases
        .iter()
        .map(|c| {
            let ids = tokens.encode(&c.text).unwrap();
            cpu.embed(&[ids]).unwrap().remove(0)
        })
        .collect();
    // Twelve rounds of the cases, each round in another order: ~4,300 tokens.
    let order: Vec<usize> = (0..12 * cases.len())
        .map(|i| (i * 7 + i / cases.len()) % cases.len())
        .collect();
    let ids: Vec<Vec<u32>> = order
        .iter()
        .map(|&i| tokens.encode(&cases[i].text).unwrap())
        .collect();
    assert!(ids.iter().map(Vec::len).sum::<usize>() > 4000);
    let together = cpu.embed(&ids).unwrap();
    assert_eq!(together.len(), order.len());
    for (at, (&i, v)) in order.iter().zip(&together).enumerate() {
        let cos = cosine(v, &alone[i]);
        assert!(
            cos >= 0.99999,
            "input {at} ({}): cosine {cos} to its vector alone",
            cases[i].name
        );
        let reference = cosine(v, &cases[i].embedding);
        assert!(reference >= 0.9999, "input {at}: cosine {reference}");
    }
}

/// The f32 encoder (`TROUPE_CPU_BF16=0`; what a CPU without AMX runs), which this
/// process may not use: [`f32_encoder_matches_candle_and_the_reference`] run again in
/// a process of its own with the variable set.
#[test]
fn the_f32_encoder_in_its_own_process() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "f32_encoder_matches_candle_and_the_reference",
            "--ignored",
            "--nocapture",
        ])
        .env("TROUPE_CPU_BF16", "0")
        .output()
        .unwrap();
    let (text, errors) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && text.contains("1 passed") && !errors.contains("run with"),
        "{text}\n{errors}"
    );
}

/// Every case alone (a batch of one: few rows, the f32 panel kernel where the CPU has
/// AVX-512) and all together (the `gemm` crate), against candle's f32 encoder and the
/// reference.
#[test]
#[ignore = "run by the_f32_encoder_in_its_own_process with TROUPE_CPU_BF16=0"]
fn f32_encoder_matches_candle_and_the_reference() {
    if std::env::var("TROUPE_CPU_BF16").as_deref() != Ok("0") {
        // `cargo test -- --ignored` without the variable: nothing to check here.
        eprintln!("run with TROUPE_CPU_BF16=0 (the_f32_encoder_in_its_own_process does)");
        return;
    }
    assert!(
        !troupe_gpu_worker::cpu::bf16_dense_layers(),
        "TROUPE_CPU_BF16=0 keeps the encoder in f32"
    );
    let dir = model_dir();
    let cases = reference();
    let tokens = Tokens::load(dir, 256).unwrap();
    let device = candle_core::Device::Cpu;
    let mut cpu = CandleBackend::load(dir, &device, 1 << 20).unwrap();
    let mut candle = CandleBackend::load_candle(dir, &device, 1 << 20).unwrap();
    let ids: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| tokens.encode(&c.text).unwrap())
        .collect();
    let together = cpu.embed(&ids).unwrap();
    for ((c, one), batched) in cases.iter().zip(&ids).zip(&together) {
        let alone = cpu.embed(std::slice::from_ref(one)).unwrap().remove(0);
        let want = candle.embed(std::slice::from_ref(one)).unwrap().remove(0);
        for (how, v) in [("alone", &alone), ("batched", batched)] {
            let cos = cosine(v, &want);
            assert!(cos >= 0.99999, "{} ({how}): cosine {cos} to candle", c.name);
            let cos = cosine(v, &c.embedding);
            assert!(
                cos >= 0.9999,
                "{} ({how}): cosine {cos} to the reference",
                c.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_sentence_transformers_alone_and_batched() {
    let (e, _) = embedder(16_384, 4096);
    let cases = reference();
    // One at a time: no padding.
    for c in &cases {
        let out = e.embed(std::slice::from_ref(&c.text)).await.unwrap();
        assert_eq!(out.tokens, c.tokens, "{}: token count", c.name);
        let cos = cosine(&out.vectors[0], &c.embedding);
        assert!(cos >= 0.9999, "{}: cosine {cos}", c.name);
    }
    // All at once: the batcher pads within length groups.
    let texts: Vec<String> = cases.iter().map(|c| c.text.clone()).collect();
    let out = e.embed(&texts).await.unwrap();
    for (c, v) in cases.iter().zip(&out.vectors) {
        let cos = cosine(v, &c.embedding);
        assert!(cos >= 0.9999, "{} (batched): cosine {cos}", c.name);
        assert!(
            (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-4,
            "unit length"
        );
    }
    assert!(
        cases.iter().any(|c| c.tokens == 256),
        "the fixture covers truncation at 256"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_stay_within_budget_and_callers_get_their_own_vectors_in_order() {
    let budget = 512;
    let (e, seen) = embedder(budget, 4096);
    let words = [
        "alpha",
        "beta gamma",
        "delta epsilon zeta eta",
        "theta iota kappa lambda mu nu xi omicron pi",
    ];
    let callers: Vec<Vec<String>> = (0..12)
        .map(|c| {
            (0..5)
                .map(|i| {
                    format!(
                        "caller {c} text {i}: {}",
                        words[(c + i) % 4].repeat(1 + (c * i) % 7)
                    )
                })
                .collect()
        })
        .collect();
    let tasks: Vec<_> = callers
        .iter()
        .cloned()
        .map(|texts| {
            let e = e.clone();
            tokio::spawn(async move { e.embed(&texts).await.unwrap() })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    // Each caller's vectors are its own, in its order: compare with one-by-one runs.
    for (texts, got) in callers.iter().zip(&results) {
        assert_eq!(got.vectors.len(), texts.len());
        for (t, v) in texts.iter().zip(&got.vectors) {
            let alone = e.embed(std::slice::from_ref(t)).await.unwrap();
            assert!(cosine(v, &alone.vectors[0]) > 0.9999, "{t}");
        }
    }
    let stats = seen.lock().unwrap().clone();
    assert!(
        stats.iter().all(|s| s.computed_tokens <= budget),
        "{stats:?}"
    );
    assert!(
        stats.iter().any(|s| s.texts > 5),
        "requests were batched together: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_callers_work_is_skipped() {
    let (e, seen) = embedder(16_384, 4096);
    let long = "word ".repeat(400);
    // Keep the backend busy with a long batch.
    let busy = {
        let e = e.clone();
        let texts = vec![long.clone(); 48];
        tokio::spawn(async move { e.embed(&texts).await.unwrap() })
    };
    // Wait until the batcher has taken the long batch (and is running it).
    while e.taken() < 48 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // This caller gives up before its turn comes.
    let gone = tokio::time::timeout(
        Duration::from_millis(50),
        e.embed(&["abandoned request".to_owned()]),
    )
    .await;
    assert!(gone.is_err(), "the backend was still busy");
    busy.await.unwrap();
    // Something after it still runs, so the batcher has taken the abandoned item.
    e.embed(&["later request".to_owned()]).await.unwrap();
    let texts: usize = seen.lock().unwrap().iter().map(|s| s.texts).sum();
    assert_eq!(texts, 48 + 1, "the abandoned text was never embedded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_overflow_is_a_429() {
    let (e, _) = embedder(16_384, 8);
    let long = "word ".repeat(400);
    let busy = {
        let e = e.clone();
        let texts = vec![long.clone(); 6];
        tokio::spawn(async move { e.embed(&texts).await.unwrap() })
    };
    while e.taken() < 6 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = troupe_gpu_worker::openai::handle(
        &e,
        br#"{"input": ["a", "b", "c"], "model": "all-MiniLM-L6-v2"}"#,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    busy.await.unwrap();
    let (status, body) =
        troupe_gpu_worker::openai::handle(&e, br#"{"input": ["a", "b", "c"], "model": "x"}"#).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_requests_and_errors() {
    let (e, _) = embedder(16_384, 64);
    let (status, body) = troupe_gpu_worker::openai::handle(
        &e,
        br#"{"input": "Hello, world!", "model": "text-embedding-3-small"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["object"], "embedding");
    assert_eq!(body["data"][0]["index"], 0);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);
    assert_eq!(body["usage"]["prompt_tokens"], 6);
    // base64, as the official Python SDK asks by default.
    let (status, body) = troupe_gpu_worker::openai::handle(
        &e,
        br#"{"input": ["x"], "model": "m", "encoding_format": "base64"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let b64 = body["data"][0]["embedding"].as_str().unwrap();
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
            .len(),
        384 * 4
    );
    for (bad, code) in [
        (&br#"{"model": "m"}"#[..], "invalid_json"),
        (br#"not json"#, "invalid_json"),
        (br#"{"input": [], "model": "m"}"#, "invalid_input"),
        (
            br#"{"input": [1, 2, 3], "model": "m"}"#,
            "unsupported_input",
        ),
        (
            br#"{"input": "x", "dimensions": 512}"#,
            "invalid_dimensions",
        ),
        (
            br#"{"input": "x", "encoding_format": "hex"}"#,
            "invalid_encoding_format",
        ),
    ] {
        let (status, body) = troupe_gpu_worker::openai::handle(&e, bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
    }
}

#[test]
fn a_missing_model_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = CandleBackend::load(dir.path(), &candle_core::Device::Cpu, 1024)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("make setup") && err.contains("--model-dir"),
        "{err}"
    );
    let err = Tokens::load(dir.path(), 256).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_work_waits_for_admission_instead_of_failing() {
    let (e, _) = embedder(16_384, 2);
    let texts: Vec<String> = (0..5).map(|i| format!("queued text number {i}")).collect();
    // More texts than the admission limit: refused for HTTP callers…
    assert!(matches!(
        e.embed(&texts).await,
        Err(troupe_gpu_worker::Error::Invalid(_))
    ));
    // …split into rounds and waited for by queue work, vectors still in order.
    let out = e.embed_waiting(&texts).await.unwrap();
    assert_eq!(out.vectors.len(), 5);
    for (t, v) in texts.iter().zip(&out.vectors) {
        let alone = e.embed(std::slice::from_ref(t)).await.unwrap();
        assert!(cosine(v, &alone.vectors[0]) > 0.9999, "{t}");
    }
    assert!(e.is_running());
}

#[test]
fn token_spans_in_windows_match_the_whole_text_and_stop_when_cancelled() {
    use std::sync::atomic::AtomicBool;
    let tokens = Tokens::load(model_dir(), 256).unwrap();
    // Several windows' worth, with multi-byte characters and long runs of spaces.
    let mut text = String::new();
    for i in 0..9000u32 {
        text.push_str(&format!("Magma número {i} rises through the crust; "));
        if i.is_multiple_of(500) {
            text.push_str(&" ".repeat(3000));
        }
    }
    assert!(text.len() > 5 * troupe_gpu_worker::tokenize::SPAN_WINDOW);
    let windowed = tokens.spans(&text, &AtomicBool::new(false)).unwrap();
    // The reference: the whole text tokenized at once (what the host did before).
    let whole = {
        let mut t = tokenizers::Tokenizer::from_file(model_dir().join("tokenizer.json")).unwrap();
        t.with_truncation(None).unwrap();
        t.with_padding(None);
        let enc = t.encode(text.as_str(), false).unwrap();
        enc.get_offsets()
            .iter()
            .map(|&(s, e)| (s as u32, e as u32))
            .collect::<Vec<_>>()
    };
    assert_eq!(windowed.len(), whole.len());
    assert_eq!(windowed, whole);
    // Windows cover the text exactly, in order, each within the bound.
    let mut at = 0;
    for (start, piece) in troupe_gpu_worker::tokenize::windows(&text, 1000) {
        assert_eq!(start, at);
        assert!(piece.len() <= 1000);
        at += piece.len();
    }
    assert_eq!(at, text.len());
    // A caller that has gone stops the work.
    assert!(matches!(
        tokens.spans(&text, &AtomicBool::new(true)),
        Err(troupe_gpu_worker::Error::Stopped)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_spans_refuse_oversized_text_with_a_clear_error() {
    use troupe_core::Embeddings as _;
    let (e, _) = embedder(16_384, 4096);
    let big = "word ".repeat((troupe_gpu_worker::embedder::MAX_SPANS_TEXT / 5) + 1);
    let err = e.token_spans(big).await.unwrap_err().to_string();
    assert!(err.contains("windows"), "{err}");
    let ok = e.token_spans("two words".into()).await.unwrap();
    assert_eq!(ok, [(0, 3), (4, 9)]);
}
