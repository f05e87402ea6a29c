//! The log entry: one command as the command log carries it (in the local journal's place or a
//! JetStream stream), encoded with postcard behind a format number. A replica that meets a
//! format it does not know must stop applying rather than skip the entry.

use serde::{Deserialize, Serialize};

use crate::store::command::Command;

/// Format of the entries this build writes; bump it with any change to `Command`'s encoding.
pub const ENTRY_FORMAT: u16 = 2;

/// One command in the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When the entry was made (Unix milliseconds): the clock apply reads for what is not
    /// in the command itself (the age of request ids).
    pub at_ms: u64,
    /// The client's `x-neurograph-request-id`, when it sent one (idempotent retries).
    pub request_id: Option<String>,
    /// The command.
    pub command: Command,
}

/// Why bytes from the log are not an entry this build can apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Written by a build with another entry format.
    #[error("log entry format {found} is not the format {ENTRY_FORMAT} this build applies")]
    UnknownFormat {
        /// The format the entry says it has.
        found: u16,
    },
    /// Not a valid encoding.
    #[error("log entry cannot be decoded: {0}")]
    Malformed(String),
}

impl LogEntry {
    /// An entry for `command` stamped now, without a request id.
    pub fn new(command: Command) -> LogEntry {
        LogEntry {
            at_ms: unix_millis(),
            request_id: None,
            command,
        }
    }

    /// The bytes of this entry: the format number, then the entry.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(&(ENTRY_FORMAT, self)).expect("a command always encodes")
    }

    /// The entry `bytes` hold.
    pub fn decode(bytes: &[u8]) -> Result<LogEntry, EntryError> {
        let (found, rest): (u16, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| EntryError::Malformed(e.to_string()))?;
        if found != ENTRY_FORMAT {
            return Err(EntryError::UnknownFormat { found });
        }
        postcard::from_bytes(rest).map_err(|e| EntryError::Malformed(e.to_string()))
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    use crate::store::cdna::Clock;
    crate::store::cdna::SystemClock.now().0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cdna::{ConfigChanges, WallTime};
    use crate::model::{TokenId, TokenInput, TokenPatch, UpdatePath};
    use crate::store::cdna::CdnaCommand;
    use crate::store::grids::GridCommand;
    use crate::store::import::ImportDraft;

    fn draft(id: u32) -> crate::model::TokenDraft {
        let mut input = TokenInput {
            id,
            weight: 0.25,
            ..TokenInput::default()
        };
        input.points[2] = Some([1.5, -2.0, 0.01]);
        input.to_draft().expect("valid")
    }

    #[test]
    fn every_kind_of_command_comes_back_as_it_went_in() {
        let id = TokenId::new(7).expect("id");
        let input = TokenInput {
            weight: 0.5,
            ..TokenInput::default()
        };
        let commands = vec![
            Command::CreateToken {
                draft: draft(0),
                at: 3,
            },
            Command::BatchCreate {
                drafts: vec![draft(0), draft(9)],
                at: 4,
            },
            Command::ImportTokens {
                drafts: vec![ImportDraft {
                    index: 12,
                    draft: draft(0),
                }],
                at: 5,
            },
            Command::UpdateToken {
                id,
                patch: TokenPatch::new(&input, vec![UpdatePath::Weight]).expect("patch"),
                at: 6,
            },
            Command::DeleteToken { id },
            Command::ClearTokens,
            Command::Grid(GridCommand::AddMember { grid: 2, token: id }),
            Command::Cdna(CdnaCommand::UpdateConfig {
                changes: ConfigChanges {
                    min_token_weight: Some(0.1),
                    ..ConfigChanges::default()
                },
                expected_revision: Some(3),
                at: WallTime(1_700_000_000_000),
            }),
        ];
        for command in commands {
            let entry = LogEntry {
                at_ms: 1_700_000_000_123,
                request_id: Some("retry-1".into()),
                command,
            };
            assert_eq!(LogEntry::decode(&entry.encode()), Ok(entry));
        }
    }

    #[test]
    fn another_format_is_refused_not_guessed() {
        let mut bytes = LogEntry::new(Command::ClearTokens).encode();
        // Format 1 entries held tokens without `expires_at`.
        bytes[0] = 1;
        assert_eq!(
            LogEntry::decode(&bytes),
            Err(EntryError::UnknownFormat { found: 1 })
        );
        assert!(matches!(
            LogEntry::decode(&bytes[..0]),
            Err(EntryError::Malformed(_))
        ));
    }

    #[test]
    fn an_id_with_local_id_zero_does_not_decode() {
        let raw = postcard::to_allocvec(&0x0100_0000u32).expect("encode");
        assert!(postcard::from_bytes::<TokenId>(&raw).is_err());
        let valid = postcard::to_allocvec(&0x0100_0001u32).expect("encode");
        assert_eq!(
            postcard::from_bytes::<TokenId>(&valid).ok(),
            TokenId::new(0x0100_0001)
        );
    }
}
