//! ImportTokens bookkeeping: numbers the tokens of each request message across the whole
//! stream, splits them into field-valid drafts (for one `Command::ImportTokens`) and field
//! violations, and adds up what every message produced into the one response. The state
//! checks (ids, CDNA weight limits) happen in the write path (`store::import`).

use super::convert::token_input;
use super::pb;
use crate::model::token::ExpiryInput;
use crate::model::{FieldViolation, Violations};
use crate::store::import::ImportPlan;
use crate::store::ImportDraft;

/// Most errors one ImportTokens response lists; `failed` counts every skipped token.
pub const MAX_IMPORT_ERRORS: usize = 1000;

/// The field violations of one message's invalid tokens, with their stream-wide indexes.
#[derive(Debug, Default)]
pub struct FieldRejections(Vec<(u64, Violations)>);

/// What an import stream has produced so far.
#[derive(Debug, Default)]
pub struct ImportReport {
    /// Stream-wide index of the next token to arrive.
    next_index: u64,
    created: u64,
    failed: u64,
    errors: Vec<pb::ImportError>,
}

impl ImportReport {
    /// Numbers and validates the tokens of the next message: the valid drafts, to be
    /// committed as one command, and the violations of the others.
    /// Tokens without their own expiry expire at `ttl`.
    pub fn validate(
        &mut self,
        tokens: &[pb::Token],
        ttl: Option<ExpiryInput>,
    ) -> (Vec<ImportDraft>, FieldRejections) {
        let mut drafts = Vec::with_capacity(tokens.len());
        let mut rejected = FieldRejections::default();
        for token in tokens {
            let index = self.next_index;
            self.next_index += 1;
            match token_input(token, ttl).to_draft() {
                Ok(draft) => drafts.push(ImportDraft { index, draft }),
                Err(violations) => rejected.0.push((index, violations)),
            }
        }
        (drafts, rejected)
    }

    /// Tokens created so far.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// Records the outcome of one message: its field-invalid tokens and what its committed
    /// command created and skipped (no command when nothing was valid). Errors are listed in
    /// stream order.
    pub fn record(&mut self, rejected: FieldRejections, plan: Option<&ImportPlan>) {
        self.failed += rejected.0.len() as u64;
        let mut errors: Vec<(u64, &FieldViolation)> = rejected
            .0
            .iter()
            .flat_map(|(index, violations)| violations.0.iter().map(move |v| (*index, v)))
            .collect();
        if let Some(plan) = plan {
            self.created += plan.created.len() as u64;
            self.failed += plan.skipped.len() as u64;
            errors.extend(plan.skipped.iter().map(|(index, v)| (*index, v)));
        }
        errors.sort_by_key(|(index, _)| *index);
        let room = MAX_IMPORT_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(
            errors
                .into_iter()
                .take(room)
                .map(|(index, v)| pb::ImportError {
                    index,
                    field: v.field.clone(),
                    reason: v.description.clone(),
                }),
        );
    }
}

impl From<ImportReport> for pb::ImportTokensResponse {
    fn from(report: ImportReport) -> Self {
        pb::ImportTokensResponse {
            created: report.created,
            failed: report.failed,
            errors: report.errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Token, TokenData, TokenId};

    fn token(weight: f32) -> pb::Token {
        pb::Token {
            weight,
            ..pb::Token::default()
        }
    }

    fn created(index: u64, raw: u32) -> (u64, Token) {
        let token = Token {
            id: TokenId::new(raw).expect("valid"),
            data: TokenData::empty(1),
        };
        (index, token)
    }

    #[test]
    fn indexes_run_across_messages() {
        let mut report = ImportReport::default();
        let (first, _) = report.validate(&[token(0.1), token(0.2)], None);
        let (second, rejected) = report.validate(&[token(2.0), token(0.3)], None);
        assert_eq!(first.iter().map(|d| d.index).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(second.iter().map(|d| d.index).collect::<Vec<_>>(), [3]);
        assert_eq!(rejected.0[0].0, 2);
        assert_eq!(rejected.0[0].1 .0[0].field, "weight");
    }

    #[test]
    fn field_and_state_errors_merge_in_stream_order() {
        let mut report = ImportReport::default();
        let nan_point = pb::Token {
            l1_physical: Some(pb::Point3 {
                x: f32::NAN,
                y: 0.0,
                z: 0.0,
            }),
            ..token(0.5)
        };
        let (_, rejected) = report.validate(&[token(0.5), token(0.5), nan_point], None);
        let plan = ImportPlan {
            created: vec![created(1, 2)],
            skipped: vec![(0, FieldViolation::new("id", "token 1 already exists"))],
        };
        report.record(rejected, Some(&plan));
        let response = pb::ImportTokensResponse::from(report);
        assert_eq!((response.created, response.failed), (1, 2));
        let errors: Vec<_> = response
            .errors
            .iter()
            .map(|e| (e.index, e.field.as_str()))
            .collect();
        assert_eq!(errors, [(0, "id"), (2, "l1_physical.x")]);
    }

    #[test]
    fn errors_are_capped_but_failures_all_counted() {
        let mut report = ImportReport::default();
        for _ in 0..3 {
            let (_, rejected) = report.validate(&vec![token(-1.0); 600], None);
            report.record(rejected, None);
        }
        let response = pb::ImportTokensResponse::from(report);
        assert_eq!(response.failed, 1800);
        assert_eq!(response.errors.len(), MAX_IMPORT_ERRORS);
        assert_eq!(response.errors.last().map(|e| e.index), Some(999));
    }
}
