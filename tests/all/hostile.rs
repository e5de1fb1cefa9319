//! Hostile input against the whole system: slow clients, open event streams, too many
//! connections, a huge upload, a function that traps. Each would take the host down,
//! starve it or leak its internals before it was bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use troupe_tests::{Child, InProcess, call};

/// Sends `head` (and `body`) on a new connection; returns the connection.
fn open(addr: SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(head.as_bytes()).expect("send head");
    s.write_all(body).expect("send body");
    s
}

/// Asks for document `id`'s live event stream on a new connection.
fn watch(addr: SocketAddr, id: &str) -> TcpStream {
    open(
        addr,
        &format!(
            "GET /v1/documents/{id}/events HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\n\r\n"
        ),
        b"",
    )
}

/// Reads a response's status line and headers.
fn read_head(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The peak resident memory of a process, bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

fn settle(base: &str, id: &str, within: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let (_, doc) = call("GET", &format!("{base}/v1/documents/{id}"), "", b"");
        if matches!(doc["status"].as_str(), Some("indexed" | "failed")) {
            return doc;
        }
        assert!(
            start.elapsed() < within,
            "document {id} did not settle: {doc}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn slow_uploads_and_open_event_streams_leave_the_api_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Child::pipeline(dir.path(), &["--no-embeddings"], &[]);
    let base = format!("http://{}", up.addr);
    // A document that stays in processing (no model): its event stream stays open.
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name=a.txt"),
        "text/plain",
        b"Basalt cools fast.",
    );
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_str().expect("id").to_owned();

    // 64 watchers, each holding an event stream open…
    let mut streams = Vec::new();
    for _ in 0..64 {
        let mut s = watch(up.addr, &id);
        let head = read_head(&mut s);
        assert!(head.starts_with("HTTP/1.1 200"), "a watcher: {head}");
        streams.push(s);
    }
    // …and the next one is told at once to come back later, not queued.
    let started = Instant::now();
    let mut extra = watch(up.addr, &id);
    let head = read_head(&mut extra);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // 64 uploads trickling in: headers and a few bytes of a 100 kB body.
    let mut slow = Vec::new();
    for i in 0..64 {
        slow.push(open(
            up.addr,
            &format!(
                "POST /v1/documents?name=slow{i}.txt HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n"
            ),
            b"Trickling",
        ));
    }
    std::thread::sleep(Duration::from_millis(500));

    // A normal upload and a read still answer promptly.
    let started = Instant::now();
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name=b.txt"),
        "text/plain",
        b"Obsidian is volcanic glass.",
    );
    assert_eq!(status, 202, "{reply}");
    let (status, doc) = call("GET", &format!("{base}/v1/documents/{id}"), "", b"");
    assert_eq!(status, 200, "{doc}");
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "an upload and a read took {took:?} beside slow clients"
    );
    drop(slow);
    drop(streams);
}

#[test]
fn connections_are_capped_per_client_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Child::pipeline(
        dir.path(),
        &["--no-embeddings", "--max-connections-per-client", "8"],
        &[],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // Connections from 127.0.0.2, another client address on loopback.
        let from = |ip: &str| {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(format!("{ip}:0").parse().unwrap())
                .expect("bind a loopback source address");
            socket.connect(up.addr)
        };
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(from("127.0.0.2").await.expect("connect"));
        }
        let mut ninth = from("127.0.0.2").await.expect("connect");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), ninth.read_to_string(&mut answer))
            .await
            .expect("answered")
            .ok();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("too_many_connections"), "{answer}");
        // Another address is served meanwhile, and so is the first once one closes.
        let mut other = from("127.0.0.3").await.expect("connect");
        other
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        other.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = from("127.0.0.2").await.expect("connect");
        again
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        again.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    });
}

#[test]
fn a_50_mb_text_upload_settles_with_the_host_under_1_gib() {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = Child::pipeline(dir.path(), &[], &[]);
    let base = format!("http://{}", up.addr);
    let mut text = String::with_capacity(50_000_000);
    let mut i = 0u64;
    while text.len() < 49_990_000 {
        text.push_str(&format!("Lava field {i} cooled into basalt columns. "));
        if i.is_multiple_of(40) {
            text.push_str("\n\n");
        }
        i += 1;
    }
    let (status, reply) = call(
        "POST",
        &format!("{base}/v1/documents?name=huge.txt"),
        "text/plain",
        text.as_bytes(),
    );
    drop(text);
    assert_eq!(status, 202, "{reply}");
    let id = reply["id"].as_str().expect("id");
    let doc = settle(&base, id, Duration::from_secs(300));
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(doc["error"].to_string().contains("too_large"), "{doc}");
    assert!(doc["error"].to_string().contains("max_text_bytes"), "{doc}");
    let peak = peak_rss(up.child.id());
    assert!(peak < 1 << 30, "the host peaked at {} MiB", peak >> 20);
    // The host is fine afterwards.
    let (status, _) = call(
        "POST",
        &format!("{base}/v1/documents?name=small.txt"),
        "text/plain",
        b"Pumice floats on water.",
    );
    assert_eq!(status, 202);
}

const APP: &str = r#"
[[trigger.http]]
route = "/hello"
component = "hello"
[component.hello]
source = "{dist}/hello.wasm"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_panics_answers_with_a_request_id_and_no_internals() {
    let host = InProcess::start(APP).await;
    let url = format!("http://{}/hello?panic", host.addr);
    let (status, headers, body) = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = agent.get(&url).call().expect("GET");
        let id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        (resp.status().as_u16(), id, body)
    })
    .await
    .unwrap();
    assert_eq!(status, 500, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let request_id = headers.expect("an x-request-id header");
    assert_eq!(reply["error"]["request_id"], request_id.as_str(), "{body}");
    assert_eq!(reply["error"]["code"], "trap", "{body}");
    for leak in [
        "secret-config",
        "/var/lib",
        "panicked",
        "wasm backtrace",
        ".rs:",
    ] {
        assert!(!body.contains(leak), "the answer leaks `{leak}`: {body}");
    }
    // A normal request still answers.
    let (status, _) = troupe_tests::get(&format!("http://{}/hello", host.addr));
    assert_eq!(status, 200);
    host.shutdown().await;
}

/// A CA and a server certificate it signs for 127.0.0.1 and localhost, written as
/// `server.crt`, `server.key` and `ca.pem` in `dir`; returns another CA's PEM.
fn certificates(dir: &std::path::Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let ours = ca("Troupe test CA");
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ours)
        .unwrap();
    std::fs::write(dir.join("server.crt"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ours.pem()).unwrap();
    ca("Someone else's CA").pem()
}

#[test]
fn postgres_is_reached_over_tls_as_sslmode_says_with_the_password_from_a_secret() {
    // moto, started by the harness (outside the test's runtime).
    let moto = troupe_tests::stack::AwsStack::new().endpoint;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(postgres_over_tls(moto));
}

async fn postgres_over_tls(moto: String) {
    use troupe_core::State as _;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = certificates(dir.path());
    std::fs::write(dir.path().join("other-ca.pem"), other_ca).unwrap();
    let (url, _server) =
        troupe_tests::stack::start_server("postgres", &["--tls", dir.path().to_str().unwrap()]);
    // The password lives in Secrets Manager (moto's), as infra/aws stores it.
    let clients = troupe_aws::Clients::with_endpoint(&moto, "us-east-1", "test", "test").await;
    let secret = format!("troupe-db-{}", std::process::id());
    clients
        .secrets
        .create_secret()
        .name(&secret)
        .secret_string(r#"{"username": "postgres", "password": "troupe-tls-test"}"#)
        .send()
        .await
        .expect("creating the secret");
    let password = clients.secret_password(&secret).await.unwrap();
    assert_eq!(password, "troupe-tls-test");

    // The server takes TLS only: plain TCP is refused, as RDS with rds.force_ssl does.
    let plain =
        troupe_postgres::Pg::connect_with(&format!("{url}?sslmode=disable"), Some(&password), 1)
            .await
            .unwrap_err()
            .to_string();
    assert!(
        plain.contains("no encryption") || plain.contains("pg_hba"),
        "{plain}"
    );
    // require: encrypted, certificate not checked.
    let pg =
        troupe_postgres::Pg::connect_with(&format!("{url}?sslmode=require"), Some(&password), 2)
            .await
            .expect("sslmode=require connects");
    let state = troupe_postgres::PgState::new(pg.clone());
    state.put("tls/check", b"over tls", None).await.unwrap();
    assert_eq!(
        state.get("tls/check").await.unwrap().unwrap().value,
        b"over tls"
    );
    // verify-full: the chain to our CA and the host name are checked.
    let ca = dir.path().join("ca.pem");
    troupe_postgres::Pg::connect_with(
        &format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display()),
        Some(&password),
        1,
    )
    .await
    .expect("verify-full with the right CA connects")
    .health()
    .await
    .unwrap();
    // …and a server whose certificate another CA signed is refused.
    let other = dir.path().join("other-ca.pem");
    let refused = troupe_postgres::Pg::connect_with(
        &format!("{url}?sslmode=verify-full&sslrootcert={}", other.display()),
        Some(&password),
        1,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    // A wrong password is refused, and the error does not repeat it.
    let wrong = troupe_postgres::Pg::connect_with(
        &format!("{url}?sslmode=require"),
        Some("not-the-password"),
        1,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(wrong.contains("password"), "{wrong}");
    assert!(!wrong.contains("not-the-password"), "{wrong}");
}

/// CPU time a process has used (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start past the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The clock tick (100 Hz on Linux unless the kernel says otherwise).
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(ticks * 1000 / hz)
}

#[test]
fn the_worker_listener_backs_off_when_out_of_file_descriptors() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("tempdir");
    // Few file descriptors, so that accepting runs out of them.
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(troupe_tests::troupe_bin())
        .args(["worker", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--model-dir")
        .arg(troupe_tests::model_dir())
        .env("TROUPE_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawning troupe worker");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr: SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the worker did not start: {line:?}"));
    let pid = child.id();
    let mut open = Vec::new();
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr) {
            open.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_time(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_time(pid) - before;
    assert!(
        used < Duration::from_millis(600),
        "the worker used {used:?} of CPU in 3 s with its accept failing (a spin loop)"
    );
    // Once connections close, it serves again.
    drop(open);
    std::thread::sleep(Duration::from_millis(1500));
    let (status, _) = troupe_tests::get(&format!("http://{addr}/health"));
    assert_eq!(status, 200);
    let _ = child.kill();
    let _ = child.wait();
}

/// Every input kept under `fuzz/regressions/<target>/` (the crashes the fuzz targets
/// found, and hostile shapes written by hand), replayed through the same entry points
/// as the targets: each must be an error or a value, never a panic.
#[test]
fn fuzz_regressions_decode_without_panicking() {
    let root = troupe_tests::repo_root().join("fuzz/regressions");
    let mut replayed = 0;
    for target in ["s3_notification", "manifest", "lambda_http"] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("a regression input");
            match target {
                "s3_notification" => {
                    let _ = troupe_aws::notifications::decode(&data, "documents");
                }
                "manifest" => {
                    if let Ok(text) = std::str::from_utf8(&data) {
                        let _ = troupe_host::manifest::App::parse(
                            std::path::Path::new("/nonexistent/spin.toml"),
                            text,
                        );
                    }
                }
                _ => {
                    if let Ok(event) = serde_json::from_slice::<serde_json::Value>(&data) {
                        let _ = troupe_lambda::events::kind(&event);
                        let _ = troupe_lambda::events::http_request(event);
                    }
                }
            }
            replayed += 1;
        }
    }
    assert!(
        replayed >= 3,
        "only {replayed} regression inputs under {}",
        root.display()
    );
}
