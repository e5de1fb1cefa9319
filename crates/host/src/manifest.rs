//! `spin.toml` (Spin manifest v2): components, their triggers and Troupe's per-component
//! limits, with errors that name the file and the field.
//!
//! Troupe reads the standard v2 layout — `[application]`, `[variables]`,
//! `[[trigger.<type>]]`, `[component.<id>]` — and keeps its own settings where Spin
//! keeps tool settings, `[component.<id>.tool.troupe]`, so the same file stays valid
//! for `spin up`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use troupe_core::DeliveryPolicy;

mod grants;
mod outbound;
mod raw;
mod requires;
mod route;
#[cfg(test)]
mod tests;
mod topics;

pub use grants::{Access, BlobGrant, Grants};
pub use outbound::{OutboundRule, is_public};
use raw::{RawAppTool, RawDelivery, RawLimits, RawManifest};
pub use route::Route;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a field has the wrong shape.
    #[error("{path}: {message}")]
    Parse {
        /// The manifest path.
        path: PathBuf,
        /// toml's message: line, column, field and what was expected.
        message: String,
    },
    /// A field's value is not acceptable.
    #[error("{path}: field `{field}`: {why}")]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// Dotted path of the field, e.g. `component.hello.source`.
        field: String,
        /// What is wrong and what to do.
        why: String,
    },
}

/// Result with [`ManifestError`].
pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// A loaded, validated application.
#[derive(Debug, Clone)]
pub struct App {
    /// `application.name`.
    pub name: String,
    /// The manifest's path, for messages.
    pub path: PathBuf,
    /// Components by id.
    pub components: BTreeMap<String, ComponentDef>,
    /// `trigger.http`, in manifest order.
    pub http: Vec<HttpTrigger>,
    /// `trigger.queue` and `trigger.blob`, both consumed from a subscription.
    pub subscriptions: Vec<SubscriptionTrigger>,
    /// `trigger.cron`.
    pub cron: Vec<CronTrigger>,
}

/// One component and its sandbox limits.
#[derive(Debug, Clone)]
pub struct ComponentDef {
    /// The id (`[component.<id>]`).
    pub id: String,
    /// Absolute path of the `.wasm`.
    pub source: PathBuf,
    /// Outbound HTTP allow-list.
    pub allowed_outbound_hosts: Vec<OutboundRule>,
    /// Variables visible through `troupe:pipeline/config`, resolved.
    pub variables: BTreeMap<String, String>,
    /// Wall-clock limit per invocation.
    pub timeout: Duration,
    /// Linear-memory cap per instance, bytes.
    pub memory_limit: usize,
    /// Invocations allowed at once.
    pub max_concurrency: usize,
    /// Largest request body the host reads for it (HTTP components); a larger
    /// declared or sent body is refused with 413 before any slot is taken.
    pub max_body_bytes: u64,
    /// Event streams (`Accept: text/event-stream`) open at once: long-lived, so they
    /// draw from their own pool and never hold the slots other requests need (0:
    /// they share `max_concurrency`).
    pub max_streams: usize,
    /// What it may reach through the host's imports.
    pub grants: Grants,
}

/// `trigger.http`.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// `/exact` or `/prefix/...`.
    pub route: Route,
    /// Component id.
    pub component: String,
}

/// Where a subscription trigger's events come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `trigger.queue`: a topic.
    Topic,
    /// `trigger.blob`: object-created notifications of a bucket.
    Blob {
        /// The bucket.
        bucket: String,
    },
}

/// `trigger.queue` or `trigger.blob`: a component consuming one subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionTrigger {
    /// Queue, topics, filter and delivery policy.
    pub subscription: troupe_core::Subscription,
    /// Subscriptions this one took over (`replaces`, e.g. the per-topic ones a list of
    /// topics folded together): the host retires them into this one at start, so what
    /// they still hold is handled here rather than stranded.
    pub replaces: Vec<String>,
    /// Events per invocation, at most.
    pub batch_size: usize,
    /// Component id.
    pub component: String,
    /// Which kind of trigger declared it.
    pub source: Source,
}

/// `trigger.cron`.
#[derive(Debug, Clone)]
pub struct CronTrigger {
    /// The schedule with a seconds field.
    pub schedule: cron::Schedule,
    /// As written.
    pub expression: String,
    /// Component id.
    pub component: String,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MEMORY_MB: u64 = 128;
const DEFAULT_CONCURRENCY: usize = 16;
/// Request body a component gets unless its manifest says more.
const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Shortest lease a subscription may declare.
const MIN_VISIBILITY_MS: u64 = 1000;

/// Largest `max_body_bytes` (the host buffers a body before invoking).
const MAX_BODY: u64 = 1 << 30;
/// Event streams a component serves from their own pool unless its manifest says
/// otherwise: none, they share its slots.
const DEFAULT_STREAMS: usize = 0;
const DEFAULT_BATCH: usize = 10;
/// Invocations at once, per component and across the app (the pooling allocator
/// reserves address space for each).
pub const MAX_CONCURRENCY: usize = 1000;
/// Topics consumed outside the manifest's components: every Troupe host subscribes
/// the embedding worker to its jobs.
pub const HOST_TOPICS: &[&str] = &[<troupe_events::Job as troupe_events::Payload>::TOPIC];
/// Longest retry delay a handler may ask for (SQS's longest visibility timeout).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(12 * 3600);

impl App {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates manifest text; `path` names the file in messages and anchors
    /// relative `source` paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |field: String, why: String| ManifestError::Invalid {
            path: path.to_owned(),
            field,
            why,
        };
        if raw.spin_manifest_version != 2 {
            return Err(invalid(
                "spin_manifest_version".into(),
                format!("is {}, Troupe reads version 2", raw.spin_manifest_version),
            ));
        }
        let _ = (
            &raw.application.version,
            &raw.application.description,
            &raw.application.authors,
        );
        let app_tool: RawAppTool = match raw.application.tool.get("troupe") {
            Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
                invalid("application.tool.troupe".into(), e.message().to_owned())
            })?,
            None => RawAppTool::default(),
        };
        if raw.application.name.trim().is_empty() {
            return Err(invalid(
                "application.name".into(),
                "must not be empty".into(),
            ));
        }
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut variables = BTreeMap::new();
        for (name, var) in &raw.variables {
            let _ = var.secret;
            let env = format!("TROUPE_VARIABLE_{}", name.to_ascii_uppercase());
            match std::env::var(&env).ok().or_else(|| var.default.clone()) {
                Some(v) => {
                    variables.insert(name.clone(), v);
                }
                None if var.required => {
                    return Err(invalid(
                        format!("variables.{name}"),
                        format!("is required and has no default: set {env}"),
                    ));
                }
                None => {}
            }
        }

        let mut components = BTreeMap::new();
        let mut raw_grants = BTreeMap::new();
        for (id, c) in &raw.component {
            let field = |f: &str| format!("component.{id}.{f}");
            let _ = (&c.description, &c.build);
            let source = base.join(&c.source);
            if !source.is_file() {
                return Err(invalid(
                    field("source"),
                    format!(
                        "file `{}` does not exist: build the functions (`make setup`) or fix the path",
                        source.display()
                    ),
                ));
            }
            let allowed_outbound_hosts = c
                .allowed_outbound_hosts
                .iter()
                .map(|h| OutboundRule::parse(h))
                .collect::<std::result::Result<_, _>>()
                .map_err(|why| invalid(field("allowed_outbound_hosts"), why))?;
            let mut vars = BTreeMap::new();
            for (k, template) in &c.variables {
                vars.insert(
                    k.clone(),
                    expand(template, &variables)
                        .map_err(|why| invalid(field(&format!("variables.{k}")), why))?,
                );
            }
            let mut limits: RawLimits = match c.tool.get("troupe") {
                Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
                    invalid(field("tool.troupe"), e.message().to_owned())
                })?,
                None => RawLimits::default(),
            };
            requires::check(&limits.variables_require, &vars, &c.variables)
                .map_err(|(f, why)| invalid(field(&f), why))?;
            let memory_mb = match &limits.memory_limit_mb {
                None => DEFAULT_MEMORY_MB,
                Some(v) => whole_number(v, &variables, "MiB", 1..=4096)
                    .map_err(|why| invalid(field("tool.troupe.memory_limit_mb"), why))?,
            };
            let max_concurrency = limits.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if !(1..=MAX_CONCURRENCY).contains(&max_concurrency) {
                return Err(invalid(
                    field("tool.troupe.max_concurrency"),
                    format!("must be 1..={MAX_CONCURRENCY}"),
                ));
            }
            let timeout = match &limits.timeout_ms {
                None => DEFAULT_TIMEOUT,
                Some(v) => Duration::from_millis(
                    whole_number(v, &variables, "milliseconds", 1..=u64::MAX)
                        .map_err(|why| invalid(field("tool.troupe.timeout_ms"), why))?,
                ),
            };
            let max_body_bytes = match &limits.max_body_bytes {
                None => DEFAULT_MAX_BODY,
                Some(v) => whole_number(v, &variables, "bytes", 1..=MAX_BODY)
                    .map_err(|why| invalid(field("tool.troupe.max_body_bytes"), why))?,
            };
            let max_streams = limits.max_streams.unwrap_or(DEFAULT_STREAMS);
            if max_streams > MAX_CONCURRENCY {
                return Err(invalid(
                    field("tool.troupe.max_streams"),
                    format!("must be 0..={MAX_CONCURRENCY}"),
                ));
            }
            raw_grants.insert(id.clone(), std::mem::take(&mut limits.grants));
            components.insert(
                id.clone(),
                ComponentDef {
                    grants: Grants::default(),
                    max_body_bytes,
                    max_streams,
                    id: id.clone(),
                    source,
                    allowed_outbound_hosts,
                    variables: vars,
                    timeout,
                    memory_limit: usize::try_from(memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
                    max_concurrency,
                },
            );
        }

        let total: usize = components.values().map(|c| c.max_concurrency).sum();
        if total > MAX_CONCURRENCY {
            return Err(invalid(
                "component.*.tool.troupe.max_concurrency".into(),
                format!(
                    "the components' limits add up to {total}; keep the sum at most {MAX_CONCURRENCY}"
                ),
            ));
        }
        let known = |field: String, id: &str| {
            if components.contains_key(id) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!("names component `{id}`, which has no [component.{id}] table"),
                ))
            }
        };
        let mut http = Vec::new();
        for (i, t) in raw.trigger.http.iter().enumerate() {
            let _ = &t.executor;
            known(format!("trigger.http[{i}].component"), &t.component)?;
            let route = if let Some(p) = t.route.strip_suffix("/...") {
                Route::Prefix(if p.is_empty() {
                    "/".into()
                } else {
                    p.to_owned()
                })
            } else {
                Route::Exact(t.route.clone())
            };
            if !t.route.starts_with('/') {
                return Err(invalid(
                    format!("trigger.http[{i}].route"),
                    format!("`{}` must start with '/'", t.route),
                ));
            }
            http.push(HttpTrigger {
                route,
                component: t.component.clone(),
            });
        }
        // Most specific route first: longer, then exact before prefix.
        http.sort_by_key(|t| std::cmp::Reverse(t.route.specificity()));

        let mut subscriptions = Vec::new();
        let mut names = HashSet::new();
        for (i, t) in raw.trigger.queue.iter().enumerate() {
            let field = |f: &str| format!("trigger.queue[{i}].{f}");
            known(field("component"), &t.component)?;
            let topics = topics::of(t).map_err(|(f, why)| invalid(field(&f), why))?;
            let name = t
                .subscription
                .clone()
                .unwrap_or_else(|| t.component.clone());
            let (policy, batch_size) =
                delivery(&t.delivery).map_err(|(f, why)| invalid(field(f), why))?;
            if !names.insert(name.clone()) {
                return Err(invalid(
                    field("subscription"),
                    format!("`{name}` is used twice: give each trigger its own `subscription`"),
                ));
            }
            subscriptions.push(SubscriptionTrigger {
                subscription: troupe_core::Subscription {
                    name,
                    topics,
                    subject_prefix: None,
                    policy,
                },
                replaces: t.replaces.clone(),
                batch_size,
                component: t.component.clone(),
                source: Source::Topic,
            });
        }
        for (i, t) in raw.trigger.blob.iter().enumerate() {
            let field = |f: &str| format!("trigger.blob[{i}].{f}");
            known(field("component"), &t.component)?;
            if let Err(e) = troupe_core::blobs::check_bucket(&t.bucket) {
                return Err(invalid(field("bucket"), e.to_string()));
            }
            let name = t
                .subscription
                .clone()
                .unwrap_or_else(|| format!("{}-blob", t.component));
            let (policy, batch_size) =
                delivery(&t.delivery).map_err(|(f, why)| invalid(field(f), why))?;
            if !names.insert(name.clone()) {
                return Err(invalid(
                    field("subscription"),
                    format!("`{name}` is used twice: give each trigger its own `subscription`"),
                ));
            }
            subscriptions.push(SubscriptionTrigger {
                subscription: troupe_core::Subscription {
                    name,
                    topics: vec![troupe_core::blobs::created_topic(&t.bucket)],
                    subject_prefix: t.prefix.clone().filter(|p| !p.is_empty()),
                    policy,
                },
                replaces: Vec::new(),
                batch_size,
                component: t.component.clone(),
                source: Source::Blob {
                    bucket: t.bucket.clone(),
                },
            });
        }
        topics::check_replaces(&subscriptions)
            .map_err(|(i, j, why)| invalid(format!("trigger.queue[{i}].replaces[{j}]"), why))?;
        let mut cron = Vec::new();
        for (i, t) in raw.trigger.cron.iter().enumerate() {
            known(format!("trigger.cron[{i}].component"), &t.component)?;
            let text = expand(&t.schedule, &variables)
                .map_err(|why| invalid(format!("trigger.cron[{i}].schedule"), why))?;
            let expr = if text.split_whitespace().count() == 5 {
                format!("0 {text}")
            } else {
                text.clone()
            };
            let schedule = expr.parse::<cron::Schedule>().map_err(|e| {
                invalid(
                    format!("trigger.cron[{i}].schedule"),
                    format!("`{text}` is not a cron expression ({e}); write `sec min hour day month weekday`, e.g. `*/5 * * * * *`"),
                )
            })?;
            cron.push(CronTrigger {
                schedule,
                expression: text,
                component: t.component.clone(),
            });
        }
        let watched = raw.trigger.blob.iter().map(|t| t.bucket.clone());
        let consumed = subscriptions
            .iter()
            .filter(|s| s.source == Source::Topic)
            .flat_map(|s| s.subscription.topics.iter().cloned())
            .chain(HOST_TOPICS.iter().map(|t| (*t).to_owned()));
        let known = grants::Known::new(&app_tool, &variables, watched, consumed)
            .map_err(|(f, why)| invalid(f, why))?;
        for (id, def) in components.iter_mut() {
            let raw = raw_grants.remove(id).unwrap_or_default();
            def.grants = grants::resolve(&raw, &variables, &known).map_err(|(f, why)| {
                invalid(format!("component.{id}.tool.troupe.grants.{f}"), why)
            })?;
        }
        Ok(Self {
            name: raw.application.name,
            path: path.to_owned(),
            components,
            http,
            subscriptions,
            cron,
        })
    }

    /// The component serving `path`, if any.
    pub fn route(&self, path: &str) -> Option<&str> {
        self.http
            .iter()
            .find(|t| t.route.matches(path))
            .map(|t| t.component.as_str())
    }
}

/// A subscription's policy; `timeout` is its component's, which the lease must outlast
/// or a batch still running would be delivered again.
fn delivery(
    d: &RawDelivery,
) -> std::result::Result<(DeliveryPolicy, usize), (&'static str, String)> {
    let def = DeliveryPolicy::default();
    let ms = Duration::from_millis;
    // The host renews a lease every third of it while the component runs, so it need
    // not outlast the component's timeout; it only bounds how long the work of a host
    // that died waits for another.
    if let Some(v) = d.visibility_timeout_ms
        && v < MIN_VISIBILITY_MS
    {
        return Err((
            "visibility_timeout_ms",
            format!(
                "{v} ms is below {MIN_VISIBILITY_MS} ms: the lease is renewed every third of it while work runs, and queues count it in whole seconds; raise it"
            ),
        ));
    }
    let policy = DeliveryPolicy {
        visibility_timeout: d.visibility_timeout_ms.map_or(def.visibility_timeout, ms),
        max_deliveries: d.max_deliveries.unwrap_or(def.max_deliveries),
        backoff_base: d.backoff_base_ms.map_or(def.backoff_base, ms),
        backoff_max: d.backoff_max_ms.map_or(def.backoff_max, ms),
        dedupe_window: d.dedupe_window_ms.map_or(def.dedupe_window, ms),
    };
    if policy.max_deliveries == 0 {
        return Err(("max_deliveries", "must be at least 1".into()));
    }
    if policy.visibility_timeout.is_zero() {
        return Err(("visibility_timeout_ms", "must be at least 1".into()));
    }
    if policy.backoff_max < policy.backoff_base {
        return Err(("backoff_max_ms", "must not be below backoff_base_ms".into()));
    }
    let batch = d.batch_size.unwrap_or(DEFAULT_BATCH);
    if batch == 0 || batch > 1000 {
        return Err(("batch_size", "must be 1..=1000".into()));
    }
    Ok((policy, batch))
}

/// A `tool.troupe` limit: a whole number (of `unit`), or a string naming variables
/// that expands to one, within `range`.
fn whole_number(
    value: &toml::Value,
    vars: &BTreeMap<String, String>,
    unit: &str,
    range: std::ops::RangeInclusive<u64>,
) -> std::result::Result<u64, String> {
    let n = match value {
        toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| format!("{n} is negative"))?,
        toml::Value::String(s) => {
            let text = expand(s, vars)?;
            text.trim()
                .parse()
                .map_err(|_| format!("`{s}` gives `{text}`, not a whole number of {unit}"))?
        }
        other => return Err(format!("{other} is neither a number nor a string")),
    };
    if !range.contains(&n) {
        return Err(format!(
            "{n} must be {}..={} ({unit})",
            range.start(),
            range.end()
        ));
    }
    Ok(n)
}

/// Expands `{{ name }}` references to application variables.
fn expand(template: &str, vars: &BTreeMap<String, String>) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("`{template}`: unclosed `{{{{`"))?;
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| {
            format!(
                "refers to variable `{name}`, which [variables] does not define (or has no value)"
            )
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}
