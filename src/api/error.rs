//! The one mapping from store and model errors to `tonic::Status`, with field violations sent
//! as `google.rpc.BadRequest` details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::model::Violations;
use crate::store::StoreError;

/// Converts a store error into the status a client sees.
pub fn to_status(error: StoreError) -> Status {
    let message = error.to_string();
    match error {
        StoreError::Invalid(violations) => invalid(violations),
        StoreError::BadRequest(_) => Status::invalid_argument(message),
        StoreError::NotFound(_) => Status::not_found(message),
        StoreError::AlreadyExists(_) => Status::already_exists(message),
        StoreError::ResourceExhausted(_) => Status::resource_exhausted(message),
        StoreError::FailedPrecondition(_) => Status::failed_precondition(message),
        StoreError::Aborted(_) => Status::aborted(message),
        StoreError::Unavailable(_) => Status::unavailable(message),
    }
}

/// The answer to a call the access layer refused: UNAUTHENTICATED for a missing or wrong
/// credential, PERMISSION_DENIED for a role too low.
pub fn auth_status(refusal: &AuthError) -> Status {
    if refusal.is_unauthenticated() {
        Status::unauthenticated(refusal.to_string())
    } else {
        Status::permission_denied(refusal.to_string())
    }
}

/// INVALID_ARGUMENT naming every violated field, with one BadRequest violation each.
pub fn invalid(violations: Violations) -> Status {
    let mut details = ErrorDetails::new();
    for violation in &violations.0 {
        details.add_bad_request_violation(&violation.field, &violation.description);
    }
    Status::with_error_details(Code::InvalidArgument, violations.to_string(), details)
}

/// The status a client-streaming call ends with when reading its request stream fails.
/// tonic reports an oversized message as OUT_OF_RANGE, which the service never means: it
/// becomes RESOURCE_EXHAUSTED naming the limit. Any other failure (a cancel, a broken
/// connection) passes through.
pub fn request_stream_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange {
        Status::resource_exhausted(format!(
            "request message exceeds --max-message-bytes: {}",
            status.message()
        ))
    } else {
        status
    }
}

impl From<Violations> for Status {
    fn from(violations: Violations) -> Self {
        invalid(violations)
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        to_status(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FieldViolation;

    #[test]
    fn violations_become_bad_request_details() {
        let violations = Violations(vec![FieldViolation::new(
            "token.weight",
            "2 is outside [0, 1]",
        )]);
        let status = to_status(StoreError::Invalid(violations));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "token.weight: 2 is outside [0, 1]");
        let bad = status.get_details_bad_request().expect("details");
        assert_eq!(bad.field_violations[0].field, "token.weight");
    }

    #[test]
    fn an_oversized_stream_message_is_resource_exhausted() {
        let status = request_stream_status(Status::out_of_range("decoded message too large"));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("--max-message-bytes"));
        let cancelled = request_stream_status(Status::cancelled("gone"));
        assert_eq!(cancelled.code(), Code::Cancelled);
    }

    #[test]
    fn refusals_are_unauthenticated_unless_the_role_is_too_low() {
        assert_eq!(
            auth_status(&AuthError::Missing).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            auth_status(&AuthError::Missing).message(),
            "missing credentials"
        );
        assert_eq!(
            auth_status(&AuthError::ProtectedMode).code(),
            Code::Unauthenticated
        );
        let low = AuthError::RoleTooLow {
            method: "neurograph.v1.System/CreateBackup".into(),
            needed: crate::auth::Role::Admin,
            name: "ci".into(),
            has: crate::auth::Role::Writer,
        };
        assert_eq!(auth_status(&low).code(), Code::PermissionDenied);
    }

    #[test]
    fn each_variant_has_its_code() {
        let cases = [
            (StoreError::NotFound("x".into()), Code::NotFound),
            (StoreError::AlreadyExists("x".into()), Code::AlreadyExists),
            (
                StoreError::ResourceExhausted("x".into()),
                Code::ResourceExhausted,
            ),
            (
                StoreError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (StoreError::Aborted("x".into()), Code::Aborted),
            (StoreError::Unavailable("x".into()), Code::Unavailable),
            (StoreError::BadRequest("x".into()), Code::InvalidArgument),
        ];
        for (error, code) in cases {
            assert_eq!(to_status(error).code(), code);
        }
    }
}
