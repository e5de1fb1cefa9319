//! Grants enforced by the views, without wasm: each view is called as the linker
//! would call it, on real embedded backends, with what a component was and was not
//! granted.

use std::sync::Arc;

use troupe_core::{Blobs as _, Queue as _, State as _, Vectors as _};

use super::*;
use crate::bindings::{
    GuestEvent, blobs::Host as _, embeddings::Host as _, publisher::Host as _, state::Host as _,
    vectors::Host as _,
};
use crate::manifest::BlobGrant;
use crate::tenancy::Binding;

struct Fixture {
    _dir: tempfile::TempDir,
    local: troupe_local::Local,
    backends: Backends,
    gate: LogGate,
    /// Tenant `t`, which the views act for.
    binding: Binding,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let local = troupe_local::Local::open(&dir.path().join("data")).unwrap();
    let backends = Backends {
        queue: Arc::new(local.queue.clone()),
        dead_letters: Arc::new(local.queue.clone()),
        blobs: Arc::new(local.blobs.clone()),
        state: Arc::new(local.state.clone()),
        vectors: Arc::new(local.vectors.clone()),
        leases: None,
        embeddings: None,
    };
    Fixture {
        _dir: dir,
        local,
        backends,
        gate: LogGate::default(),
        binding: Binding::tenant(Tenant::new("t").unwrap()),
    }
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn caller(f: &Fixture) -> Caller<'_> {
    Caller {
        component: "snoop",
        gate: &f.gate,
        binding: &f.binding,
    }
}

fn denied<T: std::fmt::Debug>(r: Guest<T>) -> String {
    match r.expect("a denial is not a trap") {
        Err(GuestError::Denied(why)) => why,
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn event(id: &str) -> GuestEvent {
    GuestEvent::from(troupe_core::Event {
        id: id.into(),
        source: "/t".into(),
        ty: "t.v1".into(),
        subject: None,
        time: "2026-01-01T00:00:00Z".into(),
        datacontenttype: None,
        data: b"{}".to_vec(),
        tenant: None,
        session: None,
        traceparent: None,
    })
}

#[test]
fn blobs_reach_only_granted_buckets_and_prefixes() {
    let f = fixture();
    run(async {
        f.local
            .blobs
            .put("documents", "docs/t/secret", b"s")
            .await
            .unwrap();
        f.local
            .blobs
            .put("documents", "chunks/t/d/1", b"c")
            .await
            .unwrap();
        f.local
            .blobs
            .put("other", "chunks/t/d/1", b"o")
            .await
            .unwrap();
        let grants = Grants {
            blobs: vec![BlobGrant {
                bucket: "documents".into(),
                prefix: "chunks/".into(),
            }],
            ..Grants::default()
        };
        let granted = Granted::new(&f.backends, grants);
        let mut view = BlobsView {
            caller: caller(&f),
            blobs: granted.blobs.as_deref(),
            grants: &granted.grants,
        };
        let got = view.get("documents".into(), "chunks/t/d/1".into()).await;
        assert_eq!(got.unwrap().unwrap(), Some(b"c".to_vec()));
        let why = denied(view.get("documents".into(), "docs/t/secret".into()).await);
        assert!(
            why.contains("snoop") && why.contains("docs/t/secret"),
            "{why}"
        );
        assert!(
            why.contains("[component.snoop.tool.troupe.grants]"),
            "{why}"
        );
        denied(view.get("other".into(), "chunks/t/d/1".into()).await);
        denied(
            view.put("documents".into(), "docs/t/x".into(), b"x".to_vec())
                .await,
        );
        denied(
            view.delete("documents".into(), "docs/t/secret".into())
                .await,
        );
        denied(view.list_objects("documents".into(), "docs/".into()).await);
        // A listing wider than the grant is narrowed to it.
        let listed = view
            .list_objects("documents".into(), "chunks/t/".into())
            .await;
        assert_eq!(listed.unwrap().unwrap(), vec!["chunks/t/d/1".to_owned()]);
        // Nothing denied was touched.
        let secret = f
            .local
            .blobs
            .get("documents", "docs/t/secret")
            .await
            .unwrap();
        assert_eq!(secret, Some(b"s".to_vec()));
        assert_eq!(
            f.local.blobs.get("documents", "docs/t/x").await.unwrap(),
            None
        );

        let none = Granted::new(&f.backends, Grants::default());
        assert!(none.blobs.is_none() && none.queue.is_none() && none.state.is_none());
        assert!(none.vectors.is_none() && none.embeddings.is_none());
        let mut view = BlobsView {
            caller: caller(&f),
            blobs: none.blobs.as_deref(),
            grants: &none.grants,
        };
        denied(view.get("documents".into(), "chunks/t/d/1".into()).await);
    });
}

#[test]
fn state_reaches_only_granted_prefixes_and_logs_as_far_as_granted() {
    let f = fixture();
    run(async {
        f.local
            .state
            .put("webhook/e/1", b"claim", None)
            .await
            .unwrap();
        f.local
            .state
            .append_event("t/d", &event("e1").into())
            .await
            .unwrap();
        let grants = Grants {
            state: vec!["doc/".into()],
            event_logs: Access::Read,
            ..Grants::default()
        };
        let granted = Granted::new(&f.backends, grants);
        let mut view = StateView {
            caller: caller(&f),
            state: granted.state.as_deref(),
            grants: &granted.grants,
        };
        let v = view.put("doc/t/d".into(), b"{}".to_vec(), Some(0)).await;
        assert_eq!(v.unwrap().unwrap(), 1);
        denied(view.get("webhook/e/1".into()).await);
        denied(view.put("webhook/e/1".into(), b"x".to_vec(), None).await);
        denied(view.delete("webhook/e/1".into(), None).await);
        denied(view.list_keys("webhook/".into()).await);
        let keys = view.list_keys("doc/t/".into()).await.unwrap().unwrap();
        assert_eq!(keys, vec!["doc/t/d".to_owned()]);
        let log = view.read_events("t/d".into()).await.unwrap().unwrap();
        assert_eq!(log.len(), 1);
        let why = denied(view.append_event("t/d".into(), event("e2")).await);
        assert!(why.contains("event_logs = \"write\""), "{why}");
        denied(view.delete_events("t/d".into()).await);
        let claim = f.local.state.get("webhook/e/1").await.unwrap().unwrap();
        assert_eq!(claim.value, b"claim");
        assert_eq!(f.local.state.read_events("t/d").await.unwrap().len(), 1);
    });
}

#[test]
fn publishing_reaches_only_granted_topics() {
    let f = fixture();
    run(async {
        for (name, topic) in [("a", "t.granted"), ("b", "t.other")] {
            f.local
                .queue
                .subscribe(&troupe_core::Subscription {
                    name: name.into(),
                    topics: vec![topic.into()],
                    subject_prefix: None,
                    policy: Default::default(),
                })
                .await
                .unwrap();
        }
        let grants = Grants {
            publish: ["t.granted".to_owned()].into(),
            ..Grants::default()
        };
        let granted = Granted::new(&f.backends, grants);
        let mut view = PublisherView {
            caller: caller(&f),
            queue: granted.queue.as_deref(),
            grants: &granted.grants,
        };
        view.publish("t.granted".into(), event("e1"))
            .await
            .unwrap()
            .unwrap();
        let why = denied(view.publish("t.other".into(), event("e2")).await);
        assert!(why.contains("\"t.other\" to `publish`"), "{why}");
        assert_eq!(f.local.queue.depth("a").await.unwrap().ready, 1);
        assert_eq!(f.local.queue.depth("b").await.unwrap().ready, 0);
    });
}

#[test]
fn vectors_search_and_count_with_read_and_delete_only_with_write() {
    let f = fixture();
    run(async {
        let record = troupe_core::VectorRecord {
            tenant: "t".into(),
            document: "d".into(),
            chunk: "0".into(),
            model: "m".into(),
            vector: vec![1.0, 0.0],
            text: "x".into(),
        };
        f.local.vectors.upsert(&[record]).await.unwrap();
        let granted = Granted::new(
            &f.backends,
            Grants {
                vectors: Access::Read,
                ..Grants::default()
            },
        );
        let mut view = VectorsView {
            caller: caller(&f),
            vectors: granted.vectors.as_deref(),
            access: granted.grants.vectors,
        };
        let n = view.count("d".into()).await;
        assert_eq!(n.unwrap().unwrap(), 1);
        let hits = view.search("m".into(), vec![1.0, 0.0], 3).await;
        assert_eq!(hits.unwrap().unwrap().len(), 1);
        denied(view.delete_document("d".into()).await);
        assert_eq!(f.local.vectors.count("t", "d").await.unwrap(), 1);

        let none = Granted::new(&f.backends, Grants::default());
        let mut view = VectorsView {
            caller: caller(&f),
            vectors: none.vectors.as_deref(),
            access: none.grants.vectors,
        };
        denied(view.count("d".into()).await);
        denied(view.search("m".into(), vec![1.0, 0.0], 3).await);
    });
}

#[test]
fn the_model_needs_a_grant_and_a_host_that_has_one() {
    let f = fixture();
    run(async {
        let mut view = EmbeddingsView {
            caller: caller(&f),
            granted: false,
            model: None,
        };
        denied(view.info().await);
        denied(view.embed(vec!["x".into()]).await);
        let mut view = EmbeddingsView {
            caller: caller(&f),
            granted: true,
            model: None,
        };
        match view.info().await.unwrap() {
            Err(GuestError::Unavailable(why)) => assert!(why.contains("without"), "{why}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    });
}

/// Everything a tenant's invocation may name is checked against its tenant: another
/// tenant's keys, objects, logs and vectors answer `denied` (or are simply not
/// there), however wide the grants; published events carry the invocation's tenant.
#[test]
fn an_invocation_reaches_only_its_own_tenant() {
    let f = fixture();
    run(async {
        let s = &f.local.state;
        s.put("doc/u/secret", b"u's", None).await.unwrap();
        s.put("doc/t/mine", b"t's", None).await.unwrap();
        s.put("_troupe/t/x", b"host's", None).await.unwrap();
        s.append_event("u/secret", &event("u1").into())
            .await
            .unwrap();
        let b = &f.local.blobs;
        b.put("documents", "docs/u/secret", b"u's").await.unwrap();
        b.put("documents", "uploads/dropped.pdf", b"d")
            .await
            .unwrap();
        b.put("documents", "uploads/other.pdf", b"o").await.unwrap();
        let record = |tenant: &str| troupe_core::VectorRecord {
            tenant: tenant.into(),
            document: "d".into(),
            chunk: "0".into(),
            model: "m".into(),
            vector: vec![1.0, 0.0],
            text: tenant.into(),
        };
        f.local
            .vectors
            .upsert(&[record("u"), record("t")])
            .await
            .unwrap();

        let all = Grants {
            state: vec![String::new()],
            event_logs: Access::Write,
            blobs: vec![BlobGrant {
                bucket: "documents".into(),
                prefix: String::new(),
            }],
            vectors: Access::Write,
            publish: ["t.any".to_owned()].into(),
            ..Grants::default()
        };
        let granted = Granted::new(&f.backends, all);
        let mut state = StateView {
            caller: caller(&f),
            state: granted.state.as_deref(),
            grants: &granted.grants,
        };
        for key in [
            "doc/u/secret",
            "doc/t",
            "_troupe/t/x",
            "secret",
            "u/doc/secret",
        ] {
            let why = denied(state.get(key.into()).await);
            assert!(
                why.contains("tenant `t`") && why.contains("<kind>/t/"),
                "{why}"
            );
            denied(state.put(key.into(), b"x".to_vec(), None).await);
            denied(state.delete(key.into(), None).await);
        }
        for prefix in ["", "doc/", "doc/u/", "_troupe/"] {
            denied(state.list_keys(prefix.into()).await);
        }
        let mine = state.list_keys("doc/t/".into()).await.unwrap().unwrap();
        assert_eq!(mine, vec!["doc/t/mine".to_owned()]);
        denied(state.read_events("u/secret".into()).await);
        denied(state.append_event("u/secret".into(), event("t1")).await);
        denied(state.delete_events("u/secret".into()).await);
        assert_eq!(s.get("doc/u/secret").await.unwrap().unwrap().value, b"u's");
        assert_eq!(s.read_events("u/secret").await.unwrap().len(), 1);

        let mut blobs = BlobsView {
            caller: caller(&f),
            blobs: granted.blobs.as_deref(),
            grants: &granted.grants,
        };
        denied(blobs.get("documents".into(), "docs/u/secret".into()).await);
        denied(
            blobs
                .delete("documents".into(), "docs/u/secret".into())
                .await,
        );
        denied(blobs.list_objects("documents".into(), "docs/".into()).await);
        denied(
            blobs
                .get("documents".into(), "uploads/dropped.pdf".into())
                .await,
        );
        // An object that announced the invocation may be read and removed, not written.
        let mut announced = Binding::tenant(Tenant::new("t").unwrap());
        announced.objects = vec![("documents".into(), "uploads/dropped.pdf".into())];
        blobs.caller.binding = &announced;
        let got = blobs
            .get("documents".into(), "uploads/dropped.pdf".into())
            .await;
        assert_eq!(got.unwrap().unwrap(), Some(b"d".to_vec()));
        denied(
            blobs
                .put(
                    "documents".into(),
                    "uploads/dropped.pdf".into(),
                    b"x".to_vec(),
                )
                .await,
        );
        denied(
            blobs
                .get("documents".into(), "uploads/other.pdf".into())
                .await,
        );
        assert_eq!(
            b.get("documents", "docs/u/secret").await.unwrap(),
            Some(b"u's".to_vec())
        );

        let mut vectors = VectorsView {
            caller: caller(&f),
            vectors: granted.vectors.as_deref(),
            access: granted.grants.vectors,
        };
        let hits = vectors
            .search("m".into(), vec![1.0, 0.0], 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].text, "t");
        assert_eq!(
            vectors.delete_document("d".into()).await.unwrap().unwrap(),
            1
        );
        assert_eq!(f.local.vectors.count("u", "d").await.unwrap(), 1);

        f.local
            .queue
            .subscribe(&troupe_core::Subscription {
                name: "any".into(),
                topics: vec!["t.any".into()],
                subject_prefix: None,
                policy: Default::default(),
            })
            .await
            .unwrap();
        let mut publisher = PublisherView {
            caller: caller(&f),
            queue: granted.queue.as_deref(),
            grants: &granted.grants,
        };
        let mut forged = troupe_core::Event::from(event("e1"));
        forged.tenant = Some("u".into());
        publisher
            .publish("t.any".into(), forged.into())
            .await
            .unwrap()
            .unwrap();
        let got = f
            .local
            .queue
            .receive("any", 1, std::time::Duration::ZERO)
            .await
            .unwrap();
        let sent = troupe_core::Event::from_json(&got[0].body).unwrap();
        assert_eq!(sent.tenant.as_deref(), Some("t"));
    });
}
