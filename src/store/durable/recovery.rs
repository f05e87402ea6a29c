//! Opening the data directory: creates a fresh store when there is none, otherwise reads
//! every table back into plain values for the in-memory components. A file that cannot be
//! read or decoded is an error, never an empty start.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use roaring::RoaringBitmap;

use super::schema::{
    self, decode, StoredCdna, COUNTERS, FORMAT, GRIDS, HISTORY, MEMBERS, META, META_CDNA,
    META_FORMAT, META_HIGHEST_GRID, META_LOG_IDENTITY, META_LOG_LAST_HASH, META_SEQUENCE, REQUESTS,
    TOKENS,
};
use super::{DurableError, STORE_FILE};
use crate::model::cdna::HistoryEntry;
use crate::model::grid::{GridConfig, GridId};
use crate::model::{IdPair, Token, TokenData, TokenId};
use crate::store::cdna::CdnaState;
use crate::store::ids::IdCounters;
use crate::store::requests::AnsweredRequest;

/// A user grid as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredGrid {
    /// Its id.
    pub id: GridId,
    /// Its config.
    pub config: GridConfig,
    /// Its member token ids.
    pub members: RoaringBitmap,
}

/// Everything read back from a store.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Commit sequence of the last stored command.
    pub sequence: u64,
    /// Highest local id ever used per (domain, entity_type) pair.
    pub ids: IdCounters,
    /// Every live token, in id order.
    pub tokens: Vec<Token>,
    /// The user grids, by id.
    pub grids: Vec<StoredGrid>,
    /// Highest grid id ever used.
    pub highest_grid: GridId,
    /// The CDNA state; `None` for a store that never had one written.
    pub cdna: Option<CdnaState>,
    /// Request ids of recent idempotent writes and their first answers.
    pub requests: Vec<(String, AnsweredRequest)>,
    /// The identity of the command log the state came from (replicas only).
    pub log_identity: Option<String>,
    /// The SHA-256 of the last log entry applied (replicas only).
    pub log_last_hash: Option<Vec<u8>>,
}

/// The store file inside `dir`.
pub fn store_path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// Opens (or creates) the store in `dir` and reads it back.
pub fn open(dir: &Path) -> Result<(Database, Recovered), DurableError> {
    open_cached(dir, DEFAULT_CACHE_BYTES)
}

/// The page cache of a store opened by `open`: what `--store-cache-mb` defaults to.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// `open`, with a page cache of `cache_bytes`.
pub fn open_cached(dir: &Path, cache_bytes: usize) -> Result<(Database, Recovered), DurableError> {
    let unreadable = |detail: String| DurableError::Unreadable {
        path: dir.to_path_buf(),
        detail,
    };
    std::fs::create_dir_all(dir).map_err(|e| unreadable(format!("cannot create it: {e}")))?;
    std::fs::read_dir(dir).map_err(|e| unreadable(format!("cannot list it: {e}")))?;
    let path = store_path(dir);
    let existing = match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => {
            return Err(DurableError::Corrupt {
                path,
                detail: "the file is empty".into(),
            })
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(unreadable(format!("{}: {e}", path.display()))),
    };
    let mut builder = Database::builder();
    // Memory holds the state; the store is read whole once at start and then only written,
    // so a big page cache (redb's default is 1 GiB) would only keep pages nobody reads.
    builder.set_cache_size(cache_bytes);
    let db = if existing {
        builder.open(&path)
    } else {
        builder.create(&path)
    }
    .map_err(|e| DurableError::from_redb(&path, e))?;
    // A store without any table was created by a first start that died before its first
    // commit: it holds nothing, so it is initialised rather than refused.
    let has_tables =
        || -> Result<bool, redb::Error> { Ok(db.begin_read()?.list_tables()?.next().is_some()) };
    if !existing || !has_tables().map_err(|e| DurableError::from_redb(&path, e))? {
        initialise(&db).map_err(|e| DurableError::from_redb(&path, e))?;
    }
    upgrade(&db).map_err(|e| DurableError::from_redb(&path, e))?;
    let recovered = read_back(&db, &path)?;
    Ok((db, recovered))
}

/// Where a stored checkpoint stands in the log it came from (replicas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogPosition {
    /// The last applied sequence.
    pub sequence: u64,
    /// The identity of the log the state came from, if it came from one.
    pub identity: Option<String>,
}

/// The log position of the store in `dir` without reading it back (`None` when there is no
/// store there), so that a replica can tell before it opens whether the log still holds what
/// follows.
pub fn read_log_position(dir: &Path) -> Result<Option<LogPosition>, DurableError> {
    let path = store_path(dir);
    if !path.exists() {
        return Ok(None);
    }
    let db = Database::builder()
        .set_cache_size(1024 * 1024)
        .open(&path)
        .map_err(|e| DurableError::from_redb(&path, e))?;
    let txn = db
        .begin_read()
        .map_err(|e| DurableError::from_redb(&path, e))?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(DurableError::from_redb(&path, e)),
    };
    let value = |key: &str| -> Result<Option<Vec<u8>>, DurableError> {
        Ok(meta
            .get(key)
            .map_err(|e| DurableError::from_redb(&path, e))?
            .map(|v| v.value().to_vec()))
    };
    let sequence = value(META_SEQUENCE)?
        .and_then(|b| b.try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0);
    let identity = value(META_LOG_IDENTITY)?.and_then(|b| String::from_utf8(b).ok());
    Ok(Some(LogPosition { sequence, identity }))
}

/// Writes the tables and the format version of a new store.
fn initialise(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    schema::create_tables(&txn)?;
    txn.open_table(META)?
        .insert(META_FORMAT, FORMAT.to_le_bytes().as_slice())?;
    txn.commit()?;
    Ok(())
}

/// Upgrades a store of format 1 in one transaction: a token's postcard record gained a
/// trailing `expires_at` (a varint, 0 = never), so each record gets a 0 byte appended; the
/// remembered request ids are dropped (their answers hold tokens in the old layout: a retry
/// of a write made before the upgrade is applied again); the feed retains records from the
/// next command on. Any other format is left for `read_back` to refuse.
fn upgrade(db: &Database) -> Result<(), redb::Error> {
    let format = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let value = meta.get(META_FORMAT)?;
        value.and_then(|v| v.value().try_into().ok().map(u32::from_le_bytes))
    };
    if format != Some(1) {
        return Ok(());
    }
    let txn = db.begin_write()?;
    schema::create_tables(&txn)?;
    {
        let mut tokens = txn.open_table(TOKENS)?;
        let old: Vec<(u32, Vec<u8>)> = tokens
            .iter()?
            .map(|entry| entry.map(|(k, v)| (k.value(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (id, mut bytes) in old {
            bytes.push(0);
            tokens.insert(id, bytes.as_slice())?;
        }
        txn.open_table(REQUESTS)?.retain(|_, _| false)?;
        let mut meta = txn.open_table(META)?;
        let sequence = meta
            .get(META_SEQUENCE)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(0);
        meta.insert(
            schema::META_EVENTS_FROM,
            (sequence + 1).to_le_bytes().as_slice(),
        )?;
        meta.insert(META_FORMAT, FORMAT.to_le_bytes().as_slice())?;
    }
    txn.commit()?;
    tracing::info!("upgraded the store from format 1 to {FORMAT} (tokens gained expires_at)");
    Ok(())
}

/// Reads every table of `db` (at `path`, for errors).
pub fn read_back(db: &Database, path: &Path) -> Result<Recovered, DurableError> {
    let redb_error = |e: redb::Error| DurableError::from_redb(path, e);
    let corrupt = |detail: String| DurableError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let txn = db.begin_read().map_err(|e| redb_error(e.into()))?;
    let open_error = |e: redb::TableError| redb_error(e.into());

    let meta = txn.open_table(META).map_err(open_error)?;
    let meta_value = |key: &str| -> Result<Option<Vec<u8>>, DurableError> {
        Ok(meta
            .get(key)
            .map_err(|e| redb_error(e.into()))?
            .map(|v| v.value().to_vec()))
    };
    let format = meta_value(META_FORMAT)?
        .and_then(|b| b.try_into().ok().map(u32::from_le_bytes))
        .ok_or_else(|| corrupt("no format version".into()))?;
    if format != FORMAT {
        return Err(corrupt(format!(
            "format version {format}, this build reads {FORMAT}"
        )));
    }
    let sequence = meta_value(META_SEQUENCE)?
        .map(|b| b.try_into().map(u64::from_le_bytes))
        .transpose()
        .map_err(|_| corrupt("sequence is not 8 bytes".into()))?
        .unwrap_or(0);
    let highest_grid = meta_value(META_HIGHEST_GRID)?
        .map(|b| b.try_into().map(u32::from_le_bytes))
        .transpose()
        .map_err(|_| corrupt("highest grid id is not 4 bytes".into()))?
        .unwrap_or(0);

    let mut ids = IdCounters::default();
    for entry in txn
        .open_table(COUNTERS)
        .map_err(open_error)?
        .iter()
        .map_err(|e| redb_error(e.into()))?
    {
        let (pair, local) = entry.map_err(|e| redb_error(e.into()))?;
        let pair = u8::try_from(pair.value())
            .map(IdPair::from_index)
            .map_err(|_| corrupt(format!("id counter of pair {}", pair.value())))?;
        ids.raise(pair, local.value());
    }

    let token_table = txn.open_table(TOKENS).map_err(open_error)?;
    let mut tokens = Vec::with_capacity(token_table.len().unwrap_or(0) as usize);
    for entry in token_table.iter().map_err(|e| redb_error(e.into()))? {
        let (key, value) = entry.map_err(|e| redb_error(e.into()))?;
        let id = TokenId::new(key.value())
            .ok_or_else(|| corrupt(format!("token key {} is not a token id", key.value())))?;
        let data: TokenData = decode(value.value(), &format!("token {id}")).map_err(corrupt)?;
        // A counter is never below a live id's local id, whatever the stored counter says.
        ids.reserve(id);
        tokens.push(Token { id, data });
    }

    let mut grids = BTreeMap::new();
    for entry in txn
        .open_table(GRIDS)
        .map_err(open_error)?
        .iter()
        .map_err(|e| redb_error(e.into()))?
    {
        let (key, value) = entry.map_err(|e| redb_error(e.into()))?;
        let config: GridConfig =
            decode(value.value(), &format!("grid {}", key.value())).map_err(corrupt)?;
        grids.insert(
            key.value(),
            StoredGrid {
                id: key.value(),
                config,
                members: RoaringBitmap::new(),
            },
        );
    }
    for entry in txn
        .open_table(MEMBERS)
        .map_err(open_error)?
        .iter()
        .map_err(|e| redb_error(e.into()))?
    {
        let (key, _) = entry.map_err(|e| redb_error(e.into()))?;
        let (grid, token) = key.value();
        grids
            .get_mut(&grid)
            .ok_or_else(|| {
                corrupt(format!(
                    "membership of token {token} in missing grid {grid}"
                ))
            })?
            .members
            .insert(token);
    }

    let cdna = match meta_value(META_CDNA)? {
        None => None,
        Some(bytes) => {
            let stored: StoredCdna = decode(&bytes, "the CDNA state").map_err(corrupt)?;
            let mut history = VecDeque::new();
            for entry in txn
                .open_table(HISTORY)
                .map_err(open_error)?
                .iter()
                .map_err(|e| redb_error(e.into()))?
                .rev()
            {
                let (key, value) = entry.map_err(|e| redb_error(e.into()))?;
                let entry: HistoryEntry =
                    decode(value.value(), &format!("history entry {}", key.value()))
                        .map_err(corrupt)?;
                history.push_back(entry);
            }
            Some(CdnaState {
                config: stored.config,
                quarantine: stored.quarantine,
                last_quarantine: stored.last_quarantine,
                history,
                next_history_sequence: stored.next_history_sequence,
            })
        }
    };

    // Stores written before idempotent writes existed have no such table: nothing to read.
    let mut requests = Vec::new();
    match txn.open_table(REQUESTS) {
        Ok(table) => {
            for entry in table.iter().map_err(|e| redb_error(e.into()))? {
                let (key, value) = entry.map_err(|e| redb_error(e.into()))?;
                let answered: AnsweredRequest =
                    decode(value.value(), &format!("request id {:?}", key.value()))
                        .map_err(corrupt)?;
                requests.push((key.value().to_string(), answered));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(open_error(e)),
    }

    let log_identity = meta_value(META_LOG_IDENTITY)?
        .map(|bytes| {
            String::from_utf8(bytes).map_err(|_| corrupt("log identity is not UTF-8".into()))
        })
        .transpose()?;
    let log_last_hash = meta_value(META_LOG_LAST_HASH)?;
    Ok(Recovered {
        sequence,
        ids,
        requests,
        log_identity,
        log_last_hash,
        tokens,
        grids: grids.into_values().collect(),
        highest_grid,
        cdna,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cdna::{CdnaConfig, HistoryAction, WallTime};
    use crate::model::TokenInput;
    use crate::store::durable::schema::{apply_writes, put_sequence, DurableWrite};

    fn token(raw: u32, weight: f32) -> Token {
        let draft = TokenInput {
            weight,
            ..TokenInput::default()
        }
        .to_draft()
        .expect("valid");
        Token {
            id: TokenId::new(raw).expect("valid id"),
            data: draft.stamped(7),
        }
    }

    fn entry(sequence: u64) -> HistoryEntry {
        HistoryEntry {
            sequence,
            action: HistoryAction::ConfigUpdate,
            at: WallTime(sequence),
            revision: sequence + 1,
            details: format!("change {sequence}"),
        }
    }

    fn cdna_write(next: u64, entries: Vec<HistoryEntry>, keep_from: u64) -> DurableWrite {
        DurableWrite::PutCdna {
            state: Box::new(StoredCdna {
                config: CdnaConfig::fresh(WallTime(1)),
                quarantine: None,
                last_quarantine: None,
                next_history_sequence: next,
            }),
            new_entries: entries,
            keep_from,
        }
    }

    /// Applies `batches` (one transaction each), closes the store and reads it back.
    #[test]
    fn a_format_1_store_is_upgraded_keeping_its_tokens_without_expiry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let kept = token(0x0100_0001, 0.25);
        {
            let (db, _) = open(dir.path()).expect("create");
            let txn = db.begin_write().expect("write");
            apply_writes(&txn, &[DurableWrite::PutToken(kept)]).expect("apply");
            put_sequence(&txn, 41).expect("sequence");
            {
                // The layout of format 1: the same record without the trailing expiry byte.
                let mut tokens = txn.open_table(TOKENS).expect("tokens");
                let mut bytes = tokens
                    .get(kept.id.get())
                    .expect("read")
                    .expect("stored")
                    .value()
                    .to_vec();
                assert_eq!(bytes.pop(), Some(0), "no expiry encodes as a last 0 byte");
                tokens
                    .insert(kept.id.get(), bytes.as_slice())
                    .expect("insert");
                let mut meta = txn.open_table(META).expect("meta");
                meta.insert(META_FORMAT, 1u32.to_le_bytes().as_slice())
                    .expect("format");
            }
            txn.commit().expect("commit");
        }
        let (db, recovered) = open(dir.path()).expect("upgraded");
        assert_eq!(recovered.tokens, [kept]);
        assert_eq!(recovered.sequence, 41);
        let history = crate::store::feed::history::History::Stored(std::sync::Arc::new(
            crate::store::durable::Journal::start(
                std::sync::Arc::new(db),
                41,
                crate::store::durable::Durability::None,
                std::time::Duration::ZERO,
            ),
        ));
        assert_eq!(history.oldest_resumable().expect("reads"), 41);
    }

    fn round_trip(batches: &[Vec<DurableWrite>]) -> Recovered {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let (db, fresh) = open(dir.path()).expect("create");
            assert_eq!(fresh.sequence, 0);
            assert!(fresh.tokens.is_empty() && fresh.cdna.is_none());
            for (i, batch) in batches.iter().enumerate() {
                let txn = db.begin_write().expect("write");
                apply_writes(&txn, batch).expect("apply");
                put_sequence(&txn, i as u64 + 1).expect("sequence");
                txn.commit().expect("commit");
            }
        }
        open(dir.path()).expect("reopen").1
    }

    #[test]
    fn every_write_reads_back() {
        let recovered = round_trip(&[
            vec![
                DurableWrite::PutToken(token(1, 0.5)),
                DurableWrite::PutToken(token(2, 0.25)),
                DurableWrite::PutToken(token(0x2500_0003, 0.75)),
                DurableWrite::RaiseCounter {
                    pair: IdPair::default(),
                    local_id: 2,
                },
                DurableWrite::RaiseCounter {
                    pair: IdPair::new(2, 5).expect("pair"),
                    local_id: 3,
                },
                DurableWrite::PutGrid {
                    grid: 1,
                    config: GridConfig::default(),
                },
                DurableWrite::PutGrid {
                    grid: 2,
                    config: GridConfig::default(),
                },
                DurableWrite::AddMember { grid: 1, token: 1 },
                DurableWrite::AddMember { grid: 1, token: 2 },
                DurableWrite::AddMember { grid: 2, token: 2 },
                cdna_write(3, vec![entry(1), entry(2)], 1),
            ],
            vec![
                // An update, a delete leaving every grid, a grid deleted with its members,
                // a counter never lowered, and history trimmed below 2.
                DurableWrite::PutToken(token(1, 0.125)),
                DurableWrite::DeleteToken(TokenId::new(2).expect("id")),
                DurableWrite::LeaveAllGrids(2),
                DurableWrite::AddMember { grid: 2, token: 1 },
                DurableWrite::DeleteGrid(2),
                DurableWrite::RaiseCounter {
                    pair: IdPair::default(),
                    local_id: 1,
                },
                cdna_write(4, vec![entry(3)], 2),
            ],
        ]);
        assert_eq!(recovered.sequence, 2);
        assert_eq!(
            recovered.tokens,
            vec![token(1, 0.125), token(0x2500_0003, 0.75)]
        );
        assert_eq!(recovered.ids.highest(IdPair::default()), 2);
        assert_eq!(recovered.ids.highest(IdPair::new(2, 5).expect("pair")), 3);
        assert_eq!(recovered.highest_grid, 2, "grid ids are never reused");
        assert_eq!(recovered.grids.len(), 1);
        assert_eq!(recovered.grids[0].id, 1);
        assert_eq!(recovered.grids[0].members.iter().collect::<Vec<_>>(), [1]);
        let cdna = recovered.cdna.expect("CDNA state");
        assert_eq!(cdna.next_history_sequence, 4);
        assert_eq!(
            cdna.history.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [3, 2],
            "newest first, entries below keep_from dropped"
        );
        assert_eq!(cdna.history[0], entry(3));
    }

    #[test]
    fn clear_drops_tokens_and_memberships_but_keeps_grids_and_counters() {
        let recovered = round_trip(&[
            vec![
                DurableWrite::PutToken(token(1, 0.5)),
                DurableWrite::RaiseCounter {
                    pair: IdPair::default(),
                    local_id: 1,
                },
                DurableWrite::PutGrid {
                    grid: 1,
                    config: GridConfig::default(),
                },
                DurableWrite::AddMember { grid: 1, token: 1 },
            ],
            vec![DurableWrite::ClearTokens],
        ]);
        assert!(recovered.tokens.is_empty());
        assert_eq!(recovered.ids.highest(IdPair::default()), 1);
        assert_eq!(recovered.grids.len(), 1);
        assert!(recovered.grids[0].members.is_empty());
    }

    #[test]
    fn a_file_that_is_not_a_store_is_corrupt_not_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(store_path(dir.path()), b"definitely not redb").expect("write");
        let error = open(dir.path()).expect_err("refused");
        assert!(matches!(error, DurableError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn a_second_open_of_a_store_in_use_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (_db, _) = open(dir.path()).expect("create");
        let error = open(dir.path()).expect_err("in use");
        assert!(matches!(error, DurableError::InUse { .. }), "{error}");
    }
}
