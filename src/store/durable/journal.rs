//! Group commit: one thread takes the records of committed commands in sequence order and
//! writes everything that is queued in one redb transaction, so that concurrent writers share
//! one fsync. Writers wait on the durable watermark before they acknowledge.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::Database;
use tokio::sync::watch;
use tracing::{error, info};

use super::schema::{apply_writes, put_sequence, DurableWrite};
use super::Durability;

/// How often `none` durability still makes its commits durable, so that the file does not
/// grow without bound and a crash loses at most about this much.
const NONE_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The stored changes of one committed command.
#[derive(Debug)]
pub struct Record {
    /// Its commit sequence.
    pub sequence: u64,
    /// What it changed, in order.
    pub writes: Vec<DurableWrite>,
}

enum Message {
    Record(Record),
    Close,
}

/// How far the journal got: the last durable sequence, or why it stopped.
#[derive(Clone, Debug, Default, PartialEq)]
struct Watermark {
    sequence: u64,
    failure: Option<Arc<str>>,
}

/// Counters of the group commit, for benchmarks and Status.
#[derive(Debug, Default)]
pub struct JournalStats {
    /// Transactions committed (with `immediate` and `batched`, one fsync each).
    pub commits: AtomicU64,
    /// Records (commands) written.
    pub records: AtomicU64,
}

/// The write-ahead side of the store: accepts records in sequence order, makes them durable
/// in groups, and tells waiters when.
pub struct Journal {
    sender: Mutex<Option<Sender<Message>>>,
    watermark: watch::Sender<Watermark>,
    durability: Durability,
    stats: Arc<JournalStats>,
    thread: Mutex<Option<JoinHandle<()>>>,
    db: Arc<Database>,
}

impl Journal {
    /// Starts the commit thread over `db`, whose stored state is at `sequence`.
    pub fn start(
        db: Arc<Database>,
        sequence: u64,
        durability: Durability,
        batch_delay: Duration,
    ) -> Journal {
        let (sender, receiver) = mpsc::channel();
        let watermark = watch::Sender::new(Watermark {
            sequence,
            failure: None,
        });
        let stats = Arc::new(JournalStats::default());
        let committer = Committer {
            db: Arc::clone(&db),
            receiver,
            watermark: watermark.clone(),
            durability,
            batch_delay,
            stats: Arc::clone(&stats),
        };
        let on_panic = watermark.clone();
        let thread = std::thread::Builder::new()
            .name("neurograph-journal".into())
            .spawn(move || {
                // A panic must not leave writers waiting forever for a watermark that no
                // longer moves: it fails the journal like an I/O error would.
                let run = std::panic::AssertUnwindSafe(|| committer.run());
                if std::panic::catch_unwind(run).is_err() {
                    on_panic.send_modify(|w| {
                        w.failure = Some("storage failed: the journal thread panicked".into())
                    });
                }
            })
            .expect("spawning the journal thread");
        Journal {
            sender: Mutex::new(Some(sender)),
            watermark,
            durability,
            stats,
            thread: Mutex::new(Some(thread)),
            db,
        }
    }

    /// The database, for consistent reads such as backups.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Group-commit counters.
    pub fn stats(&self) -> &JournalStats {
        &self.stats
    }

    /// Why the journal stopped writing, if it did: the stored state is then behind memory
    /// and no write may be acknowledged any more.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.watermark.borrow().failure.clone()
    }

    /// Queues a committed command's writes. Called under the write lock, so records arrive in
    /// sequence order.
    pub fn append(&self, record: Record) {
        if let Some(sender) = self.sender.lock().as_ref() {
            if sender.send(Message::Record(record)).is_err() {
                self.watermark.send_modify(|w| {
                    w.failure
                        .get_or_insert_with(|| "storage failed: the journal stopped".into());
                });
            }
        }
    }

    /// Resolves when every record up to `sequence` is durable (at once with `none`); an error
    /// when the journal failed before that.
    pub async fn wait_durable(&self, sequence: u64) -> Result<(), Arc<str>> {
        self.wait_until(|durable| durable >= sequence).await;
        let watermark = self.watermark.borrow();
        match &watermark.failure {
            // With `none` nothing waits, so any failure refuses the acknowledgement.
            Some(failure)
                if self.durability == Durability::None || watermark.sequence < sequence =>
            {
                Err(failure.clone())
            }
            _ => Ok(()),
        }
    }

    /// Resolves when every record up to `sequence` is written to the store, durable or not
    /// (with `none` durability too), so that a read transaction sees it; an error when the
    /// journal failed before that.
    pub async fn wait_written(&self, sequence: u64) -> Result<(), Arc<str>> {
        let mut watermark = self.watermark.subscribe();
        let reached = watermark
            .wait_for(|w| w.failure.is_some() || w.sequence >= sequence)
            .await;
        match reached {
            Ok(w) if w.sequence >= sequence => Ok(()),
            Ok(w) => Err(w.failure.clone().unwrap_or_else(|| "storage failed".into())),
            Err(_) => Err("storage failed: the journal stopped".into()),
        }
    }

    /// Resolves once `done` holds for the durable sequence (re-checked whenever it moves or
    /// `nudge` is called), at once with `none` durability or after a failure.
    pub async fn wait_until(&self, done: impl Fn(u64) -> bool) {
        if self.durability == Durability::None {
            return;
        }
        let mut watermark = self.watermark.subscribe();
        let _ = watermark
            .wait_for(|w| w.failure.is_some() || done(w.sequence))
            .await;
    }

    /// Resolves when the journal fails (never, while it works).
    pub async fn failed(&self) -> Arc<str> {
        let mut watermark = self.watermark.subscribe();
        let failure = match watermark.wait_for(|w| w.failure.is_some()).await {
            Ok(w) => w.failure.clone().unwrap_or_else(|| "storage failed".into()),
            Err(_) => "storage failed: the journal stopped".into(),
        };
        failure
    }

    /// Wakes `wait_until` callers to re-check their condition (a command they waited for was
    /// rolled back).
    pub fn nudge(&self) {
        self.watermark.send_modify(|_| {});
    }

    /// Writes what is queued, makes it durable and stops the thread. Later appends are dropped.
    pub fn close(&self) {
        if let Some(sender) = self.sender.lock().take() {
            let _ = sender.send(Message::Close);
        }
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The commit thread's state.
struct Committer {
    db: Arc<Database>,
    receiver: Receiver<Message>,
    watermark: watch::Sender<Watermark>,
    durability: Durability,
    batch_delay: Duration,
    stats: Arc<JournalStats>,
}

impl Committer {
    fn run(self) {
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        loop {
            // With `none`, unsynced commits are synced within the interval even when no
            // further write arrives.
            let sync_by = unsynced.then(|| last_sync + NONE_SYNC_INTERVAL);
            let (batch, closing) = self.next_batch(sync_by);
            if batch.is_empty() && !closing && unsynced {
                if let Err(e) = self.commit(&[], true) {
                    error!(error = %e, "the journal cannot sync: no write is acknowledged from now on");
                    self.watermark
                        .send_modify(|w| w.failure = Some(format!("storage failed: {e}").into()));
                    return;
                }
                unsynced = false;
                last_sync = Instant::now();
                continue;
            }
            if !batch.is_empty() {
                let sync = self.durability != Durability::None
                    || closing
                    || last_sync.elapsed() >= NONE_SYNC_INTERVAL;
                if let Err(e) = self.commit(&batch, sync) {
                    error!(error = %e, "the journal cannot write: no write is acknowledged from now on");
                    self.watermark
                        .send_modify(|w| w.failure = Some(format!("storage failed: {e}").into()));
                    return;
                }
                unsynced = !sync;
                if sync {
                    last_sync = Instant::now();
                }
                let last = batch.last().map_or(0, |r| r.sequence);
                self.watermark.send_modify(|w| w.sequence = last);
            }
            if closing {
                break;
            }
        }
        if unsynced {
            if let Err(e) = self.commit(&[], true) {
                error!(error = %e, "final sync of the journal failed");
            }
        }
        info!(
            commits = self.stats.commits.load(Ordering::Relaxed),
            records = self.stats.records.load(Ordering::Relaxed),
            "journal closed"
        );
    }

    /// Waits for a record (until `until` at the latest: then the batch is empty), then takes
    /// every record queued meanwhile (and with `batched`, those arriving within the batch
    /// delay). Returns whether the journal is closing.
    fn next_batch(&self, until: Option<Instant>) -> (Vec<Record>, bool) {
        let mut batch = Vec::new();
        let first = match until {
            None => self
                .receiver
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
            Some(until) => self
                .receiver
                .recv_timeout(until.saturating_duration_since(Instant::now())),
        };
        match first {
            Ok(Message::Record(record)) => batch.push(record),
            Err(RecvTimeoutError::Timeout) => return (batch, false),
            Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => return (batch, true),
        }
        if self.durability == Durability::Batched {
            let deadline = Instant::now() + self.batch_delay;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.receiver.recv_timeout(left) {
                    Ok(Message::Record(record)) => batch.push(record),
                    Ok(Message::Close) | Err(RecvTimeoutError::Disconnected) => {
                        return (batch, true)
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
        }
        loop {
            match self.receiver.try_recv() {
                Ok(Message::Record(record)) => batch.push(record),
                Ok(Message::Close) | Err(TryRecvError::Disconnected) => return (batch, true),
                Err(TryRecvError::Empty) => return (batch, false),
            }
        }
    }

    /// One transaction holding `batch`; durable (one fsync) when `sync`.
    fn commit(&self, batch: &[Record], sync: bool) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if sync {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        apply_writes(&txn, batch.iter().flat_map(|r| r.writes.iter()))?;
        if let Some(last) = batch.last() {
            put_sequence(&txn, last.sequence)?;
        }
        let flushing = std::time::Instant::now();
        txn.commit()?;
        if sync {
            crate::metrics::record_fsync(flushing.elapsed().as_secs_f64());
        }
        self.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::durable::recovery;
    use crate::store::durable::schema::DurableWrite;

    fn record(sequence: u64) -> Record {
        Record {
            sequence,
            writes: vec![DurableWrite::RaiseCounter {
                pair: crate::model::IdPair::new(0, 1).expect("pair"),
                local_id: sequence as u32,
            }],
        }
    }

    #[test]
    fn records_queued_together_share_one_transaction() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _) = recovery::open(dir.path()).expect("create");
        // A batch delay far longer than the test: only closing ends the wait, so all ten
        // records are in the first batch whatever the scheduling.
        let journal = Journal::start(
            Arc::new(db),
            0,
            Durability::Batched,
            Duration::from_secs(600),
        );
        for sequence in 1..=10 {
            journal.append(record(sequence));
        }
        journal.close();
        assert_eq!(journal.stats().commits.load(Ordering::Relaxed), 1);
        assert_eq!(journal.stats().records.load(Ordering::Relaxed), 10);
        drop(journal);
        let (_, recovered) = recovery::open(dir.path()).expect("reopen");
        assert_eq!(recovered.sequence, 10);
        assert_eq!(
            recovered
                .ids
                .highest(crate::model::IdPair::new(0, 1).expect("pair")),
            10
        );
    }

    #[tokio::test]
    async fn waiting_resolves_once_the_record_is_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (db, _) = recovery::open(dir.path()).expect("create");
        let journal = Journal::start(Arc::new(db), 5, Durability::Immediate, Duration::ZERO);
        journal.wait_durable(5).await.expect("already durable");
        journal.append(record(6));
        journal.wait_durable(6).await.expect("durable");
        assert!(journal.stats().commits.load(Ordering::Relaxed) >= 1);
        drop(journal);
        let (_, recovered) = recovery::open(dir.path()).expect("reopen");
        assert_eq!(recovered.sequence, 6);
    }
}
