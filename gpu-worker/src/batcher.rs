//! Token-budget batching on the backend's own thread.
//!
//! Callers' texts arrive as [`Item`]s over a bounded channel. The thread takes
//! everything pending, drops items whose caller went away, sorts the rest by length
//! (so a batch carries little padding), cuts them into batches of at most
//! `max_batch_tokens` computed tokens (padded, unless the backend packs its inputs
//! without padding), runs each, and answers every caller on its own
//! oneshot. Everything taken in one round is answered before the next round starts,
//! so long inputs are never starved by a stream of short ones.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::backend::EmbeddingBackend;
use crate::{Error, Result};

/// One text to embed.
#[derive(Debug)]
pub struct Item {
    /// Its token ids.
    pub ids: Vec<u32>,
    /// Where its vector goes.
    pub reply: oneshot::Sender<Result<Vec<f32>>>,
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
                    let n = vectors.len();
                    for item in batch {
                        let _ = item.reply.send(Err(Error::Backend(format!(
                            "backend returned {n} vectors for {} inputs",
                            ids.len()
                        ))));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, texts = ids.len(), "embedding batch failed");
                    // Keep the kind: bad input stays a 400 / reject, the rest a retry.
                    let again = |e: &Error| match e {
                        Error::Invalid(m) => Error::Invalid(m.clone()),
                        other => Error::Backend(other.to_string()),
                    };
                    for item in batch {
                        let _ = item.reply.send(Err(again(&e)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_PADDING, plan};

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
