use std::collections::HashMap;
use std::convert::Infallible;

use super::*;

/// A deterministic pseudo-random unit vector.
pub(crate) fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = (0..dims)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / n).collect()
}

/// The index's answer: candidates rescored from the f32 vectors.
fn search(rows: &Rows, all: &HashMap<i64, Vec<f32>>, query: &[f32], k: usize) -> Vec<(f32, i64)> {
    let candidates = rows.snapshot().candidates(query, k);
    rescore(&candidates, k, |id| {
        Ok::<_, Infallible>(all.get(&id).map(|v| dot(v, query)))
    })
    .unwrap()
}

/// Brute force over every vector.
fn reference(all: &HashMap<i64, Vec<f32>>, query: &[f32], k: usize) -> Vec<(f32, i64)> {
    let mut scored: Vec<(f32, i64)> = all.iter().map(|(id, v)| (dot(v, query), *id)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.truncate(k);
    scored
}

#[test]
fn the_answer_is_the_exact_top_k() {
    let dims = 384;
    let (mut rows, mut all) = (Rows::default(), HashMap::new());
    // More than one segment, and enough rows for the parallel scan.
    for i in 0..20_000 {
        let v = vector(i as u64, dims);
        assert!(rows.push(i, &v));
        all.insert(i, v);
    }
    // Near-duplicates make the bound matter.
    for i in 0..50 {
        let mut v = vector(7, dims);
        v[i] += 1e-3;
        rows.push(100_000 + i as i64, &v);
        all.insert(100_000 + i as i64, v);
    }
    for q in 0..20u64 {
        let query = vector(if q == 0 { 7 } else { 1_000_000 + q }, dims);
        assert_eq!(
            search(&rows, &all, &query, 10),
            reference(&all, &query, 10),
            "query {q}"
        );
    }
}

#[test]
fn deleted_rows_are_never_found_and_segments_compact() {
    let dims = 16;
    let (mut rows, mut all) = (Rows::default(), HashMap::new());
    let n = 3 * SEGMENT_ROWS as i64;
    for i in 0..n {
        let v = vector(i as u64, dims);
        rows.push(i, &v);
        all.insert(i, v);
    }
    let held = rows.snapshot();
    // Every third row of the first segment (some compaction later), then half of the
    // second (compacted), then the whole third (dropped).
    let gone: Vec<i64> = (0..SEGMENT_ROWS as i64)
        .step_by(3)
        .chain((SEGMENT_ROWS as i64..2 * SEGMENT_ROWS as i64).step_by(2))
        .chain(2 * SEGMENT_ROWS as i64..n)
        .collect();
    for id in &gone {
        assert!(rows.delete(*id), "{id}");
        assert!(!rows.delete(*id), "deleted twice: {id}");
        all.remove(id);
    }
    assert!(!rows.delete(n + 5));
    assert_eq!(rows.len(), all.len());
    assert_eq!(rows.segments.len(), 2);
    for q in 0..10u64 {
        let query = vector(500_000 + q, dims);
        assert_eq!(search(&rows, &all, &query, 10), reference(&all, &query, 10));
    }
    // A search that took its snapshot before the deletes still reads valid rows.
    assert_eq!(
        held.segments.iter().map(|s| s.ids.len()).sum::<usize>(),
        n as usize
    );
    // Appends after deletes keep ids in order and searchable.
    let v = vector(7_777_777, dims);
    rows.push(n + 1, &v);
    all.insert(n + 1, v.clone());
    assert_eq!(search(&rows, &all, &v, 3), reference(&all, &v, 3));
}

#[test]
fn append_takes_only_newer_rows() {
    let dims = 8;
    let mut rows = Rows::default();
    for i in 0..10 {
        rows.push(i, &vector(i as u64, dims));
    }
    let mut more = Rows::default();
    for i in 5..20 {
        more.push(i, &vector(i as u64, dims));
    }
    more.delete(15);
    rows.append(&more, 9);
    assert_eq!(rows.len(), 19);
    let ids: Vec<i64> = rows.segments.iter().flat_map(|s| s.ids.clone()).collect();
    assert_eq!(ids, (0..20).filter(|&i| i != 15).collect::<Vec<_>>());
}

#[test]
fn widths_and_edges() {
    let mut rows = Rows::default();
    assert!(rows.snapshot().candidates(&[1.0, 0.0], 3).is_empty());
    assert!(rows.push(1, &[1.0, 0.0]));
    assert!(!rows.push(2, &[1.0, 0.0, 0.0]));
    assert!(rows.push(3, &[0.0, 0.0]));
    assert!(rows.snapshot().candidates(&[1.0, 0.0, 0.0], 3).is_empty());
    let found = rows.snapshot().candidates(&[1.0, 0.0], 5);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].id, 1);
    assert!(rows.snapshot().candidates(&[1.0, 0.0], 0).is_empty());
}

/// A vector at cosine ~0.75 from centre `topic`. Many such rows are as close to a
/// query as 4-bit codes can tell, so the scan must read their low nibbles.
fn member(topic: u64, seed: u64, dims: usize) -> Vec<f32> {
    let (centre, noise) = (vector(topic, dims), vector(1_000 + seed, dims));
    let v: Vec<f32> = centre
        .iter()
        .zip(&noise)
        .map(|(c, e)| 0.75 * c + 0.66 * e)
        .collect();
    let norm = dot(&v, &v).sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

#[test]
fn clustered_rows_of_odd_widths_stay_exact() {
    for (dims, n) in [(384, 20_000), (77, 20_000), (5, 3_000)] {
        let (mut rows, mut all) = (Rows::default(), HashMap::new());
        for i in 0..n {
            let v = member(i as u64 % 7, i as u64, dims);
            assert!(rows.push(i, &v));
            all.insert(i, v);
        }
        for q in 0..6u64 {
            let query = member(q, 5_000_000 + q, dims);
            for k in [1, 10, 50] {
                assert_eq!(
                    search(&rows, &all, &query, k),
                    reference(&all, &query, k),
                    "{dims} dims, query {q}, k {k}"
                );
            }
        }
    }
}

#[test]
fn order_keys_sort_like_the_floats() {
    let floats = [
        f32::NEG_INFINITY,
        -2.5,
        -1e-30,
        -0.0,
        0.0,
        1e-30,
        0.75,
        3.0,
        f32::INFINITY,
    ];
    for pair in floats.windows(2) {
        assert!(order_key(pair[0]) <= order_key(pair[1]), "{pair:?}");
    }
    for x in floats {
        assert_eq!(from_order_key(order_key(x)).to_bits(), x.to_bits());
    }
}
