//! The metrics an operator pages on, end to end: `troupe up` with the repository's
//! `spin.toml` and the model, scraped on `/metrics` while documents are indexed and
//! failed, every value asserted; and the Grafana dashboard (`infra/grafana`), each of
//! whose queries must name only metrics that scrape exports.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use troupe_tests::api::{settle, upload};
use troupe_tests::stack::Stack;
use troupe_tests::{Child, call, get, repo_root};

/// The value of the sample line starting with `prefix` (the name and its labels as the
/// exposition writes them); `None` when there is none.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a number"))
}

fn scrape(base: &str) -> String {
    let (status, text) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200, "{text}");
    text
}

/// Scrapes until `done` holds, for at most `within`; returns that scrape.
fn scrape_until(base: &str, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = scrape(base);
        if done(&text) {
            return text;
        }
        assert!(start.elapsed() < within, "waited {within:?}: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every sample name a scrape can hold, from its `# TYPE` lines: a counter `c` is
/// sampled as `c_total`, a histogram `h` as `h_bucket`, `h_sum` and `h_count`, a gauge
/// under its own name. A family is described even before its first sample.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => names.extend(["bucket", "sum", "count"].map(|s| format!("{name}_{s}"))),
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// The metric names a PromQL expression selects: its identifiers once label matchers
/// (`{…}`), ranges (`[…]`), strings and grouping clauses (`by (…)`) are removed,
/// except functions and aggregations (followed by `(`) and keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &["and", "or", "unless", "offset", "bool", "inf", "nan"];
    const CLAUSES: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let mut plain = String::new();
    let mut depth = 0;
    let mut in_string = false;
    for c in expr.chars() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => plain.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            // A number, or a duration like `5m`.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next] == ' ' {
            next += 1;
        }
        if CLAUSES.contains(&word.as_str()) {
            // Skip the label list that follows.
            if chars.get(next) == Some(&'(') {
                while next < chars.len() && chars[next] != ')' {
                    next += 1;
                }
                i = next + 1;
            }
            continue;
        }
        // A function or an aggregation: `rate(`, `sum (`, `sum by (le) (`.
        let rest: String = chars[next..].iter().collect();
        let call = rest.starts_with('(')
            || CLAUSES.iter().any(|k| {
                rest.strip_prefix(k)
                    .is_some_and(|r| r.trim_start().starts_with('('))
            });
        if !call && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
            names.insert(word);
        }
    }
    names
}

#[test]
fn promql_metric_names_leave_out_functions_labels_and_ranges() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(troupe_http_request_duration_seconds_bucket{code=~"5..", route!="x"}[$__rate_interval]))) / on (route) group_left sum without (code) (troupe_queue_depth offset 5m) * 60 and up"#,
    );
    assert_eq!(
        names,
        [
            "troupe_http_request_duration_seconds_bucket",
            "troupe_queue_depth",
            "up"
        ]
        .map(str::to_owned)
        .into()
    );
}

#[test]
fn the_metrics_an_operator_pages_on_move_as_documents_are_indexed_and_failed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::local(dir.path());
    // A 24 MiB cap: small documents fit, a 30 MB one cannot be read, on any delivery,
    // and is dead-lettered from `extract` with reason `memory_cap`.
    let up = Child::pipeline_on(
        &stack,
        &[],
        &[("TROUPE_VARIABLE_EXTRACT_MEMORY_LIMIT_MB", "24".into())],
    );
    let base = format!("http://{}", up.addr);
    let before = scrape(&base);
    for status in ["indexed", "failed"] {
        let line = format!(r#"troupe_documents_total{{status="{status}"}}"#);
        assert_eq!(sample(&before, &line), None, "{before}");
    }

    // Requests the API refuses, each counted under its route and code.
    assert_eq!(
        call("GET", &format!("{base}/v1/documents/nope"), "", b"").0,
        404
    );
    let refused = call(
        "POST",
        &format!("{base}/v1/documents?name=a.png"),
        "image/png",
        b"\x89PNG",
    );
    assert_eq!(refused.0, 415, "{}", refused.1);
    assert_eq!(get(&format!("{base}/no/such/route/42")).0, 404);

    let started = Instant::now();
    let fixture = |name: &str| {
        std::fs::read(repo_root().join("tests/fixtures/pipeline").join(name)).expect("fixture")
    };
    let indexed = [
        upload(
            &base,
            "lighthouse.txt",
            "text/plain",
            &fixture("lighthouse.txt"),
        ),
        upload(
            &base,
            "sourdough.md",
            "text/markdown",
            &fixture("sourdough.md"),
        ),
    ];
    let big = "a few words of plain text, over and over again.\n".repeat(30 << 20 >> 6);
    let failed = upload(&base, "big.txt", "text/plain", big.as_bytes());
    for id in &indexed {
        let doc = settle(&base, id, Duration::from_secs(180));
        assert_eq!(doc["status"], "indexed", "{doc}");
    }
    let doc = settle(&base, &failed, Duration::from_secs(90));
    assert_eq!(doc["status"], "failed", "{doc}");
    let took = started.elapsed().as_secs_f64();

    // Counted as the final event is published, which the status shown follows; the
    // dead letter is counted as the queue takes it, just after its notice.
    let text = scrape_until(&base, Duration::from_secs(30), |t| {
        sample(t, r#"troupe_documents_total{status="failed"}"#) == Some(1.0)
            && sample(
                t,
                r#"troupe_dead_letters_total{subscription="extract",reason="memory_cap"}"#,
            )
            .is_some()
    });
    let value = |prefix: &str| sample(&text, prefix).unwrap_or_else(|| panic!("{prefix}: {text}"));
    assert_eq!(value(r#"troupe_documents_total{status="indexed"}"#), 2.0);
    assert_eq!(value(r#"troupe_documents_total{status="failed"}"#), 1.0);
    assert_eq!(value("troupe_document_indexed_seconds_count"), 2.0);
    let latency = value("troupe_document_indexed_seconds_sum");
    assert!(
        latency > 0.0 && latency < 2.0 * took,
        "{latency} of {took}: {text}"
    );
    assert_eq!(
        value(r#"troupe_dead_letters_total{subscription="extract",reason="memory_cap"}"#),
        1.0
    );
    assert_eq!(value(r#"troupe_dlq_depth{subscription="extract"}"#), 1.0);

    let http = |method: &str, route: &str, code: u16| {
        value(&format!(
            r#"troupe_http_request_duration_seconds_count{{method="{method}",route="{route}",code="{code}"}}"#
        ))
    };
    assert_eq!(http("POST", "/v1/documents/...", 202), 3.0);
    assert_eq!(http("POST", "/v1/documents/...", 415), 1.0);
    assert_eq!(http("GET", "/v1/documents/...", 404), 1.0);
    assert_eq!(http("GET", "unmatched", 404), 1.0);
    assert_eq!(http("GET", "/metrics", 200), 1.0, "the first scrape");
    assert!(
        http("GET", "/v1/documents/...", 200) >= 3.0,
        "polled while settling"
    );
    // Route patterns only: no document id, no raw path, becomes a label.
    for raw in [indexed[0].as_str(), "/no/such/route", "nope"] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }

    // Every subscription has an age, the worker's jobs too; once every upload is
    // handled, `extract`'s queue is empty (its dead letter no longer waits in it).
    let text = scrape_until(&base, Duration::from_secs(30), |t| {
        sample(
            t,
            r#"troupe_queue_oldest_message_age_seconds{subscription="extract"}"#,
        ) == Some(0.0)
    });
    for subscription in ["extract", "inspect", "indexer", "status", "gpu-worker"] {
        let age =
            format!(r#"troupe_queue_oldest_message_age_seconds{{subscription="{subscription}"}}"#);
        let age = sample(&text, &age).unwrap_or_else(|| panic!("{age}: {text}"));
        assert!((0.0..took + 60.0).contains(&age), "{subscription}: {age}");
    }

    // The worker, in the same process: its jobs, their wait in the queue, its tokens.
    let jobs = sample(&text, r#"troupe_embed_jobs_total{outcome="ok"}"#).unwrap_or(0.0);
    assert!(jobs >= 2.0, "one job a document at least: {text}");
    assert_eq!(
        sample(&text, "troupe_embed_job_wait_seconds_count"),
        Some(jobs)
    );
    assert!(sample(&text, "troupe_embed_tokens_total").unwrap_or(0.0) > 0.0);

    // The dashboard plots only what Troupe exports.
    let names = exported(&text);
    let path = repo_root().join("infra/grafana/troupe.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard"))
            .expect("the dashboard is JSON");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let used = metric_names(expr);
            assert!(!used.is_empty(), "{expr} names no metric");
            for name in used {
                assert!(
                    names.contains(&name),
                    "panel {}: {name} is not exported by Troupe ({names:?})",
                    panel["title"]
                );
            }
            queries += 1;
        }
    }
    assert!(queries >= 10, "{queries} queries");
}
