//! SQLite queue throughput: send + receive + ack, durable, messages per second.
//!
//! `cargo bench --workspace --bench queue` prints one line per configuration:
//! durability (fsync per commit or not) × batch size (messages per send/receive/ack
//! call) × workers (concurrent send→receive→ack loops, each on its own subscription,
//! whose writes the database commits together). Every message is sent, leased and
//! acked through the public `Queue` API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_core::{DeliveryPolicy, Message, Queue, Subscription, SystemClock};
use troupe_local::{Db, Durability, SqliteQueue};

async fn worker(q: SqliteQueue, name: String, batch: usize, total: usize) {
    let body = vec![b'x'; 512];
    let mut sent = 0;
    let mut acked = 0;
    while acked < total {
        let msgs: Vec<Message> = (0..batch)
            .map(|i| Message {
                id: format!("{name}-{}", sent + i),
                subject: None,
                body: body.clone(),
                delay: Duration::ZERO,
                traceparent: None,
            })
            .collect();
        sent += q.send(&name, &msgs).await.expect("send");
        let got = q
            .receive(&name, batch, Duration::ZERO)
            .await
            .expect("receive");
        let receipts: Vec<_> = got.into_iter().map(|d| d.receipt).collect();
        acked += q.ack(&name, &receipts).await.expect("ack");
    }
}

async fn run(durability: Durability, batch: usize, workers: usize, total: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("bench.db"), durability).expect("db");
    let q = SqliteQueue::new(db, Arc::new(SystemClock));
    for w in 0..workers {
        q.subscribe(&Subscription {
            name: format!("bench{w}"),
            topics: vec!["bench.v1".into()],
            subject_prefix: None,
            policy: DeliveryPolicy::default(),
        })
        .await
        .expect("subscribe");
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            tokio::spawn(worker(
                q.clone(),
                format!("bench{w}"),
                batch,
                total / workers,
            ))
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| durability | batch | workers | messages | send+receive+ack msg/s |");
    println!("|---|---:|---:|---:|---:|");
    for (durability, name) in [
        (Durability::Full, "FULL (fsync/commit)"),
        (Durability::Normal, "NORMAL (WAL)"),
    ] {
        for batch in [1usize, 10, 100] {
            for workers in [1usize, 8] {
                let total = if batch == 1 { 4_000 } else { 40_000 };
                let rate = rt.block_on(run(durability, batch, workers, total));
                println!("| {name} | {batch} | {workers} | {total} | {rate:.0} |");
            }
        }
    }
}
