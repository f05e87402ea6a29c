//! What a client can rely on about the state an answer comes from. Every read of tokens, grids
//! or CDNA answers through `answer_read`, which passes the store's read barrier first: an answer
//! never shows a write that a crash could still take back. Every write answers through
//! `answer_write` with what its command produced.

use tonic::{Response, Status};

use crate::store::{Store, Written};

/// Answers a read with `value` once the store's read barrier passed (UNAVAILABLE after a
/// storage failure).
pub async fn answer_read<T>(store: &Store, value: T) -> Result<Response<T>, Status> {
    store.read_barrier().await?;
    Ok(Response::new(value))
}

/// Answers a write with what its command produced, converted to the response message.
pub fn answer_write<T, U>(written: Written<T>, convert: impl FnOnce(T) -> U) -> Response<U> {
    Response::new(convert(written.value))
}
