//! The OTLP/HTTP transport: the exporter's requests sent with ureq (rustls with ring,
//! as the rest of Troupe), so tracing adds no second HTTP or TLS stack. The batch
//! processor calls it from its own thread, where blocking is what it expects.

use std::time::Duration;

use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};

/// How long one export may take, connect to last byte (`OTEL_EXPORTER_OTLP_TIMEOUT`'s
/// default).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest collector answer read: it only says what it rejected.
const MAX_ANSWER: u64 = 1 << 20;

/// A ureq agent as the exporter's HTTP client.
#[derive(Debug)]
pub(crate) struct Ureq {
    agent: ureq::Agent,
}

impl Ureq {
    pub(crate) fn new() -> Self {
        Self {
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(TIMEOUT))
                .max_redirects(0)
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Ureq {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let mut answer = self.agent.run(request)?;
        let status = answer.status();
        let body = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()?;
        Ok(Response::builder().status(status).body(Bytes::from(body))?)
    }
}
