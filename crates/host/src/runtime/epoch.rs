//! The epoch ticker: advances the engine's epoch every [`EPOCH_TICK`] while some
//! invocation is alive, and sleeps, waking nobody, while none is.
//!
//! Every store's deadline is relative (one tick from when it was set, then yield or
//! trap), so an epoch that stood still while nothing ran shortens or stretches no
//! invocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use anyhow::{Context as _, Result};
use wasmtime::Engine;

use super::EPOCH_TICK;

/// What the ticker thread and the invocations share.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when the first invocation starts, and on stop.
    wake: Condvar,
    /// Times the epoch moved, for tests to watch (the engine has no getter).
    ticks: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Invocations alive ([`Ticking`] guards).
    alive: usize,
    /// The runtime went away: the thread ends.
    stopped: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Owns the ticker thread; stops it when dropped.
pub(super) struct EpochTicker(Arc<Shared>);

impl EpochTicker {
    /// Starts the thread that ticks `engine`'s epoch.
    pub(super) fn start(engine: &Engine) -> Result<Self> {
        let shared = Arc::new(Shared::default());
        let (weak, s) = (engine.weak(), shared.clone());
        std::thread::Builder::new()
            .name("troupe-epoch".into())
            .spawn(move || {
                loop {
                    {
                        let mut state = s.state();
                        while state.alive == 0 && !state.stopped {
                            state = s.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                        }
                        if state.stopped {
                            return;
                        }
                    }
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => {
                            engine.increment_epoch();
                            s.ticks.fetch_add(1, Ordering::Relaxed);
                        }
                        None => return,
                    }
                }
            })
            .context("starting the epoch ticker thread")?;
        Ok(Self(shared))
    }

    /// Keeps the epoch ticking until the guard is dropped (with the store it lives in).
    pub(super) fn ticking(&self) -> Ticking {
        let mut state = self.0.state();
        state.alive += 1;
        if state.alive == 1 {
            self.0.wake.notify_one();
        }
        Ticking(self.0.clone())
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.0.state().stopped = true;
        self.0.wake.notify_one();
    }
}

/// One invocation alive: the epoch ticks while any such guard exists.
pub struct Ticking(Arc<Shared>);

impl Drop for Ticking {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.alive = state.alive.saturating_sub(1);
    }
}

impl std::fmt::Debug for Ticking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ticking")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The epoch stands still while no invocation is alive, and moves while one is.
    #[test]
    fn the_epoch_moves_only_while_an_invocation_is_alive() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let ticker = EpochTicker::start(&engine).unwrap();
        let ticks = || ticker.0.ticks.load(Ordering::Relaxed);
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticks(), 0, "the epoch moved with nothing running");
        let guard = ticker.ticking();
        while ticks() < 3 {
            std::thread::yield_now();
        }
        drop(guard);
        // A tick under way when the guard went may still land; then nothing.
        std::thread::sleep(EPOCH_TICK * 2);
        let after = ticks();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(ticks(), after, "the epoch kept moving after the invocation");
    }
}
