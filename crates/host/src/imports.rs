//! The host side of the `troupe:pipeline` imports, served from the backends.
//!
//! Backend failures reach the guest as WIT errors (`conflict`, `invalid`,
//! `unavailable`) it can react to; only host bugs become traps.

use troupe_core::{Error as CoreError, Message};

use crate::bindings::{
    GuestError, GuestEvent, blobs, config, embeddings, logging, publisher, state, types, vectors,
};
use crate::store::Ctx;

type Guest<T> = wasmtime::Result<Result<T, GuestError>>;

/// A backend error as the guest sees it. An engine's own failure (which may name
/// files, hosts or SQL) stays in the host's log; the guest, and whoever it answers,
/// learns which backend failed and that a retry may help.
fn guest_error(e: CoreError) -> GuestError {
    match e {
        CoreError::Conflict { .. } => GuestError::Conflict,
        CoreError::Invalid { .. } | CoreError::NoSuchQueue(_) => GuestError::Invalid(e.to_string()),
        CoreError::Backend { backend, .. } => {
            tracing::warn!(error = %e, "a backend call from a component failed");
            GuestError::Unavailable(format!(
                "the {backend} backend failed; retry later (the host's log has the details)"
            ))
        }
        other => GuestError::Unavailable(other.to_string()),
    }
}

fn reply<T>(r: troupe_core::Result<T>) -> Guest<T> {
    Ok(r.map_err(guest_error))
}

impl types::Host for Ctx {}

impl publisher::Host for Ctx {
    async fn publish(&mut self, topic: String, event: GuestEvent) -> Guest<()> {
        let mut event = troupe_core::Event::from(event);
        if event.id.is_empty() {
            event.id = troupe_core::event::new_id();
        }
        if event.time.is_empty() {
            event.time = troupe_core::event::now_rfc3339();
        }
        if event.source.is_empty() {
            event.source = format!("/functions/{}", self.env.id);
        }
        if topic.is_empty() {
            return Ok(Err(GuestError::Invalid("topic must not be empty".into())));
        }
        let queue = self.env.backends.queue.clone();
        reply(
            queue
                .publish(&topic, &[Message::from_event(&event)])
                .await
                .map(|_| ()),
        )
    }
}

impl blobs::Host for Ctx {
    async fn get(&mut self, bucket: String, key: String) -> Guest<Option<Vec<u8>>> {
        reply(self.env.backends.blobs.get(&bucket, &key).await)
    }

    async fn put(&mut self, bucket: String, key: String, data: Vec<u8>) -> Guest<()> {
        reply(self.env.backends.blobs.put(&bucket, &key, &data).await)
    }

    async fn delete(&mut self, bucket: String, key: String) -> Guest<bool> {
        reply(self.env.backends.blobs.delete(&bucket, &key).await)
    }

    async fn list_objects(&mut self, bucket: String, prefix: String) -> Guest<Vec<String>> {
        reply(self.env.backends.blobs.list(&bucket, &prefix).await)
    }
}

impl state::Host for Ctx {
    async fn get(&mut self, key: String) -> Guest<Option<state::Entry>> {
        reply(self.env.backends.state.get(&key).await.map(|e| {
            e.map(|e| state::Entry {
                value: e.value,
                version: e.version,
            })
        }))
    }

    async fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        expected_version: Option<u64>,
    ) -> Guest<u64> {
        reply(
            self.env
                .backends
                .state
                .put(&key, &value, expected_version)
                .await,
        )
    }

    async fn delete(&mut self, key: String, expected_version: Option<u64>) -> Guest<bool> {
        reply(self.env.backends.state.delete(&key, expected_version).await)
    }

    async fn list_keys(&mut self, prefix: String) -> Guest<Vec<String>> {
        reply(self.env.backends.state.list(&prefix).await)
    }

    async fn append_event(&mut self, subject: String, event: GuestEvent) -> Guest<u64> {
        reply(
            self.env
                .backends
                .state
                .append_event(&subject, &event.into())
                .await,
        )
    }

    async fn read_events(&mut self, subject: String) -> Guest<Vec<GuestEvent>> {
        reply(
            self.env
                .backends
                .state
                .read_events(&subject)
                .await
                .map(|v| v.into_iter().map(GuestEvent::from).collect()),
        )
    }

    async fn delete_events(&mut self, subject: String) -> Guest<u64> {
        reply(self.env.backends.state.delete_events(&subject).await)
    }
}

impl config::Host for Ctx {
    async fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.variables.get(&name).cloned())
    }
}

impl logging::Host for Ctx {
    async fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        let component = self.env.id.as_str();
        let Some(message) = self.env.log_gate.admit(component, message) else {
            return Ok(());
        };
        match level {
            logging::Level::Trace => {
                tracing::trace!(target: "troupe::guest", component, "{message}")
            }
            logging::Level::Debug => {
                tracing::debug!(target: "troupe::guest", component, "{message}")
            }
            logging::Level::Info => tracing::info!(target: "troupe::guest", component, "{message}"),
            logging::Level::Warn => tracing::warn!(target: "troupe::guest", component, "{message}"),
            logging::Level::Error => {
                tracing::error!(target: "troupe::guest", component, "{message}")
            }
        }
        Ok(())
    }
}

fn no_model() -> GuestError {
    GuestError::Unavailable(
        "this host runs without an embedding model (started with --no-embeddings?)".into(),
    )
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl embeddings::Host for Ctx {
    async fn info(&mut self) -> Guest<embeddings::ModelInfo> {
        Ok(match &self.env.backends.embeddings {
            Some(m) => {
                let info = m.info();
                Ok(embeddings::ModelInfo {
                    name: info.name,
                    dims: count(info.dims),
                    max_tokens: count(info.max_tokens),
                })
            }
            None => Err(no_model()),
        })
    }

    async fn embed(&mut self, texts: Vec<String>) -> Guest<Vec<Vec<f32>>> {
        match self.env.backends.embeddings.clone() {
            Some(m) => reply(m.embed(texts).await),
            None => Ok(Err(no_model())),
        }
    }

    async fn token_spans(&mut self, text: String) -> Guest<Vec<(u32, u32)>> {
        match self.env.backends.embeddings.clone() {
            Some(m) => reply(m.token_spans(text).await),
            None => Ok(Err(no_model())),
        }
    }
}

impl vectors::Host for Ctx {
    async fn search(
        &mut self,
        tenant: String,
        model: String,
        query: Vec<f32>,
        k: u32,
    ) -> Guest<Vec<vectors::Hit>> {
        let hits = self
            .env
            .backends
            .vectors
            .search(&tenant, &model, &query, k as usize)
            .await;
        reply(hits.map(|hits| {
            hits.into_iter()
                .map(|h| vectors::Hit {
                    document: h.document,
                    chunk: h.chunk,
                    score: h.score,
                    text: h.text,
                })
                .collect()
        }))
    }

    async fn delete_document(&mut self, tenant: String, document: String) -> Guest<u32> {
        let vectors = &self.env.backends.vectors;
        reply(vectors.delete_document(&tenant, &document).await.map(count))
    }

    async fn count(&mut self, tenant: String, document: String) -> Guest<u32> {
        let vectors = &self.env.backends.vectors;
        reply(vectors.count(&tenant, &document).await.map(count))
    }
}
