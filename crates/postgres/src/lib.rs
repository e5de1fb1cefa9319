//! Troupe's scale-out state, event log and vectors on Postgres with pgvector.
//!
//! - [`PgState`]: versioned key-value state with compare-and-set, and the per-subject
//!   event log.
//! - [`PgVectors`]: chunk vectors in one table per dimension count, with an HNSW
//!   index (cosine); every search is scoped to a tenant. When the tenant filter leaves
//!   the approximate index fewer than `k` rows, the search falls back to an exact scan,
//!   so a small tenant among large ones still gets its `k` best.
//! - [`migrate`]: the schema, versioned in `troupe_migrations`, applied under an
//!   advisory lock so concurrent starts do not race.
//!
//! - [`tls`]: `sslmode` (`disable`, `prefer`, `require`, `verify-full`) with rustls.
//!
//! Connect with [`Pg::connect`] and a `postgres://` URL (`TROUPE_DATABASE_URL`).

pub mod migrations;
pub mod state;
pub mod tls;
pub mod vectors;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
pub use migrations::migrate;
pub use state::PgState;
use troupe_core::{Error, Result};
pub use vectors::PgVectors;

/// A pool of connections to one database.
#[derive(Clone)]
pub struct Pg {
    pool: Pool,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg").finish_non_exhaustive()
    }
}

/// A Postgres error as a backend error.
pub(crate) fn pg(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::backend("postgres", e)
}

/// A Postgres error, with the server's message when there is one.
pub(crate) fn db(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(d) => Error::backend("postgres", format!("{}: {}", d.code().code(), d.message())),
        None => {
            let mut text = e.to_string();
            if let Some(cause) = std::error::Error::source(&e) {
                text = format!("{text}: {cause}");
            }
            Error::backend("postgres", text)
        }
    }
}

impl Pg {
    /// Connects to `url` (`postgres://user:password@host:port/database`), with up to
    /// `max_connections` connections, and applies the schema migrations.
    ///
    /// TLS follows `sslmode` (and `sslrootcert`) in the URL's query, as libpq's do: see
    /// [`tls`].
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self> {
        Self::connect_with(url, None, max_connections).await
    }

    /// [`Pg::connect`], with the password given apart from the URL (read from a
    /// secret at run time rather than kept in an environment variable).
    pub async fn connect_with(
        url: &str,
        password: Option<&str>,
        max_connections: usize,
    ) -> Result<Self> {
        let (rest, settings) = tls::split(url)?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
            Error::invalid(
                "TROUPE_DATABASE_URL",
                format!(
                    "not a Postgres URL ({e}); use postgres://user:password@host:5432/database[?sslmode=verify-full&sslrootcert=ca.pem]"
                ),
            )
        })?;
        config.ssl_mode(settings.ssl_mode());
        if let Some(password) = password {
            config.password(password);
        }
        let manager = Manager::from_config(
            config,
            settings.connector()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1))
            .build()
            .map_err(pg)?;
        let pg = Self { pool };
        migrate(&pg).await?;
        Ok(pg)
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => db(e),
            other => pg(other),
        })
    }

    /// Whether the database answers.
    pub async fn health(&self) -> Result<()> {
        self.client()
            .await?
            .simple_query("SELECT 1")
            .await
            .map_err(db)?;
        Ok(())
    }
}
