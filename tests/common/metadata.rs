//! The consistency metadata of API.md §9 as tests and benches send and read it: the keys,
//! spelled as the contract spells them (not taken from the server's code, so that a
//! misspelling there fails), a request with one metadata entry, and the sequence an answer
//! carries.

use tonic::metadata::MetadataMap;
use tonic::Request;

/// Response metadata of every write.
pub const COMMIT: &str = "x-neurograph-commit-sequence";
/// Response metadata of every read.
pub const APPLIED: &str = "x-neurograph-applied-sequence";
/// Request metadata of a read that waits for a sequence.
pub const MIN: &str = "x-neurograph-min-sequence";
/// Request metadata of an idempotent write.
pub const REQUEST_ID: &str = "x-neurograph-request-id";

/// The sequence an answer carries under `key`; panics when it is missing or not a number.
pub fn sequence(metadata: &MetadataMap, key: &str) -> u64 {
    metadata
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing in {metadata:?}"))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a decimal sequence")
}

/// `request` with request metadata `key: value` added.
pub fn with_metadata<T>(mut request: Request<T>, key: &'static str, value: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert(key, value.parse().expect("ascii"));
    request
}
