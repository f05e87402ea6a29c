//! The one mapping from store and model errors to `tonic::Status`, with field violations sent
//! as `google.rpc.BadRequest` details.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::AuthError;
use crate::model::{FieldViolation, Violations};
use crate::store::{StoreError, TokenAt};

/// Converts a store error into the status a client sees: the code for its condition, and a
/// message that starts with the request path it concerns.
pub fn to_status(error: StoreError) -> Status {
    let message = error.to_string();
    match error {
        StoreError::Invalid(violations) => invalid(violations),
        StoreError::ConfigRules(violations) => invalid(violations.prefixed("config.")),
        StoreError::WeightOutsideLimits(outside) => invalid(Violations(
            outside
                .into_iter()
                .map(|(at, rule)| FieldViolation::new(format!("{}weight", token_path(at)), rule))
                .collect(),
        )),
        StoreError::TokenExists {
            at,
            earlier_in_request,
            ..
        } => {
            let within = if earlier_in_request {
                " earlier in this batch"
            } else {
                ""
            };
            Status::already_exists(format!("{}id: {message}{within}", token_path(at)))
        }
        StoreError::IdsUsedUp { at, .. } => {
            Status::resource_exhausted(format!("{}id: {message}", token_path(at)))
        }
        StoreError::TokenNotFound(_) | StoreError::NotAPreset(_) => Status::not_found(message),
        StoreError::MemberNotFound(_) | StoreError::NotAMember { .. } => {
            Status::not_found(format!("token_id: {message}"))
        }
        StoreError::GridNotFound(_) => Status::not_found(format!("grid_id: {message}")),
        StoreError::DefaultGridFixed(_) => {
            Status::failed_precondition(format!("grid_id: {message}"))
        }
        StoreError::UndefinedInSpace { .. } => {
            Status::failed_precondition(format!("token_id: {message}"))
        }
        StoreError::UserGridsFull(_)
        | StoreError::LogFull(_)
        | StoreError::GridIdsUsedUp
        | StoreError::MembershipsCapped(_) => Status::resource_exhausted(message),
        StoreError::QuarantineRunning { .. }
        | StoreError::NoQuarantine
        | StoreError::QuarantineNotDue => Status::failed_precondition(message),
        StoreError::StaleRevision { .. } | StoreError::FeedLagged(_) => Status::aborted(message),
        StoreError::FeedClosed | StoreError::Unavailable(_) => Status::unavailable(message),
        StoreError::FeedTrimmed { .. } => Status::failed_precondition(message),
        StoreError::RequestIdReused { .. } => invalid(Violations::one(REQUEST_ID, message)),
    }
}

/// The request metadata key of idempotent writes (API.md §9).
pub const REQUEST_ID: &str = "x-neurograph-request-id";

/// The status of a write to the token the request names in `field` (`id`, `token.id`): a
/// token that no longer exists is named by that field.
pub fn target_status(error: StoreError, field: &str) -> Status {
    match error {
        StoreError::TokenNotFound(_) => Status::not_found(format!("{field}: {error}")),
        other => to_status(other),
    }
}

/// The request path prefix of a token (`token.` or `tokens[i].`).
fn token_path(at: TokenAt) -> String {
    match at {
        TokenAt::Single => "token.".to_string(),
        TokenAt::Batch(index) => format!("tokens[{index}]."),
    }
}

/// NOT_FOUND for something the request names that does not exist.
pub fn not_found(message: impl Into<String>) -> Status {
    Status::not_found(message)
}

/// FAILED_PRECONDITION: the server's state or setup does not allow the call.
pub fn failed_precondition(message: impl Into<String>) -> Status {
    Status::failed_precondition(message)
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
    use crate::model::{IdPair, TokenId};

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
    fn each_condition_has_its_code_and_request_path() {
        let id = TokenId::new(5).expect("id");
        let pair = IdPair::new(2, 3).expect("pair");
        let cases = [
            (
                StoreError::TokenExists {
                    at: TokenAt::Batch(2),
                    id,
                    earlier_in_request: true,
                },
                Code::AlreadyExists,
                "tokens[2].id: token 5 already exists earlier in this batch",
            ),
            (
                StoreError::TokenExists {
                    at: TokenAt::Single,
                    id,
                    earlier_in_request: false,
                },
                Code::AlreadyExists,
                "token.id: token 5 already exists",
            ),
            (
                StoreError::IdsUsedUp {
                    at: TokenAt::Single,
                    pair,
                },
                Code::ResourceExhausted,
                "token.id: local ids of domain 2 entity_type 3 are used up (16777215 is the highest)",
            ),
            (
                StoreError::GridNotFound(4),
                Code::NotFound,
                "grid_id: grid 4 does not exist",
            ),
            (
                StoreError::DefaultGridFixed("be deleted"),
                Code::FailedPrecondition,
                "grid_id: grid 0 is the default grid; it holds every token and cannot be deleted",
            ),
            (
                StoreError::MemberNotFound(id),
                Code::NotFound,
                "token_id: token 5 does not exist",
            ),
            (
                StoreError::StaleRevision {
                    expected: 1,
                    current: 2,
                },
                Code::Aborted,
                "expected_revision 1 is stale: the config is at revision 2; read it again and retry",
            ),
            (
                StoreError::NoQuarantine,
                Code::FailedPrecondition,
                "no quarantine is active; start one with StartQuarantine",
            ),
            (
                StoreError::FeedLagged(10),
                Code::Aborted,
                "subscriber lagged more than 10 events behind the commits (--watch-lag-limit); read faster, or call WatchTokens again with from_sequence set to the last sequence received",
            ),
            (
                StoreError::FeedTrimmed {
                    requested: 3,
                    oldest: 900,
                },
                Code::FailedPrecondition,
                "from_sequence 3 is older than the retained events: the oldest sequence to resume from is 900 (--watch-retention)",
            ),
            (
                StoreError::Unavailable("x".into()),
                Code::Unavailable,
                "x",
            ),
            (
                StoreError::LogFull("full".into()),
                Code::ResourceExhausted,
                "full",
            ),
        ];
        for (error, code, message) in cases {
            let status = to_status(error);
            assert_eq!((status.code(), status.message()), (code, message));
        }
    }

    #[test]
    fn weight_limits_name_every_token_and_config_rules_the_config() {
        let status = to_status(StoreError::WeightOutsideLimits(vec![
            (TokenAt::Batch(1), "too heavy".into()),
            (TokenAt::Batch(3), "too light".into()),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().expect("details");
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["tokens[1].weight", "tokens[3].weight"]);
        let config = to_status(StoreError::ConfigRules(Violations::one(
            "scales[2]",
            "too big",
        )));
        assert_eq!(config.message(), "config.scales[2]: too big");
    }

    #[test]
    fn a_vanished_target_is_named_by_its_field() {
        let id = TokenId::new(9).expect("id");
        let status = target_status(StoreError::TokenNotFound(id), "token.id");
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "token.id: token 9 does not exist");
    }
}
