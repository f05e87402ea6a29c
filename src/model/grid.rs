//! Grids and spatial maths: grid config and its rules, query parameters and their rules, the
//! exact distance, the (distance, id) order, and the density and influence formulas. Pure: the
//! trees that find candidates live in `store::spatial`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::token::{QPoint, Space};
use super::Violations;

/// Id of a grid: 0 is the default grid holding every token, user grids count from 1.
pub type GridId = u32;

/// The default grid: every token, default config, cannot change.
pub const DEFAULT_GRID: GridId = 0;

/// Most user grids that may exist at once.
pub const MAX_USER_GRIDS: usize = 100;

/// Largest `k` of a nearest-neighbour query.
pub const MAX_K: u32 = 1000;

/// Range query result limit when the request leaves it 0.
pub const DEFAULT_RANGE_LIMIT: u32 = 1000;

/// Largest range query result limit.
pub const MAX_RANGE_LIMIT: u32 = 100_000;

/// Largest field radius a token can store (2.55), bounding influence candidates.
pub const MAX_FIELD_RADIUS: f64 = 2.55;

/// Settings of a grid, with every value effective (defaults filled in).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GridConfig {
    /// Density (tokens per unit volume) at or above which a region is dense; 0..1.
    pub density_threshold: f64,
    /// Fewest contributors for a non-zero field influence; 1..100.
    pub min_field_nodes: u32,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            density_threshold: 0.5,
            min_field_nodes: 3,
        }
    }
}

impl GridConfig {
    /// The effective config of optional values (absent → default), or every broken rule with
    /// paths relative to the config.
    pub fn from_options(
        density_threshold: Option<f64>,
        min_field_nodes: Option<u32>,
    ) -> Result<GridConfig, Violations> {
        let mut violations = Violations::default();
        let mut config = GridConfig::default();
        if let Some(threshold) = density_threshold {
            if threshold.is_finite() && (0.0..=1.0).contains(&threshold) {
                config.density_threshold = threshold;
            } else {
                violations.push(
                    "density_threshold",
                    format!("must be finite and within [0, 1], got {threshold}"),
                );
            }
        }
        if let Some(nodes) = min_field_nodes {
            if (1..=100).contains(&nodes) {
                config.min_field_nodes = nodes;
            } else {
                violations.push(
                    "min_field_nodes",
                    format!("must be within [1, 100], got {nodes}"),
                );
            }
        }
        violations.into_result(config)
    }
}

/// A query radius: > 0 and finite.
pub fn check_radius(radius: f64) -> Result<f64, String> {
    if radius.is_finite() && radius > 0.0 {
        Ok(radius)
    } else {
        Err(format!("must be > 0 and finite, got {radius}"))
    }
}

/// A nearest-neighbour `max_distance`: ≥ 0 and finite; 0 means unbounded (`None`).
pub fn check_max_distance(max_distance: f64) -> Result<Option<f64>, String> {
    if max_distance.is_finite() && max_distance >= 0.0 {
        Ok((max_distance > 0.0).then_some(max_distance))
    } else {
        Err(format!("must be >= 0 and finite, got {max_distance}"))
    }
}

/// A nearest-neighbour `k`: 1..=1000.
pub fn check_k(k: u32) -> Result<usize, String> {
    if (1..=MAX_K).contains(&k) {
        Ok(k as usize)
    } else {
        Err(format!("must be within [1, {MAX_K}], got {k}"))
    }
}

/// A range query `limit`: 0 → 1000, at most 100000.
pub fn check_range_limit(limit: u32) -> Result<usize, String> {
    match limit {
        0 => Ok(DEFAULT_RANGE_LIMIT as usize),
        l if l <= MAX_RANGE_LIMIT => Ok(l as usize),
        l => Err(format!(
            "must be at most {MAX_RANGE_LIMIT} (0 means {DEFAULT_RANGE_LIMIT}), got {l}"
        )),
    }
}

/// The exact Euclidean distance, in the space's own units and in f64, between a stored point
/// (`q / scale`) and a centre as sent.
pub fn distance(point: QPoint, space: Space, centre: [f64; 3]) -> f64 {
    distance_quantised(point.0.map(f64::from), space.scale(), centre)
}

/// `distance` of quantised coordinates `q` (integers, however they are held) with `scale`:
/// the same arithmetic, so the same bits, for callers that keep points in another type.
#[inline]
pub fn distance_quantised(q: [f64; 3], scale: f64, centre: [f64; 3]) -> f64 {
    let dx = q[0] / scale - centre[0];
    let dy = q[1] / scale - centre[1];
    let dz = q[2] / scale - centre[2];
    (dx * dx + dy * dy + dz * dz).sqrt()
}

/// One query hit: a token and its exact distance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// The token id.
    pub id: u32,
    /// Exact distance from the centre.
    pub distance: f64,
}

/// The result order: by distance, ties by the smaller id. Distances are never NaN (finite
/// inputs), so the fallback never decides.
pub fn hit_order(a: &Hit, b: &Hit) -> Ordering {
    a.distance
        .partial_cmp(&b.distance)
        .unwrap_or(Ordering::Equal)
        .then(a.id.cmp(&b.id))
}

/// The first `n` hits in (distance, id) order among those offered, kept in a bounded max-heap:
/// memory stays O(n) and each further hit costs one comparison with the worst kept, so a pile
/// of tied candidates costs O(len) rather than a collection and a sort.
pub struct TopHits {
    n: usize,
    heap: BinaryHeap<OrderedHit>,
}

/// A hit ordered by `hit_order`, for the heap.
struct OrderedHit(Hit);

impl PartialEq for OrderedHit {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for OrderedHit {}

impl PartialOrd for OrderedHit {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedHit {
    fn cmp(&self, other: &Self) -> Ordering {
        hit_order(&self.0, &other.0)
    }
}

impl TopHits {
    /// Keeps at most `n` hits.
    pub fn new(n: usize) -> TopHits {
        TopHits {
            n,
            heap: BinaryHeap::with_capacity(n.min(64)),
        }
    }

    /// Considers one hit.
    #[inline]
    pub fn offer(&mut self, hit: Hit) {
        if self.heap.len() < self.n {
            self.heap.push(OrderedHit(hit));
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if hit_order(&hit, &worst.0) == Ordering::Less {
                *worst = OrderedHit(hit);
            }
        }
    }

    /// The worst kept distance once `n` hits are kept: no farther hit can enter.
    pub fn worst_if_full(&self) -> Option<f64> {
        (self.heap.len() >= self.n)
            .then(|| self.heap.peek().map(|worst| worst.0.distance))
            .flatten()
    }

    /// The kept hits, in (distance, id) order.
    pub fn into_sorted(self) -> Vec<Hit> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|h| h.0)
            .collect()
    }
}

/// Volume of a ball of `radius`.
pub fn ball_volume(radius: f64) -> f64 {
    4.0 / 3.0 * std::f64::consts::PI * radius.powi(3)
}

/// Tokens per unit volume: `count / (4/3·π·r³)`. An empty ball has density 0 whatever its
/// size; a non-empty ball whose volume underflows f64 (r below ~1e-103) is infinitely dense,
/// never NaN.
pub fn density(count: u64, radius: f64) -> f64 {
    if count == 0 {
        0.0
    } else {
        count as f64 / ball_volume(radius)
    }
}

/// One token's share of the field influence at distance `d` from the centre, or `None` when it
/// does not contribute: it needs `field_radius` R > 0 and d ≤ min(radius, R); the share is
/// strength·(1 − d/R).
pub fn influence_share(d: f64, radius: f64, field_radius: f64, strength: f64) -> Option<f64> {
    (field_radius > 0.0 && d <= radius.min(field_radius))
        .then(|| strength * (1.0 - d / field_radius))
}

/// The reported influence: the sum, or 0 when fewer than `min_field_nodes` contributed.
pub fn reported_influence(sum: f64, contributors: u64, config: &GridConfig) -> f64 {
    if contributors < u64::from(config.min_field_nodes) {
        0.0
    } else {
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_bounds() {
        assert_eq!(
            GridConfig::from_options(None, None),
            Ok(GridConfig::default())
        );
        for ok in [0.0, 1.0, 0.25] {
            assert!(GridConfig::from_options(Some(ok), Some(1)).is_ok());
        }
        assert!(GridConfig::from_options(None, Some(100)).is_ok());
        for bad in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            let err = GridConfig::from_options(Some(bad), None).unwrap_err();
            assert_eq!(err.0[0].field, "density_threshold");
        }
        let err = GridConfig::from_options(Some(2.0), Some(0)).unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert_eq!(err.0[1].field, "min_field_nodes");
        assert!(GridConfig::from_options(None, Some(101)).is_err());
    }

    #[test]
    fn query_parameter_rules() {
        assert!(check_radius(0.0).is_err());
        assert!(check_radius(-1.0).is_err());
        assert!(check_radius(f64::NAN).is_err());
        assert!(check_radius(f64::INFINITY).is_err());
        assert_eq!(check_radius(1e-9), Ok(1e-9));
        assert_eq!(check_max_distance(0.0), Ok(None));
        assert_eq!(check_max_distance(2.0), Ok(Some(2.0)));
        assert!(check_max_distance(-0.5).is_err());
        assert!(check_max_distance(f64::INFINITY).is_err());
        assert!(check_k(0).is_err());
        assert!(check_k(1001).is_err());
        assert_eq!(check_k(1000), Ok(1000));
        assert_eq!(check_range_limit(0), Ok(1000));
        assert_eq!(check_range_limit(100_000), Ok(100_000));
        assert!(check_range_limit(100_001).is_err());
    }

    #[test]
    fn ties_go_to_smaller_ids() {
        let hits = vec![
            Hit {
                id: 9,
                distance: 1.0,
            },
            Hit {
                id: 3,
                distance: 1.0,
            },
            Hit {
                id: 5,
                distance: 0.5,
            },
            Hit {
                id: 1,
                distance: 1.0,
            },
        ];
        let mut top = TopHits::new(3);
        for hit in hits {
            top.offer(hit);
        }
        let ids: Vec<u32> = top.into_sorted().iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![5, 1, 3]);
        assert!(TopHits::new(0).into_sorted().is_empty());
    }

    #[test]
    fn influence_rules() {
        assert_eq!(influence_share(0.5, 1.0, 0.0, 1.0), None);
        assert_eq!(influence_share(0.5, 1.0, 1.0, 0.8), Some(0.4));
        assert_eq!(influence_share(1.0, 1.0, 1.0, 0.8), Some(0.0));
        assert_eq!(influence_share(0.6, 0.5, 1.0, 0.8), None);
        let config = GridConfig::default();
        assert_eq!(reported_influence(2.0, 2, &config), 0.0);
        assert_eq!(reported_influence(2.0, 3, &config), 2.0);
    }

    #[test]
    fn density_is_never_nan() {
        assert_eq!(density(0, 1e-110), 0.0);
        assert_eq!(density(2, 1e-110), f64::INFINITY);
        assert_eq!(density(5, 1e200), 0.0);
        let r = 2.0;
        assert_eq!(
            density(3, r),
            3.0 / (4.0 / 3.0 * std::f64::consts::PI * 8.0)
        );
    }

    #[test]
    fn distance_uses_stored_values() {
        let d = distance(QPoint([100, 0, 0]), Space::L1Physical, [0.0, 0.0, 0.0]);
        assert_eq!(d, 1.0);
        let d = distance(QPoint([3, 4, 0]), Space::L2Sensory, [0.0, 0.0, 0.0]);
        assert!((d - 0.0005).abs() < 1e-15);
    }
}
