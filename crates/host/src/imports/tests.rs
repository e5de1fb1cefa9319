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

struct Fixture {
    _dir: tempfile::TempDir,
    local: troupe_local::Local,
    backends: Backends,
    gate: LogGate,
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
    }
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn caller(gate: &LogGate) -> Caller<'_> {
    Caller {
        component: "snoop",
        gate,
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
            caller: caller(&f.gate),
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
        let listed = view.list_objects("documents".into(), String::new()).await;
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
            caller: caller(&f.gate),
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
            caller: caller(&f.gate),
            state: granted.state.as_deref(),
            grants: &granted.grants,
        };
        let v = view.put("doc/t/d".into(), b"{}".to_vec(), Some(0)).await;
        assert_eq!(v.unwrap().unwrap(), 1);
        denied(view.get("webhook/e/1".into()).await);
        denied(view.put("webhook/e/1".into(), b"x".to_vec(), None).await);
        denied(view.delete("webhook/e/1".into(), None).await);
        denied(view.list_keys("webhook/".into()).await);
        let keys = view.list_keys(String::new()).await.unwrap().unwrap();
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
            caller: caller(&f.gate),
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
            caller: caller(&f.gate),
            vectors: granted.vectors.as_deref(),
            access: granted.grants.vectors,
        };
        let n = view.count("t".into(), "d".into()).await;
        assert_eq!(n.unwrap().unwrap(), 1);
        let hits = view.search("t".into(), "m".into(), vec![1.0, 0.0], 3).await;
        assert_eq!(hits.unwrap().unwrap().len(), 1);
        denied(view.delete_document("t".into(), "d".into()).await);
        assert_eq!(f.local.vectors.count("t", "d").await.unwrap(), 1);

        let none = Granted::new(&f.backends, Grants::default());
        let mut view = VectorsView {
            caller: caller(&f.gate),
            vectors: none.vectors.as_deref(),
            access: none.grants.vectors,
        };
        denied(view.count("t".into(), "d".into()).await);
        denied(view.search("t".into(), "m".into(), vec![1.0, 0.0], 3).await);
    });
}

#[test]
fn the_model_needs_a_grant_and_a_host_that_has_one() {
    let f = fixture();
    run(async {
        let mut view = EmbeddingsView {
            caller: caller(&f.gate),
            granted: false,
            model: None,
        };
        denied(view.info().await);
        denied(view.embed(vec!["x".into()]).await);
        let mut view = EmbeddingsView {
            caller: caller(&f.gate),
            granted: true,
            model: None,
        };
        match view.info().await.unwrap() {
            Err(GuestError::Unavailable(why)) => assert!(why.contains("without"), "{why}"),
            other => panic!("expected unavailable, got {other:?}"),
        }
    });
}
