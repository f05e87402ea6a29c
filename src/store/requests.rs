//! Idempotent writes: the request ids of recent successful writes, each with its method, commit
//! sequence, time and outcome. A write that repeats one (same id, same method, within the
//! window) is answered from here and applied no second time; the same id with another method
//! is refused. Part of the replicated state: it changes only in apply, is aged by the entries'
//! own times (never a local clock), and is stored with the state, so that every replica, and a
//! restarted one, answers a retry the same way.
//!
//! Memory: one entry per id for at most `KEPT_REQUESTS` ids; an entry holds its outcome (a
//! token for most writes, up to 1,000 tokens for a batch), so the ledger grows with what the
//! writes of the last ten minutes created, never beyond the last 100,000 of them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::command::Outcome;
use super::durable::DurableWrite;
use super::error::StoreError;

/// How long a request id is remembered, in milliseconds of entry time (API.md §9: 10 minutes).
pub const REQUEST_WINDOW_MS: u64 = 10 * 60 * 1000;
/// How many request ids are kept at most (API.md §9: at least the last 100,000).
pub const KEPT_REQUESTS: usize = 100_000;

/// The first answer to a request id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnsweredRequest {
    /// The write RPC it came with.
    pub method: String,
    /// Its commit sequence.
    pub sequence: u64,
    /// Its entry's time (Unix milliseconds).
    pub at_ms: u64,
    /// What it produced.
    pub outcome: Outcome,
}

/// The remembered request ids, oldest first.
#[derive(Debug, Default)]
pub struct RequestLedger {
    by_id: HashMap<Arc<str>, AnsweredRequest>,
    /// (sequence, id) in commit order; an id answered again later appears twice, and only the
    /// pair whose sequence matches the map's entry is live.
    order: VecDeque<(u64, Arc<str>)>,
}

impl RequestLedger {
    /// The ledger read back from storage (any order).
    pub fn recovered(mut stored: Vec<(String, AnsweredRequest)>) -> RequestLedger {
        stored.sort_by_key(|(_, answered)| answered.sequence);
        let mut ledger = RequestLedger::default();
        for (id, answered) in stored {
            let id: Arc<str> = id.into();
            ledger.order.push_back((answered.sequence, Arc::clone(&id)));
            ledger.by_id.insert(id, answered);
        }
        ledger
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The first answer to `id` when an entry of `method` stamped `now_ms` repeats it; an
    /// error when `id` was used with another method within the window.
    pub fn repeated(
        &self,
        id: &str,
        method: &str,
        now_ms: u64,
    ) -> Result<Option<&AnsweredRequest>, StoreError> {
        let Some(first) = self.by_id.get(id) else {
            return Ok(None);
        };
        if first.at_ms.saturating_add(REQUEST_WINDOW_MS) < now_ms {
            return Ok(None);
        }
        if first.method != method {
            return Err(StoreError::RequestIdReused {
                method: first.method.clone(),
            });
        }
        Ok(Some(first))
    }

    /// Remembers the answer to `id`, adding the stored change to `writes`.
    pub fn record(&mut self, id: &str, answered: AnsweredRequest, writes: &mut Vec<DurableWrite>) {
        let id: Arc<str> = id.into();
        writes.push(DurableWrite::PutRequest {
            id: id.to_string(),
            answered: Box::new(answered.clone()),
        });
        self.order.push_back((answered.sequence, Arc::clone(&id)));
        self.by_id.insert(id, answered);
    }

    /// Forgets ids older than the window at `now_ms` and beyond the newest `KEPT_REQUESTS`,
    /// adding the stored changes to `writes`.
    pub fn expire(&mut self, now_ms: u64, writes: &mut Vec<DurableWrite>) {
        while let Some((sequence, id)) = self.order.front() {
            let Some(answered) = self.by_id.get(id) else {
                self.order.pop_front();
                continue;
            };
            if answered.sequence != *sequence {
                // Superseded by a later answer to the same id.
                self.order.pop_front();
                continue;
            }
            let expired = answered.at_ms.saturating_add(REQUEST_WINDOW_MS) < now_ms;
            if !expired && self.by_id.len() <= KEPT_REQUESTS {
                break;
            }
            let (_, id) = self.order.pop_front().expect("front exists");
            self.by_id.remove(&id);
            writes.push(DurableWrite::DeleteRequest(id.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(method: &str, sequence: u64, at_ms: u64) -> AnsweredRequest {
        AnsweredRequest {
            method: method.into(),
            sequence,
            at_ms,
            outcome: Outcome::Cleared(sequence),
        }
    }

    #[test]
    fn a_repeat_within_the_window_gets_the_first_answer() {
        let mut ledger = RequestLedger::default();
        let mut writes = Vec::new();
        ledger.record("r1", answered("ClearTokens", 4, 1_000), &mut writes);
        let first = ledger.repeated("r1", "ClearTokens", 1_000 + REQUEST_WINDOW_MS);
        assert_eq!(first.expect("same method").map(|a| a.sequence), Some(4));
        assert_eq!(
            ledger.repeated("r1", "ClearTokens", 1_001 + REQUEST_WINDOW_MS),
            Ok(None),
            "after the window it is a new write"
        );
        assert_eq!(
            ledger.repeated("r1", "CreateToken", 2_000),
            Err(StoreError::RequestIdReused {
                method: "ClearTokens".into()
            })
        );
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn old_ids_expire_by_entry_time_and_the_count_is_bounded() {
        let mut ledger = RequestLedger::default();
        let mut writes = Vec::new();
        ledger.record("old", answered("DeleteToken", 1, 0), &mut writes);
        ledger.record(
            "new",
            answered("DeleteToken", 2, REQUEST_WINDOW_MS),
            &mut writes,
        );
        ledger.expire(REQUEST_WINDOW_MS + 1, &mut writes);
        assert_eq!(ledger.len(), 1);
        assert!(writes.contains(&DurableWrite::DeleteRequest("old".into())));
        for i in 0..KEPT_REQUESTS as u64 + 5 {
            ledger.record(
                &format!("id-{i}"),
                answered("DeleteToken", 3 + i, 0),
                &mut Vec::new(),
            );
        }
        ledger.expire(0, &mut Vec::new());
        assert_eq!(ledger.len(), KEPT_REQUESTS);
        assert!(ledger.by_id.contains_key("id-5") && !ledger.by_id.contains_key("id-4"));
    }

    #[test]
    fn a_recovered_ledger_keeps_commit_order() {
        let ledger = RequestLedger::recovered(vec![
            ("b".into(), answered("DeleteToken", 9, 0)),
            ("a".into(), answered("DeleteToken", 3, 0)),
        ]);
        let order: Vec<_> = ledger.order.iter().map(|(s, _)| *s).collect();
        assert_eq!(order, [3, 9]);
    }
}
