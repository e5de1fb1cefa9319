//! `GET /v1/events`: one live stream of a tenant's document events, served by the host.
//! Events are logged into the state store (as `status` logs them), for two tenants at
//! once, while streams watch over real HTTP: straight into the store, as another
//! process sharing it would, or through the host's own handle, whose appends wake the
//! readers.

use std::sync::Arc;
use std::time::Duration;

use troupe_core::{Event, State};
use troupe_host::auth::{KeyStore, Mode, Scope, Settings};
use troupe_host::{App, Host, Options};
use troupe_tests::sse::{Frame, Stream};
use troupe_tests::{manifest, request};

const WAIT: Duration = Duration::from_secs(10);

/// A host serving only the host's own routes, with authentication on, two tenants'
/// read keys, and at most `max_streams` streams.
struct Served {
    base: String,
    /// The store itself: appends the host only finds by polling.
    state: Arc<dyn State>,
    /// The host's handle on it: appends that wake the readers.
    host_state: Arc<dyn State>,
    keys: KeyStore,
    acme: String,
    umbrella: String,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(max_streams: usize) -> Self {
        Self::polling_every(max_streams, Duration::from_millis(50)).await
    }

    /// [`Served::start`], reading the feed for other processes' appends every `poll`.
    async fn polling_every(max_streams: usize, poll: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = manifest(
            dir.path(),
            r#"
[[trigger.http]]
route = "/hello/..."
component = "hello"
[component.hello]
source = "{dist}/hello.wasm"
"#,
        );
        let local = troupe_local::Local::open(&dir.path().join("data")).expect("open");
        let host = Host::new(
            App::load(&path).expect("manifest"),
            troupe_tests::backends(&local),
            Options {
                cache_dir: Some(dir.path().join("cache")),
                auth: Settings {
                    mode: Mode::Required,
                    ..Default::default()
                },
                events: troupe_host::feed::Settings {
                    max_streams,
                    poll,
                    keep_alive: Duration::from_millis(300),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("host");
        let state: Arc<dyn State> = Arc::new(local.state.clone());
        let host_state = host.shared().backends.state.clone();
        let keys = KeyStore::new(state.clone());
        let key = async |tenant: &str| {
            let (_, key) = keys
                .create(
                    troupe_events::Tenant::new(tenant).expect("tenant"),
                    Scope::Read,
                    "",
                )
                .await
                .expect("key");
            format!("Bearer {}", key.expose())
        };
        let (acme, umbrella) = (key("acme").await, key("umbrella").await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(host.run(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            base,
            state,
            host_state,
            keys,
            acme,
            umbrella,
            stop,
            served,
            _dir: dir,
        }
    }

    /// Opens `tenant`'s stream (its bearer header), from `last` when given.
    async fn watch(&self, bearer: &str, last: Option<&str>) -> Stream {
        let url = format!("{}/v1/events", self.base);
        let mut headers = vec![("authorization".to_owned(), bearer.to_owned())];
        if let Some(last) = last {
            headers.push(("last-event-id".to_owned(), last.to_owned()));
        }
        tokio::task::spawn_blocking(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Stream::open(&url, &headers).expect("stream opens")
        })
        .await
        .expect("open")
    }

    /// Logs `n` events about `doc` of `tenant`; their ids.
    async fn log(&self, tenant: &str, doc: &str, n: usize) -> Vec<String> {
        Self::log_into(&*self.state, tenant, doc, n).await
    }

    /// Logs `n` events about `doc` of `tenant` into `state`; their ids.
    async fn log_into(state: &dyn State, tenant: &str, doc: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for i in 0..n {
            let mut e = Event::new(
                "/functions/status",
                "troupe.document.processing.v1",
                &serde_json::json!({"document": doc, "i": i}),
            )
            .with_subject(doc);
            e.tenant = Some(tenant.into());
            state
                .append_event(&format!("{tenant}/{doc}"), &e)
                .await
                .expect("logged");
            ids.push(e.id);
        }
        ids
    }
}

/// The event ids of `frames`, checking that each is a CloudEvent of `tenant` whose
/// frame id grows.
fn ids(frames: &[Frame], tenant: &str) -> Vec<String> {
    let mut last = 0u64;
    frames
        .iter()
        .map(|f| {
            let position: u64 = f.id.parse().expect("numeric frame id");
            assert!(position > last, "frame ids grow: {frames:#?}");
            last = position;
            let e = f.json();
            assert_eq!(e["specversion"], "1.0");
            assert_eq!(e["tenant"], tenant, "{f:?}");
            assert_eq!(f.event, e["type"].as_str().expect("type"));
            e["id"].as_str().expect("id").to_owned()
        })
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_see_the_same_events_in_order_and_only_their_tenants() {
    let s = Served::start(16).await;
    let (one, two) = (s.watch(&s.acme, None).await, s.watch(&s.acme, None).await);
    let other = s.watch(&s.umbrella, None).await;
    for stream in [&one, &two, &other] {
        let ready = stream.next(WAIT).expect("ready frame");
        assert_eq!((ready.event.as_str(), ready.id.as_str()), ("ready", "0"));
    }
    // Two tenants' documents logged at once, interleaved.
    let (a, b, c) = tokio::join!(
        s.log("acme", "doc-a", 20),
        s.log("acme", "doc-b", 20),
        s.log("umbrella", "doc-c", 15)
    );
    let (one, two, other) = blocking(move || {
        (
            one.take(40, WAIT),
            two.take(40, WAIT),
            (other.take(15, WAIT), other.next(Duration::from_millis(500))),
        )
    })
    .await;
    assert_eq!(
        one, two,
        "both watchers see the same frames in the same order"
    );
    let seen = ids(&one, "acme");
    let mut logged: Vec<_> = a.iter().chain(&b).cloned().collect();
    let mut sorted = seen.clone();
    sorted.sort();
    logged.sort();
    assert_eq!(sorted, logged, "every event of acme once, none of umbrella");
    // Per document, the log's order.
    let of = |doc: &[String]| {
        seen.iter()
            .filter(|i| doc.contains(i))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!((of(&a), of(&b)), (a, b));
    assert_eq!(ids(&other.0, "umbrella"), c);
    assert_eq!(other.1, None, "nothing more for umbrella");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_through_the_host_reaches_watchers_without_waiting_for_a_poll() {
    // A poll so rare that only the wake-up can deliver within the test.
    let s = Served::polling_every(4, Duration::from_secs(3600)).await;
    let mut watcher = s.watch(&s.acme, None).await;
    let (ready, back) = blocking(move || (watcher.next(WAIT), watcher)).await;
    watcher = back;
    assert_eq!(ready.expect("ready frame").event, "ready");
    // Rounds apart: each wakes a reader that had gone back to waiting.
    for round in 0..3 {
        let logged = Served::log_into(&*s.host_state, "acme", &format!("doc-{round}"), 5).await;
        let (frames, back) = blocking(move || (watcher.take(5, WAIT), watcher)).await;
        watcher = back;
        assert_eq!(ids(&frames, "acme"), logged, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let s = Served::start(16).await;
    let mut logged = s.log("acme", "doc-a", 5).await;
    // From the start of the feed: what was logged before the stream opened.
    let first = s.watch(&s.acme, Some("0")).await;
    logged.extend(s.log("acme", "doc-b", 5).await);
    let (first, frames) = blocking(move || {
        let frames = first.take(10, WAIT);
        (first, frames)
    })
    .await;
    let last = frames.last().expect("frames").id.clone();
    drop(first); // the connection drops
    // Logged while nobody watched, then more while the second stream catches up.
    logged.extend(s.log("acme", "doc-c", 7).await);
    let second = s.watch(&s.acme, Some(&last)).await;
    logged.extend(s.log("acme", "doc-a", 3).await);
    let (second, more) = blocking(move || {
        let more = second.take(10, WAIT);
        let extra = second.next(Duration::from_millis(500));
        assert_eq!(extra, None, "nothing repeated after the last event");
        (second, more)
    })
    .await;
    let all: Vec<Frame> = frames.into_iter().chain(more).collect();
    assert_eq!(ids(&all, "acme"), logged);
    drop(second);
    // Umbrella replaying from the very start sees none of it.
    let other = s.watch(&s.umbrella, Some("0")).await;
    assert_eq!(
        blocking(move || other.next(Duration::from_millis(500))).await,
        None
    );
    // A Last-Event-ID that is not one of ours is refused plainly.
    let (base, key) = (s.base.clone(), s.acme.clone());
    let bad = blocking(move || {
        Stream::open(
            &format!("{base}/v1/events"),
            &[("authorization", &key), ("last-event-id", "yesterday")],
        )
        .expect_err("refused")
    })
    .await;
    assert_eq!(bad.status, 400, "{bad:?}");
    assert!(bad.body.contains("invalid_last_event_id"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_need_a_credential_are_bounded_stop_on_revocation_and_end_at_shutdown() {
    let s = Served::start(2).await;
    let url = format!("{}/v1/events", s.base);
    let anonymous = {
        let url = url.clone();
        blocking(move || request("GET", &url, &[], b"")).await
    };
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let head = {
        let (url, key) = (url.clone(), s.acme.clone());
        blocking(move || request("HEAD", &url, &[("authorization", &key)], b"")).await
    };
    assert_eq!(
        (head.status, head.header("allow")),
        (405, Some("GET")),
        "{head:?}"
    );
    // A key of its own, to revoke.
    let (record, key) = s
        .keys
        .create(
            troupe_events::Tenant::new("acme").expect("tenant"),
            Scope::Read,
            "",
        )
        .await
        .expect("key");
    let revocable = s.watch(&format!("Bearer {}", key.expose()), None).await;
    let kept = s.watch(&s.acme, None).await;
    // Two open: the third waits for one to close.
    let full = {
        let (url, key) = (url.clone(), s.acme.clone());
        blocking(move || Stream::open(&url, &[("authorization", &key)]).expect_err("full")).await
    };
    assert_eq!((full.status, full.retry_after.as_deref()), (503, Some("1")));
    s.keys.revoke(&record.id).await.expect("revoked");
    let revocable = blocking(move || {
        assert_eq!(revocable.next(WAIT).expect("ready").event, "ready");
        let error = revocable.next(WAIT).expect("an error frame");
        assert_eq!(error.event, "error");
        assert_eq!(error.json()["error"]["code"], "unauthorized");
        assert!(revocable.ended(WAIT), "the stream ends");
        revocable
    })
    .await;
    drop(revocable);
    // Its slot is free again.
    let (url2, key2) = (url.clone(), s.acme.clone());
    let again = blocking(move || {
        let mut tries = 0;
        loop {
            match Stream::open(&url2, &[("authorization", &key2)]) {
                Ok(stream) => return stream,
                Err(r) if r.status == 503 && tries < 50 => tries += 1,
                Err(r) => panic!("{r:?}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await;
    // Shutdown ends open streams rather than waiting for them.
    let _ = s.stop.send(());
    tokio::time::timeout(WAIT, s.served)
        .await
        .expect("shutdown does not wait for streams")
        .expect("host task")
        .expect("host run");
    blocking(move || {
        assert!(kept.ended(WAIT) && again.ended(WAIT), "streams ended");
    })
    .await;
}
