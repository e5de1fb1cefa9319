//! Identity: API keys in the backend's state store (on both backend sets), OIDC tokens
//! from a real issuer on loopback, scopes, rate limits per credential, and the refusal
//! to serve an unauthenticated API beyond loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use troupe_host::auth::{KeyStore, Mode, Scope, Settings};
use troupe_tests::oidc::{self, Issuer, SigningKey};
use troupe_tests::stack::Stack;
use troupe_tests::{Child, Reply, manifest, repo_root, request, troupe_bin};

/// A manifest serving the `hello` component on every `/v1/` path: what passes the host's
/// checks is answered 200, whatever its method.
const HELLO_API: &str = r#"
[[trigger.http]]
route = "/v1/..."
component = "hello"
[component.hello]
source = "{dist}/hello.wasm"
"#;

/// A well-formed key that was never created.
const UNKNOWN_KEY: &str = "trp_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// `troupe keys ARGS…` on `stack`.
fn keys(stack: &Stack, args: &[&str]) -> std::process::Output {
    Command::new(troupe_bin())
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(stack.data())
        .env("TROUPE_LOG", "warn")
        .envs(stack.env())
        .output()
        .expect("running troupe keys")
}

/// A created key's `{"id", "key", "tenant", "scope"}`.
fn create_key(stack: &Stack, tenant: &str, scope: &str) -> Value {
    let out = keys(
        stack,
        &["create", "--tenant", tenant, "--scope", scope, "--json"],
    );
    assert!(
        out.status.success(),
        "troupe keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(text.trim_end().lines().count(), 1, "one JSON line: {text}");
    let key: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        (key["tenant"].as_str(), key["scope"].as_str()),
        (Some(tenant), Some(scope))
    );
    key
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get_as(url: &str, token: &str) -> Reply {
    request("GET", url, &[("authorization", &bearer(token))], b"")
}

/// A 401 that challenges for a bearer token (`invalid_token` when one was sent) with
/// the JSON error shape.
fn assert_unauthorized(r: &Reply, token_given: bool, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{what}: {r:?}");
    assert_eq!(
        challenge.contains(r#"error="invalid_token""#),
        token_given,
        "{what}: {r:?}"
    );
    assert_eq!(r.body["error"]["code"], "unauthorized", "{what}: {r:?}");
    assert!(r.body["error"]["message"].is_string(), "{what}: {r:?}");
}

/// Polls `url` with `token` until it is refused; the refusal, or `None` after `within`.
fn refused_within(url: &str, token: &str, within: Duration) -> Option<Reply> {
    let start = std::time::Instant::now();
    loop {
        let r = get_as(url, token);
        if r.status == 401 {
            return Some(r);
        }
        if start.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

troupe_tests::both!(api_keys_gate_the_api_and_revocation_reaches_a_second_host);

fn api_keys_gate_the_api_and_revocation_reaches_a_second_host(stack: fn(&Path) -> Stack) {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path());
    let writer = create_key(&stack, "acme", "write");
    let reader = create_key(&stack, "acme", "read");
    let (writer_key, reader_key) = (
        writer["key"].as_str().unwrap().to_owned(),
        reader["key"].as_str().unwrap().to_owned(),
    );
    assert!(
        writer_key.starts_with("trp_") && writer_key.len() >= 60,
        "{writer_key}"
    );
    let first = Child::pipeline_on(&stack, &["--no-embeddings"], &[]);
    // A second host on the same backend (on SQLite, the same data directory).
    let second_data: PathBuf = match &stack {
        Stack::Local { data } => data.clone(),
        Stack::Aws { .. } => dir.path().join("second"),
    };
    let second = Child::serve_with(
        &stack,
        &second_data,
        &repo_root().join("spin.toml"),
        &["--no-embeddings"],
        &[],
    );
    let base = format!("http://{}", first.addr);
    let other = format!("http://{}", second.addr);

    // Health stays open.
    assert_ne!(
        request("GET", &format!("{base}/health"), &[], b"").status,
        401
    );
    // No credential, a malformed header, an unknown key: 401, on routes and on the
    // host's own endpoints alike.
    let doc_url = format!("{base}/v1/documents/no-such-document");
    assert_unauthorized(&request("GET", &doc_url, &[], b""), false, "no header");
    assert_unauthorized(
        &request("POST", &format!("{base}/v1/embeddings"), &[], b"{}"),
        false,
        "no header on /v1/embeddings",
    );
    for malformed in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "trp_x"] {
        let r = request("GET", &doc_url, &[("authorization", malformed)], b"");
        assert_unauthorized(&r, false, malformed);
    }
    for bad in [UNKNOWN_KEY, "trp_not-a-key", "eyJhbGciOiJub25lIn0.e30."] {
        assert_unauthorized(&get_as(&doc_url, bad), true, bad);
    }
    // A wrong secret for a real id.
    let forged = format!("{}B", &writer_key[..writer_key.len() - 1]);
    let forged = if forged == writer_key {
        format!("{}C", &writer_key[..writer_key.len() - 1])
    } else {
        forged
    };
    assert_unauthorized(&get_as(&doc_url, &forged), true, "wrong secret");

    // A read key may read, not upload.
    let upload = format!("{base}/v1/documents?name=a.txt");
    let r = request(
        "POST",
        &upload,
        &[
            ("authorization", &bearer(&reader_key)),
            ("content-type", "text/plain"),
        ],
        b"reader text",
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body["error"]["code"], "forbidden", "{r:?}");
    let r = request(
        "POST",
        &upload,
        &[
            ("authorization", &bearer(&writer_key)),
            ("content-type", "text/plain"),
        ],
        b"The quick brown fox jumps over the lazy dog.",
    );
    assert_eq!(r.status, 202, "a write key uploads: {r:?}");
    let id = r.body["id"].as_str().expect("id").to_owned();
    let doc = format!("/v1/documents/{id}");
    assert_eq!(get_as(&format!("{base}{doc}"), &reader_key).status, 200);
    // The second host accepts the key too (and remembers it).
    assert_eq!(get_as(&format!("{other}{doc}"), &writer_key).status, 200);

    // Revoked from the CLI while both hosts run: both refuse it within seconds.
    let out = keys(&stack, &["revoke", writer["id"].as_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for host in [&other, &base] {
        let r = refused_within(
            &format!("{host}{doc}"),
            &writer_key,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("{host} still accepts the revoked key"));
        assert_unauthorized(&r, true, "revoked");
    }
    assert_eq!(get_as(&format!("{other}{doc}"), &reader_key).status, 200);

    // The listing shows both keys, the revoked one too, and never a secret or hash.
    let out = keys(&stack, &["list", "--tenant", "acme", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let listed: Vec<Value> = serde_json::from_str(&text).expect("JSON list");
    assert_eq!(listed.len(), 2, "{text}");
    let revoked = listed
        .iter()
        .find(|k| k["id"] == writer["id"])
        .expect("the writer is listed");
    assert!(revoked["revoked_at"].is_string(), "{text}");
    assert!(listed.iter().all(|k| k.get("hash").is_none()), "{text}");
    for key in [&writer_key, &reader_key] {
        let secret = key.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "{text}");
    }
    let out = keys(&stack, &["list", "--tenant", "other", "--json"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "[]");
}

#[test]
fn the_keys_command_refuses_bad_tenants_scopes_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::local(dir.path());
    for (args, says) in [
        (
            &["create", "--tenant", "Acme_Corp"][..],
            "not a tenant name",
        ),
        (
            &["create", "--tenant", "acme", "--scope", "owner"][..],
            "use read, write or admin",
        ),
    ] {
        let out = keys(&stack, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let out = keys(&stack, &["revoke", "0123456789abcdef"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no Troupe data"), "{err}");
    create_key(&stack, "acme", "admin");
    let out = keys(&stack, &["revoke", "0123456789abcdef"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no API key `0123456789abcdef`"),
        "{err}"
    );
    // The human form prints the key alone on stdout, the advice on stderr.
    let out = keys(&stack, &["create", "--tenant", "acme", "--label", "laptop"]);
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(
        key.trim().starts_with("trp_") && key.trim().lines().count() == 1,
        "{key}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not shown again"));
    let out = keys(&stack, &["list"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("laptop") && table.contains("admin"),
        "{table}"
    );
    assert!(
        !table.contains(key.trim().rsplit('_').next().unwrap()),
        "{table}"
    );
}

/// Claims of a token from `issuer` for the test audience, tenant `acme` (in `org`),
/// valid for ten minutes; `extra` overrides.
fn claims(issuer: &Issuer, extra: Value) -> Value {
    let now = oidc::now();
    let mut c = json!({
        "iss": issuer.url, "sub": "user-1", "aud": "troupe-test",
        "iat": now, "exp": now + 600, "org": "acme", "scope": "openid write",
    });
    for (k, v) in extra.as_object().expect("an object") {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// `troupe up` with [`HELLO_API`] on a fresh data directory and `extra` flags.
fn hello_api(dir: &Path, extra: &[&str]) -> Child {
    let path = manifest(dir, HELLO_API);
    let mut args = vec!["--no-embeddings"];
    args.extend_from_slice(extra);
    Child::pipeline_with(&Stack::local(dir), &path, &args, &[])
}

// OpenID Connect tokens from a real issuer.
mod oidc_tokens;

#[test]
fn a_burst_past_the_bucket_gets_429_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::local(dir.path());
    let a = create_key(&stack, "acme", "read")["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = create_key(&stack, "beta", "read")["key"]
        .as_str()
        .unwrap()
        .to_owned();
    // One request per 5 s, 3 at once.
    let up = hello_api(dir.path(), &["--rate-limit", "0.2", "--rate-burst", "3"]);
    let url = format!("http://{}/v1/x", up.addr);
    let replies: Vec<Reply> = (0..8).map(|_| get_as(&url, &a)).collect();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(
        replies.iter().all(|r| r.status == 200 || r.status == 429),
        "{replies:?}"
    );
    assert!(
        replies[..3].iter().all(|r| r.status == 200),
        "the burst passes: {replies:?}"
    );
    assert!(
        !limited.is_empty(),
        "8 requests in a row against a burst of 3: {replies:?}"
    );
    let mut wait = 0;
    for r in &limited {
        assert_eq!(r.body["error"]["code"], "rate_limited", "{r:?}");
        let secs: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("a whole-second Retry-After: {r:?}"));
        assert!((1..=5).contains(&secs), "{r:?}");
        wait = wait.max(secs);
    }
    // Another credential has its own bucket.
    assert_eq!(get_as(&url, &b).status, 200);
    // After the wait it asked for, the credential is served again.
    std::thread::sleep(Duration::from_secs(wait));
    assert_eq!(get_as(&url, &a).status, 200, "recovered after Retry-After");
}

/// `troupe up` on `listen` with `extra` flags: its exit status and stderr if it
/// stopped, or its address if it listens.
fn up_on(dir: &Path, listen: &str, extra: &[&str]) -> Result<String, String> {
    let path = manifest(dir, HELLO_API);
    let mut child = Command::new(troupe_bin())
        .args(["up", "--no-embeddings", "--listen", listen, "--data-dir"])
        .arg(dir.join("data"))
        .arg("--manifest")
        .arg(&path)
        .args(extra)
        .env("TROUPE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning troupe");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).ok();
    if let Some(addr) = line
        .trim()
        .rsplit("http://")
        .next()
        .filter(|a| a.contains(':'))
    {
        let addr = addr.to_owned();
        let _ = child.kill();
        let _ = child.wait();
        return Ok(addr);
    }
    let out = child.wait_with_output().expect("troupe's exit");
    Err(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_public_listener_without_auth_needs_insecure_no_auth() {
    let dir = tempfile::tempdir().unwrap();
    let err = up_on(dir.path(), "0.0.0.0:0", &[]).expect_err("refused without auth");
    assert!(err.contains("--insecure-no-auth"), "{err}");
    assert!(up_on(dir.path(), "0.0.0.0:0", &["--insecure-no-auth"]).is_ok());
    assert!(up_on(dir.path(), "0.0.0.0:0", &["--auth", "required"]).is_ok());
    // Once a key exists, authentication is on: the listener may face the network.
    let stack = Stack::local(dir.path());
    create_key(&stack, "acme", "read");
    assert!(up_on(dir.path(), "0.0.0.0:0", &[]).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_endpoints_need_a_credential_and_the_rest_stays_open() {
    use troupe_host::{App, Host, Options};
    let dir = tempfile::tempdir().unwrap();
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
    let local = troupe_local::Local::open(&dir.path().join("data")).unwrap();
    let endpoint: troupe_host::Endpoint =
        Arc::new(|_| Box::pin(async { (200, json!({"object": "list"})) }));
    let host = Host::new(
        App::load(&path).unwrap(),
        troupe_tests::backends(&local),
        Options {
            cache_dir: Some(dir.path().join("cache")),
            endpoints: vec![(
                troupe_host::http::Method::POST,
                "/v1/embeddings".into(),
                endpoint,
            )],
            auth: Settings {
                mode: Mode::Required,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (_, key) = KeyStore::new(Arc::new(local.state.clone()))
        .create(troupe_events::Tenant::new("acme").unwrap(), Scope::Read, "")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(host.run(listener, async move {
        let _ = stopped.await;
    }));
    let key = key.expose().to_owned();
    tokio::task::spawn_blocking(move || {
        let url = format!("{base}/v1/embeddings");
        assert_unauthorized(&request("POST", &url, &[], b"{}"), false, "embeddings");
        let r = request("POST", &url, &[("authorization", &bearer(&key))], b"{}");
        assert_eq!(r.status, 200, "a read key may embed: {r:?}");
        // Outside /v1: open.
        assert_eq!(
            request("GET", &format!("{base}/hello/x"), &[], b"").status,
            200
        );
        assert_ne!(
            request("GET", &format!("{base}/health"), &[], b"").status,
            401
        );
        assert_eq!(
            request("GET", &format!("{base}/metrics"), &[], b"").status,
            200
        );
        // However the API's path is spelled.
        for path in ["//v1/embeddings", "/V1/embeddings", "/%761/embeddings"] {
            let r = request("POST", &format!("{base}{path}"), &[], b"{}");
            assert_unauthorized(&r, false, path);
        }
    })
    .await
    .unwrap();
    let _ = stop.send(());
    served.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_adapter_authenticates_http_events_with_keys_in_postgres() {
    use troupe_lambda::{Adapter, Config};
    troupe_tests::components();
    let aws = tokio::task::spawn_blocking(troupe_tests::stack::AwsStack::new)
        .await
        .unwrap();
    let manifest = repo_root().join("spin.toml");
    aws.init(&manifest);
    let scale = aws.scale().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = KeyStore::new(Arc::new(scale.state.clone()))
        .create(
            troupe_events::Tenant::new("acme").unwrap(),
            Scope::Read,
            "lambda",
        )
        .await
        .unwrap();
    let adapter = Adapter::start(
        Config {
            manifest,
            component: Some("api".into()),
            model_dir: None,
            cache_dir: dir.path().join("cache"),
            tenant_max_bytes: None,
            auth: Settings::default(),
        },
        scale,
    )
    .await
    .unwrap();
    let event = |auth: Option<&str>| {
        let path = repo_root().join("crates/lambda/tests/fixtures/function-url-get.json");
        let mut e: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        e["rawPath"] = json!("/v1/documents/no-such-document");
        e["requestContext"]["http"]["path"] = json!("/v1/documents/no-such-document");
        if let Some(a) = auth {
            e["headers"]["authorization"] = json!(a);
        }
        e
    };
    let r = adapter.handle(event(None)).await.unwrap();
    assert_eq!(r["statusCode"], 401, "{r}");
    let challenge = r["headers"]["www-authenticate"]
        .as_str()
        .unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{r}");
    let r = adapter
        .handle(event(Some(&bearer(UNKNOWN_KEY))))
        .await
        .unwrap();
    assert_eq!(r["statusCode"], 401, "{r}");
    let r = adapter
        .handle(event(Some(&bearer(key.expose()))))
        .await
        .unwrap();
    assert_eq!(
        r["statusCode"], 404,
        "past authentication, the api answers: {r}"
    );
}

/// `troupe worker`'s own listener takes the deployment's keys for `/v1/embeddings`,
/// like the hosts' API; its `/health` stays open.
#[test]
fn the_workers_own_listener_needs_a_credential_too() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::local(dir.path());
    let key = create_key(&stack, "acme", "read");
    let key = key["key"].as_str().expect("key").to_owned();
    let worker = Child::worker_on(&stack, &[]);
    let base = format!("http://{}", worker.addr);
    let body = br#"{"input": ["tides rise twice a day"]}"#;
    let url = format!("{base}/v1/embeddings");
    let anonymous = request("POST", &url, &[("content-type", "application/json")], body);
    assert_unauthorized(&anonymous, false, "no credential");
    let wrong = request(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer trp_0000000000000000_nope"),
        ],
        body,
    );
    assert_unauthorized(&wrong, true, "an unknown key");
    let auth = bearer(&key);
    let ok = request(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body,
    );
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(
        ok.body["data"][0]["embedding"].as_array().map(Vec::len),
        Some(384)
    );
    assert_eq!(
        request("GET", &format!("{base}/health"), &[], b"").status,
        200
    );
    drop(worker);
}
