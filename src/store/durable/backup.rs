//! Backups and restore. A backup copies every table from one read transaction (a consistent
//! snapshot that writers do not block) into a new store file under the backup directory;
//! restore checks a backup reads back completely and puts its file in the data directory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value,
    WriteTransaction,
};

use super::recovery::{read_back, store_path};
use super::schema::{
    self, COUNTERS, EVENTS, GRIDS, HISTORY, MEMBERS, META, META_SEQUENCE, REQUESTS, TOKENS,
};
use super::{DurableError, STORE_FILE};

/// A finished backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// Its directory (holding one store file), what `restore` takes.
    pub path: PathBuf,
    /// Commit sequence of the last command it holds.
    pub sequence: u64,
}

fn backup_error(what: &str, e: impl std::fmt::Display) -> DurableError {
    DurableError::Backup(format!("{what}: {e}"))
}

/// Copies one table of `from` into `to`.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    from: &ReadTransaction,
    to: &WriteTransaction,
    table: TableDefinition<K, V>,
) -> Result<(), redb::Error> {
    let source = from.open_table(table)?;
    let mut target = to.open_table(table)?;
    for entry in source.iter()? {
        let (key, value) = entry?;
        target.insert(key.value(), value.value())?;
    }
    Ok(())
}

/// Writes a consistent copy of `db` into a new directory under `backup_dir`.
pub fn create_backup(db: &Database, backup_dir: &Path) -> Result<Backup, DurableError> {
    let snapshot = db
        .begin_read()
        .map_err(|e| backup_error("cannot read the store", e))?;
    let sequence = snapshot
        .open_table(META)
        .and_then(|meta| Ok(meta.get(META_SEQUENCE)?.map(|v| v.value().to_vec())))
        .map_err(|e| backup_error("cannot read the store", e))?
        .and_then(|b| b.try_into().ok().map(u64::from_le_bytes))
        .unwrap_or(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let name = format!("neurograph-{millis}-seq{sequence}");
    let partial = backup_dir.join(format!(".{name}.partial"));
    let path = backup_dir.join(&name);
    std::fs::create_dir_all(&partial)
        .map_err(|e| backup_error(&format!("cannot create {}", partial.display()), e))?;
    let copy = || -> Result<(), redb::Error> {
        let target = Database::create(partial.join(STORE_FILE))?;
        let txn = target.begin_write()?;
        schema::create_tables(&txn)?;
        copy_table(&snapshot, &txn, TOKENS)?;
        copy_table(&snapshot, &txn, COUNTERS)?;
        copy_table(&snapshot, &txn, GRIDS)?;
        copy_table(&snapshot, &txn, MEMBERS)?;
        copy_table(&snapshot, &txn, HISTORY)?;
        copy_table(&snapshot, &txn, META)?;
        // Stores written before idempotent writes have no request ids to copy.
        match copy_table(&snapshot, &txn, REQUESTS) {
            Err(redb::Error::TableDoesNotExist(_)) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        // The retained feed goes along, so that watchers resume across a restore too.
        copy_table(&snapshot, &txn, EVENTS)?;
        txn.commit()?;
        Ok(())
    };
    if let Err(e) = copy() {
        // A failed backup leaves no directory behind.
        let _ = std::fs::remove_dir_all(&partial);
        return Err(backup_error("cannot write the backup", e));
    }
    // Renamed only when complete, so that a backup directory never holds half a copy.
    if let Err(e) = std::fs::rename(&partial, &path) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(backup_error(
            &format!("cannot rename to {}", path.display()),
            e,
        ));
    }
    sync_dir(backup_dir);
    Ok(Backup { path, sequence })
}

/// The millisecond stamp of a complete backup's directory name (`neurograph-MILLIS-seqN`).
fn backup_stamp(name: &str) -> Option<u128> {
    let rest = name.strip_prefix("neurograph-")?;
    let (millis, sequence) = rest.split_once("-seq")?;
    sequence.parse::<u64>().ok()?;
    millis.parse().ok()
}

/// Deletes the oldest complete backups in `backup_dir` beyond the newest `keep` (0 keeps
/// all); returns what it deleted. Only directories named as `create_backup` names them are
/// touched.
pub fn prune_backups(backup_dir: &Path, keep: usize) -> Result<Vec<PathBuf>, DurableError> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(backup_dir)
        .map_err(|e| backup_error(&format!("cannot list {}", backup_dir.display()), e))?;
    let mut backups: Vec<(u128, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| {
            let stamp = backup_stamp(entry.file_name().to_str()?)?;
            Some((stamp, entry.path()))
        })
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep);
    let mut deleted = Vec::with_capacity(excess);
    for (_, path) in backups.into_iter().take(excess) {
        std::fs::remove_dir_all(&path)
            .map_err(|e| backup_error(&format!("cannot delete {}", path.display()), e))?;
        deleted.push(path);
    }
    if !deleted.is_empty() {
        sync_dir(backup_dir);
    }
    Ok(deleted)
}

/// Deletes the `.partial` directories a backup cut short (by a crash or kill) left in
/// `backup_dir`; returns what it deleted. A missing directory holds none.
pub fn remove_partial_backups(backup_dir: &Path) -> Result<Vec<PathBuf>, DurableError> {
    let entries = match std::fs::read_dir(backup_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(backup_error(
                &format!("cannot list {}", backup_dir.display()),
                e,
            ))
        }
    };
    let mut deleted = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let is_partial = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(".neurograph-") && name.ends_with(".partial"));
        if is_partial && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let path = entry.path();
            std::fs::remove_dir_all(&path)
                .map_err(|e| backup_error(&format!("cannot delete {}", path.display()), e))?;
            deleted.push(path);
        }
    }
    Ok(deleted)
}

/// Makes a rename in `dir` durable (best effort: not every file system syncs directories).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

/// Replaces the store in `data_dir` with the backup in `backup`. The backup is copied next to
/// the store first and the copy read back completely (the backup itself is never opened, so
/// it stays untouched); only then is the current store (if any) renamed aside, or deleted with
/// `discard_existing`, and the copy renamed into place. A failure before that swap leaves the
/// current store as it was. Refuses while a server has the store open. Returns where the
/// previous store went, if kept.
pub fn restore_backup(
    backup: &Path,
    data_dir: &Path,
    discard_existing: bool,
) -> Result<Option<PathBuf>, DurableError> {
    let source = store_path(backup);
    if !source.is_file() {
        return Err(DurableError::Backup(format!(
            "{} is not a backup: it has no {STORE_FILE}",
            backup.display()
        )));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| backup_error(&format!("cannot create {}", data_dir.display()), e))?;
    let target = store_path(data_dir);
    // Held until the swap is done, so that no server can open the store meanwhile. A corrupt
    // store cannot be opened, and may be replaced.
    let _current = match Database::builder().open(&target) {
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(DurableError::InUse { path: target })
        }
        Ok(db) => Some(db),
        Err(_) => None,
    };
    let incoming = data_dir.join(format!("{STORE_FILE}.restoring"));
    let prepared = copy_and_verify(&source, &incoming);
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&incoming);
        return Err(e);
    }
    let mut kept = None;
    if target.exists() {
        if discard_existing {
            std::fs::remove_file(&target)
                .map_err(|e| backup_error(&format!("cannot delete {}", target.display()), e))?;
        } else {
            let millis = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let aside = data_dir.join(format!("{STORE_FILE}.before-restore-{millis}"));
            std::fs::rename(&target, &aside)
                .map_err(|e| backup_error(&format!("cannot move {}", target.display()), e))?;
            kept = Some(aside);
        }
    }
    std::fs::rename(&incoming, &target)
        .map_err(|e| backup_error(&format!("cannot rename to {}", target.display()), e))?;
    sync_dir(data_dir);
    Ok(kept)
}

/// Copies the backup's store file to `incoming`, makes it durable and reads it back whole.
fn copy_and_verify(source: &Path, incoming: &Path) -> Result<(), DurableError> {
    std::fs::copy(source, incoming)
        .and_then(|_| File::open(incoming)?.sync_all())
        .map_err(|e| backup_error(&format!("cannot copy to {}", incoming.display()), e))?;
    let db = Database::builder()
        .open(incoming)
        .map_err(|e| DurableError::from_redb(incoming, e))?;
    read_back(&db, incoming)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::create_dir_all(&path).expect("mkdir");
        path
    }

    #[test]
    fn prunes_the_oldest_complete_backups_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let oldest = make(dir.path(), "neurograph-1000-seq5");
        let middle = make(dir.path(), "neurograph-2000-seq9");
        let newest = make(dir.path(), "neurograph-30000-seq12");
        let other = make(dir.path(), "my-notes");
        let partial = make(dir.path(), ".neurograph-500-seq1.partial");
        let deleted = prune_backups(dir.path(), 2).expect("pruned");
        assert_eq!(deleted, vec![oldest.clone()]);
        assert!(!oldest.exists() && middle.exists() && newest.exists());
        assert!(other.exists() && partial.exists());
        assert!(prune_backups(dir.path(), 0).expect("keeps all").is_empty());
        assert!(middle.exists());
    }

    #[test]
    fn removes_partial_backups_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let partial = make(dir.path(), ".neurograph-500-seq1.partial");
        let complete = make(dir.path(), "neurograph-600-seq2");
        let deleted = remove_partial_backups(dir.path()).expect("removed");
        assert_eq!(deleted, vec![partial.clone()]);
        assert!(!partial.exists() && complete.exists());
        let missing = dir.path().join("absent");
        assert!(remove_partial_backups(&missing)
            .expect("nothing")
            .is_empty());
    }
}
