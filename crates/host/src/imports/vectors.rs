//! `troupe:pipeline/vectors`: search and count with `vectors = "read"`, delete with
//! `"write"`, always in the invocation's tenant.

use troupe_core::Vectors;
use wasmtime::component::{HasData, Linker};

use super::{Caller, Guest, count, reply};
use crate::bindings::{GuestError, vectors};
use crate::manifest::Access;
use crate::store::Ctx;

/// A component's stored vectors.
pub struct VectorsView<'a> {
    /// Who calls.
    pub caller: Caller<'a>,
    /// The backend; `None` without a `vectors` grant.
    pub vectors: Option<&'a dyn Vectors>,
    /// How far the grant reaches.
    pub access: Access,
}

struct HasVectors;

impl HasData for HasVectors {
    type Data<'a> = VectorsView<'a>;
}

pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    vectors::add_to_linker::<Ctx, HasVectors>(linker, |ctx| {
        let env = &*ctx.env;
        VectorsView {
            caller: ctx.caller(),
            vectors: env.granted.vectors.as_deref(),
            access: env.granted.grants.vectors,
        }
    })
}

impl<'a> VectorsView<'a> {
    /// The backend when the grant covers `wanted`.
    fn backend(&self, wanted: Access, what: &str) -> Result<&'a dyn Vectors, GuestError> {
        self.vectors
            .filter(|_| self.access.allows(wanted))
            .ok_or_else(|| {
                let grant = match wanted {
                    Access::Write => "`vectors = \"write\"`",
                    _ => "`vectors = \"read\"`",
                };
                self.caller.denied(what.into(), grant.into())
            })
    }
}

impl vectors::Host for VectorsView<'_> {
    async fn search(&mut self, model: String, query: Vec<f32>, k: u32) -> Guest<Vec<vectors::Hit>> {
        let v = match self.backend(Access::Read, "searching vectors") {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let hits = v
            .search(self.caller.tenant().as_str(), &model, &query, k as usize)
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

    async fn delete_document(&mut self, document: String) -> Guest<u32> {
        match self.backend(Access::Write, "deleting vectors") {
            Ok(v) => reply(
                v.delete_document(self.caller.tenant().as_str(), &document)
                    .await
                    .map(count),
            ),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn count(&mut self, document: String) -> Guest<u32> {
        match self.backend(Access::Read, "counting vectors") {
            Ok(v) => reply(
                v.count(self.caller.tenant().as_str(), &document)
                    .await
                    .map(count),
            ),
            Err(e) => Ok(Err(e)),
        }
    }
}
