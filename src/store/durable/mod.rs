//! Persistence: the embedded store (redb, one file in the data directory), the group-commit
//! journal that makes committed commands durable before they are acknowledged, recovery at
//! start, and consistent backups. The rest of the store sees only `Journal` and `Recovered`.

pub mod backup;
pub mod journal;
pub mod recovery;
pub mod schema;

use std::path::PathBuf;

pub use backup::{create_backup, prune_backups, remove_partial_backups, restore_backup, Backup};
pub use journal::{Journal, JournalStats, Record};
pub use recovery::{LogPosition, Recovered, StoredGrid};
pub use schema::DurableWrite;

/// Name of the embedded engine, as `storage_backend` reports it.
pub const ENGINE_NAME: &str = "redb";
/// File of the store inside the data directory.
pub const STORE_FILE: &str = "neurograph.redb";

/// When a write counts as durable enough to acknowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// fsync before the reply; writers arriving during an fsync share the next one.
    Immediate,
    /// Like `immediate`, but the journal waits up to the batch delay for more writers.
    Batched,
    /// Reply before any fsync (the journal syncs about once a second): tests and demos.
    None,
}

/// Why the embedded store could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The data directory or store file cannot be created or read.
    #[error("data directory or store {path} cannot be used: {detail}")]
    Unreadable {
        /// The path that failed.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// The store file exists but its content is not a valid NeuroGraph store.
    #[error("store {path} is corrupt or not a NeuroGraph store: {detail}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The store is open in another process.
    #[error("store {path} is in use by another process (is a server running on it?)")]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// A backup or restore failed.
    #[error("{0}")]
    Backup(String),
}

impl DurableError {
    /// The error for `error` of redb on the store `path`.
    fn from_redb(path: &std::path::Path, error: impl Into<redb::Error>) -> DurableError {
        let path = path.to_path_buf();
        match error.into() {
            redb::Error::DatabaseAlreadyOpen => DurableError::InUse { path },
            // redb reports a file that is not a redb database as invalid data.
            redb::Error::Io(e) if e.kind() != std::io::ErrorKind::InvalidData => {
                DurableError::Unreadable {
                    path,
                    detail: e.to_string(),
                }
            }
            other => DurableError::Corrupt {
                path,
                detail: other.to_string(),
            },
        }
    }
}
