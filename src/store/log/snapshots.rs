//! Snapshots of the replicated state in a JetStream object-store bucket (`<stream>_snapshots`),
//! so that a new replica need not replay the whole log, and the log need not keep it.
//!
//! - **Taking**: one replica at a time holds a lease (key `snapshotter` of the KV bucket
//!   `<stream>_meta`, created with compare-and-set and kept alive by updates at a revision; it
//!   expires 30 s after its holder stops refreshing it). Every `--log-snapshot-entries` applied
//!   entries the holder copies its checkpoint (a consistent read of the redb store, as a
//!   backup is made) and uploads the file as `snapshot-<sequence>`.
//! - **Purging**: the two newest snapshots are kept; the stream is then purged up to the older
//!   of them, so a replica that is a little behind the newest snapshot still finds its next
//!   entry. One further behind stops with a gap (it never skips) and restores the newest
//!   snapshot when it restarts. A stream with a size limit (`--log-max-mb`) gets a snapshot
//!   once it holds a quarter of the limit, and is purged up to the newest snapshot once it
//!   holds half, so that it makes room before it refuses writes.
//! - **Restoring**: a replica whose data directory holds no store downloads the newest
//!   snapshot into it before it opens the store; the snapshot carries the log's identity and
//!   the hash of its last entry, so the usual checks apply, and the replica follows the log
//!   from the snapshot's sequence.
//! - **Re-bootstrapping**: a replica that was down while the log was purged past its
//!   checkpoint (of the same stream) moves its store aside (`behind-purge-point/`) and restores
//!   the newest snapshot in its place at start, instead of halting at the gap. One that falls
//!   that far behind while running halts (it never skips) and does the same when restarted.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tracing::{info, warn};

use super::jetstream::{stream_identity, JetStreamConfig};
use crate::store::durable::recovery::{read_log_position, store_path};
use crate::store::durable::{create_backup, Journal, STORE_FILE};
use crate::store::write_path::Store;

/// How often the snapshotter looks at the applied sequence and refreshes its lease.
const TICK: Duration = Duration::from_secs(2);
/// Snapshots kept in the bucket; the stream keeps what follows the oldest of them.
const KEPT: usize = 2;
/// The lease's key.
const LEASE: &str = "snapshotter";
/// Bytes per object-store chunk of a snapshot (async-nats' default is 128 KiB): fewer
/// messages to store and to replay, well inside NATS' 1 MiB message limit.
const CHUNK: usize = 512 * 1024;
/// Buffer of a snapshot's file while it is uploaded or downloaded.
const IO_BUFFER: usize = 1024 * 1024;

/// The bucket of a stream's snapshots.
fn bucket(stream: &str) -> String {
    format!("{stream}_snapshots")
}

/// The object name of the snapshot at `sequence` (zero-padded, so names sort by sequence).
fn object_name(sequence: u64) -> String {
    format!("snapshot-{sequence:020}")
}

/// The sequence of a snapshot object's name.
fn sequence_of(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?.parse().ok()
}

/// The sequences of the snapshots in the bucket, ascending (none when there is no bucket).
async fn snapshots(store: &object_store::ObjectStore) -> Result<Vec<u64>, String> {
    let mut list = store.list().await.map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    while let Some(object) = list.next().await {
        let object = object.map_err(|e| e.to_string())?;
        if let Some(sequence) = sequence_of(&object.name).filter(|_| !object.deleted) {
            found.push(sequence);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Downloads the newest snapshot of the log into `data_dir`, which holds no store yet: the
/// sequence it holds, or `None` when there is none to take.
pub async fn restore_newest(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    data_dir: &Path,
) -> Result<Option<u64>, String> {
    let Ok(objects) = context.get_object_store(bucket(&config.stream)).await else {
        return Ok(None);
    };
    let Some(&newest) = snapshots(&objects).await?.last() else {
        return Ok(None);
    };
    let name = object_name(newest);
    let mut object = objects
        .get(&name)
        .await
        .map_err(|e| format!("cannot download {name}: {e}"))?;
    tokio::fs::create_dir_all(data_dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let partial = data_dir.join(format!("{STORE_FILE}.downloading"));
    let file = tokio::fs::File::create(&partial)
        .await
        .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    // Written in large pieces: each write of a tokio file is a trip to the blocking pool,
    // and `copy` alone writes 8 KiB at a time.
    let mut file = tokio::io::BufWriter::with_capacity(IO_BUFFER, file);
    tokio::io::copy(&mut object, &mut file)
        .await
        .map_err(|e| format!("cannot download {name}: {e}"))?;
    file.flush().await.map_err(|e| e.to_string())?;
    let file = file.into_inner();
    file.sync_all().await.map_err(|e| e.to_string())?;
    drop(file);
    // Renamed only when complete: a crash mid-download leaves no store behind.
    tokio::fs::rename(&partial, data_dir.join(STORE_FILE))
        .await
        .map_err(|e| format!("cannot move the snapshot into place: {e}"))?;
    info!(
        sequence = newest,
        "restored the newest snapshot of the command log"
    );
    Ok(Some(newest))
}

/// Where a replica's store goes when the log was purged past it.
pub const BEHIND_DIR: &str = "behind-purge-point";

/// When the store in `data_dir` came from this stream but the stream was purged past its
/// checkpoint (the next entry it needs is gone) and a snapshot covers the gap, moves the store
/// to `BEHIND_DIR` (replacing an earlier one there) and restores the newest snapshot in its
/// place: the snapshot's sequence, `None` when nothing was done (not behind, another stream's
/// state, no snapshot that helps, or no stream yet: the usual checks at start then decide).
pub async fn rebootstrap_if_behind(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    data_dir: &Path,
) -> Result<Option<u64>, String> {
    let dir = data_dir.to_path_buf();
    let position = tokio::task::spawn_blocking(move || read_log_position(&dir))
        .await
        .map_err(|e| e.to_string())?;
    // An unreadable store is for the engine to report when it opens it.
    let Ok(Some(position)) = position else {
        return Ok(None);
    };
    let Ok(mut stream) = context.get_stream(&config.stream).await else {
        return Ok(None);
    };
    let info = stream.info().await.map_err(|e| e.to_string())?.clone();
    // A store that never applied an entry (its checkpoint not yet synced when the replica
    // died) holds nothing of any stream: it is as good as an empty directory.
    let fresh = position.sequence == 0 && position.identity.is_none();
    let ours =
        position.identity.as_deref() == Some(stream_identity(&config.stream, &info).as_str());
    if !fresh && !ours {
        return Ok(None);
    }
    let first = info.state.first_sequence;
    if position.sequence + 1 >= first {
        return Ok(None);
    }
    let Ok(objects) = context.get_object_store(bucket(&config.stream)).await else {
        return Ok(None);
    };
    let newest = snapshots(&objects).await?.last().copied();
    // The newest snapshot must reach the stream's first entry, or restoring it leaves a gap.
    if !newest.is_some_and(|newest| newest + 1 >= first && newest > position.sequence) {
        warn!(
            applied = position.sequence,
            first, ?newest,
            "the command log was purged past this replica's checkpoint and no snapshot covers the gap"
        );
        return Ok(None);
    }
    let aside = data_dir.join(BEHIND_DIR);
    let _ = tokio::fs::remove_dir_all(&aside).await;
    tokio::fs::create_dir_all(&aside)
        .await
        .map_err(|e| format!("cannot create {}: {e}", aside.display()))?;
    tokio::fs::rename(store_path(data_dir), aside.join(STORE_FILE))
        .await
        .map_err(|e| format!("cannot move the store aside: {e}"))?;
    warn!(
        applied = position.sequence,
        first,
        aside = %aside.display(),
        "the command log was purged past this replica's checkpoint: moved the store aside, restoring the newest snapshot"
    );
    restore_newest(context, config, data_dir).await
}

/// Takes a snapshot every `every` applied entries while this replica holds the lease, until
/// `stop` is set.
pub async fn run_snapshotter(
    context: jetstream::Context,
    config: JetStreamConfig,
    store: Arc<Store>,
    journal: Arc<Journal>,
    every: u64,
    mut stop: watch::Receiver<bool>,
) {
    // What a snapshot cut short by a crash left behind.
    let _ = std::fs::remove_dir_all(&config.scratch_dir);
    let holder = format!("{:x}-{}", std::process::id(), super::entry::unix_millis());
    let mut lease: Option<u64> = None;
    let mut last: Option<u64> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|down| *down) => return,
        }
        let applied = store.sequence();
        let due = last.map_or(applied >= every, |last| applied >= last + every);
        // A stream filling towards its size limit gets a snapshot early, so that it can be
        // purged before it refuses writes.
        let filling = || async {
            let newer = last.is_none_or(|last| applied > last);
            newer && stream_bytes(&context, &config).await >= config.max_bytes / 4
        };
        if !due && (config.max_bytes == 0 || !filling().await) {
            continue;
        }
        let Ok(meta) = meta_bucket(&context, &config).await else {
            continue;
        };
        lease = hold_lease(&meta, &holder, lease).await;
        if lease.is_none() {
            continue;
        }
        match snapshot_once(&context, &config, &journal).await {
            Ok(Some(sequence)) => last = Some(sequence),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "taking a snapshot of the replicated state failed"),
        }
    }
}

/// The bytes the log's stream holds (0 when it cannot be read).
async fn stream_bytes(context: &jetstream::Context, config: &JetStreamConfig) -> u64 {
    match context.get_stream(&config.stream).await {
        Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.bytes),
        Err(_) => 0,
    }
}

/// The KV bucket of the log's metadata (the snapshot lease), created when missing.
async fn meta_bucket(
    context: &jetstream::Context,
    config: &JetStreamConfig,
) -> Result<kv::Store, String> {
    let name = format!("{}_meta", config.stream);
    if let Ok(store) = context.get_key_value(&name).await {
        return Ok(store);
    }
    context
        .create_key_value(kv::Config {
            bucket: name,
            history: 1,
            max_age: Duration::from_secs(30),
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())
}

/// Takes or refreshes the lease: its revision while this replica holds it.
async fn hold_lease(meta: &kv::Store, holder: &str, held: Option<u64>) -> Option<u64> {
    let value = bytes::Bytes::copy_from_slice(holder.as_bytes());
    if let Some(revision) = held {
        if let Ok(revision) = meta.update(LEASE, value.clone(), revision).await {
            return Some(revision);
        }
    }
    meta.create(LEASE, value).await.ok()
}

/// Copies the checkpoint, uploads it, keeps the newest `KEPT` snapshots and purges the
/// stream up to the oldest kept one: the snapshot's sequence, `None` when it had one already.
async fn snapshot_once(
    context: &jetstream::Context,
    config: &JetStreamConfig,
    journal: &Arc<Journal>,
) -> Result<Option<u64>, String> {
    let objects = match context.get_object_store(bucket(&config.stream)).await {
        Ok(objects) => objects,
        Err(_) => context
            .create_object_store(object_store::Config {
                bucket: bucket(&config.stream),
                num_replicas: config.replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the snapshot bucket: {e}"))?,
    };
    let scratch = config.scratch_dir.clone();
    std::fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    let journal = Arc::clone(journal);
    let target = scratch.clone();
    let backup = tokio::task::spawn_blocking(move || create_backup(journal.database(), &target))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let taken = snapshots(&objects).await?;
    if taken.contains(&backup.sequence) || backup.sequence == 0 {
        let _ = std::fs::remove_dir_all(&scratch);
        return Ok(None);
    }
    let name = object_name(backup.sequence);
    let file = tokio::fs::File::open(backup.path.join(STORE_FILE))
        .await
        .map_err(|e| e.to_string())?;
    let mut file = tokio::io::BufReader::with_capacity(IO_BUFFER, file);
    let meta = object_store::ObjectMetadata {
        name: name.clone(),
        chunk_size: Some(CHUNK),
        ..Default::default()
    };
    let uploaded = objects.put(meta, &mut file).await;
    let _ = std::fs::remove_dir_all(&scratch);
    uploaded.map_err(|e| format!("cannot upload {name}: {e}"))?;
    info!(
        sequence = backup.sequence,
        "took a snapshot of the replicated state"
    );
    let mut kept = snapshots(&objects).await?;
    while kept.len() > KEPT {
        let oldest = kept.remove(0);
        if let Err(e) = objects.delete(object_name(oldest)).await {
            warn!(error = %e, "cannot delete an old snapshot");
        }
    }
    // The stream keeps what follows the older kept snapshot, so that a replica a little behind
    // the newest still finds its next entry; one that is half full keeps only what follows
    // the newest (replicas behind it restore that snapshot when they restart).
    let half_full =
        config.max_bytes > 0 && stream_bytes(context, config).await >= config.max_bytes / 2;
    let keep_after = match (half_full, kept.len()) {
        (true, _) => kept.last().copied(),
        (false, KEPT) => Some(kept[0]),
        _ => None,
    };
    if let Some(keep_after) = keep_after {
        let keep_from = keep_after + 1;
        let stream = context
            .get_stream(&config.stream)
            .await
            .map_err(|e| e.to_string())?;
        let purged = stream
            .purge()
            .sequence(keep_from)
            .await
            .map_err(|e| format!("cannot purge the stream: {e}"))?;
        info!(
            purged = purged.purged,
            keep_from, half_full, "purged the command log up to a kept snapshot"
        );
    }
    Ok(Some(backup.sequence))
}
