//! `troupe dlq`: list and redrive dead letters.

use anyhow::Result;
use clap::Subcommand;
use troupe_cli::backend::{BackendArgs, BackendKind, Opened};

/// What `troupe dlq` does.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters of one subscription, or counts for every subscription.
    List {
        /// Subscription (queue) name; omit for a summary of all.
        subscription: Option<String>,
        /// At most this many messages.
        #[arg(long, env = "TROUPE_DLQ_LIMIT", default_value_t = 100)]
        limit: usize,
    },
    /// Move every dead letter of a subscription back onto its queue.
    Redrive {
        /// Subscription (queue) name.
        subscription: String,
    },
}

/// Runs one `troupe dlq` action.
pub async fn run(backend: BackendArgs, action: DlqAction) -> Result<()> {
    if backend.backend == BackendKind::Local && !backend.data_dir.join("troupe.db").is_file() {
        anyhow::bail!(
            "no Troupe data in {}: pass --data-dir (or TROUPE_DATA_DIR)",
            backend.data_dir.display()
        );
    }
    let backends = Opened::open(&backend, false).await?.backends(None);
    match action {
        DlqAction::List {
            subscription: Some(name),
            limit,
        } => {
            let letters = backends.dead_letters.dead_letters(&name, limit).await?;
            println!("{}", serde_json::to_string_pretty(&letters)?);
        }
        DlqAction::List {
            subscription: None, ..
        } => {
            let mut summary = Vec::new();
            for s in backends.queue.subscriptions().await? {
                let depth = backends.queue.depth(&s.name).await?;
                summary.push(serde_json::json!({"subscription": s.name, "topics": s.topics, "dead": depth.dead, "ready": depth.ready, "in_flight": depth.in_flight}));
            }
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        DlqAction::Redrive { subscription } => {
            let n = backends.dead_letters.redrive(&subscription).await?;
            println!("redrove {n} message(s) back to `{subscription}`");
        }
    }
    Ok(())
}
