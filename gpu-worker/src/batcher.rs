//! Token-budget batching on the backend's own thread.
//!
//! Callers' texts arrive as [`Item`]s over a bounded channel. The thread takes
//! everything pending, drops items whose caller went away, sorts the rest by length
//! (so a batch carries little padding), cuts them into batches of at most
//! `max_batch_tokens` computed tokens (padded, unless the backend packs its inputs
//! without padding), runs each, and answers every caller on its own
//! oneshot. Everything taken in one round is answered before the next round starts,
//! so long inputs are never starved by a stream of short ones. A failed batch answers
//! each of its callers with the same [`BatchError`]; once the backend reports that it
//! has stopped, the thread ends, and every caller still waiting hears
//! [`Error::Stopped`](crate::Error::Stopped).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::BatchError;
use crate::backend::EmbeddingBackend;

/// One text to embed.
#[derive(Debug)]
pub struct Item {
    /// Its token ids.
    pub ids: Vec<u32>,
    /// Where its vector goes.
    pub reply: oneshot::Sender<Result<Vec<f32>, BatchError>>,
    /// When it was admitted, for the queue-wait metric.
    pub enqueued: Instant,
}

/// What one batch was, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchStats {
    /// Inputs in the batch.
    pub texts: usize,
    /// Tokens the backend computed, what the budget bounds: longest × texts when it
    /// pads, the real tokens when it packs.
    pub computed_tokens: usize,
    /// Tokens without padding.
    pub tokens: usize,
    /// Longest wait of an input before its batch ran.
    pub max_wait: Duration,
    /// Time in the backend.
    pub inference: Duration,
}

/// Called after every batch.
pub type Observer = Box<dyn FnMut(&BatchStats) + Send>;

/// Padding a batch may carry, as a share of its real tokens: past it, a longer input
/// starts a new batch (padding is computed like real tokens, so mixing a 100-token
/// chunk into a batch of 250-token ones would waste most of its row).
pub const MAX_PADDING: f64 = 0.15;

/// Splits `lens` (sorted ascending) into consecutive batches within `budget`. When
/// the backend `pads`, a batch costs longest × count and its padding stays within
/// [`MAX_PADDING`] of the real tokens; when it packs, a batch costs its real tokens.
/// An input longer than the budget goes alone.
pub fn plan(lens: &[usize], budget: usize, pads: bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut real = 0usize;
    for (i, &len) in lens.iter().enumerate() {
        // Sorted: the newest item is the longest so far.
        let padded = len.max(1) * (i - start + 1);
        let (cost, wasteful) = if pads {
            let wasteful = padded as f64 > (real + len) as f64 * (1.0 + MAX_PADDING);
            (padded, wasteful)
        } else {
            (real + len, false)
        };
        if i > start && (cost > budget || wasteful) {
            out.push(start..i);
            start = i;
            real = 0;
        }
        real += len;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// Runs the batcher until every sender is gone.
pub fn run(
    mut backend: Box<dyn EmbeddingBackend>,
    mut rx: mpsc::Receiver<Vec<Item>>,
    mut observe: Option<Observer>,
    taken: Arc<AtomicU64>,
) {
    let budget = backend.max_batch_tokens();
    let pads = backend.pads();
    while let Some(first) = rx.blocking_recv() {
        let mut pending = first;
        while let Ok(more) = rx.try_recv() {
            pending.extend(more);
        }
        taken.fetch_add(pending.len() as u64, Ordering::Relaxed);
        pending.retain(|i| !i.reply.is_closed());
        pending.sort_by_key(|i| i.ids.len());
        let lens: Vec<usize> = pending.iter().map(|i| i.ids.len()).collect();
        let mut items = pending.into_iter();
        for range in plan(&lens, budget, pads) {
            let mut batch: Vec<Item> = items.by_ref().take(range.len()).collect();
            // Callers may have left while earlier batches ran.
            batch.retain(|i| !i.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let ids: Vec<Vec<u32>> = batch
                .iter_mut()
                .map(|i| std::mem::take(&mut i.ids))
                .collect();
            let started = Instant::now();
            let max_wait = batch
                .iter()
                .map(|i| started - i.enqueued)
                .max()
                .unwrap_or_default();
            let result = backend.embed(&ids);
            let tokens = ids.iter().map(Vec::len).sum();
            let stats = BatchStats {
                texts: ids.len(),
                computed_tokens: if pads {
                    ids.iter().map(Vec::len).max().unwrap_or(0) * ids.len()
                } else {
                    tokens
                },
                tokens,
                max_wait,
                inference: started.elapsed(),
            };
            if let Some(f) = observe.as_mut() {
                f(&stats);
            }
            match result {
                Ok(vectors) if vectors.len() == batch.len() => {
                    for (item, v) in batch.into_iter().zip(vectors) {
                        let _ = item.reply.send(Ok(v));
                    }
                }
                Ok(vectors) => {
                    let e = BatchError::Backend(format!(
                        "backend returned {} vectors for {} inputs",
                        vectors.len(),
                        ids.len()
                    ));
                    for item in batch {
                        let _ = item.reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, texts = ids.len(), "embedding batch failed");
                    // Keep the kind: bad input stays a 400 / reject, a stopped backend
                    // stops its callers, the rest is a retry.
                    let e = BatchError::from(&e);
                    let stopped = e == BatchError::Stopped;
                    if stopped {
                        // Closed before anyone hears: a caller told `Stopped` finds
                        // the embedder no longer running.
                        rx.close();
                    }
                    for item in batch {
                        let _ = item.reply.send(Err(e.clone()));
                    }
                    if stopped {
                        tracing::error!(
                            "the embedding backend has stopped; the inference thread ends"
                        );
                        // Dropping the rest of the round and the channel answers every
                        // waiting caller with `Stopped`.
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::{mpsc, oneshot};

    use super::{Item, MAX_PADDING, plan, run};
    use crate::backend::EmbeddingBackend;
    use crate::{BatchError, Error};

    /// A backend whose every batch fails with the error `fail` makes: the failures
    /// the real backends cannot be made to produce on demand (a lost device).
    struct Failing {
        fail: fn() -> Error,
    }

    impl EmbeddingBackend for Failing {
        fn embed(&mut self, _batch: &[Vec<u32>]) -> crate::Result<Vec<Vec<f32>>> {
            Err((self.fail)())
        }
        fn max_batch_tokens(&self) -> usize {
            1024
        }
        fn dims(&self) -> usize {
            4
        }
    }

    fn item(ids: Vec<u32>) -> (Item, oneshot::Receiver<Result<Vec<f32>, BatchError>>) {
        let (reply, rx) = oneshot::channel();
        let enqueued = Instant::now();
        (
            Item {
                ids,
                reply,
                enqueued,
            },
            rx,
        )
    }

    /// Starts the batcher's thread on a [`Failing`] backend.
    fn start(fail: fn() -> Error) -> (mpsc::Sender<Vec<Item>>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8);
        let backend = Box::new(Failing { fail });
        let thread = std::thread::spawn(move || run(backend, rx, None, Arc::default()));
        (tx, thread)
    }

    #[tokio::test]
    async fn callers_of_a_stopped_backend_hear_stopped_and_the_thread_ends() {
        let (tx, thread) = start(|| Error::Stopped);
        // Two callers in one round: a short input and one too long to share a batch.
        let (a, first) = item(vec![101, 7, 102]);
        let (b, second) = item(vec![9; 2000]);
        tx.send(vec![a, b]).await.unwrap();
        assert_eq!(first.await.unwrap(), Err(BatchError::Stopped));
        // The second batch never runs; its caller hears the same through the dropped
        // reply, as the embedder maps it.
        assert!(second.await.is_err(), "the thread answers no more batches");
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        assert!(tx.is_closed(), "later callers find the thread gone");
        assert!(matches!(Error::from(BatchError::Stopped), Error::Stopped));
    }

    #[tokio::test]
    async fn every_caller_of_a_failed_batch_hears_its_kind() {
        for (fail, heard) in [
            (
                (|| Error::Invalid("token id out of range".into())) as fn() -> Error,
                BatchError::Invalid("token id out of range".into()),
            ),
            (
                || Error::Backend("device busy".into()),
                BatchError::Backend("device busy".into()),
            ),
            (
                || Error::Tokenizer("bad id".into()),
                BatchError::Backend("tokenization failed: bad id".into()),
            ),
        ] {
            let (tx, thread) = start(fail);
            let (a, first) = item(vec![101, 7, 102]);
            let (b, second) = item(vec![101, 8, 102]);
            tx.send(vec![a, b]).await.unwrap();
            assert_eq!(first.await.unwrap(), Err(heard.clone()));
            assert_eq!(second.await.unwrap(), Err(heard.clone()));
            // The thread lives on for the next batch.
            let (c, third) = item(vec![101, 102]);
            tx.send(vec![c]).await.unwrap();
            assert_eq!(third.await.unwrap(), Err(heard));
            drop(tx);
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
        // At the edge each kind is the worker's error of the same kind.
        assert!(matches!(
            Error::from(BatchError::Invalid("x".into())),
            Error::Invalid(m) if m == "x"
        ));
        assert!(matches!(
            Error::from(BatchError::Backend("x".into())),
            Error::Backend(m) if m == "x"
        ));
    }

    #[test]
    fn plans_respect_the_budget_and_keep_order() {
        let lens = [2, 3, 3, 5, 8, 8, 8, 13, 40, 250];
        for budget in [16, 64, 256, 1000] {
            let batches = plan(&lens, budget, true);
            let covered: Vec<usize> = batches.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(covered, (0..lens.len()).collect::<Vec<_>>());
            for r in &batches {
                let padded = lens[r.end - 1] * r.len();
                assert!(
                    padded <= budget || r.len() == 1,
                    "{budget}: {r:?} holds {padded}"
                );
            }
        }
        assert_eq!(
            plan(&[100, 100, 100, 250], 100_000, true),
            vec![0..3, 3..4],
            "a 250-token input would pad three 100-token ones by 150 each"
        );
        assert!(plan(&[], 10, true).is_empty());
        // A packing backend pays for real tokens only: no padding splits.
        assert_eq!(plan(&[100, 100, 100, 250], 100_000, false), vec![0..4]);
        assert_eq!(plan(&[100, 100, 100, 250], 300, false), vec![0..3, 3..4]);
        for r in plan(&lens, 64, false) {
            let real: usize = lens[r.clone()].iter().sum();
            assert!(real <= 64 || r.len() == 1, "{r:?} holds {real}");
        }
    }

    #[test]
    fn plans_bound_padding() {
        let lens: Vec<usize> = (0..200).map(|i| 20 + (i * 37) % 237).collect::<Vec<_>>();
        let mut lens = lens;
        lens.sort_unstable();
        for r in plan(&lens, 16_384, true) {
            let real: usize = lens[r.clone()].iter().sum();
            let padded = lens[r.end - 1] * r.len();
            assert!(
                padded as f64 <= real as f64 * (1.0 + MAX_PADDING) || r.len() == 1,
                "{r:?}: {padded} for {real}"
            );
        }
    }
}
