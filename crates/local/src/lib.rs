//! Troupe's embedded backends: everything under one data directory, nothing to install.
//!
//! - Queues, topics, dead letters, state and the event log live in one SQLite database
//!   (`<data-dir>/troupe.db`, WAL mode, fsync on commit by default).
//! - Blobs are plain files under `<data-dir>/blobs/<bucket>/<key>`.
//!
//! # Layout
//!
//! - [`db`]: opening the database, its schema, running calls off the async runtime.
//! - [`queue`]: [`SqliteQueue`], the durable queue with leases, backoff, dead letters,
//!   dedupe and topic fan-out.
//! - [`state`]: [`SqliteState`], versioned key-value state and the event log.
//! - [`vectors`]: [`SqliteVectors`], embedding vectors with exact search over an
//!   in-memory copy kept in step with the table.
//! - [`blobs`]: [`FsBlobs`], atomic file writes and object-created notifications.
//! - [`drop_ins`]: [`DropInScanner`], announcing files written straight into a bucket's
//!   folder like puts.
//! - [`owners`]: the processes that have the directory open, so a restart releases
//!   the leases of one that died at once.
//! - [`retention`]: [`Local::purge`], removing dead letters, dedupe entries and
//!   drop-in records past their keeping time.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> troupe_core::Result<()> {
//! let backends = troupe_local::Local::open(std::path::Path::new(".troupe"))?;
//! let _queue = backends.queue.clone();
//! # Ok(()) }
//! ```

pub mod blobs;
pub mod db;
pub mod drop_ins;
pub mod owners;
pub mod queue;
pub mod retention;
pub mod state;
pub mod vectors;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use blobs::FsBlobs;
pub use db::{Db, Durability};
pub use drop_ins::DropInScanner;
pub use queue::SqliteQueue;
pub use state::SqliteState;
use troupe_core::{Clock, Error, Result, SystemClock};
pub use vectors::SqliteVectors;

/// The embedded backends opened on one data directory.
#[derive(Debug, Clone)]
pub struct Local {
    /// The data directory.
    pub dir: PathBuf,
    /// Queues and topics.
    pub queue: SqliteQueue,
    /// State and event log.
    pub state: SqliteState,
    /// Blobs, announcing writes on `queue`.
    pub blobs: FsBlobs,
    /// Embedding vectors.
    pub vectors: SqliteVectors,
    /// This process's registration in the directory; its leases carry its id.
    pub owner: Arc<owners::Owner>,
}

/// Options for [`Local::open_with`].
#[derive(Debug, Clone)]
pub struct Options {
    /// fsync policy.
    pub durability: Durability,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Enqueue every message twice (at-least-once test switch).
    pub duplicate_deliveries: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            clock: Arc::new(SystemClock),
            duplicate_deliveries: false,
        }
    }
}

impl Local {
    /// Opens (creating) the data directory with default options.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, Options::default())
    }

    /// Opens (creating) the data directory.
    pub fn open_with(dir: &Path, options: Options) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Backend {
            backend: "filesystem",
            cause: format!("creating data directory {}: {e}", dir.display()).into(),
        })?;
        let db = Db::open(&dir.join("troupe.db"), options.durability)?;
        let owner = Arc::new(owners::register(dir)?);
        let queue = SqliteQueue::new(db.clone(), options.clock)
            .with_duplicate_deliveries(options.duplicate_deliveries)
            .with_owner(&owner.id);
        let state = SqliteState::new(db.clone());
        let vectors = SqliteVectors::new(db);
        let blobs = FsBlobs::new(dir.join("blobs"), Some(queue.clone()))?;
        Ok(Self {
            dir: dir.to_owned(),
            queue,
            state,
            blobs,
            vectors,
            owner,
        })
    }

    /// Releases the leases held by processes that had this directory open and are
    /// gone (killed, crashed): their messages are deliverable at once rather than
    /// after their visibility timeouts. Returns how many were released.
    pub async fn release_departed(&self) -> Result<usize> {
        owners::release_departed(&self.dir, &self.owner, &self.queue).await
    }
}
