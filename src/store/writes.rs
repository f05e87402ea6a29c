//! Typed writes: one method per kind of write RPC, each handing its command to the command log
//! and answering with the commit sequence and exactly what the command produced (`Token`,
//! `GridEffect`, the CDNA config, …). The one place where a log's `Outcome` is matched to the
//! command that produced it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use super::cdna::{CdnaChange, CdnaCommand};
use super::command::{Command, Outcome};
use super::error::StoreError;
use super::grids::{GridCommand, GridEffect};
use super::import::{ImportDraft, ImportPlan};
use super::log::entry::unix_millis;
use super::log::{AppendOptions, CommandLog, LogEntry};
use crate::model::cdna::{CdnaConfig, ProfileId, QuarantineStatus, WallTime};
use crate::model::grid::{GridConfig, GridId};
use crate::model::{Token, TokenDraft, TokenId, TokenPatch};

/// Most tokens in one import log entry: about 100 bytes each encoded, so that an entry stays
/// far below JetStream's default 1 MB message limit.
pub const IMPORT_ENTRY_TOKENS: usize = 2_000;

/// What a write produced, with the commit sequence of its command.
#[derive(Clone, Debug, PartialEq)]
pub struct Written<T> {
    /// The commit sequence (`x-neurograph-commit-sequence`).
    pub sequence: u64,
    /// What the command produced.
    pub value: T,
}

/// The write side of the store, over a command log.
#[derive(Clone)]
pub struct Writes {
    log: Arc<dyn CommandLog>,
    /// The request id of the call these writes belong to, if it sent one.
    request_id: Option<Arc<str>>,
    /// When the call gives up.
    deadline: Option<Instant>,
}

impl Writes {
    /// Writes through `log`.
    pub fn new(log: Arc<dyn CommandLog>) -> Writes {
        Writes {
            log,
            request_id: None,
            deadline: None,
        }
    }

    /// The log these writes go through.
    pub fn log(&self) -> &Arc<dyn CommandLog> {
        &self.log
    }

    /// The same writes on behalf of a call that sent `request_id` (idempotent retries, see
    /// `store::requests`).
    pub fn with_request_id(&self, request_id: Option<&str>) -> Writes {
        Writes {
            request_id: request_id.map(Arc::from),
            ..self.clone()
        }
    }

    /// The same writes on behalf of a call that gives up at `deadline`.
    pub fn with_deadline(&self, deadline: Option<Instant>) -> Writes {
        Writes {
            deadline,
            ..self.clone()
        }
    }

    /// Appends `command` now and resolves with what `take` finds in its outcome. The append
    /// happens before this returns, so that callers can append on a thread of their choice
    /// and wait elsewhere.
    fn submit<T: Send + 'static>(
        &self,
        command: Command,
        take: fn(Outcome) -> Result<T, Outcome>,
    ) -> impl Future<Output = Result<Written<T>, StoreError>> + Send + 'static {
        let request_id = self.request_id.as_deref().map(str::to_string);
        self.submit_as(request_id, None, command, take)
    }

    /// `submit` under an explicit request id.
    fn submit_as<T: Send + 'static>(
        &self,
        request_id: Option<String>,
        dedupe_key: Option<String>,
        command: Command,
        take: fn(Outcome) -> Result<T, Outcome>,
    ) -> impl Future<Output = Result<Written<T>, StoreError>> + Send + 'static {
        let method = command.method();
        let entry = LogEntry {
            at_ms: unix_millis(),
            request_id,
            command,
        };
        let options = AppendOptions {
            deadline: self.deadline,
            dedupe_key,
        };
        let pending = self.log.append(entry, options);
        async move {
            let applied = pending.await?;
            let value = take(applied.outcome).map_err(|other| {
                StoreError::Unavailable(format!(
                    "internal error: {method} was answered with {other:?}"
                ))
            })?;
            Ok(Written {
                sequence: applied.sequence,
                value,
            })
        }
    }

    /// Creates one token.
    pub async fn create_token(
        &self,
        draft: TokenDraft,
        at: u32,
    ) -> Result<Written<Token>, StoreError> {
        self.submit(
            Command::CreateToken { draft, at },
            |outcome| match outcome {
                Outcome::Created(token) => Ok(token),
                other => Err(other),
            },
        )
        .await
    }

    /// Replaces some fields of a token; the token after it.
    pub async fn update_token(
        &self,
        id: TokenId,
        patch: TokenPatch,
        at: u32,
    ) -> Result<Written<Token>, StoreError> {
        self.submit(
            Command::UpdateToken { id, patch, at },
            |outcome| match outcome {
                Outcome::Updated(token) => Ok(token),
                other => Err(other),
            },
        )
        .await
    }

    /// Deletes a token; its last state.
    pub async fn delete_token(&self, id: TokenId) -> Result<Written<Token>, StoreError> {
        self.submit(Command::DeleteToken { id }, |outcome| match outcome {
            Outcome::Deleted(token) => Ok(token),
            other => Err(other),
        })
        .await
    }

    /// Creates every token or none (appended at once, see `submit`).
    pub fn batch_create(
        &self,
        drafts: Vec<TokenDraft>,
        at: u32,
    ) -> impl Future<Output = Result<Written<Vec<Token>>, StoreError>> + Send + 'static {
        self.submit(
            Command::BatchCreate { drafts, at },
            |outcome| match outcome {
                Outcome::Batch(tokens) => Ok(tokens),
                other => Err(other),
            },
        )
    }

    /// Creates the tokens of import message number `message` that pass the state checks
    /// (appended at once). The message goes to the log in entries of at most
    /// `IMPORT_ENTRY_TOKENS` tokens (a log entry must stay well below JetStream's 1 MB message
    /// limit; an import never fails as a whole, so splitting it changes no outcome); the
    /// answer is the last entry's sequence and every entry's tokens. Under a request id, each
    /// entry is its own idempotent write, so that a retried stream gets every first answer.
    pub fn import(
        &self,
        message: u64,
        drafts: Vec<ImportDraft>,
        at: u32,
    ) -> impl Future<Output = Result<Written<ImportPlan>, StoreError>> + Send + 'static {
        let pending: Vec<_> = drafts
            .chunks(IMPORT_ENTRY_TOKENS)
            .enumerate()
            .map(|(chunk, drafts)| {
                // Request ids are printable ASCII, so a NUL keeps these keys apart from others.
                let request_id = self
                    .request_id
                    .as_ref()
                    .map(|id| format!("{id}\0{message}\0{chunk}"));
                let command = Command::ImportTokens {
                    drafts: drafts.to_vec(),
                    at,
                };
                self.submit_as(request_id, None, command, |outcome| match outcome {
                    Outcome::Imported(plan) => Ok(plan),
                    other => Err(other),
                })
            })
            .collect();
        async move {
            let mut merged = Written {
                sequence: 0,
                value: ImportPlan::default(),
            };
            for entry in pending {
                let written = entry.await?;
                merged.sequence = merged.sequence.max(written.sequence);
                merged.value.created.extend(written.value.created);
                merged.value.skipped.extend(written.value.skipped);
            }
            Ok(merged)
        }
    }

    /// Deletes every token; how many there were (appended at once).
    pub fn clear_tokens(
        &self,
    ) -> impl Future<Output = Result<Written<u64>, StoreError>> + Send + 'static {
        self.submit(Command::ClearTokens, |outcome| match outcome {
            Outcome::Cleared(count) => Ok(count),
            other => Err(other),
        })
    }

    /// Whether the log applies a write before `submit` returns (`CommandLog::applies_on_append`).
    pub fn applies_on_append(&self) -> bool {
        self.log.applies_on_append()
    }

    /// Deletes up to `limit` tokens whose expiry is at or before `at`, earliest first: how
    /// many it deleted. `after` is the applied sequence the caller saw them due at: replicas
    /// that see the same state due at the same time append the command once.
    pub fn expire_tokens(
        &self,
        at: u32,
        limit: u32,
        after: u64,
    ) -> impl Future<Output = Result<Written<u64>, StoreError>> + Send + 'static {
        let key = format!("expire-tokens-after-{after}");
        let command = Command::ExpireTokens { at, limit };
        self.submit_as(None, Some(key), command, |outcome| match outcome {
            Outcome::Expired(count) => Ok(count),
            other => Err(other),
        })
    }

    /// Creates a user grid with `config`: its id and config.
    pub async fn create_grid(
        &self,
        config: GridConfig,
    ) -> Result<Written<(GridId, GridConfig)>, StoreError> {
        let command = Command::Grid(GridCommand::Create { config });
        self.submit(command, |outcome| match outcome {
            Outcome::Grid(GridEffect::Created { grid, config }) => Ok((grid, config)),
            other => Err(other),
        })
        .await
    }

    /// Deletes, adds a member to or removes a member from a user grid (`command` is not a
    /// create).
    pub async fn change_grid(&self, command: GridCommand) -> Result<Written<()>, StoreError> {
        self.submit(Command::Grid(command), |outcome| match outcome {
            Outcome::Grid(
                GridEffect::Deleted { .. }
                | GridEffect::MemberAdded { .. }
                | GridEffect::MemberRemoved { .. },
            ) => Ok(()),
            other => Err(other),
        })
        .await
    }

    /// Changes the CDNA config (update, switch, reset): the profile before it and the config
    /// after it.
    pub async fn change_config(
        &self,
        command: CdnaCommand,
    ) -> Result<Written<(ProfileId, CdnaConfig)>, StoreError> {
        self.submit(Command::Cdna(command), |outcome| match outcome {
            Outcome::Cdna(CdnaChange {
                config: Some(config),
                ..
            }) => Ok(config),
            other => Err(other),
        })
        .await
    }

    /// Ends the quarantine whose deadline has passed, at `at`: appended once however many
    /// replicas see the deadline.
    pub async fn expire_quarantine(
        &self,
        deadline: WallTime,
        at: WallTime,
    ) -> Result<Written<QuarantineStatus>, StoreError> {
        let command = Command::Cdna(CdnaCommand::ExpireQuarantine { at });
        let key = format!("expire-quarantine-{}", deadline.0);
        self.submit_as(None, Some(key), command, quarantine_status)
            .await
    }

    /// Starts, stops or expires the quarantine: its status after the command.
    pub async fn change_quarantine(
        &self,
        command: CdnaCommand,
    ) -> Result<Written<QuarantineStatus>, StoreError> {
        self.submit(Command::Cdna(command), quarantine_status).await
    }
}

/// The quarantine's status after a quarantine command.
fn quarantine_status(outcome: Outcome) -> Result<QuarantineStatus, Outcome> {
    match outcome {
        Outcome::Cdna(CdnaChange {
            quarantine: Some(status),
            ..
        }) => Ok(status),
        other => Err(other),
    }
}
