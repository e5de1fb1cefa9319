//! Replays every saved `cloudevent` fuzz input (`tests/fuzz-regressions/cloudevent/`:
//! the seeds and each input that once failed) through the target's entry point, on
//! stable. See `FUZZING.md` at the repository root.

#[path = "support/fuzz.rs"]
mod fuzz;

#[test]
fn cloudevent() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions/cloudevent");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let run = std::panic::catch_unwind(|| fuzz::cloudevent(&data));
        assert!(run.is_ok(), "{} panicked", file.display());
    }
}
