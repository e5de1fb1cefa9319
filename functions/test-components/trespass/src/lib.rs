//! HTTP test component that tries every `troupe:pipeline` import, granted or not.
//! `GET /trespass` answers a JSON object: for each attempt, `{"ok": …}` with what it
//! got, `{"denied": why}` or `{"error": …}`. Its manifest grants it only
//! `documents/scratch/default/mine/`, state `scratch/default/mine/`, and publishing
//! to `t.allowed`; everything else must come back `denied` (the test also checks
//! that nothing it tried to change changed). Every key names the tenant it acts for
//! (`default`), so what is refused is refused by the grants.

/// The `troupe:pipeline` bindings (`wit/troupe.wit`, world `imports`), private to
/// this component.
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "imports" });
}

use bindings::troupe;

use serde_json::{Value, json};
use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;
use troupe::pipeline::types::{Error, Event};
use troupe::pipeline::{blobs, embeddings, publisher, state, vectors};

fn verdict<T>(r: Result<T, Error>, ok: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(v) => json!({ "ok": ok(v) }),
        Err(Error::Denied(why)) => json!({ "denied": why }),
        Err(e) => json!({ "error": format!("{e:?}") }),
    }
}

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        source: String::new(),
        type_: "t.v1".into(),
        subject: Some("doc".into()),
        time: String::new(),
        datacontenttype: None,
        data: b"{}".to_vec(),
        tenant: None,
        session: None,
        traceparent: None,
    }
}

fn bytes(v: Option<Vec<u8>>) -> Value {
    v.map_or(Value::Null, |b| String::from_utf8_lossy(&b).into())
}

#[http_component]
fn handle(_req: Request) -> anyhow::Result<impl IntoResponse> {
    let d = "documents";
    let attempts = json!({
        // Granted.
        "put_scratch": verdict(blobs::put(d, "scratch/default/mine/own", b"mine"), |_| json!(true)),
        "get_scratch": verdict(blobs::get(d, "scratch/default/mine/own"), bytes),
        "state_scratch": verdict(state::put("scratch/default/mine/x", b"1", None), |v| json!(v)),
        "publish_allowed": verdict(publisher::publish("t.allowed", &event("e-allowed")), |_| json!(true)),
        // Narrowed to what is granted.
        "list_bucket": verdict(blobs::list_objects(d, "scratch/default/"), |k| json!(k)),
        "list_state": verdict(state::list_keys("scratch/default/"), |k| json!(k)),
        // Not granted.
        "get_doc": verdict(blobs::get(d, "docs/default/secret"), bytes),
        "put_doc": verdict(blobs::put(d, "docs/default/planted", b"x"), |_| json!(true)),
        "delete_doc": verdict(blobs::delete(d, "docs/default/secret"), |b| json!(b)),
        "list_docs": verdict(blobs::list_objects(d, "docs/default/"), |k| json!(k)),
        "get_other_bucket": verdict(blobs::get("archive", "scratch/default/mine/own"), bytes),
        "state_get": verdict(state::get("webhook/default/secret"), |e| json!(e.map(|e| e.version))),
        "state_put": verdict(state::put("doc/default/forged", b"{}", None), |v| json!(v)),
        "state_delete": verdict(state::delete("webhook/default/secret", None), |b| json!(b)),
        "read_events": verdict(state::read_events("default/doc"), |v| json!(v.len())),
        "append_event": verdict(state::append_event("default/doc", &event("e-log")), |v| json!(v)),
        "delete_events": verdict(state::delete_events("default/doc"), |v| json!(v)),
        "publish_other": verdict(publisher::publish("t.other", &event("e-other")), |_| json!(true)),
        "vectors_search": verdict(vectors::search("m", &[1.0, 0.0], 5), |h| json!(h.len())),
        "vectors_count": verdict(vectors::count("doc"), |n| json!(n)),
        "vectors_delete": verdict(vectors::delete_document("doc"), |n| json!(n)),
        "embeddings_info": verdict(embeddings::info(), |i| json!(i.name)),
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(attempts.to_string())
        .build())
}
