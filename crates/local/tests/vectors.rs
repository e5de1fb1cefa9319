//! The embedded vector store's search against a brute-force reference, while rows are
//! inserted and deleted, from one handle or two (another process's view), and while
//! other searches run.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use troupe_core::{VectorRecord, Vectors};
use troupe_local::{Local, SqliteVectors};

const DIMS: usize = 48;

fn unit(rng: &mut impl Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn record(tenant: &str, doc: usize, chunk: usize, vector: Vec<f32>) -> VectorRecord {
    VectorRecord {
        tenant: tenant.into(),
        document: format!("d{doc}"),
        chunk: format!("{chunk}"),
        model: "m".into(),
        vector,
        text: format!("{tenant}/{doc}/{chunk}"),
    }
}

/// What the store holds, for the brute-force answer: (document, chunk) → vector.
type Truth = BTreeMap<(String, String), Vec<f32>>;

fn brute_force(truth: &Truth, query: &[f32], k: usize) -> Vec<(String, String)> {
    let mut scored: Vec<(f64, &(String, String))> = truth
        .iter()
        .map(|(key, v)| {
            let s: f64 = v.iter().zip(query).map(|(a, b)| f64::from(a * b)).sum();
            (s, key)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .take(k)
        .map(|(_, key)| key.clone())
        .collect()
}

async fn hits(v: &SqliteVectors, tenant: &str, query: &[f32], k: usize) -> Vec<(String, String)> {
    v.search(tenant, "m", query, k)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.document, h.chunk))
        .collect()
}

/// Inserts `docs` documents of 10 chunks each for `tenant`, numbered from `first`.
async fn insert(
    v: &SqliteVectors,
    truth: &mut Truth,
    tenant: &str,
    first: usize,
    docs: usize,
    rng: &mut impl Rng,
) {
    let mut records = Vec::new();
    for doc in first..first + docs {
        for chunk in 0..10 {
            let r = record(tenant, doc, chunk, unit(rng));
            truth.insert((r.document.clone(), r.chunk.clone()), r.vector.clone());
            records.push(r);
        }
    }
    v.upsert(&records).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_equals_brute_force_through_inserts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::open(dir.path()).unwrap();
    let (v, other) = (
        local.vectors.clone(),
        SqliteVectors::new(local.queue.db().clone()),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let (mut truth, mut theirs) = (Truth::new(), Truth::new());
    // Enough rows for several segments and the parallel scan.
    insert(&v, &mut truth, "t", 0, 3000, &mut rng).await;
    // The same document names in another tenant: deletes in one leave the other alone.
    insert(&v, &mut theirs, "u", 0, 50, &mut rng).await;
    let mut next = 3000;
    for round in 0..12 {
        // Delete some documents (through either handle), add some.
        for _ in 0..40 {
            let doc = format!("d{}", rng.random_range(0..next));
            let deleter = if round % 2 == 0 { &v } else { &other };
            let want = truth.keys().filter(|(d, _)| *d == doc).count();
            assert_eq!(deleter.delete_document("t", &doc).await.unwrap(), want);
            truth.retain(|(d, _), _| *d != doc);
        }
        insert(&other, &mut truth, "t", next, 20, &mut rng).await;
        next += 20;
        for searcher in [&v, &other] {
            for _ in 0..5 {
                let q = unit(&mut rng);
                assert_eq!(
                    hits(searcher, "t", &q, 10).await,
                    brute_force(&truth, &q, 10),
                    "round {round}"
                );
                assert_eq!(
                    hits(searcher, "u", &q, 5).await,
                    brute_force(&theirs, &q, 5),
                    "round {round}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_never_found_and_inserted_found_while_others_search() {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::open(dir.path()).unwrap();
    let v = local.vectors.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut truth = Truth::new();
    insert(&v, &mut truth, "t", 0, 2000, &mut rng).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background: Vec<_> = (0..2u64)
        .map(|seed| {
            let (v, stop) = (v.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(100 + seed);
                let mut searches = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Always hits (2,000 documents); exactness is checked by the other test.
                    let hits = v.search("t", "m", &unit(&mut rng), 10).await.unwrap();
                    assert!(!hits.is_empty() && hits.len() <= 10);
                    searches += 1;
                }
                searches
            })
        })
        .collect();
    let mut next = 2000;
    for _ in 0..60 {
        // A document's own chunk is its best hit until it is deleted, then never a hit.
        let doc = rng.random_range(0..next);
        let name = format!("d{doc}");
        let Some(own) = truth.get(&(name.clone(), "0".into())).cloned() else {
            continue;
        };
        assert_eq!(hits(&v, "t", &own, 1).await, [(name.clone(), "0".into())]);
        v.delete_document("t", &name).await.unwrap();
        truth.retain(|(d, _), _| *d != name);
        let after = hits(&v, "t", &own, 50).await;
        assert!(
            after.iter().all(|(d, _)| *d != name),
            "{name} found after its delete"
        );
        // An inserted chunk is found by the next search.
        insert(&v, &mut truth, "t", next, 1, &mut rng).await;
        let added = truth[&(format!("d{next}"), "3".into())].clone();
        assert_eq!(
            hits(&v, "t", &added, 1).await,
            [(format!("d{next}"), "3".into())]
        );
        next += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in background {
        assert!(b.await.unwrap() > 0);
    }
}

#[tokio::test]
async fn a_copy_behind_the_pruned_log_loads_again() {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::open(dir.path()).unwrap();
    let (v, other) = (
        local.vectors.clone(),
        SqliteVectors::new(local.queue.db().clone()),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut truth = Truth::new();
    insert(&v, &mut truth, "t", 0, 100, &mut rng).await;
    let q = unit(&mut rng);
    assert_eq!(hits(&other, "t", &q, 10).await, brute_force(&truth, &q, 10));
    // Delete the best hits' documents, then cut the log past them, as a long run of
    // deletes the copy did not see would.
    for (doc, _) in brute_force(&truth, &q, 3) {
        v.delete_document("t", &doc).await.unwrap();
        truth.retain(|(d, _), _| *d != doc);
    }
    local
        .queue
        .db()
        .write(|c| {
            c.execute_batch(
                "UPDATE vector_deletes SET log_pruned = (SELECT MAX(seq) FROM vector_delete_log);
                 DELETE FROM vector_delete_log;",
            )
            .map_err(|e| troupe_core::Error::backend("sqlite", e))
        })
        .await
        .unwrap();
    assert_eq!(hits(&other, "t", &q, 10).await, brute_force(&truth, &q, 10));
    insert(&v, &mut truth, "t", 100, 5, &mut rng).await;
    assert_eq!(hits(&other, "t", &q, 10).await, brute_force(&truth, &q, 10));
}
