//! Heavy calls hand their work to `HeavyWork`, bounded by the call's own deadline (the
//! `grpc-timeout` a client sends): a call that cannot get a slot in time ends
//! DEADLINE_EXCEEDED instead of running after its client has given up.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::heavy::{deadline_in, HeavyError, HeavyWork};
use crate::store::{StoreError, Written};

/// The call's `grpc-timeout`, if it sent a well-formed one.
pub fn call_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// The call's deadline, from its `grpc-timeout`, counted from now.
pub fn call_deadline(metadata: &MetadataMap) -> Option<Instant> {
    deadline_in(call_timeout(metadata))
}

/// Runs `work` as heavy work within the deadline `metadata` carries.
pub async fn offload<R: Send + 'static>(
    heavy: &HeavyWork,
    metadata: &MetadataMap,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    offload_until(heavy, call_deadline(metadata), work).await
}

/// Runs `work` as heavy work, waiting for a slot at most until `deadline`.
pub async fn offload_until<R: Send + 'static>(
    heavy: &HeavyWork,
    deadline: Option<Instant>,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Status> {
    heavy.run(deadline, work).await.map_err(|e| match e {
        HeavyError::Deadline { .. } => Status::deadline_exceeded(e.to_string()),
        HeavyError::Failed(_) => Status::internal(e.to_string()),
    })
}

/// Runs `prepare` as heavy work: it validates a big request and appends its write, if any
/// (a local log applies it right there, off the protocol threads). The slot is released before
/// the write is awaited, so waiting for the fsync holds none. `prepare` also hands back `K`
/// (what the caller keeps besides).
pub async fn write_heavy<T, K, W>(
    heavy: &HeavyWork,
    deadline: Option<Instant>,
    prepare: impl FnOnce() -> Result<(Option<W>, K), Status> + Send + 'static,
) -> Result<(Option<Written<T>>, K), Status>
where
    T: Send + 'static,
    K: Send + 'static,
    W: Future<Output = Result<Written<T>, StoreError>> + Send + 'static,
{
    let (pending, kept) = offload_until(heavy, deadline, prepare).await??;
    let written = match pending {
        Some(pending) => Some(pending.await?),
        None => None,
    };
    Ok((written, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", value.parse().expect("ascii"));
        call_timeout(&metadata)
    }

    #[test]
    fn reads_every_grpc_timeout_unit() {
        assert_eq!(timeout_of("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(timeout_of("3M"), Some(Duration::from_secs(180)));
        assert_eq!(timeout_of("10S"), Some(Duration::from_secs(10)));
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            timeout_of("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(timeout_of("123456789S"), None);
        assert_eq!(timeout_of("S"), None);
        assert_eq!(timeout_of("1x"), None);
        assert_eq!(call_timeout(&MetadataMap::new()), None);
    }
}
