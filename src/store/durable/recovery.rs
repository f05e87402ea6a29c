//! Opening the data directory: creates a fresh store when there is none, otherwise reads
//! every table back into plain values for the in-memory components. A file that cannot be
//! read or decoded is an error, never an empty start.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use roaring::RoaringBitmap;

use super::schema::{
    self, decode, StoredCdna, COUNTERS, FORMAT, GRIDS, HISTORY, MEMBERS, META, META_CDNA,
    META_FORMAT, META_HIGHEST_GRID, META_SEQUENCE, TOKENS,
};
use super::{DurableError, STORE_FILE};
use crate::model::cdna::HistoryEntry;
use crate::model::grid::{GridConfig, GridId};
use crate::model::{Token, TokenData, TokenId};
use crate::store::cdna::CdnaState;

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
    pub highest_local: Vec<u32>,
    /// Every live token, in id order.
    pub tokens: Vec<Token>,
    /// The user grids, by id.
    pub grids: Vec<StoredGrid>,
    /// Highest grid id ever used.
    pub highest_grid: GridId,
    /// The CDNA state; `None` for a store that never had one written.
    pub cdna: Option<CdnaState>,
}

/// The store file inside `dir`.
pub fn store_path(dir: &Path) -> PathBuf {
    dir.join(STORE_FILE)
}

/// Opens (or creates) the store in `dir` and reads it back.
pub fn open(dir: &Path) -> Result<(Database, Recovered), DurableError> {
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
    let db = if existing {
        Database::builder().open(&path)
    } else {
        Database::builder().create(&path)
    }
    .map_err(|e| DurableError::from_redb(&path, e))?;
    if !existing {
        initialise(&db).map_err(|e| DurableError::from_redb(&path, e))?;
    }
    let recovered = read_back(&db, &path)?;
    Ok((db, recovered))
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

    let mut highest_local = vec![0; 256];
    for entry in txn
        .open_table(COUNTERS)
        .map_err(open_error)?
        .iter()
        .map_err(|e| redb_error(e.into()))?
    {
        let (pair, local) = entry.map_err(|e| redb_error(e.into()))?;
        let slot = highest_local
            .get_mut(usize::from(pair.value()))
            .ok_or_else(|| corrupt(format!("id counter of pair {}", pair.value())))?;
        *slot = local.value();
    }

    let token_table = txn.open_table(TOKENS).map_err(open_error)?;
    let mut tokens = Vec::with_capacity(token_table.len().unwrap_or(0) as usize);
    for entry in token_table.iter().map_err(|e| redb_error(e.into()))? {
        let (key, value) = entry.map_err(|e| redb_error(e.into()))?;
        let id = TokenId::new(key.value())
            .ok_or_else(|| corrupt(format!("token key {} is not a token id", key.value())))?;
        let data: TokenData = decode(value.value(), &format!("token {id}")).map_err(corrupt)?;
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

    Ok(Recovered {
        sequence,
        highest_local,
        tokens,
        grids: grids.into_values().collect(),
        highest_grid,
        cdna,
    })
}
