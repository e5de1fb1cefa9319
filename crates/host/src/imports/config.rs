//! `troupe:pipeline/config`: the component's own variables (no grant needed: they
//! are what its manifest table gives it).

use std::collections::BTreeMap;

use wasmtime::component::{HasData, Linker};

use crate::bindings::config;
use crate::store::Ctx;

/// A component's resolved variables.
pub struct ConfigView<'a> {
    /// Name to value.
    pub variables: &'a BTreeMap<String, String>,
}

struct HasConfig;

impl HasData for HasConfig {
    type Data<'a> = ConfigView<'a>;
}

pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    config::add_to_linker::<Ctx, HasConfig>(linker, |ctx| ConfigView {
        variables: &ctx.env.variables,
    })
}

impl config::Host for ConfigView<'_> {
    async fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.variables.get(&name).cloned())
    }
}
