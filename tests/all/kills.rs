//! Kill tests: the pipeline SIGKILLed at random moments while it indexes a mixed
//! corpus (txt, md, html, pdf; some documents several embedding jobs long), restarted
//! each time. At the end every document is `indexed` with the chunk count of a clean
//! run and as many vectors, no trail entry, webhook or search hit twice, nothing in
//! flight or dead-lettered. On the embedded set `troupe up` is killed; on S3 + SQS +
//! Postgres the serve host and the worker in turn.
//!
//! The short version runs in `make test`; `make soak` (`scripts/soak.sh`) runs the
//! ignored [`soak`] with 200 documents and 20 kills per backend by default, printing
//! the time to recover after each kill (from the restart to the next progress).

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use troupe_tests::Child;
use troupe_tests::corpus::{self, Doc, Hooks, Rng};
use troupe_tests::stack::Stack;

/// What one run does.
#[derive(Debug, Clone)]
struct Plan {
    docs: usize,
    /// Words in every fifth document (the multi-batch ones).
    long_words: usize,
    kills: usize,
    /// `batch_chunks` (chunks per embedding job); `None` keeps the manifest's 32.
    batch_chunks: Option<u32>,
    /// A kill comes this long after the (re)start, uniformly between the two; the
    /// first, up to the lower bound after the uploads.
    kill_after_ms: (u64, u64),
    seed: u64,
}

impl Plan {
    fn corpus(&self) -> Vec<Doc> {
        corpus::corpus(self.docs, self.long_words, self.seed)
    }

    fn env(&self, hooks: String) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("TROUPE_VARIABLE_WEBHOOK_URLS", hooks),
            (
                "TROUPE_VARIABLE_WEBHOOK_SECRET",
                "kill-test-secret".to_owned(),
            ),
            ("TROUPE_JOB_LEASE_MS", corpus::SHORT_LEASE_MS.to_string()),
        ];
        if let Some(n) = self.batch_chunks {
            env.push(("TROUPE_VARIABLE_BATCH_CHUNKS", n.to_string()));
        }
        env
    }
}

/// One kill and what followed it.
#[derive(Debug)]
struct Kill {
    what: &'static str,
    /// How long the killed process had run.
    up_for: Duration,
    /// Batches done + documents settled when it died.
    progress: u64,
    /// From the restart to the next progress; `None` when everything had settled.
    recovery: Option<Duration>,
}

/// The processes of a backend set that get killed.
enum Procs {
    /// `troupe up`.
    Local(Child),
    /// `troupe serve` and `troupe worker`.
    Aws { serve: Child, worker: Child },
}

fn start_serve(stack: &Stack, dir: &Path, manifest: &Path, env: &[(&str, String)]) -> Child {
    Child::serve_with(stack, &dir.join("serve"), manifest, &[], env)
}

/// Runs `plan` on `stack`: uploads the corpus, kills and restarts at random moments,
/// checks the end state against `reference` (chunk counts of a clean run).
fn run(stack: &Stack, dir: &Path, plan: &Plan, reference: &[u64]) -> Vec<Kill> {
    let manifest = corpus::short_lease_pipeline(dir);
    let (hooks, url) = Hooks::start();
    let env = plan.env(url);
    stack.init(&manifest);
    let mut procs = match stack {
        Stack::Local { .. } => Procs::Local(Child::pipeline_with(stack, &manifest, &[], &env)),
        Stack::Aws { .. } => Procs::Aws {
            serve: start_serve(stack, dir, &manifest, &env),
            worker: Child::worker_on(stack, &env),
        },
    };
    let base = |p: &Procs| match p {
        Procs::Local(c) | Procs::Aws { serve: c, .. } => format!("http://{}", c.addr),
    };
    let docs = plan.corpus();
    let ids: Vec<String> = docs
        .iter()
        .map(|d| corpus::upload(&base(&procs), d))
        .collect();
    let mut rng = Rng(plan.seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut kills = Vec::new();
    let mut since = [Instant::now(), Instant::now()];
    for k in 0..plan.kills {
        // The first kill soon after the uploads, while work surely remains however fast
        // the pipeline is (a faster encoder once settled everything before it came).
        let (lo, hi) = match plan.kill_after_ms {
            (lo, _) if k == 0 => (0, lo),
            window => window,
        };
        let wait = lo + rng.next_u64() % (hi - lo + 1);
        std::thread::sleep(Duration::from_millis(wait));
        let (progress, _) = corpus::progress(&base(&procs), &ids).unwrap_or((0, 0));
        let which = match procs {
            Procs::Local(_) => 0,
            Procs::Aws { .. } => k % 2,
        };
        let what;
        procs = match procs {
            Procs::Local(up) => {
                what = "troupe up";
                up.kill();
                Procs::Local(Child::pipeline_with(stack, &manifest, &[], &env))
            }
            Procs::Aws { serve, worker } if which == 0 => {
                what = "troupe serve";
                serve.kill();
                Procs::Aws {
                    serve: start_serve(stack, dir, &manifest, &env),
                    worker,
                }
            }
            Procs::Aws { serve, worker } => {
                what = "troupe worker";
                worker.kill();
                Procs::Aws {
                    serve,
                    worker: Child::worker_on(stack, &env),
                }
            }
        };
        let restarted = Instant::now();
        let up_for = restarted - since[which];
        since[which] = restarted;
        let (_, settled) = corpus::progress(&base(&procs), &ids).unwrap_or((0, 0));
        let recovery = (settled < ids.len()).then(|| {
            corpus::time_to_progress(&base(&procs), &ids, progress, Duration::from_secs(120))
                .unwrap_or_else(|| {
                    let left: Vec<_> = stack
                        .queue_depths()
                        .into_iter()
                        .filter(|(_, d)| d.ready + d.in_flight + d.dead > 0)
                        .map(|(q, d)| {
                            let dead = if d.dead > 0 {
                                stack.dead_letters(&q)
                            } else {
                                Vec::new()
                            };
                            (q, d, dead)
                        })
                        .collect();
                    panic!(
                        "no progress within 120 s after kill {} ({what}); queues: {left:?}",
                        k + 1
                    )
                })
        });
        let kill = Kill {
            what,
            up_for,
            progress,
            recovery,
        };
        eprintln!(
            "kill {}/{} ({}): up {:.1} s, progress {} → recovered in {}",
            k + 1,
            plan.kills,
            kill.what,
            kill.up_for.as_secs_f64(),
            kill.progress,
            kill.recovery
                .map_or("— (all settled)".to_owned(), |d| format!(
                    "{:.2} s",
                    d.as_secs_f64()
                ))
        );
        kills.push(kill);
    }
    let finishing = Instant::now();
    corpus::check_end_state(&base(&procs), stack, &docs, &ids, Some(reference), &hooks);
    eprintln!(
        "after the last kill everything settled and checked in {:.1} s",
        finishing.elapsed().as_secs_f64()
    );
    kills
}

/// The short plan `make test` runs.
fn short() -> Plan {
    Plan {
        docs: 16,
        long_words: 6_000,
        kills: 3,
        batch_chunks: Some(4),
        kill_after_ms: (150, 1_000),
        seed: 12,
    }
}

/// Chunk counts of the short plan's corpus on a clean run, once per test binary.
fn short_reference() -> &'static [u64] {
    static REFERENCE: OnceLock<Vec<u64>> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let plan = short();
        corpus::reference_chunks(&plan.corpus(), &plan.env(String::new()))
    })
}

fn kills_at_random_moments_lose_and_repeat_nothing(stack: fn(&Path) -> Stack) {
    let dir = tempfile::tempdir().unwrap();
    let stack = stack(dir.path());
    let plan = short();
    let reference = short_reference();
    assert!(
        reference.iter().any(|&c| c > 4),
        "the corpus has multi-batch documents: {reference:?}"
    );
    let kills = run(&stack, dir.path(), &plan, reference);
    assert_eq!(kills.len(), plan.kills);
    assert!(
        kills.iter().any(|k| k.recovery.is_some()),
        "no kill came while work remained: {kills:?}"
    );
}

mod local {
    #[test]
    fn kills_at_random_moments_lose_and_repeat_nothing() {
        super::kills_at_random_moments_lose_and_repeat_nothing(troupe_tests::stack::Stack::local);
    }
}

mod aws {
    #[test]
    fn kills_at_random_moments_lose_and_repeat_nothing() {
        super::kills_at_random_moments_lose_and_repeat_nothing(troupe_tests::stack::Stack::aws);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default,
    }
}

/// The soak: `TROUPE_SOAK_DOCS` documents (200), `TROUPE_SOAK_KILLS` kills (20) per
/// backend in `TROUPE_SOAK_BACKENDS` (`local,aws`), a kill every
/// `TROUPE_SOAK_KILL_MIN_MS`–`TROUPE_SOAK_KILL_MAX_MS` (1000–6000) after a restart;
/// every fifth document `TROUPE_SOAK_LONG_WORDS` words long (8000: ~45 chunks, two
/// embedding jobs at the default `batch_chunks` of 32).
#[test]
#[ignore = "long: run by `make soak`"]
fn soak() {
    let plan = Plan {
        docs: env_or("TROUPE_SOAK_DOCS", 200),
        long_words: env_or("TROUPE_SOAK_LONG_WORDS", 8_000),
        kills: env_or("TROUPE_SOAK_KILLS", 20),
        batch_chunks: None,
        kill_after_ms: (
            env_or("TROUPE_SOAK_KILL_MIN_MS", 1_000),
            env_or("TROUPE_SOAK_KILL_MAX_MS", 6_000),
        ),
        seed: env_or("TROUPE_SOAK_SEED", 2026),
    };
    let backends = std::env::var("TROUPE_SOAK_BACKENDS").unwrap_or_else(|_| "local,aws".into());
    eprintln!("soak: {plan:?}; a clean run first for the reference chunk counts");
    let clean = Instant::now();
    let reference = corpus::reference_chunks(&plan.corpus(), &plan.env(String::new()));
    eprintln!(
        "clean run: {} documents, {} chunks, {} of them multi-batch, in {:.1} s",
        reference.len(),
        reference.iter().sum::<u64>(),
        reference.iter().filter(|&&c| c > 32).count(),
        clean.elapsed().as_secs_f64()
    );
    for backend in backends.split(',').map(str::trim) {
        let dir = tempfile::tempdir().unwrap();
        let stack = match backend {
            "local" => Stack::local(dir.path()),
            "aws" => Stack::aws(dir.path()),
            other => panic!("TROUPE_SOAK_BACKENDS: unknown backend {other:?} (local, aws)"),
        };
        let started = Instant::now();
        let kills = run(&stack, dir.path(), &plan, &reference);
        let mut times: Vec<f64> = kills
            .iter()
            .filter_map(|k| k.recovery.map(|d| d.as_secs_f64()))
            .collect();
        times.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            times
                .get(((times.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        eprintln!(
            "SOAK {backend}: {} documents, {} kills ({} while work remained), recovery p50 {:.2} s, max {:.2} s; total {:.1} s; end state checked",
            plan.docs,
            kills.len(),
            times.len(),
            pick(0.5),
            pick(1.0),
            started.elapsed().as_secs_f64()
        );
    }
}
