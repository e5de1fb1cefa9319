//! The Lambda adapter against moto's S3 and SQS and a real Postgres: AWS event
//! fixtures (function URL, API Gateway HTTP API, S3 put, EventBridge schedule, SQS),
//! and a document carried through the whole pipeline by SQS events, with this test
//! playing Lambda's event source mappings (receive, invoke, delete what succeeded) and
//! `troupe worker --backend aws` embedding the chunks.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};
use troupe_lambda::{Adapter, Config};
use troupe_tests::stack::{AwsStack, tool};
use troupe_tests::{components, model_dir, repo_root, troupe_bin, workspace_bin};

fn fixture(name: &str) -> Value {
    let path = repo_root().join("crates/lambda/tests/fixtures").join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("fixture JSON")
}

fn body(response: &Value) -> Value {
    let text = response["body"].as_str().expect("a text body");
    serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()))
}

fn get(path: &str) -> Value {
    let mut e = fixture("function-url-get.json");
    e["rawPath"] = json!(path);
    e["requestContext"]["http"]["path"] = json!(path);
    e
}

/// One pass of every queue's event source mapping: receive a batch, hand it to the
/// function as an SQS event, delete what it did not report as failed.
async fn pump(
    adapter: &Adapter,
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
    queues: &[String],
) -> usize {
    let mut delivered = 0;
    for q in queues {
        let url = sqs
            .get_queue_url()
            .queue_name(format!("{prefix}{q}"))
            .send()
            .await
            .expect("queue url")
            .queue_url
            .expect("url");
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let messages = got.messages();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m
                    .attributes()
                    .map(|a| a.iter().map(|(k, v)| (k.as_str().to_owned(), json!(v))).collect())
                    .unwrap_or_default();
                let message_attributes: serde_json::Map<String, Value> = m
                    .message_attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| {
                                (k.clone(), json!({"stringValue": v.string_value(), "stringListValues": [], "binaryListValues": [], "dataType": v.data_type()}))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": message_attributes,
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{prefix}{q}"),
                    "awsRegion": "us-east-1",
                })
            })
            .collect();
        delivered += records.len();
        let response = adapter
            .handle(json!({ "Records": records }))
            .await
            .expect("the SQS event is answered");
        let failed: HashSet<&str> = response["batchItemFailures"]
            .as_array()
            .expect("an SQSBatchResponse")
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        for m in messages {
            if !failed.contains(m.message_id().unwrap_or_default()) {
                let _ = sqs
                    .delete_message()
                    .queue_url(&url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await;
            }
        }
    }
    delivered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_events_drive_the_pipeline_through_the_lambda_adapter() {
    components();
    let stack = tokio::task::spawn_blocking(AwsStack::new)
        .await
        .expect("stack");
    let manifest = repo_root().join("spin.toml");
    stack.init(&manifest);
    let scale = stack.scale().await;
    let sqs = scale.clients.sqs.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let adapter = Adapter::start(
        Config {
            manifest: manifest.clone(),
            component: None,
            model_dir: Some(model_dir().to_owned()),
            cache_dir: dir.path().join("cache"),
            tenant_max_bytes: None,
            auth: Default::default(),
        },
        scale.clone(),
    )
    .await
    .expect("the adapter starts");
    // The GPU worker, as its container would run.
    let mut worker = Command::new(troupe_bin())
        .args(["worker", "--listen", "127.0.0.1:0", "--model-dir"])
        .arg(model_dir())
        .envs(stack.env())
        .env("TROUPE_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("troupe worker");

    // A function URL request: routed to the api component.
    let r = adapter
        .handle(get("/v1/documents/no-such-document"))
        .await
        .unwrap();
    assert_eq!(r["statusCode"], 404, "{r}");
    assert_eq!(body(&r)["error"]["code"], "not_found", "{r}");

    // An API Gateway upload, base64 body and query string.
    let r = adapter.handle(fixture("apigw-v2-post.json")).await.unwrap();
    assert_eq!(r["statusCode"], 202, "{r}");
    let fjord = body(&r)["id"].as_str().expect("an id").to_owned();

    // An S3 put notification straight to the function: intake registers the document.
    let coral = "A coral reef is built by colonies of tiny animals that secrete calcium carbonate skeletons; warm shallow seas host the largest reefs.";
    let key = "uploads/coral reef, notes.txt";
    troupe_core::Blobs::put(&scale.blobs, "documents", key, coral.as_bytes())
        .await
        .unwrap();
    let mut s3 = fixture("s3-put.json");
    s3["Records"][0]["s3"]["bucket"]["name"] = json!(stack.bucket);
    s3["Records"][0]["s3"]["object"]["size"] = json!(coral.len());
    let r = adapter.handle(s3).await.unwrap();
    assert_eq!(r["processed"], 1, "{r}");

    // The sweeper's schedule.
    let r = adapter
        .handle(fixture("eventbridge-scheduled.json"))
        .await
        .unwrap();
    assert_eq!(r["ticked"], 1, "{r}");

    // Lambda's event source mappings, until both documents settle.
    let queues: Vec<String> = adapter_queues(&manifest);
    let start = Instant::now();
    let mut settled = None;
    while start.elapsed() < Duration::from_secs(120) {
        pump(&adapter, &sqs, &stack.prefix, &queues).await;
        let a = body(
            &adapter
                .handle(get(&format!("/v1/documents/{fjord}")))
                .await
                .unwrap(),
        );
        let found = search(&adapter, "coral reef calcium carbonate skeletons").await;
        let coral_id = found["hits"][0]["document_id"].as_str().map(str::to_owned);
        if a["status"] == "indexed" && found["hits"][0]["name"] == "coral reef, notes.txt" {
            settled = Some((a, coral_id));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = worker.kill();
    let _ = worker.wait();
    let (fjord_doc, coral_id) = settled.expect("both documents indexed through SQS events");
    assert_eq!(fjord_doc["name"], "fjord.txt");
    let coral_doc = body(
        &adapter
            .handle(get(&format!("/v1/documents/{}", coral_id.expect("an id"))))
            .await
            .unwrap(),
    );
    assert_eq!(coral_doc["status"], "indexed", "{coral_doc}");

    // Search through an API Gateway request finds each.
    for (query, name) in [
        ("narrow sea inlet carved by a glacier", "fjord.txt"),
        (
            "animals building reefs in warm seas",
            "coral reef, notes.txt",
        ),
    ] {
        assert_eq!(
            search(&adapter, query).await["hits"][0]["name"],
            name,
            "{query}"
        );
    }

    // Nothing was left on the queues' DLQs.
    for q in &queues {
        let url = sqs
            .get_queue_url()
            .queue_name(format!("{}{q}-dlq", stack.prefix))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        let n = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .cloned();
        assert_eq!(n.as_deref(), Some("0"), "dead letters in {q}");
    }

    // A record from a queue outside the prefix is reported, not dropped; unknown
    // events are refused with a clear error.
    let r = adapter
        .handle(fixture("sqs-foreign-queue.json"))
        .await
        .unwrap();
    assert_eq!(
        r["batchItemFailures"][0]["itemIdentifier"], "059f36b4-87a3-44ab-83d2-661975830a7d",
        "{r}"
    );
    let err = adapter
        .handle(json!({"hello": "world"}))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unrecognised Lambda event"), "{err}");
}

/// `POST /v1/search` as an API Gateway request.
async fn search(adapter: &Adapter, query: &str) -> Value {
    let mut e = fixture("apigw-v2-post.json");
    e["rawPath"] = json!("/v1/search");
    e["rawQueryString"] = json!("");
    e["requestContext"]["http"]["path"] = json!("/v1/search");
    e["headers"]["content-type"] = json!("application/json");
    e["isBase64Encoded"] = json!(false);
    e["body"] = json!(json!({"query": query, "k": 1}).to_string());
    let r = adapter.handle(e).await.unwrap();
    assert_eq!(r["statusCode"], 200, "{r}");
    body(&r)
}

/// Every subscription queue of the manifest (the worker consumes its own).
fn adapter_queues(manifest: &std::path::Path) -> Vec<String> {
    let app = troupe_host::App::load(manifest).expect("manifest");
    app.subscriptions
        .iter()
        .map(|t| t.subscription.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_component_per_function_refuses_other_triggers() {
    components();
    let stack = tokio::task::spawn_blocking(AwsStack::new)
        .await
        .expect("stack");
    let manifest = repo_root().join("spin.toml");
    let scale = stack.scale().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |component: &str| Config {
        manifest: manifest.clone(),
        component: Some(component.to_owned()),
        model_dir: None,
        cache_dir: dir.path().join("cache"),
        tenant_max_bytes: None,
        auth: Default::default(),
    };
    let err = Adapter::start(config("nope"), scale.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TROUPE_COMPONENT=nope") && err.contains("extract"),
        "{err}"
    );
    let sweeper = Adapter::start(config("api"), scale).await.expect("adapter");
    let r = sweeper
        .handle(fixture("eventbridge-scheduled.json"))
        .await
        .unwrap();
    assert_eq!(r["ticked"], 0, "the api function has no schedule: {r}");
}

/// `cargo lambda invoke` against the emulator, answered by the function; its JSON
/// response, or the error the function returned.
fn invoke(port: u16, event: &Value) -> Result<Value, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("event.json");
    std::fs::write(&file, event.to_string()).expect("event file");
    let out = Command::new(tool("cargo-lambda"))
        .args(["lambda", "invoke", "-A", "127.0.0.1", "-P"])
        .arg(port.to_string())
        .args(["--output-format", "json", "--data-file"])
        .arg(&file)
        .env("CARGO_LAMBDA_COLOR", "never")
        .output()
        .expect("running cargo lambda invoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// Kills a child process when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real `troupe-lambda` binary under cargo-lambda's Lambda runtime API emulator
/// (`cargo lambda watch --only-lambda-apis`), invoked with `cargo lambda invoke`:
/// the runtime loop, event decoding and responses as Lambda would see them.
/// With `TROUPE_LAMBDA_BUNDLE` set to an unpacked `make package-lambda` bundle, its
/// `bootstrap`, `spin.toml` and components run instead of the workspace's.
#[test]
fn the_bootstrap_binary_answers_invocations_under_cargo_lambdas_emulator() {
    components();
    let stack = AwsStack::new();
    let (bootstrap, manifest) = match std::env::var_os("TROUPE_LAMBDA_BUNDLE") {
        Some(dir) => {
            let dir = std::path::PathBuf::from(dir);
            (dir.join("bootstrap"), dir.join("spin.toml"))
        }
        None => (
            workspace_bin("troupe-lambda"),
            repo_root().join("spin.toml"),
        ),
    };
    stack.init(&manifest);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let _emulator = Killed(
        Command::new(tool("cargo-lambda"))
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--timeout",
                "120",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            .current_dir(repo_root())
            .env("CARGO_LAMBDA_COLOR", "never")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cargo lambda watch"),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the emulator did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let _function = Killed(
        Command::new(&bootstrap)
            .envs(stack.env())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
            .env("TROUPE_MANIFEST", &manifest)
            .env("TROUPE_COMPONENT", "api")
            .env("TROUPE_DATA_DIR", dir.path())
            .env("TROUPE_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("troupe-lambda"),
    );

    // A function URL request for an unknown document: the api component's 404.
    let r = invoke(port, &get("/v1/documents/no-such-document")).expect("invoked");
    assert_eq!(r["statusCode"], 404, "{r}");
    assert_eq!(body(&r)["error"]["code"], "not_found", "{r}");

    // An upload through API Gateway, then the document it registered.
    let r = invoke(port, &fixture("apigw-v2-post.json")).expect("invoked");
    assert_eq!(r["statusCode"], 202, "{r}");
    let id = body(&r)["id"].as_str().expect("an id").to_owned();
    let r = invoke(port, &get(&format!("/v1/documents/{id}"))).expect("invoked");
    assert_eq!(r["statusCode"], 200, "{r}");
    assert_eq!(body(&r)["name"], "fjord.txt", "{r}");

    // An SQS record the function cannot place is a partial batch failure.
    let r = invoke(port, &fixture("sqs-foreign-queue.json")).expect("invoked");
    assert_eq!(
        r["batchItemFailures"][0]["itemIdentifier"], "059f36b4-87a3-44ab-83d2-661975830a7d",
        "{r}"
    );

    // An event it does not know is an invocation error that says what it got.
    let err = invoke(port, &json!({"hello": "world"})).expect_err("refused");
    assert!(err.contains("unrecognised Lambda event"), "{err}");
}
