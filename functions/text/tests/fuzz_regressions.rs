//! Replays every saved fuzz input (`tests/fuzz-regressions/<target>/`: the seeds and
//! each input that once crashed, hung or blew up) through the entry point its fuzz
//! target uses, on stable. See `FUZZING.md` at the repository root.

#[path = "support/fuzz.rs"]
mod fuzz;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Slower than this (in a release build) is a regression to look at: the fuzzers
/// ran with `-timeout=10`.
const SLOW: Duration = Duration::from_secs(10);

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(|| run(&data));
        let took = started.elapsed();
        assert!(outcome.is_ok(), "{} panicked", file.display());
        assert!(
            cfg!(debug_assertions) || took < SLOW,
            "{}: {took:?}",
            file.display()
        );
    }
}

#[test]
fn pdf() {
    replay("pdf", fuzz::pdf);
}

#[test]
fn html() {
    replay("html", fuzz::html);
}

#[test]
fn markdown() {
    replay("markdown", fuzz::markdown);
}

#[test]
fn chunk() {
    replay("chunk", fuzz::chunk);
}
