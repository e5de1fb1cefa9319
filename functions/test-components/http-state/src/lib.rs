//! HTTP test component that also imports `troupe:pipeline`: `PUT /kv/<key>` stores the
//! body in state and publishes `test.kv.put.v1`; `GET /kv/<key>` reads it back.

/// The `troupe:pipeline` bindings (`wit/troupe.wit`, world `imports`), private to
/// this component.
mod bindings {
    wit_bindgen::generate!({ path: "../../../wit", world: "imports" });
}

use bindings::troupe;

use spin_sdk::http::{IntoResponse, Method, Request, Response};
use spin_sdk::http_component;
use troupe::pipeline::{publisher, state, types};

/// The tenant the host bound the request to (its keys' second segment).
fn tenant(req: &Request) -> String {
    req.header("troupe-tenant")
        .and_then(|v| v.as_str())
        .unwrap_or("default")
        .to_owned()
}

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let Some(key) = req.path().strip_prefix("/kv/").map(str::to_owned) else {
        return Ok(Response::builder().status(404).body("no key").build());
    };
    Ok(match req.method() {
        Method::Put => {
            let body = req.body().to_vec();
            let version = state::put(&format!("kv/{}/{key}", tenant(&req)), &body, None)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let event = types::Event {
                id: String::new(),
                source: String::new(),
                type_: "test.kv.put.v1".into(),
                subject: Some(key.clone()),
                time: String::new(),
                datacontenttype: Some("application/octet-stream".into()),
                data: body,
                tenant: None,
                session: None,
                traceparent: None,
            };
            publisher::publish("kv.v1", &event).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Response::builder()
                .status(201)
                .body(format!("version {version}"))
                .build()
        }
        Method::Get => {
            match state::get(&format!("kv/{}/{key}", tenant(&req)))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
            {
                Some(entry) => Response::builder().status(200).body(entry.value).build(),
                None => Response::builder().status(404).body("absent").build(),
            }
        }
        _ => Response::builder()
            .status(405)
            .body("use GET or PUT")
            .build(),
    })
}
