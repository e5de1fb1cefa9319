//! Search at a million chunks, embedded (issue 16): the vectors `scripts/bench_vectors_1m.py
//! generate` wrote (384-d unit vectors around topic centres) in one tenant of a
//! SQLite data directory, searched through `Vectors::search` with k = 10.
//!
//! `vectors_1m build`: the data directory `<dir>/pristine` with the first n vectors
//! (document `d{i / 10}`, chunk `{i % 10}`), once. `vectors_1m` (the default): a copy
//! of it, then in this fresh process the start-up load (the first search), the
//! index's RSS, single-query p50/p99 and recall against the brute-force truth, QPS
//! from 2 threads, and the same latency and QPS while 10 documents a second are
//! deleted and 100 chunks a second inserted. One JSON line of results.
//!
//! Run by `scripts/bench-vectors-1m.sh`; `<dir>` is `TROUPE_BENCH_VECTORS_DIR`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use troupe_core::{VectorRecord, Vectors};
use troupe_local::{Local, SqliteVectors};

const DIMS: usize = 384;
const K: usize = 10;
const TENANT: &str = "bench";
const MODEL: &str = "all-MiniLM-L6-v2";
/// How long each QPS and churn phase runs.
const PHASE: Duration = Duration::from_secs(20);

fn dir() -> PathBuf {
    std::env::var_os("TROUPE_BENCH_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME"))
                .join(".cache/troupe-bench/vectors-1m")
        })
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(dir.join("meta.json")).expect("meta.json: run generate first"),
    )
    .expect("meta.json")
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Rows `from..to` of base.f32.
fn rows(dir: &Path, from: usize, to: usize) -> Vec<Vec<f32>> {
    let mut f = std::fs::File::open(dir.join("base.f32")).expect("base.f32");
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((from * DIMS * 4) as u64)).expect("seek");
    let mut buf = vec![0u8; (to - from) * DIMS * 4];
    f.read_exact(&mut buf).expect("read base.f32");
    buf.chunks_exact(DIMS * 4).map(floats).collect()
}

fn record(i: usize, vector: Vec<f32>) -> VectorRecord {
    VectorRecord {
        tenant: TENANT.into(),
        document: format!("d{}", i / 10),
        chunk: format!("{}", i % 10),
        model: MODEL.into(),
        vector,
        // About a chunk's worth of text (the pipeline's chunks are ~1,000 characters).
        text: format!("chunk {i}: {}", "lorem ipsum dolor sit amet ".repeat(36)),
    }
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim().trim_end_matches(" kB").parse().expect("kB"))
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn percentiles(mut t: Vec<Duration>) -> (f64, f64) {
    t.sort();
    let at = |p: f64| t[((t.len() as f64 - 1.0) * p).round() as usize];
    (ms(at(0.5)), ms(at(0.99)))
}

fn build(rt: &tokio::runtime::Runtime, dir: &Path, n: usize) {
    let pristine = dir.join("pristine");
    if pristine.join("done").exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(&pristine);
    let local = Local::open(&pristine).expect("open");
    let started = Instant::now();
    for from in (0..n).step_by(10_000) {
        let to = (from + 10_000).min(n);
        let batch = rows(dir, from, to);
        for (j, chunk) in batch.chunks(1000).enumerate() {
            let records: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, v)| record(from + j * 1000 + i, v.clone()))
                .collect();
            rt.block_on(local.vectors.upsert(&records)).expect("upsert");
        }
    }
    drop(local);
    let c = rusqlite::Connection::open(pristine.join("troupe.db")).expect("db");
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    std::fs::write(pristine.join("done"), b"").expect("done");
    eprintln!("built {n} rows in {:.0} s", started.elapsed().as_secs_f64());
}

/// Searches from `threads` tasks for [`PHASE`]; searches per second.
async fn qps(v: &SqliteVectors, queries: &Arc<Vec<Vec<f32>>>, threads: usize) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..threads)
        .map(|t| {
            let (v, queries, done) = (v.clone(), queries.clone(), done.clone());
            tokio::spawn(async move {
                let mut j = t * 7;
                while started.elapsed() < PHASE {
                    v.search(TENANT, MODEL, &queries[j % queries.len()], K)
                        .await
                        .expect("search");
                    done.fetch_add(1, Ordering::Relaxed);
                    j += 13;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Single-query latency over every query, `passes` times; hits per query of the first pass.
async fn latency(
    v: &SqliteVectors,
    queries: &[Vec<f32>],
    passes: usize,
) -> (Vec<Duration>, Vec<Vec<usize>>) {
    let (mut times, mut found) = (Vec::new(), Vec::new());
    for pass in 0..passes {
        for q in queries {
            let t = Instant::now();
            let hits = v.search(TENANT, MODEL, q, K).await.expect("search");
            times.push(t.elapsed());
            if pass == 0 {
                found.push(
                    hits.iter()
                        .map(|h| {
                            h.document[1..].parse::<usize>().expect("doc") * 10
                                + h.chunk.parse::<usize>().expect("chunk")
                        })
                        .collect(),
                );
            }
        }
    }
    (times, found)
}

fn main() {
    let dir = dir();
    let meta = meta(&dir);
    let (n, extra) = (
        meta["n"].as_u64().expect("n") as usize,
        meta["extra"].as_u64().expect("extra") as usize,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    if std::env::args().skip(1).any(|a| a == "build") {
        build(&rt, &dir, n);
        return;
    }
    assert!(
        dir.join("pristine/done").exists(),
        "run `vectors_1m build` first"
    );
    let run = dir.join("run");
    let _ = std::fs::remove_dir_all(&run);
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::copy(dir.join("pristine/troupe.db"), run.join("troupe.db")).expect("copy db");
    let queries: Vec<Vec<f32>> = std::fs::read(dir.join("queries.f32"))
        .expect("queries")
        .chunks_exact(DIMS * 4)
        .map(floats)
        .collect();
    let truth: Vec<Vec<usize>> = std::fs::read(dir.join("truth.i32"))
        .expect("truth")
        .chunks_exact(K * 4)
        .map(|r| {
            r.chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .collect()
        })
        .collect();
    let queries = Arc::new(queries);

    let rss_before = rss_kib("VmRSS:");
    let local = Local::open(&run).expect("open");
    let v = local.vectors.clone();
    let t = Instant::now();
    rt.block_on(v.search(TENANT, MODEL, &queries[0], K))
        .expect("first search");
    let load = t.elapsed();
    let rss_loaded = rss_kib("VmRSS:");

    let (times, found) = rt.block_on(latency(&v, &queries, 3));
    let recall = found
        .iter()
        .zip(&truth)
        .map(|(f, t)| f.iter().filter(|i| t.contains(i)).count() as f64 / K as f64)
        .sum::<f64>()
        / truth.len() as f64;
    let exact = found.iter().zip(&truth).filter(|(f, t)| f == t).count();
    let (p50, p99) = percentiles(times);
    let qps2 = rt.block_on(qps(&v, &queries, 2));

    // Churn: every 100 ms one document deleted and one of 10 chunks inserted.
    let stop = Arc::new(AtomicBool::new(false));
    let (deleted, inserted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let extra_rows = rows(&dir, n, n + extra);
    let churn = {
        let (v, stop, deleted, inserted) =
            (v.clone(), stop.clone(), deleted.clone(), inserted.clone());
        rt.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut step = 0usize;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let victim = (step * 7919) % (n / 10);
                v.delete_document(TENANT, &format!("d{victim}"))
                    .await
                    .expect("delete");
                deleted.fetch_add(1, Ordering::Relaxed);
                let records: Vec<_> = (0..10)
                    .map(|c| {
                        let i = (step * 10 + c) % extra;
                        record(n + step * 10 + c, extra_rows[i].clone())
                    })
                    .collect();
                inserted.fetch_add(v.upsert(&records).await.expect("upsert"), Ordering::Relaxed);
                step += 1;
            }
        })
    };
    let churn_started = Instant::now();
    let (churn_times, _) = rt.block_on(latency(&v, &queries, 1));
    let churn_qps2 = rt.block_on(qps(&v, &queries, 2));
    stop.store(true, Ordering::Relaxed);
    rt.block_on(churn).expect("churn");
    let churn_secs = churn_started.elapsed().as_secs_f64();
    let (churn_p50, churn_p99) = percentiles(churn_times);

    println!(
        "{}",
        serde_json::json!({
            "store": "troupe embedded (SQLite + in-memory int8 codes, exact f32 rescoring)",
            "n": n,
            "load_s": (load.as_secs_f64() * 100.0).round() / 100.0,
            "index_rss_mib": (rss_loaded - rss_before) / 1024,
            "p50_ms": p50, "p99_ms": p99,
            "qps_2_threads": (qps2 * 10.0).round() / 10.0,
            "recall_at_10": recall,
            "queries_exact": format!("{exact}/{}", truth.len()),
            "churn": {
                "deletes_per_s": (deleted.load(Ordering::Relaxed) as f64 / churn_secs * 10.0).round() / 10.0,
                "inserts_per_s": (inserted.load(Ordering::Relaxed) as f64 / churn_secs * 10.0).round() / 10.0,
                "p50_ms": churn_p50, "p99_ms": churn_p99,
                "qps_2_threads": (churn_qps2 * 10.0).round() / 10.0,
            },
            "rss_end_mib": rss_kib("VmRSS:") / 1024,
            "rss_peak_mib": rss_kib("VmHWM:") / 1024,
        })
    );
}
