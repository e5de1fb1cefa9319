//! The schema, as numbered steps; each runs once, in order, in its own transaction.

use troupe_core::Result;

use crate::{Pg, db};

/// Every step, oldest first. Append; never edit a released step.
const STEPS: &[(i32, &str)] = &[
    (
        1,
        r#"
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE troupe_kv (
        key text COLLATE "C" PRIMARY KEY,
        value bytea NOT NULL,
        version bigint NOT NULL
    );
    CREATE TABLE troupe_events (
        subject text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        id text NOT NULL,
        body bytea NOT NULL,
        PRIMARY KEY (subject, seq),
        UNIQUE (subject, id)
    );
    CREATE TABLE troupe_vector_tables (dims integer PRIMARY KEY);
    CREATE TABLE troupe_vector_tombstones (
        tenant text NOT NULL,
        document text NOT NULL,
        deleted_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant, document)
    );
    "#,
    ),
    (
        2,
        r#"
    CREATE TABLE troupe_event_feed (
        tenant text COLLATE "C" NOT NULL,
        position bigint NOT NULL,
        subject text COLLATE "C" NOT NULL,
        id text NOT NULL,
        PRIMARY KEY (tenant, position)
    );
    CREATE INDEX troupe_event_feed_subject ON troupe_event_feed (subject);
    "#,
    ),
];

/// Applies the steps not yet applied. Safe to run from several processes at once.
pub async fn migrate(pg: &Pg) -> Result<()> {
    let mut client = pg.client().await?;
    let tx = client.transaction().await.map_err(db)?;
    // `IF NOT EXISTS` notices are not news.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await
        .map_err(db)?;
    // One migrator at a time, for the whole database.
    tx.execute("SELECT pg_advisory_xact_lock(7273_6575)", &[])
        .await
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS troupe_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await
    .map_err(db)?;
    let applied: Option<i32> = tx
        .query_one("SELECT max(version) FROM troupe_migrations", &[])
        .await
        .map_err(db)?
        .get(0);
    let applied = applied.unwrap_or(0);
    for (version, sql) in STEPS.iter().filter(|(v, _)| *v > applied) {
        tx.batch_execute(sql).await.map_err(db)?;
        tx.execute(
            "INSERT INTO troupe_migrations (version) VALUES ($1)",
            &[version],
        )
        .await
        .map_err(db)?;
        tracing::info!(version, "applied database migration");
    }
    tx.commit().await.map_err(db)
}
