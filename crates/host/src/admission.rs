//! What the HTTP listener lets in: connections (per listener and per client address),
//! and request bodies, read whole before a component slot is taken — bounded in size
//! (the component's `max_body_bytes`, and all bodies being read together), in time
//! (a minimum transfer rate) — so slow or hostile clients hold a connection at most,
//! never the slots that serve everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The listener's limits.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections open at once on one listener; past it a new one is answered 503
    /// and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_client: usize,
    /// Bytes of request bodies being buffered at once, all requests together; past
    /// it a request is answered 503 with `Retry-After`.
    pub max_buffered_body_bytes: u64,
    /// A body must keep arriving at this rate (bytes/s, averaged from its start)…
    pub min_body_rate: u64,
    /// …after this grace period.
    pub body_grace: Duration,
    /// How long a slot is waited for before a request is answered 503.
    pub slot_wait: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_client: 256,
            max_buffered_body_bytes: 512 << 20,
            min_body_rate: 8 << 10,
            body_grace: Duration::from_secs(10),
            slot_wait: Duration::from_secs(30),
        }
    }
}

/// Counts connections per listener and per client address.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    total: Arc<Semaphore>,
    max_total: usize,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_client: usize,
}

/// A connection let in; dropping it lets the next one in.
#[derive(Debug)]
pub(crate) struct Admitted {
    _total: OwnedSemaphorePermit,
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut map) = self.per_client.lock()
            && let Some(n) = map.get_mut(&self.client)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The listener is full.
    Listener(usize),
    /// This client address has its share.
    Client(usize),
}

impl ConnectionGate {
    pub(crate) fn new(limits: &HttpLimits) -> Self {
        Self {
            total: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            max_total: limits.max_connections.max(1),
            per_client: Arc::default(),
            max_per_client: limits.max_connections_per_client.max(1),
        }
    }

    /// Lets a connection from `client` in, or says why not.
    pub(crate) fn admit(&self, client: IpAddr) -> Result<Admitted, Refused> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Listener(self.total_limit()))?;
        let mut map = self
            .per_client
            .lock()
            .map_err(|_| Refused::Listener(self.total_limit()))?;
        let n = map.entry(client).or_default();
        if *n >= self.max_per_client {
            return Err(Refused::Client(self.max_per_client));
        }
        *n += 1;
        Ok(Admitted {
            _total: total,
            per_client: self.per_client.clone(),
            client,
        })
    }

    fn total_limit(&self) -> usize {
        self.max_total
    }
}

impl Refused {
    /// A complete HTTP/1.1 503 answer, written straight to the socket before closing.
    pub(crate) fn answer(self) -> Vec<u8> {
        let message = match self {
            Self::Listener(n) => {
                format!("the server has {n} connections open, as many as it allows; retry shortly")
            }
            Self::Client(n) => format!(
                "your address has {n} connections open, the most one client may; close some or retry shortly"
            ),
        };
        let body =
            serde_json::json!({"error": {"code": "too_many_connections", "message": message}})
                .to_string();
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// Why a request body was not read whole.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// Over the component's `max_body_bytes` (declared or sent).
    TooLarge(u64),
    /// Slower than the minimum rate.
    TooSlow { rate: u64 },
    /// All bodies being read together are at their byte budget.
    Busy,
    /// The connection failed mid-body.
    Broken(String),
}

/// The byte budget of bodies being read; permits are KiB.
#[derive(Debug, Clone)]
pub(crate) struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub(crate) fn new(limits: &HttpLimits) -> Self {
        let kib = usize::try_from(limits.max_buffered_body_bytes >> 10).unwrap_or(usize::MAX);
        Self(Arc::new(Semaphore::new(
            kib.clamp(1, Semaphore::MAX_PERMITS),
        )))
    }
}

/// A body read whole; the budget it uses is held until this is dropped.
pub(crate) struct Buffered {
    pub(crate) bytes: Bytes,
    pub(crate) _held: Option<OwnedSemaphorePermit>,
}

/// Reads `body` whole: at most `limit` bytes, at no less than the minimum rate after
/// the grace period, within the shared budget. `declared` is the Content-Length.
pub(crate) async fn read_body<B>(
    body: B,
    declared: Option<u64>,
    limit: u64,
    limits: &HttpLimits,
    budget: &BodyBudget,
) -> Result<Buffered, BodyError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = std::pin::pin!(body);
    let start = Instant::now();
    let rate = limits.min_body_rate.max(1);
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received: u64 = 0;
    let mut held_kib: u64 = 0;
    loop {
        // The moment the bytes so far stop being enough for the minimum rate.
        let due =
            start + limits.body_grace + Duration::from_secs_f64(received as f64 / rate as f64);
        let frame = match tokio::time::timeout_at(due, body.frame()).await {
            Err(_) => return Err(BodyError::TooSlow { rate }),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received += data.len() as u64;
        if received > limit {
            return Err(BodyError::TooLarge(limit));
        }
        let want_kib = received.div_ceil(1024);
        if want_kib > held_kib {
            let more = u32::try_from(want_kib - held_kib).map_err(|_| BodyError::Busy)?;
            let permit = budget
                .0
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| BodyError::Busy)?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
            held_kib = want_kib;
        }
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = Vec::with_capacity(usize::try_from(received).unwrap_or(0));
            for c in chunks {
                all.extend_from_slice(&c);
            }
            Bytes::from(all)
        }
    };
    Ok(Buffered { bytes, _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Frames =
        tokio::sync::mpsc::Sender<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>;

    /// A body fed by hand, as a client sends it.
    fn body() -> (
        Frames,
        impl hyper::body::Body<Data = Bytes, Error = std::convert::Infallible>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        (tx, http_body_util::StreamBody::new(stream))
    }

    fn data(n: usize) -> Result<hyper::body::Frame<Bytes>, std::convert::Infallible> {
        Ok(hyper::body::Frame::data(Bytes::from(vec![b'x'; n])))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_slower_than_the_minimum_rate_is_cut_off() {
        let limits = HttpLimits {
            min_body_rate: 1000,
            body_grace: Duration::from_secs(10),
            ..HttpLimits::default()
        };
        let budget = BodyBudget::new(&limits);
        let (tx, b) = body();
        // 2 000 bytes in the grace period buy two more seconds; then nothing comes.
        tx.send(data(2000)).await.unwrap();
        let started = Instant::now();
        let read = read_body(b, Some(1_000_000), 1_000_000, &limits, &budget).await;
        assert!(
            matches!(read, Err(BodyError::TooSlow { rate: 1000 })),
            "{:?}",
            read.err()
        );
        assert_eq!(started.elapsed().as_secs(), 12);
        // The budget it held is back.
        assert_eq!(budget.0.available_permits(), (512 << 20) >> 10);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_a_steady_rate_is_read_whole() {
        let limits = HttpLimits {
            min_body_rate: 1000,
            body_grace: Duration::from_secs(1),
            ..HttpLimits::default()
        };
        let budget = BodyBudget::new(&limits);
        let (tx, b) = body();
        tokio::spawn(async move {
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(900)).await;
                tx.send(data(1000)).await.unwrap();
            }
        });
        let read = read_body(b, None, 1_000_000, &limits, &budget).await;
        let Ok(buffered) = read else {
            panic!("{:?}", read.err())
        };
        assert_eq!(buffered.bytes.len(), 30_000);
        // 30 000 bytes are held against the budget until the body is dropped.
        assert_eq!(budget.0.available_permits(), ((512 << 20) >> 10) - 30);
        drop(buffered);
        assert_eq!(budget.0.available_permits(), (512 << 20) >> 10);
    }

    #[tokio::test]
    async fn bodies_over_their_limit_or_the_shared_budget_are_refused() {
        let limits = HttpLimits {
            max_buffered_body_bytes: 64 << 10,
            ..HttpLimits::default()
        };
        let budget = BodyBudget::new(&limits);
        // Declared too large: refused before anything is read.
        let (_tx, b) = body();
        let read = read_body(b, Some(10_001), 10_000, &limits, &budget).await;
        assert!(matches!(read, Err(BodyError::TooLarge(10_000))));
        // Sent too large without a declared length.
        let (tx, b) = body();
        tx.send(data(6000)).await.unwrap();
        tx.send(data(6000)).await.unwrap();
        let read = read_body(b, None, 10_000, &limits, &budget).await;
        assert!(matches!(read, Err(BodyError::TooLarge(10_000))));
        // One body holds 40 KiB of the 64; the next one needs 40 more: busy.
        let (tx, b) = body();
        tx.send(data(40 << 10)).await.unwrap();
        drop(tx);
        let first = read_body(b, None, 1 << 20, &limits, &budget)
            .await
            .ok()
            .unwrap();
        let (tx, b) = body();
        tx.send(data(40 << 10)).await.unwrap();
        drop(tx);
        let read = read_body(b, None, 1 << 20, &limits, &budget).await;
        assert!(matches!(read, Err(BodyError::Busy)));
        drop(first);
        let (tx, b) = body();
        tx.send(data(40 << 10)).await.unwrap();
        drop(tx);
        assert!(read_body(b, None, 1 << 20, &limits, &budget).await.is_ok());
    }

    #[test]
    fn connections_are_counted_per_listener_and_per_client() {
        let gate = ConnectionGate::new(&HttpLimits {
            max_connections: 3,
            max_connections_per_client: 2,
            ..HttpLimits::default()
        });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refused::Client(2));
        let _b1 = gate.admit(b).unwrap();
        assert!(matches!(gate.admit(b), Err(Refused::Listener(_))));
        drop(a1);
        let _a3 = gate.admit(a).unwrap();
        let answer = String::from_utf8(Refused::Client(2).answer()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("too_many_connections"), "{answer}");
    }
}
