//! Grid config and its rules; the density and influence formulas.

/// Id of a grid: 0 is the default grid holding every token, user grids count from 1.
pub type GridId = u32;

/// Settings of a grid, with every value effective (defaults filled in).
#[derive(Clone, Copy, Debug, PartialEq)]
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
