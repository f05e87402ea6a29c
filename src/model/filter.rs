//! Token filters by domain and entity type, expressed as the id ranges they select.

use std::ops::RangeInclusive;

use super::token::MAX_NIBBLE;
use super::violation::Violations;

/// Selects tokens by domain and/or entity type; `None` matches every value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TokenFilter {
    /// Domain 0..15, or any.
    pub domain: Option<u32>,
    /// Entity type 0..15, or any.
    pub entity_type: Option<u32>,
}

impl TokenFilter {
    /// The filter, or a violation for a part above 15 (paths relative to the filter).
    pub fn new(domain: Option<u32>, entity_type: Option<u32>) -> Result<TokenFilter, Violations> {
        let mut violations = Violations::default();
        for (name, value) in [("domain", domain), ("entity_type", entity_type)] {
            if let Some(v) = value.filter(|v| *v > MAX_NIBBLE) {
                violations.push(name, format!("{v} is outside [0, {MAX_NIBBLE}]"));
            }
        }
        violations.into_result(TokenFilter {
            domain,
            entity_type,
        })
    }

    /// The ascending, disjoint id ranges holding exactly the matching ids: domain and type
    /// are the top 8 bits of an id, so any filter is at most 16 contiguous ranges.
    pub fn id_ranges(&self) -> Vec<RangeInclusive<u32>> {
        let pair_range = |domain: u32, entity_type: u32| {
            let start = domain << 28 | entity_type << 24;
            start..=start | 0x00FF_FFFF
        };
        match (self.domain, self.entity_type) {
            (None, None) => vec![0..=u32::MAX],
            (Some(d), None) => vec![d << 28..=(d << 28) | 0x0FFF_FFFF],
            (Some(d), Some(t)) => vec![pair_range(d, t)],
            (None, Some(t)) => (0..=MAX_NIBBLE).map(|d| pair_range(d, t)).collect(),
        }
    }

    /// Whether `id` matches.
    pub fn matches(&self, id: u32) -> bool {
        self.domain.is_none_or(|d| id >> 28 == d)
            && self.entity_type.is_none_or(|t| (id >> 24) & 0xF == t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_select_exactly_the_matches() {
        let filters = [
            TokenFilter::default(),
            TokenFilter::new(Some(2), None).expect("valid"),
            TokenFilter::new(None, Some(5)).expect("valid"),
            TokenFilter::new(Some(15), Some(15)).expect("valid"),
        ];
        let samples = [
            0u32,
            1,
            0x2500_0001,
            0x25FF_FFFF,
            0x2600_0000,
            0x0500_0003,
            0xFFFF_FFFF,
            0x1000_0000,
        ];
        for filter in filters {
            for id in samples {
                let in_ranges = filter.id_ranges().iter().any(|r| r.contains(&id));
                assert_eq!(in_ranges, filter.matches(id), "{filter:?} {id:#x}");
            }
        }
    }

    #[test]
    fn rejects_parts_above_15() {
        let violations = TokenFilter::new(Some(16), Some(99)).expect_err("invalid");
        assert_eq!(violations.0.len(), 2);
        assert_eq!(violations.0[0].field, "domain");
    }
}
