//! The one write path: every change is a `Command` applied under one lock, in commit-sequence
//! order: state checks and hooks' checks first, then the tables, then the hooks that follow
//! commits (index, CDNA churn, change feed), then the journal record of what changed.
//!
//! Acknowledging waits for the journal (`commit`): a reply, and every read answered after a
//! write became visible (see `server`'s durability barrier), follows the fsync, so no client
//! ever sees a write that a crash could take back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::command::{Command, Committed, Effect};
use super::durable::{DurableWrite, Journal, Record};
use super::error::StoreError;
use super::import::plan_import;
use super::tokens::TokenTables;
use crate::model::token::{IdRequest, MAX_LOCAL_ID};
use crate::model::{FieldViolation, Token, TokenDraft, TokenFilter, TokenId};

/// Number of (domain, entity_type) allocation pairs.
const PAIRS: usize = 256;

/// A component that plugs into the write path (the spatial index, grids, CDNA, the change
/// feed). Every method runs under the write lock, so a component sees exactly the state the
/// command applies to, and `check` → `execute` → `applied` cannot interleave with another write.
pub trait WriteHook: Send + Sync {
    /// Rejects a command before anything is written. Every state-dependent rule of a command
    /// the component owns belongs here, so that a checked command always applies cleanly
    /// (also on replay from a log).
    fn check(&self, _command: &Command, _tables: &TokenTables) -> Result<(), StoreError> {
        Ok(())
    }

    /// Applies a command this component owns (a grid or CDNA change) after every `check`
    /// passed, returning its effects; `None` for a command it does not own.
    fn execute(&self, _command: &Command, _tables: &TokenTables) -> Option<Vec<Effect>> {
        None
    }

    /// Follows a committed command, in sequence order.
    fn applied(&self, _committed: &Committed) {}

    /// Adds what a committed command changed in this component's stored state (after
    /// `applied`). Token values and id counters are the store's own; grids and CDNA add theirs.
    fn durable_writes(&self, _committed: &Committed, _writes: &mut Vec<DurableWrite>) {}

    /// Tidies internal structures after a bulk change (e.g. merges the index's trees after a
    /// streamed import). Runs outside the write lock; the state it represents is unchanged.
    fn compact(&self) {}

    /// Why this component would refuse to create `draft` as part of an import, which skips
    /// such a token instead of failing (the path is within the token, e.g. `weight`).
    fn screen_import(&self, _draft: &TokenDraft) -> Option<FieldViolation> {
        None
    }
}

/// State only the write path touches.
struct WriterState {
    /// Commit sequence of the last applied command.
    sequence: u64,
    /// Highest local id ever used per (domain, entity_type) pair, explicit ids included.
    highest_local: [u32; PAIRS],
}

/// The token store: reads go straight to the tables, writes through `apply`.
pub struct Store {
    tables: ArcSwap<TokenTables>,
    writer: Mutex<WriterState>,
    hooks: Vec<Arc<dyn WriteHook>>,
    /// Where committed commands are made durable; `None` for memory storage.
    journal: Option<Arc<Journal>>,
    /// Sequence of the newest command readers may see (set before it changes anything).
    visible: AtomicU64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(Vec::new())
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
    /// An empty store whose commits are followed by `hooks`, in order.
    pub fn new(hooks: Vec<Arc<dyn WriteHook>>) -> Store {
        Store {
            tables: ArcSwap::from_pointee(TokenTables::default()),
            writer: Mutex::new(WriterState {
                sequence: 0,
                highest_local: [0; PAIRS],
            }),
            hooks,
            journal: None,
            visible: AtomicU64::new(0),
        }
    }

    /// A store resuming recovered `tables` at commit `sequence` with the id counters
    /// `highest_local` (one per pair), recording every later commit in `journal`.
    pub fn recovered(
        hooks: Vec<Arc<dyn WriteHook>>,
        tables: TokenTables,
        sequence: u64,
        highest_local: &[u32],
        journal: Arc<Journal>,
    ) -> Store {
        let mut counters = [0; PAIRS];
        for (slot, value) in counters.iter_mut().zip(highest_local) {
            *slot = *value;
        }
        Store {
            tables: ArcSwap::from_pointee(tables),
            writer: Mutex::new(WriterState {
                sequence,
                highest_local: counters,
            }),
            hooks,
            journal: Some(journal),
            visible: AtomicU64::new(sequence),
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

    /// Commit sequence of the last applied command.
    pub fn sequence(&self) -> u64 {
        self.writer.lock().sequence
    }

    /// Applies one command and waits until it is durable: what every write RPC acknowledges.
    pub async fn commit(&self, command: Command) -> Result<Committed, StoreError> {
        let committed = self.apply(command)?;
        self.wait_durable(committed.sequence).await?;
        Ok(committed)
    }

    /// Resolves once every change a reader could have seen so far is durable, so that an
    /// answer never shows a write that a crash could take back (at once without a journal,
    /// or with `none` durability; also when the journal failed, which Ready reports).
    pub async fn wait_visible_durable(&self) {
        if let Some(journal) = &self.journal {
            let target = self.visible.load(Ordering::SeqCst);
            journal
                .wait_until(|durable| {
                    durable >= target || self.visible.load(Ordering::SeqCst) < target
                })
                .await;
        }
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

    /// Checks and applies `command` to the tables (or its owning component); nothing is
    /// written when it fails.
    fn execute(
        &self,
        command: &Command,
        tables: &TokenTables,
        writer: &mut WriterState,
    ) -> Result<Vec<Effect>, StoreError> {
        Ok(match command {
            Command::CreateToken { draft, at } => {
                let tokens =
                    plan_creates(command, std::slice::from_ref(draft), *at, tables, writer)?;
                tables.insert_new(&tokens);
                tokens.into_iter().map(Effect::Created).collect()
            }
            Command::BatchCreate { drafts, at } => {
                let tokens = plan_creates(command, drafts, *at, tables, writer)?;
                tables.insert_new(&tokens);
                tokens.into_iter().map(Effect::Created).collect()
            }
            Command::ImportTokens { drafts, at } => {
                let screen = |draft: &TokenDraft| {
                    self.hooks.iter().find_map(|hook| hook.screen_import(draft))
                };
                let plan = plan_import(drafts, *at, tables, &mut writer.highest_local, screen);
                tables.insert_new(&plan.tokens());
                plan.into_effects()
            }
            Command::UpdateToken { id, patch, at } => {
                let before = tables.get(*id).ok_or_else(|| not_found(*id))?;
                let after = Token {
                    id: *id,
                    data: patch.apply(&before.data, *at),
                };
                tables.replace(&before, &after);
                vec![Effect::Updated { before, after }]
            }
            Command::DeleteToken { id } => {
                let before = tables.get(*id).ok_or_else(|| not_found(*id))?;
                tables.remove(&before);
                vec![Effect::Deleted(before)]
            }
            Command::ClearTokens => {
                let count = tables.len();
                self.tables.store(Arc::new(TokenTables::default()));
                vec![Effect::Cleared { count }]
            }
            Command::Grid(_) | Command::Cdna(_) => self
                .hooks
                .iter()
                .find_map(|hook| hook.execute(command, tables))
                .ok_or_else(|| {
                    StoreError::Unavailable(format!("no component applies {command:?}"))
                })?,
        })
    }

    /// Lets every component tidy up after a bulk change (blocking; see `WriteHook::compact`).
    pub fn compact(&self) {
        for hook in &self.hooks {
            hook.compact();
        }
        // A compaction frees the trees it replaced: hand that memory back to the system.
        super::trim::give_back_freed_memory();
    }

    /// Applies one command: all of it or, on error, nothing.
    pub fn apply(&self, command: Command) -> Result<Committed, StoreError> {
        let mut writer = self.writer.lock();
        if let Some(failure) = self.journal.as_ref().and_then(|j| j.failure()) {
            return Err(StoreError::Unavailable(failure.to_string()));
        }
        let tables = self.tables.load_full();
        for hook in &self.hooks {
            hook.check(&command, &tables)?;
        }
        // Readers may see this command's changes from here on; the durability barrier waits
        // for this sequence (or for the rollback below).
        self.visible.store(writer.sequence + 1, Ordering::SeqCst);
        let effects = match self.execute(&command, &tables, &mut writer) {
            Ok(effects) => effects,
            Err(error) => {
                self.visible.store(writer.sequence, Ordering::SeqCst);
                if let Some(journal) = &self.journal {
                    journal.nudge();
                }
                return Err(error);
            }
        };
        writer.sequence += 1;
        let committed = Committed {
            sequence: writer.sequence,
            effects,
        };
        for hook in &self.hooks {
            hook.applied(&committed);
        }
        if let Some(journal) = &self.journal {
            let mut writes = token_writes(&committed);
            for hook in &self.hooks {
                hook.durable_writes(&committed, &mut writes);
            }
            journal.append(Record {
                sequence: committed.sequence,
                writes,
            });
        }
        Ok(committed)
    }
}

/// The stored token values and id counters a committed command changed.
fn token_writes(committed: &Committed) -> Vec<DurableWrite> {
    let mut writes = Vec::new();
    // One counter write per pair, however many tokens a batch or import created.
    let mut counters = std::collections::BTreeMap::new();
    for effect in &committed.effects {
        match effect {
            Effect::Created(token) => {
                let highest = counters.entry(token.id.pair() as u16).or_insert(0);
                *highest = token.id.local_id().max(*highest);
                writes.push(DurableWrite::PutToken(*token));
            }
            Effect::Updated { after, .. } => writes.push(DurableWrite::PutToken(*after)),
            Effect::Deleted(token) => writes.push(DurableWrite::DeleteToken(token.id)),
            Effect::Cleared { .. } => writes.push(DurableWrite::ClearTokens),
            Effect::Grid(_) | Effect::Cdna(_) | Effect::ImportSkipped { .. } => {}
        }
    }
    writes.extend(
        counters
            .into_iter()
            .map(|(pair, local_id)| DurableWrite::RaiseCounter { pair, local_id }),
    );
    writes
}

fn not_found(id: TokenId) -> StoreError {
    StoreError::NotFound(format!("token {id} does not exist"))
}

/// Assigns ids to new tokens, or explains why the whole set cannot be created. Explicit ids
/// are checked and raise their pair's counter before any id is allocated, so that every
/// ALREADY_EXISTS is found before a RESOURCE_EXHAUSTED. Updates the counters only on success.
fn plan_creates(
    command: &Command,
    drafts: &[TokenDraft],
    at: u32,
    tables: &TokenTables,
    writer: &mut WriterState,
) -> Result<Vec<Token>, StoreError> {
    let mut highest = writer.highest_local;
    let mut explicit = HashSet::new();
    for (index, draft) in drafts.iter().enumerate() {
        if let IdRequest::Explicit(id) = draft.id {
            if tables.contains(id) || !explicit.insert(id) {
                let within = if tables.contains(id) {
                    ""
                } else {
                    " earlier in this batch"
                };
                return Err(StoreError::AlreadyExists(format!(
                    "{}id: token {id} already exists{within}",
                    command.token_path(index)
                )));
            }
            let pair = &mut highest[id.pair()];
            *pair = (*pair).max(id.local_id());
        }
    }
    let mut tokens = Vec::with_capacity(drafts.len());
    for (index, draft) in drafts.iter().enumerate() {
        let id = match draft.id {
            IdRequest::Explicit(id) => id,
            IdRequest::Allocate { pair } => {
                if highest[pair] >= MAX_LOCAL_ID {
                    return Err(StoreError::ResourceExhausted(format!(
                        "{}id: local ids of domain {} entity_type {} are used up ({MAX_LOCAL_ID} is the highest)",
                        command.token_path(index),
                        pair >> 4,
                        pair & 0xF
                    )));
                }
                highest[pair] += 1;
                TokenId::from_parts((pair >> 4) as u32, (pair & 0xF) as u32, highest[pair])
                    .expect("pair < 256 and local id in 1..=MAX_LOCAL_ID")
            }
        };
        tokens.push(Token {
            id,
            data: draft.stamped(at),
        });
    }
    writer.highest_local = highest;
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::model::TokenInput;

    /// Records committed sequences and vetoes commands while `veto` is set.
    #[derive(Default)]
    struct Recorder {
        veto: AtomicBool,
        seen: Mutex<Vec<(u64, usize)>>,
    }

    impl WriteHook for Recorder {
        fn check(&self, _command: &Command, _tables: &TokenTables) -> Result<(), StoreError> {
            if self.veto.load(Ordering::SeqCst) {
                Err(StoreError::FailedPrecondition("vetoed".into()))
            } else {
                Ok(())
            }
        }

        fn applied(&self, committed: &Committed) {
            self.seen
                .lock()
                .push((committed.sequence, committed.effects.len()));
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
    fn hooks_see_every_commit_in_sequence_order() {
        let recorder = Arc::new(Recorder::default());
        let store = Store::new(vec![recorder.clone()]);
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
    fn a_vetoed_command_writes_nothing_and_takes_no_sequence() {
        let recorder = Arc::new(Recorder::default());
        let store = Store::new(vec![recorder.clone()]);
        recorder.veto.store(true, Ordering::SeqCst);
        let result = store.apply(Command::CreateToken {
            draft: draft(),
            at: 1,
        });
        assert!(matches!(result, Err(StoreError::FailedPrecondition(_))));
        assert_eq!(store.sequence(), 0);
        assert!(store.tables().is_empty());
        recorder.veto.store(false, Ordering::SeqCst);
        let created = store
            .apply(Command::CreateToken {
                draft: draft(),
                at: 1,
            })
            .expect("create");
        assert_eq!(created.sequence, 1);
        assert!(
            matches!(&created.effects[0], Effect::Created(t) if t.id.get() == 1),
            "the failed try allocated no id"
        );
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
        assert!(matches!(result, Err(StoreError::AlreadyExists(_))));
        let created = store
            .apply(Command::CreateToken {
                draft: draft(),
                at: 1,
            })
            .expect("create");
        assert!(matches!(&created.effects[0], Effect::Created(t) if t.id.get() == 1));
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
        let store = Store::recovered(
            Vec::new(),
            TokenTables::default(),
            recovered.sequence,
            &recovered.highest_local,
            Arc::clone(&journal),
        );
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
        store.wait_visible_durable().await;
        store.apply(create()).expect("create");
        assert_eq!(store.tables().len(), 1, "visible once applied");
        let pending = tokio::time::timeout(Duration::from_millis(50), store.wait_visible_durable());
        assert!(pending.await.is_err(), "not durable yet: the reader waits");
        journal.close();
        store.wait_visible_durable().await;
        store.wait_durable(1).await.expect("durable after close");
    }

    #[tokio::test]
    async fn a_failed_command_does_not_hold_readers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, _journal) = held_store(dir.path());
        let missing = TokenId::new(9).expect("id");
        let result = store.apply(Command::DeleteToken { id: missing });
        assert!(matches!(result, Err(StoreError::NotFound(_))));
        // Nothing became visible, so nothing is waited for (bounded, so a regression fails
        // instead of hanging).
        tokio::time::timeout(Duration::from_secs(30), store.wait_visible_durable())
            .await
            .expect("a failed command holds no reader");
    }
}
