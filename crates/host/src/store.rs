//! What each invocation's `Store` holds: WASI and WASI-HTTP contexts, the sandbox's
//! memory limiter and outbound policy, and a handle on the backends.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::Backends;
use crate::manifest::OutboundRule;

/// Per-component facts every invocation's store needs.
#[derive(Debug)]
pub struct ComponentEnv {
    /// Component id, for logs and event sources.
    pub id: String,
    /// Backends the imports call.
    pub backends: Backends,
    /// Resolved variables.
    pub variables: BTreeMap<String, String>,
    /// Outbound allow-list.
    pub allowed: Arc<Vec<OutboundRule>>,
    /// Linear-memory cap, bytes.
    pub memory_limit: usize,
}

/// The `T` of every `Store<T>`.
pub struct Ctx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    /// Refuses growth past the component's memory cap and remembers that it did.
    pub limiter: MemoryCap,
    hooks: Outbound,
    /// The component's environment.
    pub env: Arc<ComponentEnv>,
}

impl Ctx {
    /// A fresh context for one invocation of `env`'s component.
    pub fn new(env: Arc<ComponentEnv>) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stderr();
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: MemoryCap {
                limit: env.memory_limit,
                exceeded: false,
            },
            hooks: Outbound {
                allowed: env.allowed.clone(),
            },
            env,
        }
    }
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Caps linear memory per instance.
#[derive(Debug)]
pub struct MemoryCap {
    limit: usize,
    /// Set when the guest tried to grow past `limit`; the trap is then reported as a
    /// memory-cap fault.
    pub exceeded: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Err(wasmtime::Error::msg(format!(
                "memory cap exceeded: wanted {desired} bytes, limit is {} bytes",
                self.limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Outbound HTTP policy: only hosts listed in `allowed_outbound_hosts`.
struct Outbound {
    allowed: Arc<Vec<OutboundRule>>,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_owned();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        if !self.allowed.iter().any(|r| r.allows(&scheme, &host, port)) {
            tracing::warn!(url.scheme = %scheme, server.address = %host, server.port = port, "outbound request denied: host not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let default: &mut dyn WasiHttpHooks = Default::default();
        default.send_request(request, options, fut)
    }
}
