//! An OTLP/HTTP trace receiver on loopback, as a collector would be: it decodes every
//! `POST /v1/traces` (protobuf) with the `opentelemetry-proto` types and keeps the
//! spans.

use std::collections::BTreeMap;
use std::io::{BufReader, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message as _;

/// One span as received.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of the process that exported it.
    pub service: String,
    /// Its name.
    pub name: String,
    /// Trace id, hex.
    pub trace_id: String,
    /// Span id, hex.
    pub span_id: String,
    /// Parent span id, hex; empty for a root.
    pub parent: String,
    /// `SPAN_KIND_*` as OTLP numbers it (2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    /// Status code (0 unset, 1 ok, 2 error).
    pub status: i32,
    /// Attributes, as strings.
    pub attributes: BTreeMap<String, String>,
    /// Linked spans: (trace id, span id), hex.
    pub links: Vec<(String, String)>,
}

impl Span {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The receiver: every span it was sent, and how many export requests came.
#[derive(Default, Clone)]
pub struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    requests: Arc<Mutex<usize>>,
}

impl Receiver {
    /// Starts it on 127.0.0.1; (receiver, base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let receiver = Self::default();
        let seen = receiver.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    // Exporters keep the connection open between batches.
                    loop {
                        let (headers, body) = crate::read_request(&mut reader);
                        if headers.is_empty() {
                            return;
                        }
                        seen.take(&body);
                        if reader
                            .get_mut()
                            .write_all(
                                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                            )
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        (receiver, url)
    }

    fn take(&self, body: &[u8]) {
        *self.requests.lock().expect("lock") += 1;
        let Ok(req) = ExportTraceServiceRequest::decode(body) else {
            panic!(
                "an export request that is not OTLP protobuf ({} bytes)",
                body.len()
            );
        };
        let mut out = self.spans.lock().expect("lock");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref())
                .map(text)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex::encode(&s.trace_id),
                        span_id: hex::encode(&s.span_id),
                        parent: hex::encode(&s.parent_span_id),
                        kind: s.kind,
                        status: s.status.map_or(0, |st| st.code),
                        attributes: s
                            .attributes
                            .into_iter()
                            .filter_map(|kv| Some((kv.key, text(kv.value?.value.as_ref()?))))
                            .collect(),
                        links: s
                            .links
                            .into_iter()
                            .map(|l| (hex::encode(l.trace_id), hex::encode(l.span_id)))
                            .collect(),
                    });
                }
            }
        }
    }

    /// Every span so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().expect("lock").clone()
    }

    /// Export requests so far.
    pub fn requests(&self) -> usize {
        *self.requests.lock().expect("lock")
    }
}

fn text(v: &Any) -> String {
    match v {
        Any::StringValue(s) => s.clone(),
        Any::BoolValue(b) => b.to_string(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}
