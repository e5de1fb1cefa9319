//! Harness for Troupe's whole-system tests: builds the function components once,
//! writes manifests that point at them, runs hosts in-process or the `troupe` binary
//! as a child process, and talks to them over loopback HTTP.
//!
//! # Layout
//!
//! Everything is in this file: [`components`] (the built `.wasm` files), [`manifest`]
//! (spin.toml text), [`InProcess`] (a host on this runtime), [`Child`] (the binary)
//! and small HTTP helpers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub mod api;

/// Each named whole-system test, `fn name(stack: fn(&Path) -> Stack)`, on both backend
/// sets: `local::name` (the embedded default) and `aws::name` (S3 + SQS + Postgres).
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test]
            fn $name() { super::$name($crate::stack::Stack::local) })*
        }
        mod aws {
            $(#[test]
            fn $name() { super::$name($crate::stack::Stack::aws) })*
        }
    };
}
pub mod corpus;
pub mod oidc;
pub mod otlp;
pub mod sse;
pub mod stack;

use troupe_host::{App, Backends, Host, Options};
use troupe_local::Local;

/// The repository root: the nearest folder holding `spin.toml` above the running
/// package (cargo sets `CARGO_MANIFEST_DIR` when it runs a test), else above this
/// crate as it was compiled (a cached test binary may come from another checkout).
pub fn repo_root() -> PathBuf {
    let here = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    here.ancestors()
        .find(|d| d.join("spin.toml").is_file())
        .map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .parent()
                    .expect("tests/ sits in the repo")
                    .to_owned()
            },
            Path::to_path_buf,
        )
}

/// Builds the function components once per test binary; returns `functions/dist`.
pub fn components() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| {
        let root = repo_root();
        let status = Command::new(root.join("scripts/build-functions.sh"))
            .status()
            .expect("running scripts/build-functions.sh");
        assert!(status.success(), "building the function components failed");
        root.join("functions/dist")
    })
}

/// Path of a built component, e.g. `component("spin_loop")`.
pub fn component(name: &str) -> String {
    components()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// A manifest: the given trigger and component tables after a standard header;
/// `{dist}` in `body` becomes the components folder.
pub fn manifest(dir: &Path, body: &str) -> PathBuf {
    let text = format!(
        "spin_manifest_version = 2\n[application]\nname = \"test\"\n{}",
        body.replace("{dist}", &components().display().to_string())
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).expect("writing spin.toml");
    path
}

/// Backends over an embedded data directory.
pub fn backends(local: &Local) -> Backends {
    Backends {
        queue: Arc::new(local.queue.clone()),
        dead_letters: Arc::new(local.queue.clone()),
        blobs: Arc::new(local.blobs.clone()),
        state: Arc::new(local.state.clone()),
        vectors: Arc::new(local.vectors.clone()),
        leases: Some(Arc::new(local.queue.clone())),
        embeddings: None,
    }
}

/// A loaded host that is not serving: for driving triggers by hand.
pub async fn host_only(body: &str) -> (Host, Local, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = manifest(dir.path(), body);
    let app = App::load(&path).expect("manifest loads");
    let local = Local::open(&dir.path().join("data")).expect("data dir opens");
    let host = Host::new(
        app,
        backends(&local),
        Options {
            cache_dir: Some(dir.path().join("cache")),
            ..Default::default()
        },
    )
    .await
    .expect("host starts");
    (host, local, dir)
}

/// A host running on the current tokio runtime.
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its backends (same data directory).
    pub local: Local,
    /// The host, for direct invocations.
    pub host: Host,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// Loads `body` as a manifest over a fresh data directory and serves it.
    pub async fn start(body: &str) -> Self {
        let (host, local, dir) = host_only(body).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(host.clone().run(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            local,
            host,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops receiving, waits for in-flight work.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("host task").expect("host run");
        }
    }
}

/// The embedding model folder, fetched once per test binary by `scripts/fetch-model.sh`.
pub fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo_root();
        let status = Command::new(root.join("scripts/fetch-model.sh"))
            .status()
            .expect("running scripts/fetch-model.sh");
        assert!(status.success(), "fetching the embedding model failed");
        root.join("models/all-MiniLM-L6-v2")
    })
}

/// The `troupe` binary built next to this test executable.
pub fn troupe_bin() -> PathBuf {
    workspace_bin("troupe")
}

/// A binary of this workspace, built beside the tests (`troupe`, `troupe-lambda`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `make test` (it builds the binary first)",
        bin.display()
    );
    bin
}

/// `troupe keys create` on the data directory `data` (with `env`: a backend set's
/// environment), for `tenant` with `scope`; the new key's secret.
pub fn create_key(data: &Path, env: &[(&str, String)], tenant: &str, scope: &str) -> String {
    let out = Command::new(troupe_bin())
        .args(["keys", "create", "--data-dir"])
        .arg(data)
        .args(["--tenant", tenant, "--scope", scope, "--json"])
        .env("TROUPE_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running troupe keys create");
    assert!(
        out.status.success(),
        "troupe keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(created["tenant"], tenant, "{created}");
    created["key"].as_str().expect("key").to_owned()
}

/// `troupe` running as a child process.
pub struct Child {
    /// The process.
    pub child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Child {
    /// Runs `troupe up` on `data_dir` with `manifest` (without the embedding model),
    /// waiting until it listens.
    pub fn up(data_dir: &Path, manifest: &Path) -> Self {
        Self::spawn("up", data_dir, manifest, &["--no-embeddings".into()], &[])
    }

    /// Like [`Child::up`], with the embedding model (fetched first if needed).
    pub fn up_with_embeddings(data_dir: &Path, manifest: &Path) -> Self {
        let model = model_dir();
        Self::spawn(
            "up",
            data_dir,
            manifest,
            &["--model-dir".into(), model.display().to_string()],
            &[],
        )
    }

    /// `troupe up` with the repository's pipeline (`spin.toml`), the embedding model
    /// unless `extra` says `--no-embeddings`, more flags and environment variables.
    pub fn pipeline(data_dir: &Path, extra: &[&str], env: &[(&str, String)]) -> Self {
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if !extra.contains(&"--no-embeddings") {
            args.extend(["--model-dir".into(), model_dir().display().to_string()]);
        }
        components();
        Self::spawn("up", data_dir, &repo_root().join("spin.toml"), &args, env)
    }

    /// [`Child::pipeline`] on a backend set: `troupe init` first on AWS, then `troupe
    /// up` with the set's environment.
    pub fn pipeline_on(stack: &stack::Stack, extra: &[&str], env: &[(&str, String)]) -> Self {
        stack.init(&repo_root().join("spin.toml"));
        let mut all = stack.env();
        all.extend(env.iter().cloned());
        Self::pipeline(stack.data(), extra, &all)
    }

    /// [`Child::pipeline_on`] with another manifest (e.g.
    /// [`corpus::short_lease_pipeline`]).
    pub fn pipeline_with(
        stack: &stack::Stack,
        manifest: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        stack.init(manifest);
        components();
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if !extra.contains(&"--no-embeddings") {
            args.extend(["--model-dir".into(), model_dir().display().to_string()]);
        }
        let mut all = stack.env();
        all.extend(env.iter().cloned());
        Self::spawn("up", stack.data(), manifest, &args, &all)
    }

    /// `troupe serve` (the functions without the embedding-job consumer) with the
    /// repository's pipeline on a backend set, without the model.
    pub fn serve_on(stack: &stack::Stack, env: &[(&str, String)]) -> Self {
        stack.init(&repo_root().join("spin.toml"));
        Self::serve_with(
            stack,
            stack.data(),
            &repo_root().join("spin.toml"),
            &["--no-embeddings"],
            env,
        )
    }

    /// `troupe serve` with `manifest` on a backend set that [`stack::Stack::init`]
    /// prepared, its data directory `data` (on AWS only compiled components live there,
    /// so several hosts on one set each get their own); `extra` flags, e.g.
    /// `--no-embeddings`, else with the model, for search queries and chunking.
    pub fn serve_with(
        stack: &stack::Stack,
        data: &Path,
        manifest: &Path,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Self {
        components();
        let mut args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        if !extra.contains(&"--no-embeddings") {
            args.extend(["--model-dir".into(), model_dir().display().to_string()]);
        }
        let mut all = stack.env();
        all.extend(env.iter().cloned());
        Self::spawn("serve", data, manifest, &args, &all)
    }

    /// `troupe worker` (the embedding-job consumer and `/v1/embeddings`) on a backend
    /// set, with the model.
    pub fn worker_on(stack: &stack::Stack, env: &[(&str, String)]) -> Self {
        let mut all = stack.env();
        all.extend(env.iter().cloned());
        let args = [
            "worker".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            stack.data().display().to_string(),
            "--model-dir".into(),
            model_dir().display().to_string(),
        ];
        Self::spawn_args(&args, &all)
    }

    fn spawn(
        command: &str,
        data_dir: &Path,
        manifest: &Path,
        extra: &[String],
        env: &[(&str, String)],
    ) -> Self {
        let mut args: Vec<String> = [command, "--listen", "127.0.0.1:0", "--data-dir"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(data_dir.display().to_string());
        args.push("--manifest".into());
        args.push(manifest.display().to_string());
        args.extend(extra.iter().cloned());
        Self::spawn_args(&args, env)
    }

    /// Runs `troupe ARGS…` and waits for the address it announces on its first line.
    fn spawn_args(args: &[String], env: &[(&str, String)]) -> Self {
        Self::run(args, env, None)
    }

    /// Runs `troupe ARGS…` (its log lines into the file `log`, when given) and waits
    /// for the address it announces on its first line.
    pub fn run(args: &[String], env: &[(&str, String)], log: Option<&Path>) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("creating the log file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(troupe_bin())
            .args(args)
            .env("TROUPE_LOG", "warn")
            // Webhook receivers in tests listen on loopback.
            .env("TROUPE_ALLOW_PRIVATE_OUTBOUND", "true")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning troupe");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading troupe's first line");
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("troupe did not announce its address: {line:?}"));
        Self { child, addr }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request as a test server (a webhook receiver) reads it: lowercase headers
/// and the body.
pub type Request = (Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request (request line, headers, a `content-length` body) from
/// `reader`, leaving the connection open for the answer.
pub fn read_request(reader: &mut BufReader<std::net::TcpStream>) -> Request {
    let mut headers = Vec::new();
    let mut line = String::new();
    let _ = reader.read_line(&mut line); // request line
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.trim().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len = headers
        .iter()
        .find(|h| h.0 == "content-length")
        .and_then(|h| h.1.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    let _ = std::io::Read::read_exact(reader, &mut body);
    (headers, body)
}

/// GET `url`; (status, body).
pub fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// Sends `method url` with `body` and `content_type`; (status, JSON body or string).
pub fn call(method: &str, url: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let sent = match method {
        "GET" => agent.get(url).call(),
        "DELETE" => agent.delete(url).call(),
        _ => agent
            .post(url)
            .header("content-type", content_type)
            .send(body),
    };
    let mut resp = sent.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// An HTTP answer: status, headers (lowercase names) and the body as JSON (or a
/// string when it is not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: serde_json::Value,
}

impl Reply {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method url` with request `headers` and `body` (GET, HEAD and DELETE send
/// none).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let sent = match method {
        "GET" | "HEAD" | "DELETE" => {
            let mut req = match method {
                "GET" => agent.get(url),
                "HEAD" => agent.head(url),
                _ => agent.delete(url),
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
        _ => {
            let mut req = match method {
                "PUT" => agent.put(url),
                "PATCH" => agent.patch(url),
                _ => agent.post(url),
            };
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body)
        }
    };
    let mut resp = sent.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T>(
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
