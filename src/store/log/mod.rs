//! The command log: the one narrow interface between the write RPCs and the state. A write is
//! a `LogEntry` handed to a `CommandLog`, which orders it, has it applied (by
//! `Store::apply`, deterministically, at its sequence) and resolves with the sequence and the
//! typed outcome once the write may be acknowledged. `local` is the single-node log: the
//! store's own order and its redb journal.

pub mod entry;
pub mod jetstream;
pub mod local;
pub mod run;
pub mod snapshots;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

pub use entry::{EntryError, LogEntry, ENTRY_FORMAT};
pub use local::LocalLog;

use super::command::Applied;
use super::error::StoreError;

/// A write on its way through the log: resolves with its sequence and outcome.
pub type Pending = Pin<Box<dyn Future<Output = Result<Applied, StoreError>> + Send + 'static>>;

/// How one entry is appended.
#[derive(Clone, Debug, Default)]
pub struct AppendOptions {
    /// Give up (UNAVAILABLE) when the log has not taken the entry by then.
    pub deadline: Option<Instant>,
    /// Entries with the same key are appended once, whoever appends them (time-driven
    /// commands that every replica sees due); `None` for a key of this append alone.
    pub dedupe_key: Option<String>,
}

/// How the log is doing, for Ready and Status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogHealth {
    /// Taking and applying entries.
    Ok,
    /// Connecting or catching up.
    Starting,
    /// Stopped applying (the state is no longer following the log): why.
    Failed(String),
}

/// Orders write commands and applies them to the state.
pub trait CommandLog: Send + Sync {
    /// Hands `entry` to the log. The future resolves once the entry is applied to this
    /// process's state and as durable as the log promises: what a write may acknowledge. A
    /// local log applies the entry before `append` returns, on the caller's thread, so that
    /// heavy entries run where the caller put them.
    fn append(&self, entry: LogEntry, options: AppendOptions) -> Pending;

    /// Whether `append` applies the entry before it returns (a local log): the next entry may
    /// then be appended while this one is made durable, and see its effects. A replicated log
    /// publishes when its future is first polled and applies on delivery.
    fn applies_on_append(&self) -> bool {
        false
    }

    /// One line for Status (`local: …`, `nats: stream …, lag N`).
    fn describe(&self) -> String;

    /// How the log is doing.
    fn health(&self) -> LogHealth;
}
