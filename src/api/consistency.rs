//! Consistency metadata (API.md §9): what a client can rely on about the state an answer comes
//! from, and how it asks for more.
//!
//! - Every read of tokens, grids or CDNA begins with `begin_read`: it waits for the call's
//!   `x-neurograph-min-sequence` (bounded by the call's deadline, else 10 s), notes the applied
//!   sequence, and answers with it in `x-neurograph-applied-sequence`, after the store's read
//!   barrier (an answer never shows a write a crash could still take back).
//! - Every write answers with `x-neurograph-commit-sequence`, and runs under the call's
//!   `x-neurograph-request-id` (`call_writes`), so that a retry is answered, not applied again.

use std::time::{Duration, Instant};

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Response, Status};

use super::error::{invalid, REQUEST_ID};
use super::offload::call_timeout;
use crate::model::Violations;
use crate::store::{Store, Writes, Written};

/// Response header of every write: the commit sequence of its command.
pub const COMMIT_SEQUENCE: &str = "x-neurograph-commit-sequence";
/// Response header of every read: every command up to it is in the answer.
pub const APPLIED_SEQUENCE: &str = "x-neurograph-applied-sequence";
/// Request header of a read: wait until this sequence is applied.
pub const MIN_SEQUENCE: &str = "x-neurograph-min-sequence";
/// Longest wait for a min-sequence when the call has no deadline.
pub const MIN_SEQUENCE_WAIT: Duration = Duration::from_secs(10);
/// Longest request id, in bytes.
pub const MAX_REQUEST_ID: usize = 128;

/// A read in progress: the applied sequence its answer includes.
pub struct Read<'a> {
    store: &'a Store,
    applied: u64,
}

/// Starts a read: waits for the call's min-sequence, if it sent one, and notes the applied
/// sequence the answer will include.
pub async fn begin_read<'a>(store: &'a Store, metadata: &MetadataMap) -> Result<Read<'a>, Status> {
    if let Some(wanted) = min_sequence(metadata)? {
        wait_applied(store, wanted, call_timeout(metadata)).await?;
    }
    Ok(Read {
        store,
        applied: store.sequence(),
    })
}

impl Read<'_> {
    /// Answers with `value` once the read barrier passed (UNAVAILABLE after a storage
    /// failure), with the applied sequence.
    pub async fn answer<T>(self, value: T) -> Result<Response<T>, Status> {
        self.store.read_barrier().await?;
        Ok(self.stamp(Response::new(value)))
    }

    /// Adds the applied sequence to a response (streams, which pass the barrier per message).
    pub fn stamp<T>(&self, mut response: Response<T>) -> Response<T> {
        response
            .metadata_mut()
            .insert(APPLIED_SEQUENCE, MetadataValue::from(self.applied));
        response
    }
}

/// The call's min-sequence: `None` without one, INVALID_ARGUMENT when malformed.
fn min_sequence(metadata: &MetadataMap) -> Result<Option<u64>, Status> {
    let Some(value) = metadata.get(MIN_SEQUENCE) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    let parsed = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u64>().ok())
        .flatten();
    parsed.map(Some).ok_or_else(|| {
        invalid(Violations::one(
            MIN_SEQUENCE,
            format!("must be a commit sequence (a decimal u64), got {value:?}"),
        ))
    })
}

/// How long a call with `timeout` may wait before it must answer: a tenth of it (at most
/// 200 ms) early, so that the client hears why rather than its own deadline.
fn answer_within(timeout: Duration) -> Duration {
    timeout - (timeout / 10).min(Duration::from_millis(200))
}

/// Waits until `wanted` is applied: at most `deadline` (then DEADLINE_EXCEEDED), or
/// `MIN_SEQUENCE_WAIT` without one (then UNAVAILABLE).
async fn wait_applied(
    store: &Store,
    wanted: u64,
    deadline: Option<Duration>,
) -> Result<(), Status> {
    let mut applied = store.applied();
    let limit = deadline.map_or(MIN_SEQUENCE_WAIT, answer_within);
    let waited = tokio::time::timeout(limit, applied.wait_for(|s| *s >= wanted)).await;
    match waited {
        Ok(Ok(_)) => Ok(()),
        // The store is gone: the server is shutting down.
        Ok(Err(_)) => Err(Status::unavailable("server is shutting down")),
        Err(_) => {
            let message = format!(
                "{MIN_SEQUENCE} {wanted} is not applied here yet (applied: {}) after {} ms",
                store.sequence(),
                limit.as_millis()
            );
            Err(match deadline {
                Some(_) => Status::deadline_exceeded(message),
                None => Status::unavailable(format!(
                    "{message}; retry, or ask a replica that has applied it"
                )),
            })
        }
    }
}

/// The writes of a call: under its `x-neurograph-request-id`, if it sent one
/// (INVALID_ARGUMENT unless 1 to 128 printable ASCII characters).
pub fn call_writes(writes: &Writes, metadata: &MetadataMap) -> Result<Writes, Status> {
    let deadline = call_timeout(metadata).map(|timeout| Instant::now() + answer_within(timeout));
    let writes = writes.with_deadline(deadline);
    let Some(value) = metadata.get(REQUEST_ID) else {
        return Ok(writes);
    };
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x20..=0x7E).contains(b));
    if bytes.is_empty() || bytes.len() > MAX_REQUEST_ID || !printable {
        return Err(invalid(Violations::one(
            REQUEST_ID,
            format!(
                "must be 1 to {MAX_REQUEST_ID} printable ASCII characters, got {} bytes",
                bytes.len()
            ),
        )));
    }
    Ok(writes.with_request_id(value.to_str().ok()))
}

/// Answers a write with what its command produced, converted to the response message, and
/// its commit sequence.
pub fn answer_write<T, U>(written: Written<T>, convert: impl FnOnce(T) -> U) -> Response<U> {
    with_commit_sequence(Response::new(convert(written.value)), written.sequence)
}

/// Adds a write's commit sequence to its response.
pub fn with_commit_sequence<T>(mut response: Response<T>, sequence: u64) -> Response<T> {
    response
        .metadata_mut()
        .insert(COMMIT_SEQUENCE, MetadataValue::from(sequence));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(key: &'static str, value: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(key, value.parse().expect("ascii"));
        metadata
    }

    #[test]
    fn min_sequence_must_be_a_decimal_u64() {
        assert_eq!(min_sequence(&MetadataMap::new()).ok(), Some(None));
        assert_eq!(min_sequence(&with(MIN_SEQUENCE, "42")).ok(), Some(Some(42)));
        for bad in ["", "-1", "+3", "0x10", "1.5", "18446744073709551616", "abc"] {
            let status = min_sequence(&with(MIN_SEQUENCE, bad)).expect_err(bad);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(status.message().starts_with(MIN_SEQUENCE), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_min_sequence_wait_is_bounded() {
        let store = Store::default();
        let unbounded = wait_applied(&store, 1, None)
            .await
            .expect_err("never applied");
        assert_eq!(unbounded.code(), tonic::Code::Unavailable);
        let bounded = wait_applied(&store, 1, Some(Duration::from_millis(20)))
            .await
            .expect_err("never applied");
        assert_eq!(bounded.code(), tonic::Code::DeadlineExceeded);
        wait_applied(&store, 0, None)
            .await
            .expect("0 is always applied");
    }
}
