//! Tenants: two teams on one deployment never see, search, change or hear about each
//! other's documents, whatever the API is asked and whatever a component tries
//! (the host binds every invocation to the tenant of its credential or event, and
//! scopes every import to it). Also `GET /v1/documents`, per-tenant webhooks and the
//! per-tenant quota.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use troupe_tests::corpus::Hooks;
use troupe_tests::stack::Stack;
use troupe_tests::{Child, components, repo_root, request};

/// A client of one tenant: its bearer key.
struct As<'a> {
    base: &'a str,
    key: &'a str,
}

impl As<'_> {
    fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let auth = format!("Bearer {}", self.key);
        let mut headers = vec![("authorization", auth.as_str())];
        if !content_type.is_empty() {
            headers.push(("content-type", content_type));
        }
        let reply = request(method, &format!("{}{path}", self.base), &headers, body);
        (reply.status, reply.body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.send("GET", path, "", b"")
    }

    fn upload(&self, name: &str, text: &str) -> String {
        let (status, reply) = self.send(
            "POST",
            &format!("/v1/documents?name={name}"),
            "text/markdown",
            text.as_bytes(),
        );
        assert_eq!(status, 202, "upload {name}: {reply}");
        reply["id"].as_str().expect("an id").to_owned()
    }

    /// Waits until the document settles; its record.
    fn settle(&self, id: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (status, doc) = self.get(&format!("/v1/documents/{id}"));
            if status == 200 && matches!(doc["status"].as_str(), Some("indexed" | "failed")) {
                return doc;
            }
            assert!(
                start.elapsed() < within,
                "{id} did not settle: {status} {doc}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The ids `GET /v1/documents` lists, every page.
    fn listed(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self.get(&format!("/v1/documents?limit=2&cursor={cursor}"));
            assert_eq!(status, 200, "{page}");
            for d in page["documents"].as_array().expect("documents") {
                ids.push(d["id"].as_str().expect("id").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return ids,
            }
        }
    }

    fn search(&self, query: &str) -> Vec<String> {
        let body = serde_json::json!({"query": query, "k": 10}).to_string();
        let (status, reply) = self.send("POST", "/v1/search", "application/json", body.as_bytes());
        assert_eq!(status, 200, "{reply}");
        reply["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["document_id"].as_str().expect("document_id").to_owned())
            .collect()
    }
}

/// `troupe keys create` on the stack's backend; the secret.
fn key(stack: &Stack, tenant: &str, scope: &str) -> String {
    troupe_tests::create_key(stack.data(), &stack.env(), tenant, scope)
}

/// The repository's pipeline plus `snoop` on `/v1/snoop`, granted every state key,
/// the documents bucket, vectors, the model and the deletion topic.
fn with_snoop(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_root().join("spin.toml")).expect("spin.toml");
    let dist = components().display().to_string();
    let manifest = format!(
        "{}\n{}",
        text.replace("functions/dist", &dist),
        r#"
[[trigger.http]]
route = "/v1/snoop"
component = "snoop"

[component.snoop]
source = "functions/dist/snoop.wasm"
[component.snoop.tool.troupe.grants]
state = ["*"]
event_logs = "write"
blobs = ["{{ bucket }}"]
vectors = "write"
embeddings = true
publish = ["troupe.document.deleted"]
"#
        .replace("functions/dist", &dist)
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, manifest).expect("writing the manifest");
    path
}

const WHALES: &str =
    "# Whales\n\nHumpback whales sing long songs that travel across the ocean basin.";
const TIDES: &str =
    "# Tides\n\nThe moon pulls the sea into two bulges, and the tides rise twice a day.";
const FOXES: &str = "# Foxes\n\nThe red fox hunts voles by leaping high and diving into the snow.";

troupe_tests::both!(tenants_reach_only_their_own_documents);

fn tenants_reach_only_their_own_documents(stack: fn(&Path) -> Stack) {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = stack(dir.path());
    let manifest = with_snoop(dir.path());
    stack.init(&manifest);
    let (a_key, b_key) = (
        key(&stack, "team-a", "admin"),
        key(&stack, "team-b", "write"),
    );
    let troupe = Child::pipeline_with(&stack, &manifest, &[], &[]);
    let base = format!("http://{}", troupe.addr);
    let a = As {
        base: &base,
        key: &a_key,
    };
    let b = As {
        base: &base,
        key: &b_key,
    };

    let a_doc = a.upload("whales.md", WHALES);
    let b_doc = b.upload("tides.md", TIDES);
    // A file dropped under `uploads/team-a/` is team A's.
    stack.put_object("uploads/team-a/foxes.md", FOXES.as_bytes());
    let within = Duration::from_secs(120);
    let a_record = a.settle(&a_doc, within);
    let b_record = b.settle(&b_doc, within);
    assert_eq!(a_record["status"], "indexed", "{a_record}");
    assert_eq!(b_record["status"], "indexed", "{b_record}");
    let start = Instant::now();
    let a_ids = loop {
        let ids = a.listed();
        if ids.len() == 2 || start.elapsed() > within {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let dropped = a_ids
        .iter()
        .find(|id| **id != a_doc)
        .unwrap_or_else(|| panic!("team A lists its drop-in: {a_ids:?}"))
        .clone();
    a.settle(&dropped, within);
    assert_eq!(b.listed(), std::slice::from_ref(&b_doc));

    // Neither reads, streams, searches or deletes the other's documents: 404, as if
    // they did not exist.
    for (me, mine, theirs) in [(&a, &a_doc, &b_doc), (&b, &b_doc, &a_doc)] {
        assert_eq!(me.get(&format!("/v1/documents/{mine}")).0, 200);
        for path in [
            format!("/v1/documents/{theirs}"),
            format!("/v1/documents/{theirs}/events"),
        ] {
            let (status, body) = me.get(&path);
            assert_eq!(status, 404, "{path}: {body}");
        }
        let (status, _) = me.send("DELETE", &format!("/v1/documents/{theirs}"), "", b"");
        assert_eq!(status, 404);
    }
    assert_eq!(b.get(&format!("/v1/documents/{dropped}")).0, 404);
    let a_hits = a.search("humpback whale songs");
    assert_eq!(a_hits.first(), Some(&a_doc), "{a_hits:?}");
    assert!(a_hits.iter().all(|d| *d != b_doc), "{a_hits:?}");
    let b_hits = b.search("humpback whale songs");
    assert!(b_hits.iter().all(|d| *d == b_doc), "{b_hits:?}");
    // The vectors are where their documents are, and only there.
    let chunks = |r: &Value| usize::try_from(r["chunks"].as_u64().expect("chunks")).unwrap();
    assert_eq!(
        stack.tenant_vector_count("team-a", &a_doc),
        chunks(&a_record)
    );
    assert_eq!(
        stack.tenant_vector_count("team-b", &b_doc),
        chunks(&b_record)
    );
    assert_eq!(stack.tenant_vector_count("team-b", &a_doc), 0);
    assert_eq!(stack.tenant_vector_count("default", &a_doc), 0);
    assert_eq!(stack.tenant_vector_count("team-a", &b_doc), 0);

    // A component acting for team B, granted everything, tries team A's data.
    let (status, tried) = b.get(&format!("/v1/snoop?victim=team-a&doc={a_doc}"));
    assert_eq!(status, 200, "{tried}");
    for attempt in [
        "state_get",
        "state_put",
        "state_delete",
        "state_list_victim",
        "state_list_all",
        "state_list_everything",
        "state_host_keys",
        "read_events",
        "append_event",
        "delete_events",
        "blob_get",
        "blob_put",
        "blob_delete",
        "blob_list_victim",
        "blob_list_all",
    ] {
        let why = tried[attempt]["denied"]
            .as_str()
            .unwrap_or_else(|| panic!("{attempt} was not denied: {tried:#}"));
        assert!(why.contains("tenant `team-b`"), "{attempt}: {why}");
    }
    // Vector calls take no tenant: they see team B's only.
    let seen = tried["vectors_search"]["ok"]
        .as_array()
        .expect("search ran");
    assert!(seen.iter().all(|d| *d == b_doc.as_str()), "{tried:#}");
    assert_eq!(tried["vectors_count"]["ok"], 0, "{tried:#}");
    assert_eq!(tried["vectors_delete"]["ok"], 0, "{tried:#}");
    // Its forged deletion was published as team B's: it finds nothing to delete.
    assert_eq!(tried["publish_deletion"]["ok"], true, "{tried:#}");
    let drained = Instant::now();
    while stack
        .queue_depths()
        .iter()
        .any(|(_, d)| d.ready + d.in_flight > 0)
    {
        assert!(drained.elapsed() < within, "{:?}", stack.queue_depths());
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = a.get(&format!("/v1/documents/{a_doc}"));
    assert_eq!(after.0, 200);
    assert_eq!(after.1["status"], "indexed", "{}", after.1);
    assert_eq!(
        stack.tenant_vector_count("team-a", &a_doc),
        chunks(&a_record)
    );
    assert_eq!(stack.keys(&format!("docs/team-a/{a_doc}")).len(), 1);
    assert!(stack.keys("docs/team-a/planted").is_empty());
    let (status, trail) = a.get(&format!("/v1/documents/{a_doc}/events"));
    assert_eq!(status, 200);
    assert!(
        trail
            .as_array()
            .expect("trail")
            .iter()
            .all(|e| e["tenant"] == "team-a" && e["type"] != "troupe.document.deleted.v1"),
        "{trail:#}"
    );
    // A's own deletion works, and B's document is untouched by it.
    let (status, _) = a.send("DELETE", &format!("/v1/documents/{a_doc}"), "", b"");
    assert_eq!(status, 202);
    let gone = Instant::now();
    while a.get(&format!("/v1/documents/{a_doc}")).0 != 404 {
        assert!(gone.elapsed() < within, "A's document was not deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        b.get(&format!("/v1/documents/{b_doc}")).1["status"],
        "indexed"
    );
    assert_eq!(
        stack.tenant_vector_count("team-b", &b_doc),
        chunks(&b_record)
    );
    drop(troupe);
}

/// Pages newest first, filters by status, and refuses what it did not give out; the
/// quota counts each tenant's bytes alone.
#[test]
fn documents_are_listed_newest_first_and_the_quota_is_per_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::local(dir.path());
    let a_key = key(&stack, "team-a", "write");
    let b_key = key(&stack, "team-b", "write");
    let troupe = Child::pipeline(
        stack.data(),
        &["--no-embeddings", "--tenant-max-bytes", "300"],
        &[],
    );
    let base = format!("http://{}", troupe.addr);
    let a = As {
        base: &base,
        key: &a_key,
    };
    let b = As {
        base: &base,
        key: &b_key,
    };
    let text = "x".repeat(90);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let id = a.upload(&format!("n{i}.md"), &text);
            std::thread::sleep(Duration::from_millis(5));
            id
        })
        .collect();
    // 270 of 300 bytes stored: the next 90 would pass team A's quota, not team B's.
    let (status, reply) = a.send(
        "POST",
        "/v1/documents?name=n3.md",
        "text/markdown",
        text.as_bytes(),
    );
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], "quota_exceeded", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--tenant-max-bytes")
    );
    let b_doc = b.upload("b.md", &text);

    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(a.listed(), newest_first);
    assert_eq!(b.listed(), [b_doc]);
    let (status, page) = a.get("/v1/documents?limit=1");
    assert_eq!(status, 200);
    assert_eq!(page["documents"][0]["id"], newest_first[0].as_str());
    assert_eq!(page["documents"][0]["name"], "n2.md", "{page}");
    // Filtering: without the model nothing gets past `uploaded` or `processing`.
    let (_, page) = a.get("/v1/documents?status=indexed");
    assert_eq!(page["documents"], serde_json::json!([]), "{page}");
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "status=done",
        "cursor=bm9wZQ",
    ] {
        let (status, reply) = a.get(&format!("/v1/documents?{bad}"));
        assert_eq!(status, 400, "{bad}: {reply}");
    }
    // Deleting gives the bytes back.
    let (status, _) = a.send("DELETE", &format!("/v1/documents/{}", ids[0]), "", b"");
    assert_eq!(status, 202);
    let start = Instant::now();
    loop {
        let (status, _) = a.send(
            "POST",
            "/v1/documents?name=n4.md",
            "text/markdown",
            text.as_bytes(),
        );
        if status == 202 {
            break;
        }
        assert_eq!(status, 413);
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the deletion never freed its bytes"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(troupe);
}

/// Each tenant's webhooks get its own documents' events, signed with its own secret;
/// a private address is refused unless the operator allows it.
#[test]
fn each_tenant_hears_only_its_own_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stack = Stack::local(dir.path());
    let a_key = key(&stack, "team-a", "admin");
    let b_key = key(&stack, "team-b", "admin");
    let write_key = key(&stack, "team-b", "write");
    {
        // Without --allow-private-webhooks, loopback and metadata addresses are refused.
        let troupe = Child::pipeline(
            stack.data(),
            &["--no-embeddings"],
            &[("TROUPE_ALLOW_PRIVATE_OUTBOUND", "false".into())],
        );
        let base = format!("http://{}", troupe.addr);
        let a = As {
            base: &base,
            key: &a_key,
        };
        for url in [
            "http://127.0.0.1:9/hooks",
            "http://169.254.169.254/",
            "http://localhost/x",
        ] {
            let body = serde_json::json!({ "url": url }).to_string();
            let (status, reply) =
                a.send("POST", "/v1/webhooks", "application/json", body.as_bytes());
            assert_eq!(status, 422, "{url}: {reply}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("--allow-private-webhooks")
            );
        }
        // Webhooks are an admin's: a write key may not register one.
        let w = As {
            base: &base,
            key: &write_key,
        };
        let body = serde_json::json!({ "url": "https://example.com/h" }).to_string();
        assert_eq!(
            w.send("POST", "/v1/webhooks", "application/json", body.as_bytes())
                .0,
            403
        );
    }
    let (a_hooks, a_url) = Hooks::start();
    let (b_hooks, b_url) = Hooks::start();
    let troupe = Child::pipeline(stack.data(), &["--allow-private-webhooks"], &[]);
    let base = format!("http://{}", troupe.addr);
    let a = As {
        base: &base,
        key: &a_key,
    };
    let b = As {
        base: &base,
        key: &b_key,
    };
    let register = |who: &As<'_>, url: &str| -> (String, String) {
        let body = serde_json::json!({ "url": url, "events": ["document.indexed"] }).to_string();
        let (status, reply) = who.send("POST", "/v1/webhooks", "application/json", body.as_bytes());
        assert_eq!(status, 201, "{reply}");
        let secret = reply["secret"]
            .as_str()
            .expect("the secret, once")
            .to_owned();
        assert!(secret.len() >= 40, "{secret}");
        (reply["id"].as_str().expect("id").to_owned(), secret)
    };
    let (a_hook, a_secret) = register(&a, &a_url);
    let (_, b_secret) = register(&b, &b_url);
    let (_, listed) = a.get("/v1/webhooks");
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1, "{listed}");
    assert!(listed["webhooks"][0].get("secret").is_none(), "{listed}");
    let (_, listed) = b.get("/v1/webhooks");
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1, "{listed}");
    // B cannot remove A's webhook.
    assert_eq!(
        b.send("DELETE", &format!("/v1/webhooks/{a_hook}"), "", b"")
            .0,
        404
    );

    let a_doc = a.upload("whales.md", WHALES);
    let b_doc = b.upload("tides.md", TIDES);
    a.settle(&a_doc, Duration::from_secs(120));
    b.settle(&b_doc, Duration::from_secs(120));
    let start = Instant::now();
    while a_hooks.received().is_empty() || b_hooks.received().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "webhooks were not called"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A moment for anything misrouted to arrive too.
    std::thread::sleep(Duration::from_secs(2));
    for (hooks, doc, secret) in [(&a_hooks, &a_doc, &a_secret), (&b_hooks, &b_doc, &b_secret)] {
        let got = hooks.received();
        assert_eq!(got.len(), 1, "one transition, one call: {got:?}");
        let (headers, body) = &got[0];
        let event: Value = serde_json::from_slice(body).expect("JSON");
        assert_eq!(event["document_id"], doc.as_str(), "{event}");
        assert_eq!(event["type"], "troupe.document.indexed.v1");
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(header("troupe-timestamp").as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(
            header("troupe-signature"),
            expected,
            "signed with its tenant's secret"
        );
    }
    assert_eq!(
        a.send("DELETE", &format!("/v1/webhooks/{a_hook}"), "", b"")
            .0,
        204
    );
    assert_eq!(a.get("/v1/webhooks").1["webhooks"], serde_json::json!([]));
    drop(troupe);
}
