//! The live CDNA config, its history ring and the quarantine, as a write-path component:
//! every change is a `CdnaCommand` applied through `Store::apply`; the component checks
//! state-dependent rules (stale revisions, quarantine rules, the token-weight limits of every
//! token write), executes its own commands and counts token churn during a quarantine. Reads
//! go straight to the component's own lock, never through the write lock. The quarantine timer
//! lives here too: a task that sleeps until the wall-clock deadline and then applies
//! `ExpireQuarantine` through the write path.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::{debug, info};

use super::command::{Committed, Effect};
use super::durable::schema::StoredCdna;
use super::durable::DurableWrite;
use super::error::{QuarantineBlocks, StoreError, TokenAt};
use super::writes::Writes;
use crate::model::cdna::{
    CdnaConfig, ConfigChanges, HistoryAction, HistoryEntry, ProfileId, Quarantine,
    QuarantineStatus, WallTime, HISTORY_LIMIT,
};
use crate::model::{FieldViolation, TokenDraft};

/// Where the CDNA component reads the time. Commands carry their time, so only the API (to
/// stamp a command) and the quarantine timer ask.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> WallTime;
}

/// The production clock: the system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> WallTime {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        WallTime(u64::try_from(millis).unwrap_or(u64::MAX))
    }
}

/// A clock that follows tokio's time: `base` plus the tokio time elapsed since creation, so
/// that with paused time (`start_paused = true`) auto-advance moves it, without real sleeps.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    base: WallTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: WallTime) -> TokioClock {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> WallTime {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        WallTime(self.base.0.saturating_add(elapsed))
    }
}

/// A change of the CDNA state, applied through the write path. Each carries its time so that
/// applying it is deterministic (also on replay from a log).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CdnaCommand {
    /// Change some config fields.
    UpdateConfig {
        /// The validated changes.
        changes: ConfigChanges,
        /// ABORTED unless the config is at this revision.
        expected_revision: Option<u64>,
        /// When.
        at: WallTime,
    },
    /// Set a preset profile and its scales.
    SwitchProfile {
        /// A preset (never `custom`).
        profile: ProfileId,
        /// ABORTED unless the config is at this revision.
        expected_revision: Option<u64>,
        /// When.
        at: WallTime,
    },
    /// Back to the fresh-store config with a new revision.
    Reset {
        /// Leave only the reset entry in the history.
        clear_history: bool,
        /// ABORTED unless the config is at this revision.
        expected_revision: Option<u64>,
        /// When.
        at: WallTime,
    },
    /// Snapshot the config; changes become provisional.
    StartQuarantine {
        /// Effective duration (60..=3600).
        duration_seconds: u32,
        /// When.
        at: WallTime,
    },
    /// End the quarantine, keeping (`apply`) or discarding the changes.
    StopQuarantine {
        /// Keep the changes.
        apply: bool,
        /// When.
        at: WallTime,
    },
    /// Restore the snapshot because the deadline passed (the quarantine timer sends this).
    ExpireQuarantine {
        /// When; must be at or after the deadline.
        at: WallTime,
    },
}

impl CdnaCommand {
    /// The write RPC this command comes from (the quarantine timer's expiry has none).
    pub fn method(&self) -> &'static str {
        match self {
            CdnaCommand::UpdateConfig { .. } => "UpdateConfig",
            CdnaCommand::SwitchProfile { .. } => "SwitchProfile",
            CdnaCommand::Reset { .. } => "ResetConfig",
            CdnaCommand::StartQuarantine { .. } => "StartQuarantine",
            CdnaCommand::StopQuarantine { .. } => "StopQuarantine",
            CdnaCommand::ExpireQuarantine { .. } => "ExpireQuarantine",
        }
    }

    /// When the command was stamped.
    pub fn at(&self) -> WallTime {
        match self {
            CdnaCommand::UpdateConfig { at, .. }
            | CdnaCommand::SwitchProfile { at, .. }
            | CdnaCommand::Reset { at, .. }
            | CdnaCommand::StartQuarantine { at, .. }
            | CdnaCommand::StopQuarantine { at, .. }
            | CdnaCommand::ExpireQuarantine { at } => *at,
        }
    }
}

/// What a CDNA command changed, so that the RPC answers with exactly what its command did.
#[derive(Clone, Debug, PartialEq)]
pub enum CdnaEffect {
    /// The config now reads `config` (update, switch, reset, quarantine restore).
    Config {
        /// The profile before the change.
        old_profile: ProfileId,
        /// The config after it.
        config: CdnaConfig,
    },
    /// The quarantine after a start, stop or expiry.
    Quarantine(QuarantineStatus),
}

/// What a CDNA command changed, for the call that sent it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CdnaChange {
    /// The config after the command, with the profile before it, when the command changed it.
    pub config: Option<(ProfileId, CdnaConfig)>,
    /// The quarantine's status after the command, for the quarantine commands.
    pub quarantine: Option<QuarantineStatus>,
}

impl CdnaChange {
    /// The change as effects for the components that follow commits.
    pub fn effects(&self) -> impl Iterator<Item = CdnaEffect> + '_ {
        let config = self
            .config
            .iter()
            .map(|(old_profile, config)| CdnaEffect::Config {
                old_profile: *old_profile,
                config: config.clone(),
            });
        config.chain(self.quarantine.iter().cloned().map(CdnaEffect::Quarantine))
    }
}

/// The whole CDNA state: plain data, so that persistence can store and restore it as is.
#[derive(Clone, Debug, PartialEq)]
pub struct CdnaState {
    /// The live config.
    pub config: CdnaConfig,
    /// The running quarantine.
    pub quarantine: Option<Quarantine>,
    /// The last quarantine that ended (its figures stay visible in the status).
    pub last_quarantine: Option<Quarantine>,
    /// Newest first, at most `HISTORY_LIMIT`.
    pub history: VecDeque<HistoryEntry>,
    /// Sequence of the next history entry (never reused, also not after a clear).
    pub next_history_sequence: u64,
}

impl CdnaState {
    /// A fresh store's state at `at`.
    pub fn fresh(at: WallTime) -> CdnaState {
        CdnaState {
            config: CdnaConfig::fresh(at),
            quarantine: None,
            last_quarantine: None,
            history: VecDeque::new(),
            next_history_sequence: 1,
        }
    }

    /// The stored form of this state, with the history entries from sequence `new_from` on
    /// as new ones.
    pub fn durable_write(&self, new_from: u64) -> DurableWrite {
        DurableWrite::PutCdna {
            state: Box::new(StoredCdna {
                config: self.config.clone(),
                quarantine: self.quarantine.clone(),
                last_quarantine: self.last_quarantine.clone(),
                next_history_sequence: self.next_history_sequence,
            }),
            new_entries: self
                .history
                .iter()
                .take_while(|entry| entry.sequence >= new_from)
                .cloned()
                .collect(),
            keep_from: self
                .history
                .back()
                .map_or(self.next_history_sequence, |oldest| oldest.sequence),
        }
    }

    fn record(&mut self, action: HistoryAction, at: WallTime, details: String) {
        self.history.push_front(HistoryEntry {
            sequence: self.next_history_sequence,
            action,
            at,
            revision: self.config.revision,
            details,
        });
        self.next_history_sequence += 1;
        self.history.truncate(HISTORY_LIMIT);
    }

    fn check_revision(&self, expected: Option<u64>) -> Result<(), StoreError> {
        match expected {
            Some(expected) if expected != self.config.revision => Err(StoreError::StaleRevision {
                expected,
                current: self.config.revision,
            }),
            _ => Ok(()),
        }
    }

    fn active(&self) -> Result<&Quarantine, StoreError> {
        self.quarantine.as_ref().ok_or(StoreError::NoQuarantine)
    }

    /// Every state-dependent rule of `command`.
    fn check(&self, command: &CdnaCommand) -> Result<(), StoreError> {
        match command {
            CdnaCommand::UpdateConfig {
                changes,
                expected_revision,
                ..
            } => {
                self.check_revision(*expected_revision)?;
                self.config
                    .check_changes(changes)
                    .map_err(StoreError::ConfigRules)
            }
            CdnaCommand::SwitchProfile {
                profile,
                expected_revision,
                ..
            } => {
                if profile.profile().is_none() {
                    return Err(StoreError::NotAPreset(*profile));
                }
                self.check_revision(*expected_revision)
            }
            CdnaCommand::Reset {
                expected_revision,
                at,
                ..
            } => {
                self.check_revision(*expected_revision)?;
                if let Some(q) = &self.quarantine {
                    return Err(StoreError::QuarantineRunning {
                        blocks: QuarantineBlocks::Reset,
                        seconds_left: q.status(true, *at).time_left_seconds,
                    });
                }
                Ok(())
            }
            CdnaCommand::StartQuarantine { at, .. } => match &self.quarantine {
                Some(q) => Err(StoreError::QuarantineRunning {
                    blocks: QuarantineBlocks::Start,
                    seconds_left: q.status(true, *at).time_left_seconds,
                }),
                None => Ok(()),
            },
            CdnaCommand::StopQuarantine { .. } => self.active().map(|_| ()),
            CdnaCommand::ExpireQuarantine { at } => {
                if self.active()?.expired_at(*at) {
                    Ok(())
                } else {
                    Err(StoreError::QuarantineNotDue)
                }
            }
        }
    }

    /// Applies a checked command; returns what it changed.
    fn execute(&mut self, command: &CdnaCommand) -> CdnaChange {
        // Commands are stamped before they wait for the write lock, so two racing ones may
        // arrive out of time order: never let `updated_at` or the history run backwards.
        let latest = self
            .history
            .front()
            .map_or(self.config.updated_at, |e| e.at);
        let at = command.at().max(latest).max(self.config.updated_at);
        let old_profile = self.config.profile;
        let config_change = |state: &CdnaState| Some((old_profile, state.config.clone()));
        match command {
            CdnaCommand::UpdateConfig { changes, .. } => {
                self.config = self.config.changed(changes, at);
                let details = self.provisional(format!("updated {}", changes.describe()));
                self.record(HistoryAction::ConfigUpdate, at, details);
                CdnaChange {
                    config: config_change(self),
                    quarantine: None,
                }
            }
            CdnaCommand::SwitchProfile { profile, .. } => {
                if let Some(preset) = profile.profile() {
                    self.config = self.config.switched(preset, at);
                }
                let details = self.provisional(format!("{old_profile} → {profile}"));
                self.record(HistoryAction::ProfileSwitch, at, details);
                CdnaChange {
                    config: config_change(self),
                    quarantine: None,
                }
            }
            CdnaCommand::Reset { clear_history, .. } => {
                self.config = self.config.reset(at);
                if *clear_history {
                    self.history.clear();
                }
                let details = if *clear_history {
                    "reset to the fresh-store config; history cleared"
                } else {
                    "reset to the fresh-store config"
                };
                self.record(HistoryAction::Reset, at, details.to_string());
                CdnaChange {
                    config: config_change(self),
                    quarantine: None,
                }
            }
            CdnaCommand::StartQuarantine {
                duration_seconds, ..
            } => {
                let quarantine = Quarantine::start(self.config.clone(), at, *duration_seconds);
                let status = quarantine.status(true, at);
                self.quarantine = Some(quarantine);
                self.record(
                    HistoryAction::QuarantineStart,
                    at,
                    format!(
                        "started for {duration_seconds} s; snapshot of revision {}",
                        self.config.revision
                    ),
                );
                CdnaChange {
                    config: None,
                    quarantine: Some(status),
                }
            }
            CdnaCommand::StopQuarantine { apply, .. } => {
                let Some(quarantine) = self.quarantine.take() else {
                    return CdnaChange::default();
                };
                let mut change = CdnaChange::default();
                let action = if *apply {
                    HistoryAction::QuarantineStopApplied
                } else {
                    self.config = self.config.restored(&quarantine.snapshot, at);
                    change.config = config_change(self);
                    HistoryAction::QuarantineStopDiscarded
                };
                let details = if *apply {
                    format!("stopped; kept {}", changes(quarantine.config_changes))
                } else {
                    format!(
                        "stopped; discarded {}, restored the config of revision {}",
                        changes(quarantine.config_changes),
                        quarantine.snapshot.revision
                    )
                };
                self.record(action, at, details);
                change.quarantine = Some(quarantine.status(false, at));
                self.last_quarantine = Some(quarantine);
                change
            }
            CdnaCommand::ExpireQuarantine { .. } => {
                let Some(quarantine) = self.quarantine.take() else {
                    return CdnaChange::default();
                };
                self.config = self.config.restored(&quarantine.snapshot, at);
                let change = CdnaChange {
                    config: config_change(self),
                    quarantine: Some(quarantine.status(false, at)),
                };
                self.record(
                    HistoryAction::QuarantineExpired,
                    at,
                    format!(
                        "expired after {} s; discarded {}, restored the config of revision {}",
                        quarantine.duration_seconds,
                        changes(quarantine.config_changes),
                        quarantine.snapshot.revision
                    ),
                );
                self.last_quarantine = Some(quarantine);
                change
            }
        }
    }

    /// Counts a config change against a running quarantine and says so in `details`.
    fn provisional(&mut self, details: String) -> String {
        match &mut self.quarantine {
            Some(q) => {
                q.config_changes += 1;
                format!("{details} (provisional: quarantine active)")
            }
            None => details,
        }
    }

    /// The quarantine's status at `now`: the running one, or the figures of the last one.
    fn quarantine_status(&self, now: WallTime) -> QuarantineStatus {
        match (&self.quarantine, &self.last_quarantine) {
            (Some(q), _) => q.status(true, now),
            (None, Some(last)) => last.status(false, now),
            (None, None) => QuarantineStatus::default(),
        }
    }
}

/// "1 config change", "2 config changes".
fn changes(count: u64) -> String {
    match count {
        1 => "1 config change".to_string(),
        n => format!("{n} config changes"),
    }
}

/// One page of history, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryPage {
    /// The entries.
    pub entries: Vec<HistoryEntry>,
    /// Whether older entries follow.
    pub more: bool,
    /// Entries held when the page was read.
    pub total: u64,
}

/// The CDNA component: applies CDNA commands and bounds token weights for the write path,
/// answers reads directly.
pub struct Cdna {
    state: RwLock<CdnaState>,
    /// `next_history_sequence` when the journal last heard of the state: entries from here on
    /// are new to it. Only the write path touches it.
    journaled_history: parking_lot::Mutex<u64>,
    clock: Arc<dyn Clock>,
    /// The running quarantine's deadline, for the timer; updated under the write lock.
    deadline: watch::Sender<Option<WallTime>>,
}

impl Cdna {
    /// A fresh store's CDNA state, reading the time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Cdna {
        let state = CdnaState::fresh(clock.now());
        Cdna::with_state(clock, state)
    }

    /// A component resuming `state` (e.g. recovered from disk); a quarantine whose deadline
    /// passed while the server was down expires as soon as the timer runs.
    pub fn with_state(clock: Arc<dyn Clock>, state: CdnaState) -> Cdna {
        let deadline = state.quarantine.as_ref().map(|q| q.deadline);
        Cdna {
            journaled_history: parking_lot::Mutex::new(state.next_history_sequence),
            state: RwLock::new(state),
            clock,
            deadline: watch::Sender::new(deadline),
        }
    }

    /// Starts over from the fresh state of time `at` (a new replica takes the time its log
    /// began, so that every replica starts from the same state); what to store.
    pub fn restart_fresh(&self, at: WallTime) -> DurableWrite {
        let fresh = CdnaState::fresh(at);
        let write = fresh.durable_write(0);
        *self.journaled_history.lock() = fresh.next_history_sequence;
        *self.state.write() = fresh;
        write
    }

    /// The current time on this component's clock, for stamping commands.
    pub fn now(&self) -> WallTime {
        self.clock.now()
    }

    /// A copy of the whole state (for persistence and tests).
    pub fn state(&self) -> CdnaState {
        self.state.read().clone()
    }

    /// The live config.
    pub fn config(&self) -> CdnaConfig {
        self.state.read().config.clone()
    }

    /// The live profile.
    pub fn profile(&self) -> ProfileId {
        self.state.read().config.profile
    }

    /// The quarantine status now.
    pub fn quarantine_status(&self) -> QuarantineStatus {
        let now = self.now();
        self.state.read().quarantine_status(now)
    }

    /// Up to `size` history entries older than sequence `before` (all when `None`).
    pub fn history_page(&self, before: Option<u64>, size: usize) -> HistoryPage {
        let state = self.state.read();
        // Newest first, so sequences decrease along the ring.
        let start = before.map_or(0, |s| state.history.partition_point(|e| e.sequence >= s));
        let entries: Vec<_> = state
            .history
            .iter()
            .skip(start)
            .take(size)
            .cloned()
            .collect();
        HistoryPage {
            more: start + entries.len() < state.history.len(),
            total: state.history.len() as u64,
            entries,
        }
    }

    /// Follows the running quarantine's deadline (`None` when there is none).
    pub fn deadlines(&self) -> watch::Receiver<Option<WallTime>> {
        self.deadline.subscribe()
    }

    /// Refuses token weights outside the live token-weight limits: every such token of a
    /// write, with the rule it broke. Token writes call this before they change anything.
    pub fn check_weights(
        &self,
        weights: impl IntoIterator<Item = (TokenAt, f32)>,
    ) -> Result<(), StoreError> {
        let state = self.state.read();
        let outside: Vec<(TokenAt, String)> = weights
            .into_iter()
            .filter_map(|(at, weight)| {
                weight_outside_limits(&state.config, weight).map(|rule| (at, rule))
            })
            .collect();
        if outside.is_empty() {
            Ok(())
        } else {
            Err(StoreError::WeightOutsideLimits(outside))
        }
    }

    /// Why an import must skip `draft` (its weight is outside the limits), if it must; the
    /// path is within the token.
    pub fn screen_weight(&self, draft: &TokenDraft) -> Option<FieldViolation> {
        weight_outside_limits(&self.state.read().config, draft.data.weight())
            .map(|rule| FieldViolation::new("weight", rule))
    }

    /// Checks and applies a CDNA command (under the write lock).
    pub fn apply(&self, command: &CdnaCommand) -> Result<CdnaChange, StoreError> {
        let mut state = self.state.write();
        state.check(command)?;
        let change = state.execute(command);
        // Still under the write lock, so the timer sees deadlines in commit order.
        self.deadline
            .send_replace(state.quarantine.as_ref().map(|q| q.deadline));
        Ok(change)
    }

    /// Counts the token writes of a commit as churn of a running quarantine.
    pub fn count_churn(&self, committed: &Committed) {
        let churn = token_writes(&committed.effects);
        // Under the write lock nobody else changes the state between this read and write.
        if churn > 0 && self.state.read().quarantine.is_some() {
            if let Some(q) = &mut self.state.write().quarantine {
                q.token_churn += churn;
            }
        }
    }

    /// Stores the state whenever a commit changed it: a CDNA command, or token writes
    /// counted as churn of a running quarantine.
    pub fn durable_writes(&self, committed: &Committed, writes: &mut Vec<DurableWrite>) {
        let state = self.state.read();
        let changed = committed
            .effects
            .iter()
            .any(|effect| matches!(effect, Effect::Cdna(_)))
            || (state.quarantine.is_some() && token_writes(&committed.effects) > 0);
        if !changed {
            return;
        }
        let mut journaled = self.journaled_history.lock();
        writes.push(state.durable_write(*journaled));
        *journaled = state.next_history_sequence;
    }
}

/// Why `config`'s token-weight limits refuse `weight`, if they do.
fn weight_outside_limits(config: &CdnaConfig, weight: f32) -> Option<String> {
    (!config.allows_weight(weight)).then(|| {
        format!(
            "{weight} is outside the CDNA token-weight limits [{}, {}]",
            config.min_token_weight, config.max_token_weight
        )
    })
}

/// Token writes in `effects`. A clear counts every token it removed, as deleting them one by
/// one would: churn measures how many tokens changed, not how many calls were made.
fn token_writes(effects: &[Effect]) -> u64 {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Created(_)
            | Effect::Updated { .. }
            | Effect::Deleted(_)
            | Effect::Expired(_) => 1,
            Effect::Cleared { count } => *count,
            Effect::Grid(_) | Effect::Cdna(_) => 0,
        })
        .sum()
}

/// Expires quarantines: sleeps until the running one's wall-clock deadline and then applies
/// `ExpireQuarantine` through the write path. Re-arms whenever a quarantine starts or stops;
/// returns when `shutdown` resolves.
pub async fn run_quarantine_timer(
    writes: Writes,
    cdna: Arc<Cdna>,
    shutdown: impl Future<Output = ()>,
) {
    let mut deadlines = cdna.deadlines();
    tokio::pin!(shutdown);
    loop {
        let deadline = *deadlines.borrow_and_update();
        if let Some(deadline) = deadline {
            let now = cdna.now();
            if deadline <= now {
                match writes.expire_quarantine(deadline, now).await {
                    Ok(_) => {
                        info!("quarantine expired; the snapshot was restored");
                        continue;
                    }
                    // A stop won the race; wait for the next start instead of retrying.
                    Err(error) => debug!(%error, "quarantine expiry not applied"),
                }
            } else {
                // The deadline is wall-clock time; tokio sleeps on its own monotonic clock,
                // so convert the distance, and look again on waking (the wall clock may jump).
                let wake =
                    tokio::time::Instant::now() + Duration::from_millis(now.millis_until(deadline));
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep_until(wake) => continue,
                    changed = deadlines.changed() => if changed.is_err() { return } else { continue },
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            changed = deadlines.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cdna::CdnaFlag;
    use crate::model::{Token, TokenDraft, TokenInput, TokenPatch, UpdatePath};
    use crate::store::command::{Command, Outcome};
    use crate::store::grids::Grids;
    use crate::store::log::LocalLog;
    use crate::store::write_path::{Components, Store};

    const T0: WallTime = WallTime(1_700_000_000_000);

    fn store_over(cdna: &Arc<Cdna>) -> Arc<Store> {
        Arc::new(Store::new(Components {
            cdna: Arc::clone(cdna),
            grids: Arc::new(Grids::new(u64::MAX)),
            ..Components::default()
        }))
    }

    fn setup() -> (Arc<Store>, Arc<Cdna>) {
        let cdna = Arc::new(Cdna::new(Arc::new(TokioClock::starting_at(T0))));
        (store_over(&cdna), cdna)
    }

    /// Writes through the store's local log, as the server does.
    fn writes(store: &Arc<Store>) -> Writes {
        Writes::new(Arc::new(LocalLog::new(Arc::clone(store))))
    }

    fn apply(store: &Store, command: CdnaCommand) -> Result<CdnaChange, StoreError> {
        match store.apply(Command::Cdna(command))?.outcome {
            Outcome::Cdna(change) => Ok(change),
            other => panic!("a CDNA command has a CDNA outcome, got {other:?}"),
        }
    }

    /// The token a create made.
    fn created(outcome: &Outcome) -> Token {
        match outcome {
            Outcome::Created(token) => *token,
            other => panic!("created expected, got {other:?}"),
        }
    }

    fn draft(weight: f32) -> TokenDraft {
        TokenInput {
            weight,
            ..TokenInput::default()
        }
        .to_draft()
        .expect("valid")
    }

    fn limits(store: &Store, cdna: &Cdna, min: f32, max: f32) {
        let changes = ConfigChanges {
            min_token_weight: Some(min),
            max_token_weight: Some(max),
            ..ConfigChanges::default()
        };
        apply(
            store,
            CdnaCommand::UpdateConfig {
                changes,
                expected_revision: None,
                at: cdna.now(),
            },
        )
        .expect("limits");
    }

    fn start(store: &Store, cdna: &Cdna, duration_seconds: u32) {
        apply(
            store,
            CdnaCommand::StartQuarantine {
                duration_seconds,
                at: cdna.now(),
            },
        )
        .expect("start");
    }

    fn switch(store: &Store, cdna: &Cdna, profile: ProfileId) {
        apply(
            store,
            CdnaCommand::SwitchProfile {
                profile,
                expected_revision: None,
                at: cdna.now(),
            },
        )
        .expect("switch");
    }

    #[test]
    fn an_import_skips_tokens_outside_the_weight_limits_and_creates_the_rest() {
        let (store, cdna) = setup();
        limits(&store, &cdna, 0.2, 0.8);
        let drafts = [0.5, 0.9, 0.2]
            .into_iter()
            .enumerate()
            .map(|(i, weight)| crate::store::ImportDraft {
                index: 40 + i as u64,
                draft: draft(weight),
            })
            .collect();
        let applied = store
            .apply(Command::ImportTokens { drafts, at: 1 })
            .expect("an import never fails as a whole");
        let Outcome::Imported(plan) = applied.outcome else {
            panic!("an import outcome");
        };
        let created: Vec<_> = plan.created.iter().map(|(i, t)| (*i, t.id.get())).collect();
        assert_eq!(created, [(40, 1), (42, 2)]);
        assert_eq!(plan.skipped.len(), 1);
        assert_eq!(plan.skipped[0].0, 41);
        assert_eq!(plan.skipped[0].1.field, "weight");
        assert_eq!(store.tables().len(), 2);
    }

    #[test]
    fn token_writes_outside_the_weight_limits_are_rejected_with_their_paths() {
        let (store, cdna) = setup();
        limits(&store, &cdna, 0.2, 0.8);
        let rejected = store
            .apply(Command::BatchCreate {
                drafts: vec![draft(0.5), draft(0.9), draft(0.1)],
                at: 1,
            })
            .expect_err("out of limits");
        let StoreError::WeightOutsideLimits(outside) = rejected else {
            panic!("weights outside the limits expected, got {rejected:?}");
        };
        let tokens: Vec<_> = outside.iter().map(|(at, _)| *at).collect();
        assert_eq!(tokens, [TokenAt::Batch(1), TokenAt::Batch(2)]);
        assert!(store.tables().is_empty());

        let created_token = store
            .apply(Command::CreateToken {
                draft: draft(0.8),
                at: 1,
            })
            .expect("the limit itself is allowed");
        let token = created(&created_token.outcome);
        let input = TokenInput {
            weight: 0.85,
            ..TokenInput::default()
        };
        let weight = TokenPatch::new(&input, vec![UpdatePath::Weight]).expect("valid");
        let rejected = store
            .apply(Command::UpdateToken {
                id: token.id,
                patch: weight,
                at: 2,
            })
            .expect_err("weight above the limit");
        assert!(
            matches!(&rejected, StoreError::WeightOutsideLimits(v) if v[0].0 == TokenAt::Single),
            "{rejected:?}"
        );
        let radius = TokenPatch::new(&input, vec![UpdatePath::FieldRadius]).expect("valid");
        store
            .apply(Command::UpdateToken {
                id: token.id,
                patch: radius,
                at: 2,
            })
            .expect("an update not writing the weight is not checked against it");
    }

    #[test]
    fn narrowing_the_limits_leaves_stored_tokens_alone() {
        let (store, cdna) = setup();
        store
            .apply(Command::CreateToken {
                draft: draft(0.9),
                at: 1,
            })
            .expect("create");
        limits(&store, &cdna, 0.0, 0.5);
        let tables = store.tables();
        assert_eq!(tables.len(), 1);
        let first = store.tables().page(&Default::default(), None, 1).tokens[0];
        assert_eq!(first.data.weight(), 0.9);
    }

    #[test]
    fn time_never_runs_backwards_when_commands_arrive_out_of_order() {
        let (store, cdna) = setup();
        let later = cdna.now().plus_seconds(10);
        for (profile, at) in [
            (ProfileId::Creative, later),
            (ProfileId::Analyzer, cdna.now()),
        ] {
            apply(
                &store,
                CdnaCommand::SwitchProfile {
                    profile,
                    expected_revision: None,
                    at,
                },
            )
            .expect("switch");
        }
        assert_eq!(cdna.config().updated_at, later);
        let entries = cdna.history_page(None, 2).entries;
        assert_eq!((entries[0].at, entries[1].at), (later, later));
    }

    #[test]
    fn stale_expected_revision_aborts_and_changes_nothing() {
        let (store, cdna) = setup();
        let before = cdna.state();
        let result = apply(
            &store,
            CdnaCommand::SwitchProfile {
                profile: ProfileId::Creative,
                expected_revision: Some(7),
                at: cdna.now(),
            },
        );
        assert!(
            matches!(result, Err(StoreError::StaleRevision { .. })),
            "{result:?}"
        );
        assert_eq!(cdna.state(), before);
        assert_eq!(store.sequence(), 0);
    }

    #[test]
    fn churn_counts_token_writes_only_while_a_quarantine_runs() {
        let (store, cdna) = setup();
        store
            .apply(Command::CreateToken {
                draft: draft(0.5),
                at: 1,
            })
            .expect("before the quarantine");
        start(&store, &cdna, 60);
        store
            .apply(Command::BatchCreate {
                drafts: vec![draft(0.5); 3],
                at: 2,
            })
            .expect("batch");
        let first = store.tables().page(&Default::default(), None, 1).tokens[0];
        store
            .apply(Command::DeleteToken { id: first.id })
            .expect("delete");
        assert_eq!(cdna.quarantine_status().token_churn, 4);
        // A clear counts each token it removed: 3 are left.
        store.apply(Command::ClearTokens).expect("clear");
        assert_eq!(cdna.quarantine_status().token_churn, 7);
        switch(&store, &cdna, ProfileId::Explorer);
        let status = cdna.quarantine_status();
        assert_eq!((status.token_churn, status.config_changes), (7, 1));
        apply(
            &store,
            CdnaCommand::StopQuarantine {
                apply: true,
                at: cdna.now(),
            },
        )
        .expect("stop");
        store
            .apply(Command::CreateToken {
                draft: draft(0.5),
                at: 3,
            })
            .expect("after the quarantine");
        let status = cdna.quarantine_status();
        assert!(!status.active);
        assert_eq!(status.token_churn, 7, "the last quarantine's figures stay");
    }

    #[test]
    fn discarding_restores_the_snapshot_under_a_new_revision() {
        let (store, cdna) = setup();
        start(&store, &cdna, 60);
        switch(&store, &cdna, ProfileId::Creative);
        let changes = ConfigChanges {
            flags: vec![(CdnaFlag::Strict, true)],
            ..ConfigChanges::default()
        };
        apply(
            &store,
            CdnaCommand::UpdateConfig {
                changes,
                expected_revision: Some(2),
                at: cdna.now(),
            },
        )
        .expect("update");
        let change = apply(
            &store,
            CdnaCommand::StopQuarantine {
                apply: false,
                at: cdna.now(),
            },
        )
        .expect("stop");
        let config = cdna.config();
        assert_eq!(config.profile, ProfileId::Default);
        assert!(!config.flags.strict);
        assert_eq!(config.revision, 4);
        assert!(change.config.is_some(), "the snapshot is restored");
        assert!(matches!(
            change.quarantine,
            Some(QuarantineStatus {
                active: false,
                config_changes: 2,
                ..
            })
        ));
    }

    #[test]
    fn history_is_bounded_and_its_sequence_survives_a_clear() {
        let (store, cdna) = setup();
        for _ in 0..(HISTORY_LIMIT + 5) {
            switch(&store, &cdna, ProfileId::Explorer);
        }
        let page = cdna.history_page(None, 2000);
        assert_eq!(page.total, HISTORY_LIMIT as u64);
        assert_eq!(page.entries[0].sequence, HISTORY_LIMIT as u64 + 5);
        assert_eq!(page.entries.last().map(|e| e.sequence), Some(6));
        let older = cdna.history_page(Some(10), 3);
        let sequences: Vec<_> = older.entries.iter().map(|e| e.sequence).collect();
        assert_eq!(sequences, [9, 8, 7]);
        assert!(older.more);
        apply(
            &store,
            CdnaCommand::Reset {
                clear_history: true,
                expected_revision: None,
                at: cdna.now(),
            },
        )
        .expect("reset");
        let page = cdna.history_page(None, 50);
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].action, HistoryAction::Reset);
        assert_eq!(page.entries[0].sequence, HISTORY_LIMIT as u64 + 6);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_expires_a_quarantine_at_its_deadline() {
        let (store, cdna) = setup();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let timer = tokio::spawn(run_quarantine_timer(
            writes(&store),
            Arc::clone(&cdna),
            async move {
                let _ = stopped.await;
            },
        ));
        start(&store, &cdna, 60);
        switch(&store, &cdna, ProfileId::Analyzer);
        // Paused time: these sleeps advance the clock at once, nothing really waits.
        tokio::time::sleep(Duration::from_millis(59_500)).await;
        let status = cdna.quarantine_status();
        assert!(status.active);
        assert_eq!(status.time_left_seconds, 1, "0.5 s left rounds up");
        assert_eq!(cdna.profile(), ProfileId::Analyzer);

        tokio::time::sleep(Duration::from_secs(1)).await;
        let status = cdna.quarantine_status();
        assert!(!status.active);
        assert_eq!(status.config_changes, 1);
        let config = cdna.config();
        assert_eq!((config.profile, config.revision), (ProfileId::Default, 3));
        let newest = &cdna.history_page(None, 1).entries[0];
        assert_eq!(newest.action, HistoryAction::QuarantineExpired);
        assert_eq!(newest.at, T0.plus_seconds(60), "expired at the deadline");

        stop.send(()).expect("timer still running");
        timer.await.expect("the timer ends at shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_re_arms_when_quarantines_stop_and_start() {
        let (store, cdna) = setup();
        let timer = tokio::spawn(run_quarantine_timer(
            writes(&store),
            Arc::clone(&cdna),
            std::future::pending(),
        ));
        start(&store, &cdna, 60);
        tokio::time::sleep(Duration::from_secs(30)).await;
        apply(
            &store,
            CdnaCommand::StopQuarantine {
                apply: true,
                at: cdna.now(),
            },
        )
        .expect("stop");
        start(&store, &cdna, 120);
        // Past the first quarantine's deadline: the second one still runs.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(cdna.quarantine_status().active);
        assert_eq!(cdna.quarantine_status().time_left_seconds, 60);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(!cdna.quarantine_status().active);
        let actions: Vec<_> = cdna
            .history_page(None, 10)
            .entries
            .iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            [
                HistoryAction::QuarantineExpired,
                HistoryAction::QuarantineStart,
                HistoryAction::QuarantineStopApplied,
                HistoryAction::QuarantineStart,
            ]
        );
        timer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_passed_while_down_expires_when_the_timer_starts() {
        let clock = Arc::new(TokioClock::starting_at(T0));
        let mut state = CdnaState::fresh(T0);
        state.quarantine = Some(Quarantine::start(
            state.config.clone(),
            WallTime(T0.0 - 600_000),
            300,
        ));
        let cdna = Arc::new(Cdna::with_state(clock, state));
        let store = store_over(&cdna);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let timer = tokio::spawn(run_quarantine_timer(
            writes(&store),
            Arc::clone(&cdna),
            async move {
                let _ = stopped.await;
            },
        ));
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!cdna.quarantine_status().active);
        assert_eq!(cdna.config().revision, 2);
        stop.send(()).expect("running");
        timer.await.expect("ends");
    }

    #[test]
    fn quarantine_rules_are_failed_preconditions() {
        let (store, cdna) = setup();
        let stop = |apply_changes| CdnaCommand::StopQuarantine {
            apply: apply_changes,
            at: cdna.now(),
        };
        assert!(matches!(
            apply(&store, stop(true)),
            Err(StoreError::NoQuarantine)
        ));
        start(&store, &cdna, 60);
        let again = apply(
            &store,
            CdnaCommand::StartQuarantine {
                duration_seconds: 60,
                at: cdna.now(),
            },
        );
        assert!(matches!(
            again,
            Err(StoreError::QuarantineRunning {
                blocks: QuarantineBlocks::Start,
                ..
            })
        ));
        let reset = apply(
            &store,
            CdnaCommand::Reset {
                clear_history: false,
                expected_revision: None,
                at: cdna.now(),
            },
        );
        assert!(matches!(
            reset,
            Err(StoreError::QuarantineRunning {
                blocks: QuarantineBlocks::Reset,
                ..
            })
        ));
        let early = apply(&store, CdnaCommand::ExpireQuarantine { at: cdna.now() });
        assert!(matches!(early, Err(StoreError::QuarantineNotDue)));
        assert!(cdna.quarantine_status().active);
    }
}
