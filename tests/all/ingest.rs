//! `troupe ingest` against `troupe up` running the repository's pipeline with the
//! model: several uploads in flight, settling followed on the live event stream, and
//! the same answer where the server streams nothing (it then asks per document).

use std::path::Path;

use serde_json::Value;
use troupe_tests::{Child, call};

/// Runs `troupe ingest --url <base> ARGS…`: (success, stdout, stderr).
fn ingest(base: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(troupe_tests::troupe_bin())
        .arg("ingest")
        .args(["--url", base])
        .args(args)
        .output()
        .expect("running troupe ingest");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `n` short text files in `dir`.
fn texts(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for i in 0..n {
        std::fs::write(
            dir.join(format!("note-{i:02}.txt")),
            format!("Note {i}. The lighthouse keeper logged {i} ships passing the reef at dusk."),
        )
        .expect("write");
    }
}

/// The id printed for each file name: (name, id).
fn printed(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|l| {
            let (id, path) = l.split_once('\t').expect("id<TAB>path");
            let name = Path::new(path).file_name().expect("name");
            (name.to_string_lossy().into_owned(), id.to_owned())
        })
        .collect()
}

fn status(base: &str, id: &str) -> Value {
    let (code, doc) = call("GET", &format!("{base}/v1/documents/{id}"), "", b"");
    assert_eq!(code, 200, "{doc}");
    doc
}

#[test]
fn ingest_follows_the_event_stream_and_reports_each_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Child::pipeline(&dir.path().join("data"), &[], &[]);
    let base = format!("http://{}", up.addr);
    let folder = dir.path().join("folder");
    texts(&folder, 7);
    std::fs::write(folder.join("broken.pdf"), b"%PDF-1.4 nothing else").expect("write");
    let (ok, stdout, stderr) = ingest(
        &base,
        &["--concurrency", "3", folder.to_str().expect("utf-8")],
    );
    assert!(!ok, "a failed document fails the command: {stderr}");
    assert!(
        !stderr.contains("asking for each document"),
        "the stream was followed: {stderr}"
    );
    assert!(stderr.contains("7 of 8 document(s) indexed in"), "{stderr}");
    let failure = stderr
        .lines()
        .find(|l| l.contains("broken.pdf"))
        .unwrap_or_else(|| panic!("broken.pdf reported: {stderr}"));
    assert!(
        failure.contains("failed") && failure.contains("corrupt"),
        "{failure}"
    );
    let ids = printed(&stdout);
    assert_eq!(
        ids.len(),
        8,
        "every accepted file printed, in order: {stdout}"
    );
    let mut names: Vec<&str> = ids.iter().map(|(n, _)| n.as_str()).collect();
    let sorted = {
        let mut s = names.clone();
        s.sort_unstable();
        s
    };
    assert_eq!(names, sorted, "printed in the files' order");
    names.dedup();
    assert_eq!(names.len(), 8);
    // Settled when the command says so: the records already show it.
    for (name, id) in &ids {
        let doc = status(&base, id);
        let want = if name == "broken.pdf" {
            "failed"
        } else {
            "indexed"
        };
        assert_eq!(doc["status"], want, "{name}: {doc}");
        assert_eq!(doc["name"], name.as_str(), "{doc}");
    }
    drop(up);
}

#[test]
fn without_a_stream_ingest_asks_for_each_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No streams served: `GET /v1/events` answers 501, as on AWS Lambda.
    let up = Child::pipeline(&dir.path().join("data"), &["--max-event-streams", "0"], &[]);
    let base = format!("http://{}", up.addr);
    let folder = dir.path().join("folder");
    texts(&folder, 3);
    let (ok, stdout, stderr) = ingest(&base, &[folder.to_str().expect("utf-8")]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("asking for each document instead"),
        "{stderr}"
    );
    assert!(stderr.contains("3 of 3 document(s) indexed in"), "{stderr}");
    for (name, id) in printed(&stdout) {
        assert_eq!(status(&base, &id)["status"], "indexed", "{name}");
    }
    // Nothing there: a clear error, nothing sent.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let (ok, _, stderr) = ingest(&base, &[empty.to_str().expect("utf-8")]);
    assert!(!ok && stderr.contains("no files to ingest"), "{stderr}");
    drop(up);
}
