//! Which processes have the data directory open, so the leases of one that died are
//! released when the directory is opened again, instead of after their visibility
//! timeouts.
//!
//! Each process that opens the directory registers as an owner: a file
//! `<data-dir>/owners/<id>.lock` that it holds an exclusive lock on for as long as it
//! lives (the kernel drops the lock when the process exits, however it exits). Every
//! lease the process takes carries its id. On open, an owner file whose lock can be
//! taken belongs to a process that is gone: its leases are released and its file
//! removed. Processes still alive keep their locks and their leases.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use troupe_core::{Error, Result};

use crate::SqliteQueue;

/// This process's registration; the lock is held until it is dropped.
#[derive(Debug)]
pub struct Owner {
    /// The id its leases carry.
    pub id: String,
    path: PathBuf,
    _lock: File,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // A clean exit leaves nothing to release.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::Backend {
        backend: "filesystem",
        cause: format!("{what}: {e}").into(),
    }
}

/// Registers this process as an owner in `dir` (the data directory).
pub fn register(dir: &Path) -> Result<Owner> {
    let owners = dir.join("owners");
    std::fs::create_dir_all(&owners).map_err(io(format!("creating {}", owners.display())))?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let path = owners.join(format!("{id}.lock"));
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io(format!("creating {}", path.display())))?;
    file.try_lock()
        .map_err(|e| io(format!("locking {}", path.display()))(e.into()))?;
    Ok(Owner {
        id,
        path,
        _lock: file,
    })
}

/// Releases the leases of every owner in `dir` whose process is gone, and forgets
/// it; returns how many leases were released.
pub async fn release_departed(dir: &Path, me: &Owner, queue: &SqliteQueue) -> Result<usize> {
    let owners = dir.join("owners");
    let entries =
        std::fs::read_dir(&owners).map_err(io(format!("listing {}", owners.display())))?;
    let mut released = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".lock"))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        else {
            continue;
        };
        if id == me.id {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue; // removed meanwhile by another process doing the same
        };
        match file.try_lock() {
            Ok(()) => {
                let n = queue.release_owner(id).await?;
                if n > 0 {
                    tracing::info!(
                        owner = id,
                        leases = n,
                        "released the leases of a process that is gone"
                    );
                }
                released += n;
                let _ = std::fs::remove_file(&path);
            }
            Err(TryLockError::WouldBlock) => {} // alive
            Err(TryLockError::Error(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot tell whether this owner is alive; leaving its leases to expire");
            }
        }
    }
    Ok(released)
}
