//! Manifest loading and validation.

use super::*;

fn write(dir: &Path, text: &str) -> PathBuf {
    std::fs::write(dir.join("hello.wasm"), b"\0asm").unwrap();
    let p = dir.join("spin.toml");
    std::fs::write(&p, text).unwrap();
    p
}

const GOOD: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
greeting = { default = "hi" }
[[trigger.http]]
route = "/hello/..."
component = "hello"
[[trigger.queue]]
topic = "t.v1"
component = "hello"
max_deliveries = 2
[[trigger.cron]]
schedule = "*/5 * * * *"
component = "hello"
[component.hello]
source = "hello.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:*"]
variables = { message = "{{ greeting }} there" }
[component.hello.tool.troupe]
timeout_ms = 250
memory_limit_mb = 16
max_concurrency = 2
"#;

#[test]
fn loads_a_full_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::load(&write(dir.path(), GOOD)).unwrap();
    let c = &app.components["hello"];
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert_eq!(c.memory_limit, 16 << 20);
    assert_eq!(c.variables["message"], "hi there");
    assert_eq!(app.route("/hello/x"), Some("hello"));
    assert_eq!(app.route("/hellox"), None);
    assert_eq!(app.subscriptions[0].subscription.policy.max_deliveries, 2);
    assert_eq!(app.cron.len(), 1);
}

#[test]
fn malformed_toml_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        &GOOD.replace("route = \"/hello/...\"", "rout = \"/hello\""),
    );
    let err = App::load(&p).unwrap_err().to_string();
    assert!(err.contains("spin.toml"), "{err}");
    assert!(err.contains("rout"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[test]
fn missing_component_file_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        &GOOD.replace("source = \"hello.wasm\"", "source = \"gone.wasm\""),
    );
    let err = App::load(&p).unwrap_err().to_string();
    assert!(err.contains("component.hello.source"), "{err}");
    assert!(err.contains("gone.wasm"), "{err}");
}

#[test]
fn bad_values_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, field) in [
        (
            "max_deliveries = 2",
            "max_deliveries = 0",
            "trigger.queue[0].max_deliveries",
        ),
        ("*/5 * * * *", "every tuesday", "trigger.cron[0].schedule"),
        (
            "http://127.0.0.1:*",
            "127.0.0.1",
            "component.hello.allowed_outbound_hosts",
        ),
        (
            "component = \"hello\"\nmax",
            "component = \"nope\"\nmax",
            "trigger.queue[0].component",
        ),
        (
            "{{ greeting }}",
            "{{ missing }}",
            "component.hello.variables.message",
        ),
        (
            "max_deliveries = 2",
            "visibility_timeout_ms = 250",
            "trigger.queue[0].visibility_timeout_ms",
        ),
        (
            "max_concurrency = 2",
            "max_concurrency = 5000",
            "component.hello.tool.troupe.max_concurrency",
        ),
    ] {
        let p = write(dir.path(), &GOOD.replacen(from, to, 1));
        let err = App::load(&p).unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    }
}

#[test]
fn outbound_rules_match_scheme_host_and_port() {
    let r = OutboundRule::parse("http://127.0.0.1:*").unwrap();
    assert!(r.allows("http", "127.0.0.1", 8080));
    assert!(!r.allows("https", "127.0.0.1", 8080));
    assert!(!r.allows("http", "example.com", 80));
    let r = OutboundRule::parse("https://*.example.com").unwrap();
    assert!(r.allows("https", "api.example.com", 443));
    assert!(!r.allows("https", "example.com", 443));
    assert!(!r.allows("https", "api.example.com", 8443));
}

#[test]
fn body_limits_and_stream_pools_are_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::load(&write(dir.path(), GOOD)).unwrap();
    let c = &app.components["hello"];
    assert_eq!((c.max_body_bytes, c.max_streams), (1 << 20, 0));
    let with = |extra: &str| {
        GOOD.replace(
            "max_concurrency = 2",
            &format!("max_concurrency = 2\n{extra}"),
        )
        .replace(
            "greeting = { default = \"hi\" }",
            "greeting = { default = \"hi\" }\nmax_upload = { default = \"5000\" }",
        )
    };
    let app = App::load(&write(
        dir.path(),
        &with("max_body_bytes = \"{{ max_upload }}\"\nmax_streams = 8"),
    ))
    .unwrap();
    let c = &app.components["hello"];
    assert_eq!((c.max_body_bytes, c.max_streams), (5000, 8));
    let app = App::load(&write(dir.path(), &with("max_body_bytes = 123"))).unwrap();
    assert_eq!(app.components["hello"].max_body_bytes, 123);
    for (bad, says) in [
        ("max_body_bytes = \"{{ greeting }}\"", "not a whole number"),
        ("max_body_bytes = 0", "must be 1"),
        ("max_body_bytes = -5", "negative"),
        ("max_streams = 100000", "max_streams"),
    ] {
        let err = App::load(&write(dir.path(), &with(bad)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
        assert!(err.contains("tool.troupe"), "{bad}: {err}");
    }
}

#[test]
fn memory_and_time_limits_may_name_variables() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace(
            "greeting = { default = \"hi\" }",
            "greeting = { default = \"hi\" }\nmem = { default = \"48\" }\nlimit = { default = \"1500\" }",
        )
        .replace("timeout_ms = 250", "timeout_ms = \"{{ limit }}\"")
        .replace("memory_limit_mb = 16", "memory_limit_mb = \"{{ mem }}\"");
    let app = App::load(&write(dir.path(), &text)).unwrap();
    let c = &app.components["hello"];
    assert_eq!(c.memory_limit, 48 << 20);
    assert_eq!(c.timeout, Duration::from_millis(1500));
    for (bad, says) in [
        (
            "memory_limit_mb = \"{{ greeting }}\"",
            "not a whole number of MiB",
        ),
        ("memory_limit_mb = 5000", "must be 1..=4096"),
        ("memory_limit_mb = 0", "must be 1..=4096"),
        ("memory_limit_mb = \"{{ nope }}\"", "does not define"),
    ] {
        let err = App::load(&write(
            dir.path(),
            &GOOD.replace("memory_limit_mb = 16", bad),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(says), "{bad}: {err}");
        assert!(err.contains("memory_limit_mb"), "{bad}: {err}");
    }
    let err = App::load(&write(
        dir.path(),
        &GOOD.replace("timeout_ms = 250", "timeout_ms = 0"),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("timeout_ms"), "{err}");
}

#[test]
fn a_variable_required_by_a_set_one_must_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let with = |urls: &str, secret: &str| {
        GOOD.replace(
            "greeting = { default = \"hi\" }",
            &format!(
                "greeting = {{ default = \"hi\" }}\nhooks_test_urls = {{ default = \"{urls}\" }}\nhooks_test_secret = {{ default = \"{secret}\" }}"
            ),
        )
        .replace(
            "variables = { message = \"{{ greeting }} there\" }",
            "variables = { message = \"{{ greeting }} there\", urls = \"{{ hooks_test_urls }}\", secret = \"{{ hooks_test_secret }}\" }",
        )
        .replace(
            "max_concurrency = 2",
            "max_concurrency = 2\nvariables_require = { urls = [\"secret\"] }",
        )
    };
    // Set together, or neither: fine.
    App::load(&write(dir.path(), &with("http://h/x", "s"))).unwrap();
    App::load(&write(dir.path(), &with("", ""))).unwrap();
    // A URL without a secret stops the load, naming the field and the fix.
    let err = App::load(&write(dir.path(), &with("http://h/x", " ")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("component.hello.variables.secret")
            && err.contains("`urls` is set and requires it")
            && err.contains("TROUPE_VARIABLE_HOOKS_TEST_SECRET"),
        "{err}"
    );
    // A rule naming an undefined variable is a manifest error too.
    let typo = with("", "").replace("urls = [\"secret\"]", "urls = [\"secrte\"]");
    let err = App::load(&write(dir.path(), &typo))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("variables_require") && err.contains("`secrte`"),
        "{err}"
    );
}

const GRANTED: &str = r#"
spin_manifest_version = 2
[application]
name = "t"
[application.tool.troupe]
buckets = ["{{ archive }}"]
topics = ["t.outside"]
[variables]
bucket = { default = "documents" }
archive = { default = "archive" }
[[trigger.blob]]
bucket = "documents"
component = "hello"
[[trigger.queue]]
topic = "t.done"
component = "hello"
[component.hello]
source = "hello.wasm"
[component.hello.tool.troupe.grants]
blobs = ["{{ bucket }}/chunks/", "archive"]
state = ["doc/", "*"]
event_logs = "read"
publish = ["t.done", "troupe.embedding.requested", "t.outside"]
vectors = "write"
embeddings = true
[component.other]
source = "hello.wasm"
"#;

#[test]
fn grants_are_resolved_and_nothing_is_granted_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::load(&write(dir.path(), GRANTED)).unwrap();
    let g = &app.components["hello"].grants;
    assert_eq!(
        g.blobs,
        vec![
            BlobGrant {
                bucket: "documents".into(),
                prefix: "chunks/".into()
            },
            BlobGrant {
                bucket: "archive".into(),
                prefix: String::new()
            },
        ]
    );
    assert_eq!(g.state, vec!["doc/".to_owned(), String::new()]);
    assert_eq!(g.event_logs, Access::Read);
    assert!(g.publishes("t.done") && g.publishes("troupe.embedding.requested"));
    assert!(g.publishes("t.outside") && !g.publishes("t.elsewhere"));
    assert_eq!(g.vectors, Access::Write);
    assert!(g.embeddings);
    assert_eq!(app.components["other"].grants, Grants::default());
}

#[test]
fn a_grant_naming_what_does_not_exist_is_refused_with_its_field() {
    let dir = tempfile::tempdir().unwrap();
    for (from, to, field, says) in [
        (
            "\"{{ bucket }}/chunks/\"",
            "\"scratch/chunks/\"",
            "component.hello.tool.troupe.grants.blobs[0]",
            "bucket `scratch`",
        ),
        (
            "\"{{ bucket }}/chunks/\"",
            "\"Bad_Bucket\"",
            "component.hello.tool.troupe.grants.blobs[0]",
            "Bad_Bucket",
        ),
        (
            "publish = [\"t.done\"",
            "publish = [\"t.nobody\"",
            "component.hello.tool.troupe.grants.publish[0]",
            "no [[trigger.queue]] subscribes",
        ),
        (
            "state = [\"doc/\"",
            "state = [\"\"",
            "component.hello.tool.troupe.grants.state[0]",
            "every key",
        ),
        (
            "vectors = \"write\"",
            "vectors = \"all\"",
            "component.hello.tool.troupe.grants.vectors",
            "\"read\" or \"write\"",
        ),
        (
            "embeddings = true",
            "embedding = true",
            "component.hello.tool.troupe",
            "embedding",
        ),
        (
            "buckets = [\"{{ archive }}\"]",
            "buckets = [\"{{ nope }}\"]",
            "application.tool.troupe.buckets[0]",
            "nope",
        ),
    ] {
        let text = GRANTED.replacen(from, to, 1);
        assert_ne!(text, GRANTED, "{from} is in the fixture");
        let err = App::load(&write(dir.path(), &text))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{field}: {err}");
        assert!(err.contains(says), "{says}: {err}");
    }
}

#[test]
fn a_queue_trigger_takes_one_topic_or_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::load(&write(dir.path(), GOOD)).unwrap();
    assert_eq!(app.subscriptions[0].subscription.topics, ["t.v1"]);
    assert!(app.subscriptions[0].replaces.is_empty());

    let listed = GOOD.replace(
        "topic = \"t.v1\"",
        "topics = [\"t.v1\", \"u.v1\"]\nreplaces = [\"hello-t\", \"hello-u\"]",
    );
    let app = App::load(&write(dir.path(), &listed)).unwrap();
    let t = &app.subscriptions[0];
    assert_eq!(t.subscription.name, "hello");
    assert_eq!(t.subscription.topics, ["t.v1", "u.v1"]);
    assert!(t.subscription.takes("u.v1") && !t.subscription.takes("v.v1"));
    assert_eq!(t.replaces, ["hello-t", "hello-u"]);
}

#[test]
fn topic_lists_and_replaced_subscriptions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let queue = "topic = \"t.v1\"";
    for (to, field, says) in [
        (
            "topic = \"t.v1\"\ntopics = [\"u.v1\"]",
            "trigger.queue[0].topics",
            "together with `topic`",
        ),
        ("topics = []", "trigger.queue[0].topics", "is empty"),
        (
            "topics = [\"t.v1\", \" \"]",
            "trigger.queue[0].topics[1]",
            "must not be empty",
        ),
        (
            "topic = \"\"",
            "trigger.queue[0].topic",
            "must not be empty",
        ),
        (
            "topics = [\"t.v1\", \"u.v1\", \"t.v1\"]",
            "trigger.queue[0].topics[2]",
            "listed twice",
        ),
        (
            "topics = [\"t.v1 u.v1\"]",
            "trigger.queue[0].topics[0]",
            "whitespace",
        ),
        (
            "subscription = \"s\"",
            "trigger.queue[0].topic",
            "is missing",
        ),
        (
            "topic = \"t.v1\"\nreplaces = [\"old\", \"\"]",
            "trigger.queue[0].replaces[1]",
            "must not be empty",
        ),
        (
            "topic = \"t.v1\"\nreplaces = [\"hello\"]",
            "trigger.queue[0].replaces[0]",
            "still in use",
        ),
    ] {
        let err = App::load(&write(dir.path(), &GOOD.replacen(queue, to, 1)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("spin.toml") && err.contains(&format!("`{field}`")) && err.contains(says),
            "{to}: {err}"
        );
    }
    // Two triggers may not take over the same old subscription.
    let twice = GOOD
        .replacen(queue, "topic = \"t.v1\"\nreplaces = [\"old\"]", 1)
        .replacen(
            "[[trigger.cron]]",
            "[[trigger.queue]]\ntopic = \"u.v1\"\ncomponent = \"hello\"\nsubscription = \"b\"\nreplaces = [\"old\"]\n[[trigger.cron]]",
            1,
        );
    let err = App::load(&write(dir.path(), &twice))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("trigger.queue[1].replaces[0]") && err.contains("replaced twice"),
        "{err}"
    );
}

#[test]
fn the_root_route_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "[[trigger.queue]]",
        "[[trigger.http]]\nroute = \"/\"\ncomponent = \"hello\"\n[[trigger.queue]]",
    );
    let app = App::load(&write(dir.path(), &text)).unwrap();
    assert_eq!(app.route("/"), Some("hello"));
    assert_eq!(app.route("/favicon.ico"), None);
    assert_eq!(app.route("/hello/x"), Some("hello"));
    assert_eq!(
        app.http
            .iter()
            .find(|t| t.route.to_string() == "/")
            .map(|t| &t.route),
        Some(&Route::Exact("/".into()))
    );
}
