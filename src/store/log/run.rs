//! A run: consecutive log entries a replica applies as one (`Store::apply_run_at`), with one
//! writer lock, one journal record and one checkpoint. Here the messages the consumer already
//! holds are gathered without waiting for more, checked for order and decoded; applying them
//! and answering their waiters is `jetstream`'s job.
//!
//! Why runs: catching up applied one entry at a time cost ≈ 18 µs of the apply task's CPU per
//! entry, much of it per-entry overhead rather than the change itself: a `block_in_place`
//! (which hands the worker to another thread: context switches), a journal record and a
//! checkpoint write, a SHA-256 of the entry and a wake-up of the applied-sequence watchers.
//! A run pays those once. Only the last entry's hash is kept: the checkpoint stores the hash of
//! the last applied entry, and that is all the fork check on reconnect compares.

use std::pin::Pin;
use std::task::Poll;

use sha2::Digest;
use tokio_stream::Stream;

use super::LogEntry;

/// Most messages in one run: bounds how long one apply holds the writer lock.
pub const MAX_RUN_MESSAGES: usize = 1024;
/// Most payload bytes in one run (import entries are large).
pub const MAX_RUN_BYTES: usize = 8 << 20;

/// How gathering the ready messages ended, besides the messages gathered.
pub enum Drained<E> {
    /// The consumer holds nothing more right now, or the run is full.
    Idle,
    /// The consumer failed after the gathered messages (follow it again).
    Failed(E),
    /// The consumer ended after the gathered messages.
    Ended,
}

/// Moves the messages `stream` can hand over without waiting into `run` (up to the run's
/// limits, counting `size` bytes each): a lone live write is applied at once, a backlog in
/// runs.
pub async fn drain_ready<S, M, E>(
    stream: &mut S,
    run: &mut Vec<M>,
    size: impl Fn(&M) -> usize,
) -> Drained<E>
where
    S: Stream<Item = Result<M, E>> + Unpin,
{
    let mut bytes: usize = run.iter().map(&size).sum();
    std::future::poll_fn(|cx| {
        while run.len() < MAX_RUN_MESSAGES && bytes < MAX_RUN_BYTES {
            match Pin::new(&mut *stream).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    bytes += size(&message);
                    run.push(message);
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Drained::Failed(e)),
                Poll::Ready(None) => return Poll::Ready(Drained::Ended),
                Poll::Pending => break,
            }
        }
        Poll::Ready(Drained::Idle)
    })
    .await
}

/// The entries of a run that are ready to apply, in sequence order from `first`.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    /// Sequence of the first entry (the one after the applied sequence).
    pub first: u64,
    /// The entries, one per sequence from `first` on.
    pub entries: Vec<LogEntry>,
    /// Index in the run of the message each entry came from (stale redeliveries skipped).
    pub positions: Vec<usize>,
    /// SHA-256 of the last entry's bytes (`None` when there is no entry).
    pub last_hash: Option<Vec<u8>>,
}

/// Checks and decodes a run of `(stream sequence, payload)` after the applied sequence
/// `applied`: messages at or below it (redelivered after the consumer was recreated) are
/// skipped; the entries from `applied + 1` on must be consecutive and decodable. What comes
/// before a gap or an undecodable entry is returned for applying, and the reason the replica
/// must stop after it.
pub fn decode_run<'a>(
    applied: u64,
    run: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> (Decoded, Option<String>) {
    let first = applied + 1;
    let mut decoded = Decoded {
        first,
        entries: Vec::new(),
        positions: Vec::new(),
        last_hash: None,
    };
    let mut last_payload: Option<&[u8]> = None;
    let mut halt = None;
    for (position, (sequence, payload)) in run.into_iter().enumerate() {
        let expected = first + decoded.entries.len() as u64;
        if sequence < expected {
            continue;
        }
        if sequence > expected {
            halt = Some(format!(
                "the log no longer holds sequence {expected} (it delivered {sequence}): this replica fell behind the stream's first entry; restart it to restore the newest snapshot"
            ));
            break;
        }
        match LogEntry::decode(payload) {
            Ok(entry) => {
                decoded.entries.push(entry);
                decoded.positions.push(position);
                last_payload = Some(payload);
            }
            Err(e) => {
                halt = Some(format!("entry {sequence} cannot be applied: {e}"));
                break;
            }
        }
    }
    decoded.last_hash = last_payload.map(|payload| sha2::Sha256::digest(payload).to_vec());
    (decoded, halt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::command::Command;

    fn payload(n: u64) -> Vec<u8> {
        LogEntry {
            at_ms: n,
            request_id: None,
            command: Command::ClearTokens,
        }
        .encode()
    }

    #[test]
    fn a_run_decodes_in_order_and_hashes_only_its_last_entry() {
        let payloads: Vec<_> = (1..=3).map(payload).collect();
        let run = (5..).zip(payloads.iter().map(Vec::as_slice));
        let (decoded, halt) = decode_run(4, run);
        assert_eq!(halt, None);
        assert_eq!(decoded.first, 5);
        let stamps: Vec<_> = decoded.entries.iter().map(|e| e.at_ms).collect();
        assert_eq!(stamps, [1, 2, 3]);
        assert_eq!(decoded.positions, [0, 1, 2]);
        assert_eq!(
            decoded.last_hash,
            Some(sha2::Sha256::digest(&payloads[2]).to_vec())
        );
    }

    #[test]
    fn redelivered_entries_are_skipped_not_applied_twice() {
        let payloads: Vec<_> = (1..=4).map(payload).collect();
        let run = (3..).zip(payloads.iter().map(Vec::as_slice));
        let (decoded, halt) = decode_run(4, run);
        assert_eq!(halt, None);
        assert_eq!(decoded.first, 5);
        assert_eq!(decoded.positions, [2, 3]);
    }

    #[test]
    fn a_gap_stops_the_replica_after_what_came_before_it() {
        let payloads: Vec<_> = (1..=3).map(payload).collect();
        let run = [5, 6, 8]
            .into_iter()
            .zip(payloads.iter().map(Vec::as_slice));
        let (decoded, halt) = decode_run(4, run);
        assert_eq!(decoded.entries.len(), 2);
        assert_eq!(
            decoded.last_hash,
            Some(sha2::Sha256::digest(&payloads[1]).to_vec())
        );
        let why = halt.expect("a gap halts");
        assert!(why.contains("no longer holds sequence 7"), "{why}");
    }

    #[test]
    fn an_undecodable_entry_stops_the_replica_and_is_not_skipped() {
        let good = payload(1);
        let mut unknown = payload(2);
        // Another entry format: this build must not guess.
        unknown[0] = 1;
        let after = payload(3);
        let run = [(1, good.as_slice()), (2, &unknown), (3, &after)];
        let (decoded, halt) = decode_run(0, run);
        assert_eq!(decoded.entries.len(), 1);
        assert!(halt.expect("halts").contains("entry 2 cannot be applied"));
    }

    #[test]
    fn a_run_that_fails_at_once_has_nothing_to_apply() {
        let bad = [0xffu8; 3];
        let (decoded, halt) = decode_run(0, [(1, bad.as_slice())]);
        assert!(decoded.entries.is_empty());
        assert_eq!(decoded.last_hash, None);
        assert!(halt.is_some());
    }

    #[tokio::test]
    async fn draining_takes_what_is_ready_without_waiting_for_more() {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Result<u32, ()>>();
        let mut stream = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        for n in 0..3 {
            sender.send(Ok(n)).expect("open");
        }
        let mut run = Vec::new();
        let drained = drain_ready(&mut stream, &mut run, |_| 1).await;
        assert!(matches!(drained, Drained::Idle));
        assert_eq!(run, [0, 1, 2]);
        sender.send(Err(())).expect("open");
        let mut run = Vec::new();
        assert!(matches!(
            drain_ready(&mut stream, &mut run, |_| 1).await,
            Drained::Failed(())
        ));
        drop(sender);
        assert!(matches!(
            drain_ready(&mut stream, &mut run, |_| 1).await,
            Drained::Ended
        ));
    }
}
