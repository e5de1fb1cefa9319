//! The queue path: embedding jobs through the embedded queue become vectors and
//! completion events; a job delivered twice leaves one set of vectors; a stopped
//! backend stops the consumer with its jobs still leased.

mod common;

use std::sync::Arc;
use std::time::Duration;

use troupe_core::{
    Blobs, DeadLetters, DeliveryPolicy, Event, Message, Queue, Subscription, Vectors,
};
use troupe_events::{BlobRef, Chunk, Completed, Failed, Job, Payload};
use troupe_gpu_worker::consumer::{Consumer, JOB_TOPIC};
use troupe_local::Local;

const COMPLETED_TOPIC: &str = Completed::TOPIC;
const JOB_TYPE: &str = Job::TYPE;

async fn setup(duplicate: bool) -> (tempfile::TempDir, Local, Consumer) {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::open_with(
        dir.path(),
        troupe_local::Options {
            duplicate_deliveries: duplicate,
            ..Default::default()
        },
    )
    .unwrap();
    for (name, topic) in [("gpu-worker", JOB_TOPIC), ("indexer", COMPLETED_TOPIC)] {
        local
            .queue
            .subscribe(&Subscription {
                name: name.into(),
                topics: vec![topic.into()],
                subject_prefix: None,
                policy: DeliveryPolicy::default(),
            })
            .await
            .unwrap();
    }
    let (embedder, _) = common::embedder(16_384, 4096);
    let consumer = Consumer {
        queue: Arc::new(local.queue.clone()),
        blobs: Arc::new(local.blobs.clone()),
        vectors: Arc::new(local.vectors.clone()),
        embedder,
        subscription: "gpu-worker".into(),
        batch_size: 10,
        leases: Some((Arc::new(local.queue.clone()), Duration::from_secs(30))),
        max_deliveries: DeliveryPolicy::default().max_deliveries,
        metrics: None,
    };
    (dir, local, consumer)
}

fn job_event(job: &Job) -> Event {
    let mut e = Event::new(
        "/functions/extract",
        JOB_TYPE,
        &serde_json::to_value(job).unwrap(),
    )
    .with_subject(&job.document);
    e.tenant = Some("acme".into());
    e
}

fn chunks(doc: &str, texts: &[&str]) -> Vec<Chunk> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| Chunk {
            id: format!("{doc}-{i}"),
            text: (*t).to_owned(),
        })
        .collect()
}

async fn drain(local: &Local, consumer: &Consumer) {
    loop {
        let got = local
            .queue
            .receive("gpu-worker", 10, Duration::ZERO)
            .await
            .unwrap();
        if got.is_empty() {
            return;
        }
        consumer.process(got).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_become_vectors_and_completion_events() {
    let (_dir, local, mut consumer) = setup(false).await;
    let metrics = Arc::new(troupe_gpu_worker::metrics::Metrics::default());
    consumer.metrics = Some(metrics.clone());
    let inline = Job {
        document: "doc-1".into(),
        batch: 1,
        of: 2,
        chunks: chunks(
            "doc-1",
            &[
                "Invoices are due within thirty days.",
                "Late payments accrue interest.",
            ],
        ),
        chunks_blob: None,
    };
    // Batch 2 is claim-checked: its chunks live in a blob.
    let stored = chunks("doc-1b", &["The warehouse ships orders every weekday."]);
    local
        .blobs
        .put(
            "documents",
            "chunks/acme/doc-1/2.json",
            &serde_json::to_vec(&stored).unwrap(),
        )
        .await
        .unwrap();
    let claim = Job {
        document: "doc-1".into(),
        batch: 2,
        of: 2,
        chunks: vec![],
        chunks_blob: Some(BlobRef {
            bucket: "documents".into(),
            key: "chunks/acme/doc-1/2.json".into(),
        }),
    };
    let msgs = [
        Message::from_event(&job_event(&inline)),
        Message::from_event(&job_event(&claim)),
    ];
    local.queue.publish(JOB_TOPIC, &msgs).await.unwrap();
    drain(&local, &consumer).await;

    assert_eq!(local.vectors.count("acme", "doc-1").await.unwrap(), 3);
    let text = metrics.encode();
    for line in [
        r#"troupe_embed_jobs_total{outcome="ok"} 2"#,
        "troupe_embed_job_wait_seconds_count 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert_eq!(
        local.vectors.count("other-tenant", "doc-1").await.unwrap(),
        0
    );
    let done = local
        .queue
        .receive("indexer", 10, Duration::ZERO)
        .await
        .unwrap();
    let mut completed: Vec<Completed> = done
        .iter()
        .map(|d| {
            let e = Event::from_json(&d.body).unwrap();
            assert_eq!(e.ty, "troupe.embedding.completed.v1");
            assert_eq!(
                (
                    e.subject.as_deref(),
                    e.tenant.as_deref(),
                    e.session.as_deref()
                ),
                (Some("doc-1"), Some("acme"), Some("doc-1"))
            );
            serde_json::from_slice(&e.data).unwrap()
        })
        .collect();
    completed.sort_by_key(|c| c.batch);
    assert_eq!(completed.len(), 2);
    assert_eq!(
        (
            completed[0].batch,
            completed[0].of,
            completed[0].chunks,
            completed[0].dims
        ),
        (1, 2, 2, 384)
    );
    assert_eq!((completed[1].batch, completed[1].chunks), (2, 1));
    assert_eq!(completed[0].model, "all-MiniLM-L6-v2");
    // The stored vectors answer a search.
    let (q, _) = common::embedder(16_384, 16);
    let query = q
        .embed(&["when do invoices have to be paid?".to_owned()])
        .await
        .unwrap();
    let hits = local
        .vectors
        .search("acme", "all-MiniLM-L6-v2", &query.vectors[0], 2)
        .await
        .unwrap();
    assert_eq!(hits[0].chunk, "doc-1-0", "{hits:?}");
    assert!(hits[0].score > hits[1].score);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_twice_leaves_one_set_of_vectors() {
    let (_dir, local, consumer) = setup(true).await;
    let job = Job {
        document: "doc-2".into(),
        batch: 1,
        of: 1,
        chunks: chunks("doc-2", &["alpha", "beta", "gamma"]),
        chunks_blob: None,
    };
    local
        .queue
        .publish(JOB_TOPIC, &[Message::from_event(&job_event(&job))])
        .await
        .unwrap();
    assert_eq!(
        local.queue.depth("gpu-worker").await.unwrap().ready,
        2,
        "the test switch delivers it twice"
    );
    drain(&local, &consumer).await;
    assert_eq!(local.vectors.count("acme", "doc-2").await.unwrap(), 3);
    // Both deliveries published a completion with the id derived from the job: the
    // indexer's queue holds one event id (the switch may copy it, dedupe drops the
    // second delivery's).
    let done = local
        .queue
        .receive("indexer", 10, Duration::ZERO)
        .await
        .unwrap();
    let ids: std::collections::BTreeSet<_> = done.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 1, "one completion event id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_dead_lettered_with_a_reason_and_fail_their_document() {
    let (_dir, local, mut consumer) = setup(false).await;
    let metrics = Arc::new(troupe_gpu_worker::metrics::Metrics::default());
    consumer.metrics = Some(metrics.clone());
    local
        .queue
        .subscribe(&troupe_core::Subscription {
            name: "status-failed".into(),
            topics: vec![Failed::TOPIC.into()],
            subject_prefix: None,
            policy: Default::default(),
        })
        .await
        .unwrap();
    let mut wrong = Event::new("/x", JOB_TYPE, &serde_json::json!({"document": "d"}));
    // The same document, the same tenant: its bad jobs fail it once.
    wrong.tenant = Some("acme".into());
    let range = job_event(&Job {
        document: "d".into(),
        batch: 3,
        of: 2,
        chunks: vec![],
        chunks_blob: None,
    });
    let missing = job_event(&Job {
        document: "d".into(),
        batch: 1,
        of: 1,
        chunks: vec![],
        chunks_blob: Some(BlobRef {
            bucket: "documents".into(),
            key: "chunks/acme/d/nope.json".into(),
        }),
    });
    // Chunks of another tenant: the job's envelope says `acme`, so they are refused
    // (not read), though they exist.
    local
        .blobs
        .put("documents", "chunks/other/d/1.json", b"[]")
        .await
        .unwrap();
    let foreign = job_event(&Job {
        document: "d".into(),
        batch: 1,
        of: 1,
        chunks: vec![],
        chunks_blob: Some(BlobRef {
            bucket: "documents".into(),
            key: "chunks/other/d/1.json".into(),
        }),
    });
    local
        .queue
        .publish(
            JOB_TOPIC,
            &[
                Message::from_event(&wrong),
                Message::from_event(&range),
                Message::from_event(&missing),
                Message::from_event(&foreign),
            ],
        )
        .await
        .unwrap();
    drain(&local, &consumer).await;
    let dead = local.queue.dead_letters("gpu-worker", 10).await.unwrap();
    let reasons: std::collections::BTreeSet<_> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["chunks_missing", "denied", "malformed_job"]
            .into_iter()
            .collect()
    );
    assert_eq!(dead.len(), 4);
    let text = metrics.encode();
    for line in [
        r#"troupe_embed_jobs_total{outcome="dead_lettered"} 4"#,
        "troupe_embed_job_wait_seconds_count 4",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert!(!text.contains(r#"outcome="ok""#), "{text}");
    // The document fails at once, once (the failure's id is the document's).
    let failed = local
        .queue
        .receive("status-failed", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let event = Event::from_json(&failed[0].body).unwrap();
    assert_eq!(
        (event.id.as_str(), event.ty.as_str()),
        ("d-failed", "troupe.document.failed.v1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlasting_its_visibility_keeps_its_lease() {
    let (_dir, local, mut consumer) = setup(false).await;
    // A subscription whose lease (300 ms) is far shorter than the job takes to embed.
    let lease = Duration::from_millis(300);
    local
        .queue
        .subscribe(&Subscription {
            name: "slow".into(),
            topics: vec![JOB_TOPIC.into()],
            subject_prefix: None,
            policy: DeliveryPolicy {
                visibility_timeout: lease,
                ..Default::default()
            },
        })
        .await
        .unwrap();
    consumer.subscription = "slow".into();
    consumer.leases = Some((Arc::new(local.queue.clone()), lease));
    let text = "The lease of a long embedding job is renewed while it runs. ".repeat(12);
    let job = job_event(&Job {
        document: "long".into(),
        batch: 1,
        of: 1,
        chunks: (0..64)
            .map(|i| Chunk {
                id: format!("{i}"),
                text: format!("{i} {text}"),
            })
            .collect(),
        chunks_blob: None,
    });
    local
        .queue
        .publish(JOB_TOPIC, &[Message::from_event(&job)])
        .await
        .unwrap();
    let embedder = consumer.embedder.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let running = tokio::spawn(consumer.run(stop));
    while local.vectors.count("acme", "long").await.unwrap() < 64 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the job never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    // Let a redelivery, if any, be picked up before stopping.
    tokio::time::sleep(lease * 3).await;
    stop_tx.send(true).unwrap();
    running.await.unwrap();
    assert!(
        took > lease * 2,
        "the job was too quick ({took:?}) to prove anything"
    );
    assert_eq!(
        embedder.taken(),
        64,
        "the job was embedded more than once: its lease lapsed"
    );
    assert_eq!(local.queue.depth("slow").await.unwrap().ready, 0);
}

/// A backend that has lost its device: every batch reports it stopped.
struct Stopped;

impl troupe_gpu_worker::EmbeddingBackend for Stopped {
    fn embed(&mut self, _batch: &[Vec<u32>]) -> troupe_gpu_worker::Result<Vec<Vec<f32>>> {
        Err(troupe_gpu_worker::Error::Stopped)
    }
    fn max_batch_tokens(&self) -> usize {
        16_384
    }
    fn dims(&self) -> usize {
        384
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_stops_the_consumer_and_leaves_the_job_leased() {
    let (_dir, local, mut consumer) = setup(false).await;
    consumer.embedder = troupe_gpu_worker::Embedder::start(
        Box::new(Stopped),
        troupe_gpu_worker::Tokens::load(common::model_dir(), 256).unwrap(),
        troupe_gpu_worker::embedder::Options::default(),
        None,
    )
    .unwrap();
    let job = Job {
        document: "doc-3".into(),
        batch: 1,
        of: 1,
        chunks: chunks("doc-3", &["alpha", "beta"]),
        chunks_blob: None,
    };
    local
        .queue
        .publish(JOB_TOPIC, &[Message::from_event(&job_event(&job))])
        .await
        .unwrap();
    let got = local
        .queue
        .receive("gpu-worker", 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        !consumer.process(got).await,
        "a stopped backend must stop the consumer, not retry its job"
    );
    assert!(
        !consumer.embedder.is_running(),
        "the inference thread ended"
    );
    // Neither retried nor dead-lettered: left leased, for a healthy worker to take
    // once the lease lapses; the document is not failed.
    let depth = local.queue.depth("gpu-worker").await.unwrap();
    assert_eq!((depth.ready, depth.in_flight, depth.dead), (0, 1, 0));
    assert!(
        local
            .queue
            .receive("gpu-worker", 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(local.vectors.count("acme", "doc-3").await.unwrap(), 0);
}
