//! WatchTokens (API.md §2, §10): what a watcher asks for (filter, region, from_sequence), the
//! replay of the retained records after its sequence, and the hand-over to the live feed at
//! an exact sequence, so that it sees every event once, in order, with no gap.
//!
//! The hand-over: catch up from the retained records while the feed moves on, then register
//! with the live feed, which answers the last sequence it had followed when the subscription
//! began (every later event reaches the subscription); replay the records up to that
//! sequence, then forward live events. Replayed and live records pass the same
//! `Interest::view`, so a replayed event equals the live one.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::convert::token_filter;
use super::error::to_status;
use super::grid::PointQuery;
use super::pb;
use super::token::shutting_down;
use super::ShutdownSignal;
use crate::model::Violations;
use crate::store::feed::history::{after_sequence, History, RecordKey};
use crate::store::feed::interest::{Interest, Region};
use crate::store::{ChangeFeed, Store, StoreError, Subscription, TokenEvent};

/// Records read from the retained feed per step (one read transaction each).
const REPLAY_STEP: usize = 2048;
/// A catch-up round that replays fewer records than this ends the catching up: the rest
/// fits in the live subscription's queue while it is replayed.
const CLOSE_ENOUGH: usize = 4096;

/// What one WatchTokens call asked for.
pub struct WatchRequest {
    /// The events it wants.
    pub interest: Interest,
    /// Replay retained events after this sequence first.
    pub from_sequence: Option<u64>,
}

impl WatchRequest {
    /// The validated request, or every violation (`filter.…`, `region.…`).
    pub fn parse(request: &pb::WatchTokensRequest) -> Result<WatchRequest, Violations> {
        let mut violations = Violations::default();
        let filter = violations.take(token_filter(request.filter.as_ref()));
        let region = match &request.region {
            None => Some(None),
            Some(region) => violations
                .take(
                    PointQuery::parse(region.space, region.center.as_ref(), region.radius)
                        .map_err(|v| v.prefixed("region.")),
                )
                .map(|q| {
                    Some(Region {
                        space: q.space,
                        centre: q.centre,
                        radius: q.radius,
                    })
                }),
        };
        match (filter, region) {
            (Some(filter), Some(region)) if violations.is_empty() => Ok(WatchRequest {
                interest: Interest { filter, region },
                from_sequence: request.from_sequence,
            }),
            _ => Err(violations),
        }
    }
}

/// What a watch needs from the engine.
#[derive(Clone)]
pub struct WatchSources {
    /// The live feed.
    pub feed: Arc<ChangeFeed>,
    /// The retained records.
    pub history: History,
    /// The store, whose durability events wait for.
    pub store: Arc<Store>,
}

/// FAILED_PRECONDITION when `from_sequence` is older than the retained records; checked
/// before the call is answered, so that the error is the call's own status.
pub fn check_resumable(history: &History, from_sequence: Option<u64>) -> Result<(), Status> {
    let Some(requested) = from_sequence else {
        return Ok(());
    };
    let oldest = history.oldest_resumable().map_err(to_status)?;
    if requested < oldest {
        return Err(to_status(StoreError::FeedTrimmed { requested, oldest }));
    }
    Ok(())
}

/// Where a watch starts.
enum Start {
    /// Registered with the live feed when the call came (no `from_sequence`).
    Live(Subscription),
    /// Replays the retained records after this sequence first.
    After(u64),
}

/// Starts a watch: without `from_sequence` it registers with the live feed at once, before
/// the call is answered, so that every commit after the call is seen; with one, the replay
/// task registers when it has caught up.
pub fn start_watch(
    sources: WatchSources,
    request: WatchRequest,
    shutdown: ShutdownSignal,
    sender: mpsc::Sender<Result<pb::TokenEvent, Status>>,
) {
    let start = match request.from_sequence {
        None => Start::Live(sources.feed.subscribe(request.interest).0),
        Some(from) => Start::After(from),
    };
    tokio::spawn(run_watch(
        sources,
        request.interest,
        start,
        shutdown,
        sender,
    ));
}

/// Sends the watcher its events until it leaves, falls too far behind (ABORTED), outruns the
/// retention while replaying (FAILED_PRECONDITION) or the server shuts down (UNAVAILABLE).
async fn run_watch(
    sources: WatchSources,
    interest: Interest,
    start: Start,
    mut shutdown: ShutdownSignal,
    sender: mpsc::Sender<Result<pb::TokenEvent, Status>>,
) {
    let ended = tokio::select! {
        Err(ended) = watch(&sources, interest, start, &sender) => ended,
        () = shutdown.wait() => Ended::Error(shutting_down()),
    };
    if let Ended::Error(error) = ended {
        let _ = sender.send(Err(to_status(error))).await;
    }
}

/// The watch itself; it only ever ends with why.
async fn watch(
    sources: &WatchSources,
    interest: Interest,
    start: Start,
    sender: &mpsc::Sender<Result<pb::TokenEvent, Status>>,
) -> Result<(), Ended> {
    let mut out = Out {
        sender,
        store: &sources.store,
        durable: 0,
    };
    let (mut subscription, skip_through) = match start {
        Start::Live(subscription) => (subscription, 0),
        Start::After(from) => {
            let mut cursor = after_sequence(from);
            // Catch up while the feed moves on, round by round.
            while replay(
                sources,
                &interest,
                &mut cursor,
                sources.feed.last_sequence(),
                &mut out,
            )
            .await?
                >= CLOSE_ENOUGH
            {}
            let (subscription, live_from) = sources.feed.subscribe(interest);
            replay(sources, &interest, &mut cursor, live_from, &mut out).await?;
            // A sequence beyond what was committed: its events are not the watcher's.
            (subscription, from)
        }
    };
    loop {
        let event = tokio::select! {
            next = subscription.next() => next.map_err(Ended::Error)?,
            () = sender.closed() => return Err(Ended::Client),
        };
        if event.sequence > skip_through {
            out.send(&event).await?;
        }
    }
}

/// Why sending stopped.
enum Ended {
    /// The client is gone.
    Client,
    /// An error to tell it.
    Error(StoreError),
}

/// The watcher's end of the stream: sends each event once its command is durable.
struct Out<'a> {
    sender: &'a mpsc::Sender<Result<pb::TokenEvent, Status>>,
    store: &'a Store,
    /// Sequence known durable.
    durable: u64,
}

impl Out<'_> {
    async fn send(&mut self, event: &TokenEvent) -> Result<(), Ended> {
        if event.sequence > self.durable {
            self.store
                .wait_durable(event.sequence)
                .await
                .map_err(Ended::Error)?;
            self.durable = event.sequence;
        }
        self.sender
            .send(Ok(pb::TokenEvent::from(event)))
            .await
            .map_err(|_| Ended::Client)
    }
}

/// Replays the retained records after `cursor` up to sequence `up_to` that the watcher's
/// interest keeps, moving the cursor: how many records it read.
async fn replay(
    sources: &WatchSources,
    interest: &Interest,
    cursor: &mut RecordKey,
    up_to: u64,
    out: &mut Out<'_>,
) -> Result<usize, Ended> {
    if up_to <= cursor.0 {
        return Ok(0);
    }
    sources
        .history
        .readable(up_to)
        .await
        .map_err(Ended::Error)?;
    let mut replayed = 0;
    loop {
        let history = sources.history.clone();
        let after = *cursor;
        let step =
            tokio::task::spawn_blocking(move || history.read(after, up_to, REPLAY_STEP)).await;
        let records = match step {
            Ok(Ok(records)) => records,
            Ok(Err(error)) => return Err(Ended::Error(error)),
            Err(join) => {
                return Err(Ended::Error(StoreError::Unavailable(format!(
                    "the replay failed: {join}"
                ))))
            }
        };
        let Some((last, _)) = records.last() else {
            break;
        };
        *cursor = *last;
        replayed += records.len();
        let full = records.len() == REPLAY_STEP;
        for (_, record) in &records {
            if let Some(event) = interest.view(record) {
                out.send(&event).await?;
            }
        }
        if !full {
            break;
        }
    }
    Ok(replayed)
}
