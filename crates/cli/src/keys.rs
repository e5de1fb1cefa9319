//! `troupe keys create|list|revoke`: API keys in the backend's state store (SQLite
//! under `--data-dir`, or Postgres with `--backend aws`), where every host of the
//! deployment reads them.

use anyhow::{Context as _, Result, bail};
use troupe_host::auth::keys::KeyRecord;
use troupe_host::auth::keys::Revoked;
use troupe_host::auth::{KeyStore, Scope};

use crate::backend::{BackendArgs, BackendKind, Opened};

/// What to do with keys.
#[derive(Debug, clap::Subcommand)]
pub enum KeysAction {
    /// Create an API key for a tenant and print it, once: only its hash is stored.
    Create {
        /// The tenant every request with the key acts in (`[a-z0-9][a-z0-9-]{0,62}`).
        #[arg(long)]
        tenant: troupe_events::Tenant,
        /// A note on what the key is for (shown by `troupe keys list`).
        #[arg(long, default_value = "")]
        label: String,
        /// What the key may do: `read` (documents, search, embeddings), `write` (also
        /// upload and delete) or `admin` (also webhooks).
        #[arg(long, default_value = "write")]
        scope: Scope,
        /// Print one JSON line `{"id", "key", "tenant", "scope"}`.
        #[arg(long)]
        json: bool,
    },
    /// List the keys (revoked ones too), never their secrets.
    List {
        /// Only this tenant's keys.
        #[arg(long)]
        tenant: Option<troupe_events::Tenant>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every host refuses it within seconds. Its record stays.
    Revoke {
        /// The key's id (`troupe keys list`; the part after `trp_`, before the next `_`).
        id: String,
    },
}

/// Runs `troupe keys …` on the backend `backend` names.
pub async fn run(backend: &BackendArgs, action: KeysAction) -> Result<()> {
    let creating = matches!(action, KeysAction::Create { .. });
    if !creating
        && backend.backend == BackendKind::Local
        && !backend.data_dir.join("troupe.db").is_file()
    {
        bail!(
            "no Troupe data in {}: pass --data-dir (or TROUPE_DATA_DIR)",
            backend.data_dir.display()
        );
    }
    let opened = Opened::open(backend, false).await?;
    let store = KeyStore::new(opened.backends(None).state);
    match action {
        KeysAction::Create {
            tenant,
            label,
            scope,
            json,
        } => {
            let (record, key) = store
                .create(tenant, scope, &label)
                .await
                .context("storing the new key")?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": record.id, "key": key.expose(), "tenant": record.tenant, "scope": record.scope})
                );
            } else {
                println!("{}", key.expose());
                eprintln!(
                    "API key {} for tenant `{}` (scope {}). Store it now: it is not shown again. \
                     Use it as `Authorization: Bearer <key>`; revoke it with `troupe keys revoke {}`.",
                    record.id, record.tenant, record.scope, record.id
                );
            }
        }
        KeysAction::List { tenant, json } => {
            let records = store.list(tenant.as_ref()).await?;
            if json {
                let all: Vec<_> = records.iter().map(KeyRecord::public).collect();
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                print_table(&records);
            }
        }
        KeysAction::Revoke { id } => match store.revoke(id.trim()).await? {
            Revoked::Now(r) => println!(
                "revoked key {} (tenant `{}`): hosts refuse it within seconds",
                r.id, r.tenant
            ),
            Revoked::Already(r) => println!(
                "key {} was already revoked at {}",
                r.id,
                r.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
        },
    }
    Ok(())
}

fn print_table(records: &[KeyRecord]) {
    if records.is_empty() {
        println!(
            "no API keys: authentication is off until one exists (`troupe keys create --tenant NAME`)"
        );
        return;
    }
    println!(
        "{:<16}  {:<20}  {:<5}  {:<20}  {:<20}  LABEL",
        "ID", "TENANT", "SCOPE", "CREATED", "REVOKED"
    );
    let when = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    for r in records {
        println!(
            "{:<16}  {:<20}  {:<5}  {:<20}  {:<20}  {}",
            r.id,
            r.tenant,
            r.scope,
            when(r.created_at),
            r.revoked_at.map(when).unwrap_or_else(|| "-".into()),
            r.label
        );
    }
}
