//! SQLite queue throughput: send + receive + ack, durable, messages per second.
//!
//! `cargo bench -p troupe-local --bench queue` prints one line per configuration:
//! batch size (messages per send/receive/ack call) × durability (fsync per commit or
//! not). Every message is sent, leased and acked through the public `Queue` API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_core::{DeliveryPolicy, Message, Queue, Subscription, SystemClock};
use troupe_local::{Db, Durability, SqliteQueue};

async fn run(durability: Durability, batch: usize, total: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("bench.db"), durability).expect("db");
    let q = SqliteQueue::new(db, Arc::new(SystemClock));
    q.subscribe(&Subscription {
        name: "bench".into(),
        topic: "bench.v1".into(),
        subject_prefix: None,
        policy: DeliveryPolicy::default(),
    })
    .await
    .expect("subscribe");
    let body = vec![b'x'; 512];
    let start = Instant::now();
    let mut sent = 0;
    let mut acked = 0;
    while acked < total {
        let msgs: Vec<Message> = (0..batch)
            .map(|i| Message {
                id: format!("m{}", sent + i),
                subject: None,
                body: body.clone(),
                delay: Duration::ZERO,
            })
            .collect();
        sent += q.send("bench", &msgs).await.expect("send");
        let got = q
            .receive("bench", batch, Duration::ZERO)
            .await
            .expect("receive");
        let receipts: Vec<_> = got.into_iter().map(|d| d.receipt).collect();
        acked += receipts.len();
        q.ack("bench", &receipts).await.expect("ack");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| durability | batch | messages | send+receive+ack msg/s |");
    println!("|---|---:|---:|---:|");
    for (durability, name) in [
        (Durability::Full, "FULL (fsync/commit)"),
        (Durability::Normal, "NORMAL (WAL)"),
    ] {
        for batch in [1usize, 10, 100] {
            let total = if batch == 1 { 2_000 } else { 20_000 };
            let rate = rt.block_on(run(durability, batch, total));
            println!("| {name} | {batch} | {total} | {rate:.0} |");
        }
    }
}
