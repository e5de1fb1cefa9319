//! Several hosts on one backend: two `troupe serve` and a `troupe worker` on the same
//! bucket, queues and database share the pipeline's work — each document indexed once,
//! no vector, trail entry or webhook twice, the sweeper's ticks run on one host at a
//! time — and when one serve host is SIGKILLed halfway, the other finishes its work
//! once its leases run out.

use std::time::{Duration, Instant};

use troupe_core::State;
use troupe_host::{App, Host, Options};
use troupe_local::Local;
use troupe_tests::corpus::{self, Hooks};
use troupe_tests::stack::Stack;
use troupe_tests::{Child, backends, get, manifest};

/// Two hosts on one data directory run the same schedule: each tick runs once, on one
/// of them (the claim in state), not once per host.
#[tokio::test(start_paused = true)]
async fn cron_ticks_run_on_one_host_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = manifest(
        dir.path(),
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
    );
    let local = Local::open(&dir.path().join("data")).unwrap();
    let mut tasks = Vec::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    for name in ["a", "b"] {
        let host = Host::new(
            App::load(&path).unwrap(),
            backends(&local),
            Options {
                cache_dir: Some(dir.path().join(format!("cache-{name}"))),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let shared = host.shared().clone();
        let trigger = shared.app.cron[0].clone();
        tasks.push(tokio::spawn(troupe_host::triggers::cron::run(
            shared,
            trigger,
            stopped.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(65)).await;
    stop.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let log = local.state.read_events("default/seen").await.unwrap();
    let mut times: Vec<&str> = log
        .iter()
        .map(|e| {
            let data: serde_json::Value = serde_json::from_slice(&e.data).unwrap();
            assert_eq!(data["schedule"], "*/10 * * * * *");
            e.time.as_str()
        })
        .collect();
    // One host alone ticks 6 or 7 times in 65 s; two must not tick more.
    assert!(
        (6..=7).contains(&log.len()),
        "{} ticks from two hosts: {times:?}",
        log.len()
    );
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), log.len(), "a scheduled time ran twice");
}

/// Sum of a component's cron invocations in a host's `/metrics`.
fn cron_runs(base: &str, component: &str) -> u64 {
    let (status, text) = get(&format!("{base}/metrics"));
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| {
            l.starts_with("troupe_invocations_total{")
                && l.contains(&format!("component=\"{component}\""))
                && l.contains("trigger=\"cron\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn two_serve_hosts_and_a_worker_share_one_aws_backend_and_survive_a_sigkill() {
    const DOCS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::aws(dir.path());
    let pipeline = corpus::short_lease_pipeline(dir.path());
    let (hooks, url) = Hooks::start();
    let env = vec![
        ("TROUPE_VARIABLE_WEBHOOK_URLS", url),
        (
            "TROUPE_VARIABLE_WEBHOOK_SECRET",
            "scale-out-secret".to_owned(),
        ),
        // Long documents make several embedding jobs each.
        ("TROUPE_VARIABLE_BATCH_CHUNKS", "4".to_owned()),
        ("TROUPE_JOB_LEASE_MS", corpus::SHORT_LEASE_MS.to_string()),
        ("TROUPE_VARIABLE_SWEEP_SCHEDULE", "*/5 * * * * *".to_owned()),
    ];
    stack.init(&pipeline);
    let started = Instant::now();
    let a = Child::serve_with(&stack, &dir.path().join("a"), &pipeline, &[], &env);
    let b = Child::serve_with(&stack, &dir.path().join("b"), &pipeline, &[], &env);
    let _worker = Child::worker_on(&stack, &env);
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));

    let docs = corpus::corpus(DOCS, 1_400, 7);
    let ids: Vec<String> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| corpus::upload(if i % 2 == 0 { &base_a } else { &base_b }, d))
        .collect();
    // Halfway, the first host dies with whatever it holds.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, settled) = corpus::progress(&base_b, &ids).expect("host b answers");
        if settled >= DOCS / 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {settled} of {DOCS} documents settled on two hosts"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The sweeper (every 5 s) ran once per tick across both hosts, not twice.
    let sweeps = cron_runs(&base_a, "sweeper") + cron_runs(&base_b, "sweeper");
    let ticks = started.elapsed().as_secs() / 5 + 1;
    assert!(
        sweeps <= ticks,
        "{sweeps} sweeper runs on two hosts in {:?} ({ticks} ticks at most)",
        started.elapsed()
    );
    a.kill();
    let killed = Instant::now();
    corpus::settle_all(&base_b, &ids, Duration::from_secs(180));
    eprintln!(
        "host a killed after {:?}; host b finished the rest {:?} later",
        killed - started,
        killed.elapsed()
    );
    corpus::check_end_state(&base_b, &stack, &docs, &ids, None, &hooks);
}
