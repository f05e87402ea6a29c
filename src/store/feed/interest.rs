//! What one WatchTokens subscriber wants (a token filter and an optional region) and the one
//! function that turns a change record into the event it sees (`Interest::view`), for live
//! and replayed records alike. How subscribers are found for a record lives in `dispatch`.

use super::change::{Change, ChangeRecord};
use super::{TokenEvent, TokenEventKind};
use crate::model::grid::distance;
use crate::model::{Space, Token, TokenFilter};

/// A validated ball in one space (API.md §10 WatchRegion): d <= radius, inclusive.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    /// The space the ball lies in.
    pub space: Space,
    /// Its centre, in the space's own units as sent.
    pub centre: [f64; 3],
    /// Its radius: > 0 and finite (`model::grid::check_radius`).
    pub radius: f64,
}

impl Region {
    /// Whether the token is defined in the space and inside the ball.
    pub fn contains(&self, token: &Token) -> bool {
        // The same exact f64 distance as RangeQuery, so the two agree on the boundary.
        token
            .data
            .point(self.space)
            .is_some_and(|point| distance(point, self.space, self.centre) <= self.radius)
    }
}

/// What one subscriber wants.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Interest {
    /// Keeps events of matching tokens (a clear always passes).
    pub filter: TokenFilter,
    /// Keeps events of tokens inside the ball, with ENTERED and EXITED for crossings.
    pub region: Option<Region>,
}

impl Interest {
    /// Every event of every token.
    pub fn everything() -> Interest {
        Interest::default()
    }

    /// Whether this interest selects by nothing, so sees every record.
    pub fn is_everything(&self) -> bool {
        self.region.is_none() && self.filter == TokenFilter::default()
    }

    /// The event this subscriber sees for `record`, if any (the same function serves live and
    /// replayed records).
    pub fn view(&self, record: &ChangeRecord) -> Option<TokenEvent> {
        let event = |kind, token: Token| TokenEvent {
            kind,
            token: Some(token),
            sequence: record.sequence,
        };
        let token = match record.change.token() {
            Some(token) => token,
            None => {
                return Some(TokenEvent {
                    kind: TokenEventKind::Cleared,
                    token: None,
                    sequence: record.sequence,
                })
            }
        };
        if !self.filter.matches(token.id.get()) {
            return None;
        }
        let inside = |token: &Token| self.region.is_none_or(|region| region.contains(token));
        match record.change {
            Change::Created(token) => inside(&token).then(|| event(TokenEventKind::Created, token)),
            Change::Deleted(token) => inside(&token).then(|| event(TokenEventKind::Deleted, token)),
            Change::Expired(token) => inside(&token).then(|| event(TokenEventKind::Expired, token)),
            Change::Updated { before, after } => {
                let kind = match (inside(&before), inside(&after)) {
                    (true, true) => TokenEventKind::Updated,
                    (false, true) => TokenEventKind::Entered,
                    (true, false) => TokenEventKind::Exited,
                    (false, false) => return None,
                };
                Some(event(kind, after))
            }
            Change::Cleared => unreachable!("a clear carries no token and was answered above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{QPoint, TokenData, TokenId};

    /// A token of pair (domain 2, type 5) with `points` defined in L1 (scale 100).
    fn token_at(local_id: u32, l1: Option<[i16; 3]>) -> Token {
        let mut data = TokenData::empty(7);
        data.set_point(Space::L1Physical, l1.map(QPoint));
        Token {
            id: TokenId::from_parts(2, 5, local_id).expect("valid id"),
            data,
        }
    }

    fn record(change: Change) -> ChangeRecord {
        ChangeRecord {
            sequence: 42,
            change,
        }
    }

    /// A ball in L1 around (1, 0, 0) of radius 0.5: quantised (50, 0, 0) is exactly on it.
    fn unit_region() -> Region {
        Region {
            space: Space::L1Physical,
            centre: [1.0, 0.0, 0.0],
            radius: 0.5,
        }
    }

    fn in_region() -> Interest {
        Interest {
            filter: TokenFilter::default(),
            region: Some(unit_region()),
        }
    }

    fn kind_of(interest: &Interest, change: Change) -> Option<TokenEventKind> {
        interest.view(&record(change)).map(|event| event.kind)
    }

    #[test]
    fn everything_sees_each_change_with_the_token_it_leaves() {
        let (before, after) = (token_at(1, None), token_at(1, Some([1, 2, 3])));
        let all = Interest::everything();
        let created = all.view(&record(Change::Created(after))).expect("seen");
        assert_eq!(
            (created.kind, created.token, created.sequence),
            (TokenEventKind::Created, Some(after), 42)
        );
        let updated = all
            .view(&record(Change::Updated { before, after }))
            .expect("seen");
        assert_eq!(
            (updated.kind, updated.token),
            (TokenEventKind::Updated, Some(after))
        );
        let deleted = all.view(&record(Change::Deleted(before))).expect("seen");
        assert_eq!(
            (deleted.kind, deleted.token),
            (TokenEventKind::Deleted, Some(before))
        );
        let expired = all.view(&record(Change::Expired(before))).expect("seen");
        assert_eq!(
            (expired.kind, expired.token),
            (TokenEventKind::Expired, Some(before))
        );
    }

    #[test]
    fn a_clear_passes_every_filter_and_region() {
        let narrow = Interest {
            filter: TokenFilter::new(Some(9), Some(9)).expect("valid"),
            region: Some(unit_region()),
        };
        let cleared = narrow
            .view(&record(Change::Cleared))
            .expect("always passes");
        assert_eq!(
            (cleared.kind, cleared.id(), cleared.token, cleared.sequence),
            (TokenEventKind::Cleared, 0, None, 42)
        );
    }

    #[test]
    fn a_filter_keeps_only_matching_tokens() {
        let token = token_at(1, None);
        let same_pair = Interest {
            filter: TokenFilter::new(Some(2), Some(5)).expect("valid"),
            region: None,
        };
        let same_type = Interest {
            filter: TokenFilter::new(None, Some(5)).expect("valid"),
            region: None,
        };
        let other_domain = Interest {
            filter: TokenFilter::new(Some(3), None).expect("valid"),
            region: None,
        };
        assert!(same_pair.view(&record(Change::Created(token))).is_some());
        assert!(same_type.view(&record(Change::Deleted(token))).is_some());
        assert!(other_domain.view(&record(Change::Created(token))).is_none());
    }

    #[test]
    fn the_region_boundary_is_inclusive() {
        // (50, 0, 0) / 100 = 0.5 exactly, 1.0 − 0.5 = 0.5 exactly: d == radius.
        let on_boundary = token_at(1, Some([50, 0, 0]));
        let just_outside = token_at(2, Some([49, 0, 0]));
        assert_eq!(
            distance(QPoint([50, 0, 0]), Space::L1Physical, [1.0, 0.0, 0.0]),
            0.5
        );
        assert!(unit_region().contains(&on_boundary));
        assert!(!unit_region().contains(&just_outside));
        assert_eq!(
            kind_of(&in_region(), Change::Created(on_boundary)),
            Some(TokenEventKind::Created)
        );
        assert_eq!(kind_of(&in_region(), Change::Created(just_outside)), None);
    }

    #[test]
    fn a_token_undefined_in_the_space_is_outside() {
        let mut elsewhere = token_at(1, None);
        elsewhere
            .data
            .set_point(Space::L2Sensory, Some(QPoint([10000, 0, 0])));
        assert!(!unit_region().contains(&elsewhere));
        assert_eq!(kind_of(&in_region(), Change::Created(elsewhere)), None);
        assert_eq!(kind_of(&in_region(), Change::Deleted(elsewhere)), None);
    }

    #[test]
    fn region_deletes_and_expiries_count_inside_only() {
        let inside = token_at(1, Some([100, 0, 0]));
        let outside = token_at(2, Some([-100, 0, 0]));
        assert_eq!(
            kind_of(&in_region(), Change::Deleted(inside)),
            Some(TokenEventKind::Deleted)
        );
        assert_eq!(
            kind_of(&in_region(), Change::Expired(inside)),
            Some(TokenEventKind::Expired)
        );
        assert_eq!(kind_of(&in_region(), Change::Deleted(outside)), None);
        assert_eq!(kind_of(&in_region(), Change::Expired(outside)), None);
    }

    #[test]
    fn region_updates_report_crossings_with_the_new_state() {
        let inside = token_at(1, Some([100, 0, 0]));
        let also_inside = token_at(1, Some([120, 0, 0]));
        let outside = token_at(1, Some([-100, 0, 0]));
        let undefined = token_at(1, None);
        let cases = [
            (inside, also_inside, Some(TokenEventKind::Updated)),
            (outside, inside, Some(TokenEventKind::Entered)),
            (undefined, inside, Some(TokenEventKind::Entered)),
            (inside, outside, Some(TokenEventKind::Exited)),
            (inside, undefined, Some(TokenEventKind::Exited)),
            (outside, undefined, None),
        ];
        for (before, after, expected) in cases {
            let seen = in_region().view(&record(Change::Updated { before, after }));
            assert_eq!(seen.map(|e| e.kind), expected, "{before:?} → {after:?}");
            if let Some(event) = seen {
                assert_eq!(event.token, Some(after), "carries the state after");
            }
        }
    }

    #[test]
    fn filter_and_region_must_both_match() {
        let inside = token_at(1, Some([100, 0, 0]));
        let outside = token_at(1, Some([-100, 0, 0]));
        let both = |domain| Interest {
            filter: TokenFilter::new(Some(domain), None).expect("valid"),
            region: Some(unit_region()),
        };
        assert_eq!(
            kind_of(&both(2), Change::Created(inside)),
            Some(TokenEventKind::Created)
        );
        assert_eq!(kind_of(&both(2), Change::Created(outside)), None);
        assert_eq!(kind_of(&both(3), Change::Created(inside)), None);
        assert_eq!(
            kind_of(
                &both(3),
                Change::Updated {
                    before: outside,
                    after: inside
                }
            ),
            None
        );
    }
}
