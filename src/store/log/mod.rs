//! The command log: the one narrow interface between the write RPCs and the state. A write is
//! a `LogEntry` handed to a `CommandLog`, which orders it, has it applied (by
//! `Store::apply`, deterministically, at its sequence) and resolves with the sequence and the
//! typed outcome once the write may be acknowledged. `local` is the single-node log: the
//! store's own order and its redb journal.

pub mod entry;
pub mod local;

use std::future::Future;
use std::pin::Pin;

pub use entry::{EntryError, LogEntry, ENTRY_FORMAT};
pub use local::LocalLog;

use super::command::Applied;
use super::error::StoreError;

/// A write on its way through the log: resolves with its sequence and outcome.
pub type Pending = Pin<Box<dyn Future<Output = Result<Applied, StoreError>> + Send + 'static>>;

/// Orders write commands and applies them to the state.
pub trait CommandLog: Send + Sync {
    /// Hands `entry` to the log. The future resolves once the entry is applied to this
    /// process's state and as durable as the log promises: what a write may acknowledge. A
    /// local log applies the entry before `append` returns, on the caller's thread, so that
    /// heavy entries run where the caller put them.
    fn append(&self, entry: LogEntry) -> Pending;
}
