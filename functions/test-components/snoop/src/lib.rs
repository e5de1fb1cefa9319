//! HTTP test component granted nearly everything, which tries to reach another
//! tenant's data: `GET /snoop?victim=<tenant>&doc=<id>` names the victim's tenant
//! and document and answers a JSON object with, for each attempt, `{"ok": …}` with
//! what it got, `{"denied": why}` or `{"error": …}`. Whatever tenant the host bound
//! the request to, none of the victim's data may come back or change.

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

fn bytes(v: Option<Vec<u8>>) -> Value {
    v.map_or(Value::Null, |b| String::from_utf8_lossy(&b).into())
}

fn param(query: &str, key: &str) -> String {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_default()
        .to_owned()
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let query = req.query().to_owned();
    let (victim, doc) = (param(&query, "victim"), param(&query, "doc"));
    let d = "documents";
    let record = format!("doc/{victim}/{doc}");
    // A deletion of the victim's document, addressed to the victim's tenant.
    let forged = Event {
        id: format!("{doc}-deleted"),
        source: String::new(),
        type_: "troupe.document.deleted.v1".into(),
        subject: Some(doc.clone()),
        time: String::new(),
        datacontenttype: Some("application/json".into()),
        data: json!({ "document": doc }).to_string().into_bytes(),
        tenant: Some(victim.clone()),
        session: Some(doc.clone()),
        traceparent: None,
    };
    let query_vector = embeddings::embed(&["the quick brown fox".to_owned()])
        .ok()
        .and_then(|mut v| v.pop())
        .unwrap_or_else(|| vec![0.0; 384]);
    let model = embeddings::info().map(|i| i.name).unwrap_or_default();
    let attempts = json!({
        "state_get": verdict(state::get(&record), |e| json!(e.map(|e| e.version))),
        "state_put": verdict(state::put(&record, b"{}", None), |v| json!(v)),
        "state_delete": verdict(state::delete(&record, None), |b| json!(b)),
        "state_list_victim": verdict(state::list_keys(&format!("doc/{victim}/")), |k| json!(k)),
        "state_list_all": verdict(state::list_keys("doc/"), |k| json!(k)),
        "state_list_everything": verdict(state::list_keys(""), |k| json!(k)),
        "state_host_keys": verdict(state::list_keys("_troupe/"), |k| json!(k)),
        "read_events": verdict(state::read_events(&format!("{victim}/{doc}")), |v| json!(v.len())),
        "append_event": verdict(state::append_event(&format!("{victim}/{doc}"), &forged), |v| json!(v)),
        "delete_events": verdict(state::delete_events(&format!("{victim}/{doc}")), |v| json!(v)),
        "blob_get": verdict(blobs::get(d, &format!("docs/{victim}/{doc}")), bytes),
        "blob_put": verdict(blobs::put(d, &format!("docs/{victim}/planted"), b"x"), |_| json!(true)),
        "blob_delete": verdict(blobs::delete(d, &format!("docs/{victim}/{doc}")), |b| json!(b)),
        "blob_list_victim": verdict(blobs::list_objects(d, &format!("docs/{victim}/")), |k| json!(k)),
        "blob_list_all": verdict(blobs::list_objects(d, "docs/"), |k| json!(k)),
        "vectors_search": verdict(vectors::search(&model, &query_vector, 100), |hits| {
            json!(hits.iter().map(|h| h.document.clone()).collect::<Vec<_>>())
        }),
        "vectors_count": verdict(vectors::count(&doc), |n| json!(n)),
        "vectors_delete": verdict(vectors::delete_document(&doc), |n| json!(n)),
        "publish_deletion": verdict(publisher::publish("troupe.document.deleted", &forged), |_| json!(true)),
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(attempts.to_string())
        .build())
}
