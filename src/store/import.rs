//! Planning of one ImportTokens message inside the write path: which of its field-valid tokens
//! are created (and with which ids) and which are skipped for a state reason (a live or
//! repeated explicit id, an exhausted id pair, a hook's veto such as the CDNA weight limits).
//! Unlike a batch, an import never fails as a whole. Field validation happens before, in `api`.

use std::collections::HashSet;

use super::ids::IdCounters;
use super::tokens::TokenTables;
use crate::model::token::{IdRequest, MAX_LOCAL_ID};
use crate::model::{FieldViolation, Token, TokenDraft, TokenId};

/// One field-valid token of an import message and its position across the whole stream.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImportDraft {
    /// Position of the token across the whole import stream (invalid tokens counted too).
    pub index: u64,
    /// The validated token.
    pub draft: TokenDraft,
}

/// What applying one import message does: the tokens to create and the tokens skipped.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImportPlan {
    /// Tokens to create, with their ids, in stream order.
    pub created: Vec<(u64, Token)>,
    /// Skipped tokens with the reason (a path within the token), in stream order.
    pub skipped: Vec<(u64, FieldViolation)>,
}

impl ImportPlan {
    /// The created tokens alone, in stream order.
    pub fn tokens(&self) -> Vec<Token> {
        self.created.iter().map(|(_, token)| *token).collect()
    }
}

/// Plans one import message against the live `tables` and the id counters `ids` (raised for
/// every token the plan creates). `screen` names another component's reason to skip a draft
/// (the CDNA weight limits), checked first. As in a batch, the
/// accepted explicit ids raise their pair's counter before any id is allocated, so an
/// allocated id never collides with one named in the same message.
pub fn plan_import(
    drafts: &[ImportDraft],
    at: u32,
    tables: &TokenTables,
    ids: &mut IdCounters,
    screen: impl Fn(&TokenDraft) -> Option<FieldViolation>,
) -> ImportPlan {
    // Per draft: Some(Ok(id)), Some(Err(why)), or None while its id is still to be allocated.
    let mut outcomes: Vec<Option<Result<TokenId, FieldViolation>>> =
        Vec::with_capacity(drafts.len());
    let mut explicit = HashSet::new();
    for entry in drafts {
        let outcome = if let Some(violation) = screen(&entry.draft) {
            Some(Err(violation))
        } else if let IdRequest::Explicit(id) = entry.draft.id {
            if tables.contains(id) {
                Some(Err(FieldViolation::new(
                    "id",
                    format!("token {id} already exists"),
                )))
            } else if !explicit.insert(id) {
                Some(Err(FieldViolation::new(
                    "id",
                    format!("token {id} already exists earlier in this import message"),
                )))
            } else {
                ids.reserve(id);
                Some(Ok(id))
            }
        } else {
            None
        };
        outcomes.push(outcome);
    }
    let mut plan = ImportPlan::default();
    for (entry, outcome) in drafts.iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|| allocate(entry.draft.id, ids));
        match outcome {
            Ok(id) => plan.created.push((
                entry.index,
                Token {
                    id,
                    data: entry.draft.stamped(at),
                },
            )),
            Err(violation) => plan.skipped.push((entry.index, violation)),
        }
    }
    plan
}

/// The next local id of the draft's pair, or why there is none.
fn allocate(request: IdRequest, ids: &mut IdCounters) -> Result<TokenId, FieldViolation> {
    let IdRequest::Allocate(pair) = request else {
        unreachable!("explicit ids are decided in the first pass")
    };
    ids.allocate(pair).map_err(|used_up| {
        FieldViolation::new(
            "id",
            format!(
                "local ids of domain {} entity_type {} are used up ({MAX_LOCAL_ID} is the highest)",
                used_up.pair.domain(),
                used_up.pair.entity_type()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IdPair, TokenInput};

    fn draft(id: u32, weight: f32) -> TokenDraft {
        TokenInput {
            id,
            weight,
            ..TokenInput::default()
        }
        .to_draft()
        .expect("valid")
    }

    fn entries(drafts: Vec<TokenDraft>) -> Vec<ImportDraft> {
        drafts
            .into_iter()
            .enumerate()
            .map(|(i, draft)| ImportDraft {
                index: 10 + i as u64,
                draft,
            })
            .collect()
    }

    fn no_veto(_: &TokenDraft) -> Option<FieldViolation> {
        None
    }

    fn ids(plan: &ImportPlan) -> Vec<(u64, u32)> {
        plan.created.iter().map(|(i, t)| (*i, t.id.get())).collect()
    }

    fn skipped(plan: &ImportPlan) -> Vec<(u64, &str)> {
        plan.skipped
            .iter()
            .map(|(i, v)| (*i, v.field.as_str()))
            .collect()
    }

    #[test]
    fn allocations_follow_explicit_ids_of_the_same_message() {
        let mut highest = IdCounters::default();
        let drafts = entries(vec![draft(0, 0.5), draft(5, 0.5), draft(0, 0.5)]);
        let plan = plan_import(&drafts, 3, &TokenTables::default(), &mut highest, no_veto);
        assert_eq!(ids(&plan), [(10, 6), (11, 5), (12, 7)]);
        assert_eq!(highest.highest(IdPair::default()), 7);
        assert!(plan.created.iter().all(|(_, t)| t.data.timestamp() == 3));
    }

    #[test]
    fn live_and_repeated_explicit_ids_are_skipped_and_the_rest_created() {
        let tables = TokenTables::default();
        tables.insert_new(&[Token {
            id: TokenId::new(2).expect("valid"),
            data: draft(0, 0.5).stamped(1),
        }]);
        let mut highest = IdCounters::default();
        highest.raise(IdPair::default(), 2);
        let drafts = entries(vec![
            draft(2, 0.5),
            draft(4, 0.5),
            draft(4, 0.5),
            draft(0, 0.5),
        ]);
        let plan = plan_import(&drafts, 1, &tables, &mut highest, no_veto);
        assert_eq!(ids(&plan), [(11, 4), (13, 5)]);
        assert_eq!(skipped(&plan), [(10, "id"), (12, "id")]);
        assert!(plan.skipped[0].1.description.contains("already exists"));
        assert!(plan.skipped[1]
            .1
            .description
            .contains("earlier in this import"));
    }

    #[test]
    fn a_screened_draft_is_skipped_and_raises_no_counter() {
        let mut highest = IdCounters::default();
        let veto_heavy = |d: &TokenDraft| {
            (d.data.weight() > 0.8).then(|| FieldViolation::new("weight", "too heavy"))
        };
        let drafts = entries(vec![draft(9, 0.9), draft(0, 0.5)]);
        let plan = plan_import(
            &drafts,
            1,
            &TokenTables::default(),
            &mut highest,
            veto_heavy,
        );
        assert_eq!(ids(&plan), [(11, 1)]);
        assert_eq!(skipped(&plan), [(10, "weight")]);
    }

    #[test]
    fn an_exhausted_pair_skips_only_its_allocations() {
        let mut highest = IdCounters::default();
        highest.raise(IdPair::default(), MAX_LOCAL_ID - 1);
        let other_pair = TokenInput {
            entity_type: 1,
            weight: 0.5,
            ..TokenInput::default()
        }
        .to_draft()
        .expect("valid");
        let drafts = entries(vec![draft(0, 0.5), draft(0, 0.5), other_pair]);
        let plan = plan_import(&drafts, 1, &TokenTables::default(), &mut highest, no_veto);
        assert_eq!(ids(&plan), [(10, MAX_LOCAL_ID), (12, 0x0100_0001)]);
        assert_eq!(skipped(&plan), [(11, "id")]);
        assert!(plan.skipped[0].1.description.contains("used up"));
    }
}
