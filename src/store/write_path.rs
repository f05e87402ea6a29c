//! The state and its one deterministic apply step. Every change is a `Command` applied under
//! one lock, in commit-sequence order: the command's own checks and changes first (token
//! commands here, with the CDNA weight limits checked by an explicit call; grid and CDNA
//! commands by their components, chosen by a `match`), then the components that follow
//! commits (CDNA's churn count, the grids' members, the index, the change feed), then the
//! journal record of what changed. A failed check writes nothing.
//!
//! Applying reads no clock: a command carries its time, and ids, grid ids and CDNA revisions
//! are allocated from the state alone, so the same commands in the same order give the same
//! state on replay or on another replica. Who orders the commands and when an outcome may be
//! acknowledged is the command log's business (`store::log`).
//!
//! Lock order: the writer lock, then the components' own locks (CDNA, grids, the index), then
//! the journal's sender.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::cdna::{Cdna, SystemClock};
use super::command::{Applied, Command, Committed, Effect, Outcome};
use super::durable::{DurableWrite, Journal, Record};
use super::error::{StoreError, TokenAt};
use super::expiry::ExpiryIndex;
use super::feed::change::changes_of;
use super::grids::Grids;
use super::ids::IdCounters;
use super::import::plan_import;
use super::log::LogEntry;
use super::requests::{AnsweredRequest, RequestLedger};
use super::tokens::TokenTables;
use crate::model::token::IdRequest;
use crate::model::{Token, TokenDraft, TokenFilter, TokenId};

/// A component that follows commits in sequence order (the spatial index, the change feed):
/// it sees what each commit changed, after the commit's own component applied it.
pub trait Follower: Send + Sync {
    /// Follows one commit. Runs under the write lock, so commits arrive one at a time.
    fn follow(&self, committed: &Committed);
}

/// The components the write path dispatches to, and those that merely follow it.
pub struct Components {
    /// The CDNA config: applies CDNA commands, bounds token weights, counts churn.
    pub cdna: Arc<Cdna>,
    /// The user grids: apply grid commands, follow token changes of their members.
    pub grids: Arc<Grids>,
    /// Follow every commit, in this order, after the grids (the feed comes last).
    pub followers: Vec<Arc<dyn Follower>>,
    /// Change-feed records the journal keeps at least (API.md §10), when there is one.
    pub feed_retention: u64,
}

impl Default for Components {
    /// A fresh CDNA config on the system clock, no user grids, no followers.
    fn default() -> Self {
        Components {
            cdna: Arc::new(Cdna::new(Arc::new(SystemClock))),
            grids: Arc::new(Grids::new(u64::MAX)),
            followers: Vec::new(),
            feed_retention: super::feed::history::DEFAULT_RETENTION,
        }
    }
}

/// State only the write path touches.
struct WriterState {
    /// Commit sequence of the last applied command.
    sequence: u64,
    /// The id counters of every (domain, entity_type) pair.
    ids: IdCounters,
    /// Request ids of recent idempotent writes.
    requests: RequestLedger,
    /// When the live tokens expire.
    expiry: ExpiryIndex,
}

/// The store's own state read back from storage.
pub struct Resumed {
    /// The live tokens.
    pub tables: TokenTables,
    /// Commit sequence of the last stored command.
    pub sequence: u64,
    /// The id counters.
    pub ids: IdCounters,
    /// Request ids of recent idempotent writes.
    pub requests: RequestLedger,
}

/// The token store: reads go straight to the tables, writes through `apply`.
pub struct Store {
    tables: ArcSwap<TokenTables>,
    writer: Mutex<WriterState>,
    components: Components,
    /// Where committed commands are made durable; `None` for memory storage.
    journal: Option<Arc<Journal>>,
    /// Whether reads wait for the journal: yes when it is the log that acknowledges writes,
    /// no when it only checkpoints a replica of a log that is durable elsewhere.
    reads_wait_for_journal: bool,
    /// Sequence of the newest command readers may see (set before it changes anything).
    visible: AtomicU64,
    /// Sequence of the last applied command, for those who wait for one.
    applied: watch::Sender<u64>,
    /// The earliest expiry second of a live token (0 = none), for the expiry timer, which
    /// must not wait for the writer lock.
    next_expiry: AtomicU32,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(Components::default())
    }
}

/// Seconds since the Unix epoch, as tokens store them.
pub fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

impl Store {
    /// An empty store in memory.
    pub fn new(components: Components) -> Store {
        let fresh = Resumed {
            tables: TokenTables::default(),
            sequence: 0,
            ids: IdCounters::default(),
            requests: RequestLedger::default(),
        };
        Store::with_state(components, fresh, None)
    }

    /// A store resuming recovered state, recording every later commit in `journal`.
    pub fn recovered(components: Components, state: Resumed, journal: Arc<Journal>) -> Store {
        Store::with_state(components, state, Some(journal))
    }

    /// A store resuming recovered state in memory only (a memory-storage replica that
    /// started from a snapshot of its log).
    pub fn resumed_in_memory(components: Components, state: Resumed) -> Store {
        Store::with_state(components, state, None)
    }

    /// The store as a replica of a log durable elsewhere: its journal only checkpoints, so
    /// reads do not wait for it.
    pub fn checkpoint_only(mut self) -> Store {
        self.reads_wait_for_journal = false;
        self
    }

    fn with_state(components: Components, state: Resumed, journal: Option<Arc<Journal>>) -> Store {
        let Resumed {
            tables,
            sequence,
            ids,
            requests,
        } = state;
        let expiry = ExpiryIndex::of_tables(&tables);
        let next_expiry = AtomicU32::new(expiry.next_due().unwrap_or(0));
        Store {
            tables: ArcSwap::from_pointee(tables),
            writer: Mutex::new(WriterState {
                sequence,
                ids,
                requests,
                expiry,
            }),
            components,
            journal,
            reads_wait_for_journal: true,
            visible: AtomicU64::new(sequence),
            applied: watch::Sender::new(sequence),
            next_expiry,
        }
    }

    /// The journal, when the store is durable.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// The live tables, for reads. A guard taken before a clear keeps showing the old tokens.
    pub fn tables(&self) -> arc_swap::Guard<Arc<TokenTables>> {
        self.tables.load()
    }

    /// The token with `id`.
    pub fn get(&self, id: TokenId) -> Option<Token> {
        self.tables.load().get(id)
    }

    /// Number of tokens matching `filter`.
    pub fn count(&self, filter: &TokenFilter) -> u64 {
        self.tables.load().count(filter)
    }

    /// The earliest second a live token expires at, if any has an expiry.
    pub fn next_expiry(&self) -> Option<u32> {
        let second = self.next_expiry.load(Ordering::Acquire);
        (second != 0).then_some(second)
    }

    /// Commit sequence of the last applied command.
    pub fn sequence(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Follows the sequence of the last applied command.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Resolves once every change a reader could have seen so far is durable, so that an
    /// answer never shows a write that a crash could take back: the read barrier every read
    /// of tokens, grids or CDNA passes before it answers. At once without a journal, or with
    /// `none` durability; an error once the journal failed (memory may then hold writes that
    /// never reached the disk: fail closed).
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let Some(journal) = self
            .journal
            .as_ref()
            .filter(|_| self.reads_wait_for_journal)
        else {
            return Ok(());
        };
        let target = self.visible.load(Ordering::SeqCst);
        journal
            .wait_until(|durable| durable >= target || self.visible.load(Ordering::SeqCst) < target)
            .await;
        match journal.failure() {
            Some(failure) => Err(StoreError::Unavailable(failure.to_string())),
            None => Ok(()),
        }
    }

    /// The applied sequence and a hex SHA-256 of the replicated state at it: tokens, id
    /// counters, user grids, the CDNA state and the number of remembered request ids. Equal on
    /// every replica that applied the same entries.
    pub fn state_digest(&self) -> (u64, String) {
        use sha2::Digest;
        let writer = self.writer.lock();
        let mut hash = sha2::Sha256::new();
        let tables = self.tables.load();
        for half in tables.digest() {
            hash.update(half.to_le_bytes());
        }
        hash.update(tables.len().to_le_bytes());
        for counter in writer.ids.as_slice() {
            hash.update(counter.to_le_bytes());
        }
        self.components
            .grids
            .digest_into(&mut |bytes| hash.update(bytes));
        let cdna = self.components.cdna.state();
        hash.update(postcard::to_allocvec(&cdna.config).expect("encodes"));
        hash.update(postcard::to_allocvec(&cdna.quarantine).expect("encodes"));
        hash.update(postcard::to_allocvec(&cdna.last_quarantine).expect("encodes"));
        hash.update(postcard::to_allocvec(&cdna.history).expect("encodes"));
        hash.update(cdna.next_history_sequence.to_le_bytes());
        hash.update((writer.requests.len() as u64).to_le_bytes());
        let hex: String = hash
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        (writer.sequence, hex)
    }

    /// Resolves once every command up to `sequence` is durable (at once without a journal).
    pub async fn wait_durable(&self, sequence: u64) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal
                .wait_durable(sequence)
                .await
                .map_err(|failure| StoreError::Unavailable(failure.to_string())),
            None => Ok(()),
        }
    }

    /// Starts a replica that has applied nothing from the fresh state of time `at` (when its
    /// log began), so that every replica of the log starts from the same state, and stores
    /// that with `writes` (the log's identity) in one record; `false` (and nothing changes)
    /// once anything was applied.
    pub fn start_fresh_at(
        &self,
        at: crate::model::cdna::WallTime,
        mut writes: Vec<DurableWrite>,
    ) -> bool {
        let writer = self.writer.lock();
        if writer.sequence != 0 {
            return false;
        }
        writes.push(self.components.cdna.restart_fresh(at));
        if let Some(journal) = &self.journal {
            journal.append(Record {
                sequence: writer.sequence,
                writes,
            });
        }
        true
    }

    /// Applies one command at the next sequence (an entry stamped now, without request id).
    pub fn apply(&self, command: Command) -> Result<Applied, StoreError> {
        self.apply_entry(LogEntry::new(command))
    }

    /// Applies one log entry at the next sequence: all of it or, on error, nothing (a failed
    /// command takes no sequence). An entry that repeats the request id of an earlier
    /// successful one of the same method (within the window) is answered with that one's
    /// sequence and outcome and changes nothing. What the local log does.
    pub fn apply_entry(&self, entry: LogEntry) -> Result<Applied, StoreError> {
        let mut writer = self.writer.lock();
        if let Some(failure) = self.journal.as_ref().and_then(|j| j.failure()) {
            return Err(StoreError::Unavailable(failure.to_string()));
        }
        let next = writer.sequence + 1;
        let mut writes = Vec::new();
        let result = self.apply_locked(&mut writer, entry, next, &mut writes, false);
        if writer.sequence == next {
            self.publish_applied(next, writes);
        }
        result
    }

    /// Applies the consecutive entries the log holds from sequence `first` on, which must
    /// follow the last applied one (what a replica following a shared log does), under one
    /// writer lock and as one journal record: their changes, then `checkpoint` (the log
    /// position), in one transaction. Unlike `apply_entry`, a refused command takes its
    /// sequence too (the log holds it): its outcome is the refusal, and the state moves on
    /// unchanged. The outcomes come back in entry order; every commit still reaches the
    /// followers (the change feed) at its own sequence. `Err` is a fault that must stop the
    /// replica: a gap, or storage that failed.
    pub fn apply_run_at(
        &self,
        first: u64,
        entries: Vec<LogEntry>,
        checkpoint: Vec<DurableWrite>,
    ) -> Result<Vec<Result<Applied, StoreError>>, String> {
        let mut writer = self.writer.lock();
        if let Some(failure) = self.journal.as_ref().and_then(|j| j.failure()) {
            return Err(failure.to_string());
        }
        if first != writer.sequence + 1 {
            return Err(format!(
                "the log delivered sequence {first} after {}: a replica never skips",
                writer.sequence
            ));
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut writes = Vec::new();
        let outcomes = (first..)
            .zip(entries)
            .map(|(sequence, entry)| {
                self.apply_locked(&mut writer, entry, sequence, &mut writes, true)
            })
            .collect();
        writes.extend(checkpoint);
        self.publish_applied(writer.sequence, writes);
        Ok(outcomes)
    }

    /// Hands the writes of everything applied up to `sequence` to the journal as one record
    /// and tells readers and waiters that `sequence` is applied.
    fn publish_applied(&self, sequence: u64, writes: Vec<DurableWrite>) {
        if let Some(journal) = &self.journal {
            journal.append(Record { sequence, writes });
        }
        self.visible.store(sequence, Ordering::SeqCst);
        self.applied.send_replace(sequence);
    }

    /// Applies `entry` at `sequence` under the writer lock, adding what it changed to
    /// `writes`; the caller publishes (`publish_applied`) once `writer.sequence` moved. With
    /// `always_advance`, a refused or repeated entry still takes its sequence.
    fn apply_locked(
        &self,
        writer: &mut WriterState,
        entry: LogEntry,
        sequence: u64,
        writes: &mut Vec<DurableWrite>,
        always_advance: bool,
    ) -> Result<Applied, StoreError> {
        let LogEntry {
            at_ms,
            request_id,
            command,
        } = entry;
        let repeated = match &request_id {
            Some(id) => writer
                .requests
                .repeated(id, command.method(), at_ms)
                .map(|first| first.map(|f| (f.sequence, f.outcome.clone()))),
            None => Ok(None),
        };
        let result = match repeated {
            Err(error) => Err(error),
            Ok(Some((first, outcome))) => Ok((
                Applied {
                    sequence: first,
                    outcome,
                },
                None,
            )),
            Ok(None) => {
                let tables = self.tables.load_full();
                // Readers may see this command's changes from here on; the read barrier
                // waits for this sequence (or for the rollback below).
                self.visible.store(sequence, Ordering::SeqCst);
                match self.execute(&command, &tables, writer) {
                    Ok((outcome, effects)) => Ok((
                        Applied { sequence, outcome },
                        Some(Committed { sequence, effects }),
                    )),
                    Err(error) => {
                        self.visible.store(writer.sequence, Ordering::SeqCst);
                        Err(error)
                    }
                }
            }
        };
        let committed = match &result {
            Ok((_, Some(committed))) => Some(committed),
            _ if !always_advance => {
                if let Some(journal) = &self.journal {
                    journal.nudge();
                }
                return result.map(|(applied, _)| applied);
            }
            _ => None,
        };
        writer.sequence = sequence;
        if let Some(committed) = committed {
            writer.expiry.follow(&committed.effects);
            let next = writer.expiry.next_due().unwrap_or(0);
            self.next_expiry.store(next, Ordering::Release);
            self.follow(committed);
            if self.journal.is_some() {
                writes.extend(self.durable_writes(committed));
            }
            if let (Some(id), Ok((applied, _))) = (&request_id, &result) {
                let answered = AnsweredRequest {
                    method: command.method().to_string(),
                    sequence,
                    at_ms,
                    outcome: applied.outcome.clone(),
                };
                writer.requests.record(id, answered, writes);
            }
        }
        writer.requests.expire(at_ms, writes);
        result.map(|(applied, _)| applied)
    }

    /// Checks and applies `command`: its outcome and its effects for the followers. Nothing
    /// is written when it fails.
    fn execute(
        &self,
        command: &Command,
        tables: &TokenTables,
        writer: &mut WriterState,
    ) -> Result<(Outcome, Vec<Effect>), StoreError> {
        let cdna = &self.components.cdna;
        Ok(match command {
            Command::CreateToken { draft, at } => {
                cdna.check_weights([(TokenAt::Single, draft.data.weight())])?;
                let single = std::slice::from_ref(draft);
                let tokens = plan_creates(single, |_| TokenAt::Single, *at, tables, writer)?;
                tables.insert_new(&tokens);
                (Outcome::Created(tokens[0]), created(&tokens))
            }
            Command::BatchCreate { drafts, at } => {
                cdna.check_weights(
                    drafts
                        .iter()
                        .enumerate()
                        .map(|(i, d)| (TokenAt::Batch(i), d.data.weight())),
                )?;
                let tokens = plan_creates(drafts, TokenAt::Batch, *at, tables, writer)?;
                tables.insert_new(&tokens);
                let effects = created(&tokens);
                (Outcome::Batch(tokens), effects)
            }
            Command::ImportTokens { drafts, at } => {
                let plan = plan_import(drafts, *at, tables, &mut writer.ids, |draft| {
                    cdna.screen_weight(draft)
                });
                let tokens = plan.tokens();
                tables.insert_new(&tokens);
                (Outcome::Imported(plan), created(&tokens))
            }
            Command::UpdateToken { id, patch, at } => {
                if patch.writes_weight {
                    cdna.check_weights([(TokenAt::Single, patch.values.weight())])?;
                }
                let before = tables.get(*id).ok_or(StoreError::TokenNotFound(*id))?;
                let after = Token {
                    id: *id,
                    data: patch.apply(&before.data, *at),
                };
                tables.replace(&before, &after);
                (
                    Outcome::Updated(after),
                    vec![Effect::Updated { before, after }],
                )
            }
            Command::DeleteToken { id } => {
                let before = tables.get(*id).ok_or(StoreError::TokenNotFound(*id))?;
                tables.remove(&before);
                (Outcome::Deleted(before), vec![Effect::Deleted(before)])
            }
            Command::ClearTokens => {
                let count = tables.len();
                self.tables.store(Arc::new(TokenTables::default()));
                (Outcome::Cleared(count), vec![Effect::Cleared { count }])
            }
            Command::ExpireTokens { at, limit } => {
                let due = writer.expiry.due(*at, *limit as usize);
                let mut effects = Vec::with_capacity(due.len());
                for id in due {
                    if let Some(token) = tables.get(id) {
                        tables.remove(&token);
                        effects.push(Effect::Expired(token));
                    }
                }
                (Outcome::Expired(effects.len() as u64), effects)
            }
            Command::Grid(command) => {
                let effect = self.components.grids.apply(command, tables)?;
                (Outcome::Grid(effect.clone()), vec![Effect::Grid(effect)])
            }
            Command::Cdna(command) => {
                let change = cdna.apply(command)?;
                let effects = change.effects().map(Effect::Cdna).collect();
                (Outcome::Cdna(change), effects)
            }
        })
    }

    /// Lets every component follow a commit, in order.
    fn follow(&self, committed: &Committed) {
        self.components.cdna.count_churn(committed);
        self.components.grids.follow(committed);
        for follower in &self.components.followers {
            follower.follow(committed);
        }
    }

    /// The stored values a commit changed: tokens and id counters, then the grids' and the
    /// CDNA config's own.
    fn durable_writes(&self, committed: &Committed) -> Vec<DurableWrite> {
        let mut writes = Vec::new();
        let mut created = Vec::new();
        for effect in &committed.effects {
            match effect {
                Effect::Created(token) => {
                    created.push(token.id);
                    writes.push(DurableWrite::PutToken(*token));
                }
                Effect::Updated { after, .. } => writes.push(DurableWrite::PutToken(*after)),
                Effect::Deleted(token) | Effect::Expired(token) => {
                    writes.push(DurableWrite::DeleteToken(token.id))
                }
                Effect::Cleared { .. } => writes.push(DurableWrite::ClearTokens),
                Effect::Grid(_) | Effect::Cdna(_) => {}
            }
        }
        writes.extend(
            IdCounters::raised_by(created)
                .into_iter()
                .map(|(pair, local_id)| DurableWrite::RaiseCounter { pair, local_id }),
        );
        self.components.grids.durable_writes(committed, &mut writes);
        self.components.cdna.durable_writes(committed, &mut writes);
        let changes: Vec<_> = changes_of(committed).map(|record| record.change).collect();
        if !changes.is_empty() {
            writes.push(DurableWrite::PutEvents {
                sequence: committed.sequence,
                changes,
                retain: self.components.feed_retention,
            });
        }
        writes
    }
}

/// The effects of creating `tokens`.
fn created(tokens: &[Token]) -> Vec<Effect> {
    tokens.iter().copied().map(Effect::Created).collect()
}

/// Assigns ids to new tokens, or explains why the whole set cannot be created. Explicit ids
/// are checked and raise their pair's counter before any id is allocated, so that every
/// ALREADY_EXISTS is found before a RESOURCE_EXHAUSTED. Updates the counters only on success.
fn plan_creates(
    drafts: &[TokenDraft],
    token_at: impl Fn(usize) -> TokenAt,
    at: u32,
    tables: &TokenTables,
    writer: &mut WriterState,
) -> Result<Vec<Token>, StoreError> {
    let mut ids = writer.ids.clone();
    let mut explicit = HashSet::new();
    for (index, draft) in drafts.iter().enumerate() {
        if let IdRequest::Explicit(id) = draft.id {
            let live = tables.contains(id);
            if live || !explicit.insert(id) {
                return Err(StoreError::TokenExists {
                    at: token_at(index),
                    id,
                    earlier_in_request: !live,
                });
            }
            ids.reserve(id);
        }
    }
    let mut tokens = Vec::with_capacity(drafts.len());
    for (index, draft) in drafts.iter().enumerate() {
        let id = match draft.id {
            IdRequest::Explicit(id) => id,
            IdRequest::Allocate(pair) => ids.allocate(pair).map_err(|_| StoreError::IdsUsedUp {
                at: token_at(index),
                pair,
            })?,
        };
        tokens.push(Token {
            id,
            data: draft.stamped(at),
        });
    }
    writer.ids = ids;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cdna::{ConfigChanges, WallTime};
    use crate::model::TokenInput;
    use crate::store::cdna::CdnaCommand;

    /// Records committed sequences and how many effects each had.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<(u64, usize)>>,
    }

    impl Follower for Recorder {
        fn follow(&self, committed: &Committed) {
            self.seen
                .lock()
                .push((committed.sequence, committed.effects.len()));
        }
    }

    fn recorded_store() -> (Store, Arc<Recorder>) {
        let recorder = Arc::new(Recorder::default());
        let store = Store::new(Components {
            followers: vec![recorder.clone()],
            ..Components::default()
        });
        (store, recorder)
    }

    fn created_id(applied: &Applied) -> u32 {
        match &applied.outcome {
            Outcome::Created(token) => token.id.get(),
            other => panic!("created expected, got {other:?}"),
        }
    }

    fn draft() -> TokenDraft {
        TokenInput {
            weight: 0.5,
            ..TokenInput::default()
        }
        .to_draft()
        .expect("valid")
    }

    #[test]
    fn followers_see_every_commit_in_sequence_order() {
        let (store, recorder) = recorded_store();
        store
            .apply(Command::CreateToken {
                draft: draft(),
                at: 1,
            })
            .expect("create");
        store
            .apply(Command::BatchCreate {
                drafts: vec![draft(); 3],
                at: 2,
            })
            .expect("batch");
        store.apply(Command::ClearTokens).expect("clear");
        assert_eq!(*recorder.seen.lock(), [(1, 1), (2, 3), (3, 1)]);
        assert_eq!(store.sequence(), 3);
    }

    #[test]
    fn a_refused_command_writes_nothing_and_takes_no_sequence() {
        let (store, recorder) = recorded_store();
        let limits = ConfigChanges {
            max_token_weight: Some(0.4),
            ..ConfigChanges::default()
        };
        store
            .apply(Command::Cdna(CdnaCommand::UpdateConfig {
                changes: limits,
                expected_revision: None,
                at: WallTime(1),
            }))
            .expect("limits");
        let result = store.apply(Command::CreateToken {
            draft: draft(),
            at: 1,
        });
        assert!(matches!(
            result,
            Err(StoreError::WeightOutsideLimits(ref outside)) if outside[0].0 == TokenAt::Single
        ));
        assert_eq!(store.sequence(), 1);
        assert!(store.tables().is_empty());
        assert_eq!(
            recorder.seen.lock().len(),
            1,
            "only the config change was followed"
        );
        let missing = TokenId::new(3).expect("id");
        assert_eq!(
            store.apply(Command::DeleteToken { id: missing }),
            Err(StoreError::TokenNotFound(missing))
        );
        assert_eq!(store.sequence(), 1);
    }

    #[test]
    fn a_refused_create_allocates_no_id() {
        let store = Store::default();
        let mut taken = draft();
        taken.id = IdRequest::Explicit(TokenId::new(1).expect("id"));
        store
            .apply(Command::CreateToken {
                draft: taken,
                at: 1,
            })
            .expect("explicit id 1");
        let again = store.apply(Command::CreateToken {
            draft: taken,
            at: 1,
        });
        assert!(matches!(
            again,
            Err(StoreError::TokenExists {
                at: TokenAt::Single,
                earlier_in_request: false,
                ..
            })
        ));
        let created = store
            .apply(Command::CreateToken {
                draft: draft(),
                at: 1,
            })
            .expect("create");
        assert_eq!(created_id(&created), 2, "the failed try allocated no id");
    }

    #[test]
    fn a_failed_batch_does_not_advance_counters() {
        let store = Store::default();
        let mut explicit = draft();
        explicit.id = IdRequest::Explicit(TokenId::new(50).expect("valid"));
        let mut conflict = draft();
        conflict.id = IdRequest::Explicit(TokenId::new(50).expect("valid"));
        let result = store.apply(Command::BatchCreate {
            drafts: vec![draft(), explicit, conflict],
            at: 1,
        });
        assert!(matches!(
            result,
            Err(StoreError::TokenExists {
                at: TokenAt::Batch(2),
                earlier_in_request: true,
                ..
            })
        ));
        let created = store
            .apply(Command::CreateToken {
                draft: draft(),
                at: 1,
            })
            .expect("create");
        assert_eq!(created_id(&created), 1);
    }

    #[test]
    fn a_run_applies_every_entry_at_its_own_sequence_refusals_included() {
        let (store, recorder) = recorded_store();
        let missing = TokenId::new(3).expect("id");
        let entries = vec![
            LogEntry::new(Command::CreateToken {
                draft: draft(),
                at: 1,
            }),
            LogEntry::new(Command::DeleteToken { id: missing }),
            LogEntry::new(Command::CreateToken {
                draft: draft(),
                at: 2,
            }),
        ];
        let outcomes = store
            .apply_run_at(1, entries, Vec::new())
            .expect("in order");
        assert_eq!(outcomes.len(), 3);
        assert_eq!(outcomes[0].as_ref().map(|a| a.sequence), Ok(1));
        assert_eq!(outcomes[1], Err(StoreError::TokenNotFound(missing)));
        assert_eq!(outcomes[2].as_ref().map(|a| a.sequence), Ok(3));
        assert_eq!(store.sequence(), 3, "the refused entry took its sequence");
        assert_eq!(*recorder.seen.lock(), [(1, 1), (3, 1)]);
    }

    #[test]
    fn a_run_that_does_not_follow_the_applied_sequence_is_refused() {
        let store = Store::default();
        let entries = vec![LogEntry::new(Command::ClearTokens)];
        let gap = store.apply_run_at(2, entries, Vec::new());
        assert!(gap.expect_err("a gap").contains("never skips"));
        assert_eq!(store.sequence(), 0);
    }

    #[test]
    fn a_reader_holding_tables_across_a_clear_sees_all_or_nothing() {
        let store = Store::default();
        store
            .apply(Command::BatchCreate {
                drafts: vec![draft(); 10],
                at: 1,
            })
            .expect("batch");
        let before = store.tables();
        store.apply(Command::ClearTokens).expect("clear");
        assert_eq!(before.len(), 10);
        assert_eq!(
            before.page(&TokenFilter::default(), None, 100).tokens.len(),
            10
        );
        assert!(store.tables().is_empty());
    }
}

#[cfg(test)]
mod durability_tests {
    use std::time::Duration;

    use super::*;
    use crate::model::TokenInput;
    use crate::store::durable::{recovery, Durability};

    /// A store on a journal that holds every record until it closes (batch delay of 10 min).
    fn held_store(dir: &std::path::Path) -> (Store, Arc<Journal>) {
        let (db, recovered) = recovery::open(dir).expect("create");
        let journal = Arc::new(Journal::start(
            Arc::new(db),
            recovered.sequence,
            Durability::Batched,
            Duration::from_secs(600),
        ));
        let resumed = Resumed {
            tables: TokenTables::default(),
            sequence: recovered.sequence,
            ids: recovered.ids,
            requests: RequestLedger::default(),
        };
        let store = Store::recovered(Components::default(), resumed, Arc::clone(&journal));
        (store, journal)
    }

    fn create() -> Command {
        Command::CreateToken {
            draft: TokenInput {
                weight: 0.5,
                ..TokenInput::default()
            }
            .to_draft()
            .expect("valid"),
            at: 1,
        }
    }

    #[tokio::test]
    async fn readers_wait_until_what_they_could_see_is_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, journal) = held_store(dir.path());
        store.read_barrier().await.expect("nothing to wait for");
        store.apply(create()).expect("create");
        assert_eq!(store.tables().len(), 1, "visible once applied");
        let pending = tokio::time::timeout(Duration::from_millis(50), store.read_barrier());
        assert!(pending.await.is_err(), "not durable yet: the reader waits");
        journal.close();
        store.read_barrier().await.expect("durable after close");
        store.wait_durable(1).await.expect("durable after close");
    }

    #[tokio::test]
    async fn a_run_is_one_journal_record_at_its_last_sequence() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, journal) = held_store(dir.path());
        let entries = (0..5).map(|_| LogEntry::new(create())).collect();
        let checkpoint = vec![DurableWrite::PutMeta {
            key: crate::store::durable::schema::META_LOG_LAST_HASH,
            value: vec![7; 32],
        }];
        let outcomes = store
            .apply_run_at(1, entries, checkpoint)
            .expect("in order");
        assert!(outcomes.iter().all(Result::is_ok));
        journal.close();
        let stats = journal.stats();
        assert_eq!(stats.records.load(Ordering::Relaxed), 1);
        drop((store, journal));
        let (_, recovered) = recovery::open(dir.path()).expect("reopen");
        assert_eq!(recovered.sequence, 5);
        assert_eq!(recovered.log_last_hash, Some(vec![7; 32]));
    }

    #[tokio::test]
    async fn a_failed_command_does_not_hold_readers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _journal) = held_store(dir.path());
        let missing = TokenId::new(9).expect("id");
        let result = store.apply(Command::DeleteToken { id: missing });
        assert!(matches!(result, Err(StoreError::TokenNotFound(_))));
        // Nothing became visible, so nothing is waited for (bounded, so a regression fails
        // instead of hanging).
        tokio::time::timeout(Duration::from_secs(30), store.read_barrier())
            .await
            .expect("a failed command holds no reader")
            .expect("the journal is fine");
    }
}
