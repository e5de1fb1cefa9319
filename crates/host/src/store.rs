//! What each invocation's `Store` holds: WASI and WASI-HTTP contexts, the sandbox's
//! memory limiter and outbound policy, and a handle on the backends.

use std::collections::BTreeMap;
use std::sync::Arc;

use tracing::Instrument as _;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::imports::{Caller, Granted};
use crate::manifest::OutboundRule;
use crate::tenancy::Binding;

/// Per-component facts every invocation's store needs.
#[derive(Debug)]
pub struct ComponentEnv {
    /// Component id, for logs and event sources.
    pub id: String,
    /// The backends the imports may call, and the grants that bound them.
    pub granted: Granted,
    /// Resolved variables.
    pub variables: BTreeMap<String, String>,
    /// Outbound allow-list.
    pub allowed: Arc<Vec<OutboundRule>>,
    /// Wildcard outbound rules may reach loopback, link-local and private addresses
    /// (the operator said so; by default only rules naming such a host may).
    pub allow_private_outbound: bool,
    /// Linear-memory cap, bytes.
    pub memory_limit: usize,
    /// Bounds what its `logging.log` calls write, all instances together.
    pub log_gate: LogGate,
}

/// Bounds a component's log lines in size ([`LogGate::MAX_LINE`]) and rate
/// ([`LogGate::PER_SECOND`], bursts of [`LogGate::BURST`]): a guest cannot fill the
/// disk or drown the host's own lines. Lines over the rate are dropped and counted;
/// the next line let through says how many went.
pub struct LogGate {
    limiter: governor::DefaultDirectRateLimiter,
    dropped: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for LogGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGate").finish_non_exhaustive()
    }
}

impl Default for LogGate {
    fn default() -> Self {
        let quota = governor::Quota::per_second(
            std::num::NonZeroU32::new(Self::PER_SECOND).unwrap_or(std::num::NonZeroU32::MIN),
        )
        .allow_burst(std::num::NonZeroU32::new(Self::BURST).unwrap_or(std::num::NonZeroU32::MIN));
        Self {
            limiter: governor::RateLimiter::direct(quota),
            dropped: Default::default(),
        }
    }
}

impl LogGate {
    /// Longest message kept, bytes; the rest is cut.
    pub const MAX_LINE: usize = 4096;
    /// Lines per second, sustained.
    pub const PER_SECOND: u32 = 100;
    /// Lines at once after a quiet spell.
    pub const BURST: u32 = 500;

    /// The message to log, cut to size, or `None` when the component is over its
    /// rate.
    pub fn admit(&self, component: &str, mut message: String) -> Option<String> {
        use std::sync::atomic::Ordering;
        if self.limiter.check().is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                target: "troupe::guest",
                component,
                dropped,
                "log lines dropped: the component logs more than {} lines/s",
                Self::PER_SECOND
            );
        }
        if message.len() > Self::MAX_LINE {
            let mut cut = Self::MAX_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let total = message.len();
            message.truncate(cut);
            message.push_str(&format!(" … ({} of {total} bytes cut)", total - cut));
        }
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::LogGate;

    #[test]
    fn log_lines_are_bounded_in_size_and_rate() {
        let gate = LogGate::default();
        let long = "é".repeat(10_000);
        let kept = gate.admit("c", long).unwrap();
        assert!(kept.len() < LogGate::MAX_LINE + 64, "{}", kept.len());
        assert!(kept.ends_with("bytes cut)"), "{kept}");
        let mut passed = 1;
        for i in 0..10_000 {
            passed += usize::from(gate.admit("c", format!("line {i}")).is_some());
        }
        // The burst and whatever the rate refilled while the loop ran, not 10 000.
        assert!(
            passed >= LogGate::BURST as usize && passed < LogGate::BURST as usize + 200,
            "{passed} lines passed"
        );
        assert!(gate.dropped.load(std::sync::atomic::Ordering::Relaxed) > 9_000);
    }
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
    /// The tenant this invocation acts for, which every import is scoped to.
    pub binding: Binding,
    /// Keeps the epoch ticking (timeouts, yields) while this invocation lives; with
    /// none alive, the ticker sleeps.
    _ticking: crate::runtime::Ticking,
}

impl Ctx {
    /// A fresh context for one invocation of `env`'s component, for `binding`'s tenant.
    pub fn new(env: Arc<ComponentEnv>, binding: Binding, ticking: crate::runtime::Ticking) -> Self {
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
                allow_private: env.allow_private_outbound,
            },
            env,
            binding,
            _ticking: ticking,
        }
    }

    /// The invocation as its imports name it.
    pub fn caller(&self) -> Caller<'_> {
        Caller {
            component: &self.env.id,
            gate: &self.env.log_gate,
            binding: &self.binding,
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

/// Outbound HTTP policy: only hosts listed in `allowed_outbound_hosts`, and through
/// a wildcard rule only public addresses.
struct Outbound {
    allowed: Arc<Vec<OutboundRule>>,
    /// The operator lets wildcard rules reach private addresses too.
    allow_private: bool,
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
        let rules: Vec<_> = self
            .allowed
            .iter()
            .filter(|r| r.allows(&scheme, &host, port))
            .collect();
        if rules.is_empty() {
            tracing::warn!(url.scheme = %scheme, server.address = %host, server.port = port, "outbound request denied: host not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let span = tracing::info_span!(
            "host.outbound",
            otel.name = %request.method(),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = %request.method(),
            server.address = %host,
            server.port = port,
            url.scheme = %scheme,
            http.response.status_code = tracing::field::Empty,
        );
        let mut request = request;
        // The receiver continues the trace from this call, whatever the guest wrote.
        if let Some(tp) = troupe_telemetry::traceparent_of(&span)
            .and_then(|tp| http::HeaderValue::from_str(&tp).ok())
        {
            request.headers_mut().insert("traceparent", tp);
        }
        let default: &mut dyn WasiHttpHooks = Default::default();
        let sent: std::pin::Pin<Box<dyn Future<Output = Answer> + Send>> =
            if self.allow_private || rules.iter().any(|r| r.names_host()) {
                Box::into_pin(default.send_request(request, options, fut))
            } else {
                Box::pin(vetted(request, options, fut, scheme, host, port))
            };
        Box::new(
            async move {
                let answer = sent.await;
                let span = tracing::Span::current();
                match &answer {
                    Ok((resp, _)) => {
                        span.record("http.response.status_code", resp.status().as_u16());
                        if resp.status().is_server_error() {
                            troupe_telemetry::set_error(&span, resp.status().as_str());
                        }
                    }
                    Err(e) => troupe_telemetry::set_error(&span, &e.to_string()),
                }
                answer
            }
            .instrument(span),
        )
    }
}

/// What an outbound request comes to: the response and the future that finishes
/// sending the body, or the error code the guest sees.
type Answer = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

/// Sends `request` to the address its host resolves to, once that address is vetted
/// public.
async fn vetted(
    request: http::Request<wasmtime_wasi_http::WasiBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
    fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    scheme: String,
    host: String,
    port: u16,
) -> Answer {
    {
        let addr = vet(&host, port).await?;
        let mut request = request;
        // Plain HTTP connects to the address vetted, not to a second lookup that
        // could answer otherwise (DNS rebinding); the Host header keeps the name.
        if scheme == "http" {
            let mut parts = request.uri().clone().into_parts();
            parts.authority = addr
                .to_string()
                .parse()
                .map(Some)
                .map_err(|_| wasmtime_wasi_http::Error::HttpRequestUriInvalid)?;
            *request.uri_mut() = http::Uri::from_parts(parts)
                .map_err(|_| wasmtime_wasi_http::Error::HttpRequestUriInvalid)?;
        }
        let default: &mut dyn WasiHttpHooks = Default::default();
        Box::into_pin(default.send_request(request, options, fut)).await
    }
}

/// Resolves `host` and refuses it when any of its addresses is not public (loopback,
/// private, link-local such as the metadata service): a wildcard rule reaches the
/// internet, never the host's own network. Returns the address to connect to.
async fn vet(host: &str, port: u16) -> Result<std::net::SocketAddr, wasmtime_wasi_http::Error> {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<std::net::SocketAddr> = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::lookup_host((name, port)),
    )
    .await
    {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(_)) => return Err(wasmtime_wasi_http::Error::DestinationNotFound),
        Err(_) => return Err(wasmtime_wasi_http::Error::DnsTimeout),
    };
    if let Some(bad) = addrs.iter().find(|a| !crate::manifest::is_public(a.ip())) {
        tracing::warn!(
            server.address = %host,
            server.port = port,
            network.peer.address = %bad.ip(),
            "outbound request denied: the host resolves to a loopback, link-local or private address; name it in allowed_outbound_hosts (or start the host with --allow-private-outbound) to allow it"
        );
        return Err(wasmtime_wasi_http::Error::DestinationIpProhibited);
    }
    addrs
        .first()
        .copied()
        .ok_or(wasmtime_wasi_http::Error::DestinationNotFound)
}
