//! Uploads straight into S3 (moto), announced by the bucket's own notifications through
//! SQS: one document per object however S3 announces it (moto sends a multipart upload
//! twice, and a test event when notifications are configured), keys URL-decoded, and
//! objects outside the blob trigger's prefix or hidden ones left alone.

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use troupe_tests::Child;
use troupe_tests::stack::{Stack, runtime};

/// `(key, name)` of every registered document, from the state table.
fn documents(database_url: &str) -> Vec<String> {
    runtime().block_on(async {
        let (client, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        let rows = client
            .query(
                "SELECT value FROM troupe_kv WHERE key LIKE 'doc/default/%' ORDER BY key",
                &[],
            )
            .await
            .expect("query");
        let mut names: Vec<String> = rows
            .iter()
            .map(|r| {
                let v: serde_json::Value =
                    serde_json::from_slice(&r.get::<_, Vec<u8>>(0)).expect("record");
                v["name"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        names.sort();
        names
    })
}

#[test]
fn objects_put_into_s3_become_one_document_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::aws(dir.path());
    let Stack::Aws { aws, .. } = &stack else {
        unreachable!()
    };
    // `troupe serve` without the model: documents stop after registration, which is
    // all this checks.
    let up = Child::serve_on(&stack, &[]);
    let s3 = runtime().block_on(aws.scale()).clients.s3;
    runtime().block_on(async {
        let put = |key: &str, body: &'static [u8]| {
            s3.put_object()
                .bucket(&aws.bucket)
                .key(key)
                .body(ByteStream::from_static(body))
                .send()
        };
        put("uploads/tides + waves, é.md", b"# Tides\n\nTwice a day.")
            .await
            .expect("put");
        put("uploads/.partial", b"not yet").await.expect("put");
        put("elsewhere/ignored.txt", b"outside the prefix")
            .await
            .expect("put");
        let key = "uploads/big.txt";
        let mp = s3
            .create_multipart_upload()
            .bucket(&aws.bucket)
            .key(key)
            .send()
            .await
            .expect("create multipart");
        let upload_id = mp.upload_id().expect("upload id");
        let part = s3
            .upload_part()
            .bucket(&aws.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(1)
            .body(ByteStream::from_static(b"a multipart upload of plain text"))
            .send()
            .await
            .expect("upload part");
        s3.complete_multipart_upload()
            .bucket(&aws.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .parts(
                        CompletedPart::builder()
                            .part_number(1)
                            .e_tag(part.e_tag().unwrap_or_default())
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("complete multipart");
    });
    let want = ["big.txt", "tides + waves, é.md"];
    let start = Instant::now();
    while documents(&aws.database_url) != want {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "documents: {:?}",
            documents(&aws.database_url)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Repeated notifications have all been consumed by now: still one each.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(documents(&aws.database_url), want);
    drop(up);
}

/// An S3 notification whose leases kept expiring is moved to the DLQ by SQS's redrive
/// policy; redriven, it is a new SQS message of the same notification and must not be
/// taken for a repeat of itself (dropped inside the dedupe window).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redriven_s3_notification_is_delivered_not_dropped_as_a_repeat() {
    use troupe_core::{DeadLetters, DeliveryPolicy, Queue, Subscription};
    let stack = tokio::task::spawn_blocking(troupe_tests::stack::AwsStack::new)
        .await
        .expect("stack");
    let scale = stack.scale().await;
    let sub = Subscription {
        name: "intake".into(),
        topics: vec![troupe_core::blobs::created_topic("documents")],
        subject_prefix: Some("uploads/".into()),
        policy: DeliveryPolicy {
            visibility_timeout: Duration::from_secs(1),
            max_deliveries: 1,
            dedupe_window: Duration::from_secs(300),
            ..Default::default()
        },
    };
    scale.queue.subscribe(&sub).await.expect("subscribe");
    troupe_aws::setup::configure_notifications(
        &scale.clients,
        &scale.queue,
        &stack.bucket,
        std::slice::from_ref(&sub),
    )
    .await
    .expect("notifications");
    scale
        .clients
        .s3
        .put_object()
        .bucket(&stack.bucket)
        .key("uploads/poison.txt")
        .body(ByteStream::from_static(b"a file whose handler keeps dying"))
        .send()
        .await
        .expect("put");
    let receive = async || {
        let start = Instant::now();
        loop {
            let got = scale
                .queue
                .receive("intake", 10, Duration::from_secs(1))
                .await
                .expect("receive");
            if !got.is_empty() || start.elapsed() > Duration::from_secs(5) {
                return got;
            }
        }
    };
    // Delivered once; the handler dies, its lease expires, and SQS moves the
    // notification to the DLQ (at most one delivery).
    let first = receive().await;
    assert_eq!(first.len(), 1, "{first:?}");
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(receive().await.is_empty(), "moved to the DLQ");
    assert_eq!(
        scale
            .queue
            .dead_letters("intake", 10)
            .await
            .expect("dlq")
            .len(),
        1
    );
    // The operator redrives it: it arrives, as the same event.
    assert_eq!(scale.queue.redrive("intake").await.expect("redrive"), 1);
    let again = receive().await;
    assert_eq!(
        again.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
        [first[0].id.clone()],
        "the redriven notification is delivered once more"
    );
}
