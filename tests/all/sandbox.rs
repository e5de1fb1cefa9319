//! The sandbox: runaway components are stopped at their timeout or memory cap while
//! the host keeps serving, and their events judged: a trap or a memory cap is
//! dead-lettered at once, a timeout retried once (each announced on the dead-letter
//! topic first); outbound HTTP reaches only listed hosts.

use std::time::{Duration, Instant};

use troupe_core::queue::{DEAD_LETTERED_TOPIC, DEAD_LETTERED_TYPE};
use troupe_core::{DeadLetters, DeliveryPolicy, Event, Message, Queue, Subscription};
use troupe_tests::{InProcess, eventually, get};

const APP: &str = r#"
[[trigger.http]]
route = "/hello"
component = "hello"
[[trigger.http]]
route = "/outbound"
component = "outbound"
[[trigger.queue]]
topic = "spin.v1"
component = "spin"
max_deliveries = 2
backoff_base_ms = 10
backoff_max_ms = 10
[[trigger.queue]]
topic = "hog.v1"
component = "hog"
max_deliveries = 2
backoff_base_ms = 10
backoff_max_ms = 10
[[trigger.http]]
route = "/slow"
component = "slow"
[[trigger.queue]]
topic = "sleepy.v1"
component = "sleepy"
max_deliveries = 2
backoff_base_ms = 10
backoff_max_ms = 10
[component.hello]
source = "{dist}/hello.wasm"
[component.slow]
source = "{dist}/hello.wasm"
[component.slow.tool.troupe]
timeout_ms = 300
[component.sleepy]
source = "{dist}/recorder.wasm"
variables = { delay_ms = "5000" }
[component.sleepy.tool.troupe]
timeout_ms = 300
[component.sleepy.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
[component.outbound]
source = "{dist}/outbound.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:*"]
[[trigger.http]]
route = "/anywhere"
component = "anywhere"
[component.anywhere]
source = "{dist}/outbound.wasm"
allowed_outbound_hosts = ["http://*:*", "https://*:*"]
[component.spin]
source = "{dist}/spin_loop.wasm"
[component.spin.tool.troupe]
timeout_ms = 400
[component.hog]
source = "{dist}/hog.wasm"
[component.hog.tool.troupe]
memory_limit_mb = 32
[[trigger.queue]]
topic = "batch.v1"
component = "batcher"
batch_size = 3
max_deliveries = 5
backoff_base_ms = 10
backoff_max_ms = 10
[component.batcher]
source = "{dist}/recorder.wasm"
[component.batcher.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
"#;

/// Subscribes a queue to the dead-letter notices, so a test can read them.
async fn watch_notices(host: &InProcess) {
    host.local
        .queue
        .subscribe(&Subscription {
            name: "notices".into(),
            topics: vec![DEAD_LETTERED_TOPIC.into()],
            subject_prefix: None,
            policy: DeliveryPolicy::default(),
        })
        .await
        .unwrap();
}

/// The dead-letter notices published so far, as JSON data.
async fn notices(host: &InProcess) -> Vec<serde_json::Value> {
    let got = host
        .local
        .queue
        .receive("notices", 100, Duration::from_millis(200))
        .await
        .unwrap();
    got.iter()
        .map(|d| {
            let e = Event::from_json(&d.body).unwrap();
            assert_eq!(e.ty, DEAD_LETTERED_TYPE);
            serde_json::from_slice(&e.data).unwrap()
        })
        .collect()
}

/// Waits (up to 15 s) until `queue` has dead letters; returns them.
async fn dead_lettered(host: &InProcess, queue: &str, what: &str) -> Vec<troupe_core::DeadLetter> {
    eventually(Duration::from_secs(15), async || {
        let d = host.local.queue.dead_letters(queue, 10).await.unwrap();
        (!d.is_empty()).then_some(d)
    })
    .await
    .unwrap_or_else(|| panic!("{what}"))
}

async fn hello_is_served_meanwhile(base: &str, for_at_least: Duration) {
    let start = Instant::now();
    let mut served = 0;
    while start.elapsed() < for_at_least {
        let url = format!("{base}/hello");
        let t = Instant::now();
        let (status, _) = tokio::task::spawn_blocking(move || get(&url))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "hello took {:?} while a guest misbehaved",
            t.elapsed()
        );
        served += 1;
    }
    assert!(served > 3, "served only {served} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_loop_is_stopped_at_its_timeout_then_dead_lettered() {
    let host = InProcess::start(APP).await;
    watch_notices(&host).await;
    let base = format!("http://{}", host.addr);
    let e = Event::new("/test", "test.spin.v1", &serde_json::json!({}));
    host.local
        .queue
        .publish("spin.v1", &[Message::from_event(&e)])
        .await
        .unwrap();
    hello_is_served_meanwhile(&base, Duration::from_millis(600)).await;
    let dead = dead_lettered(&host, "spin", "the looping event is dead-lettered").await;
    assert_eq!(dead[0].id, e.id);
    assert_eq!(dead[0].reason, "timeout");
    assert_eq!(dead[0].deliveries, 2, "retried once, then dead-lettered");
    let notices = notices(&host).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["reason"], "timeout");
    assert_eq!(notices[0]["stage"], "spin");
    assert_eq!(notices[0]["event_id"], e.id.as_str());
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{:?}",
        dead[0].last_error
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_is_stopped_at_the_memory_cap() {
    let host = InProcess::start(APP).await;
    watch_notices(&host).await;
    let base = format!("http://{}", host.addr);
    let e = Event::new("/test", "test.hog.v1", &serde_json::json!({}));
    host.local
        .queue
        .publish("hog.v1", &[Message::from_event(&e)])
        .await
        .unwrap();
    hello_is_served_meanwhile(&base, Duration::from_millis(300)).await;
    let dead = dead_lettered(&host, "hog", "the hog's event is dead-lettered").await;
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("memory cap of 32 MiB"),
        "{:?}",
        dead[0].last_error
    );
    // Deterministic: not retried (max_deliveries is 2).
    assert_eq!(dead[0].reason, "memory_cap");
    assert_eq!(dead[0].deliveries, 1, "dead-lettered on its first delivery");
    let notices = notices(&host).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["reason"], "memory_cap");
    assert_eq!(notices[0]["queue"], "hog");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_event_is_dead_lettered_alone_and_its_batch_neighbours_settle() {
    let host = InProcess::start(APP).await;
    watch_notices(&host).await;
    let event = |outcome: &str| {
        let mut e = Event::new(
            "/test",
            "test.batch.v1",
            &serde_json::json!({ "outcome": outcome }),
        )
        .with_subject("doc-1");
        e.tenant = Some("acme".into());
        e
    };
    let (good, bad, other) = (event("ok"), event("trap"), event("ok"));
    host.local
        .queue
        .publish(
            "batch.v1",
            &[good.clone(), bad.clone(), other.clone()].map(|e| Message::from_event(&e)),
        )
        .await
        .unwrap();
    let dead = dead_lettered(&host, "batcher", "the trapping event is dead-lettered").await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    // Message ids are event ids within their tenant.
    assert_eq!(dead[0].id, format!("acme/{}", bad.id));
    assert_eq!(dead[0].reason, "trap");
    assert_eq!(dead[0].deliveries, 1, "a trap is not retried");
    let depth = eventually(Duration::from_secs(10), async || {
        let d = host.local.queue.depth("batcher").await.unwrap();
        (d.ready == 0 && d.in_flight == 0).then_some(d)
    })
    .await
    .expect("the neighbours are acked");
    assert_eq!(depth.dead, 1);
    let notices = notices(&host).await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0]["reason"], "trap");
    assert_eq!(notices[0]["stage"], "batcher");
    assert_eq!(notices[0]["event_type"], "test.batch.v1");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_only_listed_hosts() {
    let host = InProcess::start(APP).await;
    let port = host.addr.port();
    let base = format!("http://{}", host.addr);
    let allowed = format!("{base}/outbound?url=http://127.0.0.1:{port}/hello");
    let (status, body) = tokio::task::spawn_blocking(move || get(&allowed))
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "upstream 200: Hello from Troupe: /hello\n")
    );
    let denied = format!("{base}/outbound?url=http://localhost:{port}/hello");
    let (status, body) = tokio::task::spawn_blocking(move || get(&denied))
        .await
        .unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("outbound refused") && body.contains("Denied"),
        "{body}"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_rule_reaches_no_loopback_link_local_or_private_address() {
    let host = InProcess::start(APP).await;
    let port = host.addr.port();
    let base = format!("http://{}", host.addr);
    // Each is refused after resolution, before any connection is made.
    for target in [
        format!("http://127.0.0.1:{port}/hello"),
        format!("http://localhost:{port}/hello"),
        format!("http://[::1]:{port}/hello"),
        format!("http://[::ffff:127.0.0.1]:{port}/hello"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://192.168.0.1/".to_owned(),
        "http://0.0.0.0/".to_owned(),
        "https://127.0.0.1/".to_owned(),
    ] {
        let url = format!("{base}/anywhere?url={target}");
        let (status, body) = tokio::task::spawn_blocking(move || get(&url))
            .await
            .unwrap();
        assert_eq!(status, 502, "{target}: {body}");
        assert!(
            body.contains("outbound refused") && body.contains("DestinationIpProhibited"),
            "{target}: {body}"
        );
    }
    // A rule that names the address still reaches it.
    let url = format!("{base}/outbound?url=http://127.0.0.1:{port}/hello");
    let (status, _) = tokio::task::spawn_blocking(move || get(&url))
        .await
        .unwrap();
    assert_eq!(status, 200);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_blocked_on_the_host_is_stopped_at_its_timeout() {
    let host = InProcess::start(APP).await;
    // HTTP: the guest sleeps 5 s; the client gets 504 at the 300 ms limit.
    let url = format!("http://{}/slow?sleep_ms=5000", host.addr);
    let t = Instant::now();
    let (status, body) = tokio::task::spawn_blocking(move || get(&url))
        .await
        .unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("\"timeout\""), "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    // Events: the sleeping handler's event is retried, then dead-lettered.
    let e = Event::new("/test", "test.sleepy.v1", &serde_json::json!({}));
    host.local
        .queue
        .publish("sleepy.v1", &[Message::from_event(&e)])
        .await
        .unwrap();
    let dead = dead_lettered(
        &host,
        "sleepy",
        "the sleeping handler's event is dead-lettered",
    )
    .await;
    assert_eq!(dead[0].deliveries, 2);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "two 300 ms attempts must not take {:?} (each sleeps 5 s)",
        t.elapsed()
    );
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("timed out"),
        "{:?}",
        dead[0].last_error
    );
    host.shutdown().await;
}

/// A component granted only `documents/scratch/default/mine/`, state
/// `scratch/default/mine/` and the topic `t.allowed`, which tries every import.
const TRESPASS: &str = r#"
[application.tool.troupe]
buckets = ["documents"]
topics = ["t.allowed", "t.other"]
[[trigger.http]]
route = "/trespass"
component = "trespass"
[component.trespass]
source = "{dist}/trespass.wasm"
[component.trespass.tool.troupe.grants]
blobs = ["documents/scratch/default/mine/"]
state = ["scratch/default/mine/"]
publish = ["t.allowed"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_reaches_only_what_it_was_granted() {
    use troupe_core::{Blobs, State, VectorRecord, Vectors};
    let host = InProcess::start(TRESPASS).await;
    let l = &host.local;
    l.blobs
        .put("documents", "docs/default/secret", b"secret")
        .await
        .unwrap();
    l.blobs
        .put("archive", "scratch/default/mine/own", b"archived")
        .await
        .unwrap();
    l.blobs
        .put("documents", "scratch/default/theirs", b"t")
        .await
        .unwrap();
    l.state
        .put("scratch/default/theirs", b"t", None)
        .await
        .unwrap();
    l.state
        .put("webhook/default/secret", b"claim", None)
        .await
        .unwrap();
    let logged = Event::new("/test", "t.v1", &serde_json::json!({}));
    l.state.append_event("default/doc", &logged).await.unwrap();
    let record = VectorRecord {
        tenant: "default".into(),
        document: "doc".into(),
        chunk: "0".into(),
        model: "m".into(),
        vector: vec![1.0, 0.0],
        text: "x".into(),
    };
    l.vectors.upsert(&[record]).await.unwrap();
    for topic in ["t.allowed", "t.other"] {
        l.queue
            .subscribe(&Subscription {
                name: topic.replace('.', "-"),
                topics: vec![topic.into()],
                subject_prefix: None,
                policy: DeliveryPolicy::default(),
            })
            .await
            .unwrap();
    }

    let url = format!("http://{}/trespass", host.addr);
    let (status, body) = tokio::task::spawn_blocking(move || get(&url))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let tried: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tried["get_scratch"]["ok"], "mine", "{tried:#}");
    for granted in ["put_scratch", "state_scratch", "publish_allowed"] {
        assert!(tried[granted].get("ok").is_some(), "{granted}: {tried:#}");
    }
    // Listings wider than the grants are narrowed to them.
    assert_eq!(
        tried["list_bucket"]["ok"],
        serde_json::json!(["scratch/default/mine/own"])
    );
    assert_eq!(
        tried["list_state"]["ok"],
        serde_json::json!(["scratch/default/mine/x"])
    );
    for refused in [
        "get_doc",
        "put_doc",
        "delete_doc",
        "list_docs",
        "get_other_bucket",
        "state_get",
        "state_put",
        "state_delete",
        "read_events",
        "append_event",
        "delete_events",
        "publish_other",
        "vectors_search",
        "vectors_count",
        "vectors_delete",
        "embeddings_info",
    ] {
        let why = tried[refused]["denied"]
            .as_str()
            .unwrap_or_else(|| panic!("{refused} was not denied: {}", tried[refused]));
        assert!(why.contains("component `trespass`"), "{refused}: {why}");
        assert!(
            !why.contains("acts for tenant"),
            "{refused} must be refused by its grants: {why}"
        );
    }

    // Nothing it was refused changed anything.
    let secret = l
        .blobs
        .get("documents", "docs/default/secret")
        .await
        .unwrap();
    assert_eq!(secret.as_deref(), Some(&b"secret"[..]));
    assert!(
        l.blobs
            .get("documents", "docs/default/planted")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        l.state
            .get("webhook/default/secret")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert!(l.state.get("doc/default/forged").await.unwrap().is_none());
    assert_eq!(l.state.read_events("default/doc").await.unwrap().len(), 1);
    assert_eq!(l.vectors.count("default", "doc").await.unwrap(), 1);
    assert_eq!(l.queue.depth("t-allowed").await.unwrap().ready, 1);
    assert_eq!(l.queue.depth("t-other").await.unwrap().ready, 0);
}
