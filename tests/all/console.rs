//! The web console (`functions/console`) as its users meet it: the repository's
//! pipeline under `troupe up` with the real model and authentication required, driven
//! by a real headless Chromium (Debian's, through Playwright:
//! `tests/browser/console_test.py`, set up by `scripts/setup-browser.sh`). Screenshots of
//! each step land in `<target>/tmp/console-screens`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use troupe_tests::{Child, repo_root, request};

/// The whole browser run, bounded (it takes well under a minute when healthy).
const BROWSER_LIMIT: Duration = Duration::from_secs(240);

/// The Python that has Playwright and axe-core, installed first if need be.
fn browser_python() -> PathBuf {
    let status = Command::new(repo_root().join("scripts/setup-browser.sh"))
        .status()
        .expect("running scripts/setup-browser.sh");
    assert!(status.success(), "scripts/setup-browser.sh failed");
    let venv = std::env::var_os("TROUPE_BROWSER_ENV").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/troupe-tools/browser")
        },
        PathBuf::from,
    );
    venv.join("bin/python")
}

/// A write key of tenant `default`, created before the host starts: authentication
/// is on from then on.
fn create_key(data: &std::path::Path) -> String {
    troupe_tests::create_key(data, &[], "default", "write")
}

#[test]
fn the_console_serves_its_files_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    create_key(&data);
    let host = Child::pipeline(&data, &["--no-embeddings"], &[]);
    let base = format!("http://{}", host.addr);
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
    ] {
        // No credential: the console itself is public, its data is not.
        let r = request("GET", &format!("{base}{path}"), &[], b"");
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let header = |name: &str| r.header(name).unwrap_or_default().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {r:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        let etag = header("etag");
        let again = request(
            "GET",
            &format!("{base}{path}"),
            &[("if-none-match", &etag)],
            b"",
        );
        assert_eq!(again.status, 304, "{path}: {again:?}");
    }
    assert_eq!(
        request("GET", &format!("{base}/console/nope.js"), &[], b"").status,
        404
    );
    assert_eq!(
        request("GET", &format!("{base}/v1/documents"), &[], b"").status,
        401
    );
}

#[test]
fn the_console_in_a_real_browser() {
    let python = browser_python();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = create_key(&data);
    let host = Child::pipeline(&data, &[], &[]);
    let screens = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screens");
    let _ = std::fs::remove_dir_all(&screens);
    println!("screenshots: {}", screens.display());
    let mut browser = Command::new(&python)
        .arg(repo_root().join("tests/browser/console_test.py"))
        .arg("--url")
        .arg(format!("http://{}", host.addr))
        .arg("--key")
        .arg(&key)
        .arg("--screens")
        .arg(&screens)
        .spawn()
        .expect("running tests/browser/console_test.py");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = browser.try_wait().expect("waiting for the browser test") {
            break status;
        }
        if start.elapsed() > BROWSER_LIMIT {
            let _ = browser.kill();
            panic!(
                "the browser test ran past {BROWSER_LIMIT:?} (screenshots in {})",
                screens.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success(),
        "the console's browser test failed (screenshots in {})",
        screens.display()
    );
}
