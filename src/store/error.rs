//! Typed errors of the store and model; `api::error` maps them to gRPC statuses in one place.

use crate::model::Violations;

/// Why a store call failed; each variant is one gRPC status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Input broke a field rule (INVALID_ARGUMENT); paths are from the request root.
    #[error("{0}")]
    Invalid(Violations),
    /// The request as a whole is malformed in a way no single field explains (INVALID_ARGUMENT).
    #[error("{0}")]
    BadRequest(String),
    /// A named token or other resource does not exist (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// The resource to create exists already (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// A cap or id space is used up (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The state does not allow the call now (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change won (ABORTED).
    #[error("{0}")]
    Aborted(String),
    /// The service cannot answer now (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
}

impl From<Violations> for StoreError {
    fn from(violations: Violations) -> Self {
        StoreError::Invalid(violations)
    }
}
