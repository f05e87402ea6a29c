//! The assembled state: the store and the components that follow its write path (spatial
//! index, user grids, CDNA), either fresh in memory or recovered from the embedded store with
//! a journal attached. `server` builds one and hands its parts to the services.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::cdna::{Cdna, CdnaCommand, CdnaState, Clock, SystemClock};
use super::command::Command;
use super::durable::schema;
use super::durable::{recovery, Durability, DurableError, Journal};
use super::feed::history::{History, MemoryHistory};
use super::feed::ChangeFeed;
use super::grids::Grids;
use super::log::jetstream::LogCheckpoint;
use super::log::LocalLog;
use super::requests::RequestLedger;
use super::spatial::SpatialIndex;
use super::tokens::TokenTables;
use super::write_path::{Components, Resumed, Store};
use super::writes::Writes;

/// Where and how an engine keeps its state.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// The data directory of the embedded store; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Longest wait of `batched` durability.
    pub batch_delay: Duration,
    /// Cap on user-grid memberships.
    pub max_grid_memberships: u64,
    /// Events a WatchTokens subscriber may fall behind.
    pub watch_lag_limit: usize,
    /// Change-feed records kept at least for watchers that resume.
    pub watch_retention: u64,
    /// Bytes of the embedded store's page cache (redb's default would be 1 GiB).
    pub store_cache_bytes: usize,
    /// A replica of a log durable elsewhere: the embedded store is its checkpoint (synced
    /// about once a second, never waited for) and nothing is applied outside the log.
    pub replicated: bool,
}

/// The store and its components.
pub struct Engine {
    /// Tokens, reads and the deterministic apply step.
    pub store: Arc<Store>,
    /// Typed writes through the command log.
    pub writes: Writes,
    /// Grid 0's spatial index.
    pub index: Arc<SpatialIndex>,
    /// The user grids.
    pub grids: Arc<Grids>,
    /// The CDNA config.
    pub cdna: Arc<Cdna>,
    /// The change feed WatchTokens subscribes to.
    pub feed: Arc<ChangeFeed>,
    /// The retained feed records WatchTokens resumes from.
    pub history: History,
    /// What the stored state says about the log it came from (replicas).
    pub checkpoint: LogCheckpoint,
}

/// The components of a store: CDNA and the grids are dispatched to by the write path; the
/// index and then the feed follow every commit (the feed last, so that a watcher who hears of a
/// commit finds it in the index).
fn components(
    cdna: &Arc<Cdna>,
    index: &Arc<SpatialIndex>,
    grids: &Arc<Grids>,
    feed: &Arc<ChangeFeed>,
) -> Components {
    Components {
        cdna: Arc::clone(cdna),
        grids: Arc::clone(grids),
        followers: vec![index.clone(), feed.clone()],
        ..Components::default()
    }
}

/// Page cache while a snapshot is read into memory (read once, front to back).
const SNAPSHOT_READ_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Typed writes through the single-node log over `store`.
fn local_writes(store: &Arc<Store>) -> Writes {
    Writes::new(Arc::new(LocalLog::new(Arc::clone(store))))
}

impl Engine {
    /// Fresh state in memory only.
    pub fn in_memory(options: &EngineOptions) -> Engine {
        let cdna = Arc::new(Cdna::new(Arc::new(SystemClock)));
        let index = Arc::new(SpatialIndex::default());
        let grids = Arc::new(Grids::new(options.max_grid_memberships));
        let feed = Arc::new(ChangeFeed::new(options.watch_lag_limit));
        // Without a store file the retained records live in memory, recorded before the live
        // feed hears of a commit: a watcher that registers with the feed after a commit must
        // find that commit retained.
        let memory = Arc::new(MemoryHistory::new(options.watch_retention, 0));
        let mut components = components(&cdna, &index, &grids, &feed);
        let at_feed = components.followers.len() - 1;
        components.followers.insert(at_feed, memory.clone());
        let store = Arc::new(Store::new(components));
        let writes = local_writes(&store);
        Engine {
            history: History::Memory(memory),
            store,
            writes,
            checkpoint: LogCheckpoint::default(),
            index,
            grids,
            cdna,
            feed,
        }
    }

    /// The state `options` asks for: in memory, or read back from the data directory (created
    /// when missing) with trees bulk-loaded. Blocks for the whole recovery.
    pub fn open(options: &EngineOptions) -> Result<Engine, DurableError> {
        let Some(dir) = &options.data_dir else {
            return Ok(Engine::in_memory(options));
        };
        let started = Instant::now();
        let (db, mut recovered) = recovery::open_cached(dir, options.store_cache_bytes)?;
        let read = started.elapsed();
        let db = Arc::new(db);
        if recovered.cdna.is_none() {
            // Stored at once, so that a fresh config keeps its revision time across restarts.
            let fresh = CdnaState::fresh(SystemClock.now());
            store_fresh_cdna(&db, &fresh).map_err(|e| DurableError::Unreadable {
                path: dir.clone(),
                detail: format!("cannot write the initial CDNA state: {e}"),
            })?;
            recovered.cdna = Some(fresh);
        }
        // A replica's store is a checkpoint: the log it follows is durable elsewhere.
        let durability = match options.replicated {
            true => Durability::None,
            false => options.durability,
        };
        let journal = Arc::new(Journal::start(
            db,
            recovered.sequence,
            durability,
            options.batch_delay,
        ));
        let (token_count, sequence) = (recovered.tokens.len(), recovered.sequence);
        let engine = Engine::assemble(options, recovered, Some(journal));
        let (store, cdna) = (&engine.store, &engine.cdna);
        // A quarantine whose deadline passed while the server was down ends before any call is
        // answered, so that nobody sees (or keeps) its provisional config.
        let deadline = *cdna.deadlines().borrow();
        // A replica leaves it to the log: the quarantine timer appends the expiry once.
        if !options.replicated && deadline.is_some_and(|deadline| deadline <= cdna.now()) {
            let expire = Command::Cdna(CdnaCommand::ExpireQuarantine { at: cdna.now() });
            // Recovery is local: apply at once (the journal syncs it with the next write or at
            // close), before the log takes any call.
            if let Err(e) = store.apply(expire) {
                tracing::warn!(error = %e, "the missed quarantine expiry was not applied");
            } else {
                info!("a quarantine expired while the server was down; its snapshot is restored");
            }
        }
        // Likewise tokens whose expiry passed while the server was down (a replica leaves
        // them to the log's expiry commands, appended once by the timer).
        if !options.replicated {
            match super::expiry::expire_missed(store, super::write_path::unix_now()) {
                Ok(0) => {}
                Ok(count) => info!(count, "tokens expired while the server was down"),
                Err(e) => tracing::warn!(error = %e, "missed token expiries were not applied"),
            }
        }
        info!(
            tokens = token_count,
            sequence,
            read_ms = read.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "recovered the store from {}",
            dir.display()
        );
        Ok(engine)
    }

    /// A memory-storage replica's state read from a snapshot of its log (a store file in
    /// `dir`, which is only read): it then follows the log from the snapshot's sequence.
    pub fn in_memory_from_snapshot(
        options: &EngineOptions,
        dir: &std::path::Path,
    ) -> Result<Engine, DurableError> {
        let (db, recovered) = recovery::open_cached(dir, SNAPSHOT_READ_CACHE_BYTES)?;
        drop(db);
        let (tokens, sequence) = (recovered.tokens.len(), recovered.sequence);
        let engine = Engine::assemble(options, recovered, None);
        info!(tokens, sequence, "read the log's snapshot into memory");
        Ok(engine)
    }

    /// The components over `recovered` state (trees bulk-loaded), recording later commits
    /// in `journal`, or in memory only without one.
    fn assemble(
        options: &EngineOptions,
        recovered: recovery::Recovered,
        journal: Option<Arc<Journal>>,
    ) -> Engine {
        let tables = TokenTables::with_capacity(recovered.tokens.len());
        let index = Arc::new(SpatialIndex::default());
        std::thread::scope(|scope| {
            scope.spawn(|| tables.insert_new(&recovered.tokens));
            index.trees().replace_all(&recovered.tokens);
        });
        drop(recovered.tokens);
        // The read-back and the bulk builds freed far more than the state keeps.
        super::trim::give_back_freed_memory();
        let grids = Arc::new(Grids::recovered(
            options.max_grid_memberships,
            recovered.highest_grid,
            recovered.grids,
            &tables,
        ));
        let clock = Arc::new(SystemClock);
        let cdna_state = recovered
            .cdna
            .unwrap_or_else(|| CdnaState::fresh(clock.now()));
        let cdna = Arc::new(Cdna::with_state(clock, cdna_state));
        let feed = Arc::new(ChangeFeed::new(options.watch_lag_limit));
        feed.start_at(recovered.sequence);
        let resumed = Resumed {
            tables,
            sequence: recovered.sequence,
            ids: recovered.ids,
            requests: RequestLedger::recovered(recovered.requests),
        };
        let mut components = components(&cdna, &index, &grids, &feed);
        let (store, history) = match journal {
            Some(journal) => {
                components.feed_retention = options.watch_retention;
                let history = History::Stored(Arc::clone(&journal));
                let store = Store::recovered(components, resumed, journal);
                let store = match options.replicated {
                    true => store.checkpoint_only(),
                    false => store,
                };
                (store, history)
            }
            None => {
                let memory = Arc::new(MemoryHistory::new(
                    options.watch_retention,
                    recovered.sequence,
                ));
                let at_feed = components.followers.len() - 1;
                components.followers.insert(at_feed, memory.clone());
                (
                    Store::resumed_in_memory(components, resumed),
                    History::Memory(memory),
                )
            }
        };
        let store = Arc::new(store);
        let checkpoint = LogCheckpoint {
            identity: recovered.log_identity,
            last_hash: recovered.log_last_hash,
        };
        let writes = local_writes(&store);
        Engine {
            history,
            store,
            writes,
            checkpoint,
            index,
            grids,
            cdna,
            feed,
        }
    }

    /// Makes every queued write durable and closes the store file (no-op in memory).
    pub fn close(&self) {
        if let Some(journal) = self.store.journal() {
            journal.close();
        }
    }
}

/// Writes a fresh CDNA state into a store that has none.
fn store_fresh_cdna(db: &redb::Database, state: &CdnaState) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    schema::apply_writes(&txn, &[state.durable_write(0)])?;
    txn.commit()?;
    Ok(())
}
