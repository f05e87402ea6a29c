//! The retained change feed (API.md §10): the records of recent commands, kept across
//! restarts in the store's `feed_events` table (written with each command's own changes, so
//! state and feed never disagree), or in memory with `--storage memory`. Watchers that resume
//! from a sequence read it back here before they go on live.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;
use redb::ReadableDatabase;

use super::change::{changes_of, ChangeRecord};
use crate::store::command::Committed;
use crate::store::durable::schema::{decode, EVENTS, META, META_EVENTS_FROM};
use crate::store::durable::Journal;
use crate::store::error::StoreError;
use crate::store::write_path::Follower;

/// Records retained by default (`--watch-retention`).
pub const DEFAULT_RETENTION: u64 = 1_000_000;

/// The position of a record: its command's sequence and its index within the command.
pub type RecordKey = (u64, u32);

/// The key just after every record of `sequence`: where a watcher resuming from it starts.
pub fn after_sequence(sequence: u64) -> RecordKey {
    (sequence, u32::MAX)
}

/// The retained records of a store in memory.
#[derive(Debug)]
pub struct MemoryHistory {
    retain: u64,
    inner: Mutex<MemoryRecords>,
}

#[derive(Debug, Default)]
struct MemoryRecords {
    records: VecDeque<(RecordKey, ChangeRecord)>,
    /// Lowest sequence whose records are all retained.
    from: u64,
}

impl MemoryHistory {
    /// Keeps at least the last `retain` records of the commands after `sequence`.
    pub fn new(retain: u64, sequence: u64) -> MemoryHistory {
        MemoryHistory {
            retain,
            inner: Mutex::new(MemoryRecords {
                records: VecDeque::new(),
                from: sequence + 1,
            }),
        }
    }
}

impl Follower for MemoryHistory {
    fn follow(&self, committed: &Committed) {
        let mut inner = self.inner.lock();
        for (index, record) in changes_of(committed).enumerate() {
            inner
                .records
                .push_back(((record.sequence, index as u32), record));
        }
        // Whole commands only, so that `from` stays exact.
        while inner.records.len() as u64 > self.retain {
            let Some(((oldest, _), _)) = inner.records.front().copied() else {
                break;
            };
            let of_oldest = inner
                .records
                .iter()
                .take_while(|((sequence, _), _)| *sequence == oldest)
                .count();
            if (inner.records.len() - of_oldest) < self.retain as usize {
                break;
            }
            inner.records.drain(..of_oldest);
            inner.from = oldest + 1;
        }
    }
}

/// Where the retained records are.
#[derive(Clone)]
pub enum History {
    /// In memory (`--storage memory`).
    Memory(Arc<MemoryHistory>),
    /// In the embedded store, written by its journal.
    Stored(Arc<Journal>),
}

impl History {
    /// The oldest sequence a watcher may resume from: every record after it is retained.
    pub fn oldest_resumable(&self) -> Result<u64, StoreError> {
        Ok(match self {
            History::Memory(memory) => memory.inner.lock().from - 1,
            History::Stored(journal) => {
                let txn = journal
                    .database()
                    .begin_read()
                    .map_err(|e| storage(e.into()))?;
                events_from(&txn)? - 1
            }
        })
    }

    /// Resolves once every record up to `sequence` can be read here.
    pub async fn readable(&self, sequence: u64) -> Result<(), StoreError> {
        match self {
            History::Memory(_) => Ok(()),
            History::Stored(journal) => journal
                .wait_written(sequence)
                .await
                .map_err(|failure| StoreError::Unavailable(failure.to_string())),
        }
    }

    /// Up to `max` retained records after `after` up to sequence `up_to`, in order, with
    /// their keys; FeedTrimmed when records after `after` are no longer retained (a watcher
    /// slower than the trimming). Blocking: reads the store.
    pub fn read(
        &self,
        after: RecordKey,
        up_to: u64,
        max: usize,
    ) -> Result<Vec<(RecordKey, ChangeRecord)>, StoreError> {
        let first_needed = match after.1 {
            u32::MAX => after.0 + 1,
            _ => after.0,
        };
        let trimmed = |from: u64| StoreError::FeedTrimmed {
            requested: after.0,
            oldest: from - 1,
        };
        let range = (Bound::Excluded(after), Bound::Included((up_to, u32::MAX)));
        match self {
            History::Memory(memory) => {
                let inner = memory.inner.lock();
                if inner.from > first_needed {
                    return Err(trimmed(inner.from));
                }
                let start = inner.records.partition_point(|(key, _)| *key <= after);
                Ok(inner
                    .records
                    .range(start..)
                    .take_while(|(key, _)| *key <= (up_to, u32::MAX))
                    .take(max)
                    .copied()
                    .collect())
            }
            History::Stored(journal) => {
                let txn = journal
                    .database()
                    .begin_read()
                    .map_err(|e| storage(e.into()))?;
                let from = events_from(&txn)?;
                if from > first_needed {
                    return Err(trimmed(from));
                }
                let table = txn.open_table(EVENTS).map_err(|e| storage(e.into()))?;
                let mut records = Vec::with_capacity(max.min(4096));
                for entry in table.range(range).map_err(|e| storage(e.into()))? {
                    let (key, value) = entry.map_err(|e| storage(e.into()))?;
                    let (sequence, index) = key.value();
                    let change = decode(value.value(), &format!("feed record {sequence}.{index}"))
                        .map_err(StoreError::Unavailable)?;
                    records.push(((sequence, index), ChangeRecord { sequence, change }));
                    if records.len() >= max {
                        break;
                    }
                }
                Ok(records)
            }
        }
    }
}

/// The lowest sequence whose records are all retained in the store.
fn events_from(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(|e| storage(e.into()))?;
    let value = meta.get(META_EVENTS_FROM).map_err(|e| storage(e.into()))?;
    Ok(value
        .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(1))
}

fn storage(error: redb::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot read the retained feed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Token, TokenData, TokenId};
    use crate::store::command::Effect;

    fn created(sequence: u64, ids: &[u32]) -> Committed {
        Committed {
            sequence,
            effects: ids
                .iter()
                .map(|raw| {
                    Effect::Created(Token {
                        id: TokenId::new(*raw).expect("valid"),
                        data: TokenData::empty(1),
                    })
                })
                .collect(),
        }
    }

    fn sequences(records: &[(RecordKey, ChangeRecord)]) -> Vec<RecordKey> {
        records.iter().map(|(key, _)| *key).collect()
    }

    #[test]
    fn memory_keeps_at_least_the_retention_in_whole_commands() {
        let memory = Arc::new(MemoryHistory::new(3, 0));
        memory.follow(&created(1, &[1, 2]));
        memory.follow(&created(2, &[3]));
        memory.follow(&created(3, &[4, 5]));
        let history = History::Memory(Arc::clone(&memory));
        // 5 records, 3 kept at least: command 1 goes (3 left), command 2 stays.
        assert_eq!(history.oldest_resumable().expect("reads"), 1);
        let all = history.read(after_sequence(1), 3, 10).expect("retained");
        assert_eq!(sequences(&all), [(2, 0), (3, 0), (3, 1)]);
        let error = history.read(after_sequence(0), 3, 10).expect_err("trimmed");
        assert!(matches!(error, StoreError::FeedTrimmed { oldest: 1, .. }));
    }

    #[test]
    fn reads_resume_mid_command_and_stop_at_the_bound() {
        let memory = Arc::new(MemoryHistory::new(100, 0));
        memory.follow(&created(1, &[1, 2, 3]));
        memory.follow(&created(2, &[4]));
        let history = History::Memory(memory);
        let first = history.read(after_sequence(0), 2, 2).expect("retained");
        assert_eq!(sequences(&first), [(1, 0), (1, 1)]);
        let rest = history.read((1, 1), 1, 10).expect("retained");
        assert_eq!(sequences(&rest), [(1, 2)]);
        let last = history.read((1, 2), 2, 10).expect("retained");
        assert_eq!(sequences(&last), [(2, 0)]);
    }
}
