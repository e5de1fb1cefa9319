//! `troupe:pipeline/logging`: the component's lines into the host's tracing, through
//! its log gate (bounded in size and rate).

use wasmtime::component::{HasData, Linker};

use super::Caller;
use crate::bindings::logging;
use crate::store::Ctx;

/// A component's log.
pub struct LoggingView<'a> {
    /// Who logs, and the gate its lines pass.
    pub caller: Caller<'a>,
}

struct HasLogging;

impl HasData for HasLogging {
    type Data<'a> = LoggingView<'a>;
}

pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    logging::add_to_linker::<Ctx, HasLogging>(linker, |ctx| LoggingView {
        caller: ctx.caller(),
    })
}

impl logging::Host for LoggingView<'_> {
    async fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        let component = self.caller.component;
        let Some(message) = self.caller.gate.admit(component, message) else {
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
