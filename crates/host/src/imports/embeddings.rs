//! `troupe:pipeline/embeddings`: the model, for a component granted `embeddings`.

use std::sync::Arc;

use troupe_core::Embeddings;
use wasmtime::component::{HasData, Linker};

use super::{Caller, Guest, count, reply};
use crate::bindings::{GuestError, embeddings};
use crate::store::Ctx;

/// A component's view of the model.
pub struct EmbeddingsView<'a> {
    /// Who calls.
    pub caller: Caller<'a>,
    /// Whether it was granted the model.
    pub granted: bool,
    /// The model; `None` when not granted or when the host runs without one.
    pub model: Option<&'a Arc<dyn Embeddings>>,
}

struct HasEmbeddings;

impl HasData for HasEmbeddings {
    type Data<'a> = EmbeddingsView<'a>;
}

pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    embeddings::add_to_linker::<Ctx, HasEmbeddings>(linker, |ctx| {
        let env = &*ctx.env;
        EmbeddingsView {
            caller: ctx.caller(),
            granted: env.granted.grants.embeddings,
            model: env.granted.embeddings.as_ref(),
        }
    })
}

impl EmbeddingsView<'_> {
    /// The model, or why there is none for this component.
    fn model(&self) -> Result<Arc<dyn Embeddings>, GuestError> {
        if !self.granted {
            return Err(self
                .caller
                .denied("the embedding model".into(), "`embeddings = true`".into()));
        }
        self.model.cloned().ok_or_else(|| {
            GuestError::Unavailable(
                "this host runs without an embedding model (started with --no-embeddings?)".into(),
            )
        })
    }
}

impl embeddings::Host for EmbeddingsView<'_> {
    async fn info(&mut self) -> Guest<embeddings::ModelInfo> {
        Ok(self.model().map(|m| {
            let info = m.info();
            embeddings::ModelInfo {
                name: info.name,
                dims: count(info.dims),
                max_tokens: count(info.max_tokens),
            }
        }))
    }

    async fn embed(&mut self, texts: Vec<String>) -> Guest<Vec<Vec<f32>>> {
        match self.model() {
            Ok(m) => reply(m.embed(texts).await),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn token_spans(&mut self, text: String) -> Guest<Vec<(u32, u32)>> {
        match self.model() {
            Ok(m) => reply(m.token_spans(text).await),
            Err(e) => Ok(Err(e)),
        }
    }
}
