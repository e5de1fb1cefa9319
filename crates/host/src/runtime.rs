//! The wasmtime engine and the loaded components: compiled (or read from the
//! precompiled cache) and pre-instantiated once at start-up, then instantiated per
//! invocation from the pooling allocator, with a wall-clock timeout (epoch
//! interruption), a memory cap and a concurrency limit per component.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::Backends;
use crate::bindings::{EventFunctionPre, GuestEvent, Outcome};
use crate::manifest::{App, ComponentDef};
use crate::store::{ComponentEnv, Ctx};
use crate::tenancy::Binding;

/// How often the epoch ticks; timeouts are checked, and long-running guests yield to
/// other tasks, at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why an invocation did not return normally.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// It ran past its wall-clock limit.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// It tried to grow memory past its cap.
    #[error("memory cap of {0} MiB exceeded")]
    MemoryCap(usize),
    /// It trapped or broke the contract.
    #[error("trapped: {0}")]
    Trap(String),
    /// All its concurrency slots stayed busy.
    #[error("overloaded: {0} invocations already running")]
    Overloaded(usize),
}

impl Fault {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::MemoryCap(_) => "memory_cap",
            Self::Trap(_) => "trap",
            Self::Overloaded(_) => "overloaded",
        }
    }
}

/// What a component exports.
#[derive(Clone)]
pub enum Exports {
    /// `troupe:pipeline/handler`.
    Events(EventFunctionPre<Ctx>),
    /// `wasi:http/incoming-handler`.
    Http(ProxyPre<Ctx>),
}

/// The variable every component can read (`config.get`) to learn whether the host
/// lets wildcard outbound rules reach loopback, link-local and private addresses
/// (`--allow-private-outbound`): `"true"` or `"false"`.
pub const HOST_PRIVATE_OUTBOUND: &str = "allow_private_outbound";

/// The variable every component can read for the most bytes of documents one tenant
/// may store (`--tenant-max-bytes`); absent when there is no quota.
pub const HOST_TENANT_MAX_BYTES: &str = "tenant_max_bytes";

/// What the operator decided for every component.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// Wildcard outbound rules may reach loopback, link-local and private addresses.
    pub allow_private_outbound: bool,
    /// The most bytes of documents one tenant may store.
    pub tenant_max_bytes: Option<u64>,
}

/// A loaded component.
pub struct Loaded {
    /// Its manifest entry.
    pub def: ComponentDef,
    /// What the store needs.
    pub env: Arc<ComponentEnv>,
    /// The pre-instance.
    pub exports: Exports,
    /// Bulkhead: invocations at once.
    pub slots: Arc<Semaphore>,
    /// Event streams at once, apart from `slots`.
    pub streams: Arc<Semaphore>,
}

/// The engine and every component of the app.
pub struct Runtime {
    engine: Engine,
    components: HashMap<String, Arc<Loaded>>,
    /// Ticks the epoch while invocations are alive; stops when the runtime goes away.
    ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("components", &self.components.keys())
            .finish_non_exhaustive()
    }
}

mod epoch;

use epoch::EpochTicker;
pub use epoch::Ticking;

/// Bytes of a linear memory a pooled slot keeps resident between instances: a
/// Rust guest's stack, data and the heap a typical event needs.
const KEEP_RESIDENT: usize = 8 << 20;

/// Builds the engine: async, epoch interruption, pooling allocator sized for `app`.
pub fn engine(app: &App) -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    let slots: usize = app
        .components
        .values()
        .map(|c| c.max_concurrency + c.max_streams)
        .sum::<usize>()
        .clamp(16, 2000);
    let max_memory = app
        .components
        .values()
        .map(|c| c.memory_limit)
        .max()
        .unwrap_or(128 << 20);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(u32::try_from(slots).unwrap_or(1000))
        .total_core_instances(u32::try_from(slots * 4).unwrap_or(4000))
        .total_memories(u32::try_from(slots * 2).unwrap_or(2000))
        .total_tables(u32::try_from(slots * 4).unwrap_or(4000))
        .max_memory_size(max_memory)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .total_stacks(u32::try_from(slots).unwrap_or(1000))
        // A slot keeps what an invocation touched resident and resets it in place
        // (only the pages it wrote, found with PAGEMAP_SCAN on Linux ≥ 6.7) instead
        // of handing it back with `madvise`: every `madvise` is a TLB shootdown that
        // interrupts all of the process's threads (the inference threads too), and
        // the next instance faults each page in again (BENCHMARKS.md, the pipeline).
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 8)
        .pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("configuring the wasmtime engine")
}

/// Reads a compiled component from `cache_dir` or compiles and stores it.
fn load_component(
    engine: &Engine,
    def: &ComponentDef,
    cache_dir: Option<&Path>,
) -> Result<Component> {
    let wasm = std::fs::read(&def.source).with_context(|| {
        format!(
            "reading component `{}` from {}",
            def.id,
            def.source.display()
        )
    })?;
    let Some(dir) = cache_dir else {
        return Component::new(engine, &wasm)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "compiling component `{}` ({})",
                    def.id,
                    def.source.display()
                )
            });
    };
    let mut hasher = Sha256::new();
    hasher.update(&wasm);
    std::hash::Hash::hash(
        &engine.precompile_compatibility_hash(),
        &mut HashWriter(&mut hasher),
    );
    let path: PathBuf = dir.join(format!("{}.cwasm", hex::encode(&hasher.finalize()[..16])));
    if path.is_file() {
        // SAFETY: the file was written below by `precompile_component` of an engine
        // with the same compatibility hash (it is part of the name), into the
        // host's own cache directory.
        #[allow(unsafe_code)]
        let cached = unsafe { Component::deserialize_file(engine, &path) };
        match cached {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable compiled-component cache entry")
            }
        }
    }
    let bytes = engine
        .precompile_component(&wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "compiling component `{}` ({})",
                def.id,
                def.source.display()
            )
        })?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating cache directory {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    #[allow(unsafe_code)]
    // SAFETY: just produced by this engine.
    let c = unsafe { Component::deserialize(engine, &bytes) };
    c.map_err(anyhow::Error::from)
}

struct HashWriter<'a>(&'a mut Sha256);

impl std::hash::Hasher for HashWriter<'_> {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

impl Runtime {
    /// Compiles (or reads from `cache_dir`) and pre-instantiates every component.
    pub fn new(
        app: &App,
        backends: &Backends,
        cache_dir: Option<&Path>,
        policy: &Policy,
    ) -> Result<Self> {
        let allow_private_outbound = policy.allow_private_outbound;
        let engine = engine(app)?;
        let mut linker: Linker<Ctx> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)?;
        crate::imports::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;

        let mut components = HashMap::new();
        for def in app.components.values() {
            let component = load_component(&engine, def, cache_dir)?;
            let pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "component `{}` ({}) imports something the host does not provide",
                        def.id,
                        def.source.display()
                    )
                })?;
            let exports = match EventFunctionPre::new(pre.clone()) {
                Ok(p) => Exports::Events(p),
                Err(events_err) => match ProxyPre::new(pre) {
                    Ok(p) => Exports::Http(p),
                    Err(_) => anyhow::bail!(
                        "component `{}` ({}) exports neither `troupe:pipeline/handler` nor `wasi:http/incoming-handler`: {events_err}",
                        def.id,
                        def.source.display()
                    ),
                },
            };
            // The host's outbound policy, for a component that checks an address
            // before storing it (the api refuses private webhook URLs up front).
            let mut variables = def.variables.clone();
            variables
                .entry(HOST_PRIVATE_OUTBOUND.to_owned())
                .or_insert_with(|| allow_private_outbound.to_string());
            if let Some(max) = policy.tenant_max_bytes {
                variables.insert(HOST_TENANT_MAX_BYTES.to_owned(), max.to_string());
            }
            let env = Arc::new(ComponentEnv {
                id: def.id.clone(),
                granted: crate::imports::Granted::new(backends, def.grants.clone()),
                variables,
                allowed: Arc::new(def.allowed_outbound_hosts.clone()),
                allow_private_outbound,
                memory_limit: def.memory_limit,
                log_gate: Default::default(),
            });
            components.insert(
                def.id.clone(),
                Arc::new(Loaded {
                    def: def.clone(),
                    env,
                    exports,
                    slots: Arc::new(Semaphore::new(def.max_concurrency)),
                    streams: Arc::new(Semaphore::new(def.max_streams)),
                }),
            );
        }
        let ticker = EpochTicker::start(&engine)?;
        Ok(Self {
            engine,
            components,
            ticker,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A loaded component.
    pub fn component(&self, id: &str) -> Option<&Arc<Loaded>> {
        self.components.get(id)
    }

    /// A store for one invocation of `loaded`: memory cap, and a deadline that
    /// yields every tick and traps once `timeout` has passed.
    pub fn store(&self, loaded: &Loaded, binding: Binding) -> Store<Ctx> {
        let ctx = Ctx::new(loaded.env.clone(), binding, self.ticker.ticking());
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limiter);
        let started = Instant::now();
        let timeout = loaded.def.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if started.elapsed() >= timeout {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Classifies a failed call.
    pub fn fault(
        loaded: &Loaded,
        store: &Store<Ctx>,
        started: Instant,
        err: &wasmtime::Error,
    ) -> Fault {
        if store.data().limiter.exceeded {
            Fault::MemoryCap(loaded.def.memory_limit >> 20)
        } else if matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ) || started.elapsed() >= loaded.def.timeout
        {
            Fault::Timeout(loaded.def.timeout)
        } else {
            Fault::Trap(format!("{err:#}"))
        }
    }

    /// Invokes an event function's `handle` with `events`, all of `binding`'s tenant;
    /// one outcome per event.
    pub async fn handle_events(
        &self,
        id: &str,
        events: Vec<GuestEvent>,
        binding: Binding,
    ) -> Result<Vec<Outcome>, Fault> {
        let loaded = self
            .components
            .get(id)
            .ok_or_else(|| Fault::Trap(format!("no component `{id}`")))?;
        let _permit = loaded
            .slots
            .acquire()
            .await
            .map_err(|_| Fault::Overloaded(loaded.def.max_concurrency))?;
        self.handle_events_in(loaded, events, binding).await
    }

    /// Like [`Self::handle_events`], for a caller already holding a slot.
    pub async fn handle_events_in(
        &self,
        loaded: &Loaded,
        events: Vec<GuestEvent>,
        binding: Binding,
    ) -> Result<Vec<Outcome>, Fault> {
        let Exports::Events(pre) = &loaded.exports else {
            return Err(Fault::Trap(format!(
                "component `{}` is an HTTP component, not an event function",
                loaded.def.id
            )));
        };
        let started = Instant::now();
        let mut store = self.store(loaded, binding);
        let n = events.len();
        // Epoch interruption stops running guest code; this also bounds time spent
        // waiting on the host (sleeps, slow imports).
        let call = async {
            match pre.instantiate_async(&mut store).await {
                Ok(instance) => {
                    instance
                        .troupe_pipeline_handler()
                        .call_handle(&mut store, &events)
                        .await
                }
                Err(e) => Err(e),
            }
        };
        let Ok(result) = tokio::time::timeout(loaded.def.timeout, call).await else {
            return Err(Fault::Timeout(loaded.def.timeout));
        };
        match result {
            Ok(outcomes) if outcomes.len() == n => Ok(outcomes),
            Ok(outcomes) => Err(Fault::Trap(format!(
                "returned {} outcomes for {n} events",
                outcomes.len()
            ))),
            Err(e) => Err(Self::fault(loaded, &store, started, &e)),
        }
    }
}
