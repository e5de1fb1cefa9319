//! Each trigger kind drives a real component: http, queue (with fan-out and
//! republish), blob and cron.

use std::time::Duration;

use troupe_core::{Blobs, DeadLetters, Event, Message, Queue, State};
use troupe_tests::{InProcess, eventually, get};

const APP: &str = r#"
[application.tool.troupe]
topics = ["forwarded.v1", "kv.v1"]
[[trigger.http]]
route = "/hello/..."
component = "hello"
[[trigger.queue]]
topic = "orders.v1"
component = "recorder"
subscription = "recorder-a"
backoff_base_ms = 10
backoff_max_ms = 20
max_deliveries = 2
[[trigger.queue]]
topic = "orders.v1"
component = "second"
subscription = "recorder-b"
[[trigger.blob]]
bucket = "documents"
prefix = "uploads/"
component = "blobs"
[[trigger.http]]
route = "/kv/..."
component = "kv"
[component.hello]
source = "{dist}/hello.wasm"
[component.kv]
source = "{dist}/http_state.wasm"
[component.kv.tool.troupe.grants]
state = ["kv/"]
publish = ["kv.v1"]
[component.recorder]
source = "{dist}/recorder.wasm"
variables = { forward_topic = "forwarded.v1" }
[component.recorder.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
publish = ["forwarded.v1"]
[component.second]
source = "{dist}/recorder.wasm"
[component.second.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
[component.blobs]
source = "{dist}/recorder.wasm"
[component.blobs.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
"#;

fn event(outcome: &str) -> Event {
    Event::new(
        "/test",
        "test.order.v1",
        &serde_json::json!({"outcome": outcome}),
    )
    .with_subject("order-1")
}

async fn count(host: &InProcess, id: &str) -> u64 {
    host.local
        .state
        .get(&format!("count/default/{id}"))
        .await
        .unwrap()
        .map_or(0, |e| String::from_utf8_lossy(&e.value).parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_route_serves_a_component_and_health_and_metrics_answer() {
    let host = InProcess::start(APP).await;
    let base = format!("http://{}", host.addr);
    let (status, body) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || get(&format!("{base}/hello/world"))
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "Hello from Troupe: /hello/world\n");
    let (status, body) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || get(&format!("{base}/nowhere"))
    })
    .await
    .unwrap();
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "not_found");
    let (status, body) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || get(&format!("{base}/health"))
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    for dep in ["queue", "state", "blobs"] {
        assert_eq!(health["dependencies"][dep]["status"], "ok", "{body}");
    }
    let (_, metrics) = tokio::task::spawn_blocking(move || get(&format!("{base}/metrics")))
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"troupe_invocations_total{component="hello",trigger="http",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"troupe_queue_depth{subscription="recorder-a"} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"troupe_dlq_depth{subscription="recorder-b"} 0"#),
        "{metrics}"
    );
    // Requests by the manifest's route, never the raw path.
    for line in [
        r#"troupe_http_request_duration_seconds_count{method="GET",route="/hello/...",code="200"} 1"#,
        r#"troupe_http_request_duration_seconds_count{method="GET",route="unmatched",code="404"} 1"#,
        r#"troupe_http_request_duration_seconds_count{method="GET",route="/health",code="200"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("/hello/world"), "{metrics}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_components_use_state_and_publish() {
    let host = InProcess::start(APP).await;
    host.local
        .queue
        .subscribe(&troupe_core::Subscription {
            name: "kv-watch".into(),
            topics: vec!["kv.v1".into()],
            subject_prefix: None,
            policy: Default::default(),
        })
        .await
        .unwrap();
    let url = format!("http://{}/kv/colour", host.addr);
    let (status, body) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut resp = agent.put(&url).send("teal").unwrap();
            (
                resp.status().as_u16(),
                resp.body_mut().read_to_string().unwrap(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (201, "version 1"));
    let (status, body) = tokio::task::spawn_blocking(move || get(&url))
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "teal"));
    assert_eq!(
        host.local
            .state
            .get("kv/default/colour")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"teal"
    );
    let published = host
        .local
        .queue
        .receive("kv-watch", 10, Duration::from_secs(2))
        .await
        .unwrap();
    let event = Event::from_json(&published[0].body).unwrap();
    assert_eq!(
        (event.ty.as_str(), event.subject.as_deref()),
        ("test.kv.put.v1", Some("colour"))
    );
    assert_eq!(
        event.source, "/functions/kv",
        "the host fills in the source"
    );
    assert_eq!(event.data, b"teal");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_trigger_fans_out_settles_outcomes_and_republishes() {
    let host = InProcess::start(APP).await;
    let q = &host.local.queue;
    q.subscribe(&troupe_core::Subscription {
        name: "forwarded".into(),
        topics: vec!["forwarded.v1".into()],
        subject_prefix: None,
        policy: Default::default(),
    })
    .await
    .unwrap();
    let (ok, retry, reject) = (event("ok"), event("retry"), event("reject"));
    let copies = q
        .publish(
            "orders.v1",
            &[
                Message::from_event(&ok),
                Message::from_event(&retry),
                Message::from_event(&reject),
            ],
        )
        .await
        .unwrap();
    assert_eq!(copies, 6, "two subscriptions, three events");

    // `retry` is delivered twice (max_deliveries = 2) and then dead-lettered;
    // `reject` goes to the DLQ at once.
    let dead = eventually(Duration::from_secs(20), async || {
        let dead = q.dead_letters("recorder-a", 10).await.unwrap();
        (dead.len() == 2).then_some(dead)
    })
    .await
    .expect("two dead letters in recorder-a");
    let reason = |id: &str| dead.iter().find(|d| d.id == id).map(|d| d.reason.clone());
    assert_eq!(reason(&reject.id).as_deref(), Some("asked_to_reject"));
    assert_eq!(reason(&retry.id).as_deref(), Some("max_deliveries"));
    assert_eq!(
        count(&host, &ok.id).await,
        2,
        "both subscriptions handled `ok` once"
    );
    assert_eq!(count(&host, &reject.id).await, 2);
    assert!(
        count(&host, &retry.id).await >= 3,
        "retried in recorder-a, at least once in recorder-b"
    );
    // The component republished what it saw to forwarded.v1.
    let fwd = q
        .receive("forwarded", 10, Duration::from_secs(5))
        .await
        .unwrap();
    // Handed over as the default tenant's, so republished as its (message ids are
    // event ids within their tenant).
    assert!(fwd.iter().any(|d| d.id == format!("default/{}-fwd", ok.id)));
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_trigger_fires_for_writes_under_its_prefix() {
    let host = InProcess::start(APP).await;
    host.local
        .blobs
        .put("documents", "uploads/a.txt", b"hello")
        .await
        .unwrap();
    host.local
        .blobs
        .put("documents", "elsewhere/b.txt", b"ignored")
        .await
        .unwrap();
    let seen = eventually(Duration::from_secs(10), async || {
        let log = host.local.state.read_events("default/seen").await.unwrap();
        (!log.is_empty()).then_some(log)
    })
    .await
    .expect("blob event handled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen_now = host.local.state.read_events("default/seen").await.unwrap();
    assert_eq!(seen_now.len(), 1, "only the uploads/ write triggers");
    assert_eq!(seen[0].ty, "troupe.blob.created.v1");
    assert_eq!(seen[0].subject.as_deref(), Some("uploads/a.txt"));
    let record: serde_json::Value = serde_json::from_slice(&seen[0].data).unwrap();
    assert_eq!(record["s3"]["object"]["key"], "uploads/a.txt");
    assert_eq!(record["s3"]["bucket"]["name"], "documents");
    host.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cron_trigger_ticks_on_schedule() {
    // Paused time: a minute of schedule passes at once, exactly.
    let (host, local, _dir) = troupe_tests::host_only(
        r#"
[[trigger.cron]]
schedule = "*/10 * * * * *"
component = "ticker"
[component.ticker]
source = "{dist}/recorder.wasm"
[component.ticker.tool.troupe.grants]
state = ["count/"]
event_logs = "write"
"#,
    )
    .await;
    let shared = host.shared().clone();
    let trigger = shared.app.cron[0].clone();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(troupe_host::triggers::cron::run(shared, trigger, stopped));
    tokio::time::sleep(Duration::from_secs(65)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    let log = local.state.read_events("default/seen").await.unwrap();
    // Ticks at every multiple of 10 s: 6 or 7 of them in 65 s, depending on the start.
    assert!((6..=7).contains(&log.len()), "{} ticks", log.len());
    assert!(log.iter().all(|e| e.ty == "troupe.cron.tick.v1"));
    let data: serde_json::Value = serde_json::from_slice(&log[0].data).unwrap();
    assert_eq!(data["schedule"], "*/10 * * * * *");
    let secs: Vec<u32> = log
        .iter()
        .map(|e| e.time[17..19].parse().unwrap())
        .collect();
    assert!(
        secs.iter().all(|s| s % 10 == 0),
        "ticks fall on the schedule: {secs:?}"
    );
}
