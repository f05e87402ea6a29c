//! The single-node command log: the store's writer lock orders the entries and the journal
//! (redb, group commit) makes them durable; a write is acknowledged once its record is synced
//! (at once with memory storage or `none` durability).

use std::sync::Arc;

use super::{AppendOptions, CommandLog, LogEntry, LogHealth, Pending};
use crate::store::write_path::Store;

/// The command log of a single node.
pub struct LocalLog {
    store: Arc<Store>,
}

impl LocalLog {
    /// The log of `store`, durable through its journal (if it has one).
    pub fn new(store: Arc<Store>) -> LocalLog {
        LocalLog { store }
    }
}

impl CommandLog for LocalLog {
    fn applies_on_append(&self) -> bool {
        true
    }

    fn append(&self, entry: LogEntry, _options: AppendOptions) -> Pending {
        let applied = self.store.apply_entry(entry);
        let store = Arc::clone(&self.store);
        Box::pin(async move {
            let applied = applied?;
            store.wait_durable(applied.sequence).await?;
            Ok(applied)
        })
    }

    fn describe(&self) -> String {
        match self.store.journal() {
            Some(_) => "local: redb journal".to_string(),
            None => "local: memory".to_string(),
        }
    }

    fn health(&self) -> LogHealth {
        match self.store.journal().and_then(|journal| journal.failure()) {
            Some(failure) => LogHealth::Failed(failure.to_string()),
            None => LogHealth::Ok,
        }
    }
}
